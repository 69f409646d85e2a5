"""TensorFlow Serving's REST API (v1) as a codec over the server: its JSON requests become the
model's input (pixels, or encoded images that get the same preprocessing as ``/predict``),
and the model's outputs become its answers, shaped as TF Serving shapes them.

Requests follow https://www.tensorflow.org/tfx/serving/api_rest: the row format
(``instances``) and the columnar format (``inputs``), each value either the input tensor
(nested lists, [H, W, C] per instance) or ``{"b64": ...}`` holding an image file.
"""

from __future__ import annotations

import base64
import binascii

import numpy as np
from pydantic_core import from_json

from service.errors import BadRequest, clip
from service.model import ServedModel, Status
from service.model_input import ModelInput, of_files, of_pixels
from service.tensors import json_floats
from service.uploads import Upload
from training.metadata import CLASS_KINDS, ModelMetadata, OutputSpec

SIGNATURE = "serving_default"
STATES = {Status.loading: "LOADING", Status.ready: "AVAILABLE", Status.failed: "END"}


def version_status(model: ServedModel) -> dict:
    """One entry of ``model_version_status``."""
    failed = model.status is Status.failed
    return {
        "version": str(model.version),
        "state": STATES[model.status],
        "status": {
            "error_code": "UNKNOWN" if failed else "OK",
            "error_message": model.error if failed else "",
        },
    }


def _tensor(dims: list[int], name: str, dtype: str = "DT_FLOAT") -> dict:
    return {
        "dtype": dtype,
        "name": name,
        "tensor_shape": {
            "dim": [{"size": str(d), "name": ""} for d in [-1, *dims]],
            "unknown_rank": False,
        },
    }


def metadata(model: ServedModel) -> dict:
    """``GET .../metadata``: the serving signature's inputs and outputs."""
    meta = model.metadata
    outputs = {o.name: _tensor([o.units], o.name) for o in meta.outputs}
    return {
        "model_spec": {"name": model.name, "signature_name": "", "version": str(model.version)},
        "metadata": {
            "signature_def": {
                "signature_def": {
                    SIGNATURE: {
                        "inputs": {
                            meta.input.name: _tensor(
                                meta.input.shape, meta.input.name, f"DT_{meta.input.dtype.upper()}"
                            )
                        },
                        "outputs": outputs,
                        "method_name": "tensorflow/serving/predict",
                    }
                }
            }
        },
    }


def parse(body: bytes, examples: str | None = None) -> dict:
    """The request object (400 when the body is not one). The ``examples`` of a request to
    ``examples`` (classify, regress) are instances in the row format."""
    try:  # jiter (pydantic's parser): a 1 MB batch of pixels in 21 ms, json.loads takes 37
        request = from_json(body)
    except ValueError:  # also nesting deeper than jiter's limit
        raise BadRequest("the body is not valid JSON (or nests too deep)") from None
    if not isinstance(request, dict):
        raise BadRequest("the body must be a JSON object with 'instances' or 'inputs'")
    name = request.get("signature_name", SIGNATURE)
    if not isinstance(name, str):
        raise BadRequest("signature_name is a string")
    if (name or SIGNATURE) != SIGNATURE:  # TF Serving takes "" as the default too
        raise BadRequest(f"no signature named {clip(name)}; this model serves {SIGNATURE!r}")
    if examples:
        if not isinstance(request.get("examples"), list):
            raise BadRequest(f"a {examples} request lists its 'examples'")
        return {"instances": request["examples"]}
    if ("instances" in request) == ("inputs" in request):
        raise BadRequest("send exactly one of 'instances' (row format) or 'inputs' (columnar)")
    return request


def _unwrap(value: object, input_name: str) -> object:
    """``{"image": x}`` -> x; anything else as it is."""
    if isinstance(value, dict) and "b64" not in value:
        if set(value) != {input_name}:
            raise BadRequest(
                f"unknown input(s) {clip(sorted(set(value) - {input_name}))}; "
                f"the model's one input is {input_name!r}"
            )
        return value[input_name]
    return value


def model_input(
    request: dict, meta: ModelMetadata, limit: int, may_hold_booleans: bool
) -> ModelInput:
    """A request's instances: pixel tensors, or ``{"b64": ...}`` images to preprocess."""
    spec = meta.input
    if "instances" in request:
        items = request["instances"]
        items = [_unwrap(item, spec.name) for item in items] if isinstance(items, list) else items
    else:
        items = _unwrap(request["inputs"], spec.name)
    if not isinstance(items, list) or not items:
        raise BadRequest("instances must be a non-empty list")
    encoded = [isinstance(item, dict) for item in items]
    if any(encoded):
        if not all(encoded):
            raise BadRequest("mix of encoded images ({'b64': ...}) and pixel tensors")
        return of_files(
            [Upload(f"instance {i}", _b64(item)) for i, item in enumerate(items)], limit
        )
    return of_pixels(json_floats(items, "instances", may_hold_booleans), spec, limit, "instances")


def _b64(item: dict) -> bytes:
    if set(item) != {"b64"} or not isinstance(item["b64"], str):
        raise BadRequest("an encoded image is {'b64': '<base64 of the file>'}")
    try:
        return base64.b64decode(item["b64"], validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("invalid base64 in 'b64'") from None


def _first(meta: ModelMetadata, kinds: tuple[str, ...], verb: str) -> OutputSpec:
    """The model's first head of ``kinds`` (400 when it has none): what ``verb`` serves."""
    head = next((o for o in meta.outputs if o.kind in kinds), None)
    if head is None:
        raise BadRequest(
            f"{verb} serves a {' or '.join(kinds)} head; model {meta.name!r} has "
            f"{', '.join(f'{o.name} ({o.kind})' for o in meta.outputs)}: use predict"
        )
    return head


def classification(meta: ModelMetadata, outputs: dict[str, np.ndarray]) -> dict:
    """``:classify``: [label, score] pairs of the model's first class head, per example, in
    the head's label order (probabilities: a sigmoid head scores both of its labels, a
    logits head gives its softmax, a multilabel head scores every label)."""
    head = _first(meta, CLASS_KINDS, "classify")
    scores = head.label_scores(outputs[head.name])
    return {
        "results": [
            [[label, score] for label, score in zip(head.labels, row)] for row in scores.tolist()
        ]
    }


def regression_head(meta: ModelMetadata) -> OutputSpec:
    """The head ``:regress`` answers: the model's first regression head, of one value (TF
    Serving's regression is one number per example)."""
    head = _first(meta, ("regression",), "regress")
    if head.units != 1:
        raise BadRequest(
            f"regress gives one value per example; head {head.name!r} has {head.units} "
            f"({', '.join(head.labels[:8])}): use predict"
        )
    return head


def regression(meta: ModelMetadata, outputs: dict[str, np.ndarray]) -> dict:
    """``:regress``: the regression head's value per example (TF Serving's ``results``)."""
    return {"results": outputs[regression_head(meta).name][:, 0].tolist()}


def answer(request: dict, meta: ModelMetadata, outputs: dict[str, np.ndarray]) -> dict:
    """``predictions`` (row format) or ``outputs`` (columnar), as TF Serving shapes them: a
    single output without its name, several as objects keyed by output name."""
    names = [o.name for o in meta.outputs]
    if "instances" in request:
        if len(names) == 1:
            return {"predictions": outputs[names[0]].tolist()}
        columns = {name: outputs[name].tolist() for name in names}
        count = len(columns[names[0]])
        return {"predictions": [{name: columns[name][i] for name in names} for i in range(count)]}
    if len(names) == 1:
        return {"outputs": outputs[names[0]].tolist()}
    return {"outputs": {name: outputs[name].tolist() for name in names}}
