"""Train-or-load steps of notebook 08, cached by a hash of their inputs
(:func:`skyml.training.train_cached`); the CNN and the PSF-conditioned
CNN are installed as ``data/models/<profile>/lhaaso_cnn.keras`` and
``lhaaso_psf_conditioned.keras`` for ``skyml lhaaso-deconvolve``."""

from __future__ import annotations

import numpy as np

from ..training import dihedral_mean, train_cached
from . import models, psf
from .simulate import (
    RANDOM_SIGMA_SCALE,
    RANDOM_TAIL_RATIO,
    RANDOM_TAIL_WEIGHT,
    TRAIN_IMAGES,
    LHAASOSimParams,
    load_maps,
    load_randomised,
    map_scale,
    normalise,
)

CNN_FILE = "lhaaso_cnn.keras"
PSF_CNN_FILE = "lhaaso_psf_conditioned.keras"
TASK = "lhaaso-deconvolve"
PSF_TRAIN_SIGMAS = (0.168, 0.265)  # 100 TeV and 25 TeV; 0.239 (40 TeV) is held out
UNET_REDUCE_LR_PATIENCE = 2  # epochs without a lower validation loss before the U-Net's learning rate is halved
UNET_LOSS = "minmax_log_mse"  # the U-Net's loss, one of skyml.lhaaso.models.LOSSES
UNET_PSF_UNKNOWN_FRACTION = 0.25  # share of the U-Net's training and validation maps told that their PSF is unknown
UNET_AUGMENT = "dihedral"  # every epoch turns each training pair by a random rotation/flip (models.dihedral_pairs)


def nominal_psf(params: LHAASOSimParams) -> tuple[float, float, float]:
    """(core width [deg], tail ratio, tail weight) of the simulations' nominal KM2A PSF."""
    return float(params.sigma1_deg), float(psf.TAIL_RATIO), float(psf.tail_weight())


def unet_conditions(maps: dict, seed: int, split: str) -> np.ndarray:
    """The U-Net's condition channels for randomised maps: each map's own PSF,
    except a share :data:`UNET_PSF_UNKNOWN_FRACTION` of the maps, drawn from
    ``seed`` and ``split``, told that the PSF is unknown."""
    n = len(maps["counts"])
    rng = np.random.default_rng([int(seed), {"train": 7_000_003, "val": 7_000_019}[split]])
    known = rng.random(n) >= UNET_PSF_UNKNOWN_FRACTION
    return models.psf_conditions(n, maps["sigma1_deg"], maps["tail_ratio"], maps["tail_weight"], known)


def xy(maps: dict, conditioned: bool = False, conditions=None):
    """(network input, target) of a map set: normalised counts (and PSF channel,
    or the ``conditions`` channels), normalised truth."""
    scale = map_scale(maps["counts"])
    x = models.as_input(normalise(maps["counts"], scale), maps["sigma1_deg"] if conditioned else None, conditions)
    return x, normalise(maps["truth"], scale)[..., None]


def _meta(kind, params, n_train, profile, **extra):
    return {"task": TASK, "model_kind": kind, "input": "counts / mean counts per pixel",
            "output": "intrinsic counts / mean counts per pixel, at the target resolution",
            "target_sigma_deg": params.target_sigma_deg, "sim_params": params.to_dict(),
            "binsz_deg": params.binsz_deg, "n_train": int(n_train), "profile": profile, **extra}


def train_model(kind: str, n_train: int, n_val: int, seed: int, params: LHAASOSimParams, *, epochs: int = 10,
                gan_steps: int = 200, batch_size: int = 32, patience: int = 3, learning_rate: float = 1e-3,
                filters=(32, 16), unet_filters=(16, 32, 64), unet_epochs: int | None = None,
                unet_n_train: int | None = None, profile: str = "quick"):
    """Train (or load) ``kind`` in cnn, vae, gan, psf_conditioned, cnn_lhai,
    unet_lhai; returns (model, metadata, history, seconds or None if loaded).
    ``cnn_lhai`` is the CNN trained for the intrinsic map without smoothing
    (``target_sigma_deg`` = 0, whatever ``params`` says), the truth of the LHAI
    repository's evaluation. ``unet_lhai`` is the U-Net of widths
    ``unet_filters`` trained for the same truth on the randomised sky and
    instrument of :func:`skyml.lhaaso.simulate.simulate_randomised` (training
    and validation maps alike), so that it meets other PSFs and morphologies,
    told each map's PSF (:func:`unet_conditions`: three quarters of the maps
    their own PSF, the others that it is unknown), with the loss of that protocol, per map the log of its squared error
    (:func:`skyml.lhaaso.models.minmax_log_mse`: each map counts by its PSNR),
    ``unet_epochs`` (default ``epochs``) and the learning rate halved after 2
    epochs without progress on validation, on ``unet_n_train`` training maps
    (default ``n_train``), each turned anew every epoch by a random rotation
    or flip (:data:`UNET_AUGMENT`; a network of 118,561 weights learnt 7,000
    fixed maps partly by heart: its training loss ended 0.24 below its
    validation loss)."""
    if kind in ("cnn_lhai", "unet_lhai"):
        params = params.replace(target_sigma_deg=0.0)
    randomised = kind == "unet_lhai"
    if randomised and unet_n_train is not None:
        n_train = int(unet_n_train)
    conditioned = kind == "psf_conditioned"
    choices = PSF_TRAIN_SIGMAS if conditioned else None
    randomisation = {"sigma_scale": list(RANDOM_SIGMA_SCALE), "tail_ratio": list(RANDOM_TAIL_RATIO),
                     "tail_weight": list(RANDOM_TAIL_WEIGHT), "pictures": list(TRAIN_IMAGES)}

    def maps_of(n, split):
        return load_randomised(n, seed, params, split) if randomised else load_maps(n, seed, params, split, choices)
    key = {"kind": kind, "n_train": int(n_train), "n_val": int(n_val), "seed": int(seed), "sim": params.to_dict(),
           "epochs": int(epochs), "batch_size": int(batch_size), "patience": int(patience),
           "learning_rate": float(learning_rate), "filters": [int(f) for f in filters], "version": 3}
    if kind == "gan":
        key["gan_steps"] = int(gan_steps)
    if randomised:
        epochs = epochs if unet_epochs is None else unet_epochs
        key.update(filters=[int(f) for f in unet_filters], randomisation=randomisation, epochs=int(epochs),
                   loss=UNET_LOSS, reduce_lr_patience=UNET_REDUCE_LR_PATIENCE, version=6, augment=UNET_AUGMENT,
                   psf_conditions=models.PSF_CONDITIONS, psf_unknown_fraction=UNET_PSF_UNKNOWN_FRACTION)

    def fit():
        import keras

        train, val = maps_of(n_train, "train"), maps_of(n_val, "val")
        x, y = xy(train, conditioned, unet_conditions(train, seed, "train") if randomised else None)
        xv, yv = xy(val, conditioned, unet_conditions(val, seed, "val") if randomised else None)
        keras.utils.set_random_seed(int(seed))
        if kind == "gan":
            model, history = models.train_gan(x, y, xv, yv, steps=gan_steps, batch_size=batch_size,
                                              filters=filters, learning_rate=learning_rate, seed=seed)
        else:
            if kind == "vae":
                model = models.build_vae(filters=filters[0], learning_rate=learning_rate, seed=seed)
            elif randomised:
                model = models.build_unet(1 + models.PSF_CONDITIONS, unet_filters, learning_rate,
                                          name=f"lhaaso_{kind}", loss=UNET_LOSS)
            else:
                model = models.build_cnn(2 if conditioned else 1, filters, learning_rate, name=f"lhaaso_{kind}")
            history = models.train(model, x, y, xv, yv, epochs=epochs, batch_size=batch_size, patience=patience,
                                   seed=seed, reduce_lr_patience=UNET_REDUCE_LR_PATIENCE if randomised else None,
                                   dihedral=randomised and UNET_AUGMENT == "dihedral")
        extra = {"psf_train_sigma1_deg": list(PSF_TRAIN_SIGMAS)} if conditioned else \
            {"sigma1_deg": params.sigma1_deg}
        if randomised:
            extra.update(randomisation=randomisation, architecture="U-Net", unet_filters=[int(f) for f in unet_filters],
                         loss=UNET_LOSS, psf_conditions="known, sigma1/0.265 deg, (sigma2/sigma1)/2, tail weight/0.1",
                         psf_unknown_fraction=UNET_PSF_UNKNOWN_FRACTION, augment=UNET_AUGMENT)
        return model, _meta(kind, params, n_train, profile, **extra), history

    install = {"cnn": CNN_FILE, "psf_conditioned": PSF_CNN_FILE}.get(kind, f"lhaaso_{kind}.keras")
    return train_cached(f"lhaaso_{kind}", key, fit, profile, install)


def deconvolve(model, counts: np.ndarray, sigma1_deg=None, batch_size: int = 64, dihedral: bool = False,
               conditions=None) -> np.ndarray:
    """Intrinsic-counts estimate (n, ny, nx) of counts maps, in counts per pixel.
    ``sigma1_deg``: the PSF-conditioned CNN's PSF width; ``conditions``: the
    U-Net's condition channels (:func:`skyml.lhaaso.models.psf_conditions`).
    ``dihedral``: the mean of the estimates of the map's 8 rotations by 90° and
    flips, each turned back (test-time augmentation; the PSF is round, so each
    is as valid an input as the map itself)."""
    counts = np.asarray(counts, dtype=np.float64)
    scale = map_scale(counts)
    x = normalise(counts, scale)
    if not dihedral:
        return models.predict(model, models.as_input(x, sigma1_deg, conditions), batch_size) * scale[:, None, None]
    mean = dihedral_mean(lambda xt: models.predict(model, models.as_input(xt, sigma1_deg, conditions), batch_size), x,
                         axes=(1, 2))
    return mean * scale[:, None, None]
