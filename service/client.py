"""A small Python client for cnn-serve's native API: what ``cnn-serve predict --url`` and
``cnn-serve evaluate --url`` are built on, and the way to call the service from Python.

    from service.client import Client

    with Client("http://127.0.0.1:8000", key=None) as client:
        answer = client.predict(["digit.png", "seven.jpg"], model="digit_odd")
        maps = client.feature_maps("digit.png", model="digit_odd", layers=["conv2d_layer"])
        cam = client.explain("digit.png", model="digit_odd", output="digit")

Answers are plain data (the API's JSON) and NumPy arrays (feature maps, heatmaps). A 503 with
``Retry-After`` (the service is busy or a model is loading) is retried, at most ``retries``
times, waiting what it says (at most ``MAX_WAIT_S``); any other error raises
:class:`ServiceError` with the API's status, code and message.
"""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import httpx
import numpy as np

MAX_WAIT_S = 10.0
Image = str | Path | tuple[str, bytes]  # a file's path, or (name, its bytes)


class ServiceError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


def _file(image: Image) -> tuple[str, bytes, str]:
    """A multipart file part, its type left for the service to read off the bytes (a name's
    extension says nothing it can trust)."""
    name, data = image if isinstance(image, tuple) else (Path(image).name, Path(image).read_bytes())
    return name, data, "application/octet-stream"


class Client:
    def __init__(
        self, url: str, key: str | None = None, timeout: float = 120.0, retries: int = 5
    ) -> None:
        headers = {"X-API-Key": key} if key else {}
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)
        self.retries = retries

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        for attempt in range(self.retries + 1):
            response = self._http.request(method, path, **kwargs)
            wait = response.headers.get("Retry-After")
            if response.status_code == 503 and wait and attempt < self.retries:
                time.sleep(min(float(wait), MAX_WAIT_S))
                continue
            if response.is_success:
                return response
            try:
                error = response.json()["error"]
                code, message = error.get("code", "error"), error.get("message", str(error))
            except (ValueError, KeyError, TypeError, AttributeError):
                code, message = "error", response.text[:300]
            raise ServiceError(response.status_code, code, message)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def models(self) -> dict:
        """``GET /models``: the models, their versions, readiness and heads."""
        return self._request("GET", "/models").json()

    def model(self, name: str, version: str | int | None = None) -> dict:
        """A version's detail (metadata, layer table, samples); the default version's without
        ``version``."""
        name_version = f"{name}/versions/{version}" if version is not None else name
        return self._request("GET", f"/models/{name_version}").json()

    def predict(
        self,
        images: Sequence[Image],
        model: str | None = None,
        version: str | int | None = None,
        top_k: int = 5,
        threshold: float | None = None,
    ) -> dict:
        """``POST /predict`` with several images at once: the answer (``predictions`` in the
        order sent, ``model``, ``version``, ``timings``)."""
        fields = {"model": model, "version": version, "top_k": top_k, "threshold": threshold}
        data = {k: str(v) for k, v in fields.items() if v is not None}
        files = [("file", _file(image)) for image in images]
        return self._request("POST", "/predict", data=data, files=files).json()

    def feature_maps(
        self,
        image: Image,
        model: str,
        layers: Sequence[str] | None = None,
        version: str | int | None = None,
    ) -> dict[str, np.ndarray]:
        """Every layer's (or ``layers``') raw activations for one image, batch axis first."""
        data = {"format": "npz"}
        if layers:
            data["layers"] = ",".join(layers)
        if version is not None:
            data["version"] = str(version)
        response = self._request(
            "POST", f"/models/{model}/feature-maps", data=data, files={"file": _file(image)}
        )
        with np.load(io.BytesIO(response.content)) as arrays:
            return {name: arrays[name] for name in arrays.files}

    def explain(
        self,
        image: Image,
        model: str,
        output: str | None = None,
        class_index: int | None = None,
        layer: str | None = None,
        version: str | int | None = None,
    ) -> dict:
        """Grad-CAM of one image: the answer with ``heatmap`` as an array [H, W] in [0, 1]
        and ``overlay`` as PNG bytes."""
        fields = {"output": output, "class_index": class_index, "layer": layer, "version": version}
        data = {k: str(v) for k, v in fields.items() if v is not None}
        answer = self._request(
            "POST", f"/models/{model}/explain", data=data, files={"file": _file(image)}
        ).json()
        import base64

        answer["heatmap"] = np.asarray(answer["heatmap"], np.float32)
        answer["overlay"] = base64.b64decode(answer["overlay"])
        return answer
