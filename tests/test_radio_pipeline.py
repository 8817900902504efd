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
