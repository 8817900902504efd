"""Matching, flux estimates, purity/completeness and DR2 recall.

**Matching** (:func:`skyml.metrics.match_sky`): all detection–source pairs closer than
the association radius (astropy ``search_around_sky``, great-circle
separations, so l = 0/360 is no boundary) are taken in order of increasing
separation; a pair is accepted when neither its detection nor its source is
used yet — the iterative nearest-neighbour association of the seed, in which
a true source is used once.

**Purity and completeness versus F(1–100 GeV)** (AutoSourceID's table):
completeness in a flux bin is the matched fraction of the true sources whose
flux falls in it; purity in a bin is the matched fraction of the detections
whose *estimated* flux falls in it. **Purity over all detections** and
**false detections per patch** count every scored detection whatever its
estimated flux (a detection below the lowest bin is in no bin's purity). Every method's detections get the same
flux estimate (:func:`flux_estimates`): the linear matched filter of a
point-source template (power law of index 2.2, the simulation's PSF) on the
counts above 1 GeV minus the true background, weighted by 1/(background + 0.1).
Flux bins are AutoSourceID's: its rows 1.27, 2.34, 4.28, 7.85e-10 ph cm⁻² s⁻¹
are edges of ``np.logspace(-12, -7, 20)``, and each row is the differential
bin [edge_k, edge_k+1) labelled by its lower edge (:data:`ASID_BIN_EDGES`;
the row 2.34e-10 is [2.34e-10, 4.28e-10)). An earlier version took the rows
as bin centres with edges at their geometric midpoints, which shifted every
bin down by half a bin.

**Margin.** Detections are matched to all simulated sources near a patch (on
it or up to ``source_margin_deg`` outside); true sources and detections within
``margin_deg`` of a patch edge are then not scored, so that a detection of a
source just outside the patch, or spill-in of its PSF, is not a false positive
and a source cut by the edge is not a miss. Every method is scored on the
same inner region.

**Uncertainties.** 68 % intervals (:func:`skyml.metrics.bootstrap_ci`) resample
the test patches: each patch's counts of true, matched, detected and
matched-detected sources are kept together (:func:`scores_with_ci`).

**Patches.** On the mock test skies every patch is evaluated on its own:
true sources and detections on the patch. On the DR2 sky a detection is kept
only by the patch that owns its position (the HEALPix NSIDE=8 pixel), and the
DR2 sources of the evaluated pixels that fall on their own patch are the
truth; sources of those pixels outside the square patch are "not covered"
(:func:`dr2_recall` reports the covered fraction).
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table

from .. import metrics, parallel, published
from ..metrics import match_sky as match_sources
from . import catalog, detect, irf
from .simulate import FermiSimParams, in_patch, owner_pixel, patch_wcs, pix_to_world, render_sources

#: AutoSourceID's differential flux bins: edges 8–12 of ``np.logspace(-12, -7, 20)``
#: [ph cm⁻² s⁻¹]; bin k is [edge_k, edge_k+1), labelled by its lower edge (:data:`ASID_ROWS`).
ASID_BIN_EDGES = np.logspace(-12.0, -7.0, 20)[8:13]
ASID_ROWS = ASID_BIN_EDGES[:-1]
#: geometric centres of those bins (where they are plotted)
ASID_BIN_CENTRES = np.sqrt(ASID_BIN_EDGES[:-1] * ASID_BIN_EDGES[1:])
#: AutoSourceID's purity and completeness per flux bin, all-sky (``_all``) and at
#: |b| > 20° (``_hilat``), from ``data/published.yml``: differential bins of
#: ``np.logspace(-12, -7, 20)`` whose lower edges are the rows 1.27, 2.34, 4.28,
#: 7.85e-10 (``lower_edge``, ``upper_edge``); NaN where the table gives no value.
AUTOSOURCEID = published.autosourceid_bins()
SIGNIF_EDGES = np.array([0.0, 10.0, 20.0, 40.0, np.inf])
LAT_BANDS = ((0.0, 10.0), (10.0, 20.0), (20.0, 90.1))
HILAT_DEG = 20.0


def asid_label(row: float) -> str:
    """The row label of AutoSourceID's table as printed there, e.g. ``2.34e-10``."""
    return f"{row:.2e}"


def detections_to_sky(data: dict, det: dict, p: FermiSimParams):
    """(glon, glat) of detections given in patch pixels."""
    lon = np.empty(len(det["x_pix"]))
    lat = np.empty(len(det["x_pix"]))
    for i in np.unique(det["patch"]).astype(int):
        m = det["patch"] == i
        lon[m], lat[m] = pix_to_world(patch_wcs(data["centre_glon"][i], data["centre_glat"][i], p),
                                      det["x_pix"][m], det["y_pix"][m])
    return lon, lat


def _unit_template_counts(p: FermiSimParams) -> np.ndarray:
    """Node counts of a unit-Flux1000 power law of index 2.2."""
    from .simulate import node_counts

    spec = {"spectrum_type": np.array([catalog.POWERLAW]), "index": np.array([2.2]), "beta": np.zeros(1),
            "expfactor": np.zeros(1), "exp_index": np.ones(1), "pivot_mev": np.array([1000.0]),
            "flux1000": np.ones(1)}
    return node_counts(spec, p.event_types) * p.exposure_scale


def flux_estimates(data: dict, det: dict, p: FermiSimParams, bins=(1, 2, 3, 4, 5)) -> np.ndarray:
    """Matched-filter F(1–100 GeV) [ph cm⁻² s⁻¹] of each detection (see module docstring)."""
    unit = _unit_template_counts(p)
    bins = list(bins)
    out = np.empty(len(det["x_pix"]))
    for j, (i, x, y) in enumerate(zip(det["patch"].astype(int), det["x_pix"], det["y_pix"])):
        t = render_sources([x], [y], unit, p)[bins]
        n = data["counts"][i][bins].astype(float)
        b = data["background"][i][bins].astype(float)
        w = t / (b + 0.1)
        out[j] = np.sum(w * (n - b)) / np.sum(w * t)
    return out


def in_scored_region(x, y, p: FermiSimParams, margin_deg: float) -> np.ndarray:
    """Pixel positions on the patch and at least ``margin_deg`` from its edges."""
    m = margin_deg / p.binsz_deg
    x, y = np.asarray(x), np.asarray(y)
    return (x >= -0.5 + m) & (x < p.npix - 0.5 - m) & (y >= -0.5 + m) & (y < p.npix - 0.5 - m)


def evaluate_patches(data: dict, det: dict, p: FermiSimParams, radius_deg: float = 0.3, margin_deg: float = 0.0,
                     flux: bool = True):
    """Per-patch matching on a simulated sky. Returns (truth, detections) tables of the
    *scored* sources and detections (on the patch, ``margin_deg`` or more from its edges):
    truth = (patch, glon, glat, flux1000, matched, sep_deg, detection);
    detections = (patch, glon, glat, score, flux_est, matched). Detections are matched to
    every simulated source near the patch, scored or not (module docstring). ``flux=False``
    leaves out the detections' flux estimates (``flux_est``), the slow part."""
    det_lon, det_lat = detections_to_sky(data, det, p)
    det_on = in_patch(det["x_pix"], det["y_pix"], p.npix)
    det_scored = in_scored_region(det["x_pix"], det["y_pix"], p, margin_deg)
    matched_det = np.zeros(len(det_lon), bool)
    n_src = len(data["src_patch"])
    matched_true = np.zeros(n_src, bool)
    sep_true = np.full(n_src, np.nan)
    det_of_true = np.full(n_src, -1)
    for i in range(len(data["counts"])):
        t = np.flatnonzero(data["src_patch"] == i)
        d = np.flatnonzero((det["patch"] == i) & det_on)
        d2t, t2d, sep = match_sources(det_lon[d], det_lat[d], data["src_glon"][t], data["src_glat"][t], radius_deg)
        matched_det[d] = d2t >= 0
        matched_true[t] = t2d >= 0
        sep_true[t] = sep
        if len(d):  # a patch without detections leaves its sources unmatched (-1)
            det_of_true[t] = np.where(t2d >= 0, d[np.maximum(t2d, 0)], -1)
    rows = np.flatnonzero(data["src_in_patch"] & in_scored_region(data["src_x_pix"], data["src_y_pix"], p,
                                                                  margin_deg))
    truth = Table({"patch": data["src_patch"][rows], "glon": data["src_glon"][rows], "glat": data["src_glat"][rows],
                   "flux1000": data["src_flux1000"][rows], "matched": matched_true[rows], "sep_deg": sep_true[rows],
                   "detection": det_of_true[rows]})
    score = det.get("probability", det.get("sqrt_ts"))
    dets = Table({"patch": det["patch"].astype(int), "glon": det_lon, "glat": det_lat, "score": score,
                  "on_patch": det_on, "matched": matched_det})[det_scored]
    scored = {k: np.asarray(det[k])[det_scored] for k in ("patch", "x_pix", "y_pix")}
    if flux:
        dets["flux_est"] = flux_estimates(data, scored, p) if len(dets) else np.empty(0)
    return truth, dets


KMEANS_PENALTIES_PX2 = (10.0, 20.0, 30.0, 45.0, 70.0, 100.0, 150.0)
KMEANS_PEAK_DISTANCES_PX = (1, 2)


def _kmeans_detections(setting, prob_maps, threshold):
    penalty, distance = setting
    return detect.detect_all(prob_maps, "unet_kmeans", threshold, penalty_px2=penalty,
                             min_peak_distance_px=distance)


def tune_kmeans(prob_maps, data: dict, p: FermiSimParams, threshold: float, radius_deg: float, margin_deg: float,
                flux_min: float = ASID_BIN_EDGES[0], penalties=KMEANS_PENALTIES_PX2,
                peak_distances=KMEANS_PEAK_DISTANCES_PX) -> dict:
    """Grid search of the k-means step (:func:`skyml.fermi.detect.kmeans_positions`)
    on validation patches with known sources: its penalty per cluster and the
    minimum distance between the probability peaks that bound k. The chosen
    setting has the highest F1 of the completeness of the scored sources with
    F(1–100 GeV) >= ``flux_min`` and the purity over all scored detections.
    The settings run where :mod:`skyml.parallel` says (the same result for
    any number of workers).

    Returns ``{"penalty_px2", "min_peak_distance_px", "scores" (a Table, one
    row per setting), "interior"}``; ``interior`` is True when the penalty lies
    strictly inside its grid and the peak distance is not the grid's largest
    (1 px, adjacent pixels, is the smallest distance there is)."""
    settings = [(float(a), int(b)) for a in penalties for b in peak_distances]
    found = parallel.map_items(_kmeans_detections, settings, desc="k-means grid", prob_maps=np.asarray(prob_maps),
                               threshold=float(threshold))
    rows = []
    for (penalty, distance), det in zip(settings, found):
        truth, dets = evaluate_patches(data, det, p, radius_deg, margin_deg, flux=False)
        bright = np.asarray(truth["flux1000"]) >= flux_min
        c = float(np.mean(truth["matched"][bright])) if bright.any() else 0.0
        q = float(np.mean(dets["matched"])) if len(dets) else 0.0
        rows.append((penalty, distance, int(bright.sum()), len(dets), c, q, 2 * c * q / (c + q) if c + q else 0.0))
    scores = Table(rows=rows, names=("penalty_px2", "min_peak_distance_px", "n_sources", "n_detections",
                                     "completeness", "purity", "f1"))
    best = int(np.argmax(scores["f1"]))  # the first of equal F1s: the smaller penalty and distance
    penalty, distance = float(scores["penalty_px2"][best]), int(scores["min_peak_distance_px"][best])
    interior = min(penalties) < penalty < max(penalties) and distance < max(peak_distances)
    return {"penalty_px2": penalty, "min_peak_distance_px": distance, "scores": scores, "interior": bool(interior)}


def purity_completeness(truth: Table, dets: Table, hilat: bool = False, edges=None) -> Table:
    """Purity, completeness and counts per flux bin (all sky, or |b| > 20°), on AutoSourceID's
    bins by default: ``asid_row`` is the row label (lower edge), ``flux_centre`` the geometric centre."""
    edges = ASID_BIN_EDGES if edges is None else np.asarray(edges, float)
    tsel = np.abs(truth["glat"]) > HILAT_DEG if hilat else np.ones(len(truth), bool)
    dsel = np.abs(dets["glat"]) > HILAT_DEG if hilat else np.ones(len(dets), bool)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        t = tsel & (truth["flux1000"] >= lo) & (truth["flux1000"] < hi)
        d = dsel & (dets["flux_est"] >= lo) & (dets["flux_est"] < hi)
        n_t, n_d = int(t.sum()), int(d.sum())
        rows.append((lo, np.sqrt(lo * hi), lo, hi, n_t, int(truth["matched"][t].sum()), n_d,
                     int(dets["matched"][d].sum()),
                     truth["matched"][t].mean() if n_t else np.nan,
                     dets["matched"][d].mean() if n_d else np.nan))
    return Table(rows=rows, names=("asid_row", "flux_centre", "flux_lo", "flux_hi", "n_true", "n_true_matched",
                                   "n_det", "n_det_matched", "completeness", "purity"))


def _per_patch(values, patch, n_patches) -> np.ndarray:
    return np.bincount(np.asarray(patch, int), weights=np.asarray(values, float), minlength=n_patches)


def _ratio_ci(num, den, seed=0):
    """sum(num) / sum(den) and its bootstrap 68 % interval over patches (None where undefined)."""
    value = float(num.sum() / den.sum()) if den.sum() > 0 else np.nan
    if not np.isfinite(value) or np.count_nonzero(den) < 2:
        return value, None

    def stat(a, b):
        return a.sum() / b.sum() if b.sum() > 0 else value

    return value, metrics.bootstrap_ci(stat, num, den, seed=seed)


def scores_with_ci(truth: Table, dets: Table, n_patches: int, lo: float = -np.inf, hi: float = np.inf,
                   hilat: bool = False, seed: int = 0) -> dict:
    """Completeness (true flux in [lo, hi)), purity (estimated flux in [lo, hi)), purity over
    all detections and false detections per patch (these two over every scored detection,
    all latitudes), each with its bootstrap 68 % interval over the ``n_patches`` test patches:
    ``{name: (value, [low, high] or None)}``."""
    tsel = (truth["flux1000"] >= lo) & (truth["flux1000"] < hi)
    dsel = (dets["flux_est"] >= lo) & (dets["flux_est"] < hi)
    if hilat:
        tsel &= np.abs(truth["glat"]) > HILAT_DEG
        dsel &= np.abs(dets["glat"]) > HILAT_DEG
    n_t = _per_patch(tsel, truth["patch"], n_patches)
    m_t = _per_patch(tsel & truth["matched"], truth["patch"], n_patches)
    n_d = _per_patch(dsel, dets["patch"], n_patches)
    m_d = _per_patch(dsel & dets["matched"], dets["patch"], n_patches)
    all_d = _per_patch(np.ones(len(dets)), dets["patch"], n_patches)
    all_m = _per_patch(dets["matched"], dets["patch"], n_patches)
    false = all_d - all_m
    out = {"completeness": _ratio_ci(m_t, n_t, seed), "purity": _ratio_ci(m_d, n_d, seed),
           "purity_all_detections": _ratio_ci(all_m, all_d, seed)}
    out["false_per_patch"] = (float(false.mean()), metrics.bootstrap_ci(np.mean, false, seed=seed)
                              if n_patches > 1 else None)
    return out


def above_score(truth: Table, dets: Table, det_score: np.ndarray, threshold: float) -> tuple[Table, Table]:
    """(truth, detections) of :func:`evaluate_patches` keeping only the
    detections with score >= ``threshold``: a true source whose matched
    detection falls below it becomes unmatched (the matching is not redone).
    ``det_score`` is the score of every detection before the scored-region cut,
    which ``truth["detection"]`` indexes."""
    score = np.asarray(det_score, float)
    truth = truth.copy()
    idx = np.asarray(truth["detection"])
    kept = np.zeros(len(truth), bool)
    kept[idx >= 0] = score[idx[idx >= 0]] >= threshold
    truth["matched"] = np.asarray(truth["matched"], bool) & kept
    return truth, dets[np.asarray(dets["score"], float) >= threshold]


def threshold_at_purity(truth: Table, dets: Table, det_score: np.ndarray, target: float) -> float:
    """The lowest score threshold at which the purity over all scored
    detections reaches ``target`` (the lowest score when it already does; NaN
    when no threshold does): the operating point at which a detector is
    compared with another at equal purity."""
    scores = np.unique(np.asarray(dets["score"], float))
    for t in scores:
        sel = np.asarray(dets["score"], float) >= t
        if sel.any() and float(np.mean(np.asarray(dets["matched"])[sel])) >= target:
            return float(t)
    return float("nan")


def equal_purity(tables: dict, full_scores: dict, n_patches: int, lo: float, hi: float, min_true: int = 10) -> dict:
    """Two detectors compared at equal purity over all scored detections.

    ``tables``: {method: (truth, detections)} of :func:`evaluate_patches` for
    two methods; ``full_scores``: {method: score of every detection before the
    scored-region cut}. The less pure detector's threshold is raised to the
    other's purity (:func:`threshold_at_purity`). Returns ``raised`` (its
    name), ``threshold`` (NaN when it cannot reach that purity; then nothing
    else), ``level`` (the common purity target), and per method ``scores``
    (:func:`scores_with_ci` in [lo, hi), for "all" and "hilat") and
    ``per_bin`` (:func:`purity_completeness`, |b| > 20°), and ``n_below``:
    the bins with at least ``min_true`` true sources where the first method's
    completeness is below the second's, out of ``n_bins``."""
    methods = list(tables)
    if len(methods) != 2:
        raise ValueError(f"equal_purity compares two methods, not {len(methods)}")
    purity = {m: scores_with_ci(*tables[m], n_patches)["purity_all_detections"][0] for m in methods}
    raised = min(methods, key=lambda m: purity[m])
    level = max(purity.values())
    cut = threshold_at_purity(*tables[raised], full_scores[raised], level)
    out = {"raised": raised, "threshold": cut, "level": level, "purity_before": purity}
    if not np.isfinite(cut):
        return out
    sets = dict(tables)
    sets[raised] = above_score(*tables[raised], full_scores[raised], cut)
    out["scores"] = {m: {region: scores_with_ci(*sets[m], n_patches, lo, hi, hilat=hilat)
                         for region, hilat in (("all", False), ("hilat", True))} for m in methods}
    out["per_bin"] = {m: purity_completeness(*sets[m], hilat=True) for m in methods}
    first, second = (out["per_bin"][m] for m in methods)
    counted = ((second["n_true"] >= min_true) & np.isfinite(first["completeness"])
               & np.isfinite(second["completeness"]))
    out["n_below"] = int(np.sum(counted & (first["completeness"] < second["completeness"])))
    out["n_bins"] = int(counted.sum())
    out["counted"] = np.asarray(counted)
    return out


def binned_quantiles(x, y, edges, quantiles=(0.16, 0.5, 0.84), min_count: int = 3) -> np.ndarray:
    """(len(quantiles), n_bins) quantiles of ``y`` in the bins ``edges`` of
    ``x``; NaN in a bin with fewer than ``min_count`` values."""
    from scipy.stats import binned_statistic

    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)

    def stat(q):
        return lambda v: np.quantile(v, q) if len(v) >= min_count else np.nan

    return np.array([binned_statistic(x[ok], y[ok], stat(q), bins=edges).statistic for q in quantiles])


def dr2_recall(data: dict, det: dict, p: FermiSimParams, radius_deg: float = 0.5):
    """Recovery of DR2 sources on the simulated DR2 sky.

    Returns ``(sources, detections, coverage)``: the table of DR2 sources of the
    evaluated pixels that lie on their own patch (name, glon, glat,
    signif_avg, c_source, class1, matched, sep_deg), the owned detections
    (with the matched DR2 name and class, the seed's comparison table), and
    the fraction of the DR2 sources of those pixels that lie on their patch.
    """
    det_lon, det_lat = detections_to_sky(data, det, p)
    pixels = data["centre_pixel"]
    owned = owner_pixel(det_lon, det_lat) == pixels[det["patch"].astype(int)] if len(det_lon) else \
        np.zeros(0, bool)
    cat_pix = owner_pixel(data["dr2_glon"], data["dr2_glat"])
    in_eval = np.isin(cat_pix, pixels)
    on_patch = np.zeros(len(cat_pix), bool)
    patch_of_pixel = {int(px): i for i, px in enumerate(pixels)}
    for j in np.flatnonzero(in_eval):
        i = patch_of_pixel[int(cat_pix[j])]
        x, y = patch_wcs(data["centre_glon"][i], data["centre_glat"][i], p).wcs_world2pix(
            [data["dr2_glon"][j]], [data["dr2_glat"][j]], 0)
        on_patch[j] = bool(in_patch(x, y, p.npix)[0])
    truth_idx = np.flatnonzero(in_eval & on_patch)
    d_idx = np.flatnonzero(owned)
    d2t, t2d, sep = match_sources(det_lon[d_idx], det_lat[d_idx], data["dr2_glon"][truth_idx],
                                  data["dr2_glat"][truth_idx], radius_deg)
    sources = Table({
        "name": data["dr2_name"][truth_idx], "glon": data["dr2_glon"][truth_idx],
        "glat": data["dr2_glat"][truth_idx], "signif_avg": data["dr2_signif_avg"][truth_idx],
        "c_source": data["dr2_c_source"][truth_idx], "class1": data["dr2_class1"][truth_idx],
        "flux1000": data["dr2_flux1000"][truth_idx], "matched": t2d >= 0, "sep_deg": sep,
    })
    score = det.get("probability", det.get("sqrt_ts"))
    matched_name = np.where(d2t >= 0, data["dr2_name"][truth_idx][np.maximum(d2t, 0)], "")
    matched_class = np.where(d2t >= 0, data["dr2_class1"][truth_idx][np.maximum(d2t, 0)], "")
    t_lon = np.where(d2t >= 0, data["dr2_glon"][truth_idx][np.maximum(d2t, 0)], np.nan)
    t_lat = np.where(d2t >= 0, data["dr2_glat"][truth_idx][np.maximum(d2t, 0)], np.nan)
    detections = Table({"LON": det_lon[d_idx], "LAT": det_lat[d_idx], "Probability": score[d_idx],
                        "GLON": t_lon, "GLAT": t_lat, "Name": matched_name, "Class": matched_class})
    coverage = float(len(truth_idx) / max(in_eval.sum(), 1))
    return sources, detections, coverage


def recall_table(sources: Table, with_c: bool = True) -> Table:
    """Recall of DR2 sources per Signif_Avg bin and latitude band."""
    sel = np.isfinite(sources["signif_avg"]) & (with_c | ~sources["c_source"])
    rows = []
    for lo, hi in zip(SIGNIF_EDGES[:-1], SIGNIF_EDGES[1:]):
        for blo, bhi in ((0.0, 90.1),) + LAT_BANDS:
            m = sel & (sources["signif_avg"] >= lo) & (sources["signif_avg"] < hi) \
                & (np.abs(sources["glat"]) >= blo) & (np.abs(sources["glat"]) < bhi)
            n = int(m.sum())
            rows.append((lo, hi, blo, min(bhi, 90.0), n, int(sources["matched"][m].sum()),
                         sources["matched"][m].mean() if n else np.nan))
    return Table(rows=rows, names=("signif_lo", "signif_hi", "abs_b_lo", "abs_b_hi", "n", "n_matched", "recall"))


def recall_above_below(sources: Table, split: float = 10.0) -> tuple[float, float]:
    s = sources["signif_avg"]
    ok = np.isfinite(s)
    hi, lo = ok & (s > split), ok & (s <= split)
    return (float(sources["matched"][hi].mean()) if hi.any() else np.nan,
            float(sources["matched"][lo].mean()) if lo.any() else np.nan)


def recall_above_below_ci(sources: Table, pixels, split: float = 10.0, seed: int = 0) -> tuple[tuple, tuple]:
    """:func:`recall_above_below` with bootstrap 68 % intervals over the evaluated patches:
    ``((value, [low, high] or None), (value, interval))`` above and below ``split``.
    ``sources`` is the table of :func:`dr2_recall`, ``pixels`` the evaluated patches'
    ``centre_pixel`` (each source is resampled with the patch that owns it)."""
    pixels = np.asarray(pixels)
    patch_of_pixel = {int(px): i for i, px in enumerate(pixels)}
    if len(sources):
        owners = owner_pixel(np.asarray(sources["glon"], float), np.asarray(sources["glat"], float))
        patch = np.array([patch_of_pixel[int(q)] for q in owners], int)
    else:
        patch = np.zeros(0, int)
    s = np.asarray(sources["signif_avg"], float)
    matched = np.asarray(sources["matched"], bool)
    ok = np.isfinite(s)
    out = []
    for sel in (ok & (s > split), ok & (s <= split)):
        out.append(_ratio_ci(_per_patch(sel & matched, patch, len(pixels)), _per_patch(sel, patch, len(pixels)),
                             seed))
    return tuple(out)


def loc_err68(truth: Table) -> float:
    """68 % containment of the separations of matched sources [deg]."""
    return metrics.containment(np.asarray(truth["sep_deg"][truth["matched"]]), 0.68)


def n_energy_bins() -> int:
    return irf.N_BINS
