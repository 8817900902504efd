"""The training range of the optical U-Net and the check of an image against it."""

from __future__ import annotations

import json

import numpy as np

from skyml.optical import pipeline
from skyml.optical import simulate as opt
from skyml.optical.pipeline import OOD_NOISE_TOL, OOD_SKY_TOL_SIGMA


def test_sky_stats_are_median_and_scaled_mad():
    rng = np.random.default_rng(0)
    img = 100.0 + 5.0 * rng.normal(size=(200, 200))
    img[:10, :10] = 1e5  # a bright star hardly moves them
    sky, noise = pipeline.sky_stats(img)
    assert abs(sky - 100.0) < 0.2 and abs(noise - 5.0) < 0.15
    img[0, 0] = np.nan  # non-finite pixels are left out
    assert np.isfinite(pipeline.sky_stats(img)).all()


def test_training_range_and_check():
    tiles = np.stack([np.full((8, 8), 300.0) + s * np.array([[-1.0, 1.0] * 4, [1.0, -1.0] * 4] * 4) for s in (10, 20)])
    rng = pipeline.training_range(tiles)
    np.testing.assert_allclose(rng["sky"], [300.0, 300.0])
    np.testing.assert_allclose(rng["noise_mad"], [14.826, 29.652], rtol=1e-5)  # 1 / Phi^-1(3/4) = 1.4826
    assert rng["n_tiles"] == 2
    meta = {"training_range": json.loads(json.dumps(rng))}

    def check(sky, noise):
        return pipeline.distribution_check(sky + noise * np.array([[-1.0, 1.0] * 4, [1.0, -1.0] * 4] * 4), meta)

    assert check(300.0, 20.0)["out_of_distribution"] is False
    margin = OOD_SKY_TOL_SIGMA * 29.652
    assert check(300.0 + 0.99 * margin, 20.0)["out_of_distribution"] is False
    high = check(300.0 + 1.01 * margin, 20.0)
    assert high["out_of_distribution"] is True and high["reason"].startswith("sky level")
    assert check(300.0 - 1.01 * margin, 20.0)["out_of_distribution"] is True
    assert check(300.0, 0.99 * 29.652 * (1 + OOD_NOISE_TOL) / 1.4826)["out_of_distribution"] is False
    noisy = check(300.0, 1.01 * 29.652 * (1 + OOD_NOISE_TOL) / 1.4826)
    assert noisy["out_of_distribution"] is True and noisy["reason"].startswith("robust noise")
    assert check(300.0, 0.99 * 10.0 / (1 + OOD_NOISE_TOL))["out_of_distribution"] is True
    both = check(3000.0, 200.0)
    assert "sky level" in both["reason"] and "robust noise" in both["reason"]
    bare = pipeline.distribution_check(np.ones((8, 8)), {})
    assert bare["out_of_distribution"] is None and bare["sky"] == 1.0


def test_simulated_validation_tiles_pass():
    """Tiles of every density, whole and in 64-px cut-outs, against the range of training tiles."""
    p = opt.OpticalParams(npix=128, n_crowded=375, n_cluster=62, n_empty=8)  # the densities of 256-px tiles
    train = np.stack([opt.simulate_tile(np.random.default_rng(i), d, p)[0] for i in range(3) for d in opt.DENSITIES])
    meta = {"training_range": pipeline.training_range(train)}
    for i in range(2):
        for d in opt.DENSITIES:
            img = opt.simulate_tile(np.random.default_rng(100 + i), d, p)[0]
            assert pipeline.distribution_check(img, meta)["out_of_distribution"] is False, d
            assert pipeline.distribution_check(img[32:96, 32:96], meta)["out_of_distribution"] is False, d
    rng = np.random.default_rng(7)
    odd = 10.0 * (img - p.sky_e) + 3000.0 + rng.normal(size=img.shape)
    assert pipeline.distribution_check(odd, meta)["out_of_distribution"] is True
