"""A Keras model's layers as one graph, with nested models opened up.

A transfer-learning model wraps its base (``keras.applications.*``, or a user's Sequential) as
a single layer; its feature maps, its layer table and Grad-CAM's layers are the base's inner
layers, named with the nesting visible (``mobilenetv2_0.35_64/block_1_expand``: Keras forbids
``/`` in layer names, so such a name can only mean nesting). The graph is replayed from the
model's inputs — layer by layer, each nested model's own graph in place of the model — so that
every layer's output is a tensor of one graph that a ``keras.Model`` can expose.

The replay walks each functional model with Keras's own graph runner
(``Functional._run_through_graph``, not a public API: pyproject pins Keras to one minor
release, and ``tests/training/test_graph.py`` fails if it changes). Nothing else in the
project reads Keras internals: which heads read raw pixels (``training.train.pixel_heads``)
comes from this replay too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import keras
from keras import tree


@dataclass
class Expanded:
    """Every layer's output by qualified name (graph order), its parents and its layer."""

    inputs: list
    outputs: dict[str, Any] = field(default_factory=dict)
    inbound: dict[str, list[str]] = field(default_factory=dict)
    layers: dict[str, keras.Layer] = field(default_factory=dict)
    heads: dict[str, Any] = field(default_factory=dict)  # the model's outputs, replayed
    producers: dict[int, str] = field(default_factory=dict)  # id(tensor) -> layer name

    def record(self, name: str, layer: keras.Layer, output: Any, parents: list[str]) -> None:
        for tensor in tree.flatten(output):
            self.producers[id(tensor)] = name
        if name not in self.outputs:
            self.outputs[name] = tree.flatten(output)[0]
            self.inbound[name], self.layers[name] = parents, layer

    def parents(self, *args: Any) -> list[str]:
        names = [self.producers[id(t)] for t in tree.flatten(args) if id(t) in self.producers]
        return list(dict.fromkeys(names))

    def head_layer(self, head: str) -> str:
        """The (qualified) layer that makes head ``head``."""
        return self.producers[id(self.heads[head])]


def _is_model(layer: keras.Layer) -> bool:
    return isinstance(layer, keras.Model)


def in_order(model: keras.Model, graph: Expanded) -> list[str]:
    """The qualified names in the model's own layer order, each nested model's layers in its
    place (in the order its graph ran them)."""
    names = []
    for layer in model.layers:
        if _is_model(layer):
            prefix = f"{layer.name}/"
            names += [name for name in graph.outputs if name.startswith(prefix)]
        elif layer.name in graph.outputs:
            names.append(layer.name)
    return names


def expand(model: keras.Model, head_names: list[str]) -> Expanded:
    """Replay ``model`` (functional) from its own inputs; ``head_names`` name its outputs."""
    graph = Expanded(inputs=list(model.inputs))
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            graph.record(layer.name, layer, layer.output, [])
    out = _run(model, list(model.inputs), "", graph)
    graph.heads = (
        dict(out)
        if isinstance(out, dict)
        else dict(zip(head_names, tree.flatten(out), strict=True))
    )
    return graph


def _run(model: keras.Model, inputs: list, prefix: str, graph: Expanded) -> Any:
    if isinstance(model, keras.Sequential):
        x = inputs[0]
        for layer in model.layers:
            x = _call(layer, prefix, graph, x)
        return x

    def operation_fn(layer):
        return lambda *args, **kwargs: _call(layer, prefix, graph, *args, **kwargs)

    return model._run_through_graph(inputs, operation_fn=operation_fn)


def _call(layer: keras.Layer, prefix: str, graph: Expanded, *args: Any, **kwargs: Any) -> Any:
    parents = graph.parents(args, kwargs)
    if _is_model(layer):
        # a nested model: its layers in its place, named under it
        return _run(layer, tree.flatten(args), f"{prefix}{layer.name}/", graph)
    out = layer(*args, **kwargs)
    graph.record(prefix + layer.name, layer, out, parents)
    return out
