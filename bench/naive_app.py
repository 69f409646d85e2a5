"""The naive way: a sync endpoint that opens, converts and resizes each upload with Pillow and
calls the model per request (no MNIST normalisation, no batching)."""

import os
from typing import Annotated

import numpy as np
import tensorflow as tf
from fastapi import FastAPI, File, UploadFile
from PIL import Image

from training.metadata import ModelMetadata

PATH = os.environ["NAIVE_MODEL_PATH"]
META = ModelMetadata.read(PATH)
SERVE = tf.saved_model.load(PATH).signatures["serving_default"]
app = FastAPI()


@app.post("/predict")
def predict(file: Annotated[list[UploadFile], File()]) -> dict:
    spec = META.input
    mode = "L" if spec.channels == 1 else "RGB"
    batch = np.stack(
        [
            np.asarray(
                Image.open(f.file).convert(mode).resize((spec.width, spec.height)), np.float32
            ).reshape(spec.shape)
            / 255
            for f in file
        ]
    )
    out = SERVE(image=tf.constant(batch))
    first = META.outputs[0]
    return {
        "model": META.name,
        "predictions": [
            {"label": first.labels[int(np.argmax(p))]} for p in out[first.name].numpy()
        ],
    }


@app.get("/health/ready")
def ready() -> dict:
    return {"status": "ready"}
