"""Optical star fields: determinism, photometry, DAOStarFinder and the evaluation."""

from __future__ import annotations

import numpy as np
import pytest

from skyml.optical import baselines, pipeline, simulate

P = simulate.OpticalParams(npix=64)


def test_same_seed_same_tiles():
    a = simulate.simulate_tiles(2, 5, "cluster", P, "test")
    b = simulate.simulate_tiles(2, 5, "cluster", P, "test")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    c = simulate.simulate_tiles(2, 5, "crowded", P, "test")
    assert len(c["mag"]) > len(a["mag"])
    with pytest.raises(ValueError, match="density"):
        simulate.simulate_tiles(1, 5, "sparse", P)


def test_moffat_flux_is_conserved_and_fwhm_right():
    img = simulate.render_stars([32.0], [32.0], [1000.0], 4.0, P)
    assert img.sum() == pytest.approx(1000.0, rel=0.03)
    row = img[32]
    half = row.max() / 2
    above = np.flatnonzero(row >= half)
    assert 3 <= above[-1] - above[0] + 1 <= 5


def test_limit_magnitude_depends_on_noise():
    m = simulate.mag_limit(4.0, P)
    assert simulate.mag_limit(4.0, simulate.OpticalParams(sky_e=3000.0)) < m
    assert simulate.mag_limit(6.0, P) < m


def test_daofinder_finds_an_isolated_bright_star():
    rng = np.random.default_rng(0)
    img = simulate.render_stars([30.2], [20.7], [2e5], 4.5, P) + P.sky_e
    img = rng.poisson(img) + rng.normal(0, P.read_noise_e, img.shape)
    x, y, s = baselines.daofind(img, 4.5)
    assert len(x) == 1 and abs(x[0] - 30.2) < 0.3 and abs(y[0] - 20.7) < 0.3


def test_evaluate_and_masks():
    data = simulate.simulate_tiles(1, 2, "cluster", P, "test")
    bright = data["rel_flux"] >= 1
    inside = (np.abs(data["x_pix"] - 31.5) < 32) & (np.abs(data["y_pix"] - 31.5) < 32)
    det = {"patch": np.zeros((bright & inside).sum(), int), "x_pix": data["x_pix"][bright & inside] + 0.1,
           "y_pix": data["y_pix"][bright & inside], "score": np.ones((bright & inside).sum())}
    truth, dets = pipeline.evaluate(data, det)
    from skyml.ctao.evaluation import prf

    r = prf(truth, dets)
    assert r["recall"] == pytest.approx(1.0) and r["precision"] == pytest.approx(1.0)
    assert simulate.masks(data, P).shape == (1, 64, 64, 1)


def test_network_input_is_in_sky_noise_units_also_when_crowded():
    """asinh((image - sky) / sigma): the sky level and noise it implies are the
    simulated ones (sky_e, sqrt(sky_e + read_noise²)) in every density."""
    p = simulate.OpticalParams()
    noise = np.sqrt(p.sky_e + p.read_noise_e**2)
    for density in simulate.DENSITIES:
        data = simulate.simulate_tiles(1, 4, density, p, "test")
        img = data["image"][0].ravel()
        x = np.sinh(simulate.network_input(data["image"], p)[0, ..., 0].astype(float)).ravel()
        slope, intercept = np.polyfit(img[::97], x[::97], 1)
        sigma, sky = 1 / slope, -intercept / slope
        assert abs(sky - p.sky_e) < 0.3 * noise, density
        assert abs(sigma / noise - 1) < 0.08, density
    with pytest.raises(ValueError, match="images must be"):
        simulate.network_input(np.zeros((1, 2, 8, 8)), p)
