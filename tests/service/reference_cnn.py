"""A from-scratch NumPy CNN (im2col convolution) to check the served activations against.

It reads the weights out of the SavedModel's variables and the layer wiring from the
metadata's layer table; activations, padding, strides and batch-norm epsilon come from the
architecture's Keras config.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

ACTIVATIONS = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0.0),
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "softmax": lambda x: (
        np.exp(x - x.max(-1, keepdims=True))
        / np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True)
    ),
}


def savedmodel_weights(path) -> dict[str, np.ndarray]:
    loaded = tf.saved_model.load(str(path))
    return {v.name.split(":")[0]: v.numpy() for v in loaded.variables}


def im2col(x: np.ndarray, kh: int, kw: int) -> np.ndarray:
    """[N, H, W, C] -> [N, OH, OW, kh*kw*C] patches (stride 1, valid)."""
    windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))
    n, oh, ow, c = windows.shape[:4]
    return windows.transpose(0, 1, 2, 4, 5, 3).reshape(n, oh, ow, kh * kw * c)


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's SAME: the output is ceil(size / stride); the extra row goes at the end."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def conv2d(x, kernel, bias=None, padding="valid", stride=1):
    kh, kw, c, f = kernel.shape
    if padding == "same":
        x = np.pad(
            x,
            (
                (0, 0),
                same_padding(x.shape[1], kh, stride),
                same_padding(x.shape[2], kw, stride),
                (0, 0),
            ),
        )
    cols = im2col(x, kh, kw)[:, ::stride, ::stride]  # stride s: every s-th stride-1 window
    y = cols @ kernel.reshape(kh * kw * c, f)
    return y if bias is None else y + bias


def batch_norm(x, gamma, beta, mean, variance, epsilon):
    """Inference: the moving statistics, not the batch's."""
    return (x - mean) / np.sqrt(variance + epsilon) * gamma + beta


def maxpool2d(x, size=2, padding="valid"):
    n, h, w, c = x.shape
    if padding == "same":
        ph, pw = -h % size, -w % size
        x = np.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), constant_values=-np.inf)
        h, w = h + ph, w + pw
    oh, ow = h // size, w // size
    x = x[:, : oh * size, : ow * size]
    return x.reshape(n, oh, size, ow, size, c).max(axis=(2, 4))


def forward(
    layers, configs: dict[str, dict], weights: dict[str, np.ndarray], image: np.ndarray
) -> dict[str, np.ndarray]:
    """Every layer's output, computed in the layer table's (graph) order."""
    out: dict[str, np.ndarray] = {}
    for layer in layers:
        cfg = configs[layer.name]
        inputs = [out[name] for name in layer.inbound]
        if layer.type == "InputLayer":
            out[layer.name] = image
        elif layer.type == "Conv2D":
            y = conv2d(
                inputs[0],
                weights[f"{layer.name}/kernel"],
                weights.get(f"{layer.name}/bias"),
                cfg["padding"],
                cfg["strides"][0],
            )
            out[layer.name] = ACTIVATIONS[cfg["activation"]](y)
        elif layer.type == "BatchNormalization":
            stats = (
                weights[f"{layer.name}/{k}"]
                for k in ("gamma", "beta", "moving_mean", "moving_variance")
            )
            out[layer.name] = batch_norm(inputs[0], *stats, cfg["epsilon"])
        elif layer.type == "ReLU":
            out[layer.name] = ACTIVATIONS["relu"](inputs[0])
        elif layer.type == "Add":
            out[layer.name] = np.sum(inputs, axis=0)
        elif layer.type == "GlobalAveragePooling2D":
            out[layer.name] = inputs[0].mean(axis=(1, 2))
        elif layer.type == "MaxPooling2D":
            out[layer.name] = maxpool2d(inputs[0], cfg["pool_size"][0], cfg["padding"])
        elif layer.type == "Flatten":
            out[layer.name] = inputs[0].reshape(len(inputs[0]), -1)
        elif layer.type == "Concatenate":
            out[layer.name] = np.concatenate(inputs, axis=-1)
        elif layer.type == "Dense":
            y = inputs[0] @ weights[f"{layer.name}/kernel"] + weights[f"{layer.name}/bias"]
            out[layer.name] = ACTIVATIONS[cfg["activation"]](y)
        elif layer.type == "Dropout":
            out[layer.name] = inputs[0]  # identity at inference
        else:
            raise NotImplementedError(layer.type)
    return out
