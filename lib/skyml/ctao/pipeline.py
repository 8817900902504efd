"""Train-or-load steps of notebook 06 (cached by a hash of their inputs with
:func:`skyml.training.train_cached`), prediction on full patches, and the
counts-cube input/output of ``skyml ctao-detect``.

Networks are trained on ``crop_px`` crops of the training patches
(:func:`skyml.ctao.simulate.training_crops`) and, being fully convolutional,
applied to whole 512×512 patches. Installed models:
``data/models/<profile>/ctao_unet.keras`` (U-Net, log scaling; the CLI's
default), ``ctao_unet_noscale.keras``, ``ctao_cedirnet.keras`` and
``ctao_unet_dr.keras`` (``unet_log_dr``: the U-Net trained for any plausible
sky, on domain-randomised patches, :func:`skyml.ctao.simulate.randomised_params`,
with its input divided by a local background estimate,
:func:`skyml.ctao.simulate.local_background`, instead of the mean IRF background;
notebook 06 trains it on skies with PSF tails, starting from the nominal U-Net's
weights: ``psf_tails`` and ``init_model`` of :func:`train_model`) and
``ctao_cedirnet_dr.keras`` (``cedirnet_dr``: CeDiRNet trained the same way,
from the nominal CeDiRNet's weights).

Each installed sidecar records the range of the training inputs
(:func:`training_range`: the background level per energy bin,
:func:`background_level`, over windows of the training patches), against
which :func:`distribution_check` flags a counts cube the network was not
trained for. The range is computed from the training patches when the model
is installed, outside the cache key, so it does not retrain cached networks.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..training import dihedral_mean, train_cached, weights_digest
from ..io import InputError
from ..io import read_counts_cube as read_cube
from . import detect, evaluation, models, simulate
from .simulate import SurveyParams

TASK = "ctao-detect"
FILES = {"unet_log": "ctao_unet.keras", "unet_log_noscale": "ctao_unet_noscale.keras",
         "cedirnet": "ctao_cedirnet.keras", "unet_log_dr": "ctao_unet_dr.keras",
         "cedirnet_dr": "ctao_cedirnet_dr.keras"}
#: the networks trained on the domain-randomised sky, with their input divided by a local background
RANDOMISED = ("unet_log_dr", "cedirnet_dr")


def is_cedirnet(kind: str) -> bool:
    """Whether ``kind`` is a centre-direction network (three output channels, its own read-out)."""
    return kind in ("cedirnet", "cedirnet_dr")


def input_mode(kind: str) -> tuple[str, str]:
    """(scaling, normalise) of the network input of ``kind`` (:func:`skyml.ctao.simulate.network_input`)."""
    return ("linear" if kind == "unet_log_noscale" else "log", "local" if kind in RANDOMISED else "mean")


def training_params(kind: str, p: SurveyParams, psf_tails: bool = False) -> SurveyParams:
    """The simulation a network of ``kind`` is trained on: randomised for :data:`RANDOMISED` (with PSF
    tails drawn per patch where ``psf_tails``; :func:`skyml.ctao.simulate.randomised_params`), else ``p``."""
    if kind in RANDOMISED:
        return simulate.randomised_params(p, psf_tails=psf_tails)
    if psf_tails:
        raise ValueError(f"psf_tails is an option of the randomised skies of {RANDOMISED}, not of {kind!r}")
    return p


def train_model(kind: str, n_train: int, n_val: int, seed: int, p: SurveyParams, *, crop_px: int = 128,
                crops_per_patch: int = 16, epochs: int = 6, filters: int = 8, depth: int = 3, batch_size: int = 16,
                patience: int = 3, learning_rate: float = 2e-3, profile: str = "quick", loss: str = "bce_dice",
                fresh_crops: bool = True, psf_tails: bool = False, init_model=None,
                reduce_lr_patience: int | None = None):
    """Train (or load) ``kind`` in :data:`FILES`; returns (model, metadata, history, seconds or None).
    ``loss``: the U-Net's loss (:data:`skyml.ctao.models.UNET_LOSSES`; part of the cache key only when
    it is not the default). ``fresh_crops``: every epoch draws its own ``crops_per_patch`` crops of each
    training patch, each turned by a random symmetry of the square
    (:func:`skyml.ctao.simulate.dihedral_crops`; :class:`skyml.ctao.models.EpochCrops`), instead of
    one fixed set of crops for all epochs, which a network of a few hundred thousand weights can learn by
    heart (with fixed crops of 100 patches the nominal U-Net's validation loss was lowest after its
    first epoch). The validation crops stay fixed. ``psf_tails`` (``unet_log_dr`` only): its randomised
    training and validation skies also draw a PSF tail per patch (:func:`training_params`; the tail
    ranges enter the cache key through the simulation parameters). ``init_model``: a warm start, a
    Keras model of the same architecture whose weights the network starts from instead of a random
    initialisation (e.g. the nominal U-Net for ``unet_log_dr``); the digest of those weights
    (:func:`weights_digest`) is part of the cache key and the sidecar. ``reduce_lr_patience``: the
    learning rate is halved after that many epochs without a lower validation loss
    (:func:`skyml.ctao.models.train`; in the cache key only when set)."""
    if kind not in FILES:
        raise ValueError(f"unknown model kind {kind!r}; choose from {tuple(FILES)}")
    scaling, normalise = input_mode(kind)
    p = training_params(kind, p, psf_tails)
    key = {"kind": kind, "n_train": int(n_train), "n_val": int(n_val), "seed": int(seed), "sim": p.to_dict(),
           "crop_px": int(crop_px), "crops_per_patch": int(crops_per_patch), "epochs": int(epochs),
           "filters": int(filters), "depth": int(depth), "batch_size": int(batch_size), "patience": int(patience),
           "learning_rate": float(learning_rate), "version": 5}
    if normalise != "mean":
        key["normalise"] = normalise
    if fresh_crops:
        key["crops"] = "per_epoch_dihedral"
    if loss != "bce_dice":
        if is_cedirnet(kind) or loss not in models.UNET_LOSSES:
            raise ValueError(f"loss {loss!r} is not a U-Net loss for {kind!r}; choose from {tuple(models.UNET_LOSSES)}")
        key["loss"] = loss
    if reduce_lr_patience is not None:
        key["reduce_lr_patience"] = int(reduce_lr_patience)
    init_weights = None
    if init_model is not None:
        init_weights = [np.array(w) for w in init_model.get_weights()]
        key["init_weights_sha256"] = weights_digest(init_model)

    def inputs(data, s, turn=False, background=None):
        if normalise == "mean":
            c, mask, direc = simulate.training_crops(data, p, crop_px, crops_per_patch, s)
            if turn:
                c, mask, direc = simulate.dihedral_crops(c, mask, direc, s)
            return simulate.network_input(c, p, scaling), mask, direc
        # the local background of the whole patch, cut with the crop (as on a full patch at test time)
        background = simulate.local_background(data["counts"]) if background is None else background
        c, mask, direc, b = simulate.training_crops(data, p, crop_px, crops_per_patch, s, extra=background)
        if turn:
            c, mask, direc, b = simulate.dihedral_crops(c, mask, direc, s, extra=b)
        return simulate.network_input(c, p, scaling, normalise, background=b), mask, direc

    def fit():
        import keras

        train = simulate.load_patches(n_train, seed, p, "train")
        val = simulate.load_patches(n_val, seed, p, "val")
        xv, maskv, direcv = inputs(val, seed + 1)
        target = 2 if is_cedirnet(kind) else 1
        if fresh_crops:
            background = None if normalise == "mean" else simulate.local_background(train["counts"])

            def draw(epoch):
                crops = inputs(train, (seed, epoch + 1), turn=True, background=background)
                return crops[0], crops[target]

            x, y = models.EpochCrops(draw, batch_size, seed), None
            n_crops = len(x.x)
        else:
            crops = inputs(train, seed)
            x, y, n_crops = crops[0], crops[target], len(crops[0])
        yv = (xv, maskv, direcv)[target]
        keras.utils.set_random_seed(int(seed))
        if is_cedirnet(kind):
            model = models.build_cedirnet(simulate.N_BINS, filters, depth, learning_rate)
        else:
            model = models.build_unet(simulate.N_BINS, filters, depth, learning_rate, name=f"asid_{kind}",
                                      loss=loss)
        if init_weights is not None:
            shapes = [tuple(w.shape) for w in model.get_weights()]
            if shapes != [w.shape for w in init_weights]:
                raise ValueError(f"init_model's weights do not fit a {kind!r} network of filters={filters}, "
                                 f"depth={depth}")
            model.set_weights(init_weights)
        history = models.train(model, x, y, xv, yv, epochs=epochs, batch_size=batch_size, patience=patience,
                               seed=seed, reduce_lr_patience=reduce_lr_patience)
        meta = {"task": TASK, "model_kind": kind, "scaling": scaling, "normalise": normalise,
                "sim_params": p.nominal().to_dict(), "training_sim_params": p.to_dict(),
                "energy_edges_tev": simulate.ENERGY_EDGES_TEV.tolist(), "binsz_deg": p.binsz_deg,
                "n_train_patches": int(n_train), "n_crops": int(n_crops), "crop_px": int(crop_px), "loss": loss,
                "crops": "drawn per epoch, turned" if fresh_crops else "fixed",
                "profile": profile}
        if init_weights is not None:
            meta["init_weights_sha256"] = key["init_weights_sha256"]
        return model, meta, history

    def input_range():
        return {"training_range": training_range(simulate.load_patches(n_train, seed, p, "train")["counts"])}

    return train_cached(f"ctao_{kind}", key, fit, profile, FILES[kind], install_metadata=input_range)


# --------------------------------------------------------------------------- training range
#: side (px) of the blocks whose mean counts per pixel :func:`background_level` takes the median of:
#: 64 pixels hold a few counts even in the 0.788-8.88 TeV bin (about 0.1 counts/px), so the median is
#: not stuck at zero, and sources cover a minority of blocks
BKG_BLOCK_PX = 8
#: side (px) of the windows of a training patch whose background levels make the training range: the
#: background varies about tenfold across a patch (pointing offsets) and the network saw every part
#: of it in its crops; 32 px (16 blocks) follows that variation down to cubes of 16 px (the smallest
#: that ``skyml ctao-detect`` reads) while a source covering a few blocks does not move the median
BKG_WINDOW_PX = 32
#: a cube's background level in a bin is outside the training range when it is above (1 + tol) times
#: the largest or below the smallest / (1 + tol) of the training windows. Chosen on the simulated
#: survey of notebook 06 (quick profile: 16 training patches, range 0.67-6.8 counts/px in the
#: 0.07-0.788 TeV bin): every 16-, 32-, 64- and 128-px window and every whole patch of its validation
#: and test patches lies inside, while 5 times the background of a whole patch (18 counts/px) or of
#: a 64-px cube at its centre (29) is outside (a 64-px cube from a patch corner, where the
#: background is lowest, is still inside at 5 times it)
OOD_BKG_TOL = 0.5
#: a bin is not checked when its largest training level is below this many counts per block: the
#: median over blocks cannot measure it
MIN_BLOCK_COUNTS = 2.0


def _block_means(counts: np.ndarray, block: int) -> np.ndarray:
    """(..., n_bins, ny // block, nx // block) mean counts per pixel of whole blocks."""
    c = np.asarray(counts, np.float64)
    ny, nx = (c.shape[-2] // block) * block, (c.shape[-1] // block) * block
    c = c[..., :ny, :nx]
    return c.reshape(c.shape[:-2] + (ny // block, block, nx // block, block)).mean(axis=(-3, -1))


def background_level(counts: np.ndarray) -> np.ndarray:
    """Robust background per energy bin of a counts cube (n_bins, ny, nx):
    the median over :data:`BKG_BLOCK_PX`² blocks of their mean counts per
    pixel (rows and columns that do not fill a block are left out; a cube
    smaller than one block is one block)."""
    c = np.asarray(counts)
    b = min(BKG_BLOCK_PX, *c.shape[-2:])
    blocks = _block_means(c, b)
    return np.median(blocks.reshape(len(c), -1), axis=1)


def training_range(counts: np.ndarray) -> dict:
    """The range of the network's inputs over training patches (n, n_bins,
    ny, nx): :func:`background_level` of every :data:`BKG_WINDOW_PX`-px
    window, [min, max] per energy bin (counts per pixel)."""
    blocks = _block_means(counts, BKG_BLOCK_PX)  # (n, n_bins, by, bx)
    k = BKG_WINDOW_PX // BKG_BLOCK_PX
    n, nb, by, bx = blocks.shape
    by, bx = (by // k) * k, (bx // k) * k
    if by == 0 or bx == 0:
        raise ValueError(f"training patches smaller than one {BKG_WINDOW_PX}-px window")
    w = blocks[..., :by, :bx].reshape(n, nb, by // k, k, bx // k, k)
    levels = np.median(w.transpose(0, 2, 4, 1, 3, 5).reshape(-1, nb, k * k), axis=-1)  # (windows, n_bins)
    return {"background_counts_per_px": [[float(lo), float(hi)] for lo, hi in zip(levels.min(0), levels.max(0))],
            "statistic": f"median over {BKG_BLOCK_PX}x{BKG_BLOCK_PX}-px blocks of their mean counts per pixel, "
                         f"per energy bin, in {BKG_WINDOW_PX}x{BKG_WINDOW_PX}-px windows of the training patches",
            "block_px": BKG_BLOCK_PX, "window_px": BKG_WINDOW_PX, "n_patches": int(n), "n_windows": len(levels)}


def distribution_check(counts: np.ndarray, metadata: dict) -> dict:
    """Whether a counts cube (n_bins, ny, nx) lies inside the training range
    its model's sidecar records (``training_range``): ``background``
    (:func:`background_level` per bin), ``out_of_distribution`` (None when the
    sidecar records no range) and ``reason`` (a phrase, empty when inside)."""
    level = background_level(counts)
    out = {"background": [float(v) for v in level], "out_of_distribution": None,
           "reason": "the model records no training range"}
    rng = metadata.get("training_range")
    if rng is None:
        return out
    block = float(rng.get("block_px", BKG_BLOCK_PX)) ** 2
    edges = metadata.get("energy_edges_tev", simulate.ENERGY_EDGES_TEV.tolist())
    reasons = []
    for k, ((lo, hi), v) in enumerate(zip(rng["background_counts_per_px"], level)):
        if hi * block < MIN_BLOCK_COUNTS:
            continue
        if not lo / (1 + OOD_BKG_TOL) <= v <= hi * (1 + OOD_BKG_TOL):
            reasons.append(f"background {v:.3g} counts/px in the {edges[k]:g}-{edges[k + 1]:g} TeV bin, "
                           f"training {lo:.3g}-{hi:.3g}")
    out.update(out_of_distribution=bool(reasons), reason="; ".join(reasons))
    return out


def predict(model, counts: np.ndarray, p: SurveyParams, scaling: str, batch_size: int = 2, normalise: str = "mean",
            dihedral: bool = False):
    """Network outputs on full patches (n, ny, nx) for the U-Net, (n, ny, nx, 3)
    for CeDiRNet, and the seconds per patch (input normalisation included).
    ``dihedral``: the U-Net's probability is the mean over the patch's 8
    rotations by 90° and flips, each turned back
    (:func:`skyml.training.dihedral_mean`; 8 times the prediction time). Not for
    CeDiRNet, whose direction vectors would have to turn with the image."""
    if dihedral and model.output_shape[-1] != 1:
        raise ValueError("dihedral read-out: only for a network with one output channel (a U-Net's probability)")
    t0 = time.perf_counter()
    x = simulate.network_input(counts, p, scaling, normalise)
    t_in = time.perf_counter() - t0
    t0 = time.perf_counter()
    if dihedral:
        out = dihedral_mean(lambda xt: models.predict(model, xt, batch_size=batch_size), x, axes=(1, 2))
        out = out.astype(np.float32)
    else:
        out = models.predict(model, x, batch_size=batch_size)
    seconds = (time.perf_counter() - t0 + t_in) / len(x)
    return (out[..., 0] if out.shape[-1] == 1 else out), seconds


def detect_patches(model, kind: str, counts: np.ndarray, p: SurveyParams, threshold: float, dihedral: bool = False,
                   **kwargs):
    """Detections (flat arrays patch, x_pix, y_pix, score), seconds per patch and the network outputs;
    ``dihedral``: the U-Net read out on the 8 orientations of each patch (:func:`predict`)."""
    scaling, normalise = input_mode(kind)
    out, sec = predict(model, counts, p, scaling, normalise=normalise, dihedral=dihedral)
    t0 = time.perf_counter()
    det = detect.detect_all(out, "cedirnet" if is_cedirnet(kind) else "log", threshold, **kwargs)
    return det, sec + (time.perf_counter() - t0) / len(counts), out


def validation_readouts(model, kind: str, val_sets: dict, p: SurveyParams, low: float, radius_deg: float,
                        readouts=("plain", "dihedral")) -> dict:
    """Each read-out of a network (``"plain"``: the patch as given; ``"dihedral"``: the mean over its 8
    orientations, U-Nets only) scored on validation patches only: ``val_sets`` maps a name to simulated
    patches (:func:`skyml.ctao.simulate.load_patches`), pooled for the score threshold at maximum F1 above
    sensitivity (at least ``low``). Returns, per read-out, ``threshold``, ``f1`` (pooled), ``f1_<name>`` per
    set, and ``dets``, the detections above ``low`` per set; ``chosen`` is the read-out of highest pooled F1
    (the first of ``readouts`` on a tie)."""
    res = {}
    for readout in readouts:
        if readout not in ("plain", "dihedral"):
            raise ValueError(f"unknown read-out {readout!r}; choose 'plain' or 'dihedral'")
        dets = {name: detect_patches(model, kind, v["counts"], p, low, dihedral=readout == "dihedral")[0]
                for name, v in val_sets.items()}
        ev = {name: evaluation.evaluate(v, dets[name], p, radius_deg) for name, v in val_sets.items()}
        pooled = evaluation.stack_evaluated(*ev.values())
        thr = max(evaluation.best_threshold(*pooled), low)
        res[readout] = {"threshold": thr, "f1": float(evaluation.prf(*pooled, min_score=thr)["f1"]),
                        **{f"f1_{name}": float(evaluation.prf(*e, min_score=thr)["f1"]) for name, e in ev.items()},
                        "dets": dets}
    res["chosen"] = max(readouts, key=lambda r: (np.nan_to_num(res[r]["f1"], nan=-1.0), -readouts.index(r)))
    return res


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


def detections_table(x, y, score, wcs, score_name: str = "probability", distribution: dict | None = None):
    """QTable of detections: glon, glat, ra, dec [deg], score, x_pix, y_pix,
    and, with ``distribution`` (:func:`distribution_check`), the boolean
    ``out_of_distribution`` (masked when the model records no range)."""
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
    if distribution is not None:
        ood = distribution["out_of_distribution"]
        table["out_of_distribution"] = (np.full(len(table), bool(ood)) if ood is not None
                                        else np.ma.masked_all(len(table), dtype=bool))
        table["out_of_distribution"].description = ("the input's background level lies outside the range the "
                                                    "network was trained on (masked: no range recorded)")
    return table
