"""Train-or-load of the optical U-Net (the ASID-Light detector of
:mod:`skyml.ctao.models` with one input channel), evaluation of detections
against the simulated stars, and the model file of ``skyml optical-detect``
(``data/models/<profile>/optical_unet.keras``)."""

from __future__ import annotations

import numpy as np
from astropy.table import Table, vstack

from ..training import train_cached
from ..ctao import detect, evaluation, models
from .simulate import DENSITIES, OpticalParams, load_tiles, masks, network_input

TASK = "optical-detect"
FILE = "optical_unet.keras"


def _crops(x, y, crop_px, per_tile, seed):
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 91]))
    xs, ys = [], []
    hi = x.shape[1] - crop_px
    for i in range(len(x)):
        for _ in range(per_tile):
            x0, y0 = int(rng.integers(0, hi + 1)), int(rng.integers(0, hi + 1))
            xs.append(x[i, y0:y0 + crop_px, x0:x0 + crop_px])
            ys.append(y[i, y0:y0 + crop_px, x0:x0 + crop_px])
    return np.stack(xs), np.stack(ys)


def select_threshold(model, n_val: int, seed: int, p: OpticalParams, low: float = 0.05) -> float:
    """Probability threshold of the LoG blobs maximising F1 on ``n_val``
    validation tiles of every density (stars above S/N = 5)."""
    truths, dets = [], []
    for d in DENSITIES:
        data = load_tiles(n_val, seed, d, p, "val")
        t, dd = evaluate(data, unet_detect(model, data["image"], p, low))
        truths.append(t)
        dets.append(dd)
    return max(evaluation.best_threshold(vstack(truths), vstack(dets)), low)


def train_unet(n_train: int, n_val: int, seed: int, p: OpticalParams, *, crop_px: int = 64, crops_per_tile: int = 16,
               epochs: int = 8, filters: int = 8, depth: int = 3, batch_size: int = 16, patience: int = 3,
               learning_rate: float = 2e-3, profile: str = "quick"):
    """U-Net trained on ``n_train`` tiles of each density; (model, metadata, history, seconds or None).
    ``metadata["threshold"]`` is the probability threshold chosen on the validation tiles."""
    key = {"n_train": int(n_train), "n_val": int(n_val), "seed": int(seed), "sim": p.to_dict(), "crop_px": int(crop_px),
           "crops_per_tile": int(crops_per_tile), "epochs": int(epochs), "filters": int(filters), "depth": int(depth),
           "batch_size": int(batch_size), "patience": int(patience), "learning_rate": float(learning_rate),
           "version": 3}

    def sets(n, split, s):
        xs, ys = [], []
        for d in DENSITIES:
            data = load_tiles(n, seed, d, p, split)
            x, y = _crops(network_input(data["image"], p), masks(data, p), crop_px, crops_per_tile, s)
            xs.append(x)
            ys.append(y)
        return np.concatenate(xs), np.concatenate(ys)

    def fit():
        import keras

        x, y = sets(n_train, "train", seed)
        xv, yv = sets(n_val, "val", seed + 1)
        keras.utils.set_random_seed(int(seed))
        model = models.build_unet(1, filters, depth, learning_rate, name="asid_optical_unet")
        history = models.train(model, x, y, xv, yv, epochs=epochs, batch_size=batch_size, patience=patience,
                               seed=seed)
        meta = {"task": TASK, "input": "asinh((image - sky) / sky sigma), 3-sigma-clipped", "sim_params": p.to_dict(),
                "n_crops": int(len(x)), "crop_px": int(crop_px), "profile": profile,
                "threshold": select_threshold(model, n_val, seed, p)}
        return model, meta, history

    return train_cached("optical_unet", key, fit, profile, FILE)


def unet_detect(model, images: np.ndarray, p: OpticalParams, threshold: float = 0.3) -> dict:
    prob = models.predict(model, network_input(images, p), batch_size=8)[..., 0]
    return detect.detect_all(prob, "log", threshold, max_sigma=4.0, num_sigma=4)


def evaluate(data: dict, det: dict, radius_px: float = 2.0):
    """Per-star and per-detection tables with the columns of
    :func:`skyml.ctao.evaluation.evaluate` (``rel_flux`` = flux / S/N=5 limit)."""
    truth_rows, det_rows = [], []
    npix = data["image"].shape[1]
    for i in range(len(data["image"])):
        s = (data["tile"] == i) & (data["x_pix"] > -0.5) & (data["x_pix"] < npix - 0.5) & \
            (data["y_pix"] > -0.5) & (data["y_pix"] < npix - 0.5)
        sel = det["patch"] == i
        d2t, t2d, sep = evaluation.match_patch(det["x_pix"][sel], det["y_pix"][sel], data["x_pix"][s],
                                               data["y_pix"][s], radius_px)
        rel = data["rel_flux"][s]
        score = det["score"][sel]
        truth_rows.append(Table({"patch": np.full(s.sum(), i), "mag": data["mag"][s], "rel_flux": rel,
                                 "kind": np.zeros(s.sum(), int), "overlapping": np.zeros(s.sum(), bool),
                                 "matched": t2d >= 0, "sep_px": sep,
                                 "score": np.where(t2d >= 0, score[np.maximum(t2d, 0)] if len(score) else np.nan,
                                                   np.nan)}))
        det_rows.append(Table({"patch": np.full(sel.sum(), i), "score": score,
                               "matched_rel_flux": np.where(d2t >= 0, rel[np.maximum(d2t, 0)] if len(rel) else np.nan,
                                                            np.nan)}))
    return vstack(truth_rows), vstack(det_rows)


def read_image(path, min_size: int = 32):
    """(image (ny, nx) float64, celestial WCS or None) of a 2D FITS image; every
    problem (missing file, not FITS, no 2D image, too small, NaN) is an
    :class:`skyml.io.InputError`."""
    from pathlib import Path

    from astropy.io import fits

    from ..io import InputError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: input file not found")
    try:
        with fits.open(path) as hdul:
            hdu = next((h for h in hdul if h.data is not None and getattr(h, "is_image", False)), None)
            if hdu is None:
                raise InputError(f"{path}: no image HDU with data")
            data = np.asarray(hdu.data, dtype=float)
            header = hdu.header.copy()
    except InputError:
        raise
    except Exception as err:  # astropy raises several types for a non-FITS file
        raise InputError(f"{path}: not a readable FITS image ({type(err).__name__}: {err})") from err
    data = np.squeeze(data)
    if data.ndim != 2:
        raise InputError(f"{path}: image data of shape {data.shape} is not 2D")
    if min(data.shape) < min_size:
        raise InputError(f"{path}: image of {data.shape[0]}×{data.shape[1]} px is too small "
                         f"(at least {min_size}×{min_size})")
    bad = ~np.isfinite(data)
    if bad.any():
        raise InputError(f"{path}: {int(bad.sum())} pixels are NaN or infinite")
    wcs = None
    if any(k.startswith("CTYPE") for k in header):
        import warnings

        from astropy.wcs import WCS, FITSFixedWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            w = WCS(header)
        wcs = w.celestial if w.has_celestial else None
    return data, wcs
