import json

import keras
import numpy as np
import pytest

from training.architectures import ARCHITECTURES, DIGIT, build_transfer, get_architecture
from training.cli import main
from training.metadata import OutputSpec
from training.train import pixel_heads

EXPECTED = {
    "digit_odd": (
        63_035,
        {
            "conv2d_layer": (26, 26, 32),
            "maxpool_layer": (13, 13, 32),
            "flatten_layer": (5408,),
            "pixels_flatten_layer": (784,),
            "concat_layer": (6192,),
            "digit_dense": (10,),
            "odd_dense": (1,),
        },
        {"digit": (10,), "odd": (1,)},
    ),
    # the odd head reads the learned features and the digit probabilities (64 + 10)
    "digit_odd_plus": (
        66_037,
        {
            "conv2d_1": (28, 28, 16),
            "maxpool_1": (14, 14, 16),
            "conv2d_2": (14, 14, 32),
            "maxpool_2": (7, 7, 32),
            "conv2d_3": (5, 5, 32),
            "flatten": (800,),
            "features_dense": (64,),
            "features_and_digit": (74,),
            "odd_dense": (1,),
        },
        {"digit": (10,), "odd": (1,)},
    ),
    "cifar10": (
        122_570,
        {
            "conv2d_1": (30, 30, 32),
            "maxpool_1": (15, 15, 32),
            "conv2d_2": (13, 13, 64),
            "maxpool_2": (6, 6, 64),
            "conv2d_3": (4, 4, 64),
            "flatten": (1024,),
            "dense_1": (64,),
            "class_dense": (10,),
        },
        {"class": (10,)},
    ),
    "cifar10_resnet": (
        274_042,
        {
            "stem_conv": (32, 32, 16),
            "stage1_block3_out": (32, 32, 16),
            "stage2_block1_shortcut": (16, 16, 32),
            "stage2_block3_out": (16, 16, 32),
            "stage3_block3_out": (8, 8, 64),
            "pool": (64,),
        },
        {"class": (10,)},
    ),
    "simple_cnn": (
        54_410,
        {"conv2d_layer": (26, 26, 32), "flatten_layer": (5408,)},
        {"digit": (10,)},
    ),
    "mnist_cnn": (
        3_241_354,
        {
            "conv2d_1": (28, 28, 32),
            "maxpool_1": (14, 14, 32),
            "conv2d_2": (14, 14, 64),
            "maxpool_2": (7, 7, 64),
            "dense_1024": (1024,),
            "dropout": (1024,),
        },
        {"digit": (10,)},
    ),
    "lenet5": (
        388_502,
        {
            "conv2d_1": (62, 62, 6),
            "conv2d_2": (29, 29, 16),
            "flatten": (3136,),
            "dense_120": (120,),
            "dense_84": (84,),
        },
        {"class": (10,)},
    ),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_parameter_counts_and_shapes(name):
    params, shapes, outputs = EXPECTED[name]
    model = get_architecture(name).build()
    assert model.count_params() == params
    for layer, shape in shapes.items():
        assert tuple(model.get_layer(layer).output.shape[1:]) == shape
    spec = get_architecture(name).input
    out = model(np.zeros((2, *spec.shape), np.float32))
    assert {k: tuple(v.shape) for k, v in out.items()} == {k: (2, *s) for k, s in outputs.items()}


def test_every_architecture_is_covered():
    assert set(ARCHITECTURES) == set(EXPECTED)


def test_dropout_sits_before_the_classifier():
    model = get_architecture("mnist_cnn").build()
    names = [layer.name for layer in model.layers]
    assert names.index("dropout") == names.index("digit_dense") - 1


def test_digit_odd_heads_read_the_documented_branches():
    model = get_architecture("digit_odd").build()
    concat = model.get_layer("concat_layer")
    assert [t._keras_history.operation.name for t in concat.input] == [
        "flatten_layer",
        "pixels_flatten_layer",
    ]
    assert model.get_layer("odd_dense").input._keras_history.operation.name == (
        "pixels_flatten_layer"
    )


def test_transfer_freezes_the_base_and_trains_only_the_head():
    base = get_architecture("digit_odd").build()
    model = build_transfer(base, "flatten_layer", (DIGIT,), "digit_only")
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == 5408 * 10 + 10
    assert not model.get_layer("conv2d_layer").trainable
    before = keras.ops.convert_to_numpy(model.get_layer("conv2d_layer").kernel).copy()
    model.compile("adam", {"digit": "sparse_categorical_crossentropy"})
    x = np.random.default_rng(0).random((16, 28, 28, 1), np.float32)
    model.fit(x, {"digit": np.arange(16) % 10}, epochs=1, verbose=0)
    after = keras.ops.convert_to_numpy(model.get_layer("conv2d_layer").kernel)
    np.testing.assert_array_equal(before, after)


def test_summary_json_lists_layers_with_bias_inclusive_counts(capsys):
    assert main(["summary", "cifar10", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert table["total_params"] == 122_570
    rows = {row["name"]: row for row in table["layers"]}
    assert rows["conv2d_1"]["params"] == 3 * 3 * 3 * 32 + 32
    assert rows["class_dense"]["params"] == 64 * 10 + 10
    assert rows["conv2d_2"]["inbound"] == ["maxpool_1"]
    assert sum(row["params"] for row in table["layers"]) == table["total_params"]


def test_pixel_heads_are_the_outputs_that_read_raw_pixels_through_no_weights():
    # digit_odd's odd head is a linear model of the pixels: re-fitted on undistorted digits
    assert [layer.name for layer in pixel_heads(get_architecture("digit_odd").build())] == [
        "odd_dense"
    ]
    assert pixel_heads(get_architecture("digit_odd_plus").build()) == []
    assert pixel_heads(get_architecture("cifar10").build()) == []


def test_a_head_decides_as_its_kind_says():
    binary = OutputSpec(name="odd", kind="binary", labels=["even", "odd"])
    scores = np.array([[0.2], [0.5], [0.9]], np.float32)
    assert binary.decide(scores).tolist() == [0, 1, 1]
    np.testing.assert_allclose(
        binary.label_scores(scores), [[0.8, 0.2], [0.5, 0.5], [0.1, 0.9]], rtol=1e-6
    )
    assert binary.target(np.array([3, 4])).tolist() == [[1.0], [0.0]]
    assert DIGIT.decide(np.eye(10, dtype=np.float32)[[7, 2]]).tolist() == [7, 2]
    assert DIGIT.target(np.array([3, 4])).tolist() == [3, 4]
    built = get_architecture("digit_odd").build()
    for spec, layer in ((DIGIT, "digit_dense"), (binary, "odd_dense")):
        dense = built.get_layer(layer)
        assert (dense.units, dense.activation.__name__) == (spec.units, spec.activation)
