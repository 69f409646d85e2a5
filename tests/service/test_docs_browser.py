"""Swagger UI and ReDoc in real headless Chromium, with no internet: every asset comes from
the service, and "Try it out" on /predict with a file answers."""

from __future__ import annotations

import shutil
import socket
import threading
import time

import pytest
import uvicorn

from service.app import create_app
from tests.service.handwriting import draw_digit

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium")]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def server(settings):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                                        log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.1)
    assert srv.started, "server did not start"
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


@pytest.fixture
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page()
        foreign: dict[str, str] = {}  # attempted requests off the service -> how they ended
        local = (server, "data:", "blob:")
        page.on("request", lambda r: r.url.startswith(local) or foreign.setdefault(r.url, "sent"))
        page.on("requestfailed", lambda r: r.url in foreign and foreign.update(
            {r.url: r.failure or "failed"}))
        yield page
        browser.close()
        leaked = {url: end for url, end in foreign.items() if end != "csp"}  # blocked by our CSP
        assert not leaked, f"the page reached outside the service: {leaked}"


def test_swagger_try_it_out_predicts_an_uploaded_digit(page, server, tmp_path):
    digit = tmp_path / "seven.png"
    draw_digit(7).save(digit)
    page.goto(f"{server}/docs")
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


def test_redoc_renders_offline(page, server):
    page.goto(f"{server}/redoc")
    page.locator("h2", has_text="Classify one or several uploaded images").wait_for(
        timeout=30_000)
    assert "cnn-serve" in page.title()
