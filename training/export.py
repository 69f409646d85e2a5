"""Export a trained Keras model as a versioned SavedModel (TF Serving layout) + metadata.json.

``models/<name>/<version>/`` holds ``saved_model.pb`` + ``variables/`` with two signatures:
``serving_default`` (``image`` float32 [N,H,W,C] in [0,1] -> the named outputs) and
``feature_maps`` (the same input -> every layer's output keyed by layer name). Beside them:
``metadata.json`` (the contract the service reads), ``model.keras`` (for transfer learning) and
``model.tflite`` (the serving signature for LiteRT: one-image calls, ``service/lite.py``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import tempfile
from pathlib import Path

import keras

from training.graph import expand, in_order
from training.metadata import LayerInfo
from training.repository import VersionConflict, clean_staging, model_lock

KERAS_FILE = "model.keras"
LITE_FILE = "model.tflite"  # the serving signature for LiteRT (service/lite.py)
SIGNATURE = "serving_default"


def next_version(model_root: Path) -> int:
    """TF Serving versions are integers; the next one is one past the largest present."""
    versions = [int(p.name) for p in Path(model_root).glob("*") if p.name.isdigit()]
    return max(versions, default=0) + 1


def layer_table(model: keras.Model) -> list[LayerInfo]:
    """Keras' summary as data: every layer in graph order (a nested model's layers in its
    place, named ``model/layer``) with its parameter count and the layers it reads."""
    graph = expand(model, output_names(model))
    return [
        LayerInfo(
            name=name,
            type=type(graph.layers[name]).__name__,
            output_shape=list(graph.outputs[name].shape[1:]),
            params=graph.layers[name].count_params(),
            trainable=graph.layers[name].trainable,
            inbound=graph.inbound[name],
        )
        for name in in_order(model, graph)
    ]


def feature_map_model(model: keras.Model) -> keras.Model:
    """A model with the same input that returns every (non-input) layer's output by name,
    nested models' layers included."""
    graph = expand(model, output_names(model))
    outputs = {
        name: graph.outputs[name]
        for name in in_order(model, graph)
        if not isinstance(graph.layers[name], keras.layers.InputLayer)
    }
    return keras.Model(model.inputs[0], outputs, name=f"{model.name}_feature_maps")


def output_names(model: keras.Model) -> list[str]:
    """The heads' names: a dict output's keys, else the names of the layers that make them."""
    if isinstance(model, keras.Sequential):
        return [model.layers[-1].name]
    if isinstance(model.output, dict):
        return list(model.output)
    return list(model.output_names)


def named_outputs(model: keras.Model, names: list[str] | None):
    """``model`` as a function whose outputs are keyed by head name: a model with a dict
    output is that already; one with one or a list of outputs gets ``names``."""
    to_input = input_cast(model)
    if names is None or isinstance(model.output, dict):
        return lambda image: model(to_input(image), training=False)

    def call(image):
        out = model(to_input(image), training=False)
        return dict(zip(names, out if isinstance(out, (list, tuple)) else [out], strict=True))

    return call


def input_cast(model: keras.Model):
    """The signatures take float32 pixels; a model with an integer input (uint8 0..255) gets
    them rounded (Keras alone would truncate 199.99998 to 199)."""
    dtype = str(model.inputs[0].dtype)
    if "int" not in dtype:
        return lambda image: image
    return lambda image: keras.ops.cast(keras.ops.round(image), dtype)


def save_model(model: keras.Model, target: Path, output_names: list[str] | None = None) -> None:
    """Write the SavedModel with its two signatures into ``target`` (needs TensorFlow)."""
    import tensorflow as tf

    spec = tf.TensorSpec([None, *model.inputs[0].shape[1:]], tf.float32, name="image")
    maps = feature_map_model(model)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(SIGNATURE, named_outputs(model, output_names), [spec])
    to_input = input_cast(model)
    archive.add_endpoint(
        "feature_maps", lambda image: maps(to_input(image), training=False), [spec]
    )
    archive.write_out(str(target), verbose=False)


def lite_flatbuffer(saved_model: Path) -> bytes:
    """The SavedModel's serving signature for LiteRT, which the service calls for one image
    at a time (``service/lite.py``; needs TensorFlow)."""
    import tensorflow as tf

    from training.quiet_tf import native_stderr_captured

    with native_stderr_captured():  # the converter's C++ notices
        converter = tf.lite.TFLiteConverter.from_saved_model(
            str(saved_model), signature_keys=[SIGNATURE]
        )
        return converter.convert()


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


def write_bundle(model: keras.Model, directory: Path, build_metadata) -> Path:
    """``model.keras`` + ``metadata.json`` (version 0): a model trained where TensorFlow is
    missing (Keras on JAX on a GPU machine), waiting for ``cnn-train export`` to make it a
    version. Any Keras backend writes and reads the ``.keras`` format."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save(directory / KERAS_FILE)
    build_metadata(0, layer_table(model), _now()).write(directory)
    return directory


def export(
    model: keras.Model,
    out_dir: Path,
    build_metadata,
    name: str | None = None,
    version: int | None = None,
    output_names: list[str] | None = None,
    max_versions: int | None = None,
) -> Path:
    """Write ``out_dir/<name>/<version>/`` (default: the model's name, the next version)
    atomically and return it.

    ``build_metadata(version, layers, created_at)`` returns the :class:`ModelMetadata`.
    """

    def write(staging: Path, version: int) -> None:
        save_model(model, staging, output_names)
        with contextlib.suppress(Exception):  # LiteRT lacks an op: TensorFlow serves it
            (staging / LITE_FILE).write_bytes(lite_flatbuffer(staging))
        model.save(staging / KERAS_FILE)
        build_metadata(version, layer_table(model), _now()).write(staging)

    return write_version(Path(out_dir) / (name or model.name), version, write, max_versions)


def write_version(root: Path, version: int | None, write, max_versions: int | None = None) -> Path:
    """``root/<version>/`` (default: the next one), filled by ``write(directory, version)``
    in a hidden staging directory and renamed into place, all under the model's lock: a
    server polling the repository never sees half a version, a failure leaves nothing
    behind, and a second writer (:class:`VersionConflict`) never touches the first's files."""
    created = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    with model_lock(root):
        try:
            return _write_locked(root, version, write, max_versions)
        except BaseException:
            if created and not any(root.iterdir()):
                root.rmdir()  # a new model that did not come to be
            raise


def _write_locked(root: Path, version: int | None, write, max_versions: int | None) -> Path:
    clean_staging(root)
    if version is not None and (root / str(version)).exists():
        raise VersionConflict(f"version {version} of model {root.name!r} exists; choose another")
    held = [p for p in root.iterdir() if p.name.isdigit()]
    if max_versions is not None and len(held) >= max_versions:
        raise VersionConflict(
            f"model {root.name!r} holds {len(held)} versions, as many as it may "
            "(CNN_SERVE_MAX_VERSIONS_PER_MODEL); remove one first"
        )
    version = version or next_version(root)
    staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=root))
    try:
        write(staging, version)
        staging.chmod(0o755)  # mkdtemp makes it private; a model repository is shared
        final = root / str(version)
        staging.rename(final)
        return final
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
