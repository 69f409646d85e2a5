"""What the routes call: uploads -> model input -> runner -> the answer."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from PIL import Image

from service import featuremaps, graph_decode, heads, logs, preprocess
from service.admission import Reservation
from service.batching import IsGone, Runner
from service.errors import (
    DecompressionBomb,
    ExplanationUnavailable,
    FeatureMapsUnavailable,
    InvalidParameter,
    LayerNotFound,
    PayloadTooLarge,
    clip,
    shorten,
)
from service.model import FEATURE_MAP_CHUNK, GraphDecodeFailed, Outputs
from service.model_input import ModelInput, of_files
from service.schemas import (
    ExplainParams,
    FeatureMapsParams,
    FeatureMapsResponse,
    ImageFeatureMaps,
    LayerActivation,
    PredictParams,
)
from service.server import Server
from service.uploads import Upload
from training.metadata import InputSpec, ModelMetadata, OutputSpec

INLINE_PIXELS = 64 * 64  # below this, decoding on the event loop beats a thread hop
T = TypeVar("T")


def _finish_all(images: list[tuple[str, Image.Image]], spec: InputSpec) -> np.ndarray:
    """Decode and normalise opened images into one batch [n, H, W, C] for the model."""
    arrays = [preprocess.finish(image, spec, name) for name, image in images]
    return arrays[0][None] if len(arrays) == 1 else np.stack(arrays)


async def to_batch(server: Server, uploads: list[Upload], spec: InputSpec) -> np.ndarray:
    """Uploads -> the model's input batch, within the pixel limits.

    Headers are read on the loop (cheap): each image is refused when too large, JPEGs are
    set to decode at the scale preprocessing needs, and the pixels the request will decode are
    counted: over ``max_request_pixels`` is a 413 before anything expands, and the process
    budget ``decode_pixels_budget`` is reserved (waiting when others hold it) for the decode,
    which runs on the loop for tiny images and on the decoder (worker processes) otherwise.
    """
    settings = server.settings
    images = []
    for i, upload in enumerate(uploads):
        name = shorten(upload.filename or f"file {i + 1}")
        opened = preprocess.open_image(upload.data, settings.max_image_pixels, name)
        images.append((name, preprocess.draft(opened, spec)))
    pixels = sum(image.width * image.height for _, image in images)
    if pixels > settings.max_request_pixels:
        raise DecompressionBomb(
            f"these {len(images)} images would decode to {pixels:,} "
            f"pixels; the limit per request is "
            f"{settings.max_request_pixels:,}"
        )
    if pixels <= INLINE_PIXELS:
        return _finish_all(images, spec)
    async with server.admission.reserve(decode_pixels=pixels):
        files = [(name, upload.data) for (name, _), upload in zip(images, uploads, strict=True)]
        return await server.decoder.batch(files, spec, settings.max_image_pixels)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


async def infer_files(
    server: Server, runner: Runner, uploads: list[Upload], is_gone: IsGone | None = None
) -> tuple[Outputs, float]:
    """Image files (checked by :func:`~service.model_input.of_files`) -> the model's outputs,
    and the seconds spent decoding: the one preprocessing every API gives a file.

    PNGs or JPEGs already in the model's input format go to the graph as bytes
    (:mod:`service.graph_decode`); the rest are decoded by Pillow first.
    """
    spec = runner.model.metadata.input
    images = [u.data for u in uploads]
    fmt = graph_decode.batch_format(images, spec)
    if fmt is not None:
        try:
            return await runner.predict(images, is_gone, runner.model.encoded[fmt]), 0.0
        except GraphDecodeFailed:
            pass  # corrupt data behind a valid header: Pillow says what is wrong with it
    decoding = time.perf_counter()
    batch = await to_batch(server, uploads, spec)
    decode_s = time.perf_counter() - decoding
    return await runner.predict(batch, is_gone), decode_s


async def infer(
    server: Server, runner: Runner, model_input: ModelInput, is_gone: IsGone | None = None
) -> Outputs:
    """A front door's model input -> the model's outputs: pixels go to the batcher as they
    are, image files through :func:`infer_files`."""
    if model_input.files is not None:
        return (await infer_files(server, runner, model_input.files, is_gone))[0]
    return await runner.predict(model_input.pixels, is_gone)


async def predict(
    server: Server, uploads: list[Upload], params: PredictParams, is_gone: IsGone | None = None
) -> dict:
    """Classify ``uploads``: a :class:`~service.schemas.PredictResponse` as a plain dict."""
    start = time.perf_counter()
    runner = server.registry.runner(params.model or server.settings.default_model, params.version)
    metadata = runner.model.metadata
    of_files(uploads, server.max_images(runner.model))
    outputs, decode_s = await infer_files(server, runner, uploads, is_gone)
    total_s = time.perf_counter() - start
    return {
        "model": metadata.name,
        "version": runner.model.version,
        "predictions": [
            {"filename": u.filename, "outputs": described}
            for u, described in zip(
                uploads, heads.answers(metadata, outputs, params.top_k, params.threshold)
            )
        ],
        "timings": {
            "decode_ms": _ms(decode_s),
            "inference_ms": _ms(total_s - decode_s),
            "total_ms": _ms(total_s),
        },
    }


async def heavy(server: Server, runner: Runner, method: Callable[..., T], *args) -> T:
    """``method(*args)`` of a model version on the heavy-work thread (Grad-CAM, feature maps),
    never on its inference thread: within the version's bound (more: 503 at once) and the
    process's (:func:`on_heavy_thread`)."""
    logs.note(model=runner.model.name, version=runner.model.version)
    return await on_heavy_thread(server, [(runner.heavy, 1)], method, *args)


async def on_heavy_thread(server: Server, bounds: list, method: Callable[..., T], *args) -> T:
    """``method(*args)`` on the process's one heavy-work thread, within ``bounds`` and the
    process's own (one job at a time, a few waiting up to the queue deadline, then 503). The
    bounds are held until the thread is done, even when the request gives up first."""
    loop = asyncio.get_running_loop()
    hold = await server.admission.hold([*bounds, (server.admission.heavy, 1)]).acquire()
    try:
        job = server.heavy.submit(method, *args)
    except BaseException:
        hold.release()
        raise
    job.add_done_callback(lambda _: loop.call_soon_threadsafe(hold.release))
    return await asyncio.wrap_future(job)


# memory of a feature-map answer per activation value: the float32 activations, then the
# answer built from them (npz: the compressed buffer and its copy; JSON: the PNGs in base64,
# as objects and as the JSON text); measured: bench/heavy.py
RAW_BYTES = 4
ANSWER_BYTES = {"npz": 8, "json": 6}


@dataclass
class FeatureMapCost:
    """The memory a feature-map request will take, known before anything is computed."""

    images: int
    every_layer: int  # bytes per image through every layer (what the signature computes)
    layers: dict[str, int]  # bytes per image of each layer asked for, in the answer

    def total(self, images: int | None = None) -> int:
        images = self.images if images is None else images
        return min(images, FEATURE_MAP_CHUNK) * self.every_layer + images * sum(
            self.layers.values()
        )

    def advice(self, limit: int) -> str:
        """How to fit: fewer images, or fewer (named) layers."""
        fit = next((n for n in range(self.images - 1, 0, -1) if self.total(n) <= limit), 0)
        largest = sorted(self.layers, key=self.layers.__getitem__, reverse=True)[:3]
        mb = ", ".join(f"{name!r} {self.layers[name] / 2**20:.2f} MB" for name in largest)
        images = f"send at most {fit} image(s), or " if fit else ""
        return f"{images}ask for fewer layers with layers= (per image the largest are {mb})"


def feature_map_cost(
    metadata: ModelMetadata, layers: list[str] | None, images: int, fmt: str
) -> FeatureMapCost:
    sizes = {layer.name: math.prod(d or 1 for d in layer.output_shape) for layer in metadata.layers}
    per_value = RAW_BYTES + ANSWER_BYTES[fmt]
    return FeatureMapCost(
        images,
        sum(sizes.values()) * RAW_BYTES,
        {name: size * per_value for name, size in sizes.items() if not layers or name in layers},
    )


@dataclass
class Activations:
    """Raw activations of every (or the chosen) layer, graph order, and the model's outputs."""

    metadata: ModelMetadata
    version: int
    uploads: list[Upload]
    layers: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]


def _chosen_layers(metadata: ModelMetadata, layers: str | None) -> list[str] | None:
    """``layers=a,b`` checked against the model (404 naming the unknown ones)."""
    chosen = [s.strip() for s in layers.split(",") if s.strip()] if layers else None
    if chosen:
        known = [layer.name for layer in metadata.layers]
        unknown = [layer for layer in chosen if layer not in known]
        if unknown:
            raise LayerNotFound(
                f"model {metadata.name!r} has no layer(s) {clip(unknown)}; layers: {known}"
            )
    return chosen


async def reserve_feature_maps(
    server: Server, runner: Runner, uploads: list[Upload], params: FeatureMapsParams
) -> tuple[list[str] | None, Reservation]:
    """The layers asked for, and their answer's memory reserved (entered: the caller
    releases it once the answer is sent): 413 over the per-request limit, with what would
    fit; the process budget waited for like the others."""
    model, metadata = runner.model, runner.model.metadata
    if not model.has_feature_maps:
        raise FeatureMapsUnavailable(
            f"model {model.name!r} v{model.version} is a SavedModel without a feature_maps "
            "signature, so its layers are unknown here; serve its Keras model instead "
            "(cnn-serve import MODEL.keras --name NAME)"
        )
    layers = _chosen_layers(metadata, params.layers)
    of_files(uploads, server.max_images(model))
    cost = feature_map_cost(metadata, layers, len(uploads), params.format)
    limit = server.settings.max_feature_map_bytes
    total = cost.total()
    if total > limit:
        raise PayloadTooLarge(
            f"feature maps of {len(uploads)} image(s) would take "
            f"{total / 2**20:.0f} MB; the limit per request is "
            f"{limit / 2**20:.0f} MB: {cost.advice(limit)}"
        )
    return layers, await server.admission.reserve(feature_map_bytes=total).acquire()


async def activations(
    server: Server, runner: Runner, uploads: list[Upload], layers: list[str] | None
) -> Activations:
    metadata = runner.model.metadata
    batch = await to_batch(server, uploads, metadata.input)
    maps = await heavy(server, runner, runner.model.feature_maps, batch, layers)
    source = input_layer(metadata)  # the input as preprocessing made it
    if source is not None and (not layers or source in layers):
        maps = {source: batch, **maps}
    return Activations(metadata, runner.model.version, uploads, maps, await runner.predict(batch))


def input_layer(metadata: ModelMetadata) -> str | None:
    """The name the layer table gives the model's input (None: it lists none)."""
    return next((layer.name for layer in metadata.layers if layer.type == "InputLayer"), None)


def released_memory(server: Server, reservation: Reservation) -> None:
    """After a feature-map answer: give its memory back to the budget, and to the operating
    system once no answer holds any (a burst of large answers left the process at 6 GB)."""
    reservation.release()
    if server.admission.feature_map_bytes.used == 0:
        server.trimmer.soon()


def _head(metadata: ModelMetadata, params: ExplainParams) -> OutputSpec:
    """The head, class and layer ``params`` name, checked against the model (422 / 404)."""
    heads = {o.name: o for o in metadata.outputs}
    head = heads.get(params.output or metadata.outputs[0].name)
    if head is None:
        raise InvalidParameter(
            f"model {metadata.name!r} has no output {clip(params.output)}; outputs: {list(heads)}"
        )
    classes = len(head.labels)
    if params.class_index is not None and params.class_index >= classes:
        raise InvalidParameter(f"output {head.name!r} has classes 0 to {classes - 1}")
    if params.layer is not None:
        layers = {layer.name: layer for layer in metadata.layers}
        if params.layer not in layers:
            raise LayerNotFound(
                f"model {metadata.name!r} has no layer {clip(params.layer)}; layers: {list(layers)}"
            )
        if len(layers[params.layer].output_shape) != 3:
            raise InvalidParameter(
                f"layer {clip(params.layer)} has no [h, w, k] output; "
                "Grad-CAM needs a convolution, pooling or the input layer"
            )
    return head


async def explain(server: Server, uploads: list[Upload], name: str, params: ExplainParams) -> dict:
    """Grad-CAM for one uploaded image: an :class:`~service.schemas.ExplainResponse` dict."""
    runner = server.registry.runner(name, params.version)
    model, metadata = runner.model, runner.model.metadata
    if not model.explainable:
        raise ExplanationUnavailable(
            f"model {name!r} v{model.version} ships no model.keras, "
            "which Grad-CAM needs (cnn-serve import MODEL.keras "
            "--name NAME writes one)"
        )
    if len(of_files(uploads, server.max_images(model))) != 1:
        raise InvalidParameter("explain takes one image")
    head = _head(metadata, params)
    image = (await to_batch(server, uploads, metadata.input))[0]
    result = await heavy(
        server,
        runner,
        model.explain,
        image,
        head,
        params.class_index,
        params.layer,
        server.gradcams,
    )
    picture = await asyncio.get_running_loop().run_in_executor(
        server.decoder.threads,
        featuremaps.overlay,
        preprocess.to_unit_range(image, metadata.input),
        result.heatmap,
    )
    return {
        "model": name,
        "version": model.version,
        "output": head.name,
        "class_index": result.class_index,
        "label": head.labels[result.class_index],
        "layer": result.layer,
        "heatmap": result.heatmap.tolist(),
        "overlay": picture,
    }


def render_feature_maps(acts: Activations, scaling: featuremaps.Scaling) -> FeatureMapsResponse:
    table = {layer.name: layer for layer in acts.metadata.layers}
    described = heads.answers(acts.metadata, acts.outputs, 3)
    images = []
    for i, upload in enumerate(acts.uploads):
        layers = [
            LayerActivation(
                name=name,
                type=table[name].type,
                output_shape=table[name].output_shape,
                params=table[name].params,
                inbound=table[name].inbound,
                stats=featuremaps.stats(value[i]),
                image=featuremaps.render(value[i], scaling),
            )
            for name, value in acts.layers.items()
        ]
        images.append(
            ImageFeatureMaps(
                filename=upload.filename,
                outputs=described[i],
                layers=layers,
            )
        )
    return FeatureMapsResponse(
        model=acts.metadata.name, version=acts.version, scaling=scaling, images=images
    )
