"""The tuned classical optical detectors (photutils DAOStarFinder and segmentation)."""

from __future__ import annotations

import numpy as np
import pytest

from skyml.optical import baselines


def _field(seed=0, n_stars=6, fwhm=3.0, npix=96):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:npix, :npix]
    sigma = fwhm / 2.355
    xs = rng.uniform(10, npix - 10, n_stars)
    ys = rng.uniform(10, npix - 10, n_stars)
    image = np.full((npix, npix), 100.0)
    for x, y in zip(xs, ys):
        image += 2000 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2)) / (2 * np.pi * sigma ** 2)
    return rng.poisson(image).astype(float), xs, ys


@pytest.mark.parametrize("finder", [
    lambda img: baselines.daofind(img, 3.0, 5.0),
    lambda img: baselines.segment_find(img, 3.0, nsigma=5.0, npixels=5),
], ids=["daofind", "segmentation"])
def test_bright_stars_are_found_and_noise_is_not(finder):
    image, xs, ys = _field()
    x, y, score = finder(image)
    assert len(x) == len(xs) and np.all(score > 0)
    d = np.hypot(x[:, None] - xs[None], y[:, None] - ys[None]).min(axis=0)
    assert np.all(d < 0.5), d
    noise = np.random.default_rng(1).poisson(np.full((96, 96), 100.0)).astype(float)
    assert len(finder(noise)[0]) <= 1


def test_daofind_defaults_are_photutils_defaults():
    """With the defaults, the tuned settings reduce to photutils 3's own DAOStarFinder."""
    from astropy.stats import sigma_clipped_stats
    from photutils.detection import DAOStarFinder

    image, _, _ = _field(seed=2, n_stars=10)
    _, median, std = sigma_clipped_stats(image, sigma=3.0)
    ref = DAOStarFinder(fwhm=3.0, threshold=5.0 * std)(image - median)
    x, y, _ = baselines.daofind(image, 3.0, **baselines.DAOFIND_DEFAULTS)
    assert np.array_equal(x, np.asarray(ref["x_centroid"])) and np.array_equal(y, np.asarray(ref["y_centroid"]))


def test_default_settings_lie_inside_the_grids():
    for _, grid, defaults in baselines.METHODS.values():
        assert set(grid) == set(defaults)
        for name, values in grid.items():
            assert values[0] < defaults[name] < values[-1] and list(values) == sorted(values), name


@pytest.mark.slow
def test_tune_reports_interior_choices(monkeypatch):
    from skyml.optical.simulate import OpticalParams

    grid = {"nsigma": (1.0, 3.0, 8.0), "npixels": (2, 5, 12)}
    monkeypatch.setitem(baselines.METHODS, "segmentation",
                        (baselines.segment_all, grid, {"nsigma": 3.0, "npixels": 5}))
    out = baselines.tune("segmentation", 1, 1, OpticalParams(), rounds=1)
    assert set(out["settings"]) == set(grid) and all(out["settings"][k] in grid[k] for k in grid)
    assert out["interior"] == {k: grid[k][0] < out["settings"][k] < grid[k][-1] for k in grid}
    assert 0 < out["f1"] <= 1 and out["evaluations"] >= 3


@pytest.mark.slow
def test_tune_is_cached_by_its_grid(monkeypatch, tmp_path):
    """A second tuning with the same grid and tiles is loaded, not recomputed;
    another grid is a new tuning."""
    from skyml import paths
    from skyml.optical.simulate import OpticalParams

    monkeypatch.setattr(paths, "CACHE", tmp_path)
    grid = {"nsigma": (1.0, 3.0, 8.0), "npixels": (2, 5, 12)}
    monkeypatch.setitem(baselines.METHODS, "segmentation",
                        (baselines.segment_all, grid, {"nsigma": 3.0, "npixels": 5}))
    first = baselines.tune("segmentation", 1, 1, OpticalParams(), rounds=1)
    assert (tmp_path / "optical_tune").is_dir()

    def fail(*args, **kwargs):
        raise AssertionError("tuned again")

    monkeypatch.setattr(baselines, "_tune", fail)
    assert baselines.tune("segmentation", 1, 1, OpticalParams(), rounds=1) == first
    monkeypatch.setitem(baselines.METHODS, "segmentation",
                        (baselines.segment_all, {**grid, "npixels": (2, 4, 12)}, {"nsigma": 3.0, "npixels": 4}))
    with pytest.raises(AssertionError, match="tuned again"):
        baselines.tune("segmentation", 1, 1, OpticalParams(), rounds=1)
