"""One served model version: a TensorFlow SavedModel plus its metadata.json.

This is the only module that calls TensorFlow (with :mod:`service.graph_decode`, which builds
the PNG and JPEG decoding graph, :mod:`service.gradcam`, which runs the Keras model, and
:mod:`service.lite`, LiteRT's copy for one image at a time); everything
else sees ``predict(batch)`` and ``predict_encoded(images)`` -> ``{output: array}`` (each a
:class:`BatchCall` for the batcher), ``feature_maps(batch) -> {layer: array}`` and ``explain``.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from PIL import Image

from service import graph_decode, lite, preprocess
from service.errors import ModelNotReady, ServiceError
from service.gradcam import Explanation, GradCam, TracedCache
from training import savedmodel
from training.export import KERAS_FILE
from training.metadata import METADATA_FILE, InputSpec, ModelMetadata, OutputSpec

log = logging.getLogger("cnn_serve")


FEATURE_MAP_CHUNK = 4  # images per feature-map call


class GraphDecodeFailed(Exception):
    """An image that looked decodable in the graph was not (e.g. corrupt image data)."""


Outputs = dict[str, np.ndarray]


@dataclass(frozen=True, eq=False)
class BatchCall:
    """One way to call a model: ``call`` computes a batch of inputs, ``join`` makes one batch
    of several requests' inputs. The batcher batches requests of the same call together (TF
    Serving's one queue per task type) and needs to know nothing else about their inputs."""

    call: Callable[[Any], Outputs]
    join: Callable[[list[Any]], Any]


def pixel_call(model: Any) -> BatchCall:
    """Pixel batches [n, H, W, C] through ``model.predict``: what every model accepts."""
    return BatchCall(model.predict, np.concatenate)


class TooLarge(Exception):
    """A version whose estimated memory is beyond the settings' bound: never loaded."""


class Status(str, Enum):
    loading = "loading"
    ready = "ready"
    failed = "failed"


class ServedModel:
    """Loads lazily via :meth:`load`; thread-confined calls (the runner owns the thread)."""

    def __init__(
        self,
        name: str,
        version: int,
        path: Path,
        device: str,
        lite_runtime: bool = True,
        max_memory_bytes: int | None = None,
    ) -> None:
        self.name, self.version, self.path, self.device = name, version, path, device
        self.max_memory_bytes = max_memory_bytes  # larger (estimated): failed, never loaded
        self.lite_runtime = lite_runtime  # one-image calls through LiteRT (service.lite)
        self.status = Status.loading
        self.error: str | None = None
        self.load_seconds: float | None = None
        self._metadata: ModelMetadata | None = None
        self.public_metadata: ModelMetadata | None = None  # None until loaded
        self._serve: Any = None  # TensorFlow concrete functions, once loaded
        self._maps: Any = None
        self._call_pixels: Callable[[tf.Tensor], dict[str, tf.Tensor]] | None = None
        self._call_encoded: Callable[[tf.Tensor], dict[str, tf.Tensor]] | None = None
        self._gradcam: GradCam | None = None
        self._lite: lite.LiteSignature | None = None
        # images graph_decode accepted, a call per format: the batcher joins PNGs with PNGs
        # and JPEGs with JPEGs only, as the graph decodes a batch of one format
        self.encoded = {
            fmt: BatchCall(self.predict_encoded, lambda parts: list(chain.from_iterable(parts)))
            for fmt in (graph_decode.PNG, graph_decode.JPEG)
        }

    def load(self) -> None:
        """Read metadata and SavedModel onto the device, then warm up both signatures."""
        start = time.perf_counter()
        stage = "reading metadata.json"
        try:
            # what it will cost, before any of it is loaded (a drop-in's: after, from its
            # signature alone)
            known = (self.path / METADATA_FILE).is_file()
            metadata = ModelMetadata.read(self.path) if known else None
            if metadata is not None:
                self._check_memory(metadata)
            stage = "loading the SavedModel"
            with tf.device(self.device):
                loaded = tf.saved_model.load(str(self.path))
            self._serve = loaded.signatures["serving_default"]
            self._maps = loaded.signatures.get("feature_maps")
            self._loaded = loaded  # keeps the variables alive
            if metadata is None:  # a drop-in: what the service needs, from its signature
                stage = "reading the serving_default signature"
                metadata = savedmodel.metadata(self.name, self.version, self.path, self._serve)
                self._check_memory(metadata)
            self._metadata = metadata
            if "feature_maps" not in metadata.signatures:
                self._maps = None  # its layers are unknown without the Keras model
            # as clients see it: without the training machine's dataset path
            dataset = metadata.dataset
            self.public_metadata = (
                metadata
                if dataset is None
                else metadata.model_copy(
                    update={"dataset": dataset.model_copy(update={"path": None})}
                )
            )
            stage = "warming up"
            self._call_pixels = direct(self._serve)
            self._call_encoded = direct(graph_decode.decoder(metadata.input))
            warm = np.zeros((1, *metadata.input.shape), np.float32)
            self.predict(warm)
            for fmt in self.encoded:
                self.predict_encoded([blank_image(metadata.input, fmt)])
            if self._maps is not None:
                self.feature_maps(warm)
            self._lite = self._load_lite(metadata.input)
        except TooLarge as exc:
            self.status, self.error = Status.failed, str(exc)
            log.error("model %s v%s not loaded: %s", self.name, self.version, exc)
            return
        except Exception as exc:  # noqa: BLE001 - a broken model must not take the others down
            # clients see the stage only; paths and exception text stay in the log
            self.status, self.error = Status.failed, f"failed while {stage}; see the server log"
            log.error(
                "model %s v%s failed to load from %s while %s: %s: %s",
                self.name,
                self.version,
                self.path,
                stage,
                type(exc).__name__,
                exc,
            )
            return
        self.load_seconds = round(time.perf_counter() - start, 3)
        self.status = Status.ready
        log.info(
            "model %s v%s ready on %s in %.2fs",
            self.name,
            self.version,
            self.device,
            self.load_seconds,
        )

    def _check_memory(self, metadata: ModelMetadata) -> None:
        needed = metadata.estimated_memory_bytes()
        if self.max_memory_bytes is not None and needed > self.max_memory_bytes:
            raise TooLarge(
                f"needs an estimated {needed / 2**20:,.0f} MB to serve one image, more than "
                f"CNN_SERVE_MAX_MODEL_MEMORY_BYTES ({self.max_memory_bytes / 2**20:,.0f} MB)"
            )

    @property
    def metadata(self) -> ModelMetadata:
        """Known once loaded; requests only ever reach versions that are ready."""
        if self._metadata is None:
            raise ModelNotReady(f"model {self.name!r} v{self.version} is not loaded")
        return self._metadata

    def _load_lite(self, spec: InputSpec) -> lite.LiteSignature | None:
        """The LiteRT copy for one-image calls: CPU float32 models only (a GPU serves one
        image fast enough, and a uint8 model's rounding lives in TensorFlow's graph)."""
        if not self.lite_runtime or "CPU" not in self.device or spec.dtype != "float32":
            return None
        low, high = spec.value_range
        probe = np.random.default_rng(0).uniform(low, high, (1, *spec.shape)).astype(np.float32)
        return lite.load(self.path, spec.name, probe, self.predict(probe))

    @property
    def uses_lite(self) -> bool:
        """Whether one-image calls go through LiteRT."""
        return self._lite is not None

    def predict(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        assert self._call_pixels is not None, "load() first"
        if len(batch) == 1 and self._lite is not None:
            return self._lite(batch)
        with tf.device(self.device):
            out = self._call_pixels(
                model_tensor(tf.convert_to_tensor(batch, tf.float32), self.metadata.input)
            )
        return {name: value.numpy() for name, value in out.items()}

    @property
    def has_feature_maps(self) -> bool:
        return self._maps is not None

    def predict_encoded(self, images: list[bytes]) -> dict[str, np.ndarray]:
        """Like :meth:`predict` for images of one format that :func:`graph_decode.image_format`
        accepted."""
        assert self._call_encoded is not None and self._call_pixels, "load() first"
        if len(images) == 1 and self._lite is not None:  # Pillow makes the same pixels
            spec = self.metadata.input
            try:
                pixels = preprocess.prepare(images[0], spec, spec.width * spec.height)
            except ServiceError as exc:
                raise GraphDecodeFailed(exc.message) from None
            return self._lite(pixels[None])
        try:
            with tf.device(self.device):
                pixels = self._call_encoded(tf.constant(images, tf.string))["pixels"]
                out = self._call_pixels(model_tensor(pixels, self.metadata.input))
        except tf.errors.InvalidArgumentError as exc:
            raise GraphDecodeFailed(str(exc)) from None
        return {name: value.numpy() for name, value in out.items()}

    @property
    def explainable(self) -> bool:
        """Grad-CAM needs the Keras model that training saves beside the SavedModel."""
        return (self.path / KERAS_FILE).is_file()

    def explain(
        self,
        image: np.ndarray,
        output: OutputSpec,
        class_index: int | None,
        layer: str | None,
        cache: TracedCache,
    ) -> Explanation:
        """Grad-CAM for one image; the Keras model loads on the first call (~0.1 s)."""
        if self._gradcam is None:
            self._gradcam = GradCam(self.path / KERAS_FILE, self.metadata, cache)
        with tf.device(self.device):
            return self._gradcam(image, output, class_index, layer)

    def feature_maps(
        self, batch: np.ndarray, layers: list[str] | None = None, chunk: int = FEATURE_MAP_CHUNK
    ) -> dict[str, np.ndarray]:
        """Every layer's activations (or ``layers``'), graph order as in the metadata. The
        signature computes every layer, so images go through ``chunk`` at a time and only
        the layers asked for are kept: memory is that of the answer, not of every layer."""
        order = [layer.name for layer in self.metadata.layers if not layers or layer.name in layers]
        parts: dict[str, list[np.ndarray]] = {}
        for start in range(0, len(batch), chunk):
            with tf.device(self.device):
                out = self._maps(
                    image=tf.convert_to_tensor(batch[start : start + chunk], tf.float32)
                )
            for name in order:
                if name in out:
                    parts.setdefault(name, []).append(out[name].numpy())
            del out
        return {
            name: chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
            for name, chunks in parts.items()
        }


def direct(function: Any) -> Callable[[tf.Tensor], dict[str, tf.Tensor]]:
    """A concrete function of one input (tensor -> dict of tensors), called through its graph
    directly: TensorFlow's Python binding of the arguments and outputs costs ~100 µs a call,
    under the GIL the event loop needs (bench.stages). ``function`` itself where this
    TensorFlow lacks the hook or the function takes more than one input."""
    inputs = function.structured_input_signature
    atomic = getattr(function, "_inference_function", None)
    if (
        atomic is None
        or len(inputs[0]) + len(inputs[1]) != 1
        or not isinstance(function.structured_outputs, dict)
    ):
        if inputs[1]:  # a signature: by its keyword
            name = next(iter(inputs[1]))
            return lambda tensor: function(**{name: tensor})
        return function
    captured = tuple(function.captured_inputs)
    names = sorted(function.structured_outputs)  # tf.nest's order of a dict's values
    return lambda tensor: dict(zip(names, atomic.call_flat(tensor, *captured), strict=True))


def model_tensor(pixels: tf.Tensor, spec: InputSpec) -> tf.Tensor:
    """float32 pixels -> the input's own type (a uint8 input gets them rounded, clipped)."""
    if spec.dtype == "float32":
        return pixels
    return tf.cast(tf.clip_by_value(tf.round(pixels), 0, 255), tf.uint8)


def blank_image(spec: InputSpec, fmt: str = graph_decode.PNG) -> bytes:
    """An image of the model's input size in ``fmt``: the graph decoder's warm-up."""
    buf = io.BytesIO()
    Image.new("L", (spec.width, spec.height)).save(buf, fmt.upper())
    return buf.getvalue()
