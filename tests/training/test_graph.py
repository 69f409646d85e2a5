"""Nested models opened up: a transfer-learning model's base shows its inner layers (named
``base/layer``) in the layer table and the feature maps, with the values the base computes;
models without nesting keep exactly the table they were exported with."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tests.conftest import MODELS
from training.export import feature_map_model, layer_table
from training.metadata import ModelMetadata


def transfer_model() -> keras.Model:
    """A user's transfer model: a Keras Applications base (no weights) under a new head."""
    keras.utils.set_random_seed(0)
    base = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, include_top=False, weights=None
    )
    image = keras.Input((32, 32, 3), name="image")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(base(image, training=False))
    return keras.Model(image, keras.layers.Dense(5, activation="softmax", name="kind")(x))


def sequential_base_model() -> keras.Model:
    """A user's own Sequential feature extractor nested in a Sequential classifier."""
    keras.utils.set_random_seed(1)
    base = keras.Sequential(
        [
            keras.Input((20, 20, 1)),
            keras.layers.Conv2D(4, 3, activation="relu", name="conv_a"),
            keras.layers.MaxPooling2D(name="pool_a"),
        ],
        name="features",
    )
    return keras.Sequential(
        [
            keras.Input((20, 20, 1)),
            base,
            keras.layers.Flatten(name="flat"),
            keras.layers.Dense(3, activation="softmax", name="head"),
        ],
        name="classifier",
    )


def test_a_keras_applications_base_shows_its_inner_layers():
    model = transfer_model()
    base = model.get_layer("mobilenetv2_0.35_32")
    rows = {row.name: row for row in layer_table(model)}
    inner = f"{base.name}/block_1_expand"
    assert inner in rows and rows[inner].type == "Conv2D"
    assert rows[f"{base.name}/Conv1"].inbound == ["image"]  # the base reads the model's input
    assert rows["pool"].inbound == [f"{base.name}/out_relu"]  # the head reads its last layer
    assert len(rows) == 1 + len(base.layers) - 1 + 2  # input, the base's layers, pool, kind
    x = np.random.default_rng(0).random((2, 32, 32, 3), np.float32)
    maps = feature_map_model(model)(x)
    want = keras.Model(base.inputs, base.get_layer("block_1_expand").output)(x)
    np.testing.assert_allclose(maps[inner], want, atol=1e-5)
    np.testing.assert_allclose(maps["kind"], model(x), atol=1e-5)


def test_a_sequential_base_in_a_sequential_model():
    model = sequential_base_model()
    assert [row.name for row in layer_table(model)] == [
        "features/conv_a",
        "features/pool_a",
        "flat",
        "head",
    ]
    x = np.random.default_rng(1).random((2, 20, 20, 1), np.float32)
    maps = feature_map_model(model)(x)
    np.testing.assert_allclose(maps["head"], model(x), atol=1e-6)
    conv = model.get_layer("features").get_layer("conv_a")
    np.testing.assert_allclose(maps["features/conv_a"], conv(x), atol=1e-6)


@pytest.mark.parametrize(
    "version", sorted(MODELS.glob("*/[0-9]*")), ids=lambda p: f"{p.parent.name}-{p.name}"
)
def test_the_committed_models_keep_their_layer_tables(version):
    """The replay through Keras's graph runner gives each shipped model the very table it was
    exported with (this fails should Keras's private graph walk change)."""
    model = keras.saving.load_model(version / "model.keras", compile=False)
    assert layer_table(model) == ModelMetadata.read(version).layers
