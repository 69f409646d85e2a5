"""The shipped models: they load, their signatures and metadata agree, they meet the targets,
and the feature_maps signature equals the layers' own outputs."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from training.architectures import get_architecture
from training.export import KERAS_FILE, feature_map_model
from training.metadata import ModelMetadata

TARGETS = {"digit_odd": {"digit_accuracy": 0.985, "odd_accuracy": 0.895},
           "cifar10": {"accuracy": 0.73}}


def shipped(models_dir):
    return [(name, path) for name in TARGETS
            for path in sorted((models_dir / name).iterdir()) if path.name.isdigit()]


@pytest.fixture(scope="module", params=sorted(TARGETS))
def model(request, models_dir):
    versions = sorted((models_dir / request.param).iterdir(), key=lambda p: int(p.name))
    path = versions[-1]
    return request.param, path, ModelMetadata.read(path), tf.saved_model.load(str(path))


def test_each_shipped_model_has_a_version(models_dir):
    assert {name for name, _ in shipped(models_dir)} == set(TARGETS)


def test_metadata_meets_targets_and_is_complete(model):
    name, path, meta, _ = model
    assert meta.name == name and meta.version == int(path.name)
    for metric, target in TARGETS[name].items():
        assert meta.validation_metrics[metric] >= target, (metric, meta.validation_metrics)
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
        np.testing.assert_allclose(served[name].numpy(), keras.ops.convert_to_numpy(value),
                                   atol=1e-5, err_msg=name)
    outputs = loaded.signatures["serving_default"](image=tf.constant(x))
    for out in meta.outputs:
        assert np.all((outputs[out.name].numpy() >= 0) & (outputs[out.name].numpy() <= 1))
