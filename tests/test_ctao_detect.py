"""CTAO detection: LoG and centre-direction decoding, matching and metrics, the TS-map baseline."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from skyml.ctao import detect, evaluation, simulate
from skyml.ctao.simulate import SurveyParams


def test_log_recovers_disk_centres():
    x, y = np.array([20.3, 70.0, 75.0]), np.array([30.6, 60.0, 68.0])
    mask = simulate.disk_mask(x, y, np.full(3, 2.0), (96, 128))
    dx, dy, p = detect.log_positions(mask, threshold=0.5, max_sigma=4.0)
    assert len(dx) == 3
    d2t, t2d, sep = evaluation.match_patch(dx, dy, x, y, 1.0)
    assert np.all(t2d >= 0) and np.all(sep < 0.6)


def test_centre_heatmap_of_perfect_votes_peaks_at_the_centres():
    x, y = np.array([20.3, 50.0, 56.0, 90.0]), np.array([30.6, 40.0, 44.0, 10.0])
    field = simulate.direction_targets(x, y, (64, 128))
    dx, dy, heat = detect.cedirnet_positions(field, threshold=0.2)
    assert len(dx) == 4  # including the close pair 7 px apart: counting from the same output
    d2t, t2d, sep = evaluation.match_patch(dx, dy, x, y, 1.0)
    assert np.all(t2d >= 0) and np.all(sep < 0.8)
    # a field of random directions has no strong centre
    rng = np.random.default_rng(0)
    ang = rng.uniform(0, 2 * np.pi, (64, 128))
    noise = np.stack([np.sin(ang), np.cos(ang), np.full(ang.shape, 0.2)], axis=-1)
    assert detect.centre_heatmap(noise).max() < detect.centre_heatmap(field).max() / 2
    with pytest.raises(ValueError, match="unknown method"):
        detect.detect_all(field[None], "kmeans", 0.5)


def test_matching_is_one_to_one_and_greedy():
    d2t, t2d, sep = evaluation.match_patch([0.0, 0.5], [0.0, 0.0], [0.4, 5.0], [0.0, 0.0], 1.0)
    assert list(t2d) == [1, -1] and list(d2t) == [-1, 0]
    assert sep[0] == pytest.approx(0.1)
    d2t, t2d, sep = evaluation.match_sky([15.0], [0.0], [15.05, 15.0], [0.0, 0.02], [0.1, 0.1])
    assert list(t2d) == [-1, 0] and sep[1] == pytest.approx(0.02, rel=1e-3)


def test_prf_counts_faint_matches_as_neither():
    truth = Table({"patch": [0, 0, 0], "rel_flux": [2.0, 1.5, 0.3], "matched": [True, False, True],
                   "score": [0.9, np.nan, 0.8], "kind": [0, 0, 0], "overlapping": [False] * 3,
                   "sep_deg": [0.01, np.nan, 0.02]})
    dets = Table({"patch": [0, 0, 0], "score": [0.9, 0.8, 0.7], "matched_rel_flux": [2.0, 0.3, np.nan]})
    r = evaluation.prf(truth, dets)
    assert (r["tp"], r["fp"], r["n_true"]) == (1, 1, 2)
    assert r["precision"] == pytest.approx(0.5) and r["recall"] == pytest.approx(0.5)
    assert evaluation.prf(truth, dets, min_score=0.75)["fp"] == 0
    assert list(evaluation.count_error(truth, dets)) == [1.0]
    assert evaluation.sep68_deg(truth) == pytest.approx(0.01)
    curve = evaluation.pr_curve(truth, dets)
    assert evaluation.recall_at_precision(curve, 1.0) == pytest.approx(0.5)


@pytest.mark.slow
def test_tsmap_finds_a_bright_source():
    from skyml.ctao import baselines

    p = SurveyParams(npix=128)
    d = simulate.simulate_patches(1, 4, p, "test")
    counts = simulate.irf_maps(p)["background"].astype(float)
    comps = simulate.npred_components(50 * simulate.MCRAB, 2.2, 60.0, 70.0, p)[0]
    mu = np.zeros_like(counts)
    simulate.render_source(60.0, 70.0, comps, 0, 0.0, p, mu)
    counts = np.random.default_rng(1).poisson(counts + mu)
    x, y, v, _ = baselines.tsmap_detect(counts, p, downsampling_factor=2)
    assert len(x) >= 1
    j = int(np.argmax(v))
    assert np.hypot(x[j] - 60, y[j] - 70) < 2 and v[j] > 10
    del d


def test_tsmap_detections_are_cached_by_patches_parameters_and_arguments(tmp_path, monkeypatch):
    from skyml import paths
    from skyml.ctao import baselines

    monkeypatch.setattr(paths, "CACHE", tmp_path)
    p = SurveyParams(npix=64)
    counts = simulate.simulate_patches(2, 3, p, "test")["counts"]
    first = baselines.tsmap_detect_all(counts, p, downsampling_factor=4, progress=False)

    def refuse(*args, **kwargs):
        raise AssertionError("computed again although cached")

    monkeypatch.setattr(baselines, "_tsmap_detect_all", refuse)
    again = baselines.tsmap_detect_all(counts, p, downsampling_factor=4, progress=False, n_jobs=1)
    assert set(again) == set(first) and all(np.array_equal(again[k], first[k]) for k in first)
    for call in (lambda: baselines.tsmap_detect_all(counts, p, downsampling_factor=2, progress=False),
                 lambda: baselines.tsmap_detect_all(counts[:1], p, downsampling_factor=4, progress=False),
                 lambda: baselines.tsmap_detect_all(counts, SurveyParams(npix=64, binsz_deg=0.021),
                                                    downsampling_factor=4, progress=False)):
        with pytest.raises(AssertionError, match="computed again"):
            call()
