"""Jolideco, notebook 08's Poisson MAP baseline (skyml.lhaaso.jolideco_baseline).

The parts without PyTorch run everywhere: the patch mixture fitted with
scikit-learn, the LIRA prior in NumPy, parameter checks, the grid that is
extended at both ends, that skyml imports without torch, the notebook's
parameters and its one-line message when Jolideco is not run. The parts that
run jolideco itself are skipped where the extra "deconvolution" is not
installed (make deconvolution)."""

from __future__ import annotations

import ast
import contextlib
import io
import json
import subprocess
import sys

import numpy as np
import pytest
import yaml
from scipy.special import gammaln

from skyml import paths
from skyml.lhaaso import jolideco_baseline as jb
from skyml.lhaaso import psf
from skyml.lhaaso import simulate as sim

NOTEBOOK = paths.NOTEBOOKS / "08_lhaaso_deconvolution.ipynb"
JOLIDECO_MISSING = "jolideco and torch are the optional extra 'deconvolution' (make deconvolution)"


def _cells():
    return {c["id"]: "".join(c["source"]) for c in json.loads(NOTEBOOK.read_text())["cells"]}


def _parameters():
    cell = next(c for c in json.loads(NOTEBOOK.read_text())["cells"]
                if "parameters" in c.get("metadata", {}).get("tags", []))
    tree = ast.parse("".join(cell["source"]))
    return {t.id: ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
            for t in node.targets}


# ---------------------------------------------------------------------------
# Without PyTorch
# ---------------------------------------------------------------------------


def test_skyml_imports_without_torch_or_jolideco():
    code = ("import sys\n"
            "import skyml, skyml.report, skyml.goals\n"
            "from skyml.lhaaso import baselines, evaluation, jolideco_baseline, pipeline, psf, simulate\n"
            "print(sorted(m for m in ('torch', 'jolideco') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_check_prior_refuses_unknown_priors_and_strengths_out_of_range():
    for prior in jb.PRIORS:
        jb.check_prior(prior, jb.STRENGTH_GRID[prior][0])
        lo, hi = jb.STRENGTH_LIMITS[prior]
        for bad in (0.0, -1.0, lo / 2, hi * 2, float("nan"), float("inf")):
            with pytest.raises(ValueError, match=jb.STRENGTH_NAME[prior]):
                jb.check_prior(prior, bad)
    with pytest.raises(ValueError, match="prior must be one of"):
        jb.check_prior("tv", 1.0)


def test_strength_grids_lie_inside_their_limits():
    for prior in jb.PRIORS:
        grid = jb.STRENGTH_GRID[prior]
        lo, hi = jb.STRENGTH_LIMITS[prior]
        assert len(grid) >= 3 and list(grid) == sorted(grid)
        assert lo <= grid[0] / jb.STRENGTH_FACTOR and grid[-1] * jb.STRENGTH_FACTOR <= hi


def test_lira_levels_of_the_quad_tree():
    assert jb.lira_levels((64, 64)) == 6
    assert jb.lira_levels((12, 8)) == 2
    assert jb.lira_levels((2, 2)) == 1
    for bad in ((63, 64), (1, 4), (6, 7)):
        with pytest.raises(ValueError, match="even sides"):
            jb.lira_levels(bad)


def test_lira_log_prior_of_a_flat_map_is_its_constant():
    """Every split of a flat 8×8 map is (1/4, 1/4, 1/4, 1/4): 16 + 4 + 1 parents."""
    alpha = 2.5
    expect = 21 * ((alpha - 1) * 4 * np.log(0.25) + gammaln(4 * alpha) - 4 * gammaln(alpha)) / 64
    assert jb.lira_log_prior_numpy(np.full((8, 8), 3.0), alpha) == pytest.approx(expect, rel=1e-12)
    # scale free: the proportions do not change when the map is multiplied
    rng = np.random.default_rng(0)
    f = rng.uniform(0.1, 2.0, (16, 16))
    assert jb.lira_log_prior_numpy(7 * f, alpha) == pytest.approx(jb.lira_log_prior_numpy(f, alpha))


def test_lira_prior_favours_smooth_maps_above_alpha_one():
    rng = np.random.default_rng(1)
    smooth = 1.0 + 0.01 * rng.standard_normal((16, 16))
    rough = rng.uniform(0.01, 2.0, (16, 16))
    assert jb.lira_log_prior_numpy(smooth, 3.0) > jb.lira_log_prior_numpy(rough, 3.0)
    # alpha = 1 is flat: the same value for any map (log 3! per parent)
    assert jb.lira_log_prior_numpy(smooth, 1.0) == pytest.approx(jb.lira_log_prior_numpy(rough, 1.0))


def test_patches_are_mean_subtracted_windows_in_row_major_order():
    img = np.arange(2 * 12 * 12, dtype=float).reshape(2, 12, 12)
    p = jb.patches(img, patch=8, stride=4)
    assert p.shape == (2 * 2 * 2, 64)
    np.testing.assert_allclose(p.mean(axis=1), 0.0, atol=1e-12)
    window = img[1, 4:12, 0:8]  # second image, second row of windows, first column
    np.testing.assert_allclose(p[4 + 2], (window - window.mean()).ravel())
    with pytest.raises(ValueError, match="sides >= 8"):
        jb.patches(np.zeros((1, 6, 6)))


def test_normed_is_the_asinh_over_each_maps_scale():
    maps = np.array([[[0.0, 2.0]], [[4.0, -1.0]]])
    out = jb.normed(maps, np.array([2.0, 4.0]))
    np.testing.assert_allclose(out, np.arcsinh([[[0.0, 1.0]], [[1.0, 0.0]]]))


def _toy_truth(n=12, seed=0):
    """Maps of a flat floor and one bright blob each (what a patch mixture must learn)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:24, :24]
    maps = np.full((n, 24, 24), 0.5) + 0.05 * rng.random((n, 24, 24))
    for m in maps:
        x0, y0 = rng.uniform(4, 20, 2)
        m += 20 * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / 2.0)
    return maps, maps.mean(axis=(1, 2))


def test_fit_patch_gmm_shapes_weights_and_determinism():
    truth, scale = _toy_truth()
    g = jb.fit_patch_gmm(truth, scale, n_components=3, max_patches=200, seed=4)
    assert g["means"].shape == (3, 64) and g["covariances"].shape == (3, 64, 64) and g["weights"].shape == (3,)
    assert int(g["patch"]) == 8 and int(g["stride"]) == 4
    assert g["weights"].sum() == pytest.approx(1.0) and np.all(np.diff(g["weights"]) <= 0)
    assert all(np.all(np.linalg.eigvalsh(c) > 0) for c in g["covariances"])  # positive definite
    np.testing.assert_allclose(g["means"].sum(axis=1), 0.0, atol=1e-8)  # of mean-subtracted patches
    again = jb.fit_patch_gmm(truth, scale, n_components=3, max_patches=200, seed=4)
    for k in g:
        np.testing.assert_array_equal(g[k], again[k])
    # the flat patches are the heaviest component: its covariance is the smallest
    assert np.trace(g["covariances"][0]) == min(np.trace(c) for c in g["covariances"])
    with pytest.raises(ValueError, match="n_components"):
        jb.fit_patch_gmm(truth, scale, n_components=0)


def test_fit_patch_gmm_cached_loads_the_same_arrays(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "CACHE", tmp_path)
    truth, scale = _toy_truth(6)
    first = jb.fit_patch_gmm_cached(truth, scale, n_components=2, max_patches=100)
    assert len(list((tmp_path / "lhaaso_jolideco_gmm").iterdir())) == 1
    again = jb.fit_patch_gmm_cached(truth, scale, n_components=2, max_patches=100)
    for k in first:
        np.testing.assert_array_equal(first[k], again[k])
    jb.fit_patch_gmm_cached(truth + 1.0, scale, n_components=2, max_patches=100)
    assert len(list((tmp_path / "lhaaso_jolideco_gmm").iterdir())) == 2


def _peaked(v):
    return -(np.log2(v) - np.log2(3.0)) ** 2


def test_scan_interior_extends_upwards_until_the_best_is_inside():
    calls = []

    def method(v):
        calls.append(v)
        return v

    best, table, inside = jb.scan_interior(method, (0.25, 0.5, 1.0), {"s": _peaked})["s"]
    assert inside and best == 4.0 and max(table) == 8.0 and min(table) == 0.25
    assert calls == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0]  # one run per value


def test_scan_interior_extends_downwards_and_serves_every_scorer():
    out = jb.scan_interior(lambda v: v, (8.0, 16.0, 32.0),
                           {"low": _peaked, "mid": lambda v: -(np.log2(v) - 4) ** 2})
    assert out["low"][0] == 4.0 and out["low"][2] and min(out["low"][1]) == 2.0
    assert out["mid"][0] == 16.0 and out["mid"][2]
    assert out["low"][1].keys() == out["mid"][1].keys()


def test_scan_interior_says_so_when_a_limit_stops_it():
    best, table, inside = jb.scan_interior(lambda v: v, (1.0, 2.0, 4.0), {"s": lambda v: v}, limits=(0.5, 16.0))["s"]
    assert best == 16.0 and max(table) == 16.0 and not inside
    with pytest.raises(ValueError, match="three values"):
        jb.scan_interior(lambda v: v, (1.0, 2.0), {"s": lambda v: v})


def test_available_says_why_when_the_extra_is_missing(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    for missing in ("torch", "jolideco"):  # the other one looks installed
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: (
            None if name == missing else object() if name in ("torch", "jolideco") else real(name, *a)))
        ok, why = jb.available()
        assert not ok and why.startswith(f"{missing} is not installed") and "make deconvolution" in why


def test_notebook_parameters_keep_jolideco_off_in_the_quick_profile():
    p = _parameters()
    assert p["run_jolideco"] is False
    assert isinstance(p["n_val_jolideco"], int) and 1 <= p["n_val_jolideco"] <= p["n_val_baselines"]
    assert isinstance(p["jolideco_epochs"], int) and p["jolideco_epochs"] >= 1
    full = yaml.safe_load((paths.NOTEBOOKS / "profiles" / "full.yml").read_text())["08_lhaaso_deconvolution"]
    assert full["run_jolideco"] is True
    assert 1 <= full["n_val_jolideco"] <= full["n_val_baselines"]


@pytest.mark.parametrize("run_jolideco, available", [(False, (True, "jolideco 0.3")),
                                                     (True, (False, "jolideco is not installed (make deconvolution)"))])
def test_notebook_cell_prints_one_line_when_jolideco_is_not_run(monkeypatch, run_jolideco, available):
    """The notebook's Jolideco cell, run as it stands with Jolideco off or missing:
    one line on stdout, nothing on stderr, nothing run."""
    source = next(s for s in _cells().values() if s.startswith("jd, jd_choice, jd_scan = "))
    monkeypatch.setattr(jb, "available", lambda: available)
    out, err = io.StringIO(), io.StringIO()
    namespace = {"jb": jb, "run_jolideco": run_jolideco}
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        exec(compile(source, "jolideco cell", "exec"), namespace)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Jolideco was not run: "), lines
    assert (available[1] if run_jolideco else "run_jolideco is False") in lines[0]
    assert err.getvalue() == "" and namespace["jd"] == {}


def test_report_labels_jolideco_and_the_headline_lists_it():
    from skyml import report

    for key in ("psnr_jolideco", "ssim_jolideco", "psnr_jolideco_shifted", "psnr_jolideco_lhai",
                "ssim_jolideco_lhai", "psnr_jolideco_lhai_shifted", "ssim_jolideco_lhai_shifted"):
        assert "Jolideco" in report.METRICS[key].label, key
    lhaaso = [h for h in report.HEADLINES if h.stem == "08_lhaaso_deconvolution"]
    assert {"psnr_jolideco", "psnr_jolideco_lhai"} <= {k for h in lhaaso for k in h.classical}


# ---------------------------------------------------------------------------
# With jolideco (the extra "deconvolution")
# ---------------------------------------------------------------------------


def _skip_without_jolideco():
    """Skip unless the extra is installed. jolideco is looked up, not imported, here:
    a plain ``import jolideco`` (pytest.importorskip's) fails without a GMM library
    index and reconfigures the root logger; :func:`jb.import_jolideco` does neither."""
    import importlib.util

    pytest.importorskip("torch", reason=JOLIDECO_MISSING)
    if importlib.util.find_spec("jolideco") is None:
        pytest.skip(JOLIDECO_MISSING)


@pytest.fixture(scope="module")
def jolideco():
    _skip_without_jolideco()
    return jb.import_jolideco()


def test_import_jolideco_leaves_the_root_logger_alone():
    _skip_without_jolideco()
    code = ("import logging, os\n"
            "os.environ.pop('JOLIDECO_GMM_LIBRARY', None)\n"
            "from skyml.lhaaso import jolideco_baseline as jb\n"
            "ok, why = jb.available()\n"
            "print(ok, len(logging.getLogger().handlers), logging.getLogger().level == logging.WARNING)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    assert out.stdout.split() == ["True", "0", "True"], out.stdout + out.stderr
    assert out.stderr == ""


def test_lira_prior_in_torch_is_the_numpy_one(jolideco):
    import torch

    rng = np.random.default_rng(2)
    f = rng.uniform(0.05, 3.0, (16, 16))
    prior = jb.lira_prior(1.5, f.shape, generator=None)  # no cycle spin: the same quad tree
    value = float(prior(torch.from_numpy(f[None, None])))
    assert value == pytest.approx(jb.lira_log_prior_numpy(f, 2.5), rel=1e-5)


def test_patches_match_jolideco_patches(jolideco):
    import torch
    from jolideco.utils.norms import SubtractMeanPatchNorm
    from jolideco.utils.torch import view_as_overlapping_patches_torch

    img = np.random.default_rng(3).random((1, 20, 20))
    theirs = SubtractMeanPatchNorm()(view_as_overlapping_patches_torch(torch.from_numpy(img[None]), (8, 8), 4))
    np.testing.assert_allclose(jb.patches(img), theirs.numpy(), atol=1e-12)


def _point_source_maps(n=2, npix=32, seed=0):
    """Poisson counts of a point source of 400 counts on a flat 0.2 per pixel, through the KM2A PSF."""
    rng = np.random.default_rng(seed)
    k = psf.kernel(psf.SIGMA1_DEG[25.0])
    out = []
    for _ in range(n):
        sky = np.full((npix, npix), 0.2)
        sky[npix // 2, npix // 2 - 3] += 400.0
        from scipy.signal import fftconvolve

        out.append(rng.poisson(np.clip(fftconvolve(sky, k, mode="same"), 0, None)).astype(float))
    return np.stack(out)


@pytest.mark.slow
def test_deconvolve_is_deterministic_sharpens_and_conserves_flux(jolideco):
    counts = _point_source_maps()
    s1 = psf.SIGMA1_DEG[25.0]
    a = jb.deconvolve(counts, s1, "lira", 0.5, n_epochs=60, seed=5)
    b = jb.deconvolve(counts, s1, "lira", 0.5, n_epochs=60, seed=5)
    np.testing.assert_array_equal(a, b)
    assert a.shape == counts.shape and np.all(np.isfinite(a)) and np.all(a > 0)
    c = jb.deconvolve(counts, s1, "lira", 0.5, n_epochs=60, seed=6)
    assert not np.array_equal(a, c)  # the cycle spin follows the seed
    np.testing.assert_allclose(a.sum(axis=(1, 2)), counts.sum(axis=(1, 2)), rtol=0.1)
    assert np.all(a.max(axis=(1, 2)) > 3 * counts.max(axis=(1, 2)))  # the point source is sharper
    assert np.unravel_index(np.argmax(a[0]), a[0].shape) == (16, 13)


@pytest.mark.slow
def test_deconvolve_with_the_patch_prior_and_a_background(jolideco):
    truth, scale = _toy_truth()
    g = jb.fit_patch_gmm(truth, scale, n_components=2, max_patches=150)
    counts = _point_source_maps(1, seed=1) + np.random.default_rng(1).poisson(2.0, (1, 32, 32))
    out = jb.deconvolve(counts, psf.SIGMA1_DEG[25.0], "gmm", 0.25, gmm=g, n_epochs=300, background_per_px=2.0)
    assert out.shape == counts.shape and np.all(np.isfinite(out)) and np.all(out > 0)
    # the background is not flux: at the Poisson optimum the flux is the counts less 2 a pixel
    assert out.sum() == pytest.approx(counts.sum() - 2.0 * 32 * 32, rel=0.05)
    with pytest.raises(ValueError, match="fitted mixture"):
        jb.deconvolve_one(counts[0], 0, sigma1_deg=0.265, prior="gmm", strength=0.25)


@pytest.mark.slow
def test_deconvolve_cached_loads_what_it_computed(jolideco, tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "CACHE", tmp_path)
    counts = _point_source_maps(1)
    first = jb.deconvolve_cached(counts, psf.SIGMA1_DEG[25.0], "lira", 0.5, n_epochs=20, seed=1)
    np.testing.assert_array_equal(first, jb.deconvolve(counts, psf.SIGMA1_DEG[25.0], "lira", 0.5, n_epochs=20,
                                                       seed=1))
    again = jb.deconvolve_cached(counts, psf.SIGMA1_DEG[25.0], "lira", 0.5, n_epochs=20, seed=1)
    np.testing.assert_array_equal(first, again)
    assert len(list((tmp_path / "lhaaso_jolideco").iterdir())) == 1
    jb.deconvolve_cached(counts, psf.SIGMA1_DEG[25.0], "lira", 0.5, n_epochs=21, seed=1)
    assert len(list((tmp_path / "lhaaso_jolideco").iterdir())) == 2


def test_simulator_background_is_what_the_notebook_passes():
    """The notebook gives Jolideco the simulator's flat background level: 0 in the main study."""
    assert sim.LHAASOSimParams().background_per_px == 0.0
    assert "background_per_px=params.background_per_px" in next(
        s for s in _cells().values() if s.startswith("jd, jd_choice, jd_scan = "))
