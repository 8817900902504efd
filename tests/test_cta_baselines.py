"""Classical CTA baselines on synthetic maps with known sources.

Maps: ``source_npred_map`` of a point source with a two-Gaussian PSF over a
flat or sloped background, Poisson noise from seeded generators. The
background template handed to the methods is the nominal one; the true
background is ``b`` times it where stated.
"""

import logging

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from gammapy.maps import WcsGeom
from scipy.stats import norm

from skyml.cta import baselines
from skyml.cta.psf import source_npred_map

BINSZ_DEG = 0.025
SIGMAS_DEG = np.array([0.05, 0.1])
WEIGHTS = np.array([0.6, 0.4])
SIGMAS_PIX = SIGMAS_DEG / BINSZ_DEG


def _geom(npix, skydir=(83.6, 22.0)):
    return WcsGeom.create(
        skydir=SkyCoord(*skydir, unit="deg"), npix=npix, binsz=BINSZ_DEG, frame="icrs", proj="TAN"
    )


def _pix_to_sky(geom, x_pix, y_pix):
    ra, dec = geom.wcs.pixel_to_world_values(x_pix, y_pix)
    return SkyCoord(ra, dec, unit="deg", frame="icrs")


def _sky_to_pix(geom, ra_deg, dec_deg):
    x, y = geom.wcs.world_to_pixel_values(ra_deg, dec_deg)
    return np.asarray(x, dtype=float), np.asarray(y, dtype=float)


def _sloped_background(shape, level, slope=0.5):
    """``level`` counts per pixel, rising linearly by ``slope`` (fraction) across x."""
    x = np.arange(shape[1], dtype=float)
    ramp = 1.0 + slope * (x - x.mean()) / shape[1]
    return np.broadcast_to(level * ramp, shape).copy()


# ---------------------------------------------------------------- masks


def test_region_masks_geometry():
    geom = _geom(200)
    x0, y0 = 120.3, 80.7
    center = _pix_to_sky(geom, x0, y0)
    on = baselines.on_region_mask(geom, center, radius_deg=0.2)
    ring = baselines.ring_mask(geom, center, r_in_deg=0.5, r_out_deg=0.9)
    assert on.dtype == bool and on.shape == (200, 200)
    # areas in pixels: radius 0.2 deg = 8 px, ring 20-36 px
    assert on.sum() == pytest.approx(np.pi * 8**2, rel=0.05)
    assert ring.sum() == pytest.approx(np.pi * (36**2 - 20**2), rel=0.03)
    assert not np.any(on & ring)
    yy, xx = np.nonzero(on)
    assert xx.mean() == pytest.approx(x0, abs=0.3)
    assert yy.mean() == pytest.approx(y0, abs=0.3)
    # astropy WCS input (with shape) and (ra, dec) tuples give the same masks
    on_wcs = baselines.on_region_mask(geom.wcs, (center.ra.deg, center.dec.deg), 0.2, shape=(200, 200))
    np.testing.assert_array_equal(on_wcs, on)
    # a region off the map gives an empty mask
    far = baselines.on_region_mask(geom, SkyCoord(200.0, -40.0, unit="deg"), 0.2)
    assert far.shape == (200, 200) and not far.any()
    with pytest.raises(ValueError):
        baselines.ring_mask(geom, center, r_in_deg=0.9, r_out_deg=0.5)


# ------------------------------------------------------ aperture photometry


def test_irf_and_ring_excess_recover_injected_counts():
    rng = np.random.default_rng(1)
    shape = (100, 100)
    geom = _geom(100)
    x0, y0, npred = 50.2, 49.6, 150.0
    template = _sloped_background(shape, 0.3)
    b_true = 1.2  # true background 20% above the nominal template
    source = source_npred_map(x0, y0, npred, SIGMAS_PIX, WEIGHTS, shape=shape)
    n_maps = 400
    counts = rng.poisson(b_true * template + source, size=(n_maps, *shape))

    center = _pix_to_sky(geom, x0, y0)
    on = baselines.on_region_mask(geom, center, 0.2)
    off = baselines.ring_mask(geom, center, 0.5, 0.9)
    source_on, source_off = source[on].sum(), source[off].sum()
    template_on, template_off = template[on].sum(), template[off].sum()

    n_on, background_on, excess = baselines.excess_irf(counts, template, on)
    assert excess.shape == (n_maps,)
    assert background_on == pytest.approx(template_on)
    # the IRF template subtraction is biased by the unknown normalisation
    expected_irf = source_on + (b_true - 1.0) * template_on
    stderr = excess.std() / np.sqrt(n_maps)
    assert abs(excess.mean() - expected_irf) < 4 * stderr
    assert abs(excess.mean() - source_on) > 10 * stderr

    n_on_r, n_off, alpha, excess_r = baselines.excess_ring(counts, template, on, off)
    np.testing.assert_array_equal(n_on_r, n_on)
    assert alpha == pytest.approx(template_on / template_off)
    # the acceptance-corrected ring removes the normalisation; the expected
    # excess is the source in the on region minus its (tiny) leak into the ring
    expected_ring = source_on - alpha * source_off
    stderr_r = excess_r.std() / np.sqrt(n_maps)
    assert abs(excess_r.mean() - expected_ring) < 4 * stderr_r
    # Poisson scatter of the ring excess: var = mu_on + alpha^2 mu_off
    var_expected = (source_on + b_true * template_on) + alpha**2 * (source_off + b_true * template_off)
    assert excess_r.var() == pytest.approx(var_expected, rel=0.2)

    with pytest.raises(ValueError, match="overlap"):
        baselines.excess_ring(counts[0], template, on, on)


def test_lima_on_ring_null_and_source():
    rng = np.random.default_rng(2)
    shape = (100, 100)
    geom = _geom(100)
    template = _sloped_background(shape, 0.3)
    center = _pix_to_sky(geom, 50.2, 49.6)
    on = baselines.on_region_mask(geom, center, 0.2)
    off = baselines.ring_mask(geom, center, 0.5, 0.9)
    # no source, true background 20% above the template: still ~N(0, 1)
    null_counts = rng.poisson(1.2 * template, size=(500, *shape))
    sig_null = baselines.lima_on_ring(null_counts, template, on, off)
    assert sig_null.shape == (500,)
    assert abs(sig_null.mean()) < 0.15
    assert 0.85 < sig_null.std() < 1.15
    source = source_npred_map(50.2, 49.6, 150.0, SIGMAS_PIX, WEIGHTS, shape=shape)
    src_counts = rng.poisson(1.2 * template + source, size=(50, *shape))
    assert np.median(baselines.lima_on_ring(src_counts, template, on, off)) > 5


# ---------------------------------------------------- blind search and fit


@pytest.fixture(scope="module")
def bright_map():
    rng = np.random.default_rng(3)
    geom = _geom(200)
    shape = (200, 200)
    x0, y0, npred, b_true = 120.3, 80.7, 300.0, 1.1
    template = _sloped_background(shape, 0.5)
    source = source_npred_map(x0, y0, npred, SIGMAS_PIX, WEIGHTS, shape=shape)
    counts = rng.poisson(b_true * template + source)
    return dict(geom=geom, counts=counts, template=template, x0=x0, y0=y0, npred=npred, b_true=b_true)


def test_blind_search_finds_bright_source(bright_map):
    m = bright_map
    ra, dec, sqrt_ts = baselines.blind_search(m["counts"], m["template"], m["geom"])
    x, y = _sky_to_pix(m["geom"], ra, dec)
    assert np.hypot(x - m["x0"], y - m["y0"]) <= 2.0
    assert sqrt_ts > 10
    # the peak is a pixel centre
    assert x == pytest.approx(round(float(x)), abs=1e-6) and y == pytest.approx(round(float(y)), abs=1e-6)


def test_blind_search_batch_and_non_detection(bright_map):
    m = bright_map
    rng = np.random.default_rng(4)
    empty = rng.poisson(m["template"])
    counts = np.stack([m["counts"], empty])
    out = baselines.blind_search_batch(counts, m["template"], m["geom"], progress=False, threshold=8.0)
    assert set(out) == {"ra_deg", "dec_deg", "sqrt_ts"}
    assert out["ra_deg"].shape == (2,)
    x, y = _sky_to_pix(m["geom"], out["ra_deg"][0], out["dec_deg"][0])
    assert np.hypot(x - m["x0"], y - m["y0"]) <= 2.0
    # background only, 8 sigma threshold: no peak, NaN outputs
    assert np.all(np.isnan([out["ra_deg"][1], out["dec_deg"][1], out["sqrt_ts"][1]]))


def test_fit_point_source_recovers_bright_source(bright_map):
    m = bright_map
    ra, dec, _ = baselines.blind_search(m["counts"], m["template"], m["geom"])
    fit = baselines.fit_point_source(m["counts"], m["template"], m["geom"], SIGMAS_DEG, WEIGHTS, (ra, dec))
    assert fit["success"], fit["message"]
    x, y = _sky_to_pix(m["geom"], fit["ra_deg"], fit["dec_deg"])
    cov = baselines.crlb_position_cov(
        m["x0"], m["y0"], m["npred"], m["b_true"] * m["template"], SIGMAS_PIX, WEIGHTS
    )
    assert np.hypot(x - m["x0"], y - m["y0"]) < 3 * np.sqrt(np.trace(cov))
    # the fit moved away from the pixel-centre start
    assert np.hypot(x - round(float(x)), y - round(float(y))) > 1e-3
    assert fit["npred"] == pytest.approx(m["npred"], abs=4 * np.sqrt(m["npred"]))
    assert fit["bkg_norm"] == pytest.approx(m["b_true"], abs=0.05)


def test_fit_point_source_failures_are_nan(bright_map):
    m = bright_map
    args = (m["counts"], m["template"], m["geom"], SIGMAS_DEG, WEIGHTS)
    no_start = baselines.fit_point_source(*args, (np.nan, np.nan))
    assert not no_start["success"]
    assert np.all(np.isnan([no_start[k] for k in ("ra_deg", "dec_deg", "npred", "bkg_norm")]))
    off_map = baselines.fit_point_source(*args, (200.0, -40.0))
    assert not off_map["success"] and np.isnan(off_map["ra_deg"])
    batch = baselines.fit_point_source_batch(
        m["counts"][None], m["template"], m["geom"], SIGMAS_DEG, WEIGHTS, [[np.nan, np.nan]], progress=False
    )
    assert batch["success"].tolist() == [False] and np.isnan(batch["npred"][0])


@pytest.fixture(scope="module")
def fit_ensemble():
    """30 Poisson realisations of one source on a 64x64 map, fitted with gammapy."""
    rng = np.random.default_rng(5)
    geom = _geom(64)
    shape = (64, 64)
    x0, y0, npred = 31.3, 32.6, 300.0
    background = np.full(shape, 0.3)
    source = source_npred_map(x0, y0, npred, SIGMAS_PIX, WEIGHTS, shape=shape)
    n_maps = 30
    counts = rng.poisson(background + source, size=(n_maps, *shape))
    start = _pix_to_sky(geom, x0 + 0.8, y0 - 0.6)  # a blind-search-like start, off the truth
    init = np.tile([start.ra.deg, start.dec.deg], (n_maps, 1))
    fits = baselines.fit_point_source_batch(counts, background, geom, SIGMAS_DEG, WEIGHTS, init, progress=False)
    x, y = _sky_to_pix(geom, fits["ra_deg"], fits["dec_deg"])
    cov = baselines.crlb_position_cov(x0, y0, npred, background, SIGMAS_PIX, WEIGHTS)
    return dict(fits=fits, dx=x - x0, dy=y - y0, cov=cov, n_maps=n_maps)


def test_fit_ensemble_unbiased(fit_ensemble):
    e = fit_ensemble
    assert e["fits"]["success"].all()
    # mean offset per axis within 3 standard errors of the bound
    stderr = np.sqrt(np.diag(e["cov"]) / e["n_maps"])
    assert abs(e["dx"].mean()) < 3 * stderr[0]
    assert abs(e["dy"].mean()) < 3 * stderr[1]
    np.testing.assert_allclose(e["fits"]["bkg_norm"], 1.0, atol=0.1)


def test_fit_scatter_respects_crlb(fit_ensemble):
    e = fit_ensemble
    mse = np.mean(e["dx"] ** 2 + e["dy"] ** 2)  # pixel^2
    bound = np.trace(e["cov"])
    # the bound holds (RMS >= 0.8 x CRLB, allowing for 60 degrees of freedom)
    assert mse >= 0.8**2 * bound
    # and the gammapy fit is close to efficient
    assert mse <= 1.5**2 * bound


# ------------------------------------------------------------ Cramér-Rao


def test_crlb_single_gaussian_no_background_is_sigma2_over_n():
    sigma_pix, npred = 4.0, 1000.0
    cov = baselines.crlb_position_cov(31.7, 32.2, npred, np.zeros((64, 64)), [sigma_pix], [1.0])
    assert cov.shape == (2, 2)
    np.testing.assert_allclose(np.diag(cov), sigma_pix**2 / npred, rtol=0.01)
    assert abs(cov[0, 1]) < 1e-6 * cov[0, 0]


def test_crlb_grows_with_background():
    traces = [
        np.trace(baselines.crlb_position_cov(31.7, 32.2, 200.0, np.full((64, 64), level), SIGMAS_PIX, WEIGHTS))
        for level in (0.0, 0.1, 1.0, 10.0)
    ]
    assert np.all(np.diff(traces) > 0)
    assert traces[-1] > 3 * traces[0]
    # a fainter source has a larger bound
    faint = baselines.crlb_position_cov(31.7, 32.2, 50.0, np.full((64, 64), 1.0), SIGMAS_PIX, WEIGHTS)
    assert np.trace(faint) > traces[2]


def test_crlb_radius68_exact_cases():
    s = 0.7
    # circular: Rayleigh quantile
    assert baselines.crlb_radius68(np.eye(2) * s**2) == pytest.approx(s * np.sqrt(-2 * np.log(0.32)), rel=1e-9)
    # one-dimensional (degenerate) error: |N(0, s)| quantile
    assert baselines.crlb_radius68(np.diag([s**2, 0.0])) == pytest.approx(s * norm.ppf(0.84), rel=1e-9)
    # rotated anisotropic covariance against Monte Carlo
    rot = np.array([[np.cos(0.4), -np.sin(0.4)], [np.sin(0.4), np.cos(0.4)]])
    cov = rot @ np.diag([1.0, 0.09]) @ rot.T
    rng = np.random.default_rng(6)
    draws = rng.multivariate_normal([0.0, 0.0], cov, size=400_000)
    assert baselines.crlb_radius68(cov) == pytest.approx(np.quantile(np.hypot(*draws.T), 0.68), rel=0.005)
    stacked = baselines.crlb_radius68(np.stack([np.eye(2), cov]))
    assert stacked.shape == (2,)
    assert stacked[1] == pytest.approx(baselines.crlb_radius68(cov))


def test_crlb_error_samples():
    rng = np.random.default_rng(7)
    covs = np.stack([np.eye(2) * 0.04, np.array([[0.5, 0.2], [0.2, 0.1]])])
    radii = baselines.crlb_error_samples(covs, rng, n_draws=200_000)
    assert radii.shape == (2, 200_000)
    assert np.all(radii >= 0)
    # E|e|^2 = trace(cov); quantiles match the exact radius
    np.testing.assert_allclose(np.mean(radii**2, axis=1), np.trace(covs, axis1=1, axis2=2), rtol=0.01)
    np.testing.assert_allclose(np.quantile(radii, 0.68, axis=1), baselines.crlb_radius68(covs), rtol=0.01)
    assert baselines.crlb_error_samples(covs, rng).shape == (2, 1)


def test_fov_background_norm_excludes_the_source():
    """On a flat template scaled by 1.15 with one bright source, the FoV fit
    recovers the normalisation; the plain ratio of sums is biased high."""
    from skyml.cta.baselines import fov_background_norm

    rng = np.random.default_rng(3)
    template = np.full((100, 100), 2.0)
    yy, xx = np.mgrid[:100, :100]
    source = 3000 * np.exp(-((xx - 40) ** 2 + (yy - 55) ** 2) / (2 * 2.0 ** 2)) / (2 * np.pi * 2.0 ** 2)
    counts = rng.poisson(1.15 * template + source)
    naive = counts.sum() / template.sum()
    norm = fov_background_norm(counts, template, threshold=5.0)
    assert abs(norm - 1.15) < 0.02 < abs(naive - 1.15)
    stack = fov_background_norm(np.stack([counts, counts]), np.stack([template, template]), threshold=5.0)
    assert stack.shape == (2,) and np.all(stack == norm)
    with pytest.raises(ValueError):
        fov_background_norm(counts, template[:50])


@pytest.mark.parametrize("radius", [0, 1, 3, 4, 6])
def test_disk_dilation_equals_scipy_binary_dilation(radius):
    """The row-wise dilation of the FoV exclusion equals scipy's binary dilation by
    the same disk, on sparse and dense masks, with sources at the map borders."""
    from scipy import ndimage

    from skyml.cta.baselines import _dilate_disk

    rng = np.random.default_rng(radius)
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    disk = (xx ** 2 + yy ** 2 <= radius ** 2)[None]
    for fill in (0.0, 0.002, 0.05, 0.5, 1.0):
        mask = rng.random((6, 23, 17)) < fill
        mask[0, 0, 0] = mask[1, -1, -1] = mask[2, 0, -1] = fill > 0
        assert np.array_equal(_dilate_disk(mask, radius), ndimage.binary_dilation(mask, structure=disk))


def test_fov_background_norms_scans_thresholds_like_single_fits():
    from skyml.cta.baselines import fov_background_norm, fov_background_norms

    rng = np.random.default_rng(5)
    template = np.full((3, 60, 60), 1.5)
    yy, xx = np.mgrid[:60, :60]
    source = 800 * np.exp(-((xx - 20) ** 2 + (yy - 33) ** 2) / 8.0) / (8.0 * np.pi)
    counts = rng.poisson(1.1 * template + source)
    scan = fov_background_norms(counts, template, [3.0, 5.0, 8.0])
    assert scan.shape == (3, 3)
    for k, thr in enumerate((3.0, 5.0, 8.0)):
        assert np.array_equal(scan[k], fov_background_norm(counts, template, threshold=thr))


def test_bootstrap_ci_is_reproducible_and_brackets_the_statistic():
    from skyml import metrics

    rng = np.random.default_rng(0)
    est, true = rng.normal(10, 1, 400), np.full(400, 10.0)
    ci = metrics.bootstrap_ci(metrics.relative_error_percentile, est, true, n_resamples=300, seed=1)
    value = metrics.relative_error_percentile(est, true)
    assert ci[0] < value < ci[1] and ci[1] - ci[0] < 0.3 * value
    assert ci == metrics.bootstrap_ci(metrics.relative_error_percentile, est, true, n_resamples=300, seed=1)
    with pytest.raises(ValueError):
        metrics.bootstrap_ci(np.mean, est, true[:10])


def test_unpaired_bootstrap_ci_resamples_each_set_on_its_own():
    from skyml import metrics

    rng = np.random.default_rng(2)
    a, b = rng.normal(3.0, 0.3, 6), rng.normal(2.0, 0.2, 10)  # two independent sets of different sizes

    def ratio(x, y):
        return np.mean(x) / np.mean(y)

    ci = metrics.bootstrap_ci(ratio, a, b, paired=False, n_resamples=500, seed=4)
    assert ci[0] < ratio(a, b) < ci[1]
    assert ci == metrics.bootstrap_ci(ratio, a, b, paired=False, n_resamples=500, seed=4)
    # the interval widens with the spread of either set alone
    wide = metrics.bootstrap_ci(ratio, a, 2.0 + 3.0 * (b - 2.0), paired=False, n_resamples=500, seed=4)
    assert wide[1] - wide[0] > ci[1] - ci[0]
    with pytest.raises(ValueError):
        metrics.bootstrap_ci(ratio, a, b)  # unequal lengths cannot be paired
    with pytest.raises(ValueError):
        metrics.bootstrap_ci(ratio, a, b[:1], paired=False)


def test_vectorised_bootstrap_gives_the_same_interval():
    """The localisation intervals, computed on all resamples at once, equal the
    per-resample computation (the same resamples of the same seed)."""
    from skyml import metrics
    from skyml.cta import evaluation

    rng = np.random.default_rng(4)
    errors = {"net": rng.gamma(2.0, 0.02, 300), "crlb": rng.gamma(2.0, 0.015, 300)}
    out = evaluation.localisation_metrics(errors, "_t", n_boot=200, seed=3)
    r68 = evaluation.r68
    assert out["loc_err68_deg_net_t_ci68"] == metrics.bootstrap_ci(r68, errors["net"], n_resamples=200, seed=3)
    assert out["crlb_ratio_net_t_ci68"] == metrics.bootstrap_ci(
        lambda a, c: r68(a) / r68(c), errors["net"], errors["crlb"], n_resamples=200, seed=3)
    assert out["frac_err_gt_0p1deg_net_t_ci68"] == metrics.bootstrap_ci(
        lambda a: metrics.tail_fraction(a, 0.1), errors["net"], n_resamples=200, seed=3)


# ---------------------------------------------------------------- smoothed centroid
def test_smoothed_centroid_finds_the_source_sub_pixel(bright_map):
    b = bright_map
    x, y = baselines.smoothed_centroid(b["counts"], b["template"], sigma_px=1.5, radius_px=4.0)
    assert np.hypot(x - b["x0"], y - b["y0"]) < 0.5, (x, y)
    xs, ys = baselines.smoothed_centroid(np.stack([b["counts"], b["counts"]]), np.stack([b["template"]] * 2), 1.5, 4.0)
    np.testing.assert_allclose(xs, x)
    np.testing.assert_allclose(ys, y)
    with pytest.raises(ValueError):
        baselines.smoothed_centroid(b["counts"], b["template"][:10])


def test_smoothed_centroid_error_falls_with_flux_below_the_pixel_grid():
    rng = np.random.default_rng(5)
    shape, template = (64, 64), np.full((64, 64), 0.05)
    errors = {}
    for npred in (100.0, 3000.0):
        x0, y0 = 30 + rng.uniform(-1, 1, 8), 33 + rng.uniform(-1, 1, 8)
        counts = np.stack([rng.poisson(template + source_npred_map(a, c, npred, SIGMAS_PIX, WEIGHTS, shape=shape))
                           for a, c in zip(x0, y0)])
        x, y = baselines.smoothed_centroid(counts, np.broadcast_to(template, counts.shape), 1.0, 4.0)
        errors[npred] = np.median(np.hypot(x - x0, y - y0))
    assert errors[3000.0] < 0.5 * errors[100.0] and errors[3000.0] < 0.2, errors


def test_tune_smoothed_centroid_reports_its_grid(bright_map):
    b = bright_map
    counts, template = np.stack([b["counts"]] * 2), np.stack([b["template"]] * 2)
    out = baselines.tune_smoothed_centroid(counts, template, [b["x0"]] * 2, [b["y0"]] * 2,
                                           sigmas_px=(1.0, 2.0, 3.0), radii_px=(2.0, 4.0, 6.0))
    assert len(out["scores"]) == 9 and (out["sigma_px"], out["radius_px"]) in out["scores"]
    assert out["scores"][(out["sigma_px"], out["radius_px"])] == min(out["scores"].values())
    assert isinstance(out["interior"], bool)


def test_smoothed_centroid_refines_given_first_guesses(bright_map):
    b = bright_map
    x, y = baselines.smoothed_centroid(b["counts"], b["template"], 1.5, 4.0, n_iter=8,
                                       start=(b["x0"] + 2.0, b["y0"] - 2.0))
    assert np.hypot(x - b["x0"], y - b["y0"]) < 0.5, (x, y)
    # a first guess far from the source stays on the background: no positive excess to pull it
    far = baselines.smoothed_centroid(b["counts"], b["template"], 1.5, 4.0, n_iter=1, start=(20.0, 180.0))
    assert np.hypot(far[0] - b["x0"], far[1] - b["y0"]) > 50


def test_blind_searches_and_fits_are_cached_by_their_inputs(bright_map, tmp_path, monkeypatch):
    from skyml import paths

    monkeypatch.setattr(paths, "CACHE", tmp_path)
    m = bright_map
    counts = m["counts"][None]
    first = baselines.blind_search_batch(counts, m["template"], m["geom"], progress=False, threshold=8.0)
    init = np.stack([first["ra_deg"], first["dec_deg"]], axis=1)
    fit = baselines.fit_point_source_batch(counts, m["template"], m["geom"], SIGMAS_DEG, WEIGHTS, init,
                                           progress=False)
    assert fit["message"].dtype == object and fit["success"].tolist() == [True]

    def refuse(*args, **kwargs):
        raise AssertionError("computed again although cached")

    monkeypatch.setattr(baselines, "_blind_search_batch", refuse)
    monkeypatch.setattr(baselines, "_fit_point_source_batch", refuse)
    again = baselines.blind_search_batch(counts, m["template"], m["geom"], progress=False, threshold=8.0)
    fit_again = baselines.fit_point_source_batch(counts, m["template"], m["geom"], SIGMAS_DEG, WEIGHTS, init,
                                                 progress=False)
    for key in first:
        assert np.array_equal(again[key], first[key], equal_nan=True)
    for key in fit:
        assert np.array_equal(fit_again[key], fit[key]), key
    # another threshold, other counts or another start: computed, not loaded
    with pytest.raises(AssertionError, match="computed again"):
        baselines.blind_search_batch(counts, m["template"], m["geom"], progress=False, threshold=7.0)
    with pytest.raises(AssertionError, match="computed again"):
        baselines.blind_search_batch(counts + 1, m["template"], m["geom"], progress=False, threshold=8.0)
    with pytest.raises(AssertionError, match="computed again"):
        baselines.fit_point_source_batch(counts, m["template"], m["geom"], SIGMAS_DEG, WEIGHTS, init + 0.01,
                                         progress=False)
    # cached=False computes although the same inputs are cached (a timing must not measure a file read)
    with pytest.raises(AssertionError, match="computed again"):
        baselines.blind_search_batch(counts, m["template"], m["geom"], progress=False, cached=False, threshold=8.0)
    with pytest.raises(AssertionError, match="computed again"):
        baselines.fit_point_source_batch(counts, m["template"], m["geom"], SIGMAS_DEG, WEIGHTS, init,
                                         progress=False, cached=False)



def test_fit_of_a_source_at_the_map_edge_logs_no_gammapy_warning(bright_map, caplog, monkeypatch):
    """gammapy logs a warning on every evaluation while the fit of a source at a map edge steps across the
    trimmed cutout's border; the fit reports what matters (its result or why it failed), so that warning is not
    shown (a notebook cell that writes to stderr fails its check). Other warnings still are."""
    from gammapy.modeling import Fit

    optimize = Fit.optimize
    evaluator_log = logging.getLogger("gammapy.datasets.evaluator")

    def optimize_at_the_edge(self, datasets):  # the warning gammapy logs there, then the real fit
        evaluator_log.warning("Model source is outside the target geom but contributes inside through the psf.")
        evaluator_log.warning("another warning")
        return optimize(self, datasets)

    monkeypatch.setattr(Fit, "optimize", optimize_at_the_edge)
    m = bright_map
    ra, dec, _ = baselines.blind_search(m["counts"], m["template"], m["geom"])
    with caplog.at_level("WARNING"):
        fit = baselines.fit_point_source(m["counts"], m["template"], m["geom"], SIGMAS_DEG, WEIGHTS, (ra, dec))
    assert fit["success"], fit["message"]
    messages = [r.getMessage() for r in caplog.records]
    assert "another warning" in messages
    assert not [t for t in messages if "outside the target geom" in t]
    evaluator_log.warning("Model source is outside the target geom but contributes inside through the psf.")
    assert "outside the target geom" in caplog.records[-1].getMessage()  # the filter ends with the fit
