"""One image at a time through a LiteRT (TensorFlow Lite) copy of the serving signature.

A TensorFlow call costs ~0.3 ms on this 2-core machine whatever the graph does (a trivial
``tf.function`` costs ~0.2 ms), which was most of a lone client's latency (bench.run, c=1).
The same signature in LiteRT's interpreter answers one digit in ~25 µs. Batches of more than
one image stay on TensorFlow, which uses every core for them; so do the feature maps and
Grad-CAM, which need the full graph.

The copy is ``model.tflite`` beside ``saved_model.pb`` (``cnn-train export`` writes it), or is
converted from the SavedModel when the version loads (a drop-in model; ~0.5-2 s). It is used
only if it answers a probe as TensorFlow does (:data:`TOLERANCE`): a stale or unconvertible
file leaves the version on TensorFlow, with a log line saying why.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from training.export import LITE_FILE, SIGNATURE, lite_flatbuffer
from training.quiet_tf import native_stderr_captured

log = logging.getLogger("cnn_serve")

TOLERANCE = 1e-4  # largest difference from TensorFlow's outputs on the probe


class LiteSignature:
    """The interpreter of one version; called from one thread at a time (the runner's)."""

    def __init__(self, flatbuffer: bytes, input_name: str) -> None:
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_content=flatbuffer, num_threads=1)
        self._run = interpreter.get_signature_runner(SIGNATURE)
        self._interpreter, self.input_name = interpreter, input_name

    def __call__(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        return self._run(**{self.input_name: pixels})


def load(
    path: Path, input_name: str, probe: np.ndarray, expected: dict[str, np.ndarray]
) -> LiteSignature | None:
    """The LiteRT copy of the version in ``path`` if it answers ``probe`` (one image) with
    ``expected`` (TensorFlow's outputs); else None."""
    try:
        file = path / LITE_FILE
        flatbuffer = file.read_bytes() if file.is_file() else lite_flatbuffer(path)
        with native_stderr_captured():  # its first call: "Created TensorFlow Lite XNNPACK ..."
            lite = LiteSignature(flatbuffer, input_name)
            answer = lite(probe)
        if answer.keys() != expected.keys():
            raise ValueError(f"outputs {sorted(answer)}, not {sorted(expected)}")
        worst = max(float(np.max(np.abs(answer[k] - expected[k]))) for k in expected)
        if not worst <= TOLERANCE:
            raise ValueError(f"answers differ from TensorFlow's by up to {worst:.2g}")
    except Exception as exc:  # noqa: BLE001 - TensorFlow serves the version without it
        log.warning("%s: one-image calls stay on TensorFlow (LiteRT: %s)", path, exc)
        return None
    return lite
