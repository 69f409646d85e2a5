"""The reference CNNs, one short builder each, looked up by name.

Every model is Functional with one input named ``image`` (float32 in [0, 1]) and a dict of named
outputs, so the exported signatures and the feature-map layer names read like the model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import keras
from keras import layers

from training.metadata import InputSpec, OutputSpec

DIGITS = [str(d) for d in range(10)]
CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip
ODD = OutputSpec(name="odd", kind="binary", labels=["even", "odd"])
DIGIT = OutputSpec(name="digit", kind="multiclass", labels=DIGITS)
CIFAR_CLASS = OutputSpec(name="class", kind="multiclass", labels=CIFAR10_CLASSES)
MNIST_INPUT = InputSpec(shape=[28, 28, 1], color_mode="grayscale", preprocessing="mnist")


@dataclass(frozen=True)
class Architecture:
    """What a name builds, what it reads and what it answers."""

    name: str
    description: str
    dataset: str  # "mnist" or "cifar10"
    input: InputSpec
    outputs: tuple[OutputSpec, ...]
    build: Callable[[], keras.Model]
    augment_by_default: bool = False
    # "plateau": Adam, LR halved on plateau, early stopping; "cosine": SGD with momentum and
    # a cosine-decaying LR over all --epochs (no early stopping), as residual networks train
    schedule: str = "plateau"


def _image(spec: InputSpec) -> keras.KerasTensor:
    return keras.Input(shape=tuple(spec.shape), name="image")


def _head(spec: OutputSpec, name: str) -> layers.Dense:
    """The output layer of head ``spec``: its units and activation are the spec's."""
    return layers.Dense(spec.units, activation=spec.activation, name=name)


def digit_odd() -> keras.Model:
    image = _image(MNIST_INPUT)
    x = layers.Conv2D(32, 3, activation="relu", name="conv2d_layer")(image)
    x = layers.MaxPooling2D(2, name="maxpool_layer")(x)
    x = layers.Flatten(name="flatten_layer")(x)
    pixels = layers.Flatten(name="pixels_flatten_layer")(image)
    both = layers.Concatenate(name="concat_layer")([x, pixels])
    digit = _head(DIGIT, "digit_dense")(both)
    odd = _head(ODD, "odd_dense")(pixels)
    return keras.Model(image, {"digit": digit, "odd": odd}, name="digit_odd")


def digit_odd_plus() -> keras.Model:
    """digit_odd's two heads on a stronger trunk, and the odd/even head reads what the trunk
    learned (its features and the digit probabilities) instead of raw pixels."""
    image = _image(MNIST_INPUT)
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2d_1")(image)
    x = layers.MaxPooling2D(2, name="maxpool_1")(x)
    x = layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2d_2")(x)
    x = layers.MaxPooling2D(2, name="maxpool_2")(x)
    x = layers.Conv2D(32, 3, activation="relu", name="conv2d_3")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(0.3, name="dropout")(x)
    features = layers.Dense(64, activation="relu", name="features_dense")(x)
    digit = _head(DIGIT, "digit_dense")(features)
    both = layers.Concatenate(name="features_and_digit")([features, digit])
    odd = _head(ODD, "odd_dense")(both)
    return keras.Model(image, {"digit": digit, "odd": odd}, name="digit_odd_plus")


def _residual_block(x, filters: int, stride: int, name: str):
    """conv-BN-ReLU-conv-BN plus the shortcut (a strided 1x1 conv when the shape changes),
    then ReLU: He et al.'s basic block."""
    regularizer = keras.regularizers.L2(1e-4)
    shortcut = x
    y = layers.Conv2D(
        filters,
        3,
        strides=stride,
        padding="same",
        use_bias=False,
        kernel_regularizer=regularizer,
        name=f"{name}_conv1",
    )(x)
    y = layers.BatchNormalization(name=f"{name}_bn1")(y)
    y = layers.ReLU(name=f"{name}_relu1")(y)
    y = layers.Conv2D(
        filters,
        3,
        padding="same",
        use_bias=False,
        kernel_regularizer=regularizer,
        name=f"{name}_conv2",
    )(y)
    y = layers.BatchNormalization(name=f"{name}_bn2")(y)
    if stride != 1 or shortcut.shape[-1] != filters:
        shortcut = layers.Conv2D(
            filters,
            1,
            strides=stride,
            use_bias=False,
            kernel_regularizer=regularizer,
            name=f"{name}_shortcut",
        )(x)
        shortcut = layers.BatchNormalization(name=f"{name}_shortcut_bn")(shortcut)
    return layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([y, shortcut]))


def cifar10_resnet() -> keras.Model:
    """ResNet-20 for 32x32 images: a 3x3 conv, three stages of three residual blocks (16, 32,
    64 filters; the last two stages halve the resolution), global average pooling, softmax."""
    image = _image(InputSpec(shape=[32, 32, 3], color_mode="rgb", preprocessing="resize"))
    x = layers.Conv2D(
        16,
        3,
        padding="same",
        use_bias=False,
        kernel_regularizer=keras.regularizers.L2(1e-4),
        name="stem_conv",
    )(image)
    x = layers.ReLU(name="stem_relu")(layers.BatchNormalization(name="stem_bn")(x))
    for stage, filters in enumerate((16, 32, 64), start=1):
        for block in range(1, 4):
            stride = 2 if stage > 1 and block == 1 else 1
            x = _residual_block(x, filters, stride, name=f"stage{stage}_block{block}")
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    out = _head(CIFAR_CLASS, "class_dense")(x)
    return keras.Model(image, {"class": out}, name="cifar10_resnet")


def cifar10() -> keras.Model:
    image = _image(InputSpec(shape=[32, 32, 3], color_mode="rgb", preprocessing="resize"))
    x = layers.Conv2D(32, 3, activation="relu", name="conv2d_1")(image)
    x = layers.MaxPooling2D(2, name="maxpool_1")(x)
    x = layers.Conv2D(64, 3, activation="relu", name="conv2d_2")(x)
    x = layers.MaxPooling2D(2, name="maxpool_2")(x)
    x = layers.Conv2D(64, 3, activation="relu", name="conv2d_3")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(64, activation="relu", name="dense_1")(x)
    out = _head(CIFAR_CLASS, "class_dense")(x)
    return keras.Model(image, {"class": out}, name="cifar10")


def simple_cnn() -> keras.Model:
    image = _image(MNIST_INPUT)
    x = layers.Conv2D(32, 3, activation="relu", name="conv2d_layer")(image)
    x = layers.MaxPooling2D(2, name="maxpool_layer")(x)
    x = layers.Flatten(name="flatten_layer")(x)
    out = _head(DIGIT, "digit_dense")(x)
    return keras.Model(image, {"digit": out}, name="simple_cnn")


def mnist_cnn() -> keras.Model:
    image = _image(MNIST_INPUT)
    x = layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2d_1")(image)
    x = layers.MaxPooling2D(2, padding="same", name="maxpool_1")(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu", name="conv2d_2")(x)
    x = layers.MaxPooling2D(2, padding="same", name="maxpool_2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(1024, activation="relu", name="dense_1024")(x)
    x = layers.Dropout(0.25, name="dropout")(x)
    out = _head(DIGIT, "digit_dense")(x)
    return keras.Model(image, {"digit": out}, name="mnist_cnn")


def lenet5() -> keras.Model:
    image = _image(InputSpec(shape=[64, 64, 3], color_mode="rgb", preprocessing="resize"))
    x = layers.Conv2D(6, 3, activation="relu", name="conv2d_1")(image)
    x = layers.MaxPooling2D(2, name="maxpool_1")(x)
    x = layers.Conv2D(16, 3, activation="relu", name="conv2d_2")(x)
    x = layers.MaxPooling2D(2, name="maxpool_2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(120, activation="relu", name="dense_120")(x)
    x = layers.Dense(84, activation="relu", name="dense_84")(x)
    out = _head(CIFAR_CLASS, "class_dense")(x)
    return keras.Model(image, {"class": out}, name="lenet5")


ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in (
        Architecture(
            "digit_odd",
            "MNIST digit (softmax) and odd/even (sigmoid) from one input; "
            "the digit head reads conv features concatenated with the raw pixels",
            "mnist",
            MNIST_INPUT,
            (DIGIT, ODD),
            digit_odd,
        ),
        Architecture(
            "digit_odd_plus",
            "digit_odd's heads on Conv16-Pool-Conv32-Pool-Conv32-"
            "Dense64; the odd/even head reads the learned features and the digit "
            "probabilities",
            "mnist",
            MNIST_INPUT,
            (DIGIT, ODD),
            digit_odd_plus,
            augment_by_default=True,
        ),
        Architecture(
            "cifar10",
            "Conv32-Pool-Conv64-Pool-Conv64-Dense64-Dense10 on CIFAR-10",
            "cifar10",
            InputSpec(shape=[32, 32, 3], color_mode="rgb", preprocessing="resize"),
            (CIFAR_CLASS,),
            cifar10,
            augment_by_default=True,
        ),
        Architecture(
            "cifar10_resnet",
            "ResNet-20 (batch norm, 3x3 residual blocks of 16/32/"
            "64 filters, global average pooling) on CIFAR-10",
            "cifar10",
            InputSpec(shape=[32, 32, 3], color_mode="rgb", preprocessing="resize"),
            (CIFAR_CLASS,),
            cifar10_resnet,
            augment_by_default=True,
            schedule="cosine",
        ),
        Architecture(
            "simple_cnn", "Conv32-Pool-Dense10 on MNIST", "mnist", MNIST_INPUT, (DIGIT,), simple_cnn
        ),
        Architecture(
            "mnist_cnn",
            "SAME-padded Conv32-Pool-Conv64-Pool-Dense1024-Dropout-Dense10",
            "mnist",
            MNIST_INPUT,
            (DIGIT,),
            mnist_cnn,
        ),
        Architecture(
            "lenet5",
            "LeNet-5 variant on 64x64x3 (CIFAR-10 resized)",
            "cifar10",
            InputSpec(shape=[64, 64, 3], color_mode="rgb", preprocessing="resize"),
            (CIFAR_CLASS,),
            lenet5,
            augment_by_default=True,
        ),
    )
}


@dataclass(frozen=True)
class Transfer:
    """A new model made of a trained model's layers up to ``up_to`` (frozen) plus a new head."""

    name: str
    base: str
    up_to: str
    outputs: tuple[OutputSpec, ...]


TRANSFERS: dict[str, Transfer] = {
    "digit_only": Transfer("digit_only", base="digit_odd", up_to="flatten_layer", outputs=(DIGIT,)),
}


def get_architecture(name: str) -> Architecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        known = ", ".join(sorted([*ARCHITECTURES, *TRANSFERS]))
        raise KeyError(f"unknown model {name!r}; known: {known}") from None


def build_transfer(
    base: keras.Model, up_to: str, outputs: tuple[OutputSpec, ...], name: str
) -> keras.Model:
    """Reuse ``base`` up to the layer ``up_to`` with its weights frozen; add a trainable head."""
    features = base.get_layer(up_to).output
    for layer in keras.Model(base.input, features).layers:
        layer.trainable = False
    heads = {}
    for spec in outputs:
        heads[spec.name] = _head(spec, f"{spec.name}_head")(features)
    return keras.Model(base.input, heads, name=name)
