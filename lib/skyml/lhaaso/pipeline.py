"""Train-or-load steps of notebook 08, cached by a hash of their inputs
(:func:`skyml.training.train_cached`); the CNN and the PSF-conditioned
CNN are installed as ``data/models/<profile>/lhaaso_cnn.keras`` and
``lhaaso_psf_conditioned.keras`` for ``skyml lhaaso-deconvolve``."""

from __future__ import annotations

import numpy as np

from ..training import train_cached
from . import models
from .simulate import LHAASOSimParams, load_maps, map_scale, normalise

CNN_FILE = "lhaaso_cnn.keras"
PSF_CNN_FILE = "lhaaso_psf_conditioned.keras"
TASK = "lhaaso-deconvolve"
PSF_TRAIN_SIGMAS = (0.168, 0.265)  # 100 TeV and 25 TeV; 0.239 (40 TeV) is held out


def xy(maps: dict, conditioned: bool = False):
    """(network input, target) of a map set: normalised counts (and PSF channel), normalised truth."""
    scale = map_scale(maps["counts"])
    x = models.as_input(normalise(maps["counts"], scale), maps["sigma1_deg"] if conditioned else None)
    return x, normalise(maps["truth"], scale)[..., None]


def _meta(kind, params, n_train, profile, **extra):
    return {"task": TASK, "model_kind": kind, "input": "counts / mean counts per pixel",
            "output": "intrinsic counts / mean counts per pixel, at the target resolution",
            "target_sigma_deg": params.target_sigma_deg, "sim_params": params.to_dict(),
            "binsz_deg": params.binsz_deg, "n_train": int(n_train), "profile": profile, **extra}


def train_model(kind: str, n_train: int, n_val: int, seed: int, params: LHAASOSimParams, *, epochs: int = 10,
                gan_steps: int = 200, batch_size: int = 32, patience: int = 3, learning_rate: float = 1e-3,
                filters=(32, 16), profile: str = "quick"):
    """Train (or load) ``kind`` in cnn, vae, gan, psf_conditioned, cnn_lhai;
    returns (model, metadata, history, seconds or None if loaded). ``cnn_lhai``
    is the CNN trained for the intrinsic map without smoothing
    (``target_sigma_deg`` = 0, whatever ``params`` says), the truth of the LHAI
    repository's evaluation."""
    if kind == "cnn_lhai":
        params = params.replace(target_sigma_deg=0.0)
    conditioned = kind == "psf_conditioned"
    choices = PSF_TRAIN_SIGMAS if conditioned else None
    key = {"kind": kind, "n_train": int(n_train), "n_val": int(n_val), "seed": int(seed), "sim": params.to_dict(),
           "epochs": int(epochs), "batch_size": int(batch_size), "patience": int(patience),
           "learning_rate": float(learning_rate), "filters": [int(f) for f in filters], "version": 3}
    if kind == "gan":
        key["gan_steps"] = int(gan_steps)

    def fit():
        import keras

        train = load_maps(n_train, seed, params, "train", choices)
        val = load_maps(n_val, seed, params, "val", choices)
        x, y = xy(train, conditioned)
        xv, yv = xy(val, conditioned)
        keras.utils.set_random_seed(int(seed))
        if kind == "gan":
            model, history = models.train_gan(x, y, xv, yv, steps=gan_steps, batch_size=batch_size,
                                              filters=filters, learning_rate=learning_rate, seed=seed)
        else:
            model = (models.build_vae(filters=filters[0], learning_rate=learning_rate, seed=seed) if kind == "vae"
                     else models.build_cnn(2 if conditioned else 1, filters, learning_rate,
                                           name=f"lhaaso_{kind}"))
            history = models.train(model, x, y, xv, yv, epochs=epochs, batch_size=batch_size,
                                   patience=patience, seed=seed)
        extra = {"psf_train_sigma1_deg": list(PSF_TRAIN_SIGMAS)} if conditioned else \
            {"sigma1_deg": params.sigma1_deg}
        return model, _meta(kind, params, n_train, profile, **extra), history

    install = {"cnn": CNN_FILE, "psf_conditioned": PSF_CNN_FILE}.get(kind, f"lhaaso_{kind}.keras")
    return train_cached(f"lhaaso_{kind}", key, fit, profile, install)


def deconvolve(model, counts: np.ndarray, sigma1_deg=None, batch_size: int = 64) -> np.ndarray:
    """Intrinsic-counts estimate (n, ny, nx) of counts maps, in counts per pixel."""
    counts = np.asarray(counts, dtype=np.float64)
    scale = map_scale(counts)
    out = models.predict(model, models.as_input(normalise(counts, scale), sigma1_deg), batch_size)
    return out * scale[:, None, None]
