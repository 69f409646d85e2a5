"""Model information and health, through HTTP."""

import shutil

from tests.service.conftest import make_client


def test_list_models(client):
    body = client.get("/models").json()
    names = {m["name"]: m for m in body["models"]}
    # the stronger models are served beside the reference ones, which stay the default
    assert set(names) == {"digit_odd", "cifar10", "digit_odd_plus", "cifar10_resnet"}
    assert all(m["ready"] for m in names.values())
    assert names["digit_odd_plus"]["outputs"] == names["digit_odd"]["outputs"]
    assert body["default_model"] == "digit_odd" and "CPU" in body["device"]
    digit = names["digit_odd"]
    assert digit["ready"] and digit["versions"][0]["status"] == "ready"
    assert digit["input"]["shape"] == [28, 28, 1]
    assert [o["name"] for o in digit["outputs"]] == ["digit", "odd"]


def test_model_detail_and_layer_table(client):
    body = client.get("/models/cifar10").json()
    meta = body["metadata"]
    assert meta["total_params"] == 122_570
    version = body["default_version"]
    detail = client.get(f"/models/cifar10/versions/{version}").json()
    layers = {layer["name"]: layer for layer in detail["layers"]}
    assert layers["conv2d_1"]["params"] == 896
    assert layers["conv2d_1"]["output_shape"] == [30, 30, 32]
    assert layers["dense_1"]["params"] == 1024 * 64 + 64
    assert sum(layer["params"] for layer in detail["layers"]) == detail["total_params"]
    assert detail["status"] == "ready" and detail["load_seconds"] > 0


def test_health(client):
    assert client.get("/health/live").json() == {"status": "ok", "models": {}}
    ready = client.get("/health/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_not_ready_without_models(tmp_path):
    with make_client(model_dir=tmp_path) as c:
        r = c.get("/health/ready")
        assert r.status_code == 503 and r.json()["status"] == "not_ready"
        assert c.get("/health/live").status_code == 200


def test_a_broken_model_is_reported_and_the_others_serve(tmp_path, models_dir):
    shutil.copytree(models_dir / "digit_odd", tmp_path / "digit_odd")
    broken = tmp_path / "digit_odd" / "99"
    shutil.copytree(next((models_dir / "cifar10").glob("[0-9]*")), broken)
    (broken / "saved_model.pb").write_bytes(b"corrupt")
    with make_client(model_dir=tmp_path) as c:
        versions = {v["version"]: v for v in c.get("/models/digit_odd").json()["versions"]}
        assert versions[99]["status"] == "failed" and versions[99]["error"]
        assert c.get("/health/ready").status_code == 200
        default = c.get("/models/digit_odd").json()["default_version"]
        assert default != 99  # the newest *ready* version serves by default
        r = c.post("/predict", data={"version": "99"}, files={"file": ("a.png", b"x", "image/png")})
        # a permanent failure: no Retry-After, and nothing of the server's files or internals
        assert r.status_code == 503 and r.json()["error"]["code"] == "model_failed"
        assert "retry-after" not in r.headers
        for text in (r.text, c.get("/models/digit_odd/versions/99").text):
            assert str(tmp_path) not in text and "saved_model.pb" not in text
            assert "Error" not in text  # no exception class names or TensorFlow messages


def test_not_ready_while_the_default_model_failed(tmp_path, models_dir):
    """Other models serving does not make the service ready: requests that name no model
    would all fail."""
    shutil.copytree(models_dir / "cifar10", tmp_path / "cifar10")
    broken = tmp_path / "digit_odd" / "1"
    shutil.copytree(next((models_dir / "digit_odd").glob("[0-9]*")), broken)
    (broken / "saved_model.pb").write_bytes(b"corrupt")
    with make_client(model_dir=tmp_path) as c:
        ready = c.get("/health/ready")
        assert ready.status_code == 503 and ready.json()["models"] == {
            "cifar10": [1],
            "digit_odd": [],
        }
    with make_client(model_dir=tmp_path, default_model="cifar10") as c:
        assert c.get("/health/ready").status_code == 200


def test_served_metadata_carries_no_local_paths(client):
    for url in ("/models/digit_odd", "/models/digit_odd/versions/1", "/models/cifar10"):
        dataset = client.get(url).json()["metadata"]["dataset"]
        assert dataset["name"] and dataset["path"] is None


def test_a_version_offers_its_samples(client):
    detail = client.get("/models/digit_odd/versions/1").json()
    assert detail["samples"] == ["digit-2.png", "digit-5.png", "digit-8.png"]
    r = client.get("/models/digit_odd/versions/1/samples/digit-5.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content.startswith(b"\x89PNG")
    missing = client.get("/models/digit_odd/versions/1/samples/ship.png")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "sample_not_found"
    for sneaky in ("..%2Fmetadata.json", "..%2F..%2Fcifar10%2F1%2Fsamples%2Fship.png"):
        r = client.get(f"/models/digit_odd/versions/1/samples/{sneaky}")
        assert r.status_code in (404, 422) and b"PNG" not in r.content
