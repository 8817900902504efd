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


def apply_threshold(det: dict, threshold: float) -> dict:
    """Detections with ``score >= threshold`` (per-patch extras such as ``seconds`` are kept as they are)."""
    keep = det["score"] >= threshold
    return {k: (v[keep] if np.shape(v) == keep.shape else v) for k, v in det.items()}


def recall_vs_flux(truth: Table, edges=(0.1, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0, 1e4)) -> Table:
    """Recall per bin of F/sensitivity, for all, isolated point, overlapping and extended sources."""
    rel = np.asarray(truth["rel_flux"], float)
    matched = np.asarray(truth["matched"], bool)
    groups = {"all": np.ones(len(rel), bool),
              "isolated": (np.asarray(truth["kind"]) == 0) & ~np.asarray(truth["overlapping"], bool),
              "overlapping": np.asarray(truth["overlapping"], bool),
              "extended": np.asarray(truth["kind"]) > 0}
    edges = np.asarray(edges, float)
    out = {"rel_lo": edges[:-1], "rel_hi": edges[1:]}
    for g, sel in groups.items():
        n = np.array([np.sum(sel & (rel >= a) & (rel < b)) for a, b in zip(edges[:-1], edges[1:])])
        k = np.array([np.sum(sel & matched & (rel >= a) & (rel < b)) for a, b in zip(edges[:-1], edges[1:])])
        out[f"n_{g}"] = n
        out[f"recall_{g}"] = np.where(n > 0, k / np.maximum(n, 1), np.nan)
    return Table(out)


def group_recall(truth: Table, group: str, rel_min: float = 1.0) -> float:
    """Recall above ``rel_min`` of one group (isolated, overlapping, extended)."""
    sel = np.asarray(truth["rel_flux"], float) >= rel_min
    kind, over = np.asarray(truth["kind"]), np.asarray(truth["overlapping"], bool)
    sel &= {"isolated": (kind == 0) & ~over, "overlapping": over, "extended": kind > 0}[group]
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
