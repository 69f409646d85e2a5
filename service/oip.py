"""The Open Inference Protocol (KServe V2, Triton's HTTP API) as a codec over the server: an
inference request becomes the model's input (FP32 pixels, or encoded image files that get the
same preprocessing as ``/predict``), the model's outputs become the protocol's answer.

Requests follow https://kserve.github.io/website/docs/concepts/architecture/data-plane/v2-protocol
with Triton's binary tensor data extension (the default of ``tritonclient.http``): the body is a
JSON header of ``Inference-Header-Content-Length`` bytes followed by the raw tensors, in input
order, each ``binary_data_size`` bytes long; a BYTES tensor is 4-byte little-endian lengths
each followed by that many bytes.

Every model has two alternative inputs, both listed in its metadata; a request sends one:
``image`` (FP32 ``[N, H, W, C]``, values in [0, 1]) and ``image_bytes`` (BYTES ``[N]``:
PNG, JPEG, ... files; in JSON each element is the file in base64, as JSON strings cannot hold
binary data).
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service.errors import BadRequest, UnsupportedMediaType, clip
from service.model import Outputs, ServedModel
from service.model_input import ModelInput, of_files, of_pixels
from service.registry import ModelRegistry
from service.schemas import BASE64, numbers
from service.tensors import header_length, json_floats, may_hold_booleans
from service.uploads import Upload
from training.metadata import ModelMetadata

PLATFORM = "tensorflow_savedmodel"
# what this server implements of Triton's extensions (server metadata lists them)
EXTENSIONS = [
    "binary_tensor_data",
    "classification",
    "model_configuration",
    "model_repository",
    "statistics",
]
CLASSIFICATION = "classification"  # an output's parameter: N of a top-N answer
MAX_CLASSES = 2**31 - 1  # N beyond a head's classes answers them all
BYTES_INPUT = "image_bytes"
HEADER_LENGTH = "inference-header-content-length"
MAX_TENSORS = 16  # a model has one input in two forms and a few outputs; bounds the parsing


class _Open(BaseModel):
    """Protocol objects may carry fields of extensions this service does not implement."""

    model_config = ConfigDict(extra="allow")


class TensorParameters(_Open):
    binary_data_size: int | None = Field(
        None,
        ge=0,
        le=2**40,
        description="bytes of this tensor in the binary section (binary tensor data extension)",
    )


class RequestInput(_Open):
    name: str = Field(max_length=256)
    shape: list[Annotated[int, Field(ge=0, le=2**40)]] = Field(max_length=8)
    datatype: str = Field(max_length=16, json_schema_extra={"enum": ["FP32", "BYTES"]})
    parameters: TensorParameters | None = None
    data: Any = Field(
        None,
        description="FP32: row-major values, flat or nested; BYTES: image files in base64, "
        "one per image; absent when the tensor is in the binary section",
        json_schema_extra={
            "anyOf": [
                *(numbers(depth) for depth in (1, 2, 3, 4)),
                {"type": "array", "minItems": 1, "items": BASE64},
                {
                    "type": "array",
                    "minItems": 1,
                    "items": {"type": "array", "minItems": 1, "maxItems": 1, "items": BASE64},
                },
            ]
        },
    )


class OutputParameters(_Open):
    binary_data: bool | None = Field(None, description="answer this output in the binary section")
    classification: int | None = Field(
        None,
        ge=1,
        le=MAX_CLASSES,
        description="answer the top N classes instead of the scores: BYTES [batch, N] of "
        '"<score>:<index>:<label>", best first (Triton\'s classification extension)',
    )


class RequestOutput(_Open):
    name: str = Field(max_length=256)
    parameters: OutputParameters | None = None


class RequestParameters(_Open):
    binary_data_output: bool = Field(
        False, description="every output in the binary section unless the output says otherwise"
    )


class InferenceRequest(_Open):
    id: str | None = Field(None, max_length=256)
    parameters: RequestParameters | None = None
    inputs: list[RequestInput] = Field(min_length=1, max_length=MAX_TENSORS)
    outputs: list[RequestOutput] | None = Field(None, max_length=MAX_TENSORS)


class ResponseOutput(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    parameters: TensorParameters | None = None
    data: list[float] | list[str] | None = Field(
        None, description="FP32 scores; BYTES strings of a classification"
    )


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[ResponseOutput]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1: any size (the batch)")


class ModelMetadataResponse(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata] = Field(description="alternatives: a request sends one")
    outputs: list[TensorMetadata]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


def model_metadata(name: str, versions: list[int], meta: ModelMetadata) -> dict:
    """``GET /v2/models/{name}[/versions/{v}]``."""
    return {
        "name": name,
        "versions": [str(v) for v in versions],
        "platform": PLATFORM,
        "inputs": [
            {"name": meta.input.name, "datatype": "FP32", "shape": [-1, *meta.input.shape]},
            {"name": BYTES_INPUT, "datatype": "BYTES", "shape": [-1]},
        ],
        "outputs": [
            {"name": o.name, "datatype": "FP32", "shape": [-1, o.units]} for o in meta.outputs
        ],
    }


def model_config(name: str, meta: ModelMetadata, max_batch_size: int) -> dict:
    """``GET /v2/models/{name}[/versions/{v}]/config``: Triton's model configuration, which
    is where its clients read ``max_batch_size`` (dims then leave out the batch)."""
    return {
        "name": name,
        "platform": PLATFORM,
        "max_batch_size": max_batch_size,
        "input": [
            {"name": meta.input.name, "data_type": "TYPE_FP32", "dims": meta.input.shape},
            {"name": BYTES_INPUT, "data_type": "TYPE_STRING", "dims": [1]},
        ],
        "output": [
            {"name": o.name, "data_type": "TYPE_FP32", "dims": [o.units]} for o in meta.outputs
        ],
    }


def model_statistics(registry: ModelRegistry, name: str | None, version: str | None) -> dict:
    """``GET /v2/models[/{name}[/versions/{v}]]/stats``: the statistics of every served
    version, of a model's, or of one (:mod:`service.statistics`); 404 for a model or version
    the service does not have, as everywhere (Triton says 400 here)."""
    if name is None:
        runners = [r for _, r in sorted(registry.runners.items())]
    elif version is None:
        registry.runner(name)  # as for any call to the model (503 while loading)
        runners = [r for (n, _), r in sorted(registry.runners.items()) if n == name]
    else:
        runners = [registry.runner(name, version)]
    return {"model_stats": [r.statistics.as_dict(r.model.name, r.model.version) for r in runners]}


class StatisticDuration(BaseModel):
    count: int
    ns: int = Field(description="nanoseconds, summed over the count")


class InferStatistics(BaseModel):
    success: StatisticDuration = Field(description="answered requests: their time in the batcher")
    fail: StatisticDuration
    queue: StatisticDuration
    compute_input: StatisticDuration
    compute_infer: StatisticDuration
    compute_output: StatisticDuration
    cache_hit: StatisticDuration
    cache_miss: StatisticDuration


class BatchStatistics(BaseModel):
    batch_size: int
    compute_input: StatisticDuration
    compute_infer: StatisticDuration
    compute_output: StatisticDuration


class ModelStatistics(BaseModel):
    name: str
    version: str
    last_inference: int = Field(description="ms since the epoch; 0: none yet")
    inference_count: int = Field(description="images inferred")
    execution_count: int = Field(description="model calls (batches)")
    inference_stats: InferStatistics
    response_stats: dict[str, Any]
    batch_stats: list[BatchStatistics]
    memory_usage: list[Any]


class ModelStatisticsResponse(BaseModel):
    model_stats: list[ModelStatistics]


class ModelConfig(BaseModel):
    name: str
    platform: str
    max_batch_size: int = Field(description="the most images one request may send")
    input: list[dict[str, Any]]
    output: list[dict[str, Any]]


@dataclass
class Request:
    """A parsed inference request: its JSON header and the binary section after it."""

    header: InferenceRequest
    binary: memoryview
    may_hold_booleans: bool  # "true" or "false" appear in the JSON header


def parse(body: bytes, headers: Mapping[str, str]) -> Request:
    """Split and validate the body (400 naming what is wrong)."""
    if headers.get("content-encoding", "identity").strip().lower() != "identity":
        raise UnsupportedMediaType(
            "compressed request bodies are not accepted; send the request without compression"
        )
    given = headers.get(HEADER_LENGTH)
    json_size = len(body) if given is None else header_length(given)
    if json_size is None or json_size > len(body):
        raise BadRequest(
            f"Inference-Header-Content-Length {clip(given)} is not a length "
            f"within the {len(body)}-byte body"
        )
    try:
        header = InferenceRequest.model_validate_json(body[:json_size])
    except ValidationError as exc:
        raise BadRequest(_problems(exc)) from None
    return Request(header, memoryview(body)[json_size:], may_hold_booleans(body[:json_size]))


def _problems(exc: ValidationError) -> str:
    """A pydantic error in a line: where and what, for the first few problems."""
    return "; ".join(
        f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()[:3]
    )


@dataclass
class InputTensor:
    """One input tensor as a transport delivered it (JSON or binary over HTTP, a protobuf over
    gRPC): its declaration, and either its raw bytes (FP32 little-endian; BYTES as a 4-byte
    little-endian length before each element) or readers of its typed contents."""

    name: str
    datatype: str
    shape: list[int]
    raw: memoryview | None
    floats: Callable[[], np.ndarray]  # the typed FP32 contents, flat
    strings: Callable[[], list[bytes]]  # the typed BYTES contents


def model_input(request: Request, meta: ModelMetadata, limit: int) -> ModelInput:
    """The HTTP request's one input: FP32 pixels, or BYTES image files to preprocess."""
    sections = _binary_sections(request)
    tensors = [
        InputTensor(
            tensor.name,
            tensor.datatype,
            tensor.shape,
            raw,
            partial(_json_floats, tensor, request.may_hold_booleans),
            partial(_base64_strings, tensor.data),
        )
        for tensor, raw in zip(request.header.inputs, sections, strict=True)
    ]
    return input_of(tensors, meta, limit)


def input_of(tensors: list[InputTensor], meta: ModelMetadata, limit: int) -> ModelInput:
    """A request's one input tensor, from any transport: FP32 pixels, or BYTES image files
    to preprocess."""
    names = [tensor.name for tensor in tensors]
    if len(tensors) != 1:
        raise BadRequest(
            f"send one input, {meta.input.name!r} or {BYTES_INPUT!r}; got {clip(names)}"
        )
    tensor = tensors[0]
    if tensor.name == meta.input.name:
        return of_pixels(_pixels(tensor), meta.input, limit, f"input {meta.input.name!r}")
    if tensor.name == BYTES_INPUT:
        return of_files(_files(tensor), limit)
    raise BadRequest(
        f"unknown input {clip(tensor.name)}; the model takes {meta.input.name!r} "
        f"(FP32 pixels) or {BYTES_INPUT!r} (BYTES image files)"
    )


def _binary_sections(request: Request) -> list[memoryview | None]:
    """Each input's slice of the binary section (None for inputs sent as JSON ``data``);
    the sizes must account for the section exactly."""
    sections: list[memoryview | None] = []
    offset = 0
    for tensor in request.header.inputs:
        size = tensor.parameters.binary_data_size if tensor.parameters else None
        if size is None:
            if tensor.data is None:
                raise BadRequest(
                    f"input {clip(tensor.name)} has neither 'data' nor 'binary_data_size'"
                )
            sections.append(None)
            continue
        if tensor.data is not None:
            raise BadRequest(f"input {clip(tensor.name)} has both 'data' and 'binary_data_size'")
        if offset + size > len(request.binary):
            raise BadRequest(
                f"input {clip(tensor.name)} declares {size} bytes of binary data but "
                f"only {len(request.binary) - offset} follow the JSON header"
            )
        sections.append(request.binary[offset : offset + size])
        offset += size
    if offset != len(request.binary):
        raise BadRequest(
            f"{len(request.binary) - offset} bytes after the JSON header belong to "
            "no input (check Inference-Header-Content-Length and binary_data_size)"
        )
    return sections


def _pixels(tensor: InputTensor) -> np.ndarray:
    """The FP32 tensor as sent, in its declared shape (the declaration must fit the data)."""
    what = f"input {clip(tensor.name)}"
    if tensor.datatype != "FP32":
        raise BadRequest(f"{what} is FP32, not {clip(tensor.datatype)}")
    if any(d < 0 for d in tensor.shape) or len(tensor.shape) > 8:
        raise BadRequest(f"{what}: shape {clip(tensor.shape)} is not a tensor's shape")
    count = math.prod(tensor.shape)
    raw = tensor.raw
    if raw is not None:
        if len(raw) != 4 * count:
            raise BadRequest(
                f"{what} of shape {tensor.shape} is {4 * count} bytes of FP32; {len(raw)} were sent"
            )
        return np.frombuffer(raw, "<f4").reshape(tensor.shape)
    pixels = tensor.floats()
    if pixels.size != count:
        raise BadRequest(f"{what} holds {pixels.size} values; shape {tensor.shape} needs {count}")
    return pixels.reshape(tensor.shape)


def _json_floats(tensor: RequestInput, may_hold_booleans: bool) -> np.ndarray:
    return json_floats(tensor.data, f"input {clip(tensor.name)}: 'data'", may_hold_booleans)


def _files(tensor: InputTensor) -> list[Upload]:
    """The BYTES tensor's elements, one image file each, as many as its shape declares."""
    if tensor.datatype != "BYTES":
        raise BadRequest(f"input {BYTES_INPUT!r} is BYTES, not {clip(tensor.datatype)}")
    n = tensor.shape[0] if tensor.shape else 0
    if tensor.shape not in ([n], [n, 1]):
        raise BadRequest(
            f"input {BYTES_INPUT!r} has shape [-1] (one file per image); got {tensor.shape}"
        )
    files = _split_bytes(tensor.raw) if tensor.raw is not None else tensor.strings()
    if len(files) != n:
        raise BadRequest(
            f"input {BYTES_INPUT!r} holds {len(files)} files; shape {tensor.shape} says {n}"
        )
    return [Upload(f"image {i}", data) for i, data in enumerate(files)]


def _split_bytes(raw: memoryview) -> list[bytes]:
    """A binary BYTES tensor: <uint32 length><bytes> per element."""
    items, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise BadRequest("BYTES data ends inside an element's 4-byte length")
        (size,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + size > len(raw):
            raise BadRequest(f"BYTES element of {size} bytes runs past its binary_data_size")
        items.append(bytes(raw[offset : offset + size]))
        offset += size
    return items


def _base64_strings(data: Any) -> list[bytes]:
    """A JSON BYTES tensor of image files: base64 strings, flat or one per row."""
    if isinstance(data, list):
        data = [d[0] if isinstance(d, list) and len(d) == 1 else d for d in data]
    if not isinstance(data, list) or not all(isinstance(d, str) for d in data):
        raise BadRequest(f"input {BYTES_INPUT!r}: 'data' lists image files as base64 strings")
    try:
        return [base64.b64decode(d, validate=True) for d in data]
    except (binascii.Error, ValueError):
        raise BadRequest(f"input {BYTES_INPUT!r}: invalid base64") from None


@dataclass(frozen=True)
class Chosen:
    """An output to answer: its name, whether in the binary section (HTTP), and the N of a
    top-N classification answer instead of its scores."""

    name: str
    binary: bool = False
    classes: int | None = None


def requested_outputs(request: Request, meta: ModelMetadata) -> list[Chosen]:
    """The HTTP request's outputs to answer, in the order asked."""
    default = bool(request.header.parameters and request.header.parameters.binary_data_output)
    if request.header.outputs is None:
        return choose(None, meta, default)
    asked = []
    for output in request.header.outputs:
        given = output.parameters or OutputParameters()
        binary = default if given.binary_data is None else given.binary_data
        asked.append(Chosen(output.name, binary, given.classification))
    return choose(asked, meta, default)


def choose(asked: list[Chosen] | None, meta: ModelMetadata, binary: bool = False) -> list[Chosen]:
    """The outputs a request asked for (every output's scores when it names none), each the
    model's and asked for once."""
    if not asked:
        return [Chosen(o.name, binary) for o in meta.outputs]
    known = [o.name for o in meta.outputs]
    names = [o.name for o in asked]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise BadRequest(f"unknown output(s) {clip(unknown)}; the model's outputs are {known}")
    if len(set(names)) != len(names):
        raise BadRequest(f"an output is requested more than once: {clip(names)}")
    values = [o.name for o in meta.outputs if not o.classifies]
    classified = [o.name for o in asked if o.classes is not None and o.name in values]
    if classified:
        raise BadRequest(
            f"output(s) {clip(classified)} give values, not class scores: classification "
            "serves the class heads (multiclass, binary, multilabel, logits)"
        )
    return asked


def output_tensor(meta: ModelMetadata, outputs: Outputs, chosen: Chosen) -> tuple[str, np.ndarray]:
    """(datatype, values) of an output to answer: its FP32 scores; or, for a classification,
    BYTES [batch, N] of ``b"<score>:<index>:<label>"``, best first: probabilities (a sigmoid
    head scores both of its labels, as TF Serving's Classify does; a logits head its
    softmax; a multilabel head every label)."""
    value = outputs[chosen.name]
    if chosen.classes is None:
        return "FP32", value
    head = next(o for o in meta.outputs if o.name == chosen.name)
    scores = head.label_scores(value)
    top = np.argsort(-scores, axis=1, kind="stable")[:, : chosen.classes]
    rows = [
        [f"{row[i]:f}:{i}:{head.labels[i]}".encode() for i in best]
        for row, best in zip(scores.tolist(), top.tolist())
    ]
    return "BYTES", np.array(rows, dtype=object).reshape(top.shape)


def raw_contents(datatype: str, values: np.ndarray) -> bytes:
    """A tensor's raw bytes: FP32 little-endian; BYTES as a 4-byte little-endian length
    before each element (both protocols' binary form)."""
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(item)) + item for item in values.ravel())
    return values.astype("<f4", copy=False).tobytes()


def answer(
    request: Request, model: ServedModel, outputs: Outputs, chosen: list[Chosen]
) -> tuple[dict, list[bytes]]:
    """The response header and the binary section (empty when every output is JSON)."""
    tensors, binary = [], []
    for output in chosen:
        datatype, value = output_tensor(model.metadata, outputs, output)
        tensor: dict[str, Any] = {
            "name": output.name,
            "datatype": datatype,
            "shape": list(value.shape),
        }
        if output.binary:
            raw = raw_contents(datatype, value)
            tensor["parameters"] = {"binary_data_size": len(raw)}
            binary.append(raw)
        elif datatype == "BYTES":
            tensor["data"] = [item.decode() for item in value.ravel()]
        else:
            tensor["data"] = value.ravel().tolist()
        tensors.append(tensor)
    header = {"model_name": model.name, "model_version": str(model.version), "outputs": tensors}
    if request.header.id is not None:
        header["id"] = request.header.id
    return header, binary
