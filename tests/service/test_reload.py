"""Hot reload under load: versions dropped into (or removed from) a temporary model
repository are served (or retired) within two poll intervals while a load generator posts
/predict without a single failure; a corrupt version is reported failed; version policies
and labels."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path
from typing import Self

import numpy as np
import pytest

from service.model import ServedModel, Status
from tests.service.conftest import admin_client, make_client, oip_fp32
from tests.service.handwriting import draw_digit, encode

POLL_S = 0.5
DIGIT = encode(draw_digit(4))


def _add(repo: Path, models_dir: Path, name: str, version: int, source: int = 1) -> None:
    """Copy a committed version in as operators should: staged, then renamed into place."""
    staging = repo / f".staging-{name}-{version}"
    shutil.copytree(models_dir / name / str(source), staging)
    (repo / name).mkdir(exist_ok=True)
    staging.rename(repo / name / str(version))


def _versions(client, name: str) -> dict[int, str]:
    r = client.get(f"/models/{name}")
    if r.status_code == 404:
        return {}
    return {v["version"]: v["status"] for v in r.json()["versions"]}


def _within(seconds: float, condition) -> float:
    """Seconds until ``condition()`` holds, asked every 50 ms as a client would ask; fails
    after ``seconds``."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < seconds, "not in time"
        time.sleep(0.05)
    return time.monotonic() - start


class Load:
    """Posts /predict (no version named) continuously; records every status and version."""

    def __init__(self, client) -> None:
        self.client, self.answers, self.stop = client, [], threading.Event()
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        while not self.stop.is_set():
            r = self.client.post("/predict", files={"file": ("d.png", DIGIT)})
            self.answers.append((r.status_code, r.json().get("version")))

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(30)


def test_versions_come_and_go_under_load_without_a_failed_request(tmp_path, models_dir):
    repo = tmp_path / "models"
    repo.mkdir()
    _add(repo, models_dir, "digit_odd", 1)
    with make_client(model_dir=repo, model_poll_seconds=POLL_S) as client, Load(client) as load:
        _within(5, lambda: len(load.answers) > 5)
        _add(repo, models_dir, "digit_odd", 2)  # a new version ...
        _within(2 * POLL_S + 3, lambda: _versions(client, "digit_odd").get(2) == "ready")
        _within(2, lambda: load.answers[-1][1] == 2)  # ... takes the traffic
        shutil.rmtree(repo / "digit_odd" / "2")  # the version serving the traffic goes
        _within(2 * POLL_S + 1, lambda: 2 not in _versions(client, "digit_odd"))
        _within(2, lambda: load.answers[-1][1] == 1)
        assert (
            client.post(
                "/predict", data={"version": "2"}, files={"file": ("d.png", DIGIT)}
            ).status_code
            == 404
        )
        corrupt = repo / "digit_odd" / "3"
        shutil.copytree(models_dir / "digit_odd" / "1", corrupt)
        (corrupt / "saved_model.pb").write_bytes(b"not a SavedModel")  # a broken version
        _within(2 * POLL_S + 3, lambda: _versions(client, "digit_odd").get(3) == "failed")
        error = client.get("/models/digit_odd/versions/3").json()["error"]
        assert "failed while loading the SavedModel" in error
        _add(repo, models_dir, "cifar10", 1)  # a new model name
        _within(2 * POLL_S + 3, lambda: _versions(client, "cifar10").get(1) == "ready")
        answered = len(load.answers)
        _within(5, lambda: len(load.answers) > answered + 5)  # and the load carries on
    statuses = [status for status, _ in load.answers]
    assert len(statuses) > 50 and set(statuses) == {200}, statuses
    assert {version for _, version in load.answers} == {1, 2}


def test_a_failed_version_is_retried_when_its_files_change(tmp_path, models_dir):
    repo = tmp_path / "models"
    (repo / "digit_odd").mkdir(parents=True)
    broken = repo / "digit_odd" / "1"
    shutil.copytree(models_dir / "digit_odd" / "1", broken)
    metadata = (broken / "metadata.json").read_text()
    (broken / "metadata.json").write_text("{")  # a copy still in progress
    with make_client(model_dir=repo, model_poll_seconds=POLL_S) as client:
        assert _versions(client, "digit_odd") == {1: "failed"}
        (broken / "metadata.json").write_text(metadata)  # the copy completes
        _within(2 * POLL_S + 3, lambda: _versions(client, "digit_odd") == {1: "ready"})


def test_reload_endpoint_without_polling(tmp_path, models_dir):
    repo = tmp_path / "models"
    repo.mkdir()
    _add(repo, models_dir, "digit_odd", 1)
    with admin_client(model_dir=repo, model_poll_seconds=0) as client:
        _add(repo, models_dir, "digit_odd", 2)
        time.sleep(0.3)  # time passes, in which a poll would have found it
        assert _versions(client, "digit_odd") == {1: "ready"}  # polling is off
        r = client.post("/models/digit_odd/reload")
        assert r.status_code == 200 and r.json()["default_version"] == 2
        assert client.post("/models/nope/reload").status_code == 404


def test_a_slow_reload_answers_202_and_carries_on(tmp_path, models_dir, monkeypatch):
    from service.routes import models

    monkeypatch.setattr(models, "RELOAD_WAIT_S", 0.001)
    repo = tmp_path / "models"
    repo.mkdir()
    _add(repo, models_dir, "digit_odd", 1)
    with admin_client(model_dir=repo, model_poll_seconds=0) as client:
        _add(repo, models_dir, "digit_odd", 2)
        r = client.post("/models/digit_odd/reload")
        assert r.status_code == 202
        assert {v["version"]: v["status"] for v in r.json()["versions"]}.get(2) in (
            None,
            "loading",
        )  # the scan may not have reached it yet
        _within(10, lambda: _versions(client, "digit_odd") == {1: "ready", 2: "ready"})


@pytest.fixture(scope="module")
def three_versions(tmp_path_factory, models_dir) -> Path:
    repo = tmp_path_factory.mktemp("models")
    for version in (1, 2, 3):
        _add(repo, models_dir, "digit_odd", version)
    _add(repo, models_dir, "cifar10", 1)
    return repo


@pytest.mark.parametrize(
    "policy, served",
    [
        ({"latest": {"num_versions": 2}}, {2, 3}),
        ({"specific": {"versions": [1, 3, 7]}}, {1, 3}),
        ({"all": {}}, {1, 2, 3}),
        (None, {1, 2, 3}),
    ],
)
def test_version_policies(three_versions, policy, served):
    policies = {"digit_odd": policy} if policy else {}
    with make_client(
        model_dir=three_versions, model_poll_seconds=0, version_policy=policies
    ) as client:
        assert set(_versions(client, "digit_odd")) == served
        assert set(_versions(client, "cifar10")) == {1}  # other models: every version


def test_labels_name_versions_in_every_api(three_versions):
    labels = {"digit_odd": {"stable": 1, "canary": 3}}
    with make_client(
        model_dir=three_versions, model_poll_seconds=0, version_labels=labels
    ) as client:
        assert client.get("/models/digit_odd").json()["labels"] == labels["digit_odd"]
        native = client.post(
            "/predict", data={"version": "stable"}, files={"file": ("d.png", DIGIT)}
        )
        assert native.json()["version"] == 1
        maps = client.post(
            "/models/digit_odd/feature-maps",
            data={"version": "canary"},
            files={"file": ("d.png", DIGIT)},
        )
        assert maps.json()["version"] == 3
        assert client.get("/models/digit_odd/versions/canary").json()["version"] == 3
        status = client.get("/v1/models/digit_odd/labels/stable").json()
        assert status["model_version_status"][0]["version"] == "1"
        pixels = [[[0.0]] * 28] * 28
        tfs = client.post(
            "/v1/models/digit_odd/labels/canary:predict", json={"instances": [pixels]}
        )
        assert tfs.status_code == 200 and len(tfs.json()["predictions"]) == 1
        meta = client.get("/v1/models/digit_odd/labels/canary/metadata").json()
        assert meta["model_spec"]["version"] == "3"
        oip = client.post(
            "/v2/models/digit_odd/versions/stable/infer",
            json=oip_fp32(np.zeros((1, 28, 28, 1), np.float32)),
        )
        assert oip.json()["model_version"] == "1"
        unknown = client.post(
            "/predict", data={"version": "beta"}, files={"file": ("d.png", DIGIT)}
        )
        assert unknown.status_code == 404 and "label" in unknown.json()["error"]["message"]
        assert client.get("/v1/models/digit_odd/labels/beta").status_code == 404
        assert "error" in client.get("/v1/models/digit_odd/labels/beta").json()


def test_policy_and_label_settings_are_validated():
    from pydantic import ValidationError

    from service.settings import Settings

    with pytest.raises(ValidationError):
        Settings(device="cpu", version_policy={"m": {"latest": {"num_versions": 1}, "all": {}}})
    with pytest.raises(ValidationError):
        Settings(device="cpu", version_labels={"m": {"Not A Label": 1}})
    parsed = json.loads(json.dumps({"m": {"latest": {"num_versions": 2}}}))
    assert Settings(device="cpu", version_policy=parsed).versions_to_serve("m", [1, 2, 5]) == {2, 5}


def test_a_burst_of_reloads_costs_one_scan(tmp_path, models_dir, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    from service import registry

    repo = tmp_path / "models"
    repo.mkdir()
    _add(repo, models_dir, "digit_odd", 1)
    scans = []

    def slow_discover(path):  # a slow file system: the burst arrives during the scan
        if path == repo:  # the session's other apps poll the bundled models meanwhile
            scans.append(path)
            time.sleep(0.3)
        return real_discover(path)

    real_discover = registry.discover
    with admin_client(model_dir=repo, model_poll_seconds=0) as client:
        monkeypatch.setattr(registry, "discover", slow_discover)
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: client.post("/models/digit_odd/reload"), range(8)))
    assert [r.status_code for r in answers] == [200] * 8
    assert len(scans) <= 2  # one shared scan (a second if some came after it finished)


def test_a_version_loaded_before_its_runner_exists_is_not_picked(tmp_path, models_dir):
    """Its load thread marks a version ready a moment before the loop makes its runner: a
    request meanwhile gets the version before it (or a 503 when it names it), never a 500."""
    repo = tmp_path / "models"
    repo.mkdir()
    _add(repo, models_dir, "digit_odd", 1)
    with make_client(model_dir=repo) as client:
        registry = client.app.state.server.registry
        serving = registry.models["digit_odd"][1]
        early = ServedModel("digit_odd", 2, serving.path, serving.device)
        early.status = Status.ready  # as its load thread leaves it, no runner yet
        registry.models["digit_odd"][2] = early
        newest = client.post("/predict", files={"file": ("d.png", DIGIT)})
        assert newest.status_code == 200 and newest.json()["version"] == 1, newest.text
        named = client.post("/predict", data={"version": "2"}, files={"file": ("d.png", DIGIT)})
        assert named.status_code == 503 and named.headers["retry-after"] == "5", named.text
