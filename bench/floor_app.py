"""The HTTP floor: the same FastAPI + uvicorn stack, an endpoint that only parses the upload."""

from typing import Annotated

from fastapi import FastAPI, File, UploadFile

app = FastAPI()


@app.post("/predict")
async def predict(file: Annotated[list[UploadFile], File()]) -> dict:
    for f in file:
        await f.read()
    return {"model": "floor", "predictions": [{"label": "0"}]}


@app.get("/health/ready")
async def ready() -> dict:
    return {"status": "ready"}
