"""Matching detections to true sources and the detection metrics of notebook 06
(also used for the optical fields).

**Matching** (per patch): every pair of a detection and a true source closer
than the source's radius (``radius_deg``, or half the size of an extended
source if larger) is a candidate; candidates are accepted greedily by
increasing separation, each detection and source used once (separations on
the sky from astropy ``SkyCoord.search_around_sky`` when a WCS is given, else
in pixels).

**Which sources count.** Metrics "above sensitivity" use the true sources with
F(>1 TeV) ≥ the survey sensitivity at their position as the truth: recall is
their matched fraction; a detection matched to a fainter true source is neither
a true nor a false positive (it is a real source, just not in the evaluated
set); an unmatched detection is a false positive. Precision = TP / (TP + FP),
F1 = 2PR / (P + R). The same rule is used with magnitudes in the optical fields.
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table

from ..metrics import match_sky


def match_patch(det_x, det_y, true_x, true_y, radius_px):
    """Greedy one-to-one matching in pixels; ``radius_px`` per true source.

    Returns (det_to_true, true_to_det, sep_px per true source, NaN if missed)."""
    det_x, det_y = np.atleast_1d(det_x).astype(float), np.atleast_1d(det_y).astype(float)
    true_x, true_y = np.atleast_1d(true_x).astype(float), np.atleast_1d(true_y).astype(float)
    radius = np.broadcast_to(np.asarray(radius_px, float), true_x.shape)
    det_to_true = np.full(len(det_x), -1)
    true_to_det = np.full(len(true_x), -1)
    sep = np.full(len(true_x), np.nan)
    if len(det_x) == 0 or len(true_x) == 0:
        return det_to_true, true_to_det, sep
    d = np.hypot(det_x[:, None] - true_x[None], det_y[:, None] - true_y[None])
    di, ti = np.nonzero(d <= radius[None])
    for j in np.argsort(d[di, ti], kind="stable"):
        a, b = di[j], ti[j]
        if det_to_true[a] < 0 and true_to_det[b] < 0:
            det_to_true[a], true_to_det[b], sep[b] = b, a, d[a, b]
    return det_to_true, true_to_det, sep


def evaluate(data: dict, det: dict, p, radius_deg: float = 0.1, patches=None):
    """Per-source table (truth with ``matched``, ``sep_deg``, ``rel_flux`` =
    F/sensitivity, ``kind``, ``overlapping``, ``score`` of the matched detection)
    and per-detection table (``matched_rel_flux``: F/sens of its source, NaN if
    unmatched) over ``patches`` (default: all patches of ``data``)."""
    from .simulate import patch_sources, wcs

    w = wcs(p)
    patches = np.unique(data["patch"]) if patches is None else np.asarray(patches)
    truth_rows, det_rows = [], []
    for i in patches:
        s = patch_sources(data, int(i))
        inside = (s["x_pix"] > -0.5) & (s["x_pix"] < p.npix - 0.5) & (s["y_pix"] > -0.5) & \
            (s["y_pix"] < p.npix - 0.5)
        s = {k: v[inside] for k, v in s.items()}
        sel = det["patch"] == i
        dx, dy, score = det["x_pix"][sel], det["y_pix"][sel], det["score"][sel]
        dlon, dlat = w.wcs_pix2world(dx, dy, 0) if len(dx) else (np.empty(0), np.empty(0))
        radius = np.maximum(radius_deg, 0.5 * s["size_deg"])
        d2t, t2d, sep = match_sky(dlon, dlat, s["glon"], s["glat"], radius)
        rel = s["flux_1tev"] / s["sens_flux"]
        truth_rows.append(Table({
            "patch": np.full(len(rel), int(i)), "glon": s["glon"], "glat": s["glat"], "flux_1tev": s["flux_1tev"],
            "rel_flux": rel, "kind": s["kind"], "size_deg": s["size_deg"],
            "overlapping": s["companion"] >= 0, "matched": t2d >= 0, "sep_deg": sep,
            "score": np.where(t2d >= 0, score[np.maximum(t2d, 0)] if len(score) else np.nan, np.nan),
        }))
        det_rows.append(Table({
            "patch": np.full(len(dx), int(i)), "x_pix": dx, "y_pix": dy, "glon": np.asarray(dlon, float),
            "glat": np.asarray(dlat, float), "score": score,
            "matched_rel_flux": np.where(d2t >= 0, rel[np.maximum(d2t, 0)] if len(rel) else np.nan, np.nan),
        }))
    from astropy.table import vstack

    return vstack(truth_rows), vstack(det_rows)


def prf(truth: Table, dets: Table, rel_min: float = 1.0, min_score: float | None = None) -> dict:
    """Precision, recall, F1 with the truth restricted to ``rel_flux >= rel_min``
    (see the module docstring); detections below ``min_score`` dropped."""
    t_ok = truth["rel_flux"] >= rel_min
    matched = np.asarray(truth["matched"], bool)
    if min_score is not None:
        matched = matched & (np.nan_to_num(np.asarray(truth["score"], float), nan=-np.inf) >= min_score)
        keep_det = np.asarray(dets["score"], float) >= min_score
    else:
        keep_det = np.ones(len(dets), bool)
    rel = np.asarray(dets["matched_rel_flux"], float)[keep_det]
    tp = int(np.sum(matched & t_ok))
    fp = int(np.sum(np.isnan(rel)))
    n_true = int(np.sum(t_ok))
    recall = tp / n_true if n_true else np.nan
    precision = tp / (tp + fp) if (tp + fp) else np.nan
    f1 = 2 * precision * recall / (precision + recall) if (precision + recall) > 0 else np.nan
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "n_true": n_true}


def pr_curve(truth: Table, dets: Table, rel_min: float = 1.0, n: int = 60) -> Table:
    """Precision and recall as the score threshold runs over the detections' score quantiles."""
    scores = np.asarray(dets["score"], float)
    if len(scores) == 0:
        return Table({"threshold": [], "precision": [], "recall": []})
    thresholds = np.unique(np.quantile(scores, np.linspace(0, 1, n)))
    rows = [prf(truth, dets, rel_min, t) for t in thresholds]
    return Table({"threshold": thresholds, "precision": [r["precision"] for r in rows],
                  "recall": [r["recall"] for r in rows]})


def recall_at_precision(curve: Table, precision: float) -> float:
    """Highest recall of a PR curve among the thresholds with precision ≥ ``precision``."""
    ok = np.asarray(curve["precision"], float) >= precision
    return float(np.max(np.asarray(curve["recall"])[ok])) if ok.any() else 0.0


def best_threshold(truth: Table, dets: Table, rel_min: float = 1.0, n: int = 60) -> float:
    """Score threshold maximising F1 (on a validation set)."""
    scores = np.asarray(dets["score"], float)
    if len(scores) == 0:
        return 0.0
    thresholds = np.unique(np.quantile(scores, np.linspace(0, 1, n)))
    f1 = [np.nan_to_num(prf(truth, dets, rel_min, t)["f1"]) for t in thresholds]
    return float(thresholds[int(np.argmax(f1))])


def stack_evaluated(*evaluated) -> tuple[Table, Table]:
    """One (truth, dets) pair of several :func:`evaluate` results (e.g. the
    validation patches of several skies), their patches numbered apart."""
    from astropy.table import vstack

    truths, dets, offset = [], [], 0
    for t, d in evaluated:
        t, d = t.copy(), d.copy()
        n = int(max(np.max(np.asarray(t["patch"]), initial=-1), np.max(np.asarray(d["patch"]), initial=-1))) + 1
        t["patch"] += offset
        d["patch"] += offset
        offset += n
        truths.append(t)
        dets.append(d)
    return vstack(truths), vstack(dets)


def apply_threshold(det: dict, threshold: float) -> dict:
    """Detections with ``score >= threshold`` (per-patch extras such as ``seconds`` are kept as they are)."""
    keep = det["score"] >= threshold
    return {k: (v[keep] if np.shape(v) == keep.shape else v) for k, v in det.items()}


GROUPS = ("all", "isolated", "overlapping", "extended")


def group_mask(truth: Table, group: str) -> np.ndarray:
    """The sources of one of :data:`GROUPS`: all, isolated point sources, members of an overlapping pair,
    extended sources (a source can be both overlapping and extended)."""
    if group not in GROUPS:
        raise ValueError(f"unknown group {group!r}; choose from {GROUPS}")
    kind, over = np.asarray(truth["kind"]), np.asarray(truth["overlapping"], bool)
    if group == "all":
        return np.ones(len(kind), bool)
    return {"isolated": (kind == 0) & ~over, "overlapping": over, "extended": kind > 0}[group]


def recall_vs_flux(truth: Table, edges=(0.1, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0, 1e4), column: str = "matched") -> Table:
    """Recall per bin of F/sensitivity, for all, isolated point, overlapping and extended sources: the mean of
    ``column`` (``matched``, or the detection probability ``p_detect`` of :func:`ideal_detection`)."""
    rel = np.asarray(truth["rel_flux"], float)
    matched = np.asarray(truth[column], float)
    groups = {g: group_mask(truth, g) for g in GROUPS}
    edges = np.asarray(edges, float)
    out = {"rel_lo": edges[:-1], "rel_hi": edges[1:]}
    for g, sel in groups.items():
        n = np.array([np.sum(sel & (rel >= a) & (rel < b)) for a, b in zip(edges[:-1], edges[1:])])
        k = np.array([np.sum(matched[sel & (rel >= a) & (rel < b)]) for a, b in zip(edges[:-1], edges[1:])])
        out[f"n_{g}"] = n
        out[f"recall_{g}"] = np.where(n > 0, k / np.maximum(n, 1), np.nan)
    return Table(out)


def group_recall(truth: Table, group: str, rel_min: float = 1.0) -> float:
    """Recall above ``rel_min`` of one group (isolated, overlapping, extended)."""
    sel = (np.asarray(truth["rel_flux"], float) >= rel_min) & group_mask(truth, group)
    return float(np.mean(np.asarray(truth["matched"], bool)[sel])) if sel.any() else np.nan


def sep68_deg(truth: Table, rel_min: float = 1.0, point_only: bool = True) -> float:
    """68 % containment of the separations of matched sources above ``rel_min``
    (point sources only by default: an extended source's centre is not a point)."""
    sel = np.asarray(truth["matched"], bool) & (np.asarray(truth["rel_flux"], float) >= rel_min)
    if point_only:
        sel &= np.asarray(truth["kind"]) == 0
    s = np.asarray(truth["sep_deg"], float)[sel]
    return float(np.quantile(s, 0.68)) if len(s) else np.nan


def count_error(truth: Table, dets: Table, rel_min: float = 1.0) -> np.ndarray:
    """|N_pred − N_true| per patch, N_true the sources above ``rel_min``."""
    patches = np.unique(np.concatenate([np.asarray(truth["patch"]), np.asarray(dets["patch"])]))
    out = []
    for i in patches:
        n_true = np.sum((np.asarray(truth["patch"]) == i) & (np.asarray(truth["rel_flux"], float) >= rel_min))
        n_pred = np.sum(np.asarray(dets["patch"]) == i)
        out.append(abs(int(n_pred) - int(n_true)))
    return np.array(out, float)


# --------------------------------------------------------------------------- intervals over test patches
def per_patch_counts(truth: Table, dets: Table, rel_min: float = 1.0, patches=None) -> dict:
    """Per test patch (or field): true positives ``tp``, false positives ``fp``
    and true sources ``n_true`` above ``rel_min`` (the rule of :func:`prf`),
    and ``n_det`` (all detections), over ``patches`` (default: those of either table)."""
    tp_all = np.asarray(truth["matched"], bool) & (np.asarray(truth["rel_flux"], float) >= rel_min)
    ok = np.asarray(truth["rel_flux"], float) >= rel_min
    fp_all = np.isnan(np.asarray(dets["matched_rel_flux"], float))
    tpatch, dpatch = np.asarray(truth["patch"]), np.asarray(dets["patch"])
    if patches is None:
        patches = np.unique(np.concatenate([tpatch, dpatch]))
    out = {"patch": np.asarray(patches)}
    out["tp"] = np.array([np.sum(tp_all[tpatch == i]) for i in patches], float)
    out["n_true"] = np.array([np.sum(ok[tpatch == i]) for i in patches], float)
    out["fp"] = np.array([np.sum(fp_all[dpatch == i]) for i in patches], float)
    out["n_det"] = np.array([np.sum(dpatch == i) for i in patches], float)
    return out


def _f1(tp, fp, n_true):
    tp, fp, n_true = float(np.sum(tp)), float(np.sum(fp)), float(np.sum(n_true))
    return 2 * tp / (n_true + tp + fp) if (n_true + tp + fp) > 0 else 0.0


def _recall(tp, n_true):
    return float(np.sum(tp)) / float(np.sum(n_true)) if np.sum(n_true) > 0 else 0.0


def _precision(tp, fp):
    return float(np.sum(tp)) / float(np.sum(tp) + np.sum(fp)) if np.sum(tp) + np.sum(fp) > 0 else 0.0


STATISTICS = {"f1": (_f1, ("tp", "fp", "n_true")), "recall": (_recall, ("tp", "n_true")),
              "precision": (_precision, ("tp", "fp")), "false_per_field": (lambda fp: float(np.mean(fp)), ("fp",)),
              "detections_per_field": (lambda n: float(np.mean(n)), ("n_det",))}


def interval(counts: dict, statistic: str, n_resamples: int = 1000, seed: int = 0) -> list[float]:
    """Bootstrap 68 % interval (:func:`skyml.metrics.bootstrap_ci`) of a pooled
    statistic of :data:`STATISTICS` (``f1``, ``recall``, ``precision``:
    from the summed counts; ``false_per_field``: the mean false detections)
    over the test patches of :func:`per_patch_counts`, resampled together."""
    import warnings

    from ..metrics import bootstrap_ci

    func, names = STATISTICS[statistic]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns when every resample gives the same value
        return bootstrap_ci(func, *(counts[k] for k in names), n_resamples=n_resamples, seed=seed)


def difference_interval(a: dict, b: dict, statistic: str, n_resamples: int = 1000, seed: int = 0) -> list[float]:
    """Paired bootstrap 68 % interval of ``statistic(a) − statistic(b)``, a
    pooled statistic of :data:`STATISTICS` for two detectors' per-patch counts
    (:func:`per_patch_counts`) on the same patches: each resample draws patches
    and scores both detectors on them, so the interval is that of the
    difference, narrower than the two intervals side by side when the
    detectors succeed and fail on the same patches."""
    import warnings

    from ..metrics import bootstrap_ci

    if not np.array_equal(np.asarray(a["patch"]), np.asarray(b["patch"])):
        raise ValueError("difference_interval: the two detectors' counts must be on the same patches, in the same order")
    func, names = STATISTICS[statistic]
    k = len(names)

    def diff(*samples):
        return func(*samples[:k]) - func(*samples[k:])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns when every resample gives the same value
        return bootstrap_ci(diff, *(a[n] for n in names), *(b[n] for n in names), n_resamples=n_resamples, seed=seed)


# --------------------------------------------------------------------------- sensitivity at a matched false rate
def threshold_at_false_rate(dets: Table, n_patches: int, rate: float) -> float:
    """The lowest score threshold at which the unmatched detections (``dets``
    of :func:`evaluate`, over ``n_patches`` patches) number at most ``rate``
    per patch: just above the score of the (k+1)-th highest-scoring false
    detection, k = floor(rate · n_patches); the lowest score of all
    detections when there are not that many false ones."""
    scores = np.asarray(dets["score"], float)
    false = np.sort(scores[np.isnan(np.asarray(dets["matched_rel_flux"], float))])[::-1]
    k = int(np.floor(rate * n_patches + 1e-9))
    if len(false) <= k:
        return float(scores.min()) if len(scores) else 0.0
    return float(np.nextafter(false[k], np.inf))


def completeness_f50(flux, detected) -> float:
    """Flux at which the completeness reaches 50 %: the maximum-likelihood
    logistic curve in ln(flux), P(detected) = 1 / (1 + exp(-(ln F - ln F50) / w)),
    fitted to the detected/missed outcome of every source (Newton-Raphson on
    the intercept and slope of the logit, the width w kept in [0.05, 3] in
    ln F, so that a step-like completeness gives the flux of the step).
    NaN when no source or every source is detected or missed."""
    x = np.log(np.asarray(flux, float))
    y = np.asarray(detected, bool).astype(float)
    if len(x) == 0 or y.min() == y.max():
        return np.nan
    xc = x - np.median(x)
    b_lo, b_hi = 1 / 3.0, 1 / 0.05
    a, b = 0.0, 1.0
    for _ in range(100):
        pr = 1 / (1 + np.exp(-(a + b * xc)))
        g = np.array([np.sum(y - pr), np.sum((y - pr) * xc)])
        w = pr * (1 - pr) + 1e-12
        h = np.array([[np.sum(w), np.sum(w * xc)], [np.sum(w * xc), np.sum(w * xc * xc)]])
        step = np.linalg.solve(h + 1e-9 * np.eye(2), g)
        a_new, b_new = a + step[0], float(np.clip(b + step[1], b_lo, b_hi))
        if b_new != b + step[1]:  # slope at its bound: the intercept alone (1-D Newton)
            pr = 1 / (1 + np.exp(-(a + b_new * xc)))
            a_new = a + np.sum(y - pr) / (np.sum(pr * (1 - pr)) + 1e-12)
        done = abs(a_new - a) < 1e-10 and abs(b_new - b) < 1e-10
        a, b = a_new, b_new
        if done:
            break
    return float(np.exp(np.median(x) - a / b))


def sensitivity_ratio(rel_flux: list, detected_ref: list, detected_net: list, n_resamples: int = 1000,
                      seed: int = 0) -> dict:
    """F50(reference) / F50(network) (:func:`completeness_f50`) over test
    patches: ``rel_flux``, ``detected_ref``, ``detected_net`` are lists with
    one array per patch (the same sources for both methods). Returns the
    ratio, both F50 and the bootstrap 68 % interval of the ratio over patches
    (:func:`skyml.metrics.bootstrap_ci`, ``n_resamples`` resamples)."""
    import warnings

    from ..metrics import bootstrap_ci

    n = len(rel_flux)
    cat = (lambda arrays, idx: np.concatenate([arrays[int(i)] for i in idx]))

    def ratio(idx):
        f = cat(rel_flux, idx)
        return completeness_f50(f, cat(detected_ref, idx)) / completeness_f50(f, cat(detected_net, idx))

    idx = np.arange(n)
    out = {"f50_ref": completeness_f50(cat(rel_flux, idx), cat(detected_ref, idx)),
           "f50_net": completeness_f50(cat(rel_flux, idx), cat(detected_net, idx))}
    out["ratio"] = out["f50_ref"] / out["f50_net"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out["ci68"] = bootstrap_ci(ratio, idx, n_resamples=n_resamples, seed=seed) if n >= 2 else None
    return out


# --------------------------------------------------------------------------- an ideal detector, for reference
def ideal_detection(data: dict, p, sqrt_ts_min: float = 5.0, rel_min: float = 1.0) -> Table:
    """The sources of ``data`` (patches of :func:`skyml.ctao.simulate.simulate_patches`) inside their
    patch and at or above ``rel_min`` × the survey sensitivity, as an ideal detector sees them: one told each
    source's position, shape and spectrum and the expected counts of the background and of every other source,
    which tests for that source alone (likelihood ratio, the source's amplitude free) over every pixel and
    energy bin. ``ts_asimov``: its median test statistic (:func:`skyml.ctao.simulate.asimov_ts` of the source's
    expected counts over the rest); ``p_detect``: the probability that √TS reaches ``sqrt_ts_min``,
    Φ(√TS_A − ``sqrt_ts_min``) (Wald's approximation, √TS distributed as N(√TS_A, 1)). A blind detector, which
    must also find the position and the size and pays for every place it looks, does not reach this recall at
    the same threshold. Columns also ``patch``, ``rel_flux``, ``kind``, ``overlapping`` (as :func:`evaluate`'s
    truth, so :func:`group_mask` applies). ``p`` is the survey of every patch: not a randomised one, whose
    patches each draw their own."""
    from scipy.stats import norm

    from .simulate import N_BINS, asimov_ts, background_npred, npred_components, render_source

    if p.randomise:
        raise ValueError("ideal_detection needs the instrument of the patches: a randomised survey draws one per patch")
    x, y = np.asarray(data["x_pix"], float), np.asarray(data["y_pix"], float)
    rel = np.asarray(data["flux_1tev"], float) / np.asarray(data["sens_flux"], float)
    inside = (x > -0.5) & (x < p.npix - 0.5) & (y > -0.5) & (y < p.npix - 0.5)
    rows = np.nonzero(inside & (rel >= rel_min))[0]
    comps = npred_components(data["flux_1tev"][rows], data["index"][rows], x[rows], y[rows], p)
    bkg = background_npred(p)
    ts = np.empty(len(rows))
    for n, j in enumerate(rows):
        s = np.zeros((N_BINS, p.npix, p.npix))
        render_source(x[j], y[j], comps[n], int(data["kind"][j]), float(data["size_deg"][j]) / p.binsz_deg, p, s)
        use = s > 0
        rest = bkg + np.asarray(data["source_npred"][int(data["patch"][j])], float) - s
        ts[n] = float(np.sum(asimov_ts(s[use], rest[use])))
    return Table({"patch": np.asarray(data["patch"])[rows], "rel_flux": rel[rows],
                  "kind": np.asarray(data["kind"])[rows], "overlapping": np.asarray(data["companion"])[rows] >= 0,
                  "ts_asimov": ts, "p_detect": norm.cdf(np.sqrt(ts) - sqrt_ts_min)})


def ideal_summary(table: Table, n_resamples: int = 1000) -> dict:
    """Expected recall of :func:`ideal_detection` (the mean ``p_detect``): ``recall`` with its bootstrap 68 %
    interval over patches (``recall_ci68``, :func:`interval`), ``recall_<group>`` for the isolated, overlapping
    and extended sources, and ``f1_at_precision_1``, the F1 of that recall with no false detection, 2R / (1 + R)."""
    p_det = np.asarray(table["p_detect"], float)
    patch = np.asarray(table["patch"])
    patches = np.unique(patch)
    pp = {"tp": np.array([p_det[patch == i].sum() for i in patches]),
          "n_true": np.array([np.sum(patch == i) for i in patches], float)}
    recall = float(p_det.mean()) if len(p_det) else np.nan
    out = {"recall": recall, "recall_ci68": interval(pp, "recall", n_resamples) if len(patches) > 1 else None,
           "f1_at_precision_1": 2 * recall / (1 + recall)}
    for g in GROUPS[1:]:
        sel = group_mask(table, g)
        out[f"recall_{g}"] = float(p_det[sel].mean()) if sel.any() else np.nan
    return out
