"""Simulated radio fields of notebook 07: the PSF and restoring beam, the
noise on the beam scale, determinism, the truth counts, and the P(D) model."""

from __future__ import annotations

import numpy as np
import pytest

from skyml.radio import baselines, evaluation, models, pipeline
from skyml.radio import counts as cl
from skyml.radio import simulate as sim

P = sim.RadioSimParams()


def test_dirty_beam_normalisation_and_side_lobes():
    psf = sim.dirty_beam(P)
    n = P.psf_npix
    c = n // 2
    assert psf.shape == (n, n)
    assert psf[c, c] == pytest.approx(1.0, abs=1e-12) and psf.max() == pytest.approx(1.0, abs=1e-12)
    assert abs(psf.sum()) < 1e-9  # no zero spacing: the dirty beam integrates to 0
    np.testing.assert_allclose(psf[1:, 1:], psf[1:, 1:][::-1, ::-1], atol=1e-12)  # point-symmetric (real uv grid)
    b = sim.beam_params(P)
    r = np.hypot(*(np.mgrid[:n, :n] - c))
    far = np.abs(psf[r > 3 * b["fwhm_major_px"]])
    assert 0.005 < far.max() < 0.1  # side lobes exist and are at the per-cent level
    assert psf.min() < -0.01
    # the restoring beam: peak 1, fitted FWHM of a few pixels, its Gaussian area
    cb = sim.clean_beam(P)
    assert cb[c, c] == pytest.approx(1.0) and cb.max() == pytest.approx(1.0)
    assert 2.0 < b["fwhm_minor_px"] <= b["fwhm_major_px"] < 5.0
    assert cb.sum() == pytest.approx(b["area_px"], rel=1e-3)
    # the main lobe of the dirty beam matches the restoring beam at the half-power points
    assert np.abs(psf[c - 2:c + 3, c - 2:c + 3] - cb[c - 2:c + 3, c - 2:c + 3]).max() < 0.12


def test_fold_kernel_makes_periodic_convolution():
    k = np.zeros((9, 9))
    k[4, 4], k[4, 5], k[0, 0] = 1.0, 0.5, 0.25
    folded = sim.fold_kernel(k, 6)
    assert folded.sum() == pytest.approx(k.sum())
    img = np.zeros((6, 6))
    img[2, 3] = 2.0
    out = sim.convolve_periodic(img, np.fft.rfft2(folded))
    assert out[2, 3] == pytest.approx(2.0) and out[2, 4] == pytest.approx(1.0)
    assert out[(2 - 4) % 6, (3 - 4) % 6] == pytest.approx(0.5)


def test_noise_rms_on_the_beam():
    noise = sim.correlated_noise(np.random.default_rng(0), P, 512)
    assert noise.std() == pytest.approx(P.noise_rms_jy, rel=0.03)
    # correlated on the beam scale: neighbours correlate strongly, pixels a few beams apart do not
    rho1 = np.corrcoef(noise[:, :-1].ravel(), noise[:, 1:].ravel())[0, 1]
    rho10 = np.corrcoef(noise[:, :-10].ravel(), noise[:, 10:].ravel())[0, 1]
    assert rho1 > 0.5 and abs(rho10) < 0.1


def test_same_seed_same_field_bit_for_bit_and_truth_counts():
    a = sim.simulate_fields(2, 7, P, "train", 128, ("alpha_s0", "broken"))
    b = sim.simulate_fields(2, 7, P, "train", 128, ("alpha_s0", "broken"))
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    c = sim.simulate_fields(2, 8, P, "train", 128, ("alpha_s0", "broken"))
    assert not np.array_equal(a["restored"], c["restored"])
    assert list(a["family"]) == [0, 1]
    assert a["counts"].shape == (2, 4, P.n_bins) and a["skymodel"].shape == (2, 128, 128)
    # truth = sources placed: per field close to the expectation (Poisson), sub-images add up
    total = a["counts"].sum(1)
    assert np.all(np.abs(total - a["expected"]) < 5 * np.sqrt(a["expected"]) + 1)
    # the sky model holds all the flux of the simulated sources between s_min and s_max
    law = cl.CountLaw(P.freq_ghz, P.s_min_jy, P.s_max_jy, cl.FAMILIES[a["family"][0]], a["p1"][0], a["p2"][0])
    mean_flux = np.trapezoid(law.n * law.grid**2, np.log(law.grid)) / law.total_per_sr()
    assert a["skymodel"][0].sum() == pytest.approx(a["n_sources"][0] * mean_flux, rel=0.5)


def test_thinned_fields_have_empty_and_sparse_skies_and_keep_the_count_law_draws():
    p = sim.RadioSimParams()
    n = sim.THIN_PERIOD + 1  # two periods, rounded up: two empty and two sparse fields added
    d = sim.thinning_factors(n, 3, "train")
    np.testing.assert_array_equal(d, sim.thinning_factors(n, 3, "train"))
    assert len(d) == n + 4 and np.all(d[:n] == 1) and np.all(d[n:n + 2] == 0)
    assert np.all((d[n + 2:] >= sim.THIN_RANGE[0]) & (d[n + 2:] <= sim.THIN_RANGE[1]))
    thin = sim.simulate_fields(n, 3, p, "train", 64, thinning=True)
    full = sim.simulate_fields(n, 3, p, "train", 64)
    assert len(thin["restored"]) == n + 4 and len(full["restored"]) == n
    for k in full:  # the fields of full density are those drawn without thinning, bit for bit
        np.testing.assert_array_equal(thin[k][:n], full[k])
    assert np.all(thin["n_sources"][n:n + 2] == 0) and thin["counts"][n:n + 2].sum() == 0
    assert thin["skymodel"][n:n + 2].max() == 0 and np.all(thin["expected"][n:n + 2] == 0)
    assert np.all(thin["n_sources"][n + 2:] > 0)
    np.testing.assert_array_equal(full["density"], np.ones(n))
    with pytest.raises(ValueError, match="density"):
        sim.simulate_field(np.random.default_rng(0), p, 64, "alpha_s0", 0.0, 1e-5, density=-1.0)


def test_null_rms_and_counts_error():
    from skyml.radio import pipeline

    pred = np.arange(24, dtype=float).reshape(4 * 2, 3)  # 4 fields of 2 sub-images, 3 bins
    floor = pipeline.null_rms(pred, np.array([1.0, 0.0, 0.5, 1.0]))
    np.testing.assert_allclose(floor, np.sqrt((pred[2] ** 2 + pred[3] ** 2) / 2))
    assert pipeline.null_rms(pred, np.ones(4)) is None
    np.testing.assert_allclose(pipeline.null_rms(pred, np.ones(4), pred[:2]),
                               np.sqrt((pred[0] ** 2 + pred[1] ** 2) / 2))
    meta = {"val_rel_rms": [0.1, 0.2, 0.3]}
    np.testing.assert_allclose(pipeline.counts_error(np.array([10.0, 10.0, 10.0]), 4, meta), [1.0, 2.0, 3.0])
    meta["val_null_rms"] = [1.0, 0.0, 0.5]
    np.testing.assert_allclose(pipeline.counts_error(np.array([10.0, 10.0, 10.0]), 4, meta),
                               [np.hypot(1.0, 4.0), 2.0, np.hypot(3.0, 2.0)])


def test_single_source_deposit_equals_the_histogram_of_many():
    rng = np.random.default_rng(4)
    base = rng.random((64, 64))
    x, y, s = rng.random(5) * 70 - 3, rng.random(5) * 70 - 3, rng.random(5)
    one_by_one, all_at_once = base.copy(), base.copy()
    for i in range(5):
        sim._deposit(one_by_one, x[i], y[i], s[i])
        sim._deposit(all_at_once, x[i:i + 1], y[i:i + 1], s[i:i + 1])
    assert np.array_equal(one_by_one, all_at_once)
    assert one_by_one.sum() == pytest.approx(base.sum() + s.sum())


def test_truth_counts_come_from_the_sub_image():
    """A field with sources only in one sub-image: counts appear only there."""
    field = sim.simulate_field(np.random.default_rng(3), P, 128, "alpha_s0", 0.0, 1e-5)
    subs = sim.sub_images(field["skymodel"][None], P.sub_npix)
    assert subs.shape == (4, 64, 64)
    # the flux of a sub-image correlates with its counts above 1e-5 Jy
    bright = field["counts"][:, -4:].sum(1)
    assert np.argmax(subs.sum((1, 2))) in np.argsort(bright)[-2:]
    np.testing.assert_array_equal(sim.sub_images(np.arange(16.0).reshape(1, 4, 4), 2)[1], [[2, 3], [6, 7]])


def test_pd_model_matches_analytic_moments():
    pd = baselines.PDModel(P, 256, n_flux=60, grid_size=8192)
    x = pd.intensities()
    # noise only (no sources: alpha very negative with huge s0 suppresses everything)
    p = pd.pmf(-40.0, 1.0, P.noise_rms_jy)
    assert p.sum() == pytest.approx(1.0, abs=1e-6)
    assert np.sqrt(np.sum(x**2 * p)) == pytest.approx(P.noise_rms_jy, rel=0.02)
    # with sources: the mean of P(D) is sum mu S sum(b), the variance adds sum mu S^2 sum(b^2)
    mu = pd.mu(0.0, 1e-5)
    dirty = sim.fold_kernel(sim.dirty_beam(P), 256)
    clean = sim.fold_kernel(sim.clean_beam(P), 256)
    faint = pd.s <= P.clean_nsigma * P.noise_rms_jy
    mean = np.sum(mu[faint] * pd.s[faint]) * dirty.sum() + np.sum(mu[~faint] * pd.s[~faint]) * clean.sum()
    p = pd.pmf(0.0, 1e-5, P.noise_rms_jy)
    assert np.sum(x * p) == pytest.approx(mean, rel=0.03)
    # and P(D) of a simulated field's restored image has the same quantiles
    field = sim.simulate_field(np.random.default_rng(5), P, 256, "alpha_s0", 0.0, 1e-5)
    cdf = np.cumsum(p)
    for q in (0.1, 0.5, 0.9):
        assert x[np.searchsorted(cdf, q)] == pytest.approx(np.quantile(field["restored"], q),
                                                             abs=0.15 * P.noise_rms_jy)


def test_depth_and_residuals():
    edges = cl.bin_edges(1e-7, 1e-4, 3)  # 1e-7, 1e-6, 1e-5, 1e-4
    assert evaluation.depth_below_threshold([0.5, 0.05, 0.02], edges, 1e-4) == pytest.approx(100.0)
    assert evaluation.depth_below_threshold([0.05, 0.05, 0.2], edges, 1e-4) == 0.0
    assert evaluation.depth_below_threshold([0.05, 0.05, 0.05], edges, 1e-4) == pytest.approx(1000.0)
    assert evaluation.depth_below_threshold([0.05, np.nan, 0.05], edges, 1e-4) == pytest.approx(10.0)
    with pytest.raises(ValueError):
        evaluation.depth_below_threshold([0.1, 0.1], edges, 1e-4)
    rel = evaluation.relative_residual([[11.0, 0.0]], [[10.0, 0.0]])
    assert rel[0, 0] == pytest.approx(0.1) and np.isnan(rel[0, 1])
    np.testing.assert_allclose(evaluation.rms_over_fields([[0.1, 0.3], [-0.1, np.nan]]), [0.1, 0.3])
    assert evaluation.per_field(np.ones((8, 3)), 2).tolist() == [[4, 4, 4], [4, 4, 4]]


def test_target_scaler_round_trip():
    counts = np.random.default_rng(0).poisson([[5.0, 500.0, 5e4]] * 200).astype(float)
    s = models.TargetScaler.fit(counts)
    y = s.transform(counts)
    assert np.allclose(y.mean(0), 0, atol=1e-5) and np.allclose(y.std(0), 1, atol=1e-4)
    np.testing.assert_allclose(s.inverse(y), counts + 0.25, rtol=1e-5)


def test_context_histogram_noise_only_in_training_and_saved_with_the_model(tmp_path):
    import keras

    from skyml.cta.models import load_model, save_model

    x = [np.zeros((3, 16, 16, 1), np.float32), np.full((3, models.N_HIST), -3.0, np.float32)]
    for noise in (0.3, 0.0):
        keras.utils.set_random_seed(0)
        model = models.build_cnn(4, filters=2, dense=8, hist_mean=np.full(models.N_HIST, -3.0),
                                 hist_std=np.ones(models.N_HIST), hist_noise=noise)
        assert model.get_layer("hist_noise").stddev == noise
        a, b = (np.asarray(model(x, training=False)) for _ in range(2))
        assert np.array_equal(a, b)
        t = np.asarray(model(x, training=True))
        assert (not np.allclose(a, t)) if noise else np.allclose(a, t)
        path = save_model(model, tmp_path / f"m{noise}.keras", {"hist_noise": noise})
        loaded, meta = load_model(path)
        assert loaded.get_layer("hist_noise").stddev == noise and meta["hist_noise"] == noise
        np.testing.assert_allclose(np.asarray(loaded(x, training=False)), a, rtol=1e-6)


def test_pd_beam_term_keeps_the_beam_integral():
    """The transform of each flux bin carries the whole beam: at small ω,
    h_j(ω) ≈ −iωS_j Σb − ω²S_j² Σb²/2 with Σb = 0 for the dirty beam (no zero
    spacing) and the Gaussian's integral for the restoring beam. Dropping the
    far side lobes (|b| < 1e-3) gave Σb ≈ +0.2 for the dirty beam."""
    pd = baselines.PDModel(P, 256, n_flux=60, grid_size=8192)
    dirty = sim.fold_kernel(sim.dirty_beam(P), 256)
    clean = sim.fold_kernel(sim.clean_beam(P), 256)
    assert abs(dirty.sum()) < 1e-9 and np.sum(dirty[np.abs(dirty) > 1e-3]) > 0.1  # what a floor alone keeps
    w1 = 2 * np.pi / (pd.m * pd.dx)  # the first frequency of the transform
    s_clean = P.clean_nsigma * P.noise_rms_jy
    faint = np.flatnonzero(pd.s <= s_clean)
    for j in (faint[0], faint[len(faint) // 2], faint[-1], faint[-1] + 1):  # ωS_j ≤ 0.01: the expansion holds
        beam = clean if pd.s[j] > s_clean else dirty
        x = w1 * pd.s[j]
        first = -pd.h[j, 1].imag / x
        second = -2.0 * pd.h[j, 1].real / x**2
        assert first == pytest.approx(beam.sum(), abs=1e-3 * np.abs(beam).max())
        assert second == pytest.approx(np.sum(beam**2), rel=0.02)
    for restored, beam in ((False, dirty), (True, clean)):
        total, squares = pd.beam_sums(restored)
        assert total == pytest.approx(beam.sum(), abs=1e-9)
        assert squares == pytest.approx(np.sum(beam**2), rel=1e-3)  # bin means: Σb² to 0.1 %
    # the correlated noise has tens of pixels per independent sample (the side lobes of the dirty beam)
    assert 20 < pd.pixels_per_sample < 100


def test_pd_posterior_recovers_a_simulated_field_inside_the_prior_box():
    pd = baselines.PDModel(P, 256, n_flux=60, grid_size=8192)
    area = 256**2 * P.pixel_sr
    truth = (-0.2, 1.5e-5)
    field = sim.simulate_field(np.random.default_rng(10), P, 256, "alpha_s0", *truth)
    fit = baselines.fit_field(pd, field["restored"])
    assert not fit["at_bound"]
    assert P.alpha_range[0] < fit["alpha"] < P.alpha_range[1] and P.s0_range[0] < fit["s0"] < P.s0_range[1]
    lo, hi = fit["alpha_ci68"]
    assert P.alpha_range[0] < lo < fit["alpha"] < hi < P.alpha_range[1]
    assert fit["weights"].sum() == pytest.approx(1.0)
    expected = cl.counts_in_bins(P.edges_jy, area, P.freq_ghz, "alpha_s0", *truth)
    ci = baselines.counts_interval_from_fit(fit, P, area, level=0.95)
    assert np.all((ci[:, 0] <= expected) & (expected <= ci[:, 1])), (ci / expected[:, None]).round(2)
    mean = baselines.counts_from_fit(fit, P, area)
    assert np.all((ci[:, 0] < mean) & (mean < ci[:, 1]))
    # near the threshold P(D) constrains the counts to ~10 %, far below it the interval is wide
    assert hi - lo > 0.05 and (ci[-1, 1] - ci[-1, 0]) / expected[-1] < 0.3
    # a noise-only image asks for the fewest faint sources the box allows: its posterior sits in that corner
    noise = baselines.fit_field(pd, np.random.default_rng(1).normal(0.0, P.noise_rms_jy, (256, 256)))
    assert noise["map_at_bound"] and noise["alpha"] < P.alpha_range[0] + 0.05
    assert noise["s0"] > 0.8 * P.s0_range[1]


PS = sim.RadioSimParams(sub_npix=32)


def test_shifted_fields_are_deterministic_for_a_seed_and_labelled_in_the_training_bins():
    a = sim.simulate_shifted_fields(2, 5, PS, 64)
    b = sim.simulate_shifted_fields(2, 5, PS, 64)
    assert set(a) == set(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["restored"], sim.simulate_shifted_fields(2, 6, PS, 64)["restored"])
    assert a["counts"].shape == (2, 4, PS.n_bins) and a["restored"].dtype == np.float32
    assert all(cl.FAMILIES[f] in sim.SHIFT_FAMILIES for f in a["family"])
    lo, hi = PS.beta_range  # the power-law breaks of the training prior
    assert np.all((lo <= a["p1"]) & (a["p1"] <= hi)) and np.all((PS.sb_range[0] <= a["p2"]) & (a["p2"] <= PS.sb_range[1]))
    # the same sky as the training instrument's for the same generator state: only the instrument differs
    shifted = sim.simulate_shifted_field(np.random.default_rng(3), PS, 64, "broken", 0.2, 1e-5)
    trained = sim.simulate_field(np.random.default_rng(3), PS, 64, "broken", 0.2, 1e-5)
    np.testing.assert_array_equal(shifted["counts"], trained["counts"])
    assert shifted["n_sources"] == trained["n_sources"] > 0
    assert not np.allclose(shifted["restored"], trained["restored"])


def _autocorrelation_fwhm(image: np.ndarray) -> float:
    """FWHM [px] of a circular Gaussian fitted to the central autocorrelation of a periodic image."""
    from scipy.optimize import curve_fit

    f = np.fft.rfft2(image - image.mean())
    ac = np.fft.fftshift(np.fft.irfft2(np.abs(f) ** 2, s=image.shape))
    c = image.shape[0] // 2
    win = ac[c - 6:c + 7, c - 6:c + 7] / ac[c, c]
    yy, xx = np.mgrid[-6:7, -6:7]
    (sigma,), _ = curve_fit(lambda r2, s: np.exp(-0.5 * r2 / s**2), (xx**2 + yy**2).ravel(), win.ravel(), p0=[2.0])
    return float(abs(sigma) * sim.FWHM_PER_SIGMA)


@pytest.mark.parametrize("beam_scale,noise_scale", [(1.2, 1.2), (1.2, 0.8), (0.8, 1.0)])
def test_shifted_instrument_has_the_intended_beam_noise_and_zero_mean(beam_scale, noise_scale):
    b = sim.beam_params(PS)
    train_fwhm = np.sqrt(b["fwhm_major_px"] * b["fwhm_minor_px"])
    rng = np.random.default_rng(8)
    noise = sim.simulate_shifted_field(rng, PS, 256, "broken", 0.0, 1e-5, beam_scale, noise_scale, density=0.0)
    assert noise["n_sources"] == 0 and noise["counts"].sum() == 0
    img = noise["restored"]
    # noise rms off the training value as intended, on a zero mean
    assert img.std() == pytest.approx(noise_scale * PS.noise_rms_jy, rel=1e-6)
    assert abs(img.mean()) < 1e-9 * PS.noise_rms_jy
    # white noise convolved with a Gaussian of FWHM F has an autocorrelation of FWHM sqrt(2) F
    measured = _autocorrelation_fwhm(img) / np.sqrt(2.0)
    assert measured == pytest.approx(beam_scale * train_fwhm, rel=0.05)
    assert sim.shifted_beam_params(PS, beam_scale)["fwhm_major_px"] == pytest.approx(beam_scale * train_fwhm)
    # a point source of flux S peaks at S Jy/beam (peak-1 beam) on top of the removed mean
    beam = sim.shifted_beam(PS, beam_scale)
    assert beam.max() == pytest.approx(1.0) and beam.sum() == pytest.approx(
        sim.shifted_beam_params(PS, beam_scale)["area_px"], rel=1e-3)
    # with sources (whose sky has a positive mean) the image mean is still removed
    sky = sim.simulate_shifted_field(rng, PS, 128, "broken", 0.3, 2e-5, beam_scale, noise_scale)
    assert sky["n_sources"] > 1000
    assert abs(sky["restored"].mean()) < 1e-9 * PS.noise_rms_jy
    assert pipeline.robust_noise(sky["restored"]) > noise_scale * PS.noise_rms_jy


def test_pd_model_of_another_instrument_and_of_zero_mean_images():
    """P(D) with the shifted instrument's Gaussian beam for every source and
    its noise kernel: zero mean when told the image mean was removed, the
    sources' mean brightness μ S Σb otherwise; the noise correlation of the
    Gaussian beam, not of the dirty beam."""
    ps = PS.replace(noise_rms_jy=1.2 * PS.noise_rms_jy)
    g = sim.shifted_beam(PS)
    kept = baselines.PDModel(ps, 128, n_flux=60, grid_size=4096, kernels=(g, g, g))
    removed = baselines.PDModel(ps, 128, n_flux=60, grid_size=4096, kernels=(g, g, g), zero_mean=True)
    x = kept.intensities()
    sum_b, _ = kept.beam_sums(True)
    expected_mean = float(np.sum(kept.mu(0.0, 1e-5) * kept.s)) * sum_b
    for model, target in ((kept, expected_mean), (removed, 0.0)):
        p = model.pmf(0.0, 1e-5, ps.noise_rms_jy)
        assert float(p @ x / p.sum()) == pytest.approx(target, abs=0.02 * ps.noise_rms_jy)
    assert expected_mean > 0.2 * ps.noise_rms_jy
    assert removed.pixels_per_sample == pytest.approx(baselines.pixels_per_sample(g, 128))
    assert removed.pixels_per_sample != pytest.approx(baselines.PDModel(ps, 128, n_flux=20).pixels_per_sample, rel=0.1)
