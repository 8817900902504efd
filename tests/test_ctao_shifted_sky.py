"""CTAO survey: the shifted test sky, the domain-randomised training sky, the
local-background input, the fitted background of the TS map, and the
per-patch intervals and sensitivity ratio of notebook 06."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from astropy.table import Table

from skyml.ctao import baselines, evaluation, simulate
from skyml.ctao.simulate import SHIFT_FIELDS, SurveyParams

P = SurveyParams(npix=128)  # a 2.56° patch on the same grid spacing: fast


def test_defaults_keep_the_nominal_cache_keys_and_arrays():
    d = SurveyParams().to_dict()
    assert not set(SHIFT_FIELDS) & set(d)  # the nominal survey's key holds no new field
    assert SurveyParams.from_dict(d) == SurveyParams()
    shifted = simulate.shifted_params(P)
    assert SurveyParams.from_dict(shifted.to_dict()) == shifted
    assert shifted.nominal() == dataclasses.replace(P, index_mean=2.5, ext_fraction=1 / 3, ext_max_deg=0.2)
    assert shifted.instrument() == P.instrument() and simulate.irf_maps(shifted) is simulate.irf_maps(P)
    # fields set to their defaults explicitly give the nominal arrays
    explicit = dataclasses.replace(P, psf_scale=1.0, bkg_scale=1.0, diffuse_mcrab_deg2=0.0, ext_gauss_fraction=0.5)
    a, b = simulate.simulate_patches(1, 3, P, "train"), simulate.simulate_patches(1, 3, explicit, "train")
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize("make", [simulate.shifted_params, simulate.randomised_params])
def test_shifted_and_randomised_skies_are_deterministic(make):
    p = make(P)
    a = simulate.simulate_patches(2, 7, p, "shifted")
    b = simulate.simulate_patches(2, 7, p, "shifted")
    assert set(a) == set(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    c = simulate.simulate_patches(2, 8, p, "shifted")
    assert not np.array_equal(a["counts"], c["counts"])


def test_shifted_sky_has_diffuse_emission_wider_psf_and_more_background():
    q = simulate.shifted_params(P)
    diffuse = simulate.diffuse_npred(q)
    assert np.all(simulate.diffuse_npred(P) == 0)
    assert diffuse.min() > 0
    centre_row, edge_row = diffuse[:, 64].mean(axis=1), diffuse[:, 0].mean(axis=1)
    assert np.all(centre_row > 2 * edge_row)  # concentrated towards b = 0
    irf_bkg = simulate.irf_maps(P)["background"].astype(float)
    np.testing.assert_allclose(simulate.background_npred(q), 1.8 * irf_bkg + diffuse, rtol=1e-12)
    np.testing.assert_array_equal(simulate.background_npred(P), irf_bkg)
    np.testing.assert_allclose(simulate.bin_psf_sigma_deg(q), 1.2 * simulate.bin_psf_sigma_deg(P))
    # the sensitivity of the shifted sky (labels) is worse than the nominal one
    assert np.all(simulate.sensitivity_map(q) > simulate.sensitivity_map(P))


def test_shifted_population_has_a_third_extended_gaussians_and_steeper_spectra():
    q = simulate.shifted_params()
    rng = np.random.default_rng(0)
    draws = [simulate.draw_sources(rng, q) for _ in range(150)]
    kind = np.concatenate([d["kind"] for d in draws])
    size = np.concatenate([d["size_deg"] for d in draws])
    index = np.concatenate([d["index"] for d in draws])
    assert abs(np.mean(kind > 0) - 1 / 3) < 0.03
    assert set(np.unique(kind)) == {0, 1}  # extended sources are Gaussians only
    assert size[kind > 0].min() >= 0.05 and size[kind > 0].max() <= 0.2
    assert abs(index.mean() - 2.5) < 0.03


def test_psf_tail_moves_counts_outwards_and_keeps_the_total():
    comps = simulate.npred_components(1e-11, 2.2, 64.0, 64.0, P)[0]
    core, tail = np.zeros((3, 128, 128)), np.zeros((3, 128, 128))
    simulate.render_source(64.0, 64.0, comps, 0, 0.0, P, core)
    simulate.render_source(64.0, 64.0, comps, 0, 0.0, dataclasses.replace(P, psf_tail_fraction=0.15), tail)
    np.testing.assert_allclose(tail.sum(axis=(1, 2)), core.sum(axis=(1, 2)), rtol=1e-3)
    yy, xx = np.mgrid[0:128, 0:128]
    far = np.hypot(xx - 64, yy - 64) > 8
    assert tail[0][far].sum() > 1.1 * core[0][far].sum()


def test_randomised_patches_draw_their_own_sky_within_the_ranges():
    r = simulate.randomised_params(P)
    data = simulate.simulate_patches(4, 11, r, "train")
    for name, (lo, hi) in (("bkg_scale", r.rand_bkg_scale), ("psf_scale", r.rand_psf_scale),
                           ("diffuse_mcrab_deg2", r.rand_diffuse_mcrab_deg2), ("index_mean", r.rand_index_mean),
                           ("ext_fraction", r.rand_ext_fraction)):
        v = data[f"patch_{name}"]
        assert np.all((v >= lo) & (v <= hi)) and len(np.unique(v)) == 4, name
    # the lowest-energy counts follow the drawn background
    level = data["counts"][:, 0].mean(axis=(1, 2))
    assert np.corrcoef(level, data["patch_bkg_scale"])[0, 1] > 0.95


def test_local_background_follows_the_level_and_ignores_a_source():
    c = np.full((1, 3, 128, 128), 4.0)
    c[0, 0, 60:68, 60:68] = 400.0  # a bright source in one block
    b = simulate.local_background(c)
    assert b.shape == c.shape and b.dtype == np.float32
    np.testing.assert_allclose(b[0, 0], 4.0, rtol=1e-6)
    x1 = simulate.network_input(c, P, "log", "local")
    x2 = simulate.network_input(2 * c, P, "log", "local")
    np.testing.assert_allclose(x1, x2, rtol=1e-6)  # the same input for twice the background
    m1, m2 = simulate.network_input(c, P, "log"), simulate.network_input(2 * c, P, "log")
    assert np.all(m2 > m1)  # the mean normalisation is not
    # a sparse bin: the estimate stays positive
    sparse = np.zeros((1, 3, 64, 64))
    assert simulate.local_background(sparse).min() > 0
    with pytest.raises(ValueError):
        simulate.network_input(c, P, "log", "ring")


def test_fitted_background_recovers_the_normalisation():
    template = simulate.irf_maps(P)["background"].astype(float)
    rng = np.random.default_rng(4)
    mu = 1.5 * template
    mu[:, 60:70, 60:70] += 50.0  # a bright source, excluded by the mask
    counts = rng.poisson(mu)
    fitted = baselines.fitted_background(counts, P)
    norm = fitted.sum(axis=(1, 2)) / template.sum(axis=(1, 2))
    assert abs(norm[0] - 1.5) < 0.02 and abs(norm[1] - 1.5) < 0.1


def _tables():
    truth = Table({"patch": [0, 0, 1, 1, 2], "rel_flux": [2.0, 0.5, 3.0, 1.5, 4.0],
                   "matched": [True, True, False, True, True]})
    dets = Table({"patch": [0, 0, 1, 1, 2, 2], "score": [0.9, 0.8, 0.7, 0.3, 0.95, 0.2],
                  "matched_rel_flux": [2.0, 0.5, 1.5, np.nan, 4.0, np.nan]})
    return truth, dets


def test_per_patch_counts_and_intervals():
    truth, dets = _tables()
    pp = evaluation.per_patch_counts(truth, dets)
    np.testing.assert_array_equal(pp["tp"], [1, 1, 1])
    np.testing.assert_array_equal(pp["n_true"], [1, 2, 1])
    np.testing.assert_array_equal(pp["fp"], [0, 1, 1])
    r = evaluation.prf(truth, dets)
    f1 = evaluation.STATISTICS["f1"][0](pp["tp"], pp["fp"], pp["n_true"])
    assert f1 == pytest.approx(r["f1"])
    lo, hi = evaluation.interval(pp, "f1", n_resamples=200)
    assert lo <= f1 <= hi and lo < hi
    assert evaluation.interval(pp, "f1", n_resamples=200) == [lo, hi]  # same seed, same interval
    assert evaluation.interval({"fp": np.zeros(3)}, "false_per_field", n_resamples=50) == [0.0, 0.0]


def test_paired_difference_interval():
    """Two detectors on the same patches: the interval of their F1 difference resamples the patches for both, so a
    detector against itself gives exactly zero and one that differs on every patch gives an interval around the
    difference, narrower than the two separate intervals side by side; other patches are refused."""
    rng = np.random.default_rng(3)
    n = 40
    a = {"patch": np.arange(n), "n_true": rng.integers(5, 15, n).astype(float)}
    a["tp"] = np.floor(0.8 * a["n_true"]) - rng.integers(0, 2, n)
    a["fp"] = rng.integers(0, 3, n).astype(float)
    b = {"patch": np.arange(n), "n_true": a["n_true"], "tp": a["tp"] - 1.0, "fp": a["fp"] + 1.0}
    f1 = evaluation.STATISTICS["f1"][0]
    diff = f1(a["tp"], a["fp"], a["n_true"]) - f1(b["tp"], b["fp"], b["n_true"])
    assert evaluation.difference_interval(a, a, "f1", n_resamples=200) == [0.0, 0.0]
    lo, hi = evaluation.difference_interval(a, b, "f1", n_resamples=500)
    assert 0 < lo <= diff <= hi
    (alo, ahi), (blo, bhi) = (evaluation.interval(x, "f1", n_resamples=500) for x in (a, b))
    assert hi - lo < (ahi - alo) + (bhi - blo)
    assert evaluation.difference_interval(a, b, "f1", n_resamples=500) == [lo, hi]  # same seed, same interval
    with pytest.raises(ValueError, match="same patches"):
        evaluation.difference_interval(a, {**b, "patch": np.arange(1, n + 1)}, "f1")


def test_threshold_at_false_rate():
    _, dets = _tables()  # false detections score 0.3 and 0.2 over 3 patches
    assert evaluation.threshold_at_false_rate(dets, 3, 0.0) > 0.3
    t = evaluation.threshold_at_false_rate(dets, 3, 1 / 3)
    assert 0.2 < t <= 0.3
    assert evaluation.threshold_at_false_rate(dets, 3, 1.0) == pytest.approx(0.2)


def test_completeness_f50_of_a_step_and_of_a_known_logistic():
    f = np.geomspace(0.1, 10, 200)
    assert evaluation.completeness_f50(f, f >= 2.0) == pytest.approx(2.0, rel=0.05)
    assert np.isnan(evaluation.completeness_f50(f, np.ones(200, bool)))
    rng = np.random.default_rng(3)
    flux = np.exp(rng.uniform(np.log(0.1), np.log(30), 20000))
    found = rng.uniform(size=flux.size) < 1 / (1 + np.exp(-(np.log(flux) - np.log(1.5)) / 0.4))
    assert evaluation.completeness_f50(flux, found) == pytest.approx(1.5, rel=0.03)


def test_sensitivity_ratio_of_a_constructed_case_is_two():
    rng = np.random.default_rng(5)
    flux = [np.exp(rng.uniform(np.log(0.1), np.log(30), 300)) for _ in range(8)]

    def draw(f50):
        return [rng.uniform(size=f.size) < 1 / (1 + np.exp(-(np.log(f) - np.log(f50)) / 0.3)) for f in flux]

    ref, net = draw(2.0), draw(1.0)  # the network reaches half the flux: twice the sensitivity
    r = evaluation.sensitivity_ratio(flux, ref, net, n_resamples=200)
    assert r["ratio"] == pytest.approx(2.0, rel=0.1)
    lo, hi = r["ci68"]
    assert lo <= r["ratio"] <= hi and hi - lo < 0.5
    same = evaluation.sensitivity_ratio(flux, ref, ref, n_resamples=50)
    assert same["ratio"] == pytest.approx(1.0) and same["ci68"] == [pytest.approx(1.0), pytest.approx(1.0)]


def test_intervals_are_stored_beside_their_metrics(tmp_path, monkeypatch):
    from skyml import paths, results

    monkeypatch.setattr(paths, "RESULTS", tmp_path / "results")
    rng = np.random.default_rng(9)
    n_patch = 6
    truth = Table({"patch": np.repeat(np.arange(n_patch), 10), "rel_flux": rng.uniform(0.2, 5, 10 * n_patch),
                   "matched": rng.uniform(size=10 * n_patch) < 0.7})
    dets = Table({"patch": rng.integers(0, n_patch, 15), "score": rng.uniform(size=15),
                  "matched_rel_flux": np.where(rng.uniform(size=15) < 0.5, 1.0, np.nan)})
    pp = evaluation.per_patch_counts(truth, dets, patches=np.arange(n_patch))
    metrics = {}
    for stat, key in (("f1", "f1_above_sens_unet_log_shifted"), ("recall", "recall_above_sens_unet_log"),
                      ("precision", "precision_tsmap_shifted")):
        metrics[key] = evaluation.STATISTICS[stat][0](*(pp[k] for k in evaluation.STATISTICS[stat][1]))
        metrics[f"{key}_ci68"] = evaluation.interval(pp, stat, n_resamples=200)
    path = results.write_metrics("06_ctao_survey_detection", "quick", metrics, seconds=1.0, n_test=n_patch,
                                 backend="tensorflow")
    stored = results.read_metrics("06_ctao_survey_detection", "quick")
    assert path.is_file()
    for key in ("f1_above_sens_unet_log_shifted", "recall_above_sens_unet_log", "precision_tsmap_shifted"):
        lo, hi = stored[f"{key}_ci68"]
        assert lo <= stored[key] <= hi and lo < hi, key


def test_randomised_sky_with_psf_tails_draws_them_narrower_than_the_shifted_sky_s():
    r = simulate.randomised_params(P, psf_tails=True)
    assert r.randomises_tail and not P.randomises_tail and not simulate.randomised_params(P).randomises_tail
    data = simulate.simulate_patches(6, 11, r, "train")
    f, s = data["patch_psf_tail_fraction"], data["patch_psf_tail_scale"]
    assert np.all((f >= r.rand_psf_tail_fraction[0]) & (f <= r.rand_psf_tail_fraction[1])) and len(np.unique(f)) == 6
    assert np.all((s >= r.rand_psf_tail_scale[0]) & (s <= r.rand_psf_tail_scale[1])) and len(np.unique(s)) == 6
    # the shifted test sky's tail stays outside the training tails
    assert simulate.shifted_params(P).psf_tail_scale > r.rand_psf_tail_scale[1]
    # a survey randomised without tails keeps its arrays: the tail is drawn after the other five values
    no_tail = dataclasses.replace(r, rand_psf_tail_fraction=(0.0, 0.0), rand_psf_tail_scale=(3.0, 3.0))
    assert not no_tail.randomises_tail and "rand_psf_tail_fraction" not in no_tail.to_dict()
    a = simulate.simulate_patches(2, 11, no_tail, "train")
    assert "patch_psf_tail_fraction" not in a
    for name in simulate.REALISED:
        np.testing.assert_array_equal(a[f"patch_{name}"], data[f"patch_{name}"][:2])
    # with tails, the patches' sources are drawn after the tail: other skies
    assert not np.array_equal(a["source_npred"], data["source_npred"][:2])
    with pytest.raises(ValueError, match="rand_psf_tail"):
        dataclasses.replace(r, rand_psf_tail_fraction=(0.3, 0.1))
