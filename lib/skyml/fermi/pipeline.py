"""Train-or-load step of the Fermi-LAT analysis, cached by a hash of its inputs.

:func:`train_unet` returns the same trained multi-input U-Net for the same
simulation parameters, split sizes, seed and hyper-parameters, training it
the first time and loading it from ``data/cache/fermi_unet/`` afterwards; the
model is also installed as ``data/models/<profile>/fermi_unet.keras`` where
``skyml fermi-detect`` finds it.
"""

from __future__ import annotations

import time

import numpy as np

from ..training import train_cached
from . import models
from .simulate import FermiSimParams, disk_masks, load_patches, network_inputs

UNET_FILE = "fermi_unet.keras"
TASK = "fermi-detect"


def train_unet(n_train: int, n_val: int, seed: int, params: FermiSimParams, *, epochs: int, filters: int = 8,
               batch_size: int = 16, patience: int = 3, learning_rate: float = 2e-3, profile: str = "quick",
               install_as: str = UNET_FILE, history_needed: bool = True):
    """The multi-input U-Net trained on mock skies (diffuse variant and event
    types of ``params``), installed as ``data/models/<profile>/<install_as>``.
    Returns (model, metadata, history, seconds of training or None if loaded);
    ``history_needed=False`` lets an empty cache adopt the published model even
    when its sidecar has no learning curve (:func:`skyml.training.train_cached`)."""
    key = {"n_train": int(n_train), "n_val": int(n_val), "seed": int(seed), "sim": params.to_dict(),
           "epochs": int(epochs), "filters": int(filters), "batch_size": int(batch_size),
           "patience": int(patience), "learning_rate": float(learning_rate), "version": 1}

    def fit():
        train = load_patches(n_train, seed, params, "train")
        val = load_patches(n_val, seed, params, "val")
        x, xv = network_inputs(train["counts"], params), network_inputs(val["counts"], params)
        y, yv = disk_masks(train, params), disk_masks(val, params)
        import keras

        keras.utils.set_random_seed(int(seed))
        model = models.build_unet([a.shape[1:] for a in x], filters=filters, learning_rate=learning_rate)
        history = models.train(model, x, y, xv, yv, epochs=epochs, batch_size=batch_size, patience=patience,
                               seed=seed)
        meta = {"task": TASK, "input": "log1p(counts) per resolution group, finest first",
                "sim_params": params.to_dict(), "n_train": int(n_train), "profile": profile}
        return model, meta, history

    return train_cached("fermi_unet", key, fit, profile, install_as, history_needed=history_needed)


def predict_maps(model, counts: np.ndarray, params: FermiSimParams, batch_size: int = 64):
    """Probability maps (n, npix, npix) and the seconds per patch of the prediction."""
    x = network_inputs(counts, params)
    t0 = time.perf_counter()
    prob = models.predict(model, x, batch_size=batch_size)
    return prob, (time.perf_counter() - t0) / len(counts)
