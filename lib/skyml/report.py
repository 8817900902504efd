"""Regenerate the results tables from the metrics files.

    python -m skyml.report            # rewrite the README headline table and docs/results.md
    python -m skyml.report --check    # exit 1 when either is out of date

Two outputs, both generated, never typed:

* the **headline table** of ``README.md``, between ``<!-- results-table:start -->``
  and ``<!-- results-table:end -->``: full profile only, one row per headline
  metric (:data:`HEADLINES`) with the best network, the best classical method
  and the published number of the same metric;
* the **full metrics page** ``docs/results.md``: every metric of :data:`METRICS`
  found in ``data/results/full/`` and ``data/results/quick/`` (see
  :mod:`skyml.results`), one row per profile.

Published numbers come from ``data/published.yml`` (:mod:`skyml.published`)
only. A metric ``K`` whose file also has ``K_ci68 = [low, high]`` is shown with
that interval. A commit ending in ``-dirty`` marks a result computed from a
work tree with uncommitted changes. To add a row, add one :data:`METRICS`
entry (and the notebook to :data:`ANALYSES`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from . import paths, published

START = "<!-- results-table:start -->"
END = "<!-- results-table:end -->"
README = paths.ROOT / "README.md"
RESULTS_PAGE = paths.ROOT / "docs" / "results.md"
OTHER_DEFINITION = "‡"

ANALYSES = {
    "02_cta_cnn_cleaner": "CTA background cleaning",
    "03_cta_cnn_regressor": "CTA source localisation",
    "04_fermi_unet_kmeans": "Fermi-LAT point-source detection",
    "05_fermi_characterisation": "Fermi-LAT source characterisation",
    "06_ctao_survey_detection": "CTAO Galactic-plane survey detection",
    "07_radio_counts": "Radio source counts below threshold",
    "08_lhaaso_deconvolution": "LHAASO resolution enhancement",
}


@dataclass(frozen=True)
class Metric:
    label: str


METRICS: dict[str, Metric] = {
    "excess_relerr68_cnn": Metric("excess counts, 68% relative error (CNN-cleaned)"),
    "excess_relerr68_irf": Metric("excess counts, 68% relative error (IRF background)"),
    "excess_relerr68_ring": Metric("excess counts, 68% relative error (ring background)"),
    "excess_relerr68_bgnet": Metric("excess counts, 68% relative error (learned field-of-view fit)"),
    "excess_relerr68_fov": Metric("excess counts, 68% relative error (classical field-of-view fit)"),
    "excess_relerr68_cnn_talk_metric": Metric(
        "CNN-Cleaner excess against the IRF-subtracted map, σ = 5 px smoothing, 68% relative error"),
    "throughput_maps_per_s_cnn": Metric("CNN cleaning throughput (maps/s)"),
    "throughput_maps_per_s_cleaner": Metric("CNN-Cleaner inference throughput, fastest setting (maps/s)"),
    "throughput_maps_per_s_regressor": Metric("CNN-Regressor of the talk, inference throughput, fastest setting (maps/s)"),
}

LOCALISERS = {
    "talk_cnn": "CNN of the talk",
    "improved_cnn": "improved CNN",
    "gammapy_blind": "gammapy blind search",
    "smoothed_centroid": "smoothed centroid (classical)",
    "gammapy_fit": "gammapy likelihood fit (first n_fit test maps)",
    "pointing_centre": "pointing centre (trivial)",
}
for method, name in LOCALISERS.items():
    METRICS[f"loc_err68_deg_{method}"] = Metric(f"localisation error, 68% containment (deg), {name}")
    METRICS[f"loc_err_median_deg_{method}"] = Metric(f"localisation error, median (deg), {name}")
    METRICS[f"sec_per_map_{method}"] = Metric(f"time per map (s), {name}")
del method, name
FERMI_METHODS = {"unet_kmeans": "U-Net + k-means", "unet_log": "U-Net + LoG", "tsmap": "TS map + find_peaks"}
for method, name in FERMI_METHODS.items():
    METRICS[f"completeness_hilat_asid_bin_2.34e-10_{method}"] = Metric(
        f"completeness, F(1–100 GeV) in [2.34e-10, 4.28e-10), |b|>20°, {name}")
    METRICS[f"purity_hilat_asid_bin_2.34e-10_{method}"] = Metric(
        f"purity, F(1–100 GeV) in [2.34e-10, 4.28e-10), |b|>20°, {name}")
    METRICS[f"purity_all_detections_{method}"] = Metric(f"purity over all detections, {name}")
    METRICS[f"false_per_patch_{method}"] = Metric(f"false detections per 10°×10° patch, {name}")
    METRICS[f"dr2_recall_sig_gt10_{method}"] = Metric(
        f"simulated DR2 sky: recall of Signif_Avg>10 sources, {name}")
    METRICS[f"dr2_recall_sig_lt10_{method}"] = Metric(
        f"simulated DR2 sky: recall of Signif_Avg<10 sources, {name}")
    METRICS[f"dr2_candidates_allsky_{method}"] = Metric(
        f"simulated DR2 sky: candidates, scaled to the whole sky, {name}")
    METRICS[f"loc_err68_deg_{method}"] = Metric(f"localisation error, 68% containment (deg), {name}")
    METRICS[f"sec_per_patch_{method}"] = Metric(f"time per 10°×10° patch (s), {name}")
del method, name
METRICS["completeness_hilat_asid_bin_2.34e-10_unet_kmeans_front"] = Metric(
    "completeness, F(1–100 GeV) in [2.34e-10, 4.28e-10), |b|>20°, U-Net + k-means, FRONT events only")
METRICS["purity_hilat_asid_bin_2.34e-10_unet_kmeans_front"] = Metric(
    "purity, F(1–100 GeV) in [2.34e-10, 4.28e-10), |b|>20°, U-Net + k-means, FRONT events only")
METRICS["psf_r68_deg_1gev_front"] = Metric("68% radius of the simulated LAT PSF at 1 GeV, FRONT (deg)")
METRICS["psf_r68_deg_1gev_back"] = Metric("68% radius of the simulated LAT PSF at 1 GeV, BACK (deg)")
METRICS["dr2_recall_sig_gt10_unet_kmeans_healpix"] = Metric(
    "simulated DR2 sky as all-sky HEALPix maps cut into patches: recall of Signif_Avg>10 sources, U-Net + k-means")
METRICS["robust_completeness_drop_b1_to_b2"] = Metric(
    "completeness change at 2.3e-10, trained on diffuse variant 1, tested on 2 minus on 1")
METRICS["loc_err68_deg_crlb"] = Metric("Cramér-Rao bound, 68% containment (deg)")
METRICS["crlb_ratio_improved_cnn"] = Metric("improved CNN error / Cramér-Rao bound")
for method, name in (("improved_cnn", "improved CNN"), ("improved_cnn_refined", "improved CNN + centroid refinement"),
                     ("smoothed_centroid", "smoothed centroid (classical)"),
                     ("crlb", "Cramér-Rao bound")):
    METRICS[f"loc_err68_deg_bright_{method}"] = Metric(
        f"localisation error above 1 Crab (up to 10 Crab), 68% containment (deg), {name}")
del method, name

LHAASO_METHODS = {"input": "blurred counts map", "cnn": "SRCNN-like CNN", "vae": "VAE", "gan": "GAN",
                  "psf_conditioned": "PSF-conditioned CNN at 40 TeV", "richardson_lucy": "Richardson–Lucy",
                  "smooth_0p29": "0.29° smoothing", "wiener": "Wiener filter", "jolideco": "Jolideco"}
for method, name in LHAASO_METHODS.items():
    for stat, stat_label in (("psnr", "PSNR (dB)"), ("ssim", "SSIM"), ("ms_ssim", "MS-SSIM"), ("nrmse", "NRMSE")):
        METRICS[f"{stat}_{method}"] = Metric(f"{stat_label}, {name}")
del method, name, stat, stat_label
LHAI_PROTOCOL_METHODS = {"input": "blurred counts map", "cnn": "CNN trained for the unsmoothed truth",
                         "unet": "U-Net trained on a randomised sky and instrument, told the nominal PSF",
                         "unet_blind": "the same U-Net told that the PSF is unknown",
                         "cnn_target0p1": "CNN trained for the 0.1° target", "richardson_lucy": "Richardson–Lucy",
                         "jolideco": "Jolideco"}
for method, name in LHAI_PROTOCOL_METHODS.items():
    for stat, stat_label in (("psnr", "PSNR (dB)"), ("ssim", "SSIM"), ("nrmse", "NRMSE")):
        METRICS[f"{stat}_{method}_lhai"] = Metric(f"{stat_label}, LHAI's protocol, {name}")
        if method != "cnn_target0p1":
            METRICS[f"{stat}_{method}_lhai_shifted"] = Metric(
                f"{stat_label}, LHAI's protocol, shifted test set (pictures, another PSF), {name}")
for stat, stat_label in (("psnr", "PSNR (dB)"), ("ssim", "SSIM"), ("nrmse", "NRMSE")):
    METRICS[f"{stat}_unet_psf_true_lhai_shifted"] = Metric(
        f"{stat_label}, LHAI's protocol, shifted test set, the U-Net told the shifted maps' own PSF "
        "(no classical method is given it)")
for method, name in (("input", "blurred counts map"), ("cnn", "CNN"), ("richardson_lucy", "Richardson–Lucy"),
                     ("jolideco", "Jolideco")):
    for stat, stat_label in (("psnr", "PSNR (dB)"), ("ssim", "SSIM"), ("nrmse", "NRMSE")):
        METRICS[f"{stat}_{method}_shifted"] = Metric(f"{stat_label}, shifted test set (pictures, another PSF), {name}")
del method, name, stat, stat_label
METRICS["fwhm_ratio_cnn"] = Metric("bright isolated point source: reconstructed FWHM / PSF FWHM, CNN")
METRICS["flux_conservation_err_cnn"] = Metric("median |total flux out / in − 1|, CNN")
METRICS["fwhm_ratio_richardson_lucy"] = Metric(
    "bright isolated point source: reconstructed FWHM / PSF FWHM, Richardson–Lucy")
METRICS["fwhm_ratio_target"] = Metric("bright isolated point source: target FWHM / PSF FWHM (the best possible)")
for method, name in (("cnn", "CNN"), ("richardson_lucy", "Richardson–Lucy"), ("input", "blurred counts map")):
    METRICS[f"min_resolved_sep_deg_{method}"] = Metric(f"two equal point sources: smallest resolved separation (deg), {name}")
del method, name

METRICS["accuracy_3class_cnn"] = Metric("AGN/PSR/FAKE accuracy, 3D CNN on yearly cut-outs")
METRICS["accuracy_3class_trees"] = Metric("AGN/PSR/FAKE accuracy, gradient-boosted trees on catalogue features")
METRICS["balanced_accuracy_cnn"] = Metric("balanced accuracy, 3D CNN")
METRICS["balanced_accuracy_trees"] = Metric("balanced accuracy, gradient-boosted trees")
for method, name in (("cnn", "mean–variance network, sources above 2e-10"),
                     ("fit", "gammapy likelihood fit, the fitted test sources (every flux)")):
    METRICS[f"flux_bias_frac_{method}"] = Metric(f"F(1–100 GeV) median relative bias, {name}")
    METRICS[f"flux_scatter_{method}"] = Metric(f"F(1–100 GeV) relative scatter, {name}")
    METRICS[f"flux_pull_std_{method}"] = Metric(f"flux pull standard deviation, {name}")
METRICS["flux_scatter_ratio_cnn_vs_fit"] = Metric("flux scatter, network / likelihood fit (same cut-outs)")
METRICS["flux_scatter_ratio_cnn_nominal_vs_fit"] = Metric(
    "flux scatter, network trained on the nominal instrument only / likelihood fit (same cut-outs)")
del method, name

CTAO_METHODS = {"unet_log": "U-Net + LoG (log scaling)", "unet_log_noscale": "U-Net + LoG (linear input)",
                "cedirnet": "centre-direction regression",
                "unet_log_dr": "U-Net + LoG, randomised training sky and local background",
                "cedirnet_dr": "centre-direction regression, randomised training sky and local background",
                "randomised": "the randomised network chosen on validation", "tsmap": "TS map + find_peaks"}
for method, name in CTAO_METHODS.items():
    METRICS[f"f1_above_sens_{method}"] = Metric(f"F1 above the survey sensitivity, {name}")
    METRICS[f"recall_above_sens_{method}"] = Metric(f"recall above the survey sensitivity, {name}")
    METRICS[f"precision_{method}"] = Metric(f"precision (survey sensitivity rule), {name}")
    METRICS[f"sep68_deg_{method}"] = Metric(f"68% separation of matched sources (deg), {name}")
    if method != "tsmap":
        METRICS[f"recall_at_tsmap_precision_{method}"] = Metric(
            f"recall at the TS map's precision (TS-map patches), {name}")
        METRICS[f"sensitivity_ratio_tsmap_over_{method}"] = Metric(
            f"sensitivity ratio F50(TS map) / F50(network) at the TS map's false detections per patch, {name}")
del method, name
METRICS["recall_above_sens_ideal"] = Metric(
    "recall above the survey sensitivity, ideal test told each source's position and shape (expected, √TS ≥ 5)")
METRICS["f1_above_sens_ideal_no_false"] = Metric("F1 of that recall with no false detection")
for method, name in (("unet_log", "U-Net + LoG"), ("unet_log_dr", "U-Net + LoG, randomised training fields"),
                     ("daofinder", "photutils DAOStarFinder (tuned)"),
                     ("segmentation", "photutils segmentation (tuned)")):
    METRICS[f"f1_crowded_{method}"] = Metric(f"optical crowded field: F1, {name}")
    METRICS[f"f1_optical_{method}"] = Metric(f"optical fields, all densities: F1, {name}")
    METRICS[f"false_per_empty_field_{method}"] = Metric(f"optical: false detections per star-free field, {name}")
del method, name

for method, name in (("cnn_restored", "CNN, restored images"),
                     ("cnn_restored_calibrated", "CNN, restored images, field-calibrated"),
                     ("cnn_skymodel", "CNN, sky-model images"), ("pd_restored", "P(D) fit, restored images")):
    METRICS[f"depth_10pct_xthreshold_{method}"] = Metric(
        f"depth below the 5σ threshold (×) with every bin within 10%, {name}")
    METRICS[f"max_abs_resid_{method}"] = Metric(f"largest per-bin relative residual of N(s), {name}")
del method, name
METRICS["pd_fraction_at_bound"] = Metric("P(D) posterior means on the edge of the (α, s0) prior range, all test fields")
METRICS["depth_within_10pct_cnn"] = Metric(
    "depth below the 5σ threshold (×) with every bin within 10%, CNN, restored images (bootstrap 68% interval)")
METRICS["depth_within_10pct_cnn_calibrated"] = Metric(
    "depth below the 5σ threshold (×) with every bin within 10%, CNN, restored images, field-calibrated (bootstrap "
    "68% interval)")
METRICS["depth_within_10pct_pd"] = Metric(
    "depth below the 5σ threshold (×) with every bin within 10%, P(D) posterior mean (bootstrap 68% interval)")
METRICS["faintest_bin_resid_cnn_restored"] = Metric("relative residual in the faintest flux bin, CNN, restored images")
METRICS["faintest_bin_resid_cnn_restored_calibrated"] = Metric(
    "relative residual in the faintest flux bin, CNN, restored images, field-calibrated")
METRICS["faintest_bin_resid_pd_restored"] = Metric("relative residual in the faintest flux bin, P(D) fit, restored images")
METRICS["n_bins_cnn_restored_better_than_pd"] = Metric(
    "flux bins in which the restored-image CNN has a smaller residual than P(D), same-shape test fields")
METRICS["n_bins_cnn_restored_calibrated_better_than_pd"] = Metric(
    "flux bins in which the field-calibrated restored-image CNN has a smaller residual than P(D), same-shape test "
    "fields")
METRICS["max_abs_resid_unseen_shape_cnn_restored_calibrated"] = Metric(
    "largest per-bin relative residual, n(s) shape not seen in training, CNN, restored images, field-calibrated")
METRICS["max_abs_resid_unseen_shape_cnn_restored"] = Metric(
    "largest per-bin relative residual, n(s) shape not seen in training, CNN, restored images")
METRICS["max_abs_resid_unseen_shape_pd_restored"] = Metric(
    "largest per-bin relative residual, n(s) shape not seen in training, P(D) fit, restored images")

SHIFTED = "_shifted"


def _with_shifted_twins(metrics: dict[str, Metric]) -> dict[str, Metric]:
    """Every metric followed by its twin on the notebook's shifted test set
    (``<key>_shifted``: other instrument response, other sky), unless that twin
    is already listed with its own label."""
    out: dict[str, Metric] = {}
    for key, metric in metrics.items():
        out[key] = metric
        twin = key + SHIFTED
        if not key.endswith(SHIFTED) and twin not in metrics:
            out[twin] = Metric(f"{metric.label} — shifted test set (instrument and sky unlike training)")
    return out


METRICS = _with_shifted_twins(METRICS)


@dataclass(frozen=True)
class Headline:
    """One row of the README headline table: a metric measured for networks and
    classical methods on the same test data (``{metric key: method name}``);
    ``better`` is ``"lower"``, ``"higher"`` or ``"zero"`` (smallest |value|)."""

    stem: str
    metric: str
    better: str
    networks: dict[str, str]
    classical: dict[str, str]


HEADLINES = (
    Headline("02_cta_cnn_cleaner", "on-region excess against the true counts, 68% relative error", "lower",
             {"excess_relerr68_cnn": "CNN-Cleaner", "excess_relerr68_bgnet": "learned FoV fit"},
             {"excess_relerr68_fov": "FoV fit", "excess_relerr68_irf": "IRF background",
              "excess_relerr68_ring": "ring background"}),
    Headline("02_cta_cnn_cleaner", "talk's metric: CNN-Cleaner excess against the IRF-subtracted map (σ = 5 px)",
             "lower", {"excess_relerr68_cnn_talk_metric": "CNN-Cleaner"}, {}),
    Headline("03_cta_cnn_regressor", "localisation error, 68% containment (deg)", "lower",
             {"loc_err68_deg_improved_cnn": "heat-map CNN", "loc_err68_deg_talk_cnn": "CNN of the talk"},
             {"loc_err68_deg_gammapy_fit": "gammapy likelihood fit", "loc_err68_deg_gammapy_blind": "gammapy blind search"}),
    Headline("04_fermi_unet_kmeans", "completeness, F(1–100 GeV) in [2.34e-10, 4.28e-10), |b|>20°", "higher",
             {"completeness_hilat_asid_bin_2.34e-10_unet_kmeans": "U-Net + k-means",
              "completeness_hilat_asid_bin_2.34e-10_unet_log": "U-Net + LoG"},
             {"completeness_hilat_asid_bin_2.34e-10_tsmap": "TS map"}),
    Headline("04_fermi_unet_kmeans", "purity, F(1–100 GeV) in [2.34e-10, 4.28e-10), |b|>20°", "higher",
             {"purity_hilat_asid_bin_2.34e-10_unet_kmeans": "U-Net + k-means",
              "purity_hilat_asid_bin_2.34e-10_unet_log": "U-Net + LoG"},
             {"purity_hilat_asid_bin_2.34e-10_tsmap": "TS map"}),
    Headline("04_fermi_unet_kmeans", "purity over all detections (every flux, every latitude)", "higher",
             {"purity_all_detections_unet_kmeans": "U-Net + k-means",
              "purity_all_detections_unet_log": "U-Net + LoG"},
             {"purity_all_detections_tsmap": "TS map"}),
    Headline("04_fermi_unet_kmeans", "DR2 sky: recall of Signif_Avg>10 sources", "higher",
             {"dr2_recall_sig_gt10_unet_kmeans": "U-Net + k-means", "dr2_recall_sig_gt10_unet_log": "U-Net + LoG"},
             {"dr2_recall_sig_gt10_tsmap": "TS map"}),
    Headline("05_fermi_characterisation", "AGN/PSR/FAKE accuracy", "higher",
             {"accuracy_3class_cnn": "3D CNN"}, {"accuracy_3class_trees": "gradient-boosted trees"}),
    Headline("06_ctao_survey_detection", "F1 above the survey sensitivity", "higher",
             {"f1_above_sens_unet_log": "U-Net + LoG (log)", "f1_above_sens_unet_log_noscale": "U-Net + LoG (linear)",
              "f1_above_sens_cedirnet": "centre-direction regression",
              "f1_above_sens_unet_log_dr": "U-Net + LoG (randomised sky)",
              "f1_above_sens_cedirnet_dr": "centre-direction regression (randomised sky)"},
             {"f1_above_sens_tsmap": "TS map"}),
    Headline("06_ctao_survey_detection", "optical fields, three densities pooled: F1", "higher",
             {"f1_optical_unet_log": "U-Net + LoG", "f1_optical_unet_log_dr": "U-Net + LoG (randomised fields)"},
             {"f1_optical_daofinder": "DAOStarFinder (tuned)", "f1_optical_segmentation": "segmentation (tuned)"}),
    Headline("07_radio_counts", "depth below the 5σ threshold (×), every bin within 10%", "higher",
             {"depth_10pct_xthreshold_cnn_restored": "CNN, restored images",
              "depth_10pct_xthreshold_cnn_restored_calibrated": "CNN, restored images, field-calibrated"},
             {"depth_10pct_xthreshold_pd_restored": "P(D) fit"}),
    Headline("07_radio_counts", "largest per-bin relative residual of N(s)", "lower",
             {"max_abs_resid_cnn_restored": "CNN, restored images",
              "max_abs_resid_cnn_restored_calibrated": "CNN, restored images, field-calibrated"},
             {"max_abs_resid_pd_restored": "P(D) fit"}),
    Headline("08_lhaaso_deconvolution", "PSNR (dB)", "higher",
             {"psnr_cnn": "CNN", "psnr_vae": "VAE", "psnr_gan": "GAN"},
             {"psnr_richardson_lucy": "Richardson–Lucy", "psnr_jolideco": "Jolideco",
              "psnr_smooth_0p29": "0.29° smoothing", "psnr_wiener": "Wiener", "psnr_input": "blurred counts map"}),
    Headline("08_lhaaso_deconvolution", "PSNR (dB), LHAI's protocol (min-max scaled maps, unsmoothed truth)", "higher",
             {"psnr_unet_lhai": "U-Net (randomised sky, told the nominal PSF)", "psnr_cnn_lhai": "SRCNN-like CNN"},
             {"psnr_jolideco_lhai": "Jolideco", "psnr_richardson_lucy_lhai": "Richardson–Lucy",
              "psnr_input_lhai": "blurred counts map"}),
    Headline("08_lhaaso_deconvolution", "point source: FWHM / PSF FWHM", "lower",
             {"fwhm_ratio_cnn": "CNN"}, {"fwhm_ratio_richardson_lucy": "Richardson–Lucy"}),
)

COLUMNS = ("Analysis / notebook", "Metric", "Value", "Published",
           "Profile", "Machine", "n_test", "Commit")
HEADLINE_COLUMNS = ("Analysis", "Metric", "Best network", "Best classical method",
                    "Shifted test set: best network", "Shifted test set: best classical", "Published", "Commit")
LEGEND = (
    f"Published numbers and their sources: `data/published.yml` (definition, protocol and how each "
    f"setting differs from this repository's; full references in `references.bib`). "
    f"{OTHER_DEFINITION} the published number uses another definition or protocol than this row: for "
    f"orientation only. A commit ending in `-dirty` means the result was computed from a work tree with "
    f"uncommitted changes, so that commit alone does not reproduce it. [a, b]: 68% interval."
)


def format_value(value: float) -> str:
    """Three significant figures; thousands separated; exponent only for tiny values."""
    value = float(value)
    if value == 0 or not math.isfinite(value):
        return str(value)
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) < 1e-3:
        return f"{value:.2e}"
    decimals = 2 - math.floor(math.log10(abs(value)))
    return f"{value:.{decimals}f}"


def format_metric(found: dict, key: str) -> str:
    """The value of ``key`` in a metrics file, with its ``_ci68`` interval when recorded."""
    text = format_value(found[key])
    interval = found.get(f"{key}_ci68")
    if isinstance(interval, list) and len(interval) == 2:
        text += f" [{format_value(interval[0])}, {format_value(interval[1])}]"
    return text


def anchor(key: str) -> str:
    """Published number of metric ``key`` and its source, or ''."""
    entry = published.for_metric(key)
    if entry is None:
        return ""
    mark = "" if entry.same_definition else OTHER_DEFINITION
    return f"{entry.text}{mark} ({entry.citation})"


def read_results(profile: str, results_root: Path = paths.RESULTS) -> dict[str, dict]:
    """``{stem: metrics}`` of one profile, the layout of :func:`skyml.results.read_all`."""
    folder = Path(results_root) / profile
    if not folder.is_dir():
        return {}
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _markdown(columns, rows) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _analysis(stem: str) -> str:
    return f"{ANALYSES[stem]} (`{stem}`)" if stem in ANALYSES else f"`{stem}`"


def results_table(results_root: Path = paths.RESULTS, profiles=("full", "quick")) -> str:
    """The full Markdown table: notebooks in order, metrics in :data:`METRICS`
    order, one row per profile that has the metric."""
    by_profile = {profile: read_results(profile, results_root) for profile in profiles}
    stems = sorted({stem for found in by_profile.values() for stem in found})
    rows = []
    for stem in stems:
        for key, metric in METRICS.items():
            for profile in profiles:
                found = by_profile[profile].get(stem, {})
                if key not in found:
                    continue
                rows.append((_analysis(stem), metric.label, format_metric(found, key), anchor(key) or "–",
                             profile, found.get("machine", "?"), found.get("n_test", "?"),
                             f"`{found.get('git_commit', '?')}`"))
    if not rows:
        return "_No results yet: run `make reproduce` (quick profile) or `make full`._"
    return _markdown(COLUMNS, rows)


def _best(found: dict, methods: dict[str, str], better: str) -> str:
    present = [key for key in methods if key in found]
    if not present:
        return "–"
    score = {"lower": lambda k: found[k], "higher": lambda k: -found[k], "zero": lambda k: abs(found[k])}[better]
    key = min(present, key=score)
    return f"{format_metric(found, key)} ({methods[key]})"


def _published_cell(headline: Headline) -> str:
    cells, citations = [], []
    for key, name in {**headline.networks, **headline.classical}.items():
        entry = published.for_metric(key)
        if entry is None:
            continue
        mark = "" if entry.same_definition else OTHER_DEFINITION
        cells.append(f"{entry.text}{mark} ({name})")
        if entry.citation not in citations:
            citations.append(entry.citation)
    if not cells:
        return "none published"
    return ", ".join(cells) + "; " + "; ".join(citations)


def headline_table(results_root: Path = paths.RESULTS) -> str:
    """The README table: full profile, one row per :data:`HEADLINES` entry with
    at least one of its metrics in a full-profile metrics file."""
    found_all = read_results("full", results_root)
    rows = []
    for headline in HEADLINES:
        found = found_all.get(headline.stem, {})
        if not any(key in found for key in (*headline.networks, *headline.classical)):
            continue
        shifted = [{key + SHIFTED: name for key, name in methods.items()}
                   for methods in (headline.networks, headline.classical)]
        rows.append((_analysis(headline.stem), headline.metric, _best(found, headline.networks, headline.better),
                     _best(found, headline.classical, headline.better),
                     *(_best(found, methods, headline.better) for methods in shifted), _published_cell(headline),
                     f"`{found.get('git_commit', '?')}`"))
    if not rows:
        return "_No full-profile results yet: run `make full`._"
    return "\n\n".join([
        "Full profile; the best network and the best classical method on the same test data, the same "
        "on the notebook's shifted test set (an instrument response and a sky unlike the training "
        "simulations; – where the notebook has none), and the published number of the same metric. "
        "Every metric of both profiles: [docs/results.md](docs/results.md).",
        _markdown(HEADLINE_COLUMNS, rows),
        LEGEND,
    ])


def scaling_section(results_root: Path = paths.RESULTS) -> list[str]:
    """Lines of the results page for ``benchmarks/scaling.json`` (``python -m
    skyml.benchmark --scaling``); none when the file is absent."""
    path = Path(results_root) / "benchmarks" / "scaling.json"
    if not path.is_file():
        return []
    report = json.loads(path.read_text())
    repeats = report.get("repeats", 1)
    lines = ["## Scaling of the fan-outs on dask", "",
             f"`python -m skyml.benchmark --scaling` on {report['machine']}, commit `{report['git_commit']}`, "
             f"load average {report['load_average_at_start'][0]} at the start; "
             + (f"each configuration timed {repeats} times, the fastest pass shown (all passes in the file); "
                if repeats > 1 else "")
             + "speed-up against one worker; outputs identical in every configuration: "
             + ("yes" if report.get("identical_outputs") else "**no**") + ".", ""]
    rows = []
    for task, what in report["tasks"].items():
        for name, row in report[task].items():
            rows.append((what, name, f"{row['wall_s']:.2f}", f"{row['speedup']:.2f}" if "speedup" in row else "–",
                         f"{row['efficiency']:.2f}" if "efficiency" in row else "–"))
    lines += [_markdown(("task", "where", "wall time (s)", "speed-up", "efficiency"), rows), ""]
    return lines


def goals_section(results_root: Path = paths.RESULTS) -> list[str]:
    """Lines of the results page: every goal of :mod:`skyml.goals` on the
    full-profile results, met / not met / not measured."""
    from . import goals

    rows = goals.format_rows(goals.assess(read_results("full", results_root)))
    return ["## Goals, full profile", "",
            "The repository's goal for each analysis (`skyml.goals`; published numbers to beat, or bounds "
            "set here), checked against the committed full-profile results; *not measured*: the key is "
            "not in a full-profile results file yet.", "",
            _markdown(goals.COLUMNS, rows), ""]


def results_page(results_root: Path = paths.RESULTS, profiles=("full", "quick")) -> str:
    """``docs/results.md``: every metric of both profiles and the published numbers' sources."""
    sources = published.sources()
    lines = [
        "# Results: every metric",
        "",
        "Generated by `python -m skyml.report` from `data/results/<profile>/*.json`; do not edit. "
        "Each row names the profile and the machine that produced it. Quick-profile rows come from "
        "small training sets and few epochs; they show that the pipeline works, not the method's "
        "final accuracy.",
        "",
        LEGEND,
        "",
        results_table(results_root, profiles),
        "",
        *scaling_section(results_root),
        *goals_section(results_root),
        "## Sources of the published numbers",
        "",
    ]
    for name, source in sources.items():
        paper = source.get("paper")
        parts = [f"**{source['short']}** — {source['what']}."]
        if paper:
            parts.append(f"{paper['authors']} ({paper['year']}), arXiv {paper['arxiv']}"
                         + (f", {paper['journal']}" if paper.get("journal") else "") + ".")
        if source.get("talk"):
            parts.append(f"Talk: {source['talk']}.")
        if source.get("repository"):
            parts.append(f"Repository: `{source['repository']}`"
                         + (f" (commit {source['commit']})" if source.get("commit") else "") + ".")
        parts.append("BibTeX: " + ", ".join(f"`{key}`" for key in source["cite"]) + ".")
        lines += ["- " + " ".join(parts)]
    for item in published.load()["not_published"]:
        lines += ["", f"No published number for `{item['analysis']}`: {' '.join(item['note'].split())}"]
    return "\n".join(lines) + "\n"


def replace_table(readme_text: str, table: str) -> str:
    """README text with the table between the markers replaced."""
    start, end = readme_text.find(START), readme_text.find(END)
    if start < 0 or end < 0 or end < start:
        raise ValueError(f"README has no results-table markers: add the lines\n{START}\n{END}")
    return readme_text[: start + len(START)] + "\n" + table + "\n" + readme_text[end:]


def main(argv: list[str] | None = None, *, readme: Path = README, page: Path = RESULTS_PAGE,
         results_root: Path = paths.RESULTS) -> int:
    parser = argparse.ArgumentParser(prog="python -m skyml.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 when the README table or docs/results.md is out of date")
    parser.add_argument("--profile", action="append", choices=paths.PROFILES,
                        help="profiles of docs/results.md (repeatable; default: full and quick)")
    args = parser.parse_args(argv)
    profiles = tuple(p for p in ("full", "quick") if not args.profile or p in args.profile)

    readme, page = Path(readme), Path(page)
    if not readme.is_file():
        print(f"error: {readme} not found", file=sys.stderr)
        return 2
    if not page.parent.is_dir():
        print(f"error: {page.parent} does not exist", file=sys.stderr)
        return 2
    if page.exists() and not page.is_file():
        print(f"error: {page} is not a regular file", file=sys.stderr)
        return 2
    text = readme.read_text()
    try:
        updated = replace_table(text, headline_table(results_root))
    except ValueError as error:
        print(f"error: {readme}: {error}", file=sys.stderr)
        return 2
    page_text = results_page(results_root, profiles)
    old_page = page.read_text() if page.is_file() else None
    stale = [path for path, old, new in ((readme, text, updated), (page, old_page, page_text)) if old != new]
    if args.check:
        if stale:
            print(f"out of date: {', '.join(map(str, stale))}; run: python -m skyml.report", file=sys.stderr)
            return 1
        print(f"{readme} results table and {page} are up to date")
        return 0
    for path, new in ((readme, updated), (page, page_text)):
        if path in stale:
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(new)
            tmp.replace(path)
            print(f"updated {path}")
    if not stale:
        print(f"{readme} results table and {page} already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
