"""Swagger UI and ReDoc in real headless Chromium, with no internet: every asset comes from
the service, and "Try it out" on /predict with a file answers."""

from __future__ import annotations

import pytest

from tests.service.conftest import CHROMIUM
from tests.service.handwriting import draw_digit

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium"),
]


def test_swagger_try_it_out_predicts_an_uploaded_digit(page, server_url, tmp_path):
    digit = tmp_path / "seven.png"
    draw_digit(7).save(digit)
    page.goto(f"{server_url}/docs")
    page.wait_for_selector("#operations-inference-predict_predict_post", timeout=30_000)
    page.click("#operations-inference-predict_predict_post .opblock-summary")
    page.click("#operations-inference-predict_predict_post .try-out__btn")
    op = page.locator("#operations-inference-predict_predict_post")
    picker = op.locator("input[type=file]")
    if not picker.count():  # an array field starts empty in some Swagger UI versions
        op.get_by_role("button", name="Add string item").first.click()
    picker.first.set_input_files(str(digit))
    op.locator("button.execute").click()
    response = op.locator(".live-responses-table .response .response-col_status").first
    response.wait_for(timeout=30_000)
    body = op.locator(".live-responses-table .response-col_description pre").first.inner_text()
    assert response.inner_text().strip().startswith("200"), body
    assert '"digit"' in body and '"label": "7"' in body


def test_redoc_renders_offline(page, server_url):
    page.goto(f"{server_url}/redoc")
    page.locator("h2", has_text="Classify one or several uploaded images").wait_for(timeout=30_000)
    assert "cnn-serve" in page.title()
