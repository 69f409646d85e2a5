"""The shipped models: they load, their signatures and metadata agree, they meet the targets,
and the feature_maps signature equals the layers' own outputs."""

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import MODELS
from tests.conftest import committed_versions as versions
from training.architectures import get_architecture
from training.datasets import load, split
from training.export import KERAS_FILE, feature_map_model
from training.metadata import ModelMetadata

TARGETS = {
    "digit_odd": {"digit_accuracy": 0.985, "odd_accuracy": 0.895},
    "digit_odd_plus": {"digit_accuracy": 0.994, "odd_accuracy": 0.993},
    "cifar10": {"accuracy": 0.73},
    "cifar10_resnet": {"accuracy": 0.88},
}


DATASETS = MODELS.parents[1] / "shared" / "datasets"  # training data: here, not in CI
DATA = {"mnist": DATASETS / "mnist", "cifar10": DATASETS / "cifar10" / "train-images.zip"}


ALL_VERSIONS = [(name, path) for name in TARGETS for path in versions(name)]


@pytest.fixture(scope="module", params=ALL_VERSIONS, ids=lambda t: f"{t[0]}-v{t[1].name}")
def model(request):
    name, path = request.param
    return name, path, ModelMetadata.read(path), tf.saved_model.load(str(path))


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_a_shipped_version_meets_the_targets(name):
    """The best version meets them; a quick retrain (a new, weaker version) is still valid."""
    metrics = [ModelMetadata.read(path).validation_metrics for path in versions(name)]
    for metric, target in TARGETS[name].items():
        assert max(m[metric] for m in metrics) >= target, (metric, metrics)


def test_metadata_is_complete(model):
    name, path, meta, _ = model
    assert meta.name == name and meta.version == int(path.name)
    assert set(TARGETS[name]) <= set(meta.validation_metrics)
    arch = get_architecture(name)
    assert meta.total_params == arch.build().count_params()
    assert meta.input == arch.input and tuple(meta.outputs) == arch.outputs
    assert meta.dataset.train_examples > 40_000 and meta.dataset.validation_examples >= 5_000
    assert meta.training.hardware and meta.training.duration_s > 0
    assert meta.tensorflow_version and meta.keras_version and meta.created_at


def test_signatures_agree_with_metadata(model):
    _, _, meta, loaded = model
    serve = loaded.signatures["serving_default"]
    (spec,) = serve.structured_input_signature[1].values()
    assert spec.name == "image" and spec.dtype == tf.float32
    assert spec.shape.as_list() == [None, *meta.input.shape]
    assert set(serve.structured_outputs) == {o.name for o in meta.outputs}
    maps = loaded.signatures["feature_maps"].structured_outputs
    assert set(maps) == {layer.name for layer in meta.layers if layer.type != "InputLayer"}
    for layer in meta.layers:
        if layer.name in maps:
            assert maps[layer.name].shape.as_list()[1:] == layer.output_shape


def test_feature_maps_equal_the_layers_own_outputs(model):
    _, path, meta, loaded = model
    keras_model = keras.models.load_model(path / KERAS_FILE)
    x = np.random.default_rng(0).random((3, *meta.input.shape), np.float32)
    served = loaded.signatures["feature_maps"](image=tf.constant(x))
    for name, value in feature_map_model(keras_model)(x).items():
        np.testing.assert_allclose(
            served[name].numpy(), keras.ops.convert_to_numpy(value), atol=1e-5, err_msg=name
        )
    outputs = loaded.signatures["serving_default"](image=tf.constant(x))
    for out in meta.outputs:
        assert np.all((outputs[out.name].numpy() >= 0) & (outputs[out.name].numpy() <= 1))


def _accuracies(path: Path, meta: ModelMetadata) -> dict[str, float]:
    """The SavedModel's serving signature on the validation split training carved out."""
    data = load(meta.dataset.name, DATA[meta.dataset.name])
    _, val = split(len(data.images), meta.training.validation_split, meta.training.seed)
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    batches = [
        serve(image=tf.constant(data.images[val[i : i + 500]], tf.float32) / 255)
        for i in range(0, len(val), 500)
    ]
    labels = data.labels[val]
    accuracies = {}
    for out in meta.outputs:
        p = np.concatenate([b[out.name].numpy() for b in batches])
        hit = (
            (p[:, 0] > 0.5) == (labels % 2 == 1) if out.kind == "binary" else p.argmax(-1) == labels
        )
        key = "accuracy" if len(meta.outputs) == 1 else f"{out.name}_accuracy"
        accuracies[key] = float(hit.mean())
    return accuracies


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TARGETS))
def test_the_claimed_metrics_hold_on_the_held_out_split(name):
    """Recomputed from the shipped SavedModel, not read from its metadata: the best version's
    validation accuracy is what the metadata says and meets the target."""
    best = max(
        versions(name),
        key=lambda p: sum(ModelMetadata.read(p).validation_metrics[m] for m in TARGETS[name]),
    )
    meta = ModelMetadata.read(best)
    if not DATA[meta.dataset.name].exists():
        pytest.skip(f"needs {DATA[meta.dataset.name]}")
    measured = _accuracies(best, meta)
    print(name, measured)
    for metric, target in TARGETS[name].items():
        assert measured[metric] == pytest.approx(meta.validation_metrics[metric], abs=0.002)
        assert measured[metric] >= target
