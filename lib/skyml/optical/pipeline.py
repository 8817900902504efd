"""Train-or-load of the optical U-Net (the ASID-Light detector of
:mod:`skyml.ctao.models` with one input channel), evaluation of detections
against the simulated stars, and the model file of ``skyml optical-detect``
(``data/models/<profile>/optical_unet.keras``; the U-Net trained on
domain-randomised fields with a local sky subtraction, ``normalise="local"``,
is ``optical_unet_dr.keras``).

The installed sidecar records the range of the training tiles
(:func:`training_range`: robust sky level and noise), computed from them when
the model is installed (outside the cache key, so cached networks are not
retrained), against which :func:`distribution_check` flags an image the
network was not trained for."""

from __future__ import annotations

import numpy as np
from astropy.table import Table, vstack

from ..training import train_cached
from ..ctao import detect, evaluation, models
from .simulate import DENSITIES, OpticalParams, load_tiles, masks, network_input

TASK = "optical-detect"
FILE = "optical_unet.keras"
FILE_DR = "optical_unet_dr.keras"


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


def select_threshold(model, n_val: int, seed: int, p: OpticalParams, low: float = 0.05,
                     normalise: str = "global") -> float:
    """Probability threshold of the LoG blobs maximising F1 on ``n_val``
    validation tiles of every density (stars above S/N = 5)."""
    truths, dets = [], []
    for d in DENSITIES:
        data = load_tiles(n_val, seed, d, p, "val")
        t, dd = evaluate(data, unet_detect(model, data["image"], p, low, normalise))
        truths.append(t)
        dets.append(dd)
    return max(evaluation.best_threshold(vstack(truths), vstack(dets)), low)


def train_unet(n_train: int, n_val: int, seed: int, p: OpticalParams, *, crop_px: int = 64, crops_per_tile: int = 16,
               epochs: int = 8, filters: int = 8, depth: int = 3, batch_size: int = 16, patience: int = 3,
               learning_rate: float = 2e-3, profile: str = "quick", normalise: str = "global"):
    """U-Net trained on ``n_train`` tiles of each density; (model, metadata, history, seconds or None).
    ``metadata["threshold"]`` is the probability threshold chosen on the validation tiles.
    ``normalise``: the input's sky subtraction (:func:`skyml.optical.simulate.network_input`);
    a ``"local"`` network is installed as :data:`FILE_DR`."""
    key = {"n_train": int(n_train), "n_val": int(n_val), "seed": int(seed), "sim": p.to_dict(), "crop_px": int(crop_px),
           "crops_per_tile": int(crops_per_tile), "epochs": int(epochs), "filters": int(filters), "depth": int(depth),
           "batch_size": int(batch_size), "patience": int(patience), "learning_rate": float(learning_rate),
           "version": 3}
    if normalise != "global":
        key["normalise"] = normalise

    def sets(n, split, s):
        xs, ys = [], []
        for d in DENSITIES:
            data = load_tiles(n, seed, d, p, split)
            x, y = _crops(network_input(data["image"], p, normalise), masks(data, p), crop_px, crops_per_tile, s)
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
        meta = {"task": TASK, "input": ("asinh((image - sky) / sky sigma), 3-sigma-clipped" if normalise == "global"
                                        else "asinh((image - local sky) / local sky sigma), photutils Background2D"),
                "normalise": normalise, "sim_params": p.to_dict(),
                "n_crops": int(len(x)), "crop_px": int(crop_px), "profile": profile,
                "threshold": select_threshold(model, n_val, seed, p, normalise=normalise)}
        return model, meta, history

    def input_range():
        return {"training_range": training_range(np.concatenate([load_tiles(n_train, seed, d, p, "train")["image"]
                                                                 for d in DENSITIES]))}

    return train_cached("optical_unet", key, fit, profile, FILE if normalise == "global" else FILE_DR,
                        install_metadata=input_range)


#: an image lies outside the training range when its robust noise is more than this fraction beyond
#: the training tiles' [min, max], or its sky level more than OOD_SKY_TOL_SIGMA times the largest
#: training noise beyond theirs. Chosen on the simulated tiles of notebook 06 (quick profile, 4
#: training tiles per density: sky 299.9-304.1 e, noise 20.0-21.1 e): the validation and test tiles
#: of every density, whole and in every 128-, 64- and 32-px cut-out (32 px is the smallest image the
#: command reads; their sky 296.9-314.3 e, noise 17.5-27.1 e), lie inside. The network's
#: input is (image - sky) / noise, so an image in other units or with its sky subtracted is flagged
#: although the normalisation takes that out: the flag says that the image differs from the
#: training images, not that the detections are wrong
OOD_NOISE_TOL = 0.35
OOD_SKY_TOL_SIGMA = 3.0


def sky_stats(image: np.ndarray) -> tuple[float, float]:
    """(sky, noise) of an image: the median of its finite pixels and 1.4826 ×
    their median absolute deviation (astropy ``mad_std``), after iterative
    3-sigma clipping about the median with that width (astropy
    ``sigma_clip``), so that the stars of a crowded field or of a small
    cut-out hardly move them."""
    from astropy.stats import mad_std, sigma_clip

    v = np.asarray(image, np.float64)
    kept = sigma_clip(v[np.isfinite(v)], sigma=3.0, maxiters=10, cenfunc="median", stdfunc="mad_std",
                      masked=False)
    return float(np.median(kept)), float(mad_std(kept))


def training_range(images: np.ndarray) -> dict:
    """The range of the network's inputs over training tiles (n, ny, nx):
    :func:`sky_stats` [min, max] over the tiles (image units; electrons for
    the simulated tiles)."""
    stats = np.array([sky_stats(im) for im in images])
    return {"sky": [float(stats[:, 0].min()), float(stats[:, 0].max())],
            "noise_mad": [float(stats[:, 1].min()), float(stats[:, 1].max())],
            "statistic": "median and 1.4826 x median absolute deviation of each training tile, 3-sigma clipped",
            "n_tiles": len(stats)}


def distribution_check(image: np.ndarray, metadata: dict) -> dict:
    """Whether an image lies inside the training range its model's sidecar
    records (``training_range``): ``sky`` and ``noise_mad``
    (:func:`sky_stats`), ``out_of_distribution`` (None when the sidecar
    records no range) and ``reason`` (a phrase, empty when inside)."""
    sky, noise = sky_stats(image)
    out = {"sky": sky, "noise_mad": noise, "out_of_distribution": None,
           "reason": "the model records no training range"}
    rng = metadata.get("training_range")
    if rng is None:
        return out
    (s_lo, s_hi), (n_lo, n_hi) = rng["sky"], rng["noise_mad"]
    reasons = []
    margin = OOD_SKY_TOL_SIGMA * n_hi
    if not s_lo - margin <= sky <= s_hi + margin:
        reasons.append(f"sky level {sky:.4g} outside the training range {s_lo:.4g}-{s_hi:.4g}")
    if not n_lo / (1 + OOD_NOISE_TOL) <= noise <= n_hi * (1 + OOD_NOISE_TOL):
        reasons.append(f"robust noise {noise:.3g} outside the training range {n_lo:.3g}-{n_hi:.3g}")
    out.update(out_of_distribution=bool(reasons), reason="; ".join(reasons))
    return out


def unet_detect(model, images: np.ndarray, p: OpticalParams, threshold: float = 0.3,
                normalise: str = "global") -> dict:
    prob = models.predict(model, network_input(images, p, normalise), batch_size=8)[..., 0]
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
