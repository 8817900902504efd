"""Matching, k-means choice of k, LoG, the U-Net builder and the TS-map baseline."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from skyml.fermi import detect, evaluation
from skyml.fermi import simulate as S


def disks(centres, shape=(64, 64), radius=2.5, value=0.9):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    prob = np.full(shape, 0.01)
    for x, y in centres:
        prob[(xx - x) ** 2 + (yy - y) ** 2 <= radius**2] = value
    return prob


def test_match_known_answers_and_each_source_used_once():
    # two detections compete for one source: the nearer one wins, the other is unmatched
    d2t, t2d, sep = evaluation.match_sources([10.0, 10.1], [0.0, 0.0], [10.05 + 0.02], [0.0], 0.3)
    assert list(d2t) == [-1, 0] and list(t2d) == [1]
    assert sep[0] == pytest.approx(0.03, abs=1e-6)
    # greedy by separation: d0 is closest to t0 (0.1) though also within reach of t1
    d2t, t2d, _ = evaluation.match_sources([0.0, 0.5], [0.0, 0.0], [0.1, 0.35], [0.0, 0.0], 0.3)
    assert list(d2t) == [0, 1] and list(t2d) == [0, 1]
    # nothing within the radius; empty inputs
    d2t, t2d, sep = evaluation.match_sources([0.0], [0.0], [1.0], [0.0], 0.3)
    assert list(d2t) == [-1] and list(t2d) == [-1] and np.isnan(sep[0])
    assert len(evaluation.match_sources([], [], [1.0], [0.0], 0.3)[0]) == 0


def test_match_across_l0_and_near_the_poles():
    d2t, t2d, sep = evaluation.match_sources([359.9], [10.0], [0.1], [10.0], 0.3)
    assert t2d[0] == 0 and sep[0] == pytest.approx(0.2 * np.cos(np.deg2rad(10.0)), rel=1e-3)
    d2t, t2d, sep = evaluation.match_sources([0.0], [89.9], [180.0], [89.9], 0.3)
    assert t2d[0] == 0 and sep[0] == pytest.approx(0.2, rel=1e-3)


def test_patch_evaluation_with_sources_near_the_edges():
    """Sources on the patch border are matched by detections on the patch;
    detections off the patch are ignored."""
    p = S.FermiSimParams()
    data = {"centre_glon": np.array([0.0]), "centre_glat": np.array([0.0]),
            "counts": np.zeros((1, 6, 64, 64), np.int32), "background": np.ones((1, 6, 64, 64), np.float32)}
    wcs = S.patch_wcs(0.0, 0.0, p)
    src_x, src_y = np.array([0.2, 63.3, 30.0]), np.array([31.0, 62.9, 30.0])
    lon, lat = S.pix_to_world(wcs, src_x, src_y)
    data.update(src_patch=np.zeros(3, int), src_x_pix=src_x, src_y_pix=src_y, src_glon=lon, src_glat=lat,
                src_flux1000=np.array([1e-9, 1e-9, 1e-9]), src_in_patch=S.in_patch(src_x, src_y, 64))
    det = {"patch": np.zeros(3, int), "x_pix": np.array([0.9, 62.6, 70.0]), "y_pix": np.array([31.5, 62.5, 30.0]),
           "probability": np.array([0.9, 0.8, 0.7])}
    truth, dets = evaluation.evaluate_patches(data, det, p, radius_deg=0.3)
    assert list(truth["matched"]) == [True, True, False]
    assert len(dets) == 2 and dets["matched"].all()
    table = evaluation.purity_completeness(truth, Table(dets))
    assert table["n_true"].sum() == 3
    # a patch with sources and no detection on it: its sources are unmatched, not an error
    off = {k: v[2:] for k, v in det.items()}
    truth, dets = evaluation.evaluate_patches(data, off, p, radius_deg=0.3)
    assert not truth["matched"].any() and list(truth["detection"]) == [-1, -1, -1] and len(dets) == 0


def test_autosourceid_bins_are_differential_bins_labelled_by_their_lower_edge():
    from skyml import published

    edges = np.logspace(-12, -7, 20)
    np.testing.assert_allclose(evaluation.ASID_BIN_EDGES, edges[8:13])
    rows = [float(f"{e:.2e}") for e in evaluation.ASID_ROWS]
    assert rows == list(published.autosourceid_bins()["lower_edge"])
    assert evaluation.asid_label(evaluation.ASID_ROWS[1]) == "2.34e-10"
    # a source of 4.0e-10 belongs to the row 2.34e-10 ([2.34, 4.28)e-10); taking the rows as
    # centres would have put it in the row 4.28e-10 (edge at their geometric midpoint 3.17e-10)
    flux = np.array([1.5e-10, 2.4e-10, 4.0e-10, 4.3e-10, 1.0e-9, 2.0e-9])
    truth = Table({"patch": np.zeros(6, int), "glat": np.full(6, 45.0), "flux1000": flux,
                   "matched": np.array([True, True, False, True, True, True])})
    dets = Table({"patch": np.zeros(0, int), "glat": np.zeros(0), "flux_est": np.zeros(0), "matched": np.zeros(0, bool)})
    table = evaluation.purity_completeness(truth, dets, hilat=True)
    assert list(table["n_true"]) == [1, 2, 1, 1]  # 2.0e-9 is above the last bin's upper edge 1.44e-9
    assert table["completeness"][1] == pytest.approx(0.5)
    # the published anchor of the row: |b| > 20 deg TP 931, FP 50, FN 123
    asid = evaluation.AUTOSOURCEID
    assert asid["completeness_hilat"][1] == pytest.approx(931 / (931 + 123), abs=0.005)
    assert asid["purity_hilat"][1] == pytest.approx(931 / (931 + 50), abs=0.005)


def test_purity_over_all_detections_and_false_per_patch():
    """A false detection below the lowest flux bin counts in the purity over all detections
    and in the false detections per patch, not in any bin's purity."""
    truth = Table({"patch": np.array([0, 1]), "glat": np.array([30.0, 40.0]), "flux1000": np.array([3e-10, 3e-10]),
                   "matched": np.array([True, True])})
    dets = Table({"patch": np.array([0, 1, 1, 2]), "glat": np.array([30.0, 40.0, 41.0, 50.0]),
                  "flux_est": np.array([3e-10, 3e-10, 5e-11, 6e-11]), "matched": np.array([True, True, False, False])})
    s = evaluation.scores_with_ci(truth, dets, 4, evaluation.ASID_BIN_EDGES[1], evaluation.ASID_BIN_EDGES[2])
    assert s["purity"][0] == 1.0 and s["completeness"][0] == 1.0
    assert s["purity_all_detections"][0] == pytest.approx(0.5)
    assert s["false_per_patch"][0] == pytest.approx(0.5)  # 2 false detections on 4 patches
    low, high = s["false_per_patch"][1]
    assert low <= 0.5 <= high and low < high


def test_margin_keeps_edge_spill_in_out_of_the_score():
    """A detection at the patch edge of a source just outside the patch is matched to it (no
    false positive); with a margin neither is scored."""
    p = S.FermiSimParams()
    data = {"centre_glon": np.array([0.0]), "centre_glat": np.array([0.0]),
            "counts": np.zeros((1, 6, 64, 64), np.int32), "background": np.ones((1, 6, 64, 64), np.float32)}
    wcs = S.patch_wcs(0.0, 0.0, p)
    src_x, src_y = np.array([-1.5, 30.0]), np.array([20.0, 30.0])
    lon, lat = S.pix_to_world(wcs, src_x, src_y)
    data.update(src_patch=np.zeros(2, int), src_x_pix=src_x, src_y_pix=src_y, src_glon=lon, src_glat=lat,
                src_flux1000=np.array([1e-9, 1e-9]), src_in_patch=S.in_patch(src_x, src_y, 64))
    det = {"patch": np.zeros(2, int), "x_pix": np.array([0.0, 30.2]), "y_pix": np.array([20.0, 30.0]),
           "probability": np.array([0.9, 0.8])}
    truth, dets = evaluation.evaluate_patches(data, det, p, radius_deg=0.3)
    assert len(truth) == 1 and len(dets) == 2 and dets["matched"].all()
    truth, dets = evaluation.evaluate_patches(data, det, p, radius_deg=0.3, margin_deg=0.5)
    assert len(truth) == 1 and len(dets) == 1 and dets["matched"].all()


def test_kmeans_choice_of_k():
    one = disks([(20.0, 20.0)])
    x, y, p = detect.kmeans_positions(one, threshold=0.5)
    assert len(x) == 1 and x[0] == pytest.approx(20.0, abs=0.1) and p[0] == pytest.approx(0.9)
    # two touching blobs 5 px apart: one connected region, but k = 2 wins the penalised score
    from scipy.ndimage import gaussian_filter

    two = gaussian_filter(disks([(20.0, 30.0), (25.0, 30.0)], radius=1.0, value=1.0), 1.5) * 4
    x, y, _ = detect.kmeans_positions(two, threshold=0.5)
    assert len(x) == 2
    np.testing.assert_allclose(np.sort(x), [20.0, 25.0], atol=0.6)
    # a huge penalty merges them; separate regions are always separate sources
    assert len(detect.kmeans_positions(two, threshold=0.5, penalty_px2=1e4)[0]) == 1
    # one large single-peaked region (a bright source) stays one source
    big = gaussian_filter(disks([(30.0, 30.0)], radius=1.0, value=1.0), 3.0) * 20
    assert (big > 0.5).sum() > 60
    assert len(detect.kmeans_positions(big, threshold=0.5)[0]) == 1
    far = disks([(5.0, 5.0), (50.0, 40.0), (10.0, 60.0)])
    assert len(detect.kmeans_positions(far, threshold=0.5)[0]) == 3
    assert len(detect.kmeans_positions(np.zeros((64, 64)), threshold=0.5)[0]) == 0


def test_log_positions():
    prob = disks([(12.0, 40.0), (45.0, 15.0)])
    from scipy.ndimage import gaussian_filter

    x, y, p = detect.log_positions(gaussian_filter(prob, 1.0), threshold=0.3)
    assert len(x) == 2
    assert sorted(zip(np.round(x), np.round(y))) == [(12.0, 40.0), (45.0, 15.0)]


def test_multi_input_unet_shapes():
    from skyml.fermi.models import build_unet

    model = build_unet([(64, 64, 4), (32, 32, 1), (16, 16, 1)], filters=2)
    out = model.predict([np.zeros((1, 64, 64, 4)), np.zeros((1, 32, 32, 1)), np.zeros((1, 16, 16, 1))], verbose=0)
    assert out.shape == (1, 64, 64, 1) and np.all((out >= 0) & (out <= 1))
    with pytest.raises(ValueError):
        build_unet([(64, 64, 4), (24, 24, 1)])


def test_tsmap_baseline_finds_a_bright_source():
    import warnings

    from skyml.fermi import baselines
    from skyml.fermi.simulate import node_counts, render_sources

    p = S.FermiSimParams()
    rng = np.random.default_rng(0)
    bkg = S.background_model(150.0, 50.0, p)
    spec = {"spectrum_type": np.zeros(1, int), "index": np.array([2.2]), "beta": np.zeros(1),
            "expfactor": np.zeros(1), "exp_index": np.ones(1), "pivot_mev": np.array([1000.0]),
            "flux1000": np.array([2e-9])}
    mu = render_sources([40.3], [22.7], node_counts(spec, p.event_types), p)
    counts = rng.poisson(mu + bkg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x, y, sqrt_ts, _ = baselines.tsmap_detect(counts, bkg, 150.0, 50.0, p)
    assert len(x) >= 1 and sqrt_ts[0] > 10
    assert np.hypot(x[0] - 40.3, y[0] - 22.7) <= 1.5


def test_amplitude_fit_recovers_known_amplitudes_and_joint_ts_ranks_them():
    from skyml.fermi import baselines

    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:32, :32]
    templates = np.array([100.0 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 8.0) for cx, cy in ((10, 10), (20, 22))])
    bkg = np.full((32, 32), 5.0)
    counts = rng.poisson(bkg + 2.0 * templates[0] + 0.5 * templates[1])
    a, nll = baselines.fit_amplitudes(counts, bkg, templates)
    np.testing.assert_allclose(a, [2.0, 0.5], rtol=0.1)
    ts = baselines.joint_ts(counts, bkg, templates, a, nll)
    assert ts[0] > ts[1] > 25
    assert baselines.fit_amplitudes(rng.poisson(bkg), bkg, templates[:1])[0][0] < 0.05  # no source: near zero


def test_iterative_tsmap_finds_a_faint_source_in_a_bright_ones_wing():
    """A 4e-10 source 0.6° from a 3e-9 one makes no peak of its own in one TS
    map; the find–fit–add loop, with the bright source in the model, finds it."""
    import warnings

    from skyml.fermi import baselines
    from skyml.fermi.simulate import node_counts, render_sources

    p = S.FermiSimParams()
    bkg = S.background_model(150.0, 50.0, p)
    spec = {"spectrum_type": np.zeros(2, int), "index": np.array([2.2, 2.2]), "beta": np.zeros(2),
            "expfactor": np.zeros(2), "exp_index": np.ones(2), "pivot_mev": np.array([1000.0, 1000.0]),
            "flux1000": np.array([3e-9, 4e-10])}
    mu = render_sources([32.0, 36.0], [32.0, 33.0], node_counts(spec, p.event_types), p)
    counts = np.random.default_rng(0).poisson(mu + bkg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        single = baselines.tsmap_detect(counts, bkg, 150.0, 50.0, p, max_iterations=1)
        x, y, sqrt_ts, _ = baselines.tsmap_detect(counts, bkg, 150.0, 50.0, p)
    assert len(single[0]) == 1
    assert len(x) == 2 and np.hypot(x[1] - 36.0, y[1] - 33.0) <= 1.5 and 5 <= sqrt_ts[1] < sqrt_ts[0]
    with pytest.raises(ValueError, match="max_iterations"):
        baselines.tsmap_detect(counts, bkg, 150.0, 50.0, p, max_iterations=0)


def test_threshold_at_equal_purity_and_the_cut_detections():
    from astropy.table import Table

    from skyml.fermi import evaluation

    # five detections (scores 5..9), the two lowest false; three true sources matched to detections 2, 3, 4
    det_score = np.array([5.0, 6.0, 7.0, 8.0, 9.0])
    dets = Table({"patch": np.zeros(5, int), "glat": np.full(5, 40.0), "score": det_score,
                  "matched": np.array([False, False, True, True, True]), "flux_est": np.full(5, 3e-10)})
    truth = Table({"patch": np.zeros(4, int), "glat": np.full(4, 40.0), "flux1000": np.full(4, 3e-10),
                   "matched": np.array([True, True, True, False]), "detection": np.array([2, 3, 4, -1])})
    assert evaluation.threshold_at_purity(truth, dets, det_score, 0.6) == 5.0
    assert evaluation.threshold_at_purity(truth, dets, det_score, 0.7) == 6.0
    assert evaluation.threshold_at_purity(truth, dets, det_score, 1.0) == 7.0
    t, d = evaluation.above_score(truth, dets, det_score, 8.0)
    assert len(d) == 2 and list(t["matched"]) == [False, True, True, False]
    assert list(truth["matched"]) == [True, True, True, False]  # the input is not modified
    dets["matched"] = False
    assert np.isnan(evaluation.threshold_at_purity(truth, dets, det_score, 0.5))


def test_cached_tsmap_detections_are_reused_and_keyed_by_the_data(tmp_path, monkeypatch):
    from skyml import paths
    from skyml.fermi import baselines

    monkeypatch.setattr(paths, "CACHE", tmp_path / "cache")
    p = S.FermiSimParams()
    bkg = S.background_model(150.0, 50.0, p)
    counts = np.random.default_rng(1).poisson(bkg)
    data = {"counts": counts[None], "background": bkg[None], "centre_glon": np.array([150.0]),
            "centre_glat": np.array([50.0])}
    calls = []
    real = baselines.tsmap_detect_all
    monkeypatch.setattr(baselines, "tsmap_detect_all", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = baselines.tsmap_detect_cached(data, p, kernel_width_deg=1.5, max_iterations=1)
    again = baselines.tsmap_detect_cached(data, p, kernel_width_deg=1.5, max_iterations=1)
    assert len(calls) == 1 and set(first) == {"patch", "x_pix", "y_pix", "sqrt_ts", "seconds", "chunk_wall_s",
                                              "chunk_workers"}
    for k in first:
        np.testing.assert_array_equal(first[k], again[k])
    other = dict(data, counts=data["counts"] + 1)
    baselines.tsmap_detect_cached(other, p, kernel_width_deg=1.5, max_iterations=1)
    baselines.tsmap_detect_cached(data, p, kernel_width_deg=1.5, max_iterations=2)
    assert len(calls) == 3  # other data, other arguments: computed again


def test_cached_tsmap_detections_resume_chunk_by_chunk(tmp_path, monkeypatch):
    """A run stopped after some chunks computes only the rest; the result is
    that of one uncached call over all the patches, bit for bit."""
    from skyml import paths
    from skyml.fermi import baselines

    monkeypatch.setattr(paths, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(baselines, "TSMAP_CHUNK", 2)
    p = S.FermiSimParams()
    centres = [(150.0, 50.0), (30.0, -40.0), (250.0, 70.0)]
    bkg = np.stack([S.background_model(lon, lat, p) for lon, lat in centres])
    counts = np.random.default_rng(2).poisson(bkg)
    counts[1, 2:, 30:33, 30:33] += 12  # one bright source on the second patch
    data = {"counts": counts, "background": bkg, "centre_glon": np.array([c[0] for c in centres]),
            "centre_glat": np.array([c[1] for c in centres])}
    kw = {"kernel_width_deg": 1.5, "max_iterations": 1}
    direct = baselines.tsmap_detect_all(data, p, progress=False, **kw)
    assert len(direct["patch"]) >= 1
    calls = []
    real = baselines.tsmap_detect_all
    monkeypatch.setattr(baselines, "tsmap_detect_all", lambda d, q, index, *a, **k: calls.append(list(index))
                        or real(d, q, index, *a, **k))
    first_chunk = baselines.tsmap_detect_cached(data, p, index=[0, 1], **kw)  # "stopped" after one chunk
    assert calls == [[0, 1]] and set(first_chunk["patch"]) <= {0, 1}
    full = baselines.tsmap_detect_cached(data, p, **kw)
    assert calls == [[0, 1], [2]]  # the first chunk came from the cache
    for k in ("patch", "x_pix", "y_pix", "sqrt_ts"):
        np.testing.assert_array_equal(full[k], direct[k])
    assert len(full["seconds"]) == 3 and len(full["chunk_wall_s"]) == 2 and list(full["chunk_workers"]) == [1, 1]


def test_equal_purity_raises_the_less_pure_detector():
    from astropy.table import Table

    from skyml.fermi import evaluation

    def tables(matched_det, scores, truth_det):
        dets = Table({"patch": np.arange(len(scores)) % 2, "glat": np.full(len(scores), 40.0),
                      "score": np.asarray(scores, float), "matched": np.asarray(matched_det),
                      "flux_est": np.full(len(scores), 3e-10)})
        truth_det = np.asarray(truth_det)
        truth = Table({"patch": np.arange(len(truth_det)) % 2, "glat": np.full(len(truth_det), 40.0),
                       "flux1000": np.full(len(truth_det), 3e-10), "matched": truth_det >= 0,
                       "detection": truth_det})
        return truth, dets

    # A: 4 true + 4 false detections (purity 0.5), the false ones with the lowest scores; B: 3 true + 1 false
    a = tables([False] * 4 + [True] * 4, [0.5, 0.55, 0.6, 0.62, 0.7, 0.8, 0.9, 0.95], [4, 5, 6, 7, -1])
    b = tables([True, True, True, False], [9.0, 8.0, 7.0, 6.0], [0, 1, 2, -1, -1])
    full = {"a": a[1]["score"].data, "b": b[1]["score"].data}
    out = evaluation.equal_purity({"a": a, "b": b}, full, 2, 1e-10, 1e-9, min_true=1)
    assert out["raised"] == "a" and out["level"] == 0.75 and out["threshold"] == 0.62
    assert out["scores"]["a"]["all"]["purity_all_detections"][0] >= 0.75
    assert out["scores"]["a"]["hilat"]["completeness"][0] == 0.8 and out["scores"]["b"]["hilat"]["completeness"][0] == 0.6
    assert out["n_below"] == 0 and out["n_bins"] == 1
    with pytest.raises(ValueError, match="two methods"):
        evaluation.equal_purity({"a": a}, full, 2, 1e-10, 1e-9)


def test_binned_quantiles():
    from skyml.fermi import evaluation

    x = np.array([1.5, 1.6, 1.7, 1.8, 2.5, 2.6, 3.5])
    y = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    q = evaluation.binned_quantiles(x, y, [1, 2, 3, 4], quantiles=(0.0, 0.5, 1.0), min_count=2)
    np.testing.assert_allclose(q[:, 0], [1.0, 2.5, 4.0])
    np.testing.assert_allclose(q[:, 1], [5.0, 5.5, 6.0])
    assert np.all(np.isnan(q[:, 2]))  # one value: fewer than min_count


def test_kmeans_tuning_on_validation_patches_picks_the_setting_that_resolves_close_pairs():
    """Pairs of sources 3 px apart give two peaks: the k-means step resolves
    them only with a small penalty and a peak distance of at most 3 px; the grid
    search picks that setting, and its table holds F1 = 2 c q / (c + q)."""
    from scipy.ndimage import gaussian_filter

    p = S.FermiSimParams()
    n = 3
    data = {"centre_glon": np.array([0.0, 40.0, 80.0]), "centre_glat": np.array([30.0, 40.0, -50.0]),
            "counts": np.zeros((n, 6, 64, 64), np.int32), "background": np.ones((n, 6, 64, 64), np.float32)}
    src_x = np.tile([30.0, 33.0], n)
    src_y = np.full(2 * n, 30.0)
    src_patch = np.repeat(np.arange(n), 2)
    lon, lat = np.empty(2 * n), np.empty(2 * n)
    for i in range(n):
        s = src_patch == i
        lon[s], lat[s] = S.pix_to_world(S.patch_wcs(data["centre_glon"][i], data["centre_glat"][i], p), src_x[s],
                                        src_y[s])
    data.update(src_patch=src_patch, src_x_pix=src_x, src_y_pix=src_y, src_glon=lon, src_glat=lat,
                src_flux1000=np.full(2 * n, 1e-9), src_in_patch=S.in_patch(src_x, src_y, 64))
    pair = gaussian_filter(disks([(30.0, 30.0), (33.0, 30.0)], radius=0.5, value=1.0), 1.2) * 15
    prob = np.repeat(pair[None], n, axis=0)  # one region above 0.5 with two peaks
    tuned = evaluation.tune_kmeans(prob, data, p, 0.5, 0.3, 0.5, penalties=(5.0, 1e4), peak_distances=(1, 4))
    scores = tuned["scores"]
    assert len(scores) == 4 and list(scores["n_sources"]) == [2 * n] * 4
    assert (tuned["penalty_px2"], tuned["min_peak_distance_px"]) == (5.0, 1)
    best = scores[0]
    assert best["completeness"] == 1.0 and best["purity"] == 1.0 and best["n_detections"] == 2 * n
    c, q = np.asarray(scores["completeness"]), np.asarray(scores["purity"])
    np.testing.assert_allclose(scores["f1"], 2 * c * q / (c + q))
    assert np.all(c[1:] == 0.5) and np.all(scores["f1"][1:] < best["f1"])  # merged: one detection of two sources
    assert not tuned["interior"]  # the chosen penalty is the grid's smallest
