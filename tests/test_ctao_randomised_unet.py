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
    assert edge.psf_tail_fraction > 0 and not edge.randomise and not r.randomises_tail  # a tail no training patch has
    assert edge != simulate.shifted_params(p)
    assert SurveyParams.from_dict(edge.to_dict()) == edge
    assert set(dr_sweep.validation_skies(p)) == {"nominal", "randomised", "edge"}


def test_sweep_variants_only_change_known_training_settings():
    allowed = set(dr_sweep.BASE) | {"loss"}
    for name, change in dr_sweep.VARIANTS.items():
        assert set(change) <= allowed, name
        assert change.get("loss", "bce_dice") in models.UNET_LOSSES
    assert dr_sweep.VARIANTS["before"] == {}
