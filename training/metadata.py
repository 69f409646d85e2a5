"""The metadata.json schema: the one contract training writes and the service reads.

Both sides import these models; nobody re-declares the fields.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, Field, StringConstraints

METADATA_FILE = "metadata.json"
MAX_LABEL_CHARS = 256  # a class name, not a document: every answer and listing repeats it
MAX_LABELS_BYTES = 2**20  # a labels file
Label = Annotated[str, StringConstraints(max_length=MAX_LABEL_CHARS)]

Preprocessing = Literal["mnist", "resize"]
"""How a server turns an uploaded picture into the model input.

``mnist``: grayscale, dark ink on light paper inverted, cropped to the ink, fitted into 20x20 and
centred by centre of mass in 28x28 (MNIST's own normalisation).
``resize``: colour-converted and resized (antialiased) to the input size.
"""


class InputSpec(BaseModel):
    name: str = "image"
    shape: list[int] = Field(description="[height, width, channels], batch dimension excluded")
    dtype: str = "float32"
    value_range: tuple[float, float] = (0.0, 1.0)
    color_mode: Literal["grayscale", "rgb"]
    preprocessing: Preprocessing

    @property
    def height(self) -> int:
        return self.shape[0]

    @property
    def width(self) -> int:
        return self.shape[1]

    @property
    def channels(self) -> int:
        return self.shape[2]


HeadKind = Literal["multiclass", "binary", "multilabel", "logits", "regression", "raw"]
"""What a head's values are (docs/architecture.md, "Adding a model kind").

``multiclass``: a softmax over its labels; ``binary``: one sigmoid unit, P(positive label);
``multilabel``: one independent sigmoid per label; ``logits``: linear class scores (the
service's probabilities are their softmax); ``regression``: named linear values; ``raw``:
values of unknown meaning (a drop-in SavedModel that does not say), never called probabilities.
"""
CLASS_KINDS = ("multiclass", "binary", "multilabel", "logits")  # those that answer with labels


def softmax(scores: np.ndarray) -> np.ndarray:
    """Row-wise softmax of [n, k] scores, stable for any magnitude."""
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


class OutputSpec(BaseModel):
    name: str
    kind: HeadKind
    labels: list[Label] = Field(
        description="multiclass, multilabel, logits: class names in index order; binary: "
        "[negative, positive]; regression, raw: the values' names"
    )

    # What a head of each kind is, in one place, for training and serving alike: a binary
    # head is one sigmoid unit, P(positive), decided at THRESHOLD, as is each label of a
    # multilabel head; multiclass and logits heads are decided by their largest score.
    # (Grad-CAM's graph decides the same in TensorFlow: service.gradcam.)
    THRESHOLD: ClassVar[float] = 0.5

    @property
    def binary(self) -> bool:
        return self.kind == "binary"

    @property
    def classifies(self) -> bool:
        """Whether its values score labels (else they are values: regression, raw)."""
        return self.kind in CLASS_KINDS

    @property
    def units(self) -> int:
        """Values per image: one per label, or one probability for a binary head."""
        return 1 if self.binary else len(self.labels)

    @property
    def activation(self) -> str:
        """The Keras activation of a head of this kind."""
        return {"multiclass": "softmax", "binary": "sigmoid", "multilabel": "sigmoid"}.get(
            self.kind, "linear"
        )

    @property
    def loss(self) -> str:
        """The Keras loss (a name ``keras.losses.get`` knows; per example, unreduced)."""
        losses = {
            "multiclass": "sparse_categorical_crossentropy",
            "binary": "binary_crossentropy",
            "multilabel": "binary_crossentropy",
            "regression": "mean_squared_error",
        }
        if self.kind not in losses:
            raise ValueError(f"training makes no {self.kind} heads (multiclass is the softmax)")
        return losses[self.kind]

    def target(self, digits: np.ndarray) -> np.ndarray:
        """Training targets from class labels: a binary head answers "is the label odd"."""
        return (digits % 2).astype(np.float32)[:, None] if self.binary else digits

    def decide(self, scores: np.ndarray) -> np.ndarray:
        """The class index of each row of outputs [n, units] (a class head)."""
        if self.binary:
            return (scores[:, 0] >= self.THRESHOLD).astype(np.int64)
        return scores.argmax(axis=1)

    def label_scores(self, scores: np.ndarray) -> np.ndarray:
        """Outputs [n, units] -> a score per label [n, len(labels)]: probabilities for the
        class kinds (binary: 1 - p, p; logits: their softmax), the values themselves else."""
        if self.binary:
            return np.concatenate([1 - scores, scores], axis=1)
        if self.kind == "logits":
            return softmax(scores.astype(np.float64)).astype(scores.dtype)
        return scores


class LayerInfo(BaseModel):
    name: str
    type: str
    output_shape: list[int | None]
    params: int = Field(description="parameters of this layer, biases included")
    trainable: bool = True
    inbound: list[str] = Field(default_factory=list)


class DatasetInfo(BaseModel):
    name: str
    format: str
    path: str | None = None
    provenance: str
    train_examples: int
    validation_examples: int


class TrainingConfig(BaseModel):
    epochs: int
    epochs_run: int
    batch_size: int = Field(description="per worker")
    workers: int = Field(
        1, description="training processes (TF_CONFIG); global batch = batch_size x workers"
    )
    validation_split: float
    seed: int
    augment: bool
    finetune_epochs: int = 0
    optimizer: str
    learning_rate: float
    duration_s: float
    hardware: str
    backend: str = Field("tensorflow", description="the Keras backend that trained it")
    base_model: str | None = None
    frozen_up_to: str | None = None
    initialized_from: str | None = Field(
        None, description="name/version whose weights training started from (--init-from)"
    )


class ModelMetadata(BaseModel):
    name: str
    version: int
    architecture: str
    description: str
    input: InputSpec
    outputs: list[OutputSpec]
    layers: list[LayerInfo]
    total_params: int
    trainable_params: int
    signatures: list[str] = ["serving_default", "feature_maps"]
    max_batch_size: int | None = Field(
        None,
        ge=1,
        description="the most images one request may send this model (Triton's "
        "max_batch_size); None: the service's CNN_SERVE_MAX_IMAGES_PER_REQUEST",
    )
    validation_metrics: dict[str, float] = Field(default_factory=dict)
    dataset: DatasetInfo | None = Field(
        None, description="what it was trained on (None: imported, trained elsewhere)"
    )
    training: TrainingConfig | None = None
    tensorflow_version: str
    keras_version: str
    created_at: str

    def output(self, name: str) -> OutputSpec:
        return next(o for o in self.outputs if o.name == name)

    def estimated_memory_bytes(self) -> int:
        return estimated_memory_bytes(self.layers, self.total_params, self.input.shape)

    def write(self, directory: Path) -> Path:
        path = Path(directory) / METADATA_FILE
        path.write_text(self.model_dump_json(indent=2) + "\n")
        return path

    @classmethod
    def read(cls, directory: Path) -> ModelMetadata:
        return cls.model_validate(json.loads((Path(directory) / METADATA_FILE).read_text()))


def estimated_memory_bytes(
    layers: list[LayerInfo], params: int, input_shape: list[int] | tuple[int, ...]
) -> int:
    """The least memory serving one image takes: the float32 weights, and the input and
    output of the largest layer at once (from the shapes alone, before anything is loaded:
    a 21 KB file may declare a 20000x20000 input or a layer of 10^9 weights)."""
    sizes = [math.prod(d or 1 for d in layer.output_shape) for layer in layers]
    largest = max([*sizes, math.prod(d or 1 for d in input_shape)])
    return 4 * (params + 2 * largest)


def read_labels(path: Path) -> list[str]:
    """A labels file, one label per line (trailing blank lines dropped), within its bounds:
    :class:`ValueError` saying what is wrong, naming the file but not where it is."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_LABELS_BYTES + 1)
        lines = data.decode("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path.name}: cannot read the labels ({type(exc).__name__})") from None
    if len(data) > MAX_LABELS_BYTES:
        raise ValueError(f"{path.name}: a labels file is at most {MAX_LABELS_BYTES:,} bytes")
    labels = [line.strip() for line in lines]
    while labels and not labels[-1]:
        labels.pop()
    if any(len(label) > MAX_LABEL_CHARS for label in labels):
        raise ValueError(f"{path.name}: a label is at most {MAX_LABEL_CHARS} characters")
    return labels
