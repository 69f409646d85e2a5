"""The training guide's example (docs/training.md), run as written (on a tiny dataset instead
of MNIST): it
must not touch the model repository that a running service serves, and prints no noise."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from tests.training.digits import bar_digits_npz

ROOT = Path(__file__).resolve().parents[2]
SERVED = ROOT / "models"


def _files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


def test_the_training_example_leaves_the_served_models_alone(tmp_path):
    line = next(
        line
        for line in (ROOT / "docs" / "training.md").read_text().splitlines()
        if line.startswith(".venv/bin/cnn-train digit_odd --data")
    )
    args = shlex.split(line, comments=True)[1:]
    args[args.index("--data") + 1] = str(bar_digits_npz(tmp_path / "mnist.npz"))
    before = _files(SERVED)
    try:
        run = subprocess.run(
            [sys.executable, "-m", "training.cli", *args],
            cwd=tmp_path,
            check=True,
            capture_output=True,
            timeout=600,
        )
        assert _files(SERVED) == before
        # progress on stdout; stderr quiet (no TensorFlow start-up notices, no Keras warnings)
        assert run.stderr.decode() == "" and "exported runs/digit_odd/1" in run.stdout.decode()
    finally:  # should the example ever write there again, leave no version behind
        for version in {Path(name).parts[:2] for name in set(_files(SERVED)) - set(before)}:
            shutil.rmtree(SERVED.joinpath(*version), ignore_errors=True)
    assert (tmp_path / "runs" / "digit_odd" / "1" / "saved_model.pb").is_file()


def test_cnn_train_help_prints_only_the_help():
    run = subprocess.run(
        [sys.executable, "-m", "training.cli", "--help"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert run.stderr.decode() == "" and run.stdout.decode().startswith("usage: cnn-train")
