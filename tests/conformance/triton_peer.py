"""Triton Inference Server (PyTriton's ``tritonserver``) serving a NumPy function with the
inputs, outputs and ``max_batch_size`` of a cnn-serve model: the reference the conformance
suite sends the same requests to. Run with the Triton venv's Python (its stub links the
system's libpython; ``numpy<2``), never imported by the project:

    .triton-venv/bin/python tests/conformance/triton_peer.py SPEC_JSON HTTP_PORT GRPC_PORT

SPEC_JSON: {"name", "max_batch_size", "input": [name, [dims]], "outputs": [[name, units]]}.
Prints READY once it serves, then serves until stdin closes (its parent is gone).
"""

import json
import sys

import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig


def main() -> None:
    spec = json.loads(sys.argv[1])
    http_port, grpc_port = int(sys.argv[2]), int(sys.argv[3])
    (input_name, dims), outputs = spec["input"], spec["outputs"]

    @batch
    def infer(**inputs):
        """Scores from the pixels' mean: numerics are not what is compared."""
        mean = inputs[input_name].reshape(len(inputs[input_name]), -1).mean(axis=1)
        return {
            name: (mean[:, None] + np.arange(units, dtype=np.float32)[None] / units).astype(
                np.float32
            )
            for name, units in outputs
        }

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
