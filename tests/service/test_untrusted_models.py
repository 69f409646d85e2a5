"""Uploaded model files are someone else's program: the findings of a hostile client's probe,
reproduced against the real process. Each hostile file is refused in one line, costs the
server no memory (sampled), leaves nothing in the repository, and a restart serves as
before; caps bound versions, labels and listings; writers of one model never collide; and
what a crashed import left behind is gone at the next start."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from contextlib import contextmanager
from pathlib import Path

import keras
import pytest

from service.settings import Settings
from tests.conftest import MODELS
from tests.service.conftest import admin_client
from tests.training.test_importer import cifar_like
from training import repository

PAGE = os.sysconf("SC_PAGE_SIZE")


@pytest.fixture
def repo(tmp_path):
    shutil.copytree(MODELS / "digit_odd" / "1", tmp_path / "repo" / "digit_odd" / "1")
    return tmp_path / "repo"


def _upload(client, name: str, path: Path, **fields):
    files = {"file": (path.name, path.read_bytes())}
    if "labels" in fields:
        files["labels"] = ("labels.txt", fields.pop("labels"))
    return client.post(f"/models/{name}/versions", files=files, data=fields)


def _rss() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * PAGE


@contextmanager
def peak_rss_growth():
    """Samples this process's RSS every 10 ms; yields a list that holds the peak growth
    afterwards."""
    start, peak, done = _rss(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss() - start)
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield peak
    finally:
        done.set()
        sampler.join()


def huge_input(path: Path) -> Path:
    """21 KB: a Conv2D on a fixed 20000x20000x3 input (4.8 GB per image before the conv)."""
    keras.Sequential(
        [
            keras.Input((20000, 20000, 3)),
            keras.layers.Conv2D(4, 3, name="conv"),
            keras.layers.GlobalAveragePooling2D(name="pool"),
            keras.layers.Dense(10, activation="softmax", name="class"),
        ]
    ).save(path)
    return path


def _rewritten(source: Path, target: Path, change) -> Path:
    """``source`` with its config.json changed by ``change(text) -> text``, streamed."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "config.json":
                with zout.open("config.json", "w", force_zip64=True) as out:
                    change(data, out)
            else:
                zout.writestr(item, data)
    return target


def wide_dense(path: Path) -> Path:
    """A small file whose config declares Dense(units=100000) over the 10-unit weights."""
    small = path.with_name("small.keras")
    cifar_like().save(small)

    def widen(data: bytes, out) -> None:
        config = json.loads(data)
        config["config"]["layers"][-1]["config"]["units"] = 100_000
        out.write(json.dumps(config).encode())

    return _rewritten(small, path, widen)


def whitespace_config(path: Path, megabytes: int = 300) -> Path:
    """~1 MB on the wire; config.json unpacks to 300 MB of whitespace (Keras's own guard is
    4 GiB)."""
    small = path.with_name("small.keras")
    cifar_like().save(small)
    blank = b" " * 2**20

    def pad(data: bytes, out) -> None:
        out.write(data[:-1])
        for _ in range(megabytes):
            out.write(blank)
        out.write(data[-1:])

    return _rewritten(small, path, pad)


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (huge_input, "estimated"),
        (wide_dense, "cannot be read as a Keras model"),
        (whitespace_config, "unpacks to"),
    ],
    ids=["20000x20000 input", "Dense(100000) over small weights", "1 GiB of whitespace"],
)
def test_a_hostile_model_file_costs_the_server_nothing(repo, tmp_path, make, says):
    hostile = make(tmp_path / "hostile.keras")
    assert hostile.stat().st_size < 2 * 2**20
    with admin_client(model_dir=repo, model_uploads=True) as client:
        with peak_rss_growth() as grown:
            r = _upload(client, "evil", hostile)
        assert r.status_code == 400, r.text
        message = r.json()["error"]["message"]
        assert says in message and "\n" not in message
        assert str(repo) not in message and str(tmp_path) not in message
        assert grown[0] < 400 * 2**20, f"server grew {grown[0] / 2**20:.0f} MB"
        assert client.get("/health/ready").status_code == 200
    assert sorted(p.name for p in repo.iterdir() if not p.name.startswith(".")) == ["digit_odd"]
    assert not (repo / repository.SCRATCH).exists()
    with admin_client(model_dir=repo) as restarted:  # and a restart serves as before
        assert restarted.get("/health/ready").status_code == 200
        assert [m["name"] for m in restarted.get("/models").json()["models"]] == ["digit_odd"]


def test_a_version_too_large_to_serve_is_failed_at_start_not_loaded(repo, models_dir):
    """A version already in the repository (copied in, or uploaded before these checks) whose
    shapes say it needs more memory than allowed is reported failed; the rest serve."""
    big = repo / "big" / "1"
    shutil.copytree(models_dir / "digit_odd" / "1", big)
    meta = json.loads((big / "metadata.json").read_text())
    meta["input"]["shape"] = [20000, 20000, 1]
    (big / "metadata.json").write_text(json.dumps(meta))
    with admin_client(model_dir=repo) as client:
        assert client.get("/health/ready").status_code == 200
        version = client.get("/models/big/versions/1").json()
        assert version["status"] == "failed"
        assert "CNN_SERVE_MAX_MODEL_MEMORY_BYTES" in version["error"]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("upload") / "mine.keras"
    cifar_like().save(path)
    return path


def test_versions_per_model_are_capped(repo, model_file):
    with admin_client(model_dir=repo, model_uploads=True, max_versions_per_model=2) as client:
        assert [_upload(client, "mine", model_file).status_code for _ in range(2)] == [201] * 2
        r = _upload(client, "mine", model_file)
        assert r.status_code == 409 and "CNN_SERVE_MAX_VERSIONS_PER_MODEL" in r.text
        assert sorted(p.name for p in (repo / "mine").iterdir() if p.name.isdigit()) == ["1", "2"]


def test_the_repository_size_is_capped(repo, model_file):
    used = sum(f.stat().st_size for f in repo.rglob("*") if f.is_file())
    with admin_client(
        model_dir=repo, model_uploads=True, max_repository_bytes=used + 1000
    ) as client:
        r = _upload(client, "mine", model_file)
        assert r.status_code == 507 and "CNN_SERVE_MAX_REPOSITORY_BYTES" in r.text
    assert not (repo / "mine").exists()


def test_labels_are_bounded_and_listings_stay_small(repo, model_file):
    with admin_client(model_dir=repo, model_uploads=True) as client:
        huge = ("x" * 200 + "\n").encode() * 6000  # 1.2 MB
        r = _upload(client, "mine", model_file, labels=huge)
        assert r.status_code == 400 and "at most 1,048,576 bytes" in r.text
        long = "\n".join(["y" * 300] + [str(i) for i in range(9)]).encode()
        r = _upload(client, "mine", model_file, labels=long)
        assert r.status_code == 400 and "256 characters" in r.text
        assert not (repo / "mine").exists()
        wide = "\n".join(f"{i}-" + "z" * 250 for i in range(10)).encode()
        assert _upload(client, "mine", model_file, labels=wide).status_code == 201
        listing = client.get("/models")
        assert "zzzz" not in listing.text  # labels are on /models/{name}, not in the listing
        heads = {m["name"]: m["outputs"] for m in listing.json()["models"]}
        assert heads["mine"] == [{"name": "class", "kind": "multiclass", "classes": 10}]
        assert "zzzz" in client.get("/models/mine").text


def test_one_writer_per_model_the_second_gets_a_clean_conflict(repo, model_file):
    """An import (the CLI's here) holding the model's lock: the upload of the same model is a
    409 and the first writer's files are untouched; the CLI sees the same for a version an
    upload wrote. (Before: ENOTEMPTY, a 500, and cleanup that deleted the CLI's version.)"""
    root = repo / "mine"
    root.mkdir()
    (root / "7").mkdir()  # the first writer's finished version
    (root / "7" / "saved_model.pb").write_bytes(b"first")
    with admin_client(model_dir=repo, model_uploads=True) as client:
        with repository.model_lock(root):
            r = _upload(client, "mine", model_file, version="8")
        assert r.status_code == 409 and "another import" in r.json()["error"]["message"]
        r = _upload(client, "mine", model_file, version="7")
        assert r.status_code == 409 and "version 7 of model" in r.json()["error"]["message"]
        assert (root / "7" / "saved_model.pb").read_bytes() == b"first"
        assert _upload(client, "mine", model_file, version="8").status_code == 201
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "service.cli",
            "import",
            str(model_file),
            "--name",
            "mine",
            "--model-dir",
            str(repo),
            "--version",
            "8",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 1 and "version 8 of model 'mine' exists" in done.stderr
    assert (root / "8" / "saved_model.pb").is_file()


def test_what_a_crashed_import_left_is_removed_at_the_next_start(repo):
    staging = repo / "digit_odd" / ".2-abc123"
    staging.mkdir()
    (staging / "variables.data").write_bytes(b"\0" * 1000)
    scratch = repo / repository.SCRATCH / "upload-x"
    scratch.mkdir(parents=True)
    (scratch / "model.keras").write_bytes(b"\0" * 1000)
    busy = repo / repository.SCRATCH / "upload-busy"  # an import still running elsewhere
    busy.mkdir()
    with (
        repository.locked(busy / repository.LOCK_FILE, "busy"),
        admin_client(model_dir=repo) as client,
    ):
        assert client.get("/health/ready").status_code == 200
        assert not staging.exists() and not scratch.exists()
        assert busy.exists()


def test_settings_bound_the_sandbox():
    with pytest.raises(ValueError):
        Settings(device="cpu", import_memory_bytes=2**20)
