"""API keys: every route family refuses a request without a valid key (401 in its API's
error shape, with WWW-Authenticate), accepts either header, leaves the health probes open,
opens exactly the public paths, never logs a key; Swagger UI's Authorize button works."""

from __future__ import annotations

import logging

import pytest

from service.app import create_app
from service.settings import Settings
from tests.service.conftest import CHROMIUM, make_client, serving
from tests.service.handwriting import draw_digit, encode

KEYS = ["alpha-0123456789abcdef", "beta-0123456789abcdef"]
DIGIT = encode(draw_digit(7))
PNG = {"file": ("d.png", DIGIT)}
ROUTES = [  # (method, path, request arguments)
    ("POST", "/predict", {"files": PNG}),
    ("POST", "/models/digit_odd/feature-maps", {"files": PNG}),
    ("POST", "/models/digit_odd/explain", {"files": PNG}),
    ("GET", "/models", {}),
    ("GET", "/models/digit_odd/versions/1", {}),
    ("GET", "/v1/models/digit_odd", {}),
    ("GET", "/v2/models/digit_odd", {}),
    ("GET", "/v2", {}),
    ("GET", "/metrics", {}),
    ("GET", "/docs", {}),
    ("GET", "/openapi.json", {}),
    ("GET", "/", {}),
    ("GET", "/static/explorer/explorer.js", {}),
]


@pytest.fixture(scope="module")
def guarded(models_dir):
    with make_client(model_dir=models_dir, api_keys=",".join(KEYS)) as client:
        yield client


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r[0]} {r[1]}")
def test_every_route_family_needs_a_key(guarded, route):
    method, path, kwargs = route
    refused = guarded.request(method, path, **kwargs)
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == 'Bearer realm="cnn-serve"'
    body = refused.json()
    if path.startswith(("/v1/", "/v2")):
        assert set(body) == {"error"} and "API key" in body["error"]
    else:
        assert body["error"]["code"] == "unauthorized"
    wrong = guarded.request(method, path, headers={"X-API-Key": "gamma-0123456789abcdef"}, **kwargs)
    assert wrong.status_code == 401 and "not valid" in wrong.text
    for headers in ({"Authorization": f"Bearer {KEYS[0]}"}, {"X-API-Key": KEYS[1]}):
        assert guarded.request(method, path, headers=headers, **kwargs).status_code == 200


def test_health_probes_stay_open(guarded):
    for path in ("/health/live", "/health/ready", "/v2/health/live", "/v2/health/ready"):
        assert guarded.get(path).status_code == 200, path


def test_public_paths_open_exactly_those(models_dir):
    with make_client(
        model_dir=models_dir,
        api_keys=KEYS[0],
        public_paths="/docs,/openapi.json,/static/docs,/metrics",
    ) as client:
        for path in ("/docs", "/openapi.json", "/metrics", "/static/docs/swagger-ui.css"):
            assert client.get(path).status_code == 200, path
        for path in ("/models", "/docs-old", "/metricsx", "/"):
            assert client.get(path).status_code == 401, path
        assert client.post("/predict", files=PNG).status_code == 401


def test_keys_from_a_file_and_never_logged(models_dir, tmp_path, caplog):
    key_file = tmp_path / "keys"
    key_file.write_text(f"# operators' keys\n{KEYS[0]}\n\n{KEYS[1]}\n")
    settings = Settings(model_dir=models_dir, device="cpu", api_keys=f"@{key_file}")
    assert KEYS[0] not in repr(settings) and KEYS[0] not in str(settings.model_dump())
    with (
        caplog.at_level(logging.DEBUG),
        make_client(model_dir=models_dir, api_keys=f"@{key_file}") as client,
    ):
        assert client.post("/predict", files=PNG, headers={"X-API-Key": KEYS[1]}).status_code == 200
        assert client.get("/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "request" in logged and not any(key in logged for key in KEYS)


def test_bad_key_settings_are_refused_without_echoing_them(tmp_path):
    for value in ("short", f"{KEYS[0]},with space in it", f"@{tmp_path / 'missing'}"):
        with pytest.raises(ValueError) as refused:
            Settings(device="cpu", api_keys=value)
        assert "with space" not in str(refused.value).split("input_value")[0]


def test_openapi_declares_the_keys(guarded):
    schema = guarded.get("/openapi.json", headers={"X-API-Key": KEYS[0]}).json()
    assert set(schema["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    assert schema["security"] == [{"bearer": []}, {"apiKey": []}]
    assert schema["paths"]["/health/ready"]["get"]["security"] == []


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium")
def test_swagger_authorize_then_try_it_out(models_dir, tmp_path):
    from playwright.sync_api import sync_playwright

    from tests.service.conftest import FLAGS

    app = create_app(
        Settings(
            model_dir=models_dir,
            device="cpu",
            api_keys=KEYS[0],
            public_paths="/docs,/openapi.json,/static/docs",
        )
    )
    digit = tmp_path / "seven.png"
    draw_digit(7).save(digit)
    with serving(app) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page()
        page.goto(f"http://{url}/docs")
        op = page.locator("#operations-inference-predict_predict_post")
        op.wait_for(timeout=30_000)

        def try_it_out() -> str:
            """Execute /predict with the digit; the status Swagger UI shows."""
            if not op.locator("button.execute").count():  # not in "try it out" mode yet
                if not op.locator(".try-out__btn").first.is_visible():  # folded
                    op.locator(".opblock-summary").click()
                op.get_by_role("button", name="Try it out").click()
                op.locator("button.execute").wait_for()
            picker = op.locator("input[type=file]")
            if not picker.count():
                op.get_by_role("button", name="Add string item").first.click()
            picker.first.set_input_files(str(digit))
            op.locator("button.execute").click()
            status = op.locator(".live-responses-table .response .response-col_status").first
            status.wait_for(timeout=30_000)
            return status.inner_text().strip()

        assert try_it_out().startswith("401")
        page.click("button.authorize")
        bearer = page.locator(".auth-container").filter(
            has=page.locator("input[aria-label='auth-bearer-value']")
        )
        bearer.locator("input").fill(KEYS[0])
        bearer.get_by_role("button", name="Apply credentials").click()
        page.locator("button.btn-done").first.click()
        if op.locator("button.btn-clear").count():  # the 401 answer from before
            op.locator("button.btn-clear").click()
        assert try_it_out().startswith("200")
        page.screenshot(path=tmp_path / "authorized.png")
        browser.close()


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium")
def test_the_explorer_asks_for_the_key(models_dir):
    """With only the page public, it says a key is needed, takes one, and works."""
    from playwright.sync_api import sync_playwright

    from tests.service.conftest import FLAGS

    app = create_app(
        Settings(
            model_dir=models_dir, device="cpu", api_keys=KEYS[0], public_paths="/,/static/explorer"
        )
    )
    with serving(app) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page()
        page.goto(f"http://{url}/")
        page.wait_for_selector("#error:not([hidden])")
        assert "401" in page.locator("#error").inner_text()
        page.fill("#api-key", KEYS[0])
        page.press("#api-key", "Enter")
        page.locator("#samples button").first.click()
        page.wait_for_function(
            "() => document.querySelector('[data-testid=prediction]').textContent === '2'"
        )
        assert page.locator("#error").is_hidden()
        browser.close()
