"""Models over HTTP: POST /models/{name}/versions (off unless CNN_SERVE_MODEL_UPLOADS=true,
behind an admin key) imports a Keras file as cnn-serve import does; Triton's repository
extension lists, loads and unloads models."""

from __future__ import annotations

import io
import shutil
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image

from service.app import create_app
from service.settings import Settings
from tests.conftest import MODELS
from tests.service.conftest import admin_client, make_client, serving
from tests.training.test_importer import cifar_like

KEY = "upload-test-key-0123456789"


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("upload") / "mine.keras"
    cifar_like().save(path)
    return path.read_bytes()


@pytest.fixture
def repo(tmp_path):
    shutil.copytree(MODELS / "digit_odd" / "1", tmp_path / "digit_odd" / "1")
    return tmp_path


def _png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), np.uint8)).save(
        buf, "PNG"
    )
    return buf.getvalue()


def _upload(client, name: str, data: bytes, filename: str = "mine.keras", **fields):
    files = {"file": (filename, data)}
    if "labels" in fields:
        files["labels"] = ("labels.txt", fields.pop("labels"))
    return client.post(
        f"/models/{name}/versions", files=files, data=fields, headers={"X-API-Key": KEY}
    )


def test_an_uploaded_model_serves_at_once(repo, model_file):
    labels = "\n".join(f"thing {i}" for i in range(10)).encode()
    with make_client(model_dir=repo, model_uploads=True, admin_keys=KEY) as client:
        r = _upload(client, "mine", model_file, labels=labels, value_range="0,255")
        assert r.status_code == 201, r.text
        body = r.json()
        assert (body["name"], body["version"], body["status"]) == ("mine", 1, "ready")
        assert body["metadata"]["input"]["value_range"] == [0.0, 255.0]
        predicted = client.post(
            "/predict",
            data={"model": "mine"},
            files={"file": ("x.png", _png())},
            headers={"X-API-Key": KEY},
        )
        assert predicted.status_code == 200
        assert predicted.json()["predictions"][0]["outputs"]["class"]["label"].startswith("thing")
        assert _upload(client, "mine", model_file).json()["version"] == 2  # the next one
        assert client.get("/models", headers={"X-API-Key": KEY}).json()["model_uploads"]


def test_an_upload_declares_its_heads(repo, tmp_path):
    """A linear head is refused in one line naming the declaration; with ``head`` it serves."""
    from tests.service.test_head_kinds import every_kind

    path = tmp_path / "kinds.keras"
    every_kind().save(path)
    data = path.read_bytes()
    with make_client(model_dir=repo, model_uploads=True, admin_keys=KEY) as client:
        r = _upload(client, "kinds", data)
        assert r.status_code == 400
        assert "head 'age' ends in linear" in r.json()["error"]["message"]
        assert "--head age=logits|regression" in r.json()["error"]["message"]
        r = _upload(client, "kinds", data, head="age=regression,scores=logits")
        assert r.status_code == 201, r.text
        kinds = {o["name"]: o["kind"] for o in r.json()["metadata"]["outputs"]}
        assert (kinds["age"], kinds["scores"], kinds["attrs"]) == (
            "regression",
            "logits",
            "multilabel",
        )
        r = _upload(client, "kinds", data, head="age=probability")
        assert r.status_code == 400 and "the kinds are multiclass" in r.json()["error"]["message"]


def test_uploads_are_off_by_default_and_need_a_key(repo, model_file):
    with make_client(model_dir=repo) as client:
        r = _upload(client, "mine", model_file)
        assert r.status_code == 403 and r.json()["error"]["code"] == "model_uploads_disabled"
    user = "inference-test-key-0123456789"
    with make_client(model_dir=repo, model_uploads=True, admin_keys=KEY, api_keys=user) as client:
        r = client.post("/models/mine/versions", files={"file": ("m.keras", model_file)})
        assert r.status_code == 401
        r = client.post(
            "/models/mine/versions",
            files={"file": ("m.keras", model_file)},
            headers={"Authorization": f"Bearer {user}"},
        )
        assert r.status_code == 403 and "admin key" in r.json()["error"]["message"]
    assert not (repo / "mine").exists()


def test_a_bad_model_is_a_400_that_says_why_and_leaves_nothing(repo, model_file):
    with make_client(model_dir=repo, model_uploads=True, admin_keys=KEY) as client:
        for data, filename, fields, words in [
            (b"PK\x03\x04 junk", "m.keras", {}, "cannot be read as a Keras model"),
            (model_file, "m.exe", {}, "send a Keras model file"),
            (model_file, "m.keras", {"labels": b"a\nb\n"}, "2 labels"),
            (model_file, "m.keras", {"preprocessing": "mnist"}, "28x28x1"),
        ]:
            r = _upload(client, "mine", data, filename, **fields)
            assert r.status_code == 400, r.text
            message = r.json()["error"]["message"]
            assert words in message and "cnn-serve-upload" not in message  # no server paths
        bad_field = _upload(client, "mine", model_file, value_range="0,1,2")
        assert bad_field.status_code == 422  # not LOW,HIGH at all
        upside_down = _upload(client, "mine", model_file, value_range="9,1")
        assert upside_down.status_code == 400
        assert "LOW must be below HIGH" in upside_down.json()["error"]["message"]
        assert (
            client.post(
                "/predict", files={"file": ("x.png", _png())}, headers={"X-API-Key": KEY}
            ).status_code
            == 200
        )  # served on
    assert not (repo / "mine").exists()


def test_uploads_have_their_own_size_limit(repo, model_file):
    with make_client(
        model_dir=repo, model_uploads=True, admin_keys=KEY, max_model_bytes=len(model_file) // 2
    ) as client:
        r = _upload(client, "mine", model_file)
        assert r.status_code == 413
    with make_client(
        model_dir=repo, model_uploads=True, admin_keys=KEY, max_upload_bytes=1024
    ) as client:  # larger than an image upload may be
        assert _upload(client, "mine", model_file).status_code == 201


def test_the_triton_repository_extension(repo):
    shutil.copytree(MODELS / "cifar10" / "1", repo / "cifar10" / "1")
    with admin_client(model_dir=repo) as client:
        index = client.post("/v2/repository/index").json()
        assert {(e["name"], e["version"], e["state"]) for e in index} == {
            ("digit_odd", "1", "READY"),
            ("cifar10", "1", "READY"),
        }
        assert client.post("/v2/repository/models/cifar10/unload").status_code == 200
        assert client.get("/v2/models/cifar10/ready").status_code == 404
        index = client.post("/v2/repository/index", json={"ready": True}).json()
        assert [e["name"] for e in index] == ["digit_odd"]
        assert client.post("/v2/repository/models/cifar10/load").status_code == 200
        assert client.get("/v2/models/cifar10/ready").json()["ready"] is True
        missing = client.post("/v2/repository/models/nope/load")
        assert missing.status_code == 404 and "error" in missing.json()


def test_uploads_wait_their_turn_for_the_import_process(repo, model_file):
    """One import runs at a time; the next upload waits its turn (bounded) instead of a 503."""
    import threading

    with make_client(model_dir=repo, model_uploads=True, admin_keys=KEY) as client:
        imports = client.app.state.server.admission.model_imports
        assert imports.try_acquire(1)  # an import in progress
        timer = threading.Timer(1.5, lambda: client.portal.call(imports.release, 1))
        timer.start()
        try:
            r = _upload(client, "mine", model_file)
        finally:
            timer.join()
        assert r.status_code == 201, r.text


def test_a_slow_uploader_is_cut_and_delays_no_other_upload(repo, model_file):
    """1 KB a second (each pause within the idle rule): cut with a 408 when the whole body
    has taken longer than CNN_SERVE_BODY_TIMEOUT_S; meanwhile other uploads are served.
    (Before: one slow uploader made every other upload 503 until it finished.)"""
    settings = Settings(
        model_dir=repo,
        device="cpu",
        model_uploads=True,
        admin_keys=KEY,
        body_timeout_s=6,
        body_idle_timeout_s=3,
    )
    with serving(create_app(settings)) as address:
        host, port = address.split(":")
        slow = socket.create_connection((host, int(port)), timeout=30)
        slow.sendall(
            (
                "POST /models/slow/versions HTTP/1.1\r\nHost: x\r\n"
                f"X-API-Key: {KEY}\r\nContent-Length: 200000\r\n"
                "Content-Type: multipart/form-data; boundary=b\r\n\r\n"
                '--b\r\nContent-Disposition: form-data; name="file"; filename="m.keras"\r\n\r\n'
            ).encode()
        )
        started = time.monotonic()

        def trickle() -> bytes:
            slow.settimeout(1)
            while time.monotonic() - started < 20:
                try:
                    slow.sendall(b"x" * 1024)
                    answer = slow.recv(4096)
                    if answer:
                        return answer
                except TimeoutError:
                    continue
                except OSError:
                    break
            return b""

        with ThreadPoolExecutor(1) as pool:
            cut = pool.submit(trickle)
            time.sleep(1)
            r = httpx.post(
                f"http://{address}/models/mine/versions",
                files={"file": ("mine.keras", model_file)},
                headers={"X-API-Key": KEY},
                timeout=120,
            )
            assert r.status_code == 201, r.text
            answer = cut.result()
        slow.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
    assert not (repo / "slow").exists()
