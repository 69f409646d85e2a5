"""``cnn-serve import``: a user's Keras model (built here, never downloaded) becomes a version
with metadata derived from it; what cannot be served is refused in one line, writing nothing."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from tests.conftest import MODELS
from training import samples
from training.import_command import main
from training.metadata import ModelMetadata


def cifar_like(seed: int = 0) -> keras.Model:
    """A notebook's Sequential CIFAR classifier with the scaling inside (takes 0..255)."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Rescaling(1 / 255, name="scale"),
            keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
            keras.layers.MaxPooling2D(name="pool"),
            keras.layers.Flatten(name="flat"),
            keras.layers.Dense(10, activation="softmax", name="class"),
        ],
        name="notebook",
    )


def two_heads(seed: int = 1) -> keras.Model:
    """A functional grayscale model of an odd size with a softmax and a sigmoid head."""
    keras.utils.set_random_seed(seed)
    image = keras.Input((20, 24, 1), name="pixels")
    x = keras.layers.Conv2D(3, 3, activation="relu", name="features")(image)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(
        image,
        {
            "shape": keras.layers.Dense(3, activation="softmax", name="shape")(x),
            "big": keras.layers.Dense(1, activation="sigmoid", name="big")(x),
        },
        name="shapes",
    )


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")} if root.exists() else set()


def _refused(argv: list[str], repo: Path) -> str:
    before = _files(repo)
    with pytest.raises(SystemExit) as info:
        main([*argv, "--model-dir", str(repo)], repo)
    message = info.value.code
    assert isinstance(message, str) and message.startswith("cnn-serve import: ")
    assert "\n" not in message and "Traceback" not in message
    assert _files(repo) == before  # nothing written, not even an empty model directory
    return message


def test_a_keras_file_becomes_a_version_with_derived_metadata(tmp_path, capsys):
    source = tmp_path / "notebook.keras"
    cifar_like().save(source)
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"class {i}" for i in range(10)) + "\n")
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(MODELS / "cifar10" / "1" / "samples" / "ship.png", photos / "a ship.png")
    (photos / "readme.txt").write_text("not a picture")
    repo = tmp_path / "repo"
    assert (
        main(
            [
                str(source),
                "--name",
                "mine",
                "--labels",
                str(labels),
                "--value-range",
                "0,255",
                "--samples",
                str(photos),
                "--model-dir",
                str(repo),
            ],
            repo,
        )
        == 0
    )
    assert samples.listed(repo / "mine" / "1") == ["a_ship.png"]
    meta = ModelMetadata.read(repo / "mine" / "1")
    assert (meta.input.shape, meta.input.color_mode, meta.input.value_range) == (
        [32, 32, 3],
        "rgb",
        (0.0, 255.0),
    )
    assert [(o.name, o.kind, o.labels[0]) for o in meta.outputs] == [
        ("class", "multiclass", "class 0")
    ]
    assert [layer.name for layer in meta.layers] == [
        "image",
        "scale",
        "conv",
        "pool",
        "flat",
        "class",
    ]
    assert meta.dataset is None and meta.total_params == cifar_like().count_params()
    assert (repo / "mine" / "1" / "model.keras").is_file()
    printed = capsys.readouterr().out
    assert "mine v1" in printed and "0..255" in printed and "class 0" in printed
    assert "readme.txt is not an image" in printed and "samples: 1 kept" in printed


def test_an_h5_file_with_several_heads_and_labels_per_head(tmp_path):
    source = tmp_path / "shapes.h5"
    two_heads().save(source)
    shapes, big = tmp_path / "shapes.txt", tmp_path / "big.txt"
    shapes.write_text("circle\nsquare\ntriangle\n")
    big.write_text("small\nbig\n")
    repo = tmp_path / "repo"
    assert (
        main(
            [
                str(source),
                "--name",
                "shapes",
                "--labels",
                f"shape={shapes}",
                "--labels",
                f"big={big}",
                "--value-range=-1,1",
                "--version",
                "7",
                "--model-dir",
                str(repo),
            ],
            repo,
        )
        == 0
    )
    meta = ModelMetadata.read(repo / "shapes" / "7")
    assert {o.name: (o.kind, o.labels) for o in meta.outputs} == {
        "shape": ("multiclass", ["circle", "square", "triangle"]),
        "big": ("binary", ["small", "big"]),
    }
    assert meta.input.shape == [20, 24, 1] and meta.input.color_mode == "grayscale"


def test_every_refusal_is_one_line_and_writes_nothing(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    good = tmp_path / "good.keras"
    cifar_like().save(good)
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    tabular = tmp_path / "tabular.keras"
    keras.Sequential([keras.Input((10,)), keras.layers.Dense(2, activation="softmax")]).save(
        tabular
    )
    a, b = keras.Input((8, 8, 1)), keras.Input((8, 8, 1))
    pair = tmp_path / "pair.keras"
    keras.Model(
        [a, b], keras.layers.Dense(2)(keras.layers.Flatten()(keras.layers.Concatenate()([a, b])))
    ).save(pair)
    short = tmp_path / "short.txt"
    short.write_text("one\ntwo\n")
    heads = tmp_path / "heads.keras"
    two_heads().save(heads)
    cases = {
        "no such file": [str(tmp_path / "missing.keras"), "--name", "m"],
        "cannot be read as a Keras model": [str(corrupt), "--name", "m"],
        "not one image": [str(tabular), "--name", "m"],
        "2 inputs": [str(pair), "--name", "m"],
        "2 labels for head 'class', which has 10 classes": [
            str(good),
            "--name",
            "m",
            "--labels",
            str(short),
        ],
        "the model's heads are": [str(heads), "--name", "m", "--labels", f"size={short}"],
        "name one": [str(heads), "--name", "m", "--labels", str(short)],
        "makes 28x28x1 digits": [str(good), "--name", "m", "--preprocessing", "mnist"],
        "not a Keras model file": [str(short), "--name", "m"],
        "--name '../escape'": [str(good), "--name", "../escape"],
        "versions are whole numbers": [str(good), "--name", "m", "--version", "0"],
        "LOW must be below HIGH": [str(good), "--name", "m", "--value-range", "9,1"],
    }
    for words, argv in cases.items():
        assert words in _refused(argv, repo), words


def test_an_existing_version_is_refused(tmp_path):
    source = tmp_path / "m.keras"
    cifar_like().save(source)
    repo = tmp_path / "repo"
    assert main([str(source), "--name", "m", "--model-dir", str(repo)], repo) == 0
    assert "exists" in _refused([str(source), "--name", "m", "--version", "1"], repo)


def test_the_command_exits_non_zero_with_its_line_on_stderr(tmp_path):
    """As a user runs it: a real process, a missing file."""
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "service.cli",
            "import",
            str(tmp_path / "nope.keras"),
            "--name",
            "m",
            "--model-dir",
            str(tmp_path),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    ours = [line for line in run.stderr.splitlines() if line.startswith("cnn-serve import:")]
    assert run.returncode != 0 and len(ours) == 1 and "Traceback" not in run.stderr
    assert "no such file" in ours[0] and not list(tmp_path.iterdir())


def test_the_served_signature_equals_the_keras_model(tmp_path):
    import tensorflow as tf

    model = two_heads()
    source = tmp_path / "shapes.keras"
    model.save(source)
    repo = tmp_path / "repo"
    assert main([str(source), "--name", "s", "--model-dir", str(repo)], repo) == 0
    loaded = tf.saved_model.load(str(repo / "s" / "1"))
    x = np.random.default_rng(0).random((3, 20, 24, 1), np.float32)
    served = loaded.signatures["serving_default"](image=tf.constant(x))
    want = model(x)
    for head in ("shape", "big"):
        np.testing.assert_allclose(served[head].numpy(), want[head], atol=1e-5)
    maps = loaded.signatures["feature_maps"](image=tf.constant(x))
    assert maps["features"].shape == (3, 18, 22, 3)


def test_a_savedmodel_directory_is_copied_with_metadata_from_its_signature(tmp_path):
    import tensorflow as tf

    model = cifar_like()
    model.export(str(tmp_path / "exported"), verbose=False)
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"c{i}" for i in range(10)) + "\n")
    repo = tmp_path / "repo"
    assert (
        main(
            [
                str(tmp_path / "exported"),
                "--name",
                "sm",
                "--labels",
                str(labels),
                "--value-range",
                "0,255",
                "--model-dir",
                str(repo),
            ],
            repo,
        )
        == 0
    )
    meta = ModelMetadata.read(repo / "sm" / "1")
    assert meta.input.value_range == (0.0, 255.0) and meta.input.shape == [32, 32, 3]
    assert [(o.name, o.labels[:2]) for o in meta.outputs] == [("output_0", ["c0", "c1"])]
    assert meta.signatures == ["serving_default"] and meta.layers == []
    served = tf.saved_model.load(str(repo / "sm" / "1")).signatures["serving_default"]
    x = np.random.default_rng(0).random((1, 32, 32, 3), np.float32) * 255
    (name,) = served.structured_input_signature[1]
    np.testing.assert_allclose(served(**{name: tf.constant(x)})["output_0"], model(x), atol=1e-5)
    not_image = tmp_path / "tabular"
    keras.Sequential([keras.Input((10,)), keras.layers.Dense(2)]).export(
        str(not_image), verbose=False
    )
    assert "not an image batch" in _refused([str(not_image), "--name", "t"], repo)
    assert "without saved_model.pb" in _refused([str(tmp_path), "--name", "t"], repo)


def test_a_model_of_any_input_size_is_served_at_the_size_given(tmp_path):
    keras.utils.set_random_seed(2)
    any_size = keras.Sequential(
        [
            keras.Input((None, None, 3)),
            keras.layers.Conv2D(2, 3, name="conv"),
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(2, activation="softmax", name="yes_no"),
        ],
        name="any_size",
    )
    source = tmp_path / "any.keras"
    any_size.save(source)
    repo = tmp_path / "repo"
    assert "give the size" in _refused([str(source), "--name", "a"], repo)
    assert (
        main([str(source), "--name", "a", "--input-size", "24,20", "--model-dir", str(repo)], repo)
        == 0
    )
    meta = ModelMetadata.read(repo / "a" / "1")
    assert meta.input.shape == [24, 20, 3]
    assert [layer.name for layer in meta.layers] == ["image", "conv", "gap", "yes_no"]
    fixed = tmp_path / "fixed.keras"
    cifar_like().save(fixed)
    assert "fixed at 32x32" in _refused([str(fixed), "--name", "f", "--input-size", "24,20"], repo)
