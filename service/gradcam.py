"""Grad-CAM (Selvaraju et al.; the keras.io "Grad-CAM class activation visualization" steps)
on a version's ``model.keras``: which places in the image made a head choose a class.

For the chosen layer's output A (``[h, w, k]``) and the chosen class score y: the gradients
dy/dA, one weight per channel by global average over the positions, the weighted sum of A's
channels, ReLU, divided by its maximum (all zeros, not NaN, when nothing is positive), then
resized to the model's input size (bilinear, ``tf.image.resize``'s half-pixel centres). The
score of a 1-unit sigmoid head is p for class 1 and 1 - p for class 0.

The SavedModel's signatures carry no gradients, so this runs the Keras model that training
saved beside them; the model's other calls never touch it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from training.metadata import ModelMetadata, OutputSpec


@dataclass
class Explanation:
    layer: str
    class_index: int
    heatmap: np.ndarray  # [H, W] in [0, 1], the model's input size


class GradCam:
    """The Keras model of one version, and per (layer, head) the model that exposes both."""

    def __init__(self, path: Path, metadata: ModelMetadata) -> None:
        self.model = keras.saving.load_model(path, compile=False)
        self.metadata = metadata
        self._graphs: dict[tuple[str, str], object] = {}

    def default_layer(self, output: str) -> str:
        """The last layer (graph order) with a [h, w, k] output that head ``output`` depends
        on: a conv or pooling layer, or the input itself for a head that reads raw pixels."""
        inbound = {layer.name: layer.inbound for layer in self.metadata.layers}
        ancestors, todo = set(), [self.model.output[output]._keras_history.operation.name]
        while todo:
            for parent in inbound[todo.pop()]:
                if parent not in ancestors:
                    ancestors.add(parent)
                    todo.append(parent)
        return [layer.name for layer in self.metadata.layers
                if layer.name in ancestors and len(layer.output_shape) == 3][-1]

    def __call__(self, image: np.ndarray, output: OutputSpec, class_index: int | None,
                 layer: str | None) -> Explanation:
        """Grad-CAM of one image [H, W, C] for ``class_index`` of head ``output`` (default: the
        predicted class) at ``layer`` (default: :meth:`default_layer`)."""
        layer = layer or self.default_layer(output.name)
        key = (layer, output.name)
        if key not in self._graphs:
            self._graphs[key] = self._compile(layer, output)
        heatmap, chosen = self._graphs[key](tf.convert_to_tensor(image[None], tf.float32),
                                            tf.constant(-1 if class_index is None
                                                        else class_index, tf.int32))
        return Explanation(layer, int(chosen), np.clip(heatmap.numpy(), 0.0, 1.0))

    def _compile(self, layer: str, output: OutputSpec):
        """One traced graph per (layer, head): ~10x faster than running the steps eagerly."""
        graph = keras.Model(self.model.inputs, [self.model.get_layer(layer).output,
                                                self.model.output[output.name]])
        binary = output.kind == "binary"
        shape = [1, *self.metadata.input.shape]

        @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32),
                                      tf.TensorSpec([], tf.int32)])
        def cam(x, class_index):
            with tf.GradientTape() as tape:
                tape.watch(x)  # the input layer's "output" is the input itself
                activation, scores = graph(x, training=False)
                scores = scores[0]
                predicted = (tf.cast(scores[0] >= 0.5, tf.int32) if binary
                             else tf.argmax(scores, output_type=tf.int32))
                chosen = tf.where(class_index < 0, predicted, class_index)
                score = (tf.where(chosen == 1, scores[0], 1 - scores[0]) if binary
                         else tf.gather(scores, chosen))
            grads = tape.gradient(score, activation)
            if grads is None:  # the head does not depend on this layer
                grads = tf.zeros_like(activation)
            weights = tf.reduce_mean(grads[0], axis=(0, 1))
            heat = tf.nn.relu(tf.reduce_sum(activation[0] * weights, axis=-1))
            heat = tf.math.divide_no_nan(heat, tf.reduce_max(heat))  # all zeros, not NaN
            resized = tf.image.resize(heat[..., None], shape[1:3], method="bilinear")[..., 0]
            return resized, chosen

        return cam
