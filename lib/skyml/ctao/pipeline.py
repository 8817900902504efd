"""Train-or-load steps of notebook 06 (cached by a hash of their inputs with
:func:`skyml.training.train_cached`), prediction on full patches, and the
counts-cube input/output of ``skyml ctao-detect``.

Networks are trained on ``crop_px`` crops of the training patches
(:func:`skyml.ctao.simulate.training_crops`) and, being fully convolutional,
applied to whole 512×512 patches. Installed models:
``data/models/<profile>/ctao_unet.keras`` (U-Net, log scaling; the CLI's
default), ``ctao_unet_noscale.keras`` and ``ctao_cedirnet.keras``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..training import train_cached
from ..io import InputError
from ..io import read_counts_cube as read_cube
from . import detect, models, simulate
from .simulate import SurveyParams

TASK = "ctao-detect"
FILES = {"unet_log": "ctao_unet.keras", "unet_log_noscale": "ctao_unet_noscale.keras",
         "cedirnet": "ctao_cedirnet.keras"}


def train_model(kind: str, n_train: int, n_val: int, seed: int, p: SurveyParams, *, crop_px: int = 128,
                crops_per_patch: int = 16, epochs: int = 6, filters: int = 8, depth: int = 3, batch_size: int = 16,
                patience: int = 3, learning_rate: float = 2e-3, profile: str = "quick"):
    """Train (or load) ``kind`` in :data:`FILES`; returns (model, metadata, history, seconds or None)."""
    if kind not in FILES:
        raise ValueError(f"unknown model kind {kind!r}; choose from {tuple(FILES)}")
    scaling = "linear" if kind == "unet_log_noscale" else "log"
    key = {"kind": kind, "n_train": int(n_train), "n_val": int(n_val), "seed": int(seed), "sim": p.to_dict(),
           "crop_px": int(crop_px), "crops_per_patch": int(crops_per_patch), "epochs": int(epochs),
           "filters": int(filters), "depth": int(depth), "batch_size": int(batch_size), "patience": int(patience),
           "learning_rate": float(learning_rate), "version": 5}

    def fit():
        import keras

        train = simulate.load_patches(n_train, seed, p, "train")
        val = simulate.load_patches(n_val, seed, p, "val")
        c, mask, direc = simulate.training_crops(train, p, crop_px, crops_per_patch, seed)
        cv, maskv, direcv = simulate.training_crops(val, p, crop_px, crops_per_patch, seed + 1)
        x, xv = simulate.network_input(c, p, scaling), simulate.network_input(cv, p, scaling)
        keras.utils.set_random_seed(int(seed))
        if kind == "cedirnet":
            model = models.build_cedirnet(simulate.N_BINS, filters, depth, learning_rate)
            y, yv = direc, direcv
        else:
            model = models.build_unet(simulate.N_BINS, filters, depth, learning_rate, name=f"asid_{kind}")
            y, yv = mask, maskv
        history = models.train(model, x, y, xv, yv, epochs=epochs, batch_size=batch_size, patience=patience,
                               seed=seed)
        meta = {"task": TASK, "model_kind": kind, "scaling": scaling, "sim_params": p.to_dict(),
                "energy_edges_tev": simulate.ENERGY_EDGES_TEV.tolist(), "binsz_deg": p.binsz_deg,
                "n_train_patches": int(n_train), "n_crops": int(len(x)), "crop_px": int(crop_px),
                "profile": profile}
        return model, meta, history

    return train_cached(f"ctao_{kind}", key, fit, profile, FILES[kind])


def predict(model, counts: np.ndarray, p: SurveyParams, scaling: str, batch_size: int = 2):
    """Network outputs on full patches (n, ny, nx) for the U-Net, (n, ny, nx, 3)
    for CeDiRNet, and the seconds per patch."""
    x = simulate.network_input(counts, p, scaling)
    t0 = time.perf_counter()
    out = models.predict(model, x, batch_size=batch_size)
    seconds = (time.perf_counter() - t0) / len(x)
    return (out[..., 0] if out.shape[-1] == 1 else out), seconds


def detect_patches(model, kind: str, counts: np.ndarray, p: SurveyParams, threshold: float, **kwargs):
    """Detections (flat arrays patch, x_pix, y_pix, score) and seconds per patch."""
    scaling = "linear" if kind == "unet_log_noscale" else "log"
    out, sec = predict(model, counts, p, scaling)
    t0 = time.perf_counter()
    det = detect.detect_all(out, "cedirnet" if kind == "cedirnet" else "log", threshold, **kwargs)
    return det, sec + (time.perf_counter() - t0) / len(counts), out


# --------------------------------------------------------------------------- counts cubes (CLI)
def write_counts_cube(path, counts: np.ndarray, p: SurveyParams, overwrite: bool = False) -> Path:
    """Write a (3, ny, nx) counts cube on the patch grid (gammapy format)."""
    from gammapy.maps import Map

    e, _ = simulate.energy_axes()
    counts = np.asarray(counts)
    g = simulate.geom(p, e)
    if counts.shape[1:] != (p.npix, p.npix):
        from astropy.coordinates import SkyCoord
        from gammapy.maps import WcsGeom

        g = WcsGeom.create(skydir=SkyCoord(p.centre_glon, p.centre_glat, unit="deg", frame="galactic"),
                           npix=(counts.shape[2], counts.shape[1]), binsz=p.binsz_deg, frame="galactic",
                           proj="CAR", axes=[e])
    Map.from_geom(g, data=counts.astype(np.float32), unit="").write(path, overwrite=overwrite)
    return Path(path)


def read_counts_cube(path, binsz_deg: float = 0.02, min_size: int = 16):
    """(counts (3, ny, nx), celestial WCS, description) of a WCS counts cube
    with the three energy bins (:func:`skyml.io.read_counts_cube`); every
    problem is an :class:`InputError`."""
    import astropy.units as u

    data, wcs, _ = read_cube(path, simulate.ENERGY_EDGES_TEV * u.TeV, binsz_deg=binsz_deg)
    if data.ndim != 3 or min(data.shape[1:]) < min_size:
        raise InputError(f"{path}: cube shape {data.shape} is not (3, ny, nx) with ny, nx >= {min_size}")
    ny, nx = data.shape[1:]
    return data, wcs, f"{nx}×{ny} px × {simulate.N_BINS} energy bins"


def detections_table(x, y, score, wcs, score_name: str = "probability"):
    """QTable of detections: glon, glat, ra, dec [deg], score, x_pix, y_pix."""
    import astropy.units as u
    from astropy.table import QTable

    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x):
        sky = wcs.pixel_to_world(x, y)
        gal, icrs = sky.galactic, sky.icrs
        cols = (gal.l.deg, gal.b.deg, icrs.ra.deg, icrs.dec.deg)
    else:
        cols = (np.zeros(0),) * 4
    table = QTable({"glon": cols[0] * u.deg, "glat": cols[1] * u.deg, "ra": cols[2] * u.deg,
                    "dec": cols[3] * u.deg, score_name: np.asarray(score, float), "x_pix": x, "y_pix": y})
    table["x_pix"].description = "input image column, 0-based, pixel centres at integers"
    table["y_pix"].description = "input image row, 0-based, pixel centres at integers"
    return table
