"""``cnn-serve predict`` and ``cnn-serve evaluate`` on folders made here: rows as the
service answers them, an error row for what is not an image, metrics equal to a NumPy
computation from the model's own answers, in-process and through a running server alike,
and a report that opens from disk in Chromium."""

from __future__ import annotations

import csv
import io
import json
import shutil
import zipfile

import numpy as np
import pytest

from service.offline_commands import main
from tests.conftest import MODELS
from tests.service.conftest import CHROMIUM, make_client
from tests.service.handwriting import draw_digit, encode

MODEL = "digit_odd"


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A repository of digit_odd alone: in-process runs load what is there."""
    root = tmp_path_factory.mktemp("offline-models")
    shutil.copytree(MODELS / MODEL / "1", root / MODEL / "1")
    return root


@pytest.fixture
def local(repo, monkeypatch):
    monkeypatch.setenv("CNN_SERVE_MODEL_DIR", str(repo))
    monkeypatch.setenv("CNN_SERVE_DEFAULT_MODEL", MODEL)
    monkeypatch.setenv("CNN_SERVE_DECODE_PROCESSES", "0")  # threads: quicker to start here


def _digit(d: int, variant: int) -> bytes:
    """A pen digit, placed and sized by ``variant``: some of them the model gets wrong."""
    rng = np.random.default_rng(variant * 10 + d)
    left, top, height = (int(v) for v in rng.integers((20, 10, 60), (90, 60, 140)))
    image = draw_digit(d, box=(left, top, height), pen=float(rng.uniform(0.05, 0.2)))
    return encode(image, "PNG")


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """A folder of label folders: five pen digits of each of 0-9, in three of them a digit
    filed under the wrong label (the mistakes to show), and a stray text file."""
    root = tmp_path_factory.mktemp("labelled")
    for d in range(10):
        (root / str(d)).mkdir()
        for v in range(5):
            (root / str(d) / f"{v}.png").write_bytes(_digit(d, v))
    for d in (1, 4, 6):
        (root / str(d) / "misfiled.png").write_bytes(_digit((d + 2) % 10, 9))
    (root / "3" / "notes.txt").write_text("not an image")
    return root


def test_predict_writes_a_row_per_image_and_an_error_row(local, tmp_path, capsys):
    folder = tmp_path / "imgs"
    (folder / "nested").mkdir(parents=True)
    (folder / "seven.png").write_bytes(_digit(7, 0))
    (folder / "nested" / "readme.txt").write_text("hello")
    with zipfile.ZipFile(folder / "more.zip", "w") as z:
        z.writestr("a/two.png", _digit(2, 1))
        z.writestr("b/four.png", _digit(4, 2))
    out = tmp_path / "rows.csv"
    assert main("predict", [str(folder), "--out", str(out), "--top-k", "3"]) == 0
    rows = list(csv.DictReader(out.open()))
    paths = [r["path"] for r in rows]
    assert paths == [
        f"{folder}/more.zip/a/two.png",
        f"{folder}/more.zip/b/four.png",
        f"{folder}/nested/readme.txt",
        f"{folder}/seven.png",
    ]
    (bad,) = [r for r in rows if r["error"]]
    assert bad["path"].endswith("readme.txt") and "not a decodable image" in bad["error"]
    assert "readme.txt" in capsys.readouterr().err
    with make_client(model_dir=MODELS) as client:  # the service's answers, one by one
        for r, data in zip(
            [r for r in rows if not r["error"]], [_digit(2, 1), _digit(4, 2), _digit(7, 0)]
        ):
            answer = client.post("/predict", files={"file": ("x.png", data)}).json()
            outputs = answer["predictions"][0]["outputs"]
            assert r["digit"] == outputs["digit"]["label"]
            assert float(r["digit_confidence"]) == pytest.approx(outputs["digit"]["confidence"])
            assert r["odd"] == outputs["odd"]["label"] and len(r["digit_top"].split("|")) == 3
            assert (r["model"], r["version"]) == (MODEL, "1")


def test_predict_writes_json_lines(local, tmp_path):
    (tmp_path / "one.png").write_bytes(_digit(1, 0))
    out = tmp_path / "rows.jsonl"
    assert main("predict", [str(tmp_path / "one.png"), "--out", str(out)]) == 0
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert set(row) == {
        "path",
        "model",
        "version",
        "digit",
        "digit_confidence",
        "odd",
        "odd_confidence",
    }
    assert isinstance(row["digit_confidence"], float) and row["version"] == 1


def _answers(labelled) -> tuple[list[int], list[int]]:
    """True and predicted digits, from the service's own answers file by file."""
    true, predicted = [], []
    with make_client(model_dir=MODELS) as client:
        for d in range(10):
            for path in sorted((labelled / str(d)).glob("*.png"), key=lambda p: p.name):
                files = {"file": (path.name, path.read_bytes())}
                outputs = client.post("/predict", files=files).json()["predictions"][0]["outputs"]
                true.append(d)
                predicted.append(int(outputs["digit"]["label"]))
    return true, predicted


def _check_metrics(metrics: dict, true: list[int], predicted: list[int]) -> None:
    t, p = np.asarray(true), np.asarray(predicted)
    assert metrics["n"] == len(t) == np.asarray(metrics["confusion"]).sum()
    assert metrics["accuracy"] == pytest.approx((t == p).mean())
    confusion = np.zeros((10, 10), int)
    np.add.at(confusion, (t, p), 1)
    assert metrics["confusion"] == confusion.tolist()
    for d in range(10):
        stats = metrics["per_class"][str(d)]
        claimed, actual, hit = (p == d).sum(), (t == d).sum(), ((p == d) & (t == d)).sum()
        assert stats["support"] == actual
        assert stats["precision"] == pytest.approx(hit / claimed if claimed else 0.0)
        assert stats["recall"] == pytest.approx(hit / actual if actual else 0.0)
    assert [s["path"].endswith("notes.txt") for s in metrics["skipped"]] == [True]


def test_evaluate_in_process_and_through_a_server_agree_with_numpy(
    local, labelled, tmp_path, server_url, capsys
):
    true, predicted = _answers(labelled)
    assert 0 < sum(t != p for t, p in zip(true, predicted))  # some mistakes to show
    here, there = tmp_path / "here", tmp_path / "there"
    assert main("evaluate", [str(labelled), "--out", str(here)]) == 0
    printed = capsys.readouterr().out
    assert "digit_odd v1, head digit: 53 images, accuracy" in printed
    metrics = json.loads((here / "metrics.json").read_text())
    _check_metrics(metrics, true, predicted)
    url = ["--url", server_url, "--model", MODEL]
    assert main("evaluate", [str(labelled), "--out", str(there), *url]) == 0
    remote = json.loads((there / "metrics.json").read_text())
    assert remote == metrics
    report = (here / "report.html").read_text()
    assert report.count('data-testid="mistake"') == min(
        24, metrics["n"] - round(metrics["accuracy"] * metrics["n"])
    )


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium")
def test_the_report_opens_from_disk_with_nothing_fetched(local, labelled, tmp_path):
    from playwright.sync_api import sync_playwright

    from tests.service.conftest import FLAGS

    out = tmp_path / "eval"
    assert main("evaluate", [str(labelled), "--out", str(out)]) == 0
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        errors: list[str] = []
        fetched: list[str] = []
        page.on("console", lambda m: m.type == "error" and errors.append(m.text))
        page.on("request", lambda r: fetched.append(r.url))
        page.goto((out / "report.html").as_uri())
        assert page.locator("svg[aria-label='confusion matrix']").is_visible()
        mistakes = page.get_by_test_id("mistake")
        assert mistakes.count() >= 1
        first = mistakes.first
        assert first.locator("img[alt='the image']").evaluate("i => i.naturalWidth") > 0
        assert first.locator("img[alt='Grad-CAM']").evaluate("i => i.naturalWidth") > 0
        page.screenshot(path=tmp_path / "report.png", full_page=True)
        browser.close()
    assert not errors
    assert [u for u in fetched if not u.startswith(("file:", "data:"))] == []


def test_a_regression_head_gives_mae_and_rmse(tmp_path, monkeypatch):
    """The every-kind model's one-value regression head, scored on a CSV of path,value."""

    from tests.service.test_head_kinds import SIZE, every_kind
    from training.import_command import main as import_main

    model = every_kind()
    model.save(tmp_path / "kinds.keras")
    repo = tmp_path / "models"
    argv = [str(tmp_path / "kinds.keras"), "--name", "kinds", "--model-dir", str(repo)]
    assert import_main([*argv, "--head", "age=regression", "--head", "scores=logits"], repo) == 0
    monkeypatch.setenv("CNN_SERVE_MODEL_DIR", str(repo))
    monkeypatch.setenv("CNN_SERVE_DEFAULT_MODEL", "kinds")
    monkeypatch.setenv("CNN_SERVE_DECODE_PROCESSES", "0")
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (12, SIZE, SIZE), np.uint8)
    truth = rng.normal(size=12)
    lines = ["path,label"]
    for i, p in enumerate(pixels):
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(p).save(buf, "PNG")
        (tmp_path / f"{i}.png").write_bytes(buf.getvalue())
        lines.append(f"{i}.png,{truth[i]}")
    (tmp_path / "values.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "eval"
    assert main("evaluate", [str(tmp_path / "values.csv"), "--head", "age", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    predicted = np.asarray(
        model.predict((pixels[..., None] / 255).astype("float32"), verbose=0)["age"]
    )[:, 0]
    assert metrics["n"] == 12
    assert metrics["mae"] == pytest.approx(np.abs(predicted - truth).mean(), abs=1e-4)
    assert metrics["rmse"] == pytest.approx(np.sqrt(((predicted - truth) ** 2).mean()), abs=1e-4)
    assert "MAE" in (out / "report.html").read_text()


def test_requests_are_cut_by_count_and_by_bytes():
    from service.image_files import ImageFile
    from service.offline import Chunking, _chunks

    def files(*sizes: int) -> list[ImageFile]:
        return [ImageFile(str(i), bytes, size=size) for i, size in enumerate(sizes)]

    sizes = [[len(c) for c in _chunks(files(*[1] * 7), Chunking(3, 100))]]
    sizes.append([len(c) for c in _chunks(files(40, 40, 40, 150, 10), Chunking(10, 100))])
    assert sizes == [[3, 3, 1], [2, 1, 1, 1]]  # a file over the bytes alone, never dropped
