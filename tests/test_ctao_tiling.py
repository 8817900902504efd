"""Tiled prediction of the U-Net equals the one-pass prediction."""

import keras
import numpy as np
import pytest

from skyml.ctao import models


@pytest.mark.parametrize("depth, shape", [(2, (200, 328)), (3, (300, 257))])
def test_tiled_prediction_equals_one_pass(depth, shape):
    keras.utils.set_random_seed(3)
    model = models.build_unet(channels=1, filters=4, depth=depth)
    # random weights with non-trivial batch-norm statistics, so every layer matters
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(np.linspace(-0.5, 0.5, n).astype("float32"))
            layer.moving_variance.assign(np.linspace(0.5, 2.0, n).astype("float32"))
    x = np.random.default_rng(0).normal(size=(1, *shape, 1)).astype("float32")
    one = models.predict(model, x)
    tiled = models.predict(model, x, tile=64 if depth == 2 else 128)
    assert tiled.shape == one.shape == (1, *shape, 1)
    np.testing.assert_allclose(tiled, one, rtol=0, atol=2e-5)


def test_a_too_small_halo_would_show():
    """The check above can fail: with a halo below the receptive field the
    tiles differ from the one-pass result."""
    keras.utils.set_random_seed(3)
    model = models.build_unet(channels=1, filters=4, depth=3)
    x = np.random.default_rng(0).normal(size=(1, 256, 256, 1)).astype("float32")
    one = models.predict(model, x)
    original = models.receptive_radius
    try:
        models.receptive_radius = lambda depth: 8
        tiled = models.predict(model, x, tile=64)
    finally:
        models.receptive_radius = original
    assert np.abs(tiled - one).max() > 1e-3


def test_tile_must_follow_the_pooling_grid():
    model = models.build_unet(channels=1, filters=4, depth=3)
    with pytest.raises(ValueError, match="multiple"):
        models.predict(model, np.zeros((1, 64, 64, 1), "float32"), tile=60)


def _blobby_map(shape, n, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    prob = np.zeros(shape)
    for y, x, s in zip(rng.uniform(0, shape[0], n), rng.uniform(0, shape[1], n), rng.uniform(1.0, 3.5, n)):
        prob = np.maximum(prob, np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * s * s)))
    return prob + rng.uniform(0, 0.02, shape)


def test_tiled_log_positions_equal_one_pass():
    from skyml.ctao import detect

    prob = _blobby_map((300, 260), 150, 1)
    one = detect.log_positions(prob, threshold=0.3, max_sigma=4.0, num_sigma=4)
    tiled = detect.log_positions(prob, threshold=0.3, max_sigma=4.0, num_sigma=4, tile=64)
    assert len(one[0]) > 100
    for a, b in zip(one, tiled):
        np.testing.assert_array_equal(a, b)
