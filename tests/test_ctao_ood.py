"""The training range of the CTAO U-Net and the check of a counts cube against it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from skyml.ctao import pipeline
from skyml.ctao.pipeline import BKG_BLOCK_PX, OOD_BKG_TOL


def test_background_level_is_the_median_of_block_means():
    c = np.zeros((3, 32, 40))
    c[0] = 2.0
    c[1, :8, :8] = 100.0  # a source in one block of 16: the median ignores it
    c[2, ::2, :] = 1.0  # 0.5 counts per pixel in every block
    level = pipeline.background_level(c)
    np.testing.assert_allclose(level, [2.0, 0.0, 0.5])
    # rows and columns that do not fill a block are left out; a cube smaller than a block is one block
    c = np.ones((3, 20, 20))
    c[:, 16:, :] = 50.0
    np.testing.assert_allclose(pipeline.background_level(c), 1.0)
    np.testing.assert_allclose(pipeline.background_level(np.full((3, 4, 4), 3.0)), 3.0)


def test_training_range_spans_the_windows_of_the_patches():
    w = pipeline.BKG_WINDOW_PX
    patches = np.ones((2, 3, 2 * w, 2 * w))
    patches[0, 0, :w, :w] = 4.0  # one window with four times the background
    patches[1, 1, w:, w:] = 0.0
    rng = pipeline.training_range(patches)
    assert rng["background_counts_per_px"] == [[1.0, 4.0], [0.0, 1.0], [1.0, 1.0]]
    assert rng["n_windows"] == 8 and rng["n_patches"] == 2 and rng["block_px"] == BKG_BLOCK_PX
    json.dumps(rng)  # goes into the sidecar
    with pytest.raises(ValueError, match="smaller than one"):
        pipeline.training_range(np.ones((1, 3, w // 2, w // 2)))


def test_distribution_check_tolerance_and_unmeasurable_bins():
    meta = {"training_range": {"background_counts_per_px": [[1.0, 4.0], [0.05, 0.2], [0.0, 0.01]],
                               "block_px": BKG_BLOCK_PX}}

    def check(levels):
        return pipeline.distribution_check(np.ones((3, 32, 32)) * np.asarray(levels)[:, None, None], meta)

    inside = check([4.0 * (1 + OOD_BKG_TOL) * 0.99, 0.05 / (1 + OOD_BKG_TOL) * 1.01, 0.0])
    assert inside["out_of_distribution"] is False and inside["reason"] == ""
    high = check([4.0 * (1 + OOD_BKG_TOL) * 1.01, 0.1, 0.0])
    assert high["out_of_distribution"] is True and "0.07-0.788 TeV bin" in high["reason"]
    low = check([2.0, 0.05 / (1 + OOD_BKG_TOL) * 0.9, 0.0])
    assert low["out_of_distribution"] is True and "0.788-8.88 TeV bin" in low["reason"]
    # the last bin holds under MIN_BLOCK_COUNTS counts per block in training: not checked
    assert check([2.0, 0.1, 5.0])["out_of_distribution"] is False
    bare = pipeline.distribution_check(np.ones((3, 32, 32)), {})
    assert bare["out_of_distribution"] is None and bare["background"] == [1.0, 1.0, 1.0]


def test_simulated_validation_cubes_pass_and_five_times_the_background_does_not():
    """On a small simulated survey (64-px patches), as the tolerance's comment states."""
    from skyml.ctao import simulate
    from skyml.ctao.simulate import SurveyParams

    p = SurveyParams(npix=64)
    meta = {"training_range": pipeline.training_range(simulate.simulate_patches(3, 0, p, "train")["counts"])}
    for c in simulate.simulate_patches(3, 0, p, "val")["counts"]:
        assert pipeline.distribution_check(c, meta)["out_of_distribution"] is False
        assert pipeline.distribution_check(c[:, 16:48, 16:48], meta)["out_of_distribution"] is False
    background = simulate.irf_maps(p)["background"].astype(float)
    bright = np.random.default_rng(0).poisson(5 * background)
    assert pipeline.distribution_check(bright, meta)["out_of_distribution"] is True


def test_train_cached_installs_metadata_outside_the_cache_key(tmp_path, monkeypatch):
    """The training range is computed when the model is installed: a cached
    model gets it without retraining, in the returned metadata and the sidecar."""
    import keras

    from skyml import paths, training

    monkeypatch.setattr(paths, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(paths, "MODELS", tmp_path / "models")
    monkeypatch.setattr(training.results, "require_clean_tree", lambda *a, **k: None)
    fits = []

    def fit():
        fits.append(1)
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        return model, {"task": "test"}, {"loss": [1.0]}

    _, meta, _, _ = training.train_cached("toy_range", {"n": 1}, fit, "quick", "toy.keras")
    assert "training_range" not in meta
    _, meta, _, seconds = training.train_cached("toy_range", {"n": 1}, fit, "quick", "toy.keras",
                                                install_metadata=lambda: {"training_range": {"x": [0, 1]}})
    assert len(fits) == 1 and seconds is None  # loaded from the cache, not retrained
    assert meta["training_range"] == {"x": [0, 1]}
    sidecar = json.loads((paths.models_dir("quick") / "toy.json").read_text())
    assert sidecar["training_range"] == {"x": [0, 1]} and sidecar["task"] == "test"
