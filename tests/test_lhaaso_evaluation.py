"""LHAASO evaluation (notebook 08): LHAI's protocol on hand-made arrays, the
Richardson–Lucy grid that extends until its optimum is inside, and the
shifted test maps."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import restoration

from skyml.lhaaso import baselines, evaluation, psf
from skyml.lhaaso import simulate as sim

P = sim.LHAASOSimParams()


def test_minmax_scales_each_map_on_its_own():
    maps = np.array([[[1.0, 3.0], [5.0, 9.0]], [[-2.0, -2.0], [0.0, 2.0]], [[4.0, 4.0], [4.0, 4.0]]])
    out = evaluation.minmax(maps)
    np.testing.assert_allclose(out[0], [[0.0, 0.25], [0.5, 1.0]])
    np.testing.assert_allclose(out[1], [[0.0, 0.0], [0.5, 1.0]])
    np.testing.assert_array_equal(out[2], 0.0)  # a constant map
    np.testing.assert_allclose(evaluation.minmax(maps[0]), out[0])  # one 2-D map


def _pair(rng, n, mse):
    """Truth and estimate that already span [0, 1] exactly (min-max leaves them
    as they are), the estimate off by ±d on a quarter of the interior pixels
    so that the per-map squared error is ``mse``."""
    truth = rng.uniform(0.35, 0.65, (n, 16, 16))
    truth[:, 0, 0], truth[:, 0, 1] = 0.0, 1.0
    est = truth.copy()
    sel = np.zeros((16, 16), bool)
    sel[4:12:2, 4:12] = True  # 32 of 256 pixels
    d = np.sqrt(mse * 256 / 32)
    est[:, sel] += d * np.where(np.arange(32) % 2, 1.0, -1.0)
    return truth, est


def test_psnr_and_nrmse_of_a_known_squared_error():
    truth, est = _pair(np.random.default_rng(1), 5, 0.01)
    m = evaluation.lhai_metrics(truth, est)
    assert m["psnr"] == pytest.approx(20.0, abs=1e-9)  # 10 log10(1 / 0.01)
    assert m["nrmse"] == pytest.approx(0.1, abs=1e-12)  # RMSE / range 1
    # units do not matter: every map is min-max scaled (affine changes drop out)
    m2 = evaluation.lhai_metrics(3.0 * truth + 7.0, 0.5 * est - 2.0)
    assert m2["psnr"] == pytest.approx(20.0, abs=1e-9) and m2["ssim"] == pytest.approx(m["ssim"])
    assert evaluation.lhai_metrics(truth, truth)["ssim"] == pytest.approx(1.0)
    assert m["ssim"] < 1.0


def test_batches_of_32_pool_the_squared_error():
    rng = np.random.default_rng(2)
    t1, e1 = _pair(rng, 32, 0.01)   # batch 1: MSE 0.01 -> 20 dB
    t2, e2 = _pair(rng, 1, 0.001)   # batch 2 (one map): MSE 0.001 -> 30 dB
    truth, est = np.concatenate([t1, t2]), np.concatenate([e1, e2])
    m = evaluation.lhai_metrics(truth, est)
    assert m["psnr"] == pytest.approx(25.0, abs=1e-9)
    assert m["nrmse"] == pytest.approx((0.1 + np.sqrt(0.001)) / 2, abs=1e-12)
    # the per-map mean would weight the single map 1/33, not 1/2
    per_map = evaluation.lhai_per_map(truth, est)
    assert np.mean(10 * np.log10(1 / per_map["mse"])) == pytest.approx((32 * 20 + 30) / 33, abs=1e-9)
    via = evaluation.lhai_from_per_map(per_map["mse"], per_map["ssim"])
    assert all(via[k] == pytest.approx(m[k], rel=1e-12) for k in m)
    # pooled within a batch: maps of MSE 0.02 and 0.0 give 10 log10(1 / 0.01)
    assert evaluation.lhai_from_per_map([0.02, 0.0])["psnr"] == pytest.approx(20.0)


def test_ssim_uses_the_gaussian_window_of_wang_et_al():
    rng = np.random.default_rng(3)
    a = rng.random((32, 32))
    b = np.clip(a + 0.1 * rng.standard_normal(a.shape), 0, 1)
    from skimage.metrics import structural_similarity

    uniform = structural_similarity(a, b, data_range=1.0)
    gaussian = evaluation.lhai_ssim(a, b)
    assert abs(gaussian - uniform) > 1e-4  # another window than the 7x7 uniform one
    assert gaussian == pytest.approx(structural_similarity(a, b, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                                           use_sample_covariance=False))


def test_edge_mask_and_masked_error():
    m = evaluation.edge_mask((64, 64), 4)
    assert m.sum() == 64**2 - 56**2 and m[0, 30] and m[30, 3] and not m[4, 4]
    truth, est = _pair(np.random.default_rng(4), 2, 0.01)
    band = evaluation.edge_mask((16, 16), 2)
    assert np.all(evaluation.lhai_per_map(truth, est, band)["mse"] == 0)  # errors only inside
    assert np.all(evaluation.lhai_per_map(truth, est, ~band)["mse"] > 0.01)


def test_scan_extends_until_the_optimum_is_inside():
    calls = []

    def method(maps, v):
        calls.append(v)
        return np.full(1, float(v))

    score = {"a": lambda e: -(np.log2(e[0]) - np.log2(1500.0)) ** 2}
    best, scores, interior = baselines.scan_extending(method, None, (5, 10, 20, 40, 80, 160, 320, 640), score,
                                                      max_value=10240)["a"]
    assert best == 1280 and interior and max(scores) == 2560 and calls[-2:] == [1280, 2560]
    best, scores, interior = baselines.scan_extending(method, None, (5, 10, 20), score, max_value=20)["a"]
    assert best == 20 and not interior  # the cap stops the extension: reported, not hidden
    two = {"a": lambda e: -abs(e[0] - 10.0), "b": lambda e: -abs(e[0] - 300.0)}
    out = baselines.scan_extending(method, None, (5, 10, 20, 40, 80), two, max_value=10240)
    assert out["a"][:1] == (10,) and out["b"][0] == 320 and out["a"][2] and out["b"][2]


def test_richardson_lucy_of_a_stack_equals_one_map_at_a_time():
    rng = np.random.default_rng(5)
    maps = rng.poisson(3.0, (3, 32, 32)).astype(float)
    k = psf.kernel(P.sigma1_deg)
    loop = np.stack([restoration.richardson_lucy(m, k, num_iter=7, clip=False) for m in maps])
    np.testing.assert_allclose(baselines.richardson_lucy(maps, P.sigma1_deg, 7), loop, rtol=1e-10, atol=1e-12)


def test_cached_richardson_lucy_is_the_uncached_one_and_is_computed_once(tmp_path, monkeypatch):
    from skyml import paths

    monkeypatch.setattr(paths, "CACHE", tmp_path / "cache")
    maps = np.random.default_rng(6).poisson(3.0, (2, 32, 32)).astype(float)
    direct = baselines.richardson_lucy(maps, P.sigma1_deg, 9, 0.1)
    calls = []
    real = baselines.richardson_lucy
    monkeypatch.setattr(baselines, "richardson_lucy", lambda *a: calls.append(a[2]) or real(*a))
    first = baselines.richardson_lucy_cached(maps, P.sigma1_deg, 9, 0.1)
    again = baselines.richardson_lucy_cached(maps, P.sigma1_deg, 9, 0.1)
    np.testing.assert_array_equal(first, direct)
    np.testing.assert_array_equal(again, direct)
    assert calls == [9]
    baselines.richardson_lucy_cached(maps, P.sigma1_deg, 10, 0.1)  # other iterations
    baselines.richardson_lucy_cached(maps + 1.0, P.sigma1_deg, 9, 0.1)  # other maps
    assert calls == [9, 10, 9]


def test_another_tail_shape_is_another_kernel():
    s = P.sigma1_deg
    np.testing.assert_array_equal(psf.kernel(s), psf.kernel(s, tail_ratio=psf.TAIL_RATIO, weight=psf.tail_weight()))
    wide = psf.kernel(s, tail_ratio=3.0, weight=0.1)
    assert wide.sum() == pytest.approx(1.0) and psf.kernel_r68_deg(wide) > psf.kernel_r68_deg(psf.kernel(s)) + 0.005


def test_shifted_maps_are_reproducible_and_use_the_other_psf():
    a = sim.simulate_shifted(6, 11, P)
    b = sim.simulate_shifted(6, 11, P)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert a["counts"].shape == a["truth_raw"].shape == a["truth"].shape == (6, 64, 64)
    assert set(np.round(a["sigma1_deg"] / P.sigma1_deg, 6)) <= {0.8, 1.2}
    assert np.all((a["truth_raw"].sum((1, 2)) > 499) & (a["truth_raw"].sum((1, 2)) < 4001))
    assert np.all(a["counts"] >= 0) and np.all(a["counts"] == np.round(a["counts"]))
    assert not np.array_equal(a["counts"], sim.simulate_shifted(6, 12, P)["counts"])


def test_observe_uses_the_kernel_it_is_given():
    canvas = np.random.default_rng(6).random((sim.CANVAS, sim.CANVAS))
    delta = np.zeros((5, 5))
    delta[2, 2] = 1.0
    npred, _ = sim.observe(np.random.default_rng(0), canvas, P.sigma1_deg, kernel=delta)
    np.testing.assert_allclose(npred, sim.crop(canvas), atol=1e-12)
    nominal, _ = sim.observe(np.random.default_rng(0), canvas, P.sigma1_deg)
    assert not np.allclose(nominal, sim.crop(canvas), atol=1e-3)


def test_pictures_become_bright_regions_on_a_dark_sky():
    sky = sim.picture_canvas(np.random.default_rng(7), "hubble_deep_field", 1234.0)
    assert sky.shape == (sim.CANVAS, sim.CANVAS) and sky.min() == 0.0
    assert 0.45 < np.mean(sky == 0) < 0.55  # below the cut's median: no emission
    assert sim.crop(sky).sum() == pytest.approx(1234.0)


def test_point_source_table_ratios_over_each_maps_psf_and_the_summary():
    rng = np.random.default_rng(5)
    wide = psf.kernel(1.2 * P.sigma1_deg, P.binsz_deg, tail_ratio=sim.SHIFT_TAIL_RATIO, weight=sim.SHIFT_TAIL_WEIGHT)
    maps = [sim.point_source_map(rng, [(30, 33, 3000.0)], P.sigma1_deg, P),
            sim.point_source_map(rng, [(28, 31, 3000.0)], P.sigma1_deg, P, kernel=wide)]
    psf_px = [psf.fwhm_deg(P.sigma1_deg) / P.binsz_deg,
              psf.fwhm_deg(1.2 * P.sigma1_deg, sim.SHIFT_TAIL_RATIO, sim.SHIFT_TAIL_WEIGHT) / P.binsz_deg]
    truth = np.stack([m["truth"] for m in maps])
    images = {"npred": np.stack([m["npred"] for m in maps]), "target": truth}
    t = evaluation.point_source_table([3000, 3000], [30, 28], [33, 31], truth, images, psf_px)
    assert list(t["method"]) == ["npred", "target", "npred", "target"]
    # the noiseless blurred map's FWHM is its own PSF's, for the nominal and the wider PSF alike
    np.testing.assert_allclose(t["fwhm_ratio"][t["method"] == "npred"], 1.0, atol=0.1)
    # divided by one PSF FWHM for both maps, the wider one's ratio is larger by about the FWHM ratio
    one = evaluation.point_source_table([3000, 3000], [30, 28], [33, 31], truth, images, psf_px[0])
    r = one["fwhm_ratio"][one["method"] == "npred"]
    assert r[1] / r[0] == pytest.approx(psf_px[1] / psf_px[0], rel=0.1)
    np.testing.assert_allclose(t["aperture_flux_err"][t["method"] == "target"], 0.0, atol=1e-12)
    s = evaluation.point_source_summary(t)
    assert list(s["method"]) == ["npred", "target"] and list(s["counts"]) == [3000, 3000]
    assert s["fwhm_ratio_median"][0] == pytest.approx(float(np.median(t["fwhm_ratio"][t["method"] == "npred"])))


def test_randomised_training_maps_never_use_the_shifted_pictures():
    assert not set(sim.TRAIN_IMAGES) & set(sim.SHIFTED_IMAGES)


def test_randomised_maps_are_reproducible_and_draw_psf_and_pictures_in_their_ranges():
    a = sim.simulate_randomised(40, 5, P)
    b = sim.simulate_randomised(40, 5, P)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert a["counts"].shape == a["truth"].shape == (40, 64, 64)
    scale = a["sigma1_deg"] / P.sigma1_deg
    lo, hi = sim.RANDOM_SIGMA_SCALE
    assert np.all((scale >= lo) & (scale <= hi)) and np.ptp(scale) > 0.2
    assert np.all((a["tail_ratio"] >= sim.RANDOM_TAIL_RATIO[0]) & (a["tail_ratio"] <= sim.RANDOM_TAIL_RATIO[1]))
    assert np.all((a["tail_weight"] >= sim.RANDOM_TAIL_WEIGHT[0]) & (a["tail_weight"] <= sim.RANDOM_TAIL_WEIGHT[1]))
    pictures = a["picture"][a["picture"] >= 0]
    assert 10 <= len(pictures) <= 30 and np.all(pictures < len(sim.TRAIN_IMAGES))
    assert np.all(a["counts"] >= 0) and np.all(a["counts"] == np.round(a["counts"]))
    assert not np.array_equal(a["counts"], sim.simulate_randomised(40, 5, P, "val")["counts"])
    none = sim.simulate_randomised(10, 5, P, picture_fraction=0.0, sigma_scale=(1.0, 1.0))
    assert np.all(none["picture"] == -1) and np.allclose(none["sigma1_deg"], P.sigma1_deg)


def test_randomised_picture_maps_keep_most_of_their_emission_in_the_crop():
    p = P.replace(target_sigma_deg=0.0, max_point_sources=0)
    a = sim.simulate_randomised(30, 8, p, picture_fraction=1.0, picture_counts=(1000.0, 1000.0))
    kept = a["picture"] >= 0
    assert kept.sum() >= 25
    # the crop holds the drawn counts (no point sources), not a sliver of a picture scaled up
    np.testing.assert_allclose(a["truth"][kept].sum((1, 2)), 1000.0, rtol=1e-4)
    assert a["npred"].max() < 1000.0


def test_psnr_difference_is_that_of_the_two_psnrs_with_a_paired_interval():
    rng = np.random.default_rng(5)
    truth = rng.random((40, 12, 12))
    # method b errs 1.5 times as much as method a, on the same maps: the difference is nearly fixed,
    # while each method's own PSNR spreads with how hard each map is
    noise = rng.normal(size=truth.shape) * rng.uniform(0.01, 0.2, size=(40, 1, 1))
    a, b = truth + noise, truth + 1.5 * noise
    value, (low, high) = evaluation.lhai_psnr_difference(truth, a, b)
    assert value == pytest.approx(evaluation.lhai_metrics(truth, a)["psnr"] - evaluation.lhai_metrics(truth, b)["psnr"],
                                  abs=1e-9)
    assert low <= value <= high
    mse_a = evaluation.lhai_per_map(truth, a)["mse"]
    from skyml.metrics import bootstrap_ci

    own = bootstrap_ci(lambda m: evaluation.lhai_from_per_map(m)["psnr"], mse_a)
    assert high - low < 0.5 * (own[1] - own[0])
    assert evaluation.lhai_psnr_difference(truth, a, b) == (value, [low, high])  # seeded
    assert evaluation.lhai_psnr_difference(truth, b, a)[0] == pytest.approx(-value)
