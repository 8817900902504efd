"""Optical fields: the shifted test fields, the domain-randomised training
fields and the local sky subtraction of the optical U-Net's input."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from skyml.optical import simulate
from skyml.optical.simulate import SHIFT_FIELDS, OpticalParams

P = OpticalParams(npix=96, n_crowded=200, n_cluster=40, n_empty=5)


def test_defaults_keep_the_nominal_cache_keys():
    d = OpticalParams().to_dict()
    assert not set(SHIFT_FIELDS) & set(d)
    assert "sky_e" in d and "fwhm_scale_choices" in simulate.shifted_params().to_dict()


@pytest.mark.parametrize("make", [simulate.shifted_params, simulate.randomised_params])
def test_shifted_and_randomised_fields_are_deterministic(make):
    p = make(P)
    a = simulate.simulate_tiles(2, 4, "cluster", p, "shifted")
    b = simulate.simulate_tiles(2, 4, "cluster", p, "shifted")
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    c = simulate.simulate_tiles(2, 5, "cluster", p, "shifted")
    assert not np.array_equal(a["image"], c["image"])


def test_shifted_fields_have_other_psf_a_saturated_star_and_cosmic_rays():
    q = simulate.shifted_params(P)
    data = simulate.simulate_tiles(8, 1, "cluster", q, "shifted")
    lo, hi = P.fwhm_min_arcsec / P.pixel_scale_arcsec, P.fwhm_max_arcsec / P.pixel_scale_arcsec
    scale_small = (data["fwhm_px"] >= 0.7 * lo - 1e-9) & (data["fwhm_px"] <= 0.7 * hi + 1e-9)
    scale_large = (data["fwhm_px"] >= 1.5 * lo - 1e-9) & (data["fwhm_px"] <= 1.5 * hi + 1e-9)
    assert np.all(scale_small | scale_large) and scale_small.any() and scale_large.any()
    assert np.all(data["image"].max(axis=(1, 2)) == q.saturation_e)  # the saturated star is clipped
    for i in range(8):  # one saturated star per tile, in the truth
        assert np.sum((data["tile"] == i) & (data["mag"] == q.saturated_mag)) == 1
    # star-free shifted field: cosmic-ray hits stand far above the noise; no star in the truth
    blank = simulate.simulate_tiles(3, 1, "empty", dataclasses.replace(q, n_empty=0, saturation_e=0.0), "shifted")
    assert len(blank["mag"]) == 0
    noise = np.sqrt(q.sky_e + q.read_noise_e**2)
    hits = [(im > q.sky_e * 1.05 + 10 * noise).sum() for im in blank["image"]]
    assert all(q.n_cosmic <= h <= 4 * q.n_cosmic for h in hits)


def test_sky_gradient_and_its_local_subtraction():
    q = dataclasses.replace(P, n_empty=0, sky_gradient_frac=0.05, npix=128)
    img = simulate.simulate_tiles(1, 2, "empty", q, "test")["image"]
    # the plane fitted to the image has the gradient's amplitude
    yy, xx = np.mgrid[0:128, 0:128] / 127 - 0.5
    coef, *_ = np.linalg.lstsq(np.c_[np.ones(xx.size), xx.ravel(), yy.ravel()], img[0].ravel().astype(float), rcond=None)
    assert np.hypot(coef[1], coef[2]) == pytest.approx(0.05 * q.sky_e, rel=0.15)
    # quadrant means of the input: the global subtraction keeps the gradient, the local one removes it
    def quads(x):
        return np.array([x[0, :64, :64, 0].mean(), x[0, :64, 64:, 0].mean(), x[0, 64:, :64, 0].mean(),
                         x[0, 64:, 64:, 0].mean()])

    g, loc = quads(simulate.network_input(img, q)), quads(simulate.network_input(img, q, "local"))
    assert np.ptp(g) > 0.3 and np.ptp(loc) < 0.15
    with pytest.raises(ValueError):
        simulate.network_input(img, q, "ring")


def test_randomised_fields_vary_per_tile():
    r = simulate.randomised_params(P)
    data = simulate.simulate_tiles(6, 3, "cluster", r, "train")
    assert len(np.unique(np.round(data["fwhm_px"], 6))) == 6
    sky = np.median(data["image"], axis=(1, 2))
    assert sky.max() / sky.min() > 1.3  # the sky level is drawn per tile
    assert np.all(data["image"].max(axis=(1, 2)) <= max(r.rand_saturation_e, data["image"].max()))
