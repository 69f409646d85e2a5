"""The doors that change what is served - uploads, load, unload, reload - are closed by
default, and when an operator opens them they take an admin key, never an inference key."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from service.settings import Settings
from tests.service.conftest import make_client
from tests.service.test_logs import _lines

ADMIN, USER = "admin-key-0123456789abcdef", "inference-key-0123456789"
CONTROL = (
    "/v2/repository/models/digit_odd/unload",
    "/v2/repository/models/digit_odd/load",
    "/models/digit_odd/reload",
)


def test_nobody_can_unload_a_model_by_default(client):
    """The one request that took the server down: refused, and nothing changes."""
    for path in CONTROL:
        r = client.post(path)
        assert r.status_code == 403, path
        message = r.json()["error"]
        message = message if isinstance(message, str) else message["message"]
        assert "CNN_SERVE_MODEL_CONTROL=explicit" in message
    assert client.get("/health/ready").status_code == 200
    assert client.get("/v2/models/digit_odd/ready").status_code == 200
    assert client.post("/v2/repository/index").status_code == 200  # still readable


@pytest.fixture(scope="module")
def managed(models_dir):
    with make_client(
        model_dir=models_dir, model_control="explicit", admin_keys=ADMIN, api_keys=USER
    ) as c:
        yield c


def test_only_an_admin_key_manages_models(managed, caplog):
    """No key: 401; an inference key: 403; an admin key acts. The access line says which
    kind of key acted, never the key."""
    caplog.set_level(logging.INFO, logger="cnn_serve.access")
    as_user = {"Authorization": f"Bearer {USER}"}
    for path in CONTROL:
        assert managed.post(path).status_code == 401
        assert managed.post(path, headers={"X-API-Key": "x" * 20}).status_code == 401
        refused = managed.post(path, headers=as_user)
        assert refused.status_code == 403, path
        assert "www-authenticate" not in refused.headers
    assert managed.get("/v2/models/digit_odd/ready", headers=as_user).status_code == 200
    unloaded = managed.post(CONTROL[0], headers={"X-API-Key": ADMIN})
    assert unloaded.status_code == 200
    assert managed.get("/v2/models/digit_odd/ready", headers=as_user).status_code == 404
    assert managed.post(CONTROL[1], headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 200
    assert managed.get("/v2/models/digit_odd/ready", headers=as_user).status_code == 200
    lines = _lines(caplog)
    assert {"admin", "inference", None} <= {line.get("key") for line in lines}
    assert not any(ADMIN in str(line) or USER in str(line) for line in lines)


@pytest.mark.parametrize(
    "settings", [{"model_uploads": True}, {"model_control": "explicit"}], ids=str
)
def test_opening_a_door_without_an_admin_key_is_a_start_up_error(settings, models_dir):
    with pytest.raises(ValidationError, match="CNN_SERVE_ADMIN_KEYS"):
        Settings(model_dir=models_dir, device="cpu", **settings)
    with pytest.raises(ValidationError, match="16"):
        Settings(model_dir=models_dir, device="cpu", admin_keys="short", **settings)
    env = {
        **os.environ,
        **{f"CNN_SERVE_{k.upper()}": str(v).lower() for k, v in settings.items()},
        "CNN_SERVE_MODEL_DIR": str(models_dir),
    }
    done = subprocess.run(
        [sys.executable, "-m", "service.cli"],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert done.stderr.count("\n") == 1 and "CNN_SERVE_ADMIN_KEYS" in done.stderr, done.stderr
