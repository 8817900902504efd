"""Notebook 07's choice of the context-histogram training noise by validation loss."""

from __future__ import annotations

import pytest

from skyml.radio import pipeline
from skyml.radio import simulate as sim

P = sim.RadioSimParams()


def test_train_selected_keeps_the_lowest_validation_loss_and_installs_it_last(monkeypatch):
    val_loss = {1.0: [0.9, 0.5, 0.6], 0.3: [0.8, 0.4, 0.45, 0.5], 0.1: [0.7, 0.4]}
    calls = []

    def fake_train_model(kind, n_train, npix, n_val, seed, params, *, hist_noise, **kwargs):
        calls.append((kind, hist_noise, kwargs["epochs"]))
        history = {"loss": [1.0] * len(val_loss[hist_noise]), "val_loss": val_loss[hist_noise]}
        return f"model {hist_noise}", {"hist_noise": hist_noise}, history, None

    monkeypatch.setattr(pipeline, "train_model", fake_train_model)
    model, meta, history, seconds, candidates = pipeline.train_selected(
        "restored", [1.0, 0.3, 0.1], 4, 128, 2, 1, P, epochs=5)
    # 0.3 and 0.1 tie at 0.4: the first is kept; the kept one is requested last (the installed model)
    assert model == "model 0.3" and meta["hist_noise"] == 0.3 and history["val_loss"] == val_loss[0.3]
    assert candidates == [(1.0, 3, 0.5), (0.3, 4, 0.4), (0.1, 2, 0.4)]
    assert calls == [("restored", 1.0, 5), ("restored", 0.3, 5), ("restored", 0.1, 5), ("restored", 0.3, 5)]
    with pytest.raises(ValueError, match="hist_noise_grid is empty"):
        pipeline.train_selected("restored", [], 4, 128, 2, 1, P, epochs=5)


def test_image_wcs_is_the_wcs_written_with_restored_images(tmp_path):
    """The WCS that draws the fields in notebook 07 is the one the FITS files carry."""
    import numpy as np
    from astropy.io import fits
    from astropy.wcs import WCS

    image = np.zeros((48, 64), np.float32)
    path = pipeline.write_restored_image(tmp_path / "r.fits", image, P, ra_deg=10.0, dec_deg=-45.0)
    written = WCS(fits.getheader(path))
    drawn = pipeline.image_wcs(image.shape, P, 10.0, -45.0)
    x, y = np.array([0.0, 63.0, 31.5, 10.0]), np.array([0.0, 47.0, 23.5, 40.0])
    assert np.allclose(written.wcs_pix2world(x, y, 0), drawn.wcs_pix2world(x, y, 0), atol=1e-9)
    # centre between the central pixels, RA increasing to the left, one pixel = pixel_arcsec
    ra, dec = drawn.wcs_pix2world([31.5, 32.5], [23.5, 23.5], 0)
    assert ra[0] == pytest.approx(10.0) and dec[0] == pytest.approx(-45.0)
    step = (ra[0] - ra[1]) * np.cos(np.radians(-45.0)) * 3600.0
    assert step == pytest.approx(P.pixel_arcsec, rel=1e-4)
