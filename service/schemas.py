"""The wire format: every response is one of these pydantic models (and so in Swagger)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from training.heads import KINDS
from training.metadata import HeadKind, InputSpec, LayerInfo, ModelMetadata, OutputSpec

VERSION_OR_LABEL = r"^([1-9][0-9]{0,9}|[a-z][a-z0-9_-]{0,63})$"
VersionRef = Annotated[str, StringConstraints(pattern=VERSION_OR_LABEL)]
VERSION_FIELD = Field(
    None,
    description="a version number or label (e.g. stable); default: the newest ready version",
    examples=["1"],
)


class PredictParams(BaseModel):
    """The form fields of ``POST /predict`` besides the images."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(
        None, description="model name (default: the service's)", examples=["digit_odd"]
    )
    version: VersionRef | None = VERSION_FIELD
    top_k: int = Field(5, ge=1, le=100, description="classes listed per multiclass output")
    threshold: float = Field(
        0.5, ge=0, le=1, description="multilabel heads: a label applies from this probability"
    )


class ExplainParams(BaseModel):
    """The form fields of ``POST /models/{name}/explain`` besides the image."""

    model_config = ConfigDict(extra="forbid")

    version: VersionRef | None = VERSION_FIELD
    output: str | None = Field(
        None, description="the head to explain (default: the first)", examples=["digit"]
    )
    class_index: int | None = Field(
        None,
        ge=0,
        description="the class (or value) whose evidence to show; default: the predicted "
        "class (multilabel: the most probable label; regression, raw: value 0); for a 1-unit "
        "sigmoid head 1 = positive, 0 = negative",
    )
    layer: str | None = Field(
        None,
        description="a layer with a [h, w, k] output (default: "
        "the last such layer the head depends on)",
    )


class FeatureMapsParams(BaseModel):
    """The form fields of ``POST /models/{name}/feature-maps`` besides the images."""

    model_config = ConfigDict(extra="forbid")

    version: VersionRef | None = VERSION_FIELD
    layers: str | None = Field(
        None, description="comma-separated layer names; default: every layer"
    )
    scaling: Literal["per_layer", "per_channel"] = "per_layer"
    format: Literal["json", "npz"] = Field("json", description="npz: raw float32 activations")


def _form_field(schema: dict) -> dict:
    """A parameter as a form field: sent as text or left out, never null; an empty field
    counts as left out (HTML forms and Swagger UI send them)."""
    schema = dict(schema)
    options = [o for o in schema.pop("anyOf", []) if o.get("type") != "null"]
    if len(options) == 1:
        schema.update(options[0])
    elif options:
        schema["anyOf"] = options
    if schema.get("default", 0) is None:
        del schema["default"]
    if "pattern" in schema:
        schema["pattern"] = f"^$|{schema['pattern']}"
    return schema


def upload_body(params: type[BaseModel]) -> dict:
    """The OpenAPI ``requestBody`` of an upload route: ``file`` (repeatable) plus ``params``'
    fields, nothing else."""
    fields = {
        name: _form_field(field) for name, field in params.model_json_schema()["properties"].items()
    }
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "additionalProperties": False,
                        "properties": {
                            "file": {
                                "type": "array",
                                "minItems": 1,
                                "items": {
                                    "type": "string",
                                    "format": "binary",
                                    "contentMediaType": "application/octet-stream",
                                },
                                "description": "PNG, JPEG, GIF, BMP, WebP or TIFF; repeat the field for "
                                "several images",
                            },
                            **fields,
                        },
                    }
                }
            },
        }
    }


# JSON Schema pieces for the protocols' request bodies: what the schema allows, the service
# accepts (schemathesis checks it), short of image files that do not decode
BASE64: dict[str, Any] = {
    "type": "string",
    "contentEncoding": "base64",
    "pattern": r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$",
}
FLOAT32: dict[str, Any] = {"type": "number", "minimum": -3.4e38, "maximum": 3.4e38}
IMAGE_FILE: dict[str, Any] = {
    "type": "object",
    "required": ["b64"],
    "additionalProperties": False,
    "properties": {"b64": {**BASE64, "description": "an image file (PNG, JPEG, ...)"}},
}


def numbers(depth: int) -> dict:
    """Nested arrays of float32-range numbers, ``depth`` deep, none empty."""
    schema: dict = FLOAT32
    for _ in range(depth):
        schema = {"type": "array", "minItems": 1, "items": schema}
    return schema


def inline(schema: dict) -> dict:
    """A pydantic JSON schema with its ``$defs`` written in place: an OpenAPI operation's
    schema cannot refer to ``#/$defs/...`` (no such place in the document)."""
    defs = schema.pop("$defs", {})

    def resolve(node: object) -> object:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(value) for value in node]
        return node

    return resolve(schema)  # type: ignore[return-value]


class ClassScore(BaseModel):
    label: str
    index: int
    confidence: float


class MulticlassOutput(BaseModel):
    kind: Literal["multiclass"] = "multiclass"
    label: str = Field(examples=["7"])
    index: int
    confidence: float = Field(ge=0, le=1)
    top_k: list[ClassScore]
    probabilities: dict[str, float]


class LogitsOutput(MulticlassOutput):
    """A head of linear class scores: probabilities are their softmax."""

    kind: Literal["logits"] = "logits"  # type: ignore[assignment]  # a narrower literal
    logits: dict[str, float] = Field(description="the model's raw scores, by label")


class BinaryOutput(BaseModel):
    kind: Literal["binary"] = "binary"
    label: str = Field(examples=["odd"])
    probability: float = Field(ge=0, le=1, description="P(positive label), e.g. P(odd)")


class MultilabelOutput(BaseModel):
    """Independent labels, each its own sigmoid: any number of them may apply."""

    kind: Literal["multilabel"] = "multilabel"
    labels: list[str] = Field(description="those whose probability is at least the threshold")
    threshold: float = Field(ge=0, le=1)
    probabilities: dict[str, float]


class RegressionOutput(BaseModel):
    kind: Literal["regression"] = "regression"
    values: dict[str, float] = Field(description="by name (the labels file), else by index")


class RawOutput(BaseModel):
    """Values whose meaning the model does not declare (a drop-in SavedModel without
    heads.json): as the model gave them, never called probabilities."""

    kind: Literal["raw"] = "raw"
    values: dict[str, float]


Output = Annotated[
    MulticlassOutput
    | LogitsOutput
    | BinaryOutput
    | MultilabelOutput
    | RegressionOutput
    | RawOutput,
    Field(discriminator="kind"),
]


class ImagePrediction(BaseModel):
    filename: str | None
    outputs: dict[str, Output]


class Timings(BaseModel):
    decode_ms: float = Field(
        description="decode and preprocess before the model call, all "
        "images; 0 when PNGs already in the model's input "
        "format were decoded inside the model graph"
    )
    inference_ms: float = Field(
        description="waiting in the batch queue plus the model call "
        "(with any decoding done in the graph)"
    )
    total_ms: float


class PredictResponse(BaseModel):
    model: str
    version: int
    predictions: list[ImagePrediction]
    timings: Timings


class ActivationStats(BaseModel):
    min: float
    max: float
    mean: float
    std: float
    zero_fraction: float


class ColorScale(BaseModel):
    colormap: Literal["gray"] = "gray"
    description: str = "black = low end of the range, white = high end"
    scaling: Literal["per_layer", "per_channel"]
    range: list[float] = Field(description="[min, max] mapped to black..white (per_layer)")
    channel_ranges: list[list[float]] | None = Field(
        None, description="grids: [min, max] of each channel, in channel order"
    )


class Grid(BaseModel):
    """Where each channel's tile is: channel c at column c % cols, row c // cols, tiles
    separated by 1-pixel gaps."""

    cols: int
    rows: int
    tile_width: int
    tile_height: int


class LayerImage(BaseModel):
    png_base64: str
    width: int
    height: int
    layout: str = Field(description="e.g. '8x4 grid of 32 channels, 26x26 each' or 'strip'")
    grid: Grid | None = Field(None, description="[h, w, k] outputs: the tiles' geometry")
    color_scale: ColorScale


class LayerActivation(BaseModel):
    name: str
    type: str
    output_shape: list[int | None]
    params: int
    inbound: list[str]
    stats: ActivationStats
    image: LayerImage


class ImageFeatureMaps(BaseModel):
    filename: str | None
    outputs: dict[str, Output]
    layers: list[LayerActivation]


class FeatureMapsResponse(BaseModel):
    model: str
    version: int
    scaling: Literal["per_layer", "per_channel"]
    images: list[ImageFeatureMaps]


class ExplainResponse(BaseModel):
    model: str
    version: int
    output: str
    class_index: int
    label: str
    layer: str
    heatmap: list[list[float]] = Field(
        description="[H, W] in [0, 1] at the model's input "
        "resolution: where the class score's evidence lies"
    )
    overlay: str = Field(description="PNG, base64: the preprocessed input with the heatmap over it")


class VersionStatus(BaseModel):
    version: int
    status: Literal["loading", "ready", "failed"]
    error: str | None = None
    device: str
    load_seconds: float | None = None


class HeadSummary(BaseModel):
    """A head as listings show it: its class names are in the version's metadata."""

    name: str
    kind: HeadKind
    classes: int = Field(
        description="how many labels it has (regression, raw: values; its metadata names them)"
    )


class ModelState(BaseModel):
    name: str
    default_version: int
    labels: dict[str, int] = Field(default_factory=dict, description="version labels")
    ready: bool
    versions: list[VersionStatus]
    input: InputSpec | None = None


class ModelSummary(ModelState):
    outputs: list[HeadSummary] = []


class ModelList(BaseModel):
    device: str
    default_model: str
    model_uploads: bool = Field(description="POST /models/{name}/versions takes model files")
    models: list[ModelSummary]


class VersionDetail(VersionStatus):
    name: str
    metadata: ModelMetadata | None
    layers: list[LayerInfo] = []
    total_params: int | None = None
    samples: list[str] = Field(
        [],
        description="sample images kept with the version (cnn-serve import --samples): "
        "GET /models/{name}/versions/{version}/samples/{sample}",
    )


class ModelDetail(ModelState):
    outputs: list[OutputSpec] = Field([], description="the default version's heads and labels")
    metadata: ModelMetadata | None = Field(None, description="of the default version")


class Health(BaseModel):
    status: Literal["ok", "ready", "not_ready", "draining"]
    models: dict[str, list[int]] = Field(
        default_factory=dict, description="ready versions per model"
    )


class ErrorDetail(BaseModel):
    status: int
    code: str = Field(examples=["invalid_image"])
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


Responses = dict[int | str, dict[str, Any]]  # a route's OpenAPI ``responses``

# what an upload route can answer besides 200
UPLOAD_ERRORS: Responses = {
    code: {"model": ErrorResponse} for code in (400, 404, 408, 413, 415, 422, 503)
}


NUMBER_PAIR = r"^-?[0-9]{1,6}(\.[0-9]{1,6})?,-?[0-9]{1,6}(\.[0-9]{1,6})?$"


HEAD_DECLARATIONS = (
    r"^([A-Za-z0-9_.:/-]{1,128}=)?[a-z]{1,16}(,[A-Za-z0-9_.:/-]{1,128}=[a-z]{1,16}){0,63}$"
)


class ModelUploadParams(BaseModel):
    """The form fields of ``POST /models/{name}/versions`` besides ``file`` and ``labels``:
    the options of ``cnn-serve import``."""

    model_config = ConfigDict(extra="forbid")

    version: int | None = Field(None, ge=1, le=10**9, description="default: the next free one")
    value_range: str | None = Field(
        None,
        pattern=NUMBER_PAIR,
        description="LOW,HIGH: the values the model expects for black and white (default 0,1)",
        examples=["0,255"],
    )
    preprocessing: Literal["resize", "mnist"] = "resize"
    input_size: str | None = Field(
        None,
        pattern=r"^[0-9]{1,5},[0-9]{1,5}$",
        description="H,W: only for a model of any input size",
    )
    head: str | None = Field(
        None,
        pattern=HEAD_DECLARATIONS,
        description="what the heads give, as cnn-serve import --head: KIND for a one-head "
        "model, or HEAD=KIND,HEAD=KIND; kinds: " + ", ".join(KINDS),
        examples=["logits", "age=regression,attributes=multilabel"],
    )

    @property
    def heads(self) -> dict[str | None, str]:
        """``head`` as ``Options.heads``."""
        items = (item.rpartition("=") for item in (self.head or "").split(",") if item)
        return {name or None: kind for name, _, kind in items}

    @property
    def value_range_pair(self) -> tuple[float, float] | None:
        return _pair(self.value_range, float)

    @property
    def input_size_pair(self) -> tuple[int, int] | None:
        return _pair(self.input_size, int)


def _pair(text: str | None, kind: type) -> tuple | None:
    """``"A,B"`` (already matched by the field's pattern) -> (A, B)."""
    return None if text is None else tuple(kind(part) for part in text.split(","))
