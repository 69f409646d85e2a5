"""``cnn-serve import`` as a user types it: values as written (``--value-range -1,1``), help
and mistakes answered without loading TensorFlow, and each step printed as it starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from training.import_command import as_written, options
from training.metadata import ModelMetadata


@pytest.mark.parametrize(
    ("typed", "value_range", "size"),
    [
        (["--value-range", "-1,1"], (-1.0, 1.0), None),
        (["--value-range=-1,1"], (-1.0, 1.0), None),
        (["--value-range", "-0.5,-0.25", "--input-size", "64,48"], (-0.5, -0.25), (64, 48)),
        (["--value-range", "0,255"], (0.0, 255.0), None),
    ],
)
def test_negative_values_are_values_not_flags(tmp_path, typed, value_range, size):
    chosen = options(["m.keras", "--name", "m", *typed], tmp_path)
    assert (chosen.value_range, chosen.input_size) == (value_range, size)


def test_only_the_pair_flags_take_a_value_that_looks_like_a_flag():
    assert as_written(["a.keras", "--name", "n", "--value-range", "-1,1", "-h"]) == [
        "a.keras",
        "--name",
        "n",
        "--value-range=-1,1",
        "-h",
    ]


PROBE = """
import sys
from pathlib import Path
from service.cli import main
try:
    main({argv!r})
except SystemExit as exit:
    code = exit.code
print("EXIT", code, "tensorflow" in sys.modules, "keras" in sys.modules, file=sys.stderr)
"""


@pytest.mark.parametrize(
    "argv",
    [["import", "--help"], ["import", "m.keras"], ["--help"]],
    ids=["import --help", "a missing --name", "--help"],
)
def test_help_and_mistakes_are_answered_without_tensorflow(argv):
    run = subprocess.run(
        [sys.executable, "-c", PROBE.format(argv=argv)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    last = run.stderr.strip().splitlines()[-1].split()
    assert last[0] == "EXIT" and last[1] in ("0", "2"), run.stderr
    assert last[2:] == ["False", "False"], "TensorFlow or Keras was imported"
    assert "usage: cnn-serve" in run.stdout + run.stderr


def test_each_step_is_printed_as_it_starts(tmp_path):
    """A real ``cnn-serve import``, with the file read in the confined child: the steps come
    from the child, in order, before the summary."""
    from tests.training.test_importer import cifar_like

    source = tmp_path / "mine.keras"
    cifar_like().save(source)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "service.cli",
            "import",
            str(source),
            "--name",
            "mine",
            "--model-dir",
            str(tmp_path / "repo"),
            "--value-range",
            "-1,1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    steps = [
        "importing mine.keras as mine",
        "  reading mine.keras",
        "  checked: ",
        "  exporting: ",
        "  written as version 1",
        "imported mine v1",
    ]
    found = [next(i for i, line in enumerate(lines) if line.startswith(s)) for s in steps]
    assert found == sorted(found), lines
    meta = ModelMetadata.read(tmp_path / "repo" / "mine" / "1")
    assert meta.input.value_range == (-1.0, 1.0)
    assert "Traceback" not in run.stderr and not (tmp_path / "repo" / ".imports").exists()
    assert not list(Path(tmp_path / "repo" / "mine").glob(".*"))
