"""The field calibration of the restored-image network: the sliced simulation
it draws its fields from, the per-bin lines and their cross-validated
residual, their use in ``count_image`` and ``skyml radio-counts``, and the
sidecar keys that ``train_cached`` computes from a loaded network."""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.table import QTable

from skyml import cli
from skyml.radio import evaluation, pipeline
from skyml.radio import simulate as sim

from conftest import small_radio_network

P = sim.RadioSimParams()
pytestmark = pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")


def test_a_slice_of_the_fields_is_the_slice_of_the_whole_set():
    whole = sim.simulate_fields(5, 3, P, "calib", 64, ("alpha_s0", "broken"), randomise=True)
    part = sim.simulate_fields(5, 3, P, "calib", 64, ("alpha_s0", "broken"), randomise=True, start=2, stop=4)
    assert len(part["restored"]) == 2
    for k in ("restored", "skymodel", "counts", "p1", "p2", "family", "expected", "instrument_beam_scale"):
        np.testing.assert_array_equal(part[k], whole[k][2:4])
    with pytest.raises(ValueError, match="no fields"):
        sim.simulate_fields(5, 3, P, "calib", 64, start=5)


def _shrunk(n_fields=60, n_bins=4, n_sub=25, seed=0):
    """True counts per field and a network's answer pulled halfway (in log) towards the mean, with scatter;
    the last bin answered exactly."""
    rng = np.random.default_rng(seed)
    log_true = rng.uniform(2.0, 6.0, (n_fields, n_bins))
    log_pred = 0.5 * log_true + 2.0 + rng.normal(0.0, 0.05, log_true.shape)
    log_pred[:, -1] = log_true[:, -1]
    return n_sub * np.exp(log_pred), n_sub * np.exp(log_true), n_sub


def test_the_lines_undo_a_pull_towards_the_mean_and_leave_an_exact_bin_alone():
    pred, true, n_sub = _shrunk()
    fit = pipeline.fit_field_calibration(pred, true, n_sub)
    np.testing.assert_allclose(fit["slope"][:-1], 2.0, rtol=0.05)
    np.testing.assert_allclose(fit["intercept"][:-1], -4.0, atol=0.3)
    assert fit["calibrated_bins"] == [True, True, True, False]
    assert fit["slope"][-1] == 1.0 and fit["intercept"][-1] == 0.0
    assert np.all(np.asarray(fit["rel_rms_cv"][:-1]) < 0.5 * np.asarray(fit["rel_rms_raw"][:-1]))
    assert fit["rel_rms_cv"][-1] == fit["rel_rms_raw"][-1] == pytest.approx(0.0, abs=1e-12)
    calibrated = pipeline.calibrate_counts(pred, n_sub, fit)
    assert np.all(evaluation.rms_over_fields(evaluation.relative_residual(calibrated, true))[:-1] < 0.2)
    np.testing.assert_allclose(calibrated[:, -1], pred[:, -1])
    # per-sub-image counts scaled per field: their sums are the calibrated field counts
    sub = np.repeat(pred / n_sub, n_sub, axis=0) * np.random.default_rng(1).uniform(0.5, 1.5, (len(pred) * n_sub, 1))
    scaled = pipeline.calibrate_subimages(sub, len(pred), fit)
    np.testing.assert_allclose(evaluation.per_field(scaled, len(pred)),
                               pipeline.calibrate_counts(evaluation.per_field(sub, len(pred)), n_sub, fit), rtol=1e-10)


def test_cross_validation_keeps_a_sky_and_its_other_instrument_together():
    pred, true, n_sub = _shrunk(n_fields=20)
    # the second half repeats the first (one sky through two instruments): grouped folds never fit on a twin
    pred, true = np.concatenate([pred, pred]), np.concatenate([true, true])
    grouped = pipeline.fit_field_calibration(pred, true, n_sub, groups=np.r_[np.arange(20), np.arange(20)])
    ungrouped = pipeline.fit_field_calibration(pred, true, n_sub)
    assert grouped["slope"] == ungrouped["slope"]
    assert np.all(np.asarray(grouped["rel_rms_cv"][:-1]) >= np.asarray(ungrouped["rel_rms_cv"][:-1]) - 1e-12)
    with pytest.raises(ValueError, match="at least 3 fields"):
        pipeline.fit_field_calibration(pred[:2], true[:2], n_sub)


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """A small untrained conditioned network, saved, with its field calibration on six 128-px skies."""
    from skyml import paths
    from skyml.cta.models import load_model, save_model

    train = sim.simulate_fields(12, 3, P, "train", 64, ("alpha_s0", "broken"), thinning=True, randomise=True)
    model, meta = small_radio_network(train)
    folder = tmp_path_factory.mktemp("m")
    model, meta = load_model(save_model(model, folder / "bare.keras", meta))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(paths, "CACHE", tmp_path_factory.mktemp("cache"))
        calib = pipeline.field_calibration(model, meta, P, 6, 128, 5)
        built = sorted((paths.CACHE / "radio_field_calibration").iterdir())
        again = pipeline.field_calibration(model, meta, P, 6, 128, 5)  # from the cache
        assert sorted((paths.CACHE / "radio_field_calibration").iterdir()) == built and len(built) == 1
    assert again == calib
    meta = {**meta, "field_calibration": calib}
    path = save_model(model, folder / "radio_counts_cnn.keras", meta)
    return model, meta, path


def test_the_calibration_counts_fields_of_the_stated_size_and_is_bound_to_its_network(calibrated):
    model, meta, _ = calibrated
    calib = meta["field_calibration"]
    assert calib["n_fields"] == 12 and calib["n_sub_per_field"] == (128 // P.sub_npix) ** 2
    assert calib["spec"]["field_npix"] == 128 and calib["keras_sha256"] == meta["keras_sha256"]
    assert len(calib["slope"]) == len(calib["rel_rms_cv"]) == P.n_bins
    # the record a sidecar holds for the same network and fields is returned as it is, without simulating
    assert pipeline.field_calibration(model, meta, P, 6, 128, 5) is calib
    with pytest.raises(KeyError):
        pipeline.field_calibration(model, {k: v for k, v in meta.items() if k != "keras_sha256"}, P, 6, 128, 5)


def test_count_image_and_the_command_apply_the_calibration(tmp_path, calibrated, capsys):
    model, meta, path = calibrated
    cond = meta["conditioning"]
    noise = float(np.sqrt(np.prod(cond["noise_rms_jy_range"])))
    area = float(np.sqrt(np.prod(cond["beam_area_px_range"])))
    limit = 0.5 * cond["clean_limit_jy_range"][1]
    image = sim.simulate_fields(1, 9, P, "test", 128)["restored"][0]
    bare = {k: v for k, v in meta.items() if k != "field_calibration"}
    raw = pipeline.count_image(model, bare, image, area, noise, limit)
    got = pipeline.count_image(model, meta, image, area, noise, limit)
    assert got["calibrated"] and not raw["calibrated"]
    np.testing.assert_allclose(got["counts_raw"], raw["counts"], rtol=1e-6)
    np.testing.assert_allclose(got["counts"], pipeline.calibrate_counts(raw["counts"], raw["n_tiles"],
                                                                        meta["field_calibration"]), rtol=1e-6)
    np.testing.assert_allclose(got["counts_err"],
                               pipeline.counts_error(got["counts"], got["n_tiles"], meta,
                                                     meta["field_calibration"]["rel_rms_cv"]), rtol=1e-10)
    g = np.sqrt(area * 4 * np.log(2) / np.pi) * P.pixel_arcsec / 3600.0
    fits_path = pipeline.write_restored_image(tmp_path / "in.fits", image, P,
                                              beam={"bmaj_deg": g, "bmin_deg": g, "bpa_deg": 0.0},
                                              noise_rms_jy=noise)
    out = tmp_path / "out.ecsv"
    assert cli.main(["radio-counts", str(fits_path), "-o", str(out), "--model", str(path),
                     "--clean-limit", str(limit)]) == 0
    capsys.readouterr()
    table = QTable.read(out)
    np.testing.assert_allclose(table["counts"], got["counts"], rtol=1e-5)
    np.testing.assert_allclose(table["counts_uncalibrated"], got["counts_raw"], rtol=1e-5)
    assert table.meta["field_calibration"]["field_npix"] == 128
    assert "field calibration" in table["counts_err"].description
    assert "fewer than" not in capsys.readouterr().err
    # an image smaller than the calibration fields is counted, with a warning
    small = pipeline.write_restored_image(tmp_path / "small.fits", image[:64, :64], P,
                                          beam={"bmaj_deg": g, "bmin_deg": g, "bpa_deg": 0.0}, noise_rms_jy=noise)
    assert cli.main(["radio-counts", str(small), "-o", str(tmp_path / "small.ecsv"), "--model", str(path),
                     "--clean-limit", str(limit)]) == 0
    err = capsys.readouterr().err
    assert "1 sub-images, fewer than the 4 of the fields" in err


def test_train_cached_merges_keys_computed_from_the_loaded_network(tmp_path, monkeypatch):
    import keras

    from skyml import paths, training

    monkeypatch.setattr(paths, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(paths, "MODELS", tmp_path / "models")
    monkeypatch.setattr(training.results, "require_clean_tree", lambda *a, **k: None)
    seen = []

    def fit():
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        return model, {"task": "test"}, {"loss": [1.0]}

    def from_network(model, meta):
        seen.append((model.count_params(), meta["task"], meta["range"]))
        return {"calibration": {"params": model.count_params()}}

    _, meta, _, _ = training.train_cached("toy_calib", {"n": 1}, fit, "quick", "toy.keras",
                                          install_metadata=lambda: {"range": [0, 1]}, model_metadata=from_network)
    assert seen == [(3, "test", [0, 1])]
    assert meta["calibration"] == {"params": 3}
    sidecar = json.loads((paths.models_dir("quick") / "toy.json").read_text())
    assert sidecar["calibration"] == {"params": 3} and sidecar["range"] == [0, 1]
