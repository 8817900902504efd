"""Notebook 05: variability model, yearly cut-outs, classifier inputs, flux pulls, catalogue and CLI."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from skyml import cli
from skyml.fermi import catalogue, classify, cutouts, flux, variability
from skyml.fermi.simulate import FermiSimParams

CP = cutouts.CutoutParams()
P = FermiSimParams()
pytestmark = pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")


# --------------------------------------------------------------------------- variability
def test_yearly_factors_statistics():
    rng = np.random.default_rng(1)
    f = variability.yearly_factors(np.full(20000, 0.5), rng)
    np.testing.assert_allclose(f.mean(axis=1), 1.0, rtol=1e-12)  # the catalogue flux is the 10-year mean
    # std of log factors around the per-source mean: sigma * sqrt((n-1)/n) for white noise
    s = np.log(f).std(axis=1, ddof=1)
    assert np.mean(s**2) == pytest.approx(0.25, rel=0.03)
    assert np.all(variability.yearly_factors(np.zeros(5), rng) == 1.0)
    with pytest.raises(ValueError, match="non-negative"):
        variability.yearly_factors([-0.1], rng)


def test_class_dependent_amplitude_and_steady_pulsars():
    rng = np.random.default_rng(2)
    s_fsrq = variability.draw_sigma(np.full(4000, "fsrq"), rng)
    s_bll = variability.draw_sigma(np.full(4000, "bll"), rng)
    assert np.median(s_fsrq) > 1.3 * np.median(s_bll) > 0
    assert np.all(variability.draw_sigma(["psr", "", "snr"], rng) == 0)
    assert np.all(variability.draw_sigma(["bcu", "rdg"], rng) > 0)  # rdg uses its own or BCU's distribution


def test_variability_index_known_values():
    assert variability.variability_index([10.0] * 10) == 0.0
    # one year at 20, nine at 10: mean 11, chi2 = (9^2 + 9 * 1^2) / 11
    assert variability.variability_index([20.0] + [10.0] * 9) == pytest.approx(90.0 / 11.0)
    rng = np.random.default_rng(3)
    steady = rng.poisson(50.0, size=(5000, 10))
    assert variability.variability_index(steady).mean() == pytest.approx(9.0, rel=0.05)


# --------------------------------------------------------------------------- cut-outs
@pytest.fixture(scope="module")
def sources():
    return cutouts.simulate_cutouts({"AGN": 4, "PSR": 3}, 5, "train", CP)


def test_cutout_shapes_labels_and_determinism(sources):
    assert sources["counts"].shape == (7, 10, 6, 16, 16) and sources["counts"].dtype == np.int32
    assert sources["background"].shape == (7, 6, 16, 16) and np.all(sources["background"] > 0)
    assert list(sources["label"]) == [0] * 4 + [1] * 3
    assert np.all(sources["flux1000"] >= CP.flux_min)
    np.testing.assert_allclose(sources["yearly"].mean(axis=1), 1.0)
    assert np.all(sources["sigma"][4:] == 0) and np.all(sources["yearly"][4:] == 1.0)
    assert np.all(sources["sigma"][:4] > 0)
    # the source sits near the centre (localisation jitter of 0.08 deg = 0.5 px per axis)
    assert np.all(np.abs(sources["x_pix"] - 7.5) < 3) and np.all(np.abs(sources["y_pix"] - 7.5) < 3)
    again = cutouts.simulate_cutouts({"AGN": 4, "PSR": 3}, 5, "train", CP)
    for k in sources:
        np.testing.assert_array_equal(sources[k], again[k])
    other = cutouts.simulate_cutouts({"AGN": 4}, 6, "train", CP)
    assert not np.array_equal(other["counts"], sources["counts"][:4])


def test_split_years_and_crop():
    rng = np.random.default_rng(4)
    c = rng.poisson(20.0, size=(6, 16, 16))
    years = cutouts.split_years(c, rng)
    assert years.shape == (10, 6, 16, 16)
    np.testing.assert_array_equal(years.sum(axis=0), c)
    cube = np.arange(2 * 64 * 64).reshape(2, 64, 64)
    part, x0, y0 = cutouts.crop(cube, 20.2, 30.7, 16)
    assert part.shape == (2, 16, 16) and (x0, y0) == (13, 23)
    assert abs(20.2 - x0 - 7.5) <= 0.5 and abs(30.7 - y0 - 7.5) <= 0.5
    assert cutouts.crop(cube, 3.0, 30.0, 16) is None and cutouts.crop(cube, 30.0, 60.0, 16) is None
    with pytest.raises(ValueError):
        cutouts.simulate_cutouts({"BLL": 2}, 1, "train", CP)
    with pytest.raises(ValueError, match="detector"):
        cutouts.simulate_cutouts({"FAKE": 2}, 1, "train", CP)


# --------------------------------------------------------------------------- classifier inputs
def test_years_sorted_max_first_and_mean_subtracted():
    counts = np.zeros((1, 10, 6, 4, 4), np.int32)
    for y in range(10):
        counts[0, y] = y  # year 9 has the most counts
    ordered = classify.order_years(counts)
    assert list(ordered[0, :, 0, 0, 0]) == list(range(9, -1, -1))
    x = classify.variability_input(counts)
    assert x.shape == (1, 4, 4, 10, 6)
    assert x[0, 0, 0, 0, 0] > 0 > x[0, 0, 0, -1, 0]
    np.testing.assert_allclose(np.sinh(x).mean(axis=3), 0.0, atol=1e-6)  # mean subtracted
    assert classify.spectral_input(counts).shape == (1, 4, 4, 6)
    with pytest.raises(ValueError, match="yearly cut-outs"):
        classify.variability_input(counts[0])


def test_augmentation_balances_and_weights():
    rng = np.random.default_rng(5)
    counts = rng.poisson(3.0, size=(13, 10, 6, 8, 8))
    labels = np.array([0] * 8 + [1] * 2 + [2] * 3)
    aug, lab, src = classify.augment_minority(counts, labels, rng, augment_to=1.0)
    assert np.bincount(lab).tolist() == [8, 8, 8]
    np.testing.assert_array_equal(aug[:13], counts)
    np.testing.assert_array_equal(aug.sum(axis=(1, 2, 3, 4)), counts[src].sum(axis=(1, 2, 3, 4)))
    w = classify.class_weights(labels)
    assert w[1] == pytest.approx(13 / (3 * 2)) and w[0] == pytest.approx(13 / (3 * 8))
    assert sorted({classify.dihedral(counts[0], k).tobytes() for k in range(8)}.__len__() for _ in [0]) == [8]


def test_catalogue_features_see_the_source(sources):
    f = classify.catalogue_features(sources["counts"], sources["background"], CP.binsz_deg)
    assert f.shape == (7, len(classify.FEATURE_NAMES)) and np.all(np.isfinite(f))
    rng = np.random.default_rng(6)
    empty = rng.poisson(np.broadcast_to(sources["background"][:, None] / 10, sources["counts"].shape))
    f0 = classify.catalogue_features(empty, sources["background"], CP.binsz_deg)
    k = classify.FEATURE_NAMES.index("signif_total")
    assert np.median(f[:, k]) > np.median(f0[:, k]) + 1


def test_classification_metrics_and_reliability_known():
    labels = np.array([0, 0, 1, 2])
    proba = np.array([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]])
    m = classify.classification_metrics(labels, proba)
    assert m["accuracy"] == 0.75 and m["balanced_accuracy"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert m["confusion"].tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    r = classify.reliability(labels, proba, n_bins=10)
    assert r["count"].sum() == 4
    assert r["ece"] == pytest.approx((0.1 + 0.7 + 0.2 + 0.6) / 4)


def test_recall_vs_flux_known():
    # bin 0: AGN 1 of 2 right, PSR 1 of 1; bin 1: AGN 1 of 1, no pulsar; the FAKE cut-out (flux 0) is in no bin
    labels = np.array([0, 0, 1, 0, 2])
    proba = np.eye(3)[[0, 1, 1, 0, 2]]
    flux = np.array([1.5e-10, 1.2e-10, 1.9e-10, 5e-10, 0.0])
    r = classify.recall_vs_flux(labels, proba, flux, (1e-10, 2e-10, 1e-9))
    assert r["n"].tolist() == [[2, 1, 0], [1, 0, 0]]
    assert r["recall"][0, :2].tolist() == [0.5, 1.0] and r["recall"][1, 0] == 1.0
    assert r["sources"][0] == pytest.approx(0.75) and np.isnan(r["sources"][1])
    assert classify.recall_vs_flux(labels, proba, flux)["edges"].tolist() == list(classify.RECALL_FLUX_EDGES)


def test_classification_metric_intervals():
    from sklearn.metrics import balanced_accuracy_score

    rng = np.random.default_rng(3)
    labels = rng.choice(3, size=3000, p=[0.6, 0.15, 0.25])
    pred = np.where(rng.random(3000) < np.array([0.9, 0.6, 0.8])[labels], labels, (labels + 1) % 3)
    proba = np.eye(3)[pred]
    # the vectorised balanced accuracy is scikit-learn's on one sample, also with a class absent
    assert classify._balanced_accuracy(labels, pred) == pytest.approx(balanced_accuracy_score(labels, pred))
    two = labels != 1
    with warnings.catch_warnings():  # scikit-learn warns of the predicted class that has no true member
        warnings.simplefilter("ignore", UserWarning)
        expected = balanced_accuracy_score(labels[two], pred[two])
    assert classify._balanced_accuracy(labels[two], pred[two]) == pytest.approx(expected)
    m = classify.classification_metrics(labels, proba, ci=True, seed=4)
    for key in ("accuracy", "balanced_accuracy"):
        lo, hi = m[f"{key}_ci68"]
        assert lo < m[key] < hi and 0.005 < hi - lo < 0.05
    acc_se = np.sqrt(m["accuracy"] * (1 - m["accuracy"]) / len(labels))  # binomial standard error
    assert np.diff(m["accuracy_ci68"])[0] == pytest.approx(2 * acc_se, rel=0.2)
    assert m["balanced_accuracy_ci68"] == classify.classification_metrics(labels, proba, ci=True, seed=4)[
        "balanced_accuracy_ci68"]
    assert "accuracy_ci68" not in classify.classification_metrics(labels, proba)


def test_flux_metric_intervals_and_scatter_ratio():
    rng = np.random.default_rng(8)
    truth = 10 ** rng.uniform(-10, -8, 4000)
    est_a = truth * (1 + rng.normal(0, 0.1, truth.size))
    est_b = truth * (1 + rng.normal(0, 0.2, truth.size))
    m = flux.flux_metrics(est_a, truth, (est_a / truth - 1) / 0.1, ci=True)
    assert m["scatter_ci68"][0] < m["scatter"] < m["scatter_ci68"][1] and m["scatter"] == pytest.approx(0.1, rel=0.05)
    assert m["pull_std_ci68"][0] < m["pull_std"] < m["pull_std_ci68"][1]
    assert m["pull_std_ci68"][0] < 1.0 < m["pull_std_ci68"][1] + 0.02
    ratio, (lo, hi) = flux.scatter_ratio(est_a, est_b, truth)
    assert ratio == pytest.approx(m["scatter"] / flux.flux_metrics(est_b, truth, np.zeros(truth.size))["scatter"])
    assert lo < ratio < hi < 0.6 and ratio == pytest.approx(0.5, rel=0.1)
    est_b[:10] = np.nan  # only the sources with both estimates count
    assert flux.scatter_ratio(est_a, est_b, truth)[0] == pytest.approx(
        flux.flux_metrics(est_a[10:], truth[10:], np.zeros(truth.size - 10))["scatter"]
        / flux.flux_metrics(est_b[10:], truth[10:], np.zeros(truth.size - 10))["scatter"])
    with pytest.raises(ValueError):
        flux.scatter_ratio([1.0, np.nan], [1.0, 2.0], [1.0, 1.0])


# --------------------------------------------------------------------------- flux
def test_pulls_and_coverage_known_inputs():
    p = flux.pulls([1.0, 3.0, 2.0, 5.0], [1.0, 1.0, 0.0, 2.0], [2.0, 2.0, 2.0, 2.0])
    np.testing.assert_allclose(p[[0, 1, 3]], [-1.0, 1.0, 1.5])
    assert np.isnan(p[2])
    # asymmetric errors: the error on the side of the truth (below: first, above: second)
    pa = flux.pulls([1.0, 3.0], [0.5, 4.0], [2.0, 2.0], error_hi=[2.0, 0.1])
    np.testing.assert_allclose(pa, [-0.5, 0.25])
    assert flux.coverage(p, 1.0) == pytest.approx(2 / 3)
    rng = np.random.default_rng(7)
    truth = 10 ** rng.uniform(-10, -8, 20000)
    sigma = 0.1
    est = truth * 10 ** rng.normal(0, sigma, truth.size)
    pull = flux.pulls(np.log10(est), np.full(truth.size, sigma), np.log10(truth))
    m = flux.flux_metrics(est, truth, pull)
    assert abs(m["bias"]) < 0.01 and m["pull_std"] == pytest.approx(1.0, abs=0.02)
    assert m["coverage68"] == pytest.approx(0.683, abs=0.01) and m["coverage95"] == pytest.approx(0.95, abs=0.01)
    # underestimated errors widen the pulls
    assert flux.flux_metrics(est, truth, pull * 2)["pull_std"] == pytest.approx(2.0, abs=0.05)
    with pytest.raises(ValueError):
        flux.log_flux_target([1e-10, 0.0])


def test_gaussian_nll_is_minimal_at_the_truth():
    import keras

    y = keras.ops.convert_to_tensor(np.array([[0.3], [0.5]], np.float32))
    at = float(flux.gaussian_nll(y, keras.ops.convert_to_tensor(np.array([[0.3, 0.2], [0.5, 0.2]], np.float32))))
    off = float(flux.gaussian_nll(y, keras.ops.convert_to_tensor(np.array([[0.5, 0.2], [0.3, 0.2]], np.float32))))
    assert off - at == pytest.approx(0.5 * (0.2 / 0.2) ** 2, rel=1e-5)


def test_detached_nll_fits_the_mean_by_least_squares_and_sigma_by_the_nll():
    import keras

    y = keras.ops.convert_to_tensor(np.array([[0.3], [0.5]], np.float32))
    pred = np.array([[0.4, 0.1], [0.4, 0.1]], np.float32)
    loss = float(flux.detached_gaussian_nll(y, keras.ops.convert_to_tensor(pred)))
    # squared error of mu plus the NLL: at equal residuals 0.1 = sigma, 0.01 + (0.5 + ln 0.1)
    assert loss == pytest.approx(0.01 + 0.5 + np.log(0.1), rel=1e-5)


def test_flux_network_mixes_the_photometric_flux_and_the_dense_estimate(tmp_path):
    import keras

    rng = np.random.default_rng(4)
    bkg = rng.uniform(0.5, 3.0, size=(64, 6, 16, 16)).astype(np.float32)
    counts = rng.poisson(bkg + rng.uniform(0, 20, size=(64, 6, 1, 1)) * flux.disc_mask(16, 2.0)).astype(np.float32)
    x, ph = flux.flux_inputs(counts, bkg)
    weights = np.array([0.0, 0.04, 0.04, 0.03, 0.0, 0.08])
    keras.utils.set_random_seed(0)
    model = flux.build_flux_net((16, 16, 18), 12, filters=4, adapt_data=[x, ph], photometric_weights=weights,
                                photometric_radius_px=5.12)
    normed = model.get_layer("norm_photometry")(ph)
    np.testing.assert_allclose(np.mean(np.asarray(normed), axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(np.std(np.asarray(normed), axis=0), 1.0, rtol=1e-3)
    assert "dropout" not in [layer.name for layer in model.layers]
    # the photometric flux: log10 of the weighted excess in the 0.8 deg disc, floored (weights at zero start at
    # 1e-6 of the largest)
    p = np.asarray(keras.Model(model.inputs, model.get_layer("photometric_log_flux").output).predict([x, ph], verbose=0))
    excess = flux.disc_excess(counts, bkg, 5.12)
    expected = np.log10(np.maximum(excess @ np.maximum(weights, 0.08e-6), flux.PHOTOMETRIC_FLOOR))
    np.testing.assert_allclose(p[:, 0], expected, rtol=1e-4, atol=1e-4)
    # mu lies between the photometric and the dense estimate, as the gate's sigmoid weighs them
    d = np.asarray(keras.Model(model.inputs, model.get_layer("mu_dense").output).predict([x, ph], verbose=0))
    mu = np.asarray(model.predict([x, ph], verbose=0))[:, 0]
    assert np.all(mu >= np.minimum(p, d)[:, 0] - 1e-5) and np.all(mu <= np.maximum(p, d)[:, 0] + 1e-5)
    # the scale of sigma is fixed on validation cut-outs, so that their pulls have unit rms; it survives saving
    y = (mu + rng.normal(0, 0.3, size=len(mu))).astype(np.float32)
    scale = flux.calibrate_sigma(model, [x, ph], y)
    out = np.asarray(model.predict([x, ph], verbose=0))
    assert np.sqrt(np.mean(((y - out[:, 0]) / out[:, 1]) ** 2)) == pytest.approx(1.0, rel=1e-4)
    model.save(tmp_path / "flux.keras")
    again = keras.saving.load_model(tmp_path / "flux.keras", safe_mode=True)
    np.testing.assert_allclose(np.asarray(again.predict([x, ph], verbose=0)), out, rtol=1e-5)
    assert float(again.get_layer("sigma_calibration").scale.numpy()) == pytest.approx(scale)
    with pytest.raises(ValueError, match="non-negative"):
        flux.AperturePhotometricFlux(5.0, 6, [1, 1, 1, 1, 1, -1])


def test_photometric_flux_weights_recover_a_linear_conversion():
    rng = np.random.default_rng(5)
    n, k = 400, np.array([0.0, 25.0, 12.0, 4.0, 1.0, 0.5])  # excess counts per 1e-10 in each energy bin
    f = 1e-10 * 10 ** rng.uniform(0, 2, n)
    bkg = np.full((n, 6, 16, 16), 1.0, np.float32)
    psf = flux.disc_mask(16, 1.0) / flux.disc_mask(16, 1.0).sum()  # all of the source within 1 px of the centre
    counts = rng.poisson(bkg + (f / 1e-10)[:, None, None, None] * k[None, :, None, None] * psf).astype(np.float32)
    w = flux.photometric_flux_weights(counts, bkg, f, 5.0)
    bright = f >= np.quantile(f, 0.8)
    est = flux.disc_excess(counts[bright], bkg[bright], 5.0) @ w
    assert np.all(w >= 0)
    assert np.median(np.abs(est / (f[bright] / 1e-10) - 1)) < 0.03
    with pytest.raises(ValueError, match="positive flux"):
        flux.photometric_flux_weights(counts, bkg, np.r_[f[:-1], 0.0], 5.0)


def test_flux_network_inputs_see_the_background():
    rng = np.random.default_rng(3)
    bkg = np.full((2, 6, 16, 16), 2.0, np.float32)
    counts = rng.poisson(bkg).astype(np.int32)
    counts[1, :, 7:9, 7:9] += 50  # a source in the second cut-out
    x, ph = flux.flux_inputs(counts, bkg)
    assert x.shape == (2, 16, 16, 18) and ph.shape == (2, 12)
    np.testing.assert_allclose(x[..., 6:12], np.log1p(2.0), rtol=1e-6)  # the background channels
    assert np.all(ph[1, :6] > ph[0, :6]) and np.all(ph[1, :6] > np.log10(50))
    np.testing.assert_allclose(ph[1, 6:], ph[0, 6:])  # the background term does not depend on the counts
    with pytest.raises(ValueError, match="shape of the counts"):
        flux.network_input(counts, bkg[:, :3])
    w = flux.flat_log_flux_weights(10 ** np.r_[np.full(90, -9.9), np.full(10, -8.0)])
    assert w.mean() == pytest.approx(1.0) and w[-1] / w[0] == pytest.approx(9.0)


CP_SHIFTED = cutouts.CutoutParams(psf_scale=1.2, exposure_scale=0.8, diffuse_variant=2, density_factor=1.5,
                                  variability_scale=0.7, index_shift=0.2)


def _mock_source_rows(n_per_group, cp=CP):
    sky = cutouts._mock_sky(5, "test", 0, cp)
    rows = [np.flatnonzero((sky["group"] == g) & (sky["flux1000"] >= 1e-10))[:n_per_group] for g in ("agn", "psr")]
    return sky, np.concatenate(rows)


def test_shift_parameters_keep_the_nominal_keys_and_change_the_sky():
    assert not set(cutouts.SHIFT_DEFAULTS) & set(CP.to_dict())  # the nominal sets keep their cache keys
    assert {"psf_scale", "index_shift"} <= set(CP_SHIFTED.to_dict())
    p = CP_SHIFTED.sim_params()
    assert (p.psf_scale, p.exposure_scale, p.diffuse_variant, p.density_factor) == (1.2, 0.8, 2, 1.5)
    nominal, shifted = cutouts._mock_sky(5, "test", 0, CP), cutouts._mock_sky(5, "test", 0, CP_SHIFTED)
    assert len(shifted["glon"]) == pytest.approx(1.5 * len(nominal["glon"]), rel=0.02)
    agn_shifted, agn_nominal = (s["sigma"][s["group"] == "agn"] for s in (shifted, nominal))
    assert np.median(agn_shifted) == pytest.approx(0.7 * np.median(agn_nominal), rel=0.1)
    assert np.all(shifted["sigma"][shifted["group"] == "psr"] == 0)
    cp, dp, fit = cutouts.shifted_params(CP, P, psf_scale=1.2, exposure_scale=0.8, diffuse_variant=2,
                                         density_factor=1.5, variability_scale=0.7, index_shift=0.2)
    assert cp == CP_SHIFTED
    assert (dp.psf_scale, dp.exposure_scale, dp.diffuse_variant, dp.npix) == (1.2, 0.8, 2, P.npix)
    assert fit.psf_scale == 1.0 and fit.exposure_scale == 0.8  # the fit knows the exposure, not the PSF change
    for bad in ({"psf_scale": 0.0}, {"exposure_scale": -1.0}, {"variability_scale": -0.1},
                {"index_shift": float("nan")}):
        with pytest.raises(ValueError, match="must be"):
            cutouts.CutoutParams(**bad)


def test_network_flux_is_corrected_by_a_known_exposure():
    class Constant:
        def predict(self, inputs, batch_size, verbose):
            return np.tile([[0.0, 0.1]], (len(inputs[0]), 1))

    counts, bkg = np.ones((3, 6, 16, 16)), np.ones((3, 6, 16, 16))
    f1, s1 = flux.predict_flux(Constant(), counts, bkg)
    f2, s2 = flux.predict_flux(Constant(), counts, bkg, exposure_scale=0.8)
    np.testing.assert_allclose(f2, f1 / 0.8)
    np.testing.assert_array_equal(s1, s2)
    with pytest.raises(ValueError, match="exposure_scale"):
        flux.predict_flux(Constant(), counts, bkg, exposure_scale=0.0)


@pytest.mark.parametrize("cp", [CP, CP_SHIFTED], ids=["nominal", "shifted"])
def test_source_model_matches_the_simulation(cp):
    sky, rows = _mock_source_rows(2, cp)
    model = flux.SourceModel(cp)
    for r in rows:
        rng = np.random.default_rng(int(r))
        mu, bkg, _, _, x, y = cutouts.simulate_source_cutout(sky, int(r), cp, rng, noise_free=True)
        # the fit's model of a source with the catalogue spectrum gives the simulated source counts
        if sky["spectrum_type"][r] == 2:  # PLEC: the shape does not depend on the pivot
            assert abs(sky["exp_index"][r] - flux.PLEC_EXP_INDEX) < 1e-6
            spectrum, a, b = "plec", sky["index"][r], sky["expfactor"][r]
        else:  # log-parabola moved from the catalogue pivot to 1 GeV: alpha + 2 beta ln(1 GeV / pivot)
            spectrum, b = "logparabola", sky["beta"][r]
            a = sky["index"][r] + 2 * b * np.log(flux.FIT_PIVOT_MEV / sky["pivot_mev"][r])
        src = model.npred(sky["flux1000"][r], spectrum, a, b, x, y)
        np.testing.assert_allclose(src, flux.source_npred(sky["flux1000"][r], spectrum, a, b, x, y, cp))
        # the simulated 10-year counts minus the known background are this source's counts
        np.testing.assert_allclose(mu.sum(axis=0) - bkg, src, rtol=1e-5, atol=1e-6 * src.max())


def test_likelihood_fit_is_unbiased_on_noise_free_cutouts():
    sky, rows = _mock_source_rows(6)
    ratio, ratio_4fgl = [], []
    for i, r in enumerate(rows):
        mu, bkg, *_ = cutouts.simulate_source_cutout(sky, int(r), CP, np.random.default_rng(i), noise_free=True)
        # the forward model: with the curved families always free, the fit recovers the flux
        fit = flux.likelihood_flux(mu.sum(axis=0), bkg, CP, spectra=("logparabola", "plec"))
        assert fit["success"] and fit["ts"] > 0 and np.isfinite(fit["flux_err"]) and fit["flux_err"] > 0
        ratio.append(fit["flux"] / sky["flux1000"][r])
        # the default, 4FGL-like choice (power law unless curvature is significant) costs at most a few per cent
        # (up to about 7 % for a single source: with the LAT's King PSF a 2.5° cut-out holds less of the
        # 0.3-3 GeV photons, so a power law fitted to a curved spectrum has less low-energy lever arm)
        ratio_4fgl.append(flux.likelihood_flux(mu.sum(axis=0), bkg, CP)["flux"] / sky["flux1000"][r])
    bias = np.asarray(ratio) - 1
    assert abs(np.median(bias)) < 0.03 and np.mean(np.abs(bias) < 0.03) >= 0.9, bias
    bias_4fgl = np.asarray(ratio_4fgl) - 1
    assert abs(np.median(bias_4fgl)) < 0.03 and np.all(np.abs(bias_4fgl) < 0.08), bias_4fgl
    with pytest.raises(ValueError, match="background"):
        flux.likelihood_flux(mu.sum(axis=0), -bkg, CP)


@pytest.mark.slow
def test_likelihood_fit_pulls_are_unit_gaussian_on_poisson_cutouts():
    sky, rows = _mock_source_rows(40)
    f_true, f_fit, err, err_lo, err_hi = [], [], [], [], []
    for i, r in enumerate(rows):
        c, bkg, *_ = cutouts.simulate_source_cutout(sky, int(r), CP, np.random.default_rng(1000 + i))
        fit = flux.likelihood_flux(c.sum(axis=0), bkg, CP)
        f_true.append(sky["flux1000"][r]), f_fit.append(fit["flux"]), err.append(fit["flux_err"])
        err_lo.append(fit["flux_err_lo"]), err_hi.append(fit["flux_err_hi"])
    m = flux.flux_metrics(f_fit, f_true, flux.pulls(f_fit, err, f_true))
    assert m["n"] == 80 and abs(m["bias"]) < 0.05
    assert 0.8 < m["pull_std"] < 1.25 and 0.55 < m["coverage68"] < 0.8, m
    m = flux.flux_metrics(f_fit, f_true, flux.pulls(f_fit, err_lo, f_true, err_hi))  # MINOS
    assert 0.8 < m["pull_std"] < 1.25 and 0.55 < m["coverage68"] < 0.8, m


# --------------------------------------------------------------------------- catalogue and CLI
@pytest.fixture(scope="module")
def small_models(tmp_path_factory):
    import keras

    from skyml.cta.models import save_model
    from skyml.fermi.models import build_unet

    folder = tmp_path_factory.mktemp("models")
    keras.utils.set_random_seed(0)
    unet = save_model(build_unet([(64, 64, 4), (32, 32, 1), (16, 16, 1)], filters=2), folder / "fermi_unet.keras",
                      {"task": "fermi-detect", "sim_params": P.to_dict(), "profile": "quick"})
    feats = np.random.default_rng(0).normal(size=(20, len(classify.FEATURE_NAMES)))
    clf = save_model(classify.build_classifier((16, 16, 10, 6), (16, 16, 6), feats, filters=2),
                     folder / "fermi_classifier.keras", {"task": "fermi-catalogue", "role": "classifier"})
    member = flux.build_flux_net((16, 16, 18), 12, filters=2, photometric_weights=np.full(6, 0.03))
    fnet = save_model(flux.build_flux_ensemble([member, member], dihedral=True), folder / "fermi_flux.keras",
                      {"task": "fermi-catalogue", "role": "flux"})
    return unet, clf, fnet


@pytest.fixture(scope="module")
def yearly_cube(tmp_path_factory):
    rng = np.random.default_rng(8)
    counts = rng.poisson(2.0, size=(10, 6, 64, 128))
    return write_cube(tmp_path_factory.mktemp("c") / "yearly.fits", counts)


def write_cube(path, counts):
    return catalogue.write_yearly_cube(path, counts, 120.0, 45.0, P)


def test_yearly_cube_round_trip_and_errors(tmp_path, yearly_cube):
    counts, wcs, description = catalogue.read_yearly_cube(yearly_cube, P)
    assert counts.shape == (10, 6, 64, 128) and "10 years" in description
    from skyml.io import InputError

    with pytest.raises(InputError, match="yearly bins"):
        catalogue.read_yearly_cube(write_cube(tmp_path / "y9.fits", np.zeros((9, 6, 64, 64))), P)
    with pytest.raises(InputError, match="non-negative integers"):
        catalogue.read_yearly_cube(write_cube(tmp_path / "neg.fits", -np.ones((10, 6, 64, 64))), P)
    with pytest.raises(InputError, match="multiples of 64"):
        catalogue.read_yearly_cube(write_cube(tmp_path / "odd.fits", np.zeros((10, 6, 64, 40))), P)


def test_match_dr2_names_a_catalogue_source():
    from skyml.fermi import catalog

    cat = catalog.load_dr2()
    name, sep, idx = catalogue.match_dr2([cat["glon"][10] + 0.05, 0.0], [cat["glat"][10], -89.0], 0.5)
    assert name[0] == cat["name"][10] and sep[0] < 0.06 and idx[0] == 10
    assert name[1] == "" and idx[1] == -1


def run_error(capsys, argv, *fragments):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("skyml fermi-catalogue: error: "), err
    for fragment in fragments:
        assert fragment in err, err


@pytest.mark.parametrize("suffix", [".fits", ".ecsv"])
def test_cli_writes_the_catalogue(tmp_path, yearly_cube, small_models, capsys, suffix):
    from astropy.table import QTable

    unet, clf, fnet = small_models
    out = tmp_path / f"cat{suffix}"
    argv = ["fermi-catalogue", str(yearly_cube), "-o", str(out), "--unet-model", str(unet),
            "--classifier-model", str(clf), "--flux-model", str(fnet), "--threshold", "0.3"]
    assert cli.main(argv) == 0
    assert "sources (" in capsys.readouterr().out
    table = QTable.read(out)
    assert table.colnames[:6] == ["ASID_LON", "ASID_LAT", "RA", "DEC", "DET_PROB", "CLASS"]
    assert {"FLUX", "FLUX_ERR", "DR2_NAME", "P_AGN", "P_PSR", "P_FAKE"} <= set(table.colnames)
    if len(table):
        np.testing.assert_allclose(table["P_AGN"] + table["P_PSR"] + table["P_FAKE"], 1.0, rtol=1e-5)
        assert np.all(table["FLUX"].value > 0) and np.all(table["FLUX_ERR"].value > 0)
        assert set(np.asarray(table["CLASS"]).astype(str)) <= {"AGN", "PSR", "FAKE"}
    run_error(capsys, argv, "output file exists")


def test_cli_errors_leave_no_output(tmp_path, yearly_cube, small_models, capsys, monkeypatch):
    unet, clf, fnet = small_models
    out = tmp_path / "cat.fits"
    models = ["--unet-model", str(unet), "--classifier-model", str(clf), "--flux-model", str(fnet)]
    run_error(capsys, ["fermi-catalogue", str(tmp_path / "none.fits"), "-o", str(out)] + models, "file not found")
    from skyml.fermi.cube import write_counts_cube

    write_counts_cube(tmp_path / "tenyear.fits", np.zeros((6, 64, 64)), 0.0, 0.0, P)
    run_error(capsys, ["fermi-catalogue", str(tmp_path / "tenyear.fits"), "-o", str(out)] + models, "'year'")
    run_error(capsys, ["fermi-catalogue", str(yearly_cube), "-o", str(out), "--threshold", "2"] + models,
              "--threshold")
    # the flux network given as the classifier is refused
    run_error(capsys, ["fermi-catalogue", str(yearly_cube), "-o", str(out), "--unet-model", str(unet),
                       "--classifier-model", str(fnet), "--flux-model", str(fnet)], "classifier")
    from skyml import paths

    monkeypatch.setattr(paths, "MODELS", tmp_path / "models")
    run_error(capsys, ["fermi-catalogue", str(yearly_cube), "-o", str(out)], "model not found", "--only 0")
    assert not out.exists()


# --------------------------------------------------------------------------- domain randomisation of the flux network
def test_randomised_cutouts_join_the_variants_with_their_exposure(tmp_path, monkeypatch):
    monkeypatch.setenv("SKYML_CACHE", str(tmp_path))
    variants = [{"exposure_scale": 0.8}, {"psf_scale": 1.1, "flux_min": 8e-11}]
    n = {"AGN": 2, "PSR": 1}
    joined = cutouts.randomised_cutouts(n, 5, "train", CP, variants)
    assert joined["counts"].shape == (6, 10, 6, 16, 16)
    np.testing.assert_array_equal(joined["exposure_scale"], [0.8] * 3 + [1.0] * 3)
    # the k-th variant is the cached set of seed + 100 k with its parameters
    from dataclasses import replace
    second = cutouts.load_cutouts(n, 205, "train", replace(CP, psf_scale=1.1, flux_min=8e-11))
    np.testing.assert_array_equal(joined["counts"][3:], second["counts"])
    np.testing.assert_array_equal(joined["flux1000"][3:], second["flux1000"])
    assert not np.array_equal(joined["counts"][:3], second["counts"])
    # a nominal set joins them with exposure 1
    nominal = cutouts.load_cutouts(n, 5, "train", CP)
    mixed = cutouts.concatenate_sets(nominal, joined)
    assert set(mixed) == set(joined) and len(mixed["label"]) == 9
    np.testing.assert_array_equal(mixed["exposure_scale"], [1.0] * 3 + [0.8] * 3 + [1.0] * 3)
    np.testing.assert_array_equal(mixed["counts"][:3], nominal["counts"])
    with pytest.raises(ValueError, match="cannot be randomised"):
        cutouts.randomised_cutouts(n, 5, "train", CP, [{"diffuse_variant": 2}])
    with pytest.raises(ValueError, match="FAKE"):
        cutouts.randomised_cutouts({"AGN": 1, "FAKE": 1}, 5, "train", CP, variants)
    with pytest.raises(ValueError, match="share the keys"):
        cutouts.concatenate_sets(nominal, {"label": np.zeros(1)})


def test_finetuned_flux_network_targets_the_flux_at_the_nominal_exposure():
    import keras

    rng = np.random.default_rng(7)
    bkg = rng.uniform(0.5, 3.0, size=(48, 6, 16, 16)).astype(np.float32)
    f = 10 ** rng.uniform(-10, -8.5, size=48)
    counts = rng.poisson(bkg + (f[:, None, None, None] / 1e-10) * flux.disc_mask(16, 2.0)).astype(np.float32)
    exposure = np.where(np.arange(48) % 2, 0.7, 1.0)
    x, ph = flux.flux_inputs(counts, bkg)
    keras.utils.set_random_seed(0)
    base = flux.build_flux_net((16, 16, 18), 12, filters=2, adapt_data=[x, ph], photometric_weights=np.full(6, 0.03))
    before = [w.copy() for w in base.get_weights()]
    out = np.asarray(base.predict([x, ph], verbose=0))
    tuned, history = flux.finetune_flux_net(base, counts, bkg, f, exposure, counts, bkg, f, exposure,
                                            (counts, bkg, f), epochs=1, seed=0, learning_rate=1e-12, verbose=0)
    assert tuned is not base
    for a, b in zip(before, base.get_weights()):
        np.testing.assert_array_equal(a, b)  # the nominal network is left as it was
    # the validation loss is the Gaussian NLL of log10(F x exposure / 1e-10), not of log10(F / 1e-10)
    target = np.log10(f * exposure / 1e-10)

    def nll(y):
        return np.mean(0.5 * ((y - out[:, 0]) / out[:, 1]) ** 2 + np.log(out[:, 1]))

    assert history["val_loss"][0] == pytest.approx(nll(target), rel=1e-3)
    assert history["val_loss"][0] != pytest.approx(nll(np.log10(f / 1e-10)), rel=0.1)
    # sigma is scaled on the calibration cut-outs (here the same, at the nominal exposure)
    tuned_out = np.asarray(tuned.predict([x, ph], verbose=0))
    pull = (np.log10(f / 1e-10) - tuned_out[:, 0]) / tuned_out[:, 1]
    assert np.sqrt(np.mean(pull ** 2)) == pytest.approx(1.0, rel=1e-4)
    with pytest.raises(ValueError, match="exposure_scale"):
        flux.finetune_flux_net(base, counts, bkg, f, np.zeros(48), counts, bkg, f, exposure, (counts, bkg, f),
                               epochs=1, seed=0, verbose=0)


def test_metrics_by_flux_bin_known_values():
    t = np.array([1.5e-10, 1.6e-10, 1.7e-10, 3e-10, 5e-10, 6e-10, 7e-10, 8e-10])
    a = t * np.array([1.1, 1.2, 1.3, 1.0, 0.9, 0.9, 0.9, 0.9])
    table = flux.metrics_by_flux_bin(t, [1e-10, 2e-10, 4e-10, 1e-9], {"net": a, "fit": t})
    assert list(table["n"]) == [3, 4]  # the bin with one source is left out
    assert table["net bias"][0] == pytest.approx(0.2) and table["net bias"][1] == pytest.approx(-0.1)
    assert table["net scatter"][0] == pytest.approx(flux.flux_metrics(a[:3], t[:3], np.ones(3))["scatter"])
    assert np.all(table["fit scatter"] == 0) and np.all(table["fit bias"] == 0)
    with pytest.raises(ValueError, match="increasing"):
        flux.metrics_by_flux_bin(t, [2e-10, 1e-10], {"net": a})


def test_classifier_training_step_passes_its_learning_rate_and_keys_the_cache_by_it(tmp_path, monkeypatch):
    from skyml import paths, training
    from skyml.fermi import characterise

    monkeypatch.setattr(paths, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(paths, "MODELS", tmp_path / "models")
    monkeypatch.setattr(training.results, "require_clean_tree", lambda *a, **k: None)
    rng = np.random.default_rng(3)
    n = 12
    data = {"counts": rng.poisson(0.5, size=(n, 10, 6, 16, 16)).astype(np.float32),
            "background": np.full((n, 6, 16, 16), 0.05, np.float32), "label": np.arange(n) % 3}
    kw = {"epochs": 1, "seed": 0, "filters": 2, "batch_size": 4, "augment_to": 0.0, "profile": "quick"}
    slow, _, _, seconds = characterise.train_classifier(data, data, {"toy": 1}, learning_rate=3e-4, **kw)
    assert seconds is not None
    assert float(slow.optimizer.learning_rate) == pytest.approx(3e-4)
    _, _, _, seconds = characterise.train_classifier(data, data, {"toy": 1}, learning_rate=3e-4, **kw)
    assert seconds is None  # the same rate: the cached model
    fast, _, _, seconds = characterise.train_classifier(data, data, {"toy": 1}, learning_rate=1e-3, **kw)
    assert seconds is not None  # another rate: another training
    assert float(fast.optimizer.learning_rate) == pytest.approx(1e-3)


# --------------------------------------------------------------------------- flux ensemble
def _tiny_flux_net(seed):
    import keras

    keras.utils.set_random_seed(seed)
    net = flux.build_flux_net((16, 16, 18), 12, filters=2, photometric_weights=np.full(6, 0.03))
    # a gate and a sigma that depend on the image, so that a flip/rotation changes the output
    for layer in ("photometric_gate", "sigma_raw", "mu_correction"):
        w = net.get_layer(layer).get_weights()
        net.get_layer(layer).set_weights([np.random.default_rng(seed).normal(0, 0.5, w[0].shape), w[1]])
    return net


def _toy_cutouts(n, seed):
    rng = np.random.default_rng(seed)
    counts = rng.poisson(1.5, size=(n, 6, 16, 16)).astype(float)
    counts[:, :, 5:9, 6:10] += rng.poisson(4.0, size=(n, 6, 4, 4))  # an off-centre excess: not symmetric
    return counts, np.full(counts.shape, 1.2)


@pytest.mark.parametrize("k", range(8))
def test_dihedral_layer_turns_images_as_the_training_augmentation(k):
    from skyml import training

    x = np.random.default_rng(k).normal(size=(2, 5, 7, 3)).astype(np.float32)  # (n, H, W, C), not square
    out = np.asarray(flux.DihedralImages(k)(x))
    expected = np.moveaxis(training.dihedral(np.moveaxis(x, -1, 1), k), 1, -1)
    assert out.shape == expected.shape and np.array_equal(out, expected)
    with pytest.raises(ValueError, match="0…7"):
        flux.DihedralImages(8)


def test_flux_ensemble_is_the_gaussian_mixture_of_its_members_on_every_flip(tmp_path):
    import keras

    from skyml import training

    members = [_tiny_flux_net(1), _tiny_flux_net(2)]
    c, b = _toy_cutouts(6, 0)
    ensemble = flux.build_flux_ensemble(members, dihedral=True)
    out = np.asarray(ensemble.predict(flux.flux_inputs(c, b), verbose=0), float)
    each = np.array([np.asarray(m.predict(flux.flux_inputs(training.dihedral(c, k), training.dihedral(b, k)),
                                          verbose=0), float) for m in members for k in range(8)])
    assert np.ptp(each[..., 0], axis=0).max() > 1e-3  # the members and flips disagree: the test can fail
    np.testing.assert_allclose(out[:, 0], each[..., 0].mean(axis=0), rtol=0, atol=1e-5)
    np.testing.assert_allclose(out[:, 1], np.sqrt((each[..., 1] ** 2).mean(axis=0) + each[..., 0].var(axis=0)),
                               rtol=1e-5)
    ensemble.save(tmp_path / "e.keras")
    loaded = keras.saving.load_model(tmp_path / "e.keras", safe_mode=True)
    np.testing.assert_array_equal(np.asarray(loaded.predict(flux.flux_inputs(c, b), verbose=0)), out)
    # one member without flips is that member
    single = flux.build_flux_ensemble(members[:1], dihedral=False)
    np.testing.assert_allclose(single.predict(flux.flux_inputs(c, b), verbose=0),
                               members[0].predict(flux.flux_inputs(c, b), verbose=0), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="at least one"):
        flux.build_flux_ensemble([])


def test_flux_ensemble_step_calibrates_sigma_and_keys_the_cache_by_its_members(tmp_path, monkeypatch):
    from skyml import paths, training
    from skyml.fermi import characterise

    monkeypatch.setattr(paths, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(paths, "MODELS", tmp_path / "models")
    monkeypatch.setattr(training.results, "require_clean_tree", lambda *a, **k: None)
    c, b = _toy_cutouts(40, 1)
    cal = {"counts": np.repeat(c[:, None], 2, axis=1) / 2, "background": b, "label": np.arange(40) % 3,
           "flux1000": np.random.default_rng(2).uniform(1e-10, 1e-9, 40)}
    members = [_tiny_flux_net(3), _tiny_flux_net(4)]
    metas = [{"task": "fermi-catalogue", "role": "flux", "cache_key": {"member": i}} for i in range(2)]
    model, meta, history, seconds = characterise.flux_ensemble(members, metas, cal, {"toy": 1}, profile="quick")
    assert seconds is not None and history == {} and meta["members"] == 2 and meta["dihedral"] is False
    src = cal["label"] != classify.FAKE_LABEL
    out = np.asarray(model.predict(flux.flux_inputs(cal["counts"][src].sum(axis=1), b[src]), verbose=0), float)
    pull = (flux.log_flux_target(cal["flux1000"][src]) - out[:, 0]) / out[:, 1]
    assert np.sqrt(np.mean(pull ** 2)) == pytest.approx(1.0, rel=1e-4)
    assert (paths.MODELS / "quick" / characterise.FLUX_FILE).is_file()
    assert characterise.flux_ensemble(members, metas, cal, {"toy": 1}, profile="quick")[3] is None  # cached
    other = [{**metas[0]}, {**metas[1], "cache_key": {"member": 5}}]
    assert characterise.flux_ensemble(members, other, cal, {"toy": 1}, profile="quick")[3] is not None
    retrained = [members[0], _tiny_flux_net(9)]  # the same keys, other weights: another average
    assert characterise.flux_ensemble(retrained, metas, cal, {"toy": 1}, profile="quick")[3] is not None
    with pytest.raises(ValueError, match="cache_key"):
        characterise.flux_ensemble(members, [{}, {}], cal, {"toy": 1}, profile="quick")


def test_flux_member_files():
    from skyml.fermi import characterise

    assert characterise.flux_member_file("nominal", 0) == "fermi_flux_nominal.keras"
    assert characterise.flux_member_file("nominal", 2) == "fermi_flux_nominal_2.keras"
    assert characterise.flux_member_file("randomised", 0) == "fermi_flux_randomised_0.keras"
    with pytest.raises(ValueError):
        characterise.flux_member_file("other", 0)


def test_ensemble_validation_table_compares_with_the_first_member():
    from skyml.fermi import characterise

    c, b = _toy_cutouts(30, 5)
    rng = np.random.default_rng(6)
    cal = {"counts": c[:, None], "background": b, "label": np.arange(30) % 3, "flux1000": rng.uniform(1e-10, 1e-9, 30)}
    shifted = {**cal, "exposure_scale": np.full(30, 0.5)}
    table = characterise.ensemble_validation([_tiny_flux_net(7), _tiny_flux_net(8)], cal,
                                             {"nominal": cal, "other": shifted})
    assert len(table) == 8 and list(table["estimate"][:2]) == ["member 0", "member 0"]
    assert np.all(table["scatter / member 0"][:2] == 1.0) and np.all(table["n"] == 20)  # FAKE rows left out
    assert np.all(table["scatter_lo68"] <= table["scatter"]) and np.all(table["scatter"] <= table["scatter_hi68"])
    assert np.ptp(table["scatter"][table["validation set"] == "nominal"]) > 0  # the estimates differ
    # the exposure divides the flux: the ratio to the truth moves, so does the scatter on the "other" set
    first = table[table["estimate"] == "member 0"]
    nominal, other = (first[first["validation set"] == s][0] for s in ("nominal", "other"))
    assert nominal["scatter"] != other["scatter"]
    one = characterise.ensemble_validation([_tiny_flux_net(7)], cal, {"nominal": cal})
    assert list(one["estimate"]) == ["member 0", "member 0, 8 flips"]
