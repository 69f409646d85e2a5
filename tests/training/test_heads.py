"""A head's kind from its final activation, read through the graph, or from heads.json."""

from __future__ import annotations

import keras
import pytest

from training.graph import expand
from training.heads import final_activation, kind_of, read_heads_file

L = keras.layers


def _ending(*layers: keras.Layer) -> str:
    image = keras.Input((6, 6, 1), name="image")
    x = L.Flatten(name="flat")(image)
    for layer in layers:
        x = layer(x)
    model = keras.Model(image, x)
    return final_activation(expand(model, ["out"]), "out")


@pytest.mark.parametrize(
    ("layers", "activation"),
    [
        ((L.Dense(3, activation="softmax"),), "softmax"),
        ((L.Dense(3), L.Softmax()), "softmax"),
        ((L.Dense(3, activation="softmax"), L.Dropout(0.5)), "softmax"),  # passes values on
        ((L.Dense(1), L.Activation("sigmoid")), "sigmoid"),
        ((L.Dense(4, activation="sigmoid"), L.Activation("linear")), "sigmoid"),
        ((L.Dense(4), L.Reshape((4,))), "linear"),
        ((L.Dense(2, activation="relu"),), "relu"),
        ((L.Dense(2), L.ReLU()), "relu"),
    ],
)
def test_the_final_activation_is_read_through_the_graph(layers, activation):
    assert _ending(*layers) == activation


def test_a_merge_ends_in_no_activation():
    image = keras.Input((4,), name="v")
    model = keras.Model(image, L.Add(name="sum")([L.Dense(2)(image), L.Dense(2)(image)]))
    assert final_activation(expand(model, ["out"]), "out") == "Add"


@pytest.mark.parametrize(
    ("units", "activation", "declared", "kind"),
    [
        (5, "softmax", None, "multiclass"),
        (1, "sigmoid", None, "binary"),
        (3, "sigmoid", None, "multilabel"),
        (3, "linear", "logits", "logits"),
        (1, "linear", "regression", "regression"),
        (2, "sigmoid", "multiclass", "multiclass"),  # a declaration wins
    ],
)
def test_kinds(units, activation, declared, kind):
    assert kind_of("h", units, activation, declared) == kind


@pytest.mark.parametrize(
    ("units", "activation", "declared", "says"),
    [
        (3, "linear", None, "ends in linear, not softmax or sigmoid"),
        (3, "tanh", None, "--head h=logits|regression"),
        (1, "softmax", None, "a multiclass head scores two or more"),
        (2, "linear", "binary", "a binary head has one"),
        (2, "linear", "probabilities", "the kinds are multiclass, binary"),
    ],
)
def test_what_cannot_be_known_is_refused_in_one_line(units, activation, declared, says):
    with pytest.raises(ValueError, match=None) as info:
        kind_of("h", units, activation, declared)
    assert says in str(info.value) and "\n" not in str(info.value)


def test_heads_json(tmp_path):
    assert read_heads_file(tmp_path) == {}
    (tmp_path / "heads.json").write_text('{"a": "logits", "b": "raw"}')
    assert read_heads_file(tmp_path) == {"a": "logits", "b": "raw"}
    for bad in ('{"a": "probabilities"}', "[1, 2]", "{not json", " " * 70_000):
        (tmp_path / "heads.json").write_text(bad)
        with pytest.raises(ValueError, match="heads.json"):
            read_heads_file(tmp_path)
