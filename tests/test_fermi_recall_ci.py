"""Bootstrap intervals of the DR2 recall above and below Signif_Avg = 10."""
import numpy as np
from astropy.table import Table
from skyml.fermi import evaluation
from skyml.fermi.simulate import healpix_centres, owner_pixel


def _sources(rng, pixels, n_per_pixel=20):
    lon, lat = healpix_centres()
    glon = np.repeat(lon[pixels], n_per_pixel) + rng.uniform(-0.5, 0.5, len(pixels) * n_per_pixel)
    glat = np.repeat(lat[pixels], n_per_pixel) + rng.uniform(-0.5, 0.5, len(pixels) * n_per_pixel)
    signif = rng.uniform(4.0, 30.0, len(glon))
    signif[::17] = np.nan  # sources without Signif_Avg are in neither bin
    matched = rng.uniform(size=len(glon)) < np.where(signif > 10, 0.9, 0.4)
    return Table({"glon": glon, "glat": glat, "signif_avg": signif, "matched": matched})


def test_values_equal_recall_above_below_and_intervals_bracket_them():
    rng = np.random.default_rng(3)
    pixels = np.array([100, 200, 300, 400, 500, 600])
    src = _sources(rng, pixels)
    assert set(owner_pixel(src["glon"], src["glat"])) <= set(pixels.tolist())
    (hi, hi_ci), (lo, lo_ci) = evaluation.recall_above_below_ci(src, pixels)
    assert (hi, lo) == evaluation.recall_above_below(src)
    assert hi > lo
    for value, ci in ((hi, hi_ci), (lo, lo_ci)):
        assert ci is not None and ci[0] <= value <= ci[1] and ci[0] < ci[1]
    again = evaluation.recall_above_below_ci(src, pixels)
    assert again == ((hi, hi_ci), (lo, lo_ci))  # seeded: the same interval every time


def test_one_patch_has_no_interval_and_empty_bins_are_nan():
    rng = np.random.default_rng(4)
    pixels = np.array([250])
    src = _sources(rng, pixels)
    (hi, hi_ci), _ = evaluation.recall_above_below_ci(src, pixels)
    assert np.isfinite(hi) and hi_ci is None
    src["signif_avg"] = 5.0
    (hi, hi_ci), (lo, _) = evaluation.recall_above_below_ci(src, np.array([250, 251]))
    assert np.isnan(hi) and hi_ci is None and np.isfinite(lo)
