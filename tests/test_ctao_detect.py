"""CTAO detection: LoG and centre-direction decoding, matching and metrics, the TS-map baseline."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
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


def _one_patch(p, sources):
    """A data dict of one patch (as simulate_patches) with the given (x, y, F/sensitivity, kind, size_deg, companion)."""
    x, y, rel, kind, size, comp = (np.array(v, float) for v in zip(*sources))
    sens = simulate.sensitivity_map(p)[np.rint(y).astype(int), np.rint(x).astype(int)]
    flux, index = rel * sens, np.full(len(x), 2.2)
    comps = simulate.npred_components(flux, index, x, y, p)
    mu = np.zeros((simulate.N_BINS, p.npix, p.npix))
    for i in range(len(x)):
        simulate.render_source(x[i], y[i], comps[i], int(kind[i]), size[i] / p.binsz_deg, p, mu)
    return {"x_pix": x, "y_pix": y, "flux_1tev": flux, "sens_flux": sens, "index": index, "kind": kind.astype(int),
            "size_deg": size, "companion": comp.astype(int), "patch": np.zeros(len(x), int), "source_npred": mu[None]}


def test_ideal_detection_beats_the_aperture_of_the_sensitivity_and_loses_on_extended_and_confused_sources():
    p = SurveyParams(npix=96)
    # a point source at the sensitivity: the full template beats the 68 % aperture that defines the
    # sensitivity (TS = 25 there), so its median TS is above 25 and its detection probability above 1/2
    alone = evaluation.ideal_detection(_one_patch(p, [(48, 48, 1.0, 0, 0.0, -1)]), p)
    assert len(alone) == 1 and 25 < alone["ts_asimov"][0] < 60
    assert alone["p_detect"][0] == pytest.approx(stats.norm.cdf(np.sqrt(alone["ts_asimov"][0]) - 5))
    # twice the flux: between twice (no background) and four times (background-dominated) the TS
    bright = evaluation.ideal_detection(_one_patch(p, [(48, 48, 2.0, 0, 0.0, -1)]), p)
    assert 2 < bright["ts_asimov"][0] / alone["ts_asimov"][0] < 4
    # the same flux spread over a 0.3 deg disk: below 5 sigma; a brighter companion's counts are background
    ext = evaluation.ideal_detection(_one_patch(p, [(48, 48, 1.0, 2, 0.3, -1)]), p)
    assert ext["ts_asimov"][0] < 25 and ext["p_detect"][0] < 0.5
    pair = evaluation.ideal_detection(_one_patch(p, [(48, 48, 1.0, 0, 0.0, 1), (50, 48, 20.0, 0, 0.0, 0)]), p)
    assert pair["overlapping"].tolist() == [True, True]
    assert pair["ts_asimov"][0] < alone["ts_asimov"][0]
    # a source below rel_min is not part of the evaluated set
    assert len(evaluation.ideal_detection(_one_patch(p, [(48, 48, 0.5, 0, 0.0, -1)]), p)) == 0
    with pytest.raises(ValueError, match="randomised"):
        evaluation.ideal_detection(_one_patch(p, [(48, 48, 1.0, 0, 0.0, -1)]), simulate.randomised_params(p))


def test_ideal_summary_is_the_mean_detection_probability():
    t = Table({"patch": [0, 0, 1, 1], "kind": [0, 0, 1, 0], "overlapping": [False, True, False, False],
               "p_detect": [1.0, 1.0, 0.5, 0.0]})
    s = evaluation.ideal_summary(t, n_resamples=200)
    assert s["recall"] == 0.625 and s["f1_at_precision_1"] == pytest.approx(1.25 / 1.625)
    assert (s["recall_isolated"], s["recall_overlapping"], s["recall_extended"]) == (0.5, 1.0, 0.5)
    # the patches (recalls 1 and 1/4) are resampled: the interval spans the pooled recall
    assert s["recall_ci68"][0] < 0.625 < s["recall_ci68"][1]
    with pytest.raises(ValueError, match="unknown group"):
        evaluation.group_mask(t, "faint")


def test_recall_vs_flux_averages_matches_or_detection_probabilities():
    t = Table({"rel_flux": [0.5, 1.5, 1.5, 3.0], "kind": [0, 0, 1, 0], "overlapping": [False] * 4,
               "matched": [True, True, False, False], "p_detect": [0.1, 0.9, 0.3, 1.0]})
    r = evaluation.recall_vs_flux(t, (0.3, 1.0, 2.0, 10.0))
    assert r["n_all"].tolist() == [1, 2, 1] and r["recall_all"].tolist() == [1.0, 0.5, 0.0]
    assert r["recall_extended"][1] == 0.0 and np.isnan(r["recall_extended"][0])
    p = evaluation.recall_vs_flux(t, (0.3, 1.0, 2.0, 10.0), column="p_detect")
    assert p["recall_all"].tolist() == pytest.approx([0.1, 0.6, 1.0]) and p["recall_isolated"][1] == pytest.approx(0.9)
