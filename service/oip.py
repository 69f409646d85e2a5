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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service.errors import BadRequest, UnsupportedMediaType, clip
from service.model import Outputs, ServedModel
from service.model_input import ModelInput, of_files, of_pixels
from service.schemas import BASE64, numbers
from service.tensors import header_length, json_floats, may_hold_booleans
from service.uploads import Upload
from training.metadata import ModelMetadata

PLATFORM = "tensorflow_savedmodel"
EXTENSIONS = ["binary_tensor_data"]
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
    data: list[float] | None = None


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


def model_input(request: Request, meta: ModelMetadata, limit: int) -> ModelInput:
    """The request's one input: FP32 pixels, or BYTES image files to preprocess."""
    inputs = request.header.inputs
    names = [tensor.name for tensor in inputs]
    if len(inputs) != 1:
        raise BadRequest(
            f"send one input, {meta.input.name!r} or {BYTES_INPUT!r}; got {clip(names)}"
        )
    tensor = inputs[0]
    raw = _binary_sections(request)[0]
    if tensor.name == meta.input.name:
        pixels = _pixels(tensor, raw, request.may_hold_booleans)
        return of_pixels(pixels, meta.input, limit, f"input {meta.input.name!r}")
    if tensor.name == BYTES_INPUT:
        return of_files(_files(tensor, raw), limit)
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


def _pixels(tensor: RequestInput, raw: memoryview | None, may_hold_booleans: bool) -> np.ndarray:
    """The FP32 tensor as sent, in its declared shape (the declaration must fit the data)."""
    what = f"input {clip(tensor.name)}"
    if tensor.datatype != "FP32":
        raise BadRequest(f"{what} is FP32, not {clip(tensor.datatype)}")
    count = math.prod(tensor.shape)
    if raw is not None:
        if len(raw) != 4 * count:
            raise BadRequest(
                f"{what} of shape {tensor.shape} is {4 * count} bytes of FP32; "
                f"binary_data_size says {len(raw)}"
            )
        return np.frombuffer(raw, "<f4").reshape(tensor.shape)
    pixels = json_floats(tensor.data, f"{what}: 'data'", may_hold_booleans)
    if pixels.size != count:
        raise BadRequest(
            f"{what}: 'data' holds {pixels.size} values; shape {tensor.shape} needs {count}"
        )
    return pixels.reshape(tensor.shape)


def _files(tensor: RequestInput, raw: memoryview | None) -> list[Upload]:
    """The BYTES tensor's elements, one image file each, as many as its shape declares."""
    if tensor.datatype != "BYTES":
        raise BadRequest(f"input {BYTES_INPUT!r} is BYTES, not {clip(tensor.datatype)}")
    n = tensor.shape[0] if tensor.shape else 0
    if tensor.shape not in ([n], [n, 1]):
        raise BadRequest(
            f"input {BYTES_INPUT!r} has shape [-1] (one file per image); got {tensor.shape}"
        )
    files = _split_bytes(raw) if raw is not None else _base64_strings(tensor.data)
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


def requested_outputs(request: Request, meta: ModelMetadata) -> list[tuple[str, bool]]:
    """(output name, in binary?) for each output to answer, in the order asked."""
    default = bool(request.header.parameters and request.header.parameters.binary_data_output)
    if request.header.outputs is None:
        return [(o.name, default) for o in meta.outputs]
    known = [o.name for o in meta.outputs]
    names = [o.name for o in request.header.outputs]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise BadRequest(f"unknown output(s) {clip(unknown)}; the model's outputs are {known}")
    if len(set(names)) != len(names):
        raise BadRequest(f"an output is requested more than once: {clip(names)}")
    chosen = []
    for output in request.header.outputs:
        binary = output.parameters.binary_data if output.parameters else None
        chosen.append((output.name, default if binary is None else binary))
    return chosen


def answer(
    request: Request, model: ServedModel, outputs: Outputs, chosen: list[tuple[str, bool]]
) -> tuple[dict, list[bytes]]:
    """The response header and the binary section (empty when every output is JSON)."""
    tensors, binary = [], []
    for name, in_binary in chosen:
        value = outputs[name]
        tensor: dict[str, Any] = {"name": name, "datatype": "FP32", "shape": list(value.shape)}
        if in_binary:
            raw = value.astype("<f4", copy=False).tobytes()
            tensor["parameters"] = {"binary_data_size": len(raw)}
            binary.append(raw)
        else:
            tensor["data"] = value.ravel().tolist()
        tensors.append(tensor)
    header = {"model_name": model.name, "model_version": str(model.version), "outputs": tensors}
    if request.header.id is not None:
        header["id"] = request.header.id
    return header, binary
