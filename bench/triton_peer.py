"""Triton Inference Server (PyTriton's ``tritonserver``) serving a model with the inputs,
outputs and ``max_batch_size`` of a cnn-serve model: the reference the conformance suite
(tests/conformance) sends the same requests to, and the peer of ``python -m bench.protocols
--peer triton``. Run with the Triton venv's Python (deploy/triton-venv.sh: its stub links the
system's libpython; ``numpy<2``), never imported by the service or the tests:

    .triton-venv/bin/python bench/triton_peer.py SPEC_JSON HTTP_PORT GRPC_PORT [SAVEDMODEL]

SPEC_JSON: {"name", "max_batch_size", "input": [name, [dims]], "outputs": [[name, units]]}.
Without SAVEDMODEL the model is a NumPy function (numerics are not what the suite compares);
with it, the version's ``serving_default`` signature (the venv then needs tensorflow-cpu:
``deploy/triton-venv.sh --with-tensorflow``), as a Triton user binds a SavedModel in PyTriton.
Prints READY once it serves, then serves until stdin closes (its parent is gone).
"""

import json
import sys

import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig


def numpy_model(input_name: str, outputs: list):
    def infer(pixels: np.ndarray) -> dict:
        """Scores from the pixels' mean."""
        mean = pixels.reshape(len(pixels), -1).mean(axis=1)
        return {
            name: (mean[:, None] + np.arange(units, dtype=np.float32)[None] / units).astype(
                np.float32
            )
            for name, units in outputs
        }

    return infer


def savedmodel(path: str, input_name: str):
    import tensorflow as tf

    signature = tf.saved_model.load(path).signatures["serving_default"]

    def infer(pixels: np.ndarray) -> dict:
        out = signature(**{input_name: tf.constant(pixels)})
        return {name: value.numpy() for name, value in out.items()}

    return infer


def main() -> None:
    spec = json.loads(sys.argv[1])
    http_port, grpc_port = int(sys.argv[2]), int(sys.argv[3])
    (input_name, dims), outputs = spec["input"], spec["outputs"]
    model = (
        savedmodel(sys.argv[4], input_name)
        if len(sys.argv) > 4
        else numpy_model(input_name, outputs)
    )

    @batch
    def infer(**inputs):
        return model(inputs[input_name])

    config = TritonConfig(
        http_port=http_port, grpc_port=grpc_port, metrics_port=grpc_port + 1, log_verbose=0
    )
    # no access token on the statistics and repository APIs: cnn-serve's are open (or keyed)
    security = TritonSecurityConfig(restricted_endpoints=[])
    with Triton(config=config, security_config=security) as triton:
        triton.bind(
            model_name=spec["name"],
            infer_func=infer,
            inputs=[Tensor(name=input_name, dtype=np.float32, shape=tuple(dims))],
            outputs=[Tensor(name=n, dtype=np.float32, shape=(u,)) for n, u in outputs],
            config=ModelConfig(max_batch_size=spec["max_batch_size"]),
        )
        triton.run()
        print("READY", flush=True)
        sys.stdin.read()  # until the parent closes it or dies


if __name__ == "__main__":
    main()
