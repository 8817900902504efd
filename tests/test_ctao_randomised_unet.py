"""CTAO survey: the training and threshold choices of the U-Net for any plausible sky
(``unet_log_dr`` of notebook 06) and their validation sweep."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table
from skyml.ctao import dr_sweep, evaluation, models, pipeline, simulate
from skyml.ctao.simulate import SurveyParams


def _validation_tables():
    """Two patches: five true sources above sensitivity, all detected, three of them with low
    scores; three false detections scoring 0.4, 0.3 and 0.2 (noise peaks)."""
    truth = Table({"patch": [0, 0, 0, 1, 1], "rel_flux": [3.0, 1.5, 1.2, 1.1, 1.0],
                   "matched": [True] * 5, "score": [0.9, 0.5, 0.45, 0.35, 0.34]})
    dets = Table({"patch": [0, 0, 0, 1, 1, 0, 1, 1], "score": [0.9, 0.5, 0.45, 0.35, 0.34, 0.4, 0.3, 0.2],
                  "matched_rel_flux": [3.0, 1.5, 1.2, 1.1, 1.0, np.nan, np.nan, np.nan]})
    return truth, dets


def test_false_rate_threshold_keeps_noise_peaks_out_where_max_f1_lets_them_in():
    truth, dets = _validation_tables()
    thr = dr_sweep.thresholds(truth, dets, 2, rate=0.0, low=0.1)
    # max F1: every true source and the 0.4 noise peak (F1 10/11) beats dropping the faint sources
    assert 0.3 < thr["max_f1"] <= 0.34
    r = evaluation.prf(truth, dets, min_score=thr["max_f1"])
    assert r["fp"] == 1 and r["tp"] == 5
    # no false detection allowed: just above the highest-scoring false one
    assert 0.4 < thr["false_rate"] < 0.45
    r = evaluation.prf(truth, dets, min_score=thr["false_rate"])
    assert r["fp"] == 0 and r["tp"] == 3
    # half a false detection per patch (one in two patches): the 0.4 peak is let in, not the 0.3 one
    assert 0.3 < dr_sweep.thresholds(truth, dets, 2, rate=0.5)["false_rate"] <= 0.4
    # the floor
    assert dr_sweep.thresholds(truth, dets, 2, rate=10.0, low=0.25)["false_rate"] == 0.25


def test_focal_dice_loss_weighs_confident_background_less_than_bce():
    y = np.zeros((1, 8, 8, 1), np.float32)
    y[0, 3:5, 3:5] = 1
    perfect = np.where(y > 0, 0.999, 0.001).astype(np.float32)
    confident_bkg = np.where(y > 0, 0.9, 0.05).astype(np.float32)  # right, with an easy background
    bce = float(np.asarray(models.weighted_bce_dice_loss(y, confident_bkg))[0])
    focal = float(np.asarray(models.weighted_focal_dice_loss(y, confident_bkg))[0])
    dice_part = float(np.asarray(models.weighted_focal_dice_loss(y, perfect))[0])
    assert dice_part < 0.01
    # background pixels at p = 0.05: BCE -log(0.95) each, focal 0.05² times that
    n_bkg = 60
    bce_bkg = n_bkg * -np.log(0.95) / 64
    assert focal < bce - 0.9 * bce_bkg
    # a confident mistake costs more than a right answer under both losses
    wrong = np.where(y > 0, 0.05, 0.9).astype(np.float32)
    assert float(np.asarray(models.weighted_focal_dice_loss(y, wrong))[0]) > focal + 1.0


def test_unet_loss_names_are_checked():
    assert set(models.UNET_LOSSES) == {"bce_dice", "focal_dice"}
    with pytest.raises(ValueError, match="unknown loss"):
        models.build_unet(3, 4, 2, loss="mse")
    with pytest.raises(ValueError, match="not a U-Net loss"):
        pipeline.train_model("cedirnet", 1, 1, 0, SurveyParams(npix=128), loss="focal_dice")
    model = models.build_unet(3, 4, 2, loss="focal_dice")
    assert model.loss is models.weighted_focal_dice_loss


def test_edge_validation_sky_lies_at_the_randomised_ends_and_differs_from_the_shifted_sky():
    p = SurveyParams()
    edge = simulate.edge_params(p)
    r = simulate.randomised_params(p)
    assert edge.bkg_scale == r.rand_bkg_scale[1] and edge.psf_scale == r.rand_psf_scale[1]
    assert edge.diffuse_mcrab_deg2 == r.rand_diffuse_mcrab_deg2[1]
    assert r.rand_index_mean[0] < edge.index_mean <= r.rand_index_mean[1]
    assert edge.psf_tail_fraction > 0 and not edge.randomise and not r.randomises_tail  # a tail the sweep's training sky lacked
    # the widest tail that notebook 06's randomised training sky (with tails) draws
    assert edge.psf_tail_scale == simulate.randomised_params(p, psf_tails=True).rand_psf_tail_scale[1]
    assert edge != simulate.shifted_params(p)
    assert SurveyParams.from_dict(edge.to_dict()) == edge
    assert set(dr_sweep.validation_skies(p)) == {"nominal", "randomised", "edge"}


def test_sweep_variants_only_change_known_training_settings():
    allowed = set(dr_sweep.BASE) | {"loss"}
    for name, change in dr_sweep.VARIANTS.items():
        assert set(change) <= allowed, name
        assert change.get("loss", "bce_dice") in models.UNET_LOSSES
    assert dr_sweep.VARIANTS["before"] == {}


def _fit_uncached(monkeypatch):
    """train_model's fit() run directly (no cache, no installation) on small simulated patches; the
    keys it was called with are appended to the returned list."""
    keys = []
    monkeypatch.setattr(simulate, "load_patches", lambda *a, **k: simulate.simulate_patches(*a, **k))

    def uncached(kind, key, fit, profile, install_as, install_metadata=None):
        keys.append(key)
        return (*fit(), None)

    monkeypatch.setattr(pipeline, "train_cached", uncached)
    return keys


def test_warm_start_begins_at_the_given_weights_and_enters_the_cache_key(monkeypatch):
    keys = _fit_uncached(monkeypatch)
    p = SurveyParams(npix=128)
    kw = dict(crop_px=64, crops_per_patch=2, epochs=1, filters=4, depth=2, batch_size=2, patience=1)
    init = models.build_unet(simulate.N_BINS, 4, 2, name="asid_unet_log")
    # at a learning rate of zero the trained weights are the initial ones (batch-norm statistics aside)
    model, meta, _, _ = pipeline.train_model("unet_log_dr", 1, 1, 0, p, init_model=init, psf_tails=True,
                                             learning_rate=0.0, **kw)
    for w, w0 in zip(model.trainable_weights, init.trainable_weights):
        np.testing.assert_array_equal(np.asarray(w), np.asarray(w0))
    digest = pipeline.weights_digest(init)
    assert keys[-1]["init_weights_sha256"] == digest == meta["init_weights_sha256"]
    assert SurveyParams.from_dict(keys[-1]["sim"]).randomises_tail
    # other weights, another digest; a trained network moves away from its start
    other = models.build_unet(simulate.N_BINS, 4, 2, name="other")
    assert pipeline.weights_digest(other) != digest
    trained, _, _, _ = pipeline.train_model("unet_log_dr", 1, 1, 0, p, init_model=init, learning_rate=1e-2, **kw)
    assert any(not np.array_equal(np.asarray(w), np.asarray(w0))
               for w, w0 in zip(trained.trainable_weights, init.trainable_weights))
    # without these options the key is that of the networks trained before them
    pipeline.train_model("unet_log_dr", 1, 1, 0, p, **kw)
    assert "init_weights_sha256" not in keys[-1] and "rand_psf_tail_fraction" not in keys[-1]["sim"]
    # a start of another shape is refused
    with pytest.raises(ValueError, match="do not fit"):
        pipeline.train_model("unet_log_dr", 1, 1, 0, p, init_model=init, **{**kw, "filters": 8})


def test_psf_tails_belong_to_the_randomised_sky_only():
    p = SurveyParams()
    assert pipeline.training_params("unet_log_dr", p, psf_tails=True).randomises_tail
    assert not pipeline.training_params("unet_log_dr", p).randomises_tail
    assert pipeline.training_params("unet_log", p) is p
    with pytest.raises(ValueError, match="psf_tails"):
        pipeline.training_params("unet_log", p, psf_tails=True)


def test_learning_rate_is_halved_while_the_validation_loss_does_not_fall():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 16, 16, 3)).astype("float32")
    y = (rng.uniform(size=(4, 16, 16, 1)) > 0.9).astype("float32")
    # validated against the opposite masks: the better it fits y, the higher its validation loss
    runs = {r: models.train(models.build_unet(3, 4, 2, 1e-3), x, y, x, 1 - y, epochs=4, batch_size=4, patience=10,
                            reduce_lr_patience=r, verbose=0) for r in (None, 1)}
    assert "learning_rate" not in runs[None]
    lr = runs[1]["learning_rate"]
    assert len(lr) == 4 and lr[0] == pytest.approx(1e-3) and np.all(np.diff(lr) <= 0) and lr[-1] <= 2.5e-4 * 1.0001


def test_dihedral_mean_averages_the_eight_orientations_turned_back():
    from skyml.training import dihedral, dihedral_mean

    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 6, 6, 3))
    ramp = np.arange(6.0)[None, None, :, None]  # a read-out that depends on the orientation
    fn = lambda a: (a * ramp)[..., :1]  # noqa: E731  (channels in and out differ)
    mean = dihedral_mean(fn, x, axes=(1, 2))
    assert mean.shape == (2, 6, 6, 1) and mean.dtype == np.float64
    # by hand: turn, apply, turn back (dihedral works on the last two axes)
    sky_last = lambda a: np.moveaxis(a, 3, 1)  # noqa: E731
    manual = []
    for k in range(8):
        turned = np.moveaxis(dihedral(sky_last(x), k), 1, 3)
        out = sky_last(fn(turned))
        back = np.flip(out, axis=-1) if k >= 4 else out
        manual.append(np.moveaxis(np.rot90(back, -(k % 4), axes=(-2, -1)), 1, 3))
    np.testing.assert_allclose(mean, np.mean(manual, axis=0), rtol=1e-12)
    # the mean no longer depends on the orientation of its input
    turned_mean = dihedral_mean(fn, np.rot90(x, 1, axes=(1, 2)), axes=(1, 2))
    np.testing.assert_allclose(turned_mean, np.rot90(mean, 1, axes=(1, 2)), rtol=1e-12)
    assert not np.allclose(mean, fn(x))
    # an equivariant read-out is unchanged
    np.testing.assert_allclose(dihedral_mean(lambda a: 2 * a, x, axes=(1, 2)), 2 * x, rtol=1e-12)


def test_dihedral_readout_of_a_unet_is_orientation_free_and_refused_for_cedirnet():
    import keras

    p = SurveyParams()
    rng = np.random.default_rng(2)
    counts = rng.poisson(3.0, size=(2, simulate.N_BINS, 32, 32)).astype(np.float32)
    keras.utils.set_random_seed(0)
    unet = models.build_unet(simulate.N_BINS, 4, 2)
    plain, _ = pipeline.predict(unet, counts, p, "log")
    mean, _ = pipeline.predict(unet, counts, p, "log", dihedral=True)
    assert mean.shape == plain.shape == (2, 32, 32) and mean.dtype == np.float32
    assert np.max(np.abs(mean - plain)) > 1e-4  # a network that has not learnt the symmetry
    turned, _ = pipeline.predict(unet, np.rot90(counts, 1, axes=(2, 3)).copy(), p, "log", dihedral=True)
    np.testing.assert_allclose(turned, np.rot90(mean, 1, axes=(1, 2)), atol=2e-6)
    flipped, _ = pipeline.predict(unet, counts[..., ::-1].copy(), p, "log", dihedral=True)
    np.testing.assert_allclose(flipped, mean[..., ::-1], atol=2e-6)
    det, _, out = pipeline.detect_patches(unet, "unet_log", counts, p, 0.0, dihedral=True)
    np.testing.assert_array_equal(out, mean)
    cedirnet = models.build_cedirnet(simulate.N_BINS, 4, 2)
    with pytest.raises(ValueError, match="one output channel"):
        pipeline.predict(cedirnet, counts, p, "log", dihedral=True)


def test_readout_is_chosen_on_pooled_validation_f1(monkeypatch):
    """The read-out with the higher F1 on the validation sets pooled wins; each has its own threshold."""
    truth, dets = _validation_tables()
    better_dets = dets.copy()
    better_dets["score"][5:] = [0.1, 0.1, 0.1]  # the noise peaks fall under every source
    better_truth = truth.copy()
    calls = []

    def fake_detect(model, kind, counts, p, threshold, dihedral=False, **kw):
        calls.append(dihedral)
        return {"dihedral": dihedral, "counts": counts}, 0.0, None

    def fake_evaluate(data, det, p, radius_deg):
        return (better_truth, better_dets) if det["dihedral"] else (truth, dets)

    monkeypatch.setattr(pipeline, "detect_patches", fake_detect)
    monkeypatch.setattr(evaluation, "evaluate", fake_evaluate)
    sets = {"randomised": {"counts": 1}, "edge": {"counts": 2}}
    res = pipeline.validation_readouts(None, "unet_log_dr", sets, SurveyParams(), 0.1, 0.1)
    assert calls == [False, False, True, True]
    assert res["chosen"] == "dihedral"
    assert res["dihedral"]["f1"] == pytest.approx(1.0) and res["dihedral"]["f1_edge"] == pytest.approx(1.0)
    assert res["plain"]["f1"] < 1.0 and set(res["plain"]["dets"]) == {"randomised", "edge"}
    assert 0.1 < res["dihedral"]["threshold"] <= 0.34
    # a tie keeps the first read-out; only the read-outs asked for are scored
    monkeypatch.setattr(evaluation, "evaluate", lambda data, det, p, radius_deg: (truth, dets))
    assert pipeline.validation_readouts(None, "unet_log", sets, SurveyParams(), 0.1, 0.1)["chosen"] == "plain"
    only = pipeline.validation_readouts(None, "cedirnet", sets, SurveyParams(), 0.02, 0.1, readouts=("plain",))
    assert set(only) == {"plain", "chosen"}
    with pytest.raises(ValueError, match="unknown read-out"):
        pipeline.validation_readouts(None, "unet_log", sets, SurveyParams(), 0.1, 0.1, readouts=("mirror",))


def test_randomised_cedirnet_trains_on_the_randomised_sky_from_the_nominal_cedirnet(monkeypatch):
    keys = _fit_uncached(monkeypatch)
    p = SurveyParams(npix=128)
    kw = dict(crop_px=64, crops_per_patch=2, epochs=1, filters=4, depth=2, batch_size=2, patience=1)
    init = models.build_cedirnet(simulate.N_BINS, 4, 2)
    model, meta, _, _ = pipeline.train_model("cedirnet_dr", 1, 1, 0, p, init_model=init, psf_tails=True,
                                             learning_rate=0.0, **kw)
    for w, w0 in zip(model.trainable_weights, init.trainable_weights):
        np.testing.assert_array_equal(np.asarray(w), np.asarray(w0))
    # the vote field of CeDiRNet, on the randomised sky with tails, its input over the local background
    assert model.output_shape[-1] == 3 and meta["normalise"] == "local"
    assert SurveyParams.from_dict(keys[-1]["sim"]).randomises_tail
    assert pipeline.input_mode("cedirnet_dr") == ("log", "local") and pipeline.is_cedirnet("cedirnet_dr")
    # its detections come from the centre-direction read-out, and a U-Net's start does not fit it
    det, _, out = pipeline.detect_patches(model, "cedirnet_dr", np.zeros((1, 3, 64, 64), np.float32), p, 0.5)
    assert out.shape == (1, 64, 64, 3) and len(det["x_pix"]) == 0
    with pytest.raises(ValueError, match="do not fit"):
        pipeline.train_model("cedirnet_dr", 1, 1, 0, p, init_model=models.build_unet(simulate.N_BINS, 4, 2), **kw)
