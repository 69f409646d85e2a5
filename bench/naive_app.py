"""The naive way: a sync endpoint that decodes, preprocesses and calls the model per request."""

import os
from typing import Annotated

import numpy as np
import tensorflow as tf
from fastapi import FastAPI, File, UploadFile

from service.preprocess import decode, to_model_input
from training.metadata import ModelMetadata

PATH = os.environ["NAIVE_MODEL_PATH"]
META = ModelMetadata.read(PATH)
SERVE = tf.saved_model.load(PATH).signatures["serving_default"]
app = FastAPI()


@app.post("/predict")
def predict(file: Annotated[list[UploadFile], File()]) -> dict:
    batch = np.stack([to_model_input(decode(f.file.read(), 40_000_000), META.input)
                      for f in file])
    out = SERVE(image=tf.constant(batch))
    first = META.outputs[0]
    return {"model": META.name, "predictions": [
        {"label": first.labels[int(np.argmax(p))]} for p in out[first.name].numpy()]}


@app.get("/health/ready")
def ready() -> dict:
    return {"status": "ready"}
