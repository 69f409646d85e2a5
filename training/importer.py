"""``cnn-serve import``: a user's Keras image classifier as a served version.

    cnn-serve import SOURCE --name NAME [--model-dir DIR] [--version N]
                            [--labels FILE | --labels OUTPUT=FILE ...]
                            [--value-range LOW,HIGH] [--preprocessing resize|mnist]
                            [--input-size H,W]

SOURCE is a Keras 3 ``.keras`` file or a legacy ``.h5``/``.hdf5`` file (Keras's safe mode:
no code runs from the file). The version is written as training writes one
(:func:`training.export.export`: atomically, with the ``serving_default`` and
``feature_maps`` signatures, ``model.keras`` and ``metadata.json`` derived from the model), so
a running server picks it up with hot reload and serves it through every API. SOURCE may also
be a SavedModel directory (``model.export()``, ``tf.saved_model.save``): it is copied as it is
and serves without feature maps or Grad-CAM. A model the service cannot serve is refused with
one line and nothing written.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import keras

from training import repository, sandbox, savedmodel
from training.export import VersionConflict, export, layer_table, output_names, write_version
from training.metadata import (
    InputSpec,
    ModelMetadata,
    OutputSpec,
    estimated_memory_bytes,
    read_labels,
)

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # a directory name in the repository


class Refused(Exception):
    """What makes a model impossible to serve, in one line for its owner."""


class Conflict(Refused):
    """Refused for the repository's state, not the model: the version exists, the model
    holds as many versions as it may, or another import is writing it."""


@dataclass
class Options:
    source: Path
    name: str
    model_dir: Path
    version: int | None = None
    labels: dict[str | None, Path] | None = None  # None: the only head
    value_range: tuple[float, float] | None = None  # None: [0, 1] (uint8 SavedModels: 0..255)
    preprocessing: str = "resize"
    input_size: tuple[int, int] | None = None
    # bounds on what an untrusted file may cost (None: unbounded, for a trusted file)
    max_unpacked_bytes: int | None = None  # a .keras archive's members, unpacked
    max_memory_bytes: int | None = None  # the model's estimate (weights + activations)
    max_versions: int | None = None  # versions the model may hold


def load(
    source: Path, size: tuple[int, int] | None = None, max_unpacked_bytes: int | None = None
) -> keras.Model:
    """The Keras model in ``source``, as a functional graph (a Sequential one of any input
    size rebuilt at ``size``)."""
    if not source.exists():
        raise Refused(f"{source}: no such file")
    if source.suffix.lower() not in KERAS_SUFFIXES or not source.is_file():
        raise Refused(f"{source}: not a Keras model file (.keras, .h5 or .hdf5)")
    if max_unpacked_bytes is not None and zipfile.is_zipfile(source):
        _check_unpacked(source, max_unpacked_bytes)
    try:
        model = keras.saving.load_model(source, compile=False, safe_mode=True)
    except Exception as exc:  # noqa: BLE001 - any reason a file does not load is the answer
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise Refused(
            f"{source}: cannot be read as a Keras model ({type(exc).__name__}"
            f"{': ' + reason if reason else ''})"
        ) from None
    if not isinstance(model, keras.Model):
        raise Refused(f"{source}: holds no Keras model")
    return _functional(model, size)


def _check_unpacked(source: Path, limit: int) -> None:
    """A ``.keras`` file is a zip: its members as declared, unpacked, within ``limit`` (a
    1 MB file can hold a 1 GiB ``config.json`` of whitespace) - read before Keras opens it."""
    try:
        with zipfile.ZipFile(source) as archive:
            unpacked = sum(member.file_size for member in archive.infolist())
    except (zipfile.BadZipFile, OSError) as exc:
        raise Refused(f"{source}: not a readable .keras archive ({type(exc).__name__})") from None
    if unpacked > limit:
        raise Refused(
            f"{source}: unpacks to {unpacked:,} bytes, more than a model may "
            f"({limit:,}, CNN_SERVE_MAX_MODEL_BYTES)"
        )


def _check_memory(model: keras.Model, limit: int | None) -> None:
    """The model's estimated memory for one image within ``limit``, from its shapes."""
    if limit is None:
        return
    needed = estimated_memory_bytes(
        layer_table(model), model.count_params(), model.inputs[0].shape[1:]
    )
    if needed > limit:
        raise Refused(
            f"the model needs an estimated {needed / 2**20:,.0f} MB to serve one image "
            f"(weights and its largest activations), more than a model may "
            f"({limit / 2**20:,.0f} MB, CNN_SERVE_MAX_MODEL_MEMORY_BYTES)"
        )


def _functional(model: keras.Model, size: tuple[int, int] | None) -> keras.Model:
    """A Sequential model rebuilt as a functional one from copies of its layers (same
    weights): every layer then has one input node and an output to show."""
    if not isinstance(model, keras.Sequential):
        return model
    if len(model.input_shape) != 4:
        raise Refused(
            f"the model takes {_shape(model.input_shape)}, not one image "
            "[batch, height, width, 1 or 3]"
        )
    shape = model.input_shape[1:]
    if size is not None and None in shape[:2]:
        shape = (*size, shape[2])
    x = inputs = keras.Input(shape=shape, name="image", dtype=model.inputs[0].dtype)
    for layer in model.layers:
        clone = layer.__class__.from_config(layer.get_config())
        x = clone(x)
        clone.set_weights(layer.get_weights())
    return keras.Model(inputs, x, name=model.name)


def _shape(shape) -> str:
    return "[" + ", ".join("batch" if d is None else str(d) for d in shape) + "]"


def _fixed_size(model: keras.Model, size: tuple[int, int] | None) -> keras.Model:
    """Check the one image input [batch, H, W, 1|3]; a model of any size gets ``size``."""
    if len(model.inputs) != 1:
        raise Refused(
            f"the model takes {len(model.inputs)} inputs; cnn-serve serves models "
            "of one image input"
        )
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[3] not in (1, 3):
        raise Refused(
            f"the model takes {_shape(shape)}, not one image [batch, height, width, 1 or 3]"
        )
    if None not in shape[1:3]:
        if size is not None and tuple(size) != shape[1:3]:
            raise Refused(
                f"--input-size {size[0]},{size[1]}: the model's input is fixed at "
                f"{shape[1]}x{shape[2]}"
            )
        return model
    if size is None:
        raise Refused(
            f"the model takes images of any size {_shape(shape)}: give the size "
            "to serve with --input-size H,W"
        )
    inputs = keras.Input(shape=(*size, shape[3]), name="image")
    return keras.Model(inputs, model(inputs), name=model.name)


def _keras_heads(model: keras.Model) -> list[tuple[str, int]]:
    names = output_names(model)
    outputs = list(model.output.values()) if isinstance(model.output, dict) else model.outputs
    heads = []
    for name, tensor in zip(names, outputs, strict=True):
        if len(tensor.shape) != 2 or tensor.shape[1] is None:
            raise Refused(f"head {name!r} gives {_shape(tensor.shape)}, not [batch, classes]")
        heads.append((name, int(tensor.shape[1])))
    return heads


def _heads(heads: list[tuple[str, int]], labels: dict[str | None, Path] | None) -> list[OutputSpec]:
    """Each head (name, units) with its labels: from ``labels`` (None: the only head), else
    the class indices."""
    names = [name for name, _ in heads]
    files = dict(labels or {})
    if None in files:
        if len(names) != 1:
            raise Refused(
                f"the model has {len(names)} heads ({', '.join(names)}): name one, "
                "--labels HEAD=FILE"
            )
        files[names[0]] = files.pop(None)
    unknown = sorted(str(head) for head in set(files) - set(names))
    if unknown:
        raise Refused(
            f"--labels for {', '.join(unknown)}: the model's heads are {', '.join(names)}"
        )
    specs = []
    for name, units in heads:
        wanted = 2 if units == 1 else units
        given = _read_labels(files[name]) if name in files else [str(i) for i in range(wanted)]
        if len(given) != wanted:
            raise Refused(
                f"{files[name]}: {len(given)} labels for head {name!r}, which has "
                f"{wanted} classes"
                + (" (a 1-unit sigmoid: negative, then positive)" if units == 1 else "")
            )
        specs.append(
            OutputSpec(name=name, kind="binary" if units == 1 else "multiclass", labels=given)
        )
    return specs


def _read_labels(path: Path) -> list[str]:
    try:
        return read_labels(path)
    except ValueError as exc:
        raise Refused(str(exc)) from None


def metadata_builder(model: keras.Model, options: Options, heads: list[OutputSpec]):
    """What :func:`training.export.export` calls once it knows the version."""
    import tensorflow as tf

    height, width, channels = (int(d) for d in model.inputs[0].shape[1:])
    integers = "int" in str(model.inputs[0].dtype)  # e.g. uint8 pixels: 0..255 by default
    spec = InputSpec(
        shape=[height, width, channels],
        value_range=options.value_range or ((0.0, 255.0) if integers else (0.0, 1.0)),
        color_mode="grayscale" if channels == 1 else "rgb",
        preprocessing=_preprocessing(options, [height, width, channels]),
    )
    trainable = sum(int(keras.ops.size(w)) for w in model.trainable_weights)

    def build(version: int, layers, created_at: str) -> ModelMetadata:
        return ModelMetadata(
            name=options.name,
            version=version,
            architecture=model.name,
            description=f"imported from {options.source.name}",
            input=spec,
            outputs=heads,
            layers=layers,
            total_params=model.count_params(),
            trainable_params=trainable,
            validation_metrics={},
            dataset=None,
            training=None,
            tensorflow_version=tf.__version__,
            keras_version=keras.__version__,
            created_at=created_at,
        )

    return build


def import_model(options: Options) -> Path:
    """Write ``options.source`` as ``<model_dir>/<name>/<version>/``; :class:`Refused` when it
    cannot be served (nothing is written then)."""
    if not NAME.fullmatch(options.name):
        raise Refused(
            f"--name {options.name[:64]!r}: letters, digits, '_', '-' and '.', "
            "starting with a letter or digit, at most 64"
        )
    if options.version is not None and options.version < 1:
        raise Refused("--version: versions are whole numbers from 1")
    if options.value_range is not None and not options.value_range[0] < options.value_range[1]:
        raise Refused("--value-range LOW,HIGH: LOW must be below HIGH")
    root = options.model_dir / options.name
    if options.version is not None and (root / str(options.version)).exists():
        raise Conflict(
            f"version {options.version} of model {options.name!r} exists; choose another"
        )
    try:
        if options.source.is_dir():
            return _import_savedmodel(options, root)
        model = load(options.source, options.input_size, options.max_unpacked_bytes)
        model = _fixed_size(model, options.input_size)
        _check_memory(model, options.max_memory_bytes)
        heads = _heads(_keras_heads(model), options.labels)
        build = metadata_builder(model, options, heads)
        return export(
            model,
            options.model_dir,
            build,
            name=options.name,
            version=options.version,
            output_names=[h.name for h in heads],
            max_versions=options.max_versions,
        )
    except VersionConflict as exc:
        raise Conflict(str(exc)) from None


def _import_savedmodel(options: Options, root: Path) -> Path:
    """A SavedModel directory, copied as it is, with metadata read off its serving signature
    (the layers of a SavedModel are unknown: it serves without feature maps or Grad-CAM)."""
    import tensorflow as tf

    if not (options.source / "saved_model.pb").is_file():
        raise Refused(f"{options.source}: a directory without saved_model.pb")
    try:
        signature = tf.saved_model.load(str(options.source)).signatures["serving_default"]
    except Exception as exc:  # noqa: BLE001 - any reason it does not load is the answer
        raise Refused(
            f"{options.source}: cannot be read as a SavedModel with a "
            f"serving_default signature ({type(exc).__name__})"
        ) from None
    try:
        found = savedmodel.metadata(options.name, 0, options.source, signature)
    except savedmodel.NotAnImageModel as exc:
        raise Refused(f"{options.source}: {exc}") from None
    if options.input_size is not None:
        raise Refused("--input-size: a SavedModel's signature fixes its input size")
    # without --labels: labels.txt beside the SavedModel, if any, as it would serve as a drop-in
    heads = (
        _heads([(o.name, o.units) for o in found.outputs], options.labels)
        if options.labels
        else found.outputs
    )
    spec = found.input.model_copy(
        update={
            "value_range": options.value_range or found.input.value_range,
            "preprocessing": _preprocessing(options, found.input.shape),
        }
    )

    def write(staging: Path, version: int) -> None:
        shutil.copytree(options.source, staging, dirs_exist_ok=True)
        found.model_copy(
            update={
                "version": version,
                "input": spec,
                "outputs": heads,
                "description": f"imported from {options.source.name}",
            }
        ).write(staging)

    return write_version(root, options.version, write, options.max_versions)


def _preprocessing(options: Options, shape: list[int]) -> str:
    if options.preprocessing == "mnist" and list(shape) != [28, 28, 1]:
        raise Refused(
            f"--preprocessing mnist makes 28x28x1 digits; the model takes "
            f"{'x'.join(map(str, shape))}"
        )
    return options.preprocessing


def summary(path: Path) -> str:
    meta = ModelMetadata.read(path)
    spec = meta.input
    heads = "; ".join(
        f"{o.name} ({o.kind}, {len(o.labels)} labels: "
        f"{', '.join(o.labels[:4])}{', ...' if len(o.labels) > 4 else ''})"
        for o in meta.outputs
    )
    return (
        f"imported {meta.name} v{meta.version} -> {path}\n"
        f"  input: {spec.height}x{spec.width}x{spec.channels} {spec.color_mode}, values "
        f"{spec.value_range[0]:g}..{spec.value_range[1]:g}, preprocessing "
        f"{spec.preprocessing}\n  heads: {heads}\n"
        f"  layers: {len(meta.layers)}, parameters: {meta.total_params:,}"
    )


def _pair(kind: type, text: str, what: str) -> tuple:
    try:
        low, high = (kind(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} is two numbers: A,B") from None
    return low, high


def parser(default_model_dir: Path) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cnn-serve import", description=__doc__.splitlines()[0])
    p.add_argument(
        "source", type=Path, help="a .keras or .h5 model file, or a SavedModel directory"
    )
    p.add_argument("--name", required=True, help="the model's name in the service")
    p.add_argument(
        "--model-dir",
        type=Path,
        default=default_model_dir,
        help=f"model repository (default: {default_model_dir})",
    )
    p.add_argument("--version", type=int, default=None, help="default: the next free one")
    p.add_argument(
        "--labels",
        action="append",
        default=[],
        metavar="[OUTPUT=]FILE",
        help="one label per line, line N = class N; OUTPUT= for one of several heads (repeatable)",
    )
    p.add_argument(
        "--value-range",
        type=lambda t: _pair(float, t, "--value-range"),
        default=None,
        metavar="LOW,HIGH",
        help="the values the model expects for black and white (default 0,1, or "
        "0,255 for a SavedModel with uint8 input; e.g. 0,255 for a model with "
        "Rescaling(1/255) inside)",
    )
    p.add_argument("--preprocessing", choices=["resize", "mnist"], default="resize")
    p.add_argument(
        "--input-size",
        type=lambda t: _pair(int, t, "--input-size"),
        default=None,
        metavar="H,W",
        help="only for a model whose input size is not fixed",
    )
    return p


def main(
    argv: list[str],
    default_model_dir: Path,
    bounds: dict | None = None,
    limits: sandbox.Limits | None = None,
) -> int:
    """``cnn-serve import``: with ``limits``, the file is read in a confined child process
    (:mod:`training.sandbox`); ``bounds`` are :class:`Options`' ``max_*`` fields."""
    args = parser(default_model_dir).parse_args(argv)
    labels: dict[str | None, Path] = {}
    for item in args.labels:
        head, _, file = item.rpartition("=")
        labels[head or None] = Path(file)
    options = Options(
        args.source.resolve(),
        args.name,
        args.model_dir.resolve(),
        args.version,
        {head: path.resolve() for head, path in labels.items()},
        args.value_range,
        args.preprocessing,
        args.input_size,
        **(bounds or {}),
    )
    try:
        if limits is None:
            path = import_model(options)
        else:
            options.model_dir.mkdir(parents=True, exist_ok=True)
            with repository.scratch(options.model_dir) as scratch:
                path = sandbox.import_isolated(options, limits, scratch)
    except Refused as exc:
        raise SystemExit(f"cnn-serve import: {exc}") from None
    print(summary(path))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], Path("models")))
