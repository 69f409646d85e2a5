"""KServe's own Python model server serving one of our SavedModels, as a KServe user writes it:
a custom ``kserve.Model`` whose ``predict`` calls the serving signature. The peer of
``python -m bench.protocols --kserve PYTHON``; run by that interpreter (with ``kserve`` and
``tensorflow-cpu``), never imported by the service or the tests.

    python bench/kserve_peer.py --model_name digit_odd --model_dir models/digit_odd/1 \\
                                --http_port 8080 --grpc_port 8081
"""

from __future__ import annotations

import argparse

import kserve
import tensorflow as tf
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer


class SavedModel(Model):
    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self.path = path
        self.load()

    def load(self) -> bool:
        self.signature = tf.saved_model.load(self.path).signatures["serving_default"]
        (self.input_name,) = self.signature.structured_input_signature[1]
        self.ready = True
        return self.ready

    def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        pixels = payload.inputs[0].as_numpy()
        outputs = self.signature(**{self.input_name: tf.constant(pixels, tf.float32)})
        answers = []
        for name, value in outputs.items():
            answer = InferOutput(name=name, shape=list(value.shape), datatype="FP32")
            answer.set_data_from_numpy(value.numpy())
            answers.append(answer)
        return InferResponse(
            model_name=self.name, infer_outputs=answers, response_id=payload.id or ""
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--model_dir", required=True)
    args, _ = parser.parse_known_args()
    ModelServer(http_port=args.http_port, grpc_port=args.grpc_port, workers=1).start(
        [SavedModel(args.model_name, args.model_dir)]
    )
