"""``cnn-serve import``'s work: a user's Keras image classifier as a served version.

SOURCE is a Keras 3 ``.keras`` file or a legacy ``.h5``/``.hdf5`` file (Keras's safe mode:
no code runs from the file). The version is written as training writes one
(:func:`training.export.export`: atomically, with the ``serving_default`` and
``feature_maps`` signatures, ``model.keras`` and ``metadata.json`` derived from the model), so
a running server picks it up with hot reload and serves it through every API. SOURCE may also
be a SavedModel directory (``model.export()``, ``tf.saved_model.save``): it is copied as it is
and serves without feature maps or Grad-CAM. A model the service cannot serve is refused with
one line and nothing written. The command itself (arguments, options) is
:mod:`training.import_command`, which imports neither TensorFlow nor Keras.
"""

from __future__ import annotations

import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import keras

from training import savedmodel
from training.export import VersionConflict, export, layer_table, output_names, write_version
from training.graph import expand
from training.heads import by_head, final_activation, kind_of, label_count
from training.import_command import KERAS_SUFFIXES, NAME, Conflict, Options, Refused
from training.metadata import (
    CLASS_KINDS,
    InputSpec,
    ModelMetadata,
    OutputSpec,
    estimated_memory_bytes,
    read_labels,
)


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


def _check_memory(model: keras.Model, limit: int | None) -> int:
    """The model's estimated memory for one image, from its shapes, within ``limit``."""
    needed = estimated_memory_bytes(
        layer_table(model), model.count_params(), model.inputs[0].shape[1:]
    )
    if limit is not None and needed > limit:
        raise Refused(
            f"the model needs an estimated {needed / 2**20:,.0f} MB to serve one image "
            f"(weights and its largest activations), more than a model may "
            f"({limit / 2**20:,.0f} MB, CNN_SERVE_MAX_MODEL_MEMORY_BYTES)"
        )
    return needed


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


def _keras_heads(model: keras.Model) -> list[tuple[str, int, str]]:
    """Each head's (name, units, final activation)."""
    names = output_names(model)
    graph = expand(model, names)
    heads = []
    for name in names:
        shape = graph.heads[name].shape
        if len(shape) != 2 or shape[1] is None:
            raise Refused(f"head {name!r} gives {_shape(shape)}, not [batch, values]")
        heads.append((name, int(shape[1]), final_activation(graph, name)))
    return heads


def _heads(
    heads: list[tuple[str, int, str]], options: Options, known: dict[str, str] | None = None
) -> list[OutputSpec]:
    """Each head (name, units, final activation) with its kind - declared with ``--head``,
    else ``known`` (a SavedModel's), else from the activation - and its labels: from
    ``--labels``, else the indices."""
    names = [name for name, _, _ in heads]
    try:
        declared = {**(known or {}), **by_head(names, options.heads, "--head HEAD=KIND")}
        files = by_head(names, options.labels, "--labels HEAD=FILE")
        kinds = [kind_of(n, units, act, declared.get(n)) for n, units, act in heads]
    except ValueError as exc:
        raise Refused(str(exc)) from None
    specs = []
    for (name, units, _), kind in zip(heads, kinds, strict=True):
        wanted = label_count(kind, units)
        given = _read_labels(files[name]) if name in files else [str(i) for i in range(wanted)]
        if len(given) != wanted:
            raise Refused(
                f"{files[name]}: {len(given)} labels for head {name!r}, which has "
                f"{wanted} {'classes' if kind in CLASS_KINDS else 'values'}"
                + (" (a 1-unit sigmoid: negative, then positive)" if kind == "binary" else "")
            )
        specs.append(OutputSpec(name=name, kind=kind, labels=given))
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


def import_model(options: Options, say: Callable[[str], None] = lambda step: None) -> Path:
    """Write ``options.source`` as ``<model_dir>/<name>/<version>/``; :class:`Refused` when it
    cannot be served (nothing is written then). ``say`` hears each step as it starts."""
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
            say("reading the SavedModel's serving signature")
            return _import_savedmodel(options, root)
        say(f"reading {options.source.name}")
        model = load(options.source, options.input_size, options.max_unpacked_bytes)
        model = _fixed_size(model, options.input_size)
        needed = _check_memory(model, options.max_memory_bytes)
        heads = _heads(_keras_heads(model), options)
        say(
            f"checked: {len(model.layers)} layers, {model.count_params():,} parameters, "
            f"{', '.join(f'{h.name} ({h.kind})' for h in heads)}; about "
            f"{needed / 2**20:,.0f} MB to serve one image"
        )
        say("exporting: the SavedModel's signatures, a LiteRT copy, the Keras model")
        build = metadata_builder(model, options, heads)
        path = export(
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
    say(f"written as version {path.name}")
    return path


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
    # kinds from heads.json beside it, as it would serve as a drop-in, unless --head says;
    # labels from labels.txt beside it unless --labels says
    heads = (
        _heads(
            [(o.name, o.units, "") for o in found.outputs],
            options,
            {o.name: o.kind for o in found.outputs},
        )
        if options.labels or options.heads
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
