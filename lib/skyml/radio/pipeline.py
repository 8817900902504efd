"""Train-or-load steps of notebook 07 and the counting of a user image.

Training fields mix the seed's (1 + s0/s)^α modification and power-law breaks
(so the network cannot learn one family only); the test fields are the seed's
family with new parameters (``test``) and the tanh shape never seen in
training (``test_unseen``). The networks are cached by a hash of their inputs
(:func:`skyml.training.train_cached`); the restored-image CNN is installed
as ``data/models/<profile>/radio_counts_cnn.keras`` with a JSON sidecar that
records what ``skyml radio-counts`` needs: flux-bin edges, pixel size,
sub-image size, restoring beam, noise rms, input scale, target scaler, the
validation residual per bin and the network's answer on the source-free
validation fields (the uncertainty it reports, :func:`counts_error`), and the range of
the training inputs (:func:`training_range`: robust noise and distance of the
context histogram from the training mean), against which
:func:`distribution_check` flags an input the network was not trained for.

The restored-image network is trained for data unlike one instrument: its
training and validation fields have randomised instruments (beam, noise,
image mean: :mod:`skyml.radio.simulate`, domain randomisation); every
context block has its robust level removed before it reaches the network
(:func:`block_level`, the same in training, evaluation and the command), so
the counts do not depend on the image mean; and the network is given the
restoring beam's area and the block's robust noise (:func:`conditioning`),
whose training ranges the sidecar records (``conditioning``); the command
accepts a beam inside them and refuses one outside.

**Field calibration** (:func:`field_calibration`). The network answers for
one sub-image and its context block at a time: each answer is its best guess
for that block, pulled towards the training sky's typical counts where one
block says little (the faint bins), and summing the blocks of a field keeps
that pull. A second, field-level stage removes it: on simulated fields of the
test-field size, drawn like the training sky (both modification families,
the nominal and randomised instruments, a split of their own), it fits per
flux bin a straight line from the log of the network's summed counts per
sub-image to the log of the true ones. The line's slope above 1 stretches the
field's counts away from the training mean by what the whole field supports.
The sidecar records the lines, the size of the fields they were fitted on
and their cross-validated residual (the uncertainty the command states for
calibrated counts).
"""

from __future__ import annotations

import numpy as np

from .. import cache
from ..training import train_cached
from . import evaluation, models
from . import simulate as sim

CNN_FILE = "radio_counts_cnn.keras"
SKYMODEL_CNN_FILE = "radio_counts_cnn_skymodel.keras"
TASK = "radio-counts"
SPLIT_FAMILIES = {"train": ("alpha_s0", "broken"), "val": ("alpha_s0", "broken"), "test": ("alpha_s0",),
                  "test_unseen": ("tanh",)}
IMAGE_KINDS = ("skymodel", "restored")


#: splits with thinned fields (noise-only and sparse skies, :mod:`skyml.radio.simulate`)
THINNED_SPLITS = ("train", "val")
#: noise-only fields (besides the validation set's) on which the network's answer on empty sky is measured
N_NULL_FIELDS = 16


def fields(split: str, n_fields: int, seed: int, params: sim.RadioSimParams, npix: int,
           randomise: bool = False) -> dict:
    """The fields of a split (cached); ``randomise``: each with its own
    instrument (the restored-image network's training and validation sets)."""
    return sim.load_fields(n_fields, seed, params, split, npix, SPLIT_FAMILIES[split],
                           thinning=split in THINNED_SPLITS, randomise=randomise)


def null_rms(pred_sub: np.ndarray, density: np.ndarray, extra_sub: np.ndarray | None = None) -> np.ndarray | None:
    """Per-bin RMS (about zero) of the counts a network returns per sub-image
    on the source-free fields (``density`` 0) of a set, and on ``extra_sub``
    (its answers on further noise-only sub-images, (n, n_bins)); ``pred_sub``
    is (n_fields · n_sub, n_bins) in field order. None without such fields."""
    density = np.asarray(density)
    pred = np.asarray(pred_sub, np.float64).reshape(len(density), -1, np.shape(pred_sub)[-1])
    empty = [pred[density == 0].reshape(-1, pred.shape[-1])]
    if extra_sub is not None:
        empty.append(np.asarray(extra_sub, np.float64).reshape(-1, pred.shape[-1]))
    empty = np.concatenate(empty)
    if not len(empty):
        return None
    return np.sqrt(np.mean(empty**2, axis=0))


def counts_error(counts: np.ndarray, n_sub: int, metadata: dict, rel_rms=None) -> np.ndarray:
    """The stated uncertainty of summed counts over ``n_sub`` sub-images: the
    validation RMS relative residual (or ``rel_rms``) times the counts and, where the model
    records it, the network's RMS answer per sub-image on source-free
    validation fields times ``n_sub`` (added in quadrature; taken as fully
    correlated between sub-images, since it is a bias of the network, not
    noise), so that counts from a source-free image are consistent with zero
    within it."""
    rel = np.asarray(metadata["val_rel_rms"] if rel_rms is None else rel_rms, np.float64) * np.asarray(counts,
                                                                                                     np.float64)
    floor = metadata.get("val_null_rms")
    if floor is None:
        return np.abs(rel)
    return np.hypot(rel, int(n_sub) * np.asarray(floor, np.float64))


#: the robust level of a context block: the median of its finite pixels after sigma clipping
#: (astropy.stats.sigma_clipped_stats) at LEVEL_SIGMA, LEVEL_MAXITERS iterations
LEVEL_SIGMA = 3.0
LEVEL_MAXITERS = 5
LEVEL_METHOD = "sigma_clipped_median"


def block_level(block: np.ndarray) -> float:
    """The robust level of an image block [its unit]: the sigma-clipped
    median of its finite pixels. Adding a constant to the block adds it to
    the level, so a block minus its level does not depend on the image mean."""
    from astropy.stats import sigma_clipped_stats

    v = np.asarray(block, np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 0.0
    return float(sigma_clipped_stats(v, sigma=LEVEL_SIGMA, maxiters=LEVEL_MAXITERS)[1])


def levelled(block: np.ndarray) -> np.ndarray:
    """The block minus :func:`block_level` (float64)."""
    b = np.asarray(block, np.float64)
    return b - block_level(b)


def conditioning(beam_area_px: float, noise_jy: float, metadata: dict,
                 clean_limit_jy: float | None = None) -> np.ndarray:
    """float32 conditioning scalars of an image: log(restoring-beam area
    [px] / the training instrument's), log(thermal noise rms [Jy/beam] /
    the training instrument's) and, where the sidecar's
    ``conditioning`` has ``clean_limit_ref_jy``, the CLEAN limit [Jy] over
    the training instrument's (0: the whole sky model restored with the
    restoring beam; None: the reference), the references in
    ``metadata["conditioning"]``. The thermal noise, not the image's robust
    width: that holds the confusion of the faint sources, the signal the
    network counts. The CLEAN limit decides which of them reach the image
    through the restoring beam and which through the dirty beam, whose
    side lobes give the same sources another pixel distribution."""
    ref = metadata["conditioning"]
    values = [np.log(float(beam_area_px) / ref["beam_area_ref_px"]),
              np.log(max(float(noise_jy), 1e-30) / ref["noise_ref_jy"])]
    if "clean_limit_ref_jy" in ref:
        values.append(1.0 if clean_limit_jy is None else float(clean_limit_jy) / ref["clean_limit_ref_jy"])
    return np.array(values, np.float32)


N_COND = 3


def block_inputs(fields: np.ndarray, sub: int, context: int, scale_jy: float, *, level: bool = False,
                 beam_area_px=None, noise_rms_jy=None, cond_meta: dict | None = None, clean_limit_jy=None):
    """Network inputs of whole fields, block by block: (sub-images as network
    input (n_fields · (N/sub)², sub, sub, 1), context histograms
    (n_fields · (N/sub)², N_HIST), conditioning (same rows, N_COND) or None,
    the blocks as the network sees them). Each sub-image gets the pixel
    histogram of the ``context``²-px block that holds it (the order of
    :func:`sim.sub_images`); with ``level`` every block has its robust level
    removed first; with ``cond_meta`` (the sidecar's keys) the conditioning
    from ``beam_area_px``, ``noise_rms_jy`` and ``clean_limit_jy`` (per field or one value; None: the reference).
    ``context`` divides the field side and is a multiple of ``sub``."""
    f = np.asarray(fields)
    n, ny, nx = f.shape
    if ny % context or nx % context or context % sub:
        raise ValueError(f"context blocks of {context} px must tile the {ny}×{nx} fields and hold whole "
                         f"{sub}-px sub-images")
    areas = np.broadcast_to(np.asarray(beam_area_px if beam_area_px is not None else np.nan, np.float64), (n,))
    noises = np.broadcast_to(np.asarray(noise_rms_jy if noise_rms_jy is not None else np.nan, np.float64), (n,))
    limits = np.broadcast_to(np.asarray(clean_limit_jy if clean_limit_jy is not None else np.nan, np.float64), (n,))
    xs, hists, conds, seen = [], [], [], []
    for img, area, noise, limit in zip(f, areas, noises, limits):
        out = np.empty((ny, nx), np.float64)
        block_hist, block_cond = {}, {}
        for by in range(ny // context):
            for bx in range(nx // context):
                sl = (slice(by * context, (by + 1) * context), slice(bx * context, (bx + 1) * context))
                b = levelled(img[sl]) if level else np.asarray(img[sl], np.float64)
                out[sl] = b
                seen.append(b)
                block_hist[(by, bx)] = models.pixel_histogram(b, scale_jy)
                if cond_meta is not None:
                    block_cond[(by, bx)] = conditioning(area, noise, cond_meta,
                                                        None if np.isnan(limit) else float(limit))
        keys = [(r * sub // context, c * sub // context) for r in range(ny // sub) for c in range(nx // sub)]
        xs.append(models.as_input(sim.sub_images(out[None], sub), scale_jy))
        hists += [block_hist[k] for k in keys]
        if cond_meta is not None:
            conds += [block_cond[k] for k in keys]
    return (np.concatenate(xs), np.asarray(hists, np.float32),
            np.asarray(conds, np.float32) if cond_meta is not None else None, seen)


def context_histograms(fields: np.ndarray, sub: int, context: int, scale_jy: float) -> np.ndarray:
    """(n_fields · (N/sub)², N_HIST) pixel histogram of the ``context``²-px
    block that holds each sub-image (the order of :func:`sim.sub_images`);
    ``context`` divides the field side and is a multiple of ``sub``."""
    return block_inputs(fields, sub, context, scale_jy)[1]


#: an input block is outside the training range when its robust noise is more than this fraction
#: beyond the training blocks' range (the randomised noise levels of the training set: beyond them the
#: counts degrade), or its histogram distance more than this factor times the largest of the training
#: blocks (in-distribution validation and test blocks stay within 1.3 times it)
OOD_NOISE_TOL = 0.03
OOD_HIST_FACTOR = 2.0


def robust_noise(image: np.ndarray) -> float:
    """1.4826 × the median absolute deviation of the finite pixels."""
    v = np.asarray(image, np.float64)
    v = v[np.isfinite(v)]
    return float(1.4826 * np.median(np.abs(v - np.median(v))))


def hist_distance(hist: np.ndarray, mean, std) -> float:
    """RMS over the bins of the context histogram as the network's
    normalisation layer sees it: (h − training mean) / max(training std, 1e-3)."""
    z = (np.asarray(hist, np.float64) - np.asarray(mean)) / np.maximum(np.asarray(std, np.float64), 1e-3)
    return float(np.sqrt(np.mean(z**2)))


def training_range(blocks: np.ndarray, scale_jy: float, level: bool = False) -> dict:
    """The range of the network's inputs over its training context blocks:
    robust noise [min, max] (Jy/beam), the per-bin mean and standard
    deviation of their context histograms and the largest
    :func:`hist_distance` of a training block (with ``level``: of the blocks
    less their :func:`block_level`, as the network sees them)."""
    blocks = [levelled(b) for b in blocks] if level else blocks
    hists = np.array([models.pixel_histogram(b, scale_jy) for b in blocks], np.float64)
    mean, std = hists.mean(0), hists.std(0)
    noise = [robust_noise(b) for b in blocks]
    return {"noise_mad_jy": [float(min(noise)), float(max(noise))], "hist_mean": mean.tolist(),
            "hist_std": std.tolist(), "hist_distance_max": float(max(hist_distance(h, mean, std) for h in hists)),
            "n_blocks": len(hists), "levelled": bool(level)}


def distribution_check(blocks, metadata: dict) -> dict:
    """Whether context blocks of an input lie inside the training range the
    model's sidecar records (``training_range``): ``out_of_distribution``
    (None when the sidecar records no range), the blocks' robust noise
    [min, max], their largest histogram distance, and ``reason`` (a phrase,
    empty when inside)."""
    rng = metadata.get("training_range")
    scale = float(metadata["input_scale_jy"])
    if rng is not None and rng.get("levelled"):
        blocks = [levelled(b) for b in blocks]
    noise = [robust_noise(b) for b in blocks]
    out = {"noise_mad_jy": [float(min(noise)), float(max(noise))], "hist_distance": None,
           "out_of_distribution": None, "reason": "the model records no training range"}
    if rng is None:
        return out
    dist = max(hist_distance(models.pixel_histogram(b, scale), rng["hist_mean"], rng["hist_std"]) for b in blocks)
    lo, hi = rng["noise_mad_jy"]
    reasons = []
    if not (lo / (1 + OOD_NOISE_TOL) <= min(noise) and max(noise) <= hi * (1 + OOD_NOISE_TOL)):
        reasons.append(f"robust noise {min(noise) * 1e6:.3g}–{max(noise) * 1e6:.3g} uJy/beam outside the "
                       f"training range {lo * 1e6:.3g}–{hi * 1e6:.3g}")
    if dist > OOD_HIST_FACTOR * rng["hist_distance_max"]:
        reasons.append(f"pixel histogram {dist:.3g} from the training mean (training at most "
                       f"{rng['hist_distance_max']:.3g})")
    out.update(hist_distance=float(dist), out_of_distribution=bool(reasons), reason="; ".join(reasons))
    return out


def field_blocks(image: np.ndarray, context: int) -> list:
    """The whole ``context``²-px blocks of an image, row by row."""
    ny, nx = (np.shape(image)[0] // context, np.shape(image)[1] // context)
    return [image[by * context:(by + 1) * context, bx * context:(bx + 1) * context]
            for by in range(ny) for bx in range(nx)]


def conditioning_reference(params: sim.RadioSimParams) -> dict:
    """The references of :func:`conditioning`: the training instrument's restoring-beam area, noise rms and
    CLEAN limit."""
    return {"beam_area_ref_px": float(sim.beam_params(params)["area_px"]), "noise_ref_jy": float(params.noise_rms_jy),
            "clean_limit_ref_jy": float(params.clean_nsigma * params.noise_rms_jy)}


def xy(data: dict, kind: str, params: sim.RadioSimParams, context_npix: int, beam_area_px=None,
       noise_rms_jy=None, clean_limit_jy=None):
    """([sub-images as network input, context histograms(, conditioning)],
    per-sub-image counts) of a set of fields. Restored images have every
    context block's robust level removed and get the conditioning scalars
    (:func:`conditioning`) from the restoring beam's area in pixels, the
    thermal noise rms and the CLEAN limit: ``data["beam_area_px"]``,
    ``data["instrument_noise_scale"]`` × the nominal rms and
    ``data["instrument_clean_depth"]`` × the nominal limit (per field) where
    the fields carry them, else ``beam_area_px``, ``noise_rms_jy`` and
    ``clean_limit_jy``, else the training instrument's."""
    if kind not in IMAGE_KINDS:
        raise ValueError(f"unknown image kind {kind!r}; expected one of {IMAGE_KINDS}")
    restored = kind == "restored"
    area = data.get("beam_area_px", beam_area_px)
    area = sim.beam_params(params)["area_px"] if area is None else area
    noise = (np.asarray(data["instrument_noise_scale"]) * params.noise_rms_jy if "instrument_noise_scale" in data
             else params.noise_rms_jy if noise_rms_jy is None else noise_rms_jy)
    ref = conditioning_reference(params)
    limit = (np.asarray(data["instrument_clean_depth"]) * ref["clean_limit_ref_jy"] if "instrument_clean_depth" in data
             else clean_limit_jy)
    x, h, cond, _ = block_inputs(data[kind], params.sub_npix, context_npix, params.noise_rms_jy, level=restored,
                                 beam_area_px=area, noise_rms_jy=noise, clean_limit_jy=limit,
                                 cond_meta={"conditioning": ref} if restored else None)
    return ([x, h, cond] if restored else [x, h]), data["counts"].reshape(-1, params.n_bins)


def predict_counts(model, scaler: models.TargetScaler, x: np.ndarray) -> np.ndarray:
    """Counts per sub-image and bin (n, n_bins)."""
    return scaler.inverse(models.predict(model, x))


#: field calibration: version of its cache key and sidecar record, folds of its cross-validated residual,
#: calibration skies simulated at once (of each instrument)
CALIBRATION_VERSION = 1
CALIBRATION_FOLDS = 5
CALIBRATION_CHUNK = 8


def nominal_instrument(params: sim.RadioSimParams, n: int, dtypes: dict | None = None) -> dict:
    """The instrument keys of :data:`sim.INSTRUMENT_KEYS` for ``n`` fields of
    the nominal instrument (its beam, scales 1, mean kept)."""
    b = sim.beam_params(params)
    nominal = {"beam_fwhm_major_px": b["fwhm_major_px"], "beam_fwhm_minor_px": b["fwhm_minor_px"],
               "beam_bpa_deg": b["bpa_deg"], "beam_area_px": b["area_px"], "instrument_beam_scale": 1.0,
               "instrument_stretch": 1.0, "instrument_noise_scale": 1.0, "instrument_mean_removed": False,
               "instrument_clean_depth": 1.0, "instrument_noise_restored": 0.0}
    dtypes = dtypes or {}
    return {k: np.full(int(n), v, dtype=dtypes.get(k, np.asarray(v).dtype)) for k, v in nominal.items()}


def calibration_fields(model, metadata: dict, params: sim.RadioSimParams, n_fields: int, npix: int,
                       seed: int) -> dict:
    """The network's summed counts (``pred``) and the true counts (``true``)
    per field and bin on ``n_fields`` skies of the training families (split
    ``calib``), each through the nominal and a randomised instrument
    (``randomised``; ``sky``: the sky's index), ``npix``² px each, simulated
    :data:`CALIBRATION_CHUNK` skies at a time so that memory stays bounded."""
    scaler = scaler_from_metadata(metadata)
    ctx = int(metadata["context_npix"])
    out = {"pred": [], "true": [], "randomised": [], "sky": []}
    for start in range(0, int(n_fields), CALIBRATION_CHUNK):
        stop = min(start + CALIBRATION_CHUNK, int(n_fields))
        for randomise in (False, True):
            d = sim.simulate_fields(n_fields, seed, params, "calib", npix, SPLIT_FAMILIES["train"],
                                    randomise=randomise, start=start, stop=stop)
            if not randomise:
                d = {**d, **nominal_instrument(params, stop - start)}
            x, c = xy(d, "restored", params, ctx)
            out["pred"].append(evaluation.per_field(predict_counts(model, scaler, x), stop - start))
            out["true"].append(evaluation.per_field(c, stop - start))
            out["randomised"].append(np.full(stop - start, randomise))
            out["sky"].append(np.arange(start, stop))
    return {k: np.concatenate(v) for k, v in out.items()}


def fit_field_calibration(pred: np.ndarray, true: np.ndarray, n_sub: int, groups=None,
                          folds: int = CALIBRATION_FOLDS) -> dict:
    """Per bin, the least-squares line log(true / n_sub) = intercept + slope ·
    log(pred / n_sub) over fields of ``n_sub`` sub-images, and the RMS
    relative residual per bin of the raw and of the calibrated counts, the
    latter cross-validated: fitted without the fields of one of ``folds``
    groups (``groups`` % ``folds``: a sky and its other instrument stay
    together) and scored on them. A bin whose line does not lower that
    residual below the raw counts' keeps its raw counts (slope 1, intercept
    0; ``calibrated_bins`` false there, and its ``rel_rms_cv`` the raw one)."""
    p = np.log(np.asarray(pred, np.float64) / n_sub)
    t = np.log(np.maximum(np.asarray(true, np.float64), 0.5) / n_sub)
    if p.shape != t.shape or p.ndim != 2 or len(p) < 3:
        raise ValueError(f"need at least 3 fields of counts per bin, got {p.shape} and {t.shape}")

    def lines(rows):
        return np.array([np.polyfit(p[rows, b], t[rows, b], 1) for b in range(p.shape[1])])

    fit = lines(slice(None))
    g = np.arange(len(p)) if groups is None else np.asarray(groups)
    cv = np.empty_like(p)
    for k in range(int(folds)):
        held = g % int(folds) == k
        if held.all() or not held.any():
            raise ValueError(f"{folds} folds need fields in every fold and outside it")
        f = lines(~held)
        cv[held] = f[:, 1] + f[:, 0] * p[held]
    true_n = np.asarray(true, np.float64)
    raw = evaluation.rms_over_fields(evaluation.relative_residual(np.asarray(pred, np.float64), true_n))
    line = evaluation.rms_over_fields(evaluation.relative_residual(n_sub * np.exp(cv), true_n))
    use = line < raw
    return {"slope": np.where(use, fit[:, 0], 1.0).tolist(), "intercept": np.where(use, fit[:, 1], 0.0).tolist(),
            "calibrated_bins": use.tolist(), "n_sub_per_field": int(n_sub), "rel_rms_raw": raw.tolist(),
            "rel_rms_cv": np.where(use, line, raw).tolist()}


def field_calibration(model, metadata: dict, params: sim.RadioSimParams, n_fields: int, npix: int,
                      seed: int) -> dict:
    """The restored-image network's field calibration (module text) from
    :func:`calibration_fields` (cached by the network's SHA-256 and the
    simulation) and :func:`fit_field_calibration`; the record a sidecar
    already holds for the same network and fields is returned as it is."""
    spec = {"n_skies": int(n_fields), "field_npix": int(npix), "seed": int(seed), "split": "calib",
            "families": list(SPLIT_FAMILIES["train"]), "instruments": ["nominal", "randomised"],
            "version": CALIBRATION_VERSION}
    sha = metadata["keras_sha256"]
    known = metadata.get("field_calibration")
    if isinstance(known, dict) and known.get("spec") == spec and known.get("keras_sha256") == sha:
        return known
    key = {**spec, "keras_sha256": sha, "sim": params.to_dict(), "randomise": sim.randomisation()}
    arrays = cache.cached_arrays("radio_field_calibration", key,
                                 lambda: calibration_fields(model, metadata, params, n_fields, npix, seed))
    n_sub = (int(npix) // params.sub_npix) ** 2
    return {"spec": spec, "keras_sha256": sha, "n_fields": int(len(arrays["pred"])),
            **fit_field_calibration(arrays["pred"], arrays["true"], n_sub, groups=arrays["sky"])}


def calibrate_counts(counts: np.ndarray, n_sub, calibration: dict) -> np.ndarray:
    """Counts summed over ``n_sub`` sub-images (per row) through the lines of
    :func:`field_calibration`."""
    c, n = np.asarray(counts, np.float64), float(n_sub)
    slope, intercept = (np.asarray(calibration[k], np.float64) for k in ("slope", "intercept"))
    return n * np.exp(intercept + slope * np.log(np.maximum(c, 1e-12) / n))


def calibrate_subimages(pred_sub: np.ndarray, n_fields: int, calibration: dict) -> np.ndarray:
    """Per-sub-image counts of ``n_fields`` fields scaled per field and bin so
    that each field's sum is :func:`calibrate_counts` of it."""
    p = np.asarray(pred_sub, np.float64)
    n_sub = len(p) // int(n_fields)
    raw = evaluation.per_field(p, n_fields)
    factor = calibrate_counts(raw, n_sub, calibration) / raw
    return (p.reshape(int(n_fields), n_sub, -1) * factor[:, None, :]).reshape(p.shape)


def train_model(kind: str, n_train_fields: int, train_npix: int, n_val_fields: int, seed: int,
                params: sim.RadioSimParams, *, epochs: int = 10, batch_size: int = 32, patience: int = 4,
                filters: int = 16, learning_rate: float = 1e-3, hist_noise: float = models.HIST_NOISE,
                profile: str = "quick", calibration: dict | None = None):
    """Train (or load) the CNN on ``kind`` images; returns (model, metadata,
    history, seconds or None if loaded). ``hist_noise``: the training noise
    on the normalised context histogram (:func:`models.build_cnn`).
    ``calibration`` (restored images only; ``n_fields``, ``npix``, ``seed``):
    the network's :func:`field_calibration`, in its metadata and installed
    sidecar as ``field_calibration``."""
    if calibration is not None and kind != "restored":
        raise ValueError("the field calibration is that of the restored-image network")
    key = {"kind": kind, "n_train_fields": int(n_train_fields), "train_npix": int(train_npix),
           "n_val_fields": int(n_val_fields), "seed": int(seed), "sim": params.to_dict(), "epochs": int(epochs),
           "batch_size": int(batch_size), "patience": int(patience), "filters": int(filters),
           "learning_rate": float(learning_rate), "hist_noise": float(hist_noise), "version": 8}
    randomise = kind == "restored"  # the sky-model network has no instrument: its inputs are as before
    if randomise:
        key.update(version=13, randomise=sim.randomisation(), level=[LEVEL_METHOD, LEVEL_SIGMA, LEVEL_MAXITERS],
                   with_nominal=True, flips=True)

    def fit():
        import keras

        if randomise:  # the nominal instrument's fields and the same skies through randomised instruments
            train, val = (with_randomised(split, n, seed, params, train_npix)
                          for split, n in (("train", n_train_fields), ("val", n_val_fields)))
        else:
            train = fields("train", n_train_fields, seed, params, train_npix)
            val = fields("val", n_val_fields, seed, params, train_npix)
        x, c = xy(train, kind, params, train_npix)
        xv, cv = xy(val, kind, params, train_npix)
        scaler = models.TargetScaler.fit(c)
        keras.utils.set_random_seed(int(seed))
        model = models.build_cnn(params.n_bins, filters, learning_rate=learning_rate, name=f"radio_cnn_{kind}",
                                 hist_mean=x[1].mean(0), hist_std=x[1].std(0), hist_noise=hist_noise,
                                 n_cond=N_COND if randomise else 0, flip_seed=int(seed) if randomise else None)
        history = models.train(model, x, scaler.transform(c), xv, scaler.transform(cv), epochs=epochs,
                               batch_size=batch_size, patience=patience, seed=seed)
        pred_sub = predict_counts(model, scaler, xv)
        n_val_all = len(val["density"])  # with the thinned fields
        pred_val = evaluation.per_field(pred_sub, n_val_all)
        # the stated relative error is that of the skies the network is for (full density); the sparse
        # fields only help training, and the source-free ones give the absolute floor
        full_density = np.asarray(val["density"]) == 1.0
        rel = evaluation.relative_residual(pred_val, evaluation.per_field(cv, n_val_all))[full_density]
        noise = (sim.noise_fields(N_NULL_FIELDS, seed, params, train_npix, randomise=True) if kind == "restored"
                 else {kind: np.zeros((N_NULL_FIELDS, train_npix, train_npix), np.float32)})  # an empty sky model
        noise["counts"] = np.zeros((N_NULL_FIELDS * (train_npix // params.sub_npix) ** 2, params.n_bins))
        xn, _ = xy(noise, kind, params, train_npix)
        floor = null_rms(pred_sub, val["density"], predict_counts(model, scaler, xn))
        beam = sim.beam_params(params)
        meta = {"task": TASK, "image_kind": kind, "profile": profile, "n_train_sub_images": int(len(c)),
                "input": "asinh(image / input_scale_jy); pixel histogram of the context_npix² block",
                "input_scale_jy": params.noise_rms_jy, "context_npix": int(train_npix),
                "hist_edges_sigma": models.HIST_EDGES_SIGMA.tolist(), "hist_noise": float(hist_noise),
                "image_unit": "Jy/beam" if kind == "restored" else "Jy/pixel",
                "target": "standardised sqrt(counts per bin per sub-image)", "target_scaler": scaler.to_dict(),
                "edges_jy": params.edges_jy.tolist(), "threshold_jy": params.threshold_jy,
                "noise_rms_jy": params.noise_rms_jy, "pixel_arcsec": params.pixel_arcsec,
                "sub_npix": params.sub_npix, "bmaj_deg": beam["bmaj_deg"], "bmin_deg": beam["bmin_deg"],
                "bpa_deg": beam["bpa_deg"], "val_field_npix": int(train_npix),
                "val_rel_rms": evaluation.rms_over_fields(rel).tolist(),
                "val_null_rms": None if floor is None else floor.tolist(),
                "n_val_null_fields": int(np.sum(np.asarray(val["density"]) == 0)) + N_NULL_FIELDS,
                "thinning": {"period": sim.THIN_PERIOD, "range": list(sim.THIN_RANGE), "layout": "added"},
                "sim_params": params.to_dict(),
                "training_range": training_range(train[kind], params.noise_rms_jy, level=randomise)}
        if randomise:
            meta.update(conditioning_metadata(train, params),
                        input="asinh((image − level) / input_scale_jy), the level the sigma-clipped median of the "
                              "context_npix² block; pixel histogram of that block; conditioning scalars",
                        level={"method": LEVEL_METHOD, "sigma": LEVEL_SIGMA, "maxiters": LEVEL_MAXITERS})
        return model, meta, history

    install = CNN_FILE if kind == "restored" else SKYMODEL_CNN_FILE
    if calibration is None:
        return train_cached(f"radio_cnn_{kind}", key, fit, profile, install)
    return train_cached(f"radio_cnn_{kind}", key, fit, profile, install, model_metadata=lambda model, meta: {
        "field_calibration": field_calibration(model, meta, params, **calibration)})


def with_randomised(split: str, n_fields: int, seed: int, params: sim.RadioSimParams, npix: int) -> dict:
    """The fields of a split through the nominal instrument followed by the
    same skies through randomised instruments (:func:`fields`), with the
    instrument keys of both (the nominal: its beam, scales 1, mean kept): the
    training and validation sets of the restored-image network."""
    plain = fields(split, n_fields, seed, params, npix)
    rand = fields(split, n_fields, seed, params, npix, randomise=True)
    n = len(plain["density"])
    plain = {**{k: np.asarray(v) for k, v in plain.items()},
             **nominal_instrument(params, n, {k: np.asarray(v).dtype for k, v in rand.items()})}
    return {k: np.concatenate([plain[k], np.asarray(rand[k])]) for k in rand}


def conditioning_metadata(train: dict, params: sim.RadioSimParams) -> dict:
    """The sidecar's ``conditioning``: the inputs, their references and the
    training ranges of the randomised instruments (restoring-beam area [px],
    axis ratio, position angle of the elliptical beams (axis ratio above
    1.1), the drawn beam and noise scales, the CLEAN limits [Jy] and the
    share of fields whose whole sky model is restored, the share of fields
    with their mean removed)."""
    area = np.asarray(train["beam_area_px"], np.float64)
    ratio = np.asarray(train["beam_fwhm_major_px"]) / np.asarray(train["beam_fwhm_minor_px"])
    pa = np.asarray(train["beam_bpa_deg"], np.float64)[ratio > 1.1]
    centre = float(np.degrees(np.angle(np.mean(np.exp(2j * np.radians(pa))))) / 2.0 % 180.0) if len(pa) else 0.0
    half = float(np.max(np.abs((pa - centre + 90.0) % 180.0 - 90.0))) if len(pa) else 90.0
    noise = np.asarray(train["instrument_noise_scale"], np.float64) * params.noise_rms_jy
    ref = conditioning_reference(params)
    limit = np.asarray(train["instrument_clean_depth"], np.float64) * ref["clean_limit_ref_jy"]
    return {"conditioning": {
        "inputs": ["log(beam_area_px / beam_area_ref_px)", "log(thermal noise_rms_jy / noise_ref_jy)",
                   "clean_limit_jy / clean_limit_ref_jy"],
        **ref,
        "clean_limit_jy_range": [float(limit.min()), float(limit.max())],
        "full_restore_fraction": float(np.mean(limit == 0.0)),
        "beam_area_px_range": [float(area.min()), float(area.max())],
        "beam_axis_ratio_range": [float(ratio.min()), float(ratio.max())],
        "beam_bpa_deg_centre": centre, "beam_bpa_deg_halfwidth": half,
        "noise_rms_jy_range": [float(noise.min()), float(noise.max())],
        "randomisation": sim.randomisation(),
        "mean_removed_fraction": float(np.mean(train["instrument_mean_removed"])),
        "n_fields": len(area)}}


def train_selected(kind: str, hist_noise_grid, n_train_fields: int, train_npix: int, n_val_fields: int, seed: int,
                   params: sim.RadioSimParams, **kwargs):
    """:func:`train_model` for every context-histogram noise in
    ``hist_noise_grid``; keeps the network with the lowest validation loss
    (the first of equals), which is also the one installed for
    ``skyml radio-counts``, with its ``calibration`` (:func:`train_model`).
    Returns (model, metadata, history, seconds or None if loaded, candidates)
    with ``candidates`` a list of (hist_noise, epochs, best validation loss)."""
    calibration = kwargs.pop("calibration", None)
    grid = [float(v) for v in hist_noise_grid]
    if not grid:
        raise ValueError("hist_noise_grid is empty: give at least one context-histogram noise")
    candidates = []
    for noise in grid:
        _, _, history, _ = train_model(kind, n_train_fields, train_npix, n_val_fields, seed, params,
                                       hist_noise=noise, **kwargs)
        candidates.append((noise, len(history["val_loss"]), float(min(history["val_loss"]))))
    best = grid[int(np.argmin([c[2] for c in candidates]))]
    model, meta, history, seconds = train_model(kind, n_train_fields, train_npix, n_val_fields, seed, params,
                                                hist_noise=best, calibration=calibration, **kwargs)
    return model, meta, history, seconds, candidates


def scaler_from_metadata(metadata: dict) -> models.TargetScaler:
    t = metadata["target_scaler"]
    return models.TargetScaler(t["mean"], t["std"])


def count_image(model, metadata: dict, image: np.ndarray, beam_area_px: float | None = None,
                noise_rms_jy: float | None = None, clean_limit_jy: float | None = None) -> dict:
    """Counts per flux bin of a restored image (Jy/beam, the model's pixel
    size; a restoring beam of ``beam_area_px`` pixels, a thermal noise
    rms of ``noise_rms_jy`` and a CLEAN limit of ``clean_limit_jy`` [Jy], by
    default the training instrument's): the image is cut into the model's context blocks
    (``context_npix``², rows and columns that do not fill a whole block are
    left out), each block (less its robust level where the model's sidecar
    says so) into sub-images; a sub-image gets the pixel histogram of its
    block (finite pixels) as second input, and the conditioning scalars of
    its block where the model takes them (:func:`conditioning`); sub-images with
    NaN pixels are left out, and so are blocks with fewer than half their
    pixels finite. The predictions are summed and, where the sidecar holds a
    ``field_calibration``, calibrated (:func:`calibrate_counts`; ``counts_raw``
    the sum before). Returns ``counts``, ``counts_err`` (:func:`counts_error`,
    with the calibration's cross-validated residual where it applies),
    ``n_tiles``, ``n_tiles_skipped``, ``area_sr``, ``calibrated`` and
    ``distribution`` (:func:`distribution_check` of the blocks used)."""
    sub, ctx = int(metadata["sub_npix"]), int(metadata["context_npix"])
    img = np.asarray(image, np.float64)
    ny, nx = (img.shape[0] // ctx) * ctx, (img.shape[1] // ctx) * ctx
    if ny == 0 or nx == 0:
        raise ValueError(f"image of {img.shape[0]}×{img.shape[1]} px is smaller than one {ctx}×{ctx}-px "
                         "context block of the model")
    scale = float(metadata["input_scale_jy"])
    level = metadata.get("level") is not None
    cond_meta = metadata if metadata.get("conditioning") is not None else None
    if cond_meta is not None:
        beam_area_px = cond_meta["conditioning"]["beam_area_ref_px"] if beam_area_px is None else beam_area_px
        noise_rms_jy = cond_meta["conditioning"]["noise_ref_jy"] if noise_rms_jy is None else noise_rms_jy
    tiles, hists, conds, used, n_skipped = [], [], [], [], 0
    for by in range(ny // ctx):
        for bx in range(nx // ctx):
            raw = img[by * ctx:(by + 1) * ctx, bx * ctx:(bx + 1) * ctx]
            block = levelled(raw) if level else raw
            t = block.reshape(ctx // sub, sub, ctx // sub, sub).transpose(0, 2, 1, 3).reshape(-1, sub, sub)
            good = np.all(np.isfinite(t), axis=(1, 2))
            if np.mean(np.isfinite(block)) < 0.5:
                good[:] = False
            n_skipped += int((~good).sum())
            if good.any():
                used.append(raw)
                tiles.append(t[good])
                hists += [models.pixel_histogram(block, scale)] * int(good.sum())
                if cond_meta is not None:
                    conds += [conditioning(beam_area_px, noise_rms_jy, cond_meta, clean_limit_jy)] * int(good.sum())
    if not tiles:
        raise ValueError(f"every {sub}×{sub}-px sub-image contains NaN or infinite pixels")
    tiles = np.concatenate(tiles)
    x = [models.as_input(tiles, scale), np.asarray(hists, np.float32)]
    if cond_meta is not None:
        x.append(np.asarray(conds, np.float32))
    raw = predict_counts(model, scaler_from_metadata(metadata), x).sum(0)
    calib = metadata.get("field_calibration")
    n = raw if calib is None else calibrate_counts(raw, len(tiles), calib)
    err = counts_error(n, len(tiles), metadata, None if calib is None else calib["rel_rms_cv"])
    pixel_sr = (float(metadata["pixel_arcsec"]) / 3600.0 * np.pi / 180.0) ** 2
    return {"counts": n, "counts_raw": raw, "calibrated": calib is not None, "counts_err": err, "n_tiles": len(tiles),
            "n_tiles_skipped": n_skipped, "area_sr": float(len(tiles) * sub * sub * pixel_sr),
            "distribution": distribution_check(used, metadata)}


#: Tolerances of :func:`read_restored_image` against the model's training set-up (BEAM_RTOL: a model
#: of one beam; BEAM_RANGE_RTOL: a model trained on a range of beams, beyond the ends of that range)
PIXEL_RTOL = 0.01
BEAM_RTOL = 0.05
BEAM_RANGE_RTOL = 0.02
BPA_TOL_DEG = 10.0


def beam_area_px(bmaj_deg: float, bmin_deg: float, pixel_arcsec: float) -> float:
    """Solid angle of a Gaussian beam of FWHM ``bmaj_deg`` × ``bmin_deg`` in pixels."""
    pix = float(pixel_arcsec) / 3600.0
    return float(np.pi / (4.0 * np.log(2.0)) * float(bmaj_deg) * float(bmin_deg) / pix**2)


def check_beam(bmaj: float, bmin: float, bpa: float, metadata: dict) -> str:
    """Empty if a restoring beam [deg] is one the model was trained for, else
    the reason (a phrase). A model trained on a range of beams
    (``conditioning`` in its sidecar) takes a beam whose area lies within the
    training range (± :data:`BEAM_RANGE_RTOL`), whose axis ratio is at most
    the largest trained one and, when elliptical (axis ratio above 1.1),
    whose position angle lies within the trained ones (± :data:`BPA_TOL_DEG`);
    a model of one beam takes that beam (± :data:`BEAM_RTOL` per axis and
    :data:`BPA_TOL_DEG`)."""
    cond = metadata.get("conditioning")
    if cond is None:
        mbmaj, mbmin, mbpa = (float(metadata[k]) for k in ("bmaj_deg", "bmin_deg", "bpa_deg"))
        dpa = abs((bpa - mbpa + 90.0) % 180.0 - 90.0)
        if (abs(bmaj / mbmaj - 1) > BEAM_RTOL or abs(bmin / mbmin - 1) > BEAM_RTOL
                or (mbmaj / mbmin > 1.1 and dpa > BPA_TOL_DEG)):
            return (f"beam {bmaj * 3600:.1f}″×{bmin * 3600:.1f}″ PA {bpa:.0f}° differs from the model's "
                    f"{mbmaj * 3600:.1f}″×{mbmin * 3600:.1f}″ PA {mbpa:.0f}°; the image is not convolved to it: "
                    "use a network trained for this beam")
        return ""
    area = beam_area_px(bmaj, bmin, metadata["pixel_arcsec"])
    lo, hi = cond["beam_area_px_range"]
    ratio = max(bmaj, bmin) / min(bmaj, bmin)
    dpa = abs((bpa - cond["beam_bpa_deg_centre"] + 90.0) % 180.0 - 90.0)
    reasons = []
    if not lo / (1 + BEAM_RANGE_RTOL) <= area <= hi * (1 + BEAM_RANGE_RTOL):
        reasons.append(f"beam area {area:.3g} px outside the training range {lo:.3g}–{hi:.3g} px")
    if ratio > cond["beam_axis_ratio_range"][1] * (1 + BEAM_RANGE_RTOL):
        reasons.append(f"axis ratio {ratio:.3g} beyond the training range's {cond['beam_axis_ratio_range'][1]:.3g}")
    elif ratio > 1.1 and dpa > cond["beam_bpa_deg_halfwidth"] + BPA_TOL_DEG:
        reasons.append(f"PA {bpa:.0f}° outside the training beams' {cond['beam_bpa_deg_centre']:.0f}° ± "
                       f"{cond['beam_bpa_deg_halfwidth']:.0f}°")
    if reasons:
        return (f"beam {bmaj * 3600:.1f}″×{bmin * 3600:.1f}″ PA {bpa:.0f}°: " + "; ".join(reasons)
                + "; the image is not convolved: use a network trained for this beam")
    return ""


def check_clean_limit(clean_limit_jy: float, metadata: dict) -> str:
    """Empty if a CLEAN limit [Jy] lies within the training range of a
    conditioned model (up to :data:`BEAM_RANGE_RTOL` above its top), else the reason."""
    lo, hi = metadata["conditioning"]["clean_limit_jy_range"]
    if not (np.isfinite(clean_limit_jy) and lo <= clean_limit_jy <= hi * (1 + BEAM_RANGE_RTOL)):
        return (f"CLEAN limit {clean_limit_jy * 1e6:.3g} uJy outside the training range {lo * 1e6:.3g}–"
                f"{hi * 1e6:.3g} uJy: use a network trained for this imaging")
    return ""


def check_noise(noise_rms_jy: float, metadata: dict) -> str:
    """Empty if a thermal noise rms [Jy/beam] lies within the randomised
    training noise of a conditioned model (± :data:`BEAM_RANGE_RTOL`), else the reason."""
    lo, hi = metadata["conditioning"]["noise_rms_jy_range"]
    if not (np.isfinite(noise_rms_jy) and lo / (1 + BEAM_RANGE_RTOL) <= noise_rms_jy <= hi * (1 + BEAM_RANGE_RTOL)):
        return (f"thermal noise rms {noise_rms_jy * 1e6:.3g} uJy/beam outside the training range "
                f"{lo * 1e6:.3g}–{hi * 1e6:.3g} uJy/beam: use a network trained for this noise")
    return ""


def read_restored_image(path, metadata: dict):
    """Read a restored radio image (FITS, celestial WCS, BUNIT Jy/beam, beam
    in BMAJ/BMIN/BPA [deg]) and check it against the model's training set-up.

    An image with another pixel size, or a beam outside those the network was
    trained for (:func:`check_beam`), is refused, not resampled: the network
    learned the pixel statistics of its training beams and beam-correlated
    noise, which resampling or convolving would change; such an image needs a
    network trained for its own beam. Returns (image [Jy/beam], wcs, header
    values: ``bmaj_deg``, ``bmin_deg``, ``bpa_deg``, ``beam_area_px`` and,
    where the header has NOISE, the thermal noise rms ``noise_rms_jy``
    [Jy/beam]) or raises :class:`skyml.io.InputError`."""
    from pathlib import Path

    from astropy.wcs.utils import proj_plane_pixel_scales

    from .. import io

    path = Path(path)
    image, wcs, header = io.read_image(path)
    bunit = str(header.get("BUNIT", "")).strip().lower().replace(" ", "")
    if bunit not in ("jy/beam", "jy/bm"):
        raise io.InputError(f"{path}: BUNIT is {header.get('BUNIT', 'missing')!r}; a restored image in "
                            "Jy/beam is required")
    missing = [k for k in ("BMAJ", "BMIN", "BPA") if k not in header]
    if missing:
        raise io.InputError(f"{path}: header lacks the restoring beam keyword(s) {', '.join(missing)}")
    try:
        bmaj, bmin, bpa = (float(header[k]) for k in ("BMAJ", "BMIN", "BPA"))
    except (TypeError, ValueError) as err:
        raise io.InputError(f"{path}: BMAJ/BMIN/BPA are not numbers") from err
    scales_arcsec = proj_plane_pixel_scales(wcs) * 3600.0
    expected = float(metadata["pixel_arcsec"])
    if np.any(np.abs(scales_arcsec - expected) > PIXEL_RTOL * expected):
        raise io.InputError(f"{path}: pixel size {scales_arcsec[0]:.4g}″×{scales_arcsec[1]:.4g}″ differs from "
                            f"the model's {expected:.4g}″; the image is not resampled: use a network trained "
                            "for this pixel size")
    if not (np.isfinite([bmaj, bmin, bpa]).all() and bmaj > 0 and bmin > 0):
        raise io.InputError(f"{path}: BMAJ/BMIN must be positive and BPA finite")
    reason = check_beam(bmaj, bmin, bpa, metadata)
    if reason:
        raise io.InputError(f"{path}: {reason}")
    values = {"bmaj_deg": bmaj, "bmin_deg": bmin, "bpa_deg": bpa, "beam_area_px": beam_area_px(bmaj, bmin, expected)}
    if "NOISE" in header:
        try:
            noise = float(header["NOISE"])
        except (TypeError, ValueError) as err:
            raise io.InputError(f"{path}: NOISE is not a number") from err
        if not (np.isfinite(noise) and noise > 0):
            raise io.InputError(f"{path}: NOISE (the thermal noise rms) must be positive, got {noise}")
        values["noise_rms_jy"] = noise
    return image, wcs, values


def counts_table(result: dict, metadata: dict):
    """Astropy QTable of :func:`count_image`: flux bins, counts, dN/dS and
    Euclidean-normalised counts with uncertainties."""
    import astropy.units as u
    from astropy.table import QTable

    edges = np.asarray(metadata["edges_jy"], np.float64)
    width = np.diff(edges)
    mid = np.sqrt(edges[1:] * edges[:-1])
    area = result["area_sr"]
    dnds = result["counts"] / width / area
    dnds_err = result["counts_err"] / width / area
    table = QTable({
        "s_min": edges[:-1] * u.Jy, "s_max": edges[1:] * u.Jy, "s_mid": mid * u.Jy,
        "x_below_threshold": float(metadata["threshold_jy"]) / mid,
        "counts": result["counts"], "counts_err": result["counts_err"],
        "dnds": dnds * u.Unit("Jy-1 sr-1"), "dnds_err": dnds_err * u.Unit("Jy-1 sr-1"),
        "euclidean": mid**2.5 * dnds * u.Unit("Jy(3/2) sr-1"),
        "euclidean_err": mid**2.5 * dnds_err * u.Unit("Jy(3/2) sr-1"),
    })
    ood = result.get("distribution", {}).get("out_of_distribution")
    table["out_of_distribution"] = np.full(len(table), bool(ood)) if ood is not None else np.ma.masked_all(
        len(table), dtype=bool)
    table["out_of_distribution"].description = ("the input's noise or pixel histogram lies outside the range "
                                                "the network was trained on (masked: no range recorded)")
    calibrated = bool(result.get("calibrated"))
    table["counts"].description = ("sources per flux bin in the counted area (sum over sub-images"
                                   + (", through the model's field calibration)" if calibrated else ")"))
    table["counts_err"].description = (("cross-validated RMS relative residual of the field calibration"
                                        if calibrated else "validation RMS relative residual")
                                       + " of the bin times the counts, in quadrature with the network's RMS "
                                       "answer on source-free validation fields times the number of sub-images "
                                       "(where the model records it)")
    if calibrated:
        table["counts_uncalibrated"] = np.asarray(result["counts_raw"], np.float64)
        table["counts_uncalibrated"].description = "the network's summed counts before the field calibration"
        calib = metadata["field_calibration"]
        table.meta["field_calibration"] = {"field_npix": calib["spec"]["field_npix"],
                                           "n_sub_per_field": calib["n_sub_per_field"]}
    table["s_mid"].description = "geometric bin centre"
    table["x_below_threshold"].description = "5 sigma detection threshold / s_mid"
    table["euclidean"].description = "s_mid^2.5 dN/dS"
    return table


def image_wcs(shape, params: sim.RadioSimParams, ra_deg: float = 150.0, dec_deg: float = -30.0):
    """Celestial WCS (SIN projection, ICRS) of a simulated image of ``shape`` (ny, nx):
    ``params.pixel_arcsec`` pixels, RA increasing to the left, centred on (``ra_deg``, ``dec_deg``);
    the WCS of :func:`write_restored_image`, also used to draw the fields."""
    from astropy.wcs import WCS

    ny, nx = shape
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---SIN", "DEC--SIN"]
    wcs.wcs.crval = [float(ra_deg), float(dec_deg)]
    wcs.wcs.crpix = [nx / 2 + 0.5, ny / 2 + 0.5]
    wcs.wcs.cdelt = [-params.pixel_arcsec / 3600.0, params.pixel_arcsec / 3600.0]
    wcs.wcs.cunit = ["deg", "deg"]
    return wcs


def write_restored_image(path, image: np.ndarray, params: sim.RadioSimParams, ra_deg: float = 150.0,
                         dec_deg: float = -30.0, overwrite: bool = False, beam: dict | None = None,
                         noise_rms_jy: float | None = None):
    """Write a simulated restored image as a FITS image with a SIN-projection
    WCS, BUNIT Jy/beam, the restoring beam in BMAJ/BMIN/BPA (atomically):
    that of ``params`` or ``beam`` (keys ``bmaj_deg``, ``bmin_deg``,
    ``bpa_deg``, e.g. :func:`skyml.radio.simulate.shifted_beam_params`), and
    the thermal noise rms in NOISE [Jy/beam] (``noise_rms_jy``, by default
    that of ``params``)."""
    from .. import io

    wcs = image_wcs(np.shape(image), params, ra_deg, dec_deg)
    beam = sim.beam_params(params) if beam is None else beam
    header = {"BUNIT": ("Jy/beam", "restored image"), "BMAJ": (beam["bmaj_deg"], "[deg] restoring beam FWHM"),
              "BMIN": (beam["bmin_deg"], "[deg] restoring beam FWHM"),
              "BPA": (beam["bpa_deg"], "[deg] restoring beam position angle"),
              "RESTFRQ": (params.freq_ghz * 1e9, "[Hz]"),
              "NOISE": (float(params.noise_rms_jy if noise_rms_jy is None else noise_rms_jy),
                        "[Jy/beam] thermal noise rms")}
    return io.write_fits_map(path, np.asarray(image, np.float32), wcs, header, overwrite=overwrite)
