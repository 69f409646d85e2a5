"""Grad-CAM (Selvaraju et al.; the keras.io "Grad-CAM class activation visualization" steps)
on a version's ``model.keras``: which places in the image made a head choose a class.

For the chosen layer's output A (``[h, w, k]``) and the chosen class score y: the gradients
dy/dA, one weight per channel by global average over the positions, the weighted sum of A's
channels, ReLU, divided by its maximum (all zeros, not NaN, when nothing is positive), then
resized to the model's input size (bilinear, ``tf.image.resize``'s half-pixel centres). The
score is the head's output for the chosen class: a probability (a 1-unit sigmoid head: p for
class 1 and 1 - p for class 0; a multilabel head: the chosen label's), a logits head's class
logit, or a regression head's chosen value.

The SavedModel's signatures carry no gradients, so this runs the Keras model that training
saved beside them; the model's other calls never touch it.

Each (version, layer, head) is one traced graph (~0.05 s and ~0.3 MB for digit_odd, ~0.3 s and
~10 MB for cifar10_resnet): far too many to keep them all (a sweep over the bundled models'
layers took the process from 0.9 to 3 GB). :class:`TracedCache` keeps the recently used ones
within a count and an estimate of their bytes, for every version of every model together.
Everything here runs on the one thread that does the service's heavy work.
"""

from __future__ import annotations

import gc
import itertools
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import keras
import numpy as np
import tensorflow as tf

from training.graph import expand
from training.metadata import ModelMetadata, OutputSpec


@dataclass
class Explanation:
    layer: str
    class_index: int
    heatmap: np.ndarray  # [H, W] in [0, 1], the model's input size


BYTES_PER_NODE = 10_000  # memory of a traced graph per node (forward + backward), measured:
# cifar10_resnet's 994 nodes took 8-12 MB of RSS per graph, digit_odd's 125 nodes 0.3-1.4 MB

# a TensorFlow ConcreteFunction: (image [1, H, W, C], class) -> (heat, class)
Traced: TypeAlias = Any


def estimated_bytes(traced: Traced) -> int:
    """What a traced graph holds, from the nodes of its graph and its function library."""
    graph = traced.graph.as_graph_def()
    nodes = len(graph.node) + sum(len(f.node_def) for f in graph.library.function)
    return nodes * BYTES_PER_NODE


class TracedCache:
    """Least recently used traced graphs, at most ``max_entries`` and ``max_bytes`` (estimated)
    together; the one being added always stays. Not thread-safe: one thread uses it."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._entries: OrderedDict[tuple, tuple[Traced, int]] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: tuple, build: Callable[[], Traced]) -> Traced:
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key][0]
        traced = build()
        size = estimated_bytes(traced)
        self._entries[key] = (traced, size)
        self.bytes += size
        evicted = False
        while len(self._entries) > 1 and (
            len(self._entries) > self.max_entries or self.bytes > self.max_bytes
        ):
            _, (_, freed) = self._entries.popitem(last=False)
            self.bytes -= freed
            evicted = True
        if evicted:  # a traced graph is a web of reference cycles: free it now, not some day
            gc.collect()
        return traced


_instances = itertools.count()


class GradCam:
    """The Keras model of one version; its traced graphs live in the shared cache."""

    def __init__(self, path: Path, metadata: ModelMetadata, cache: TracedCache) -> None:
        self.model = keras.saving.load_model(path, compile=False)
        # every layer's output in one graph, nested models' inner layers included
        self.graph = expand(self.model, [o.name for o in metadata.outputs])
        self.metadata = metadata
        self.cache = cache
        self._token = next(_instances)  # never reused, unlike id(): a reloaded version is new

    def default_layer(self, output: str) -> str:
        """The last layer (graph order) with a [h, w, k] output that head ``output`` depends
        on: a conv or pooling layer, or the input itself for a head that reads raw pixels."""
        inbound = {layer.name: layer.inbound for layer in self.metadata.layers}
        ancestors, todo = set(), [self.graph.head_layer(output)]
        while todo:
            for parent in inbound[todo.pop()]:
                if parent not in ancestors:
                    ancestors.add(parent)
                    todo.append(parent)
        return [
            layer.name
            for layer in self.metadata.layers
            if layer.name in ancestors and len(layer.output_shape) == 3
        ][-1]

    def __call__(
        self, image: np.ndarray, output: OutputSpec, class_index: int | None, layer: str | None
    ) -> Explanation:
        """Grad-CAM of one image [H, W, C] for ``class_index`` of head ``output`` (default: the
        predicted class) at ``layer`` (default: :meth:`default_layer`)."""
        layer = layer or self.default_layer(output.name)
        traced = self.cache.get(
            (self._token, layer, output.name), lambda: self._compile(layer, output)
        )
        heatmap, chosen = traced(
            tf.convert_to_tensor(image[None], tf.float32),
            tf.constant(-1 if class_index is None else class_index, tf.int32),
        )
        return Explanation(layer, int(chosen), np.clip(heatmap.numpy(), 0.0, 1.0))

    def _compile(self, layer: str, output: OutputSpec) -> Traced:
        """One traced graph per (layer, head): ~10x faster than running the steps eagerly."""
        graph = keras.Model(
            self.model.inputs, [self.graph.outputs[layer], self.graph.heads[output.name]]
        )
        binary, threshold = output.binary, output.THRESHOLD
        ranked = output.classifies  # else values: value 0 unless one is asked for
        shape = [1, *self.metadata.input.shape]

        @tf.function(
            input_signature=[tf.TensorSpec(shape, tf.float32), tf.TensorSpec([], tf.int32)]
        )
        def cam(x, class_index):
            with tf.GradientTape() as tape:
                tape.watch(x)  # the input layer's "output" is the input itself
                activation, scores = graph(x, training=False)
                scores = scores[0]
                if binary:
                    predicted = tf.cast(scores[0] >= threshold, tf.int32)
                elif ranked:  # a class (logits: the class logit), a multilabel head's likeliest
                    predicted = tf.argmax(scores, output_type=tf.int32)
                else:  # a regression or raw value
                    predicted = tf.constant(0, tf.int32)
                chosen = tf.where(class_index < 0, predicted, class_index)
                score = (
                    tf.where(chosen == 1, scores[0], 1 - scores[0])
                    if binary
                    else tf.gather(scores, chosen)
                )
            grads = tape.gradient(score, activation)
            if grads is None:  # the head does not depend on this layer
                grads = tf.zeros_like(activation)
            weights = tf.reduce_mean(grads[0], axis=(0, 1))
            heat = tf.nn.relu(tf.reduce_sum(activation[0] * weights, axis=-1))
            heat = tf.math.divide_no_nan(heat, tf.reduce_max(heat))  # all zeros, not NaN
            resized = tf.image.resize(heat[..., None], shape[1:3], method="bilinear")[..., 0]
            return resized, chosen

        # traced now, once, so that its size is known; a concrete function is never retraced
        # (nor counted by TensorFlow's "frequent retracing" warning, made for the accidental
        # kind: a graph per (version, layer, head) is this cache's design)
        return cam.get_concrete_function()
