"""A served version's calls into TensorFlow: the direct graph call computes what the
signature computes, output by output."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from service.model import direct


def latest(models_dir, name):
    return max(
        (p for p in (models_dir / name).iterdir() if p.name.isdigit()), key=lambda p: int(p.name)
    )


@pytest.mark.parametrize("name", ["digit_odd", "cifar10_resnet"])
def test_direct_call_matches_the_signature(models_dir, name):
    signature = tf.saved_model.load(str(latest(models_dir, name))).signatures["serving_default"]
    ((key, spec),) = signature.structured_input_signature[1].items()
    pixels = tf.constant(
        np.random.default_rng(0).random((3, *spec.shape[1:]), np.float32) * 255, spec.dtype
    )
    expected = signature(**{key: pixels})
    got = direct(signature)(pixels)
    assert sorted(got) == sorted(expected) and len(got) >= 1
    for output, value in expected.items():
        np.testing.assert_array_equal(got[output].numpy(), value.numpy())


def test_direct_call_of_a_plain_function_keeps_output_names():
    """Outputs come back by name even when their flat order differs from their written one."""
    function = tf.function(lambda x: {"zeta": x * 2.0, "alpha": x + 1.0}).get_concrete_function(
        tf.TensorSpec([None], tf.float32)
    )
    got = direct(function)(tf.constant([1.0, 2.0]))
    assert got["zeta"].numpy().tolist() == [2.0, 4.0]
    assert got["alpha"].numpy().tolist() == [2.0, 3.0]
