"""The OpenAPI schema is the contract: schemathesis generates requests for every operation
(file fields carry real image bytes) and runs all of its checks on every answer."""

from __future__ import annotations

import io

import numpy as np
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from PIL import Image

from service.app import create_app
from service.settings import Settings
from tests.conftest import MODELS
from tests.service.handwriting import draw_digit, encode


def _images() -> list[bytes]:
    """Uploads as a client sends them: digits and photos in the formats the API takes."""
    noise = np.random.default_rng(0).integers(0, 255, (40, 48, 3), np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, "WEBP")
    return [
        encode(draw_digit(3)),
        encode(draw_digit(8, mode="RGB"), "JPEG"),
        encode(draw_digit(1, canvas=(28, 28), box=(6, 4, 20))),
        buf.getvalue(),
        encode(Image.fromarray(noise), "GIF"),
    ]


# file fields (format: binary) get real images instead of random bytes
schemathesis.openapi.format("binary", st.sampled_from(_images()))

app = create_app(Settings(model_dir=MODELS, device="cpu"))
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@schema.parametrize()
# derandomized: the same examples every run, so CI is not a lottery
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_every_operation_honours_its_schema(case):
    case.call_and_validate()
