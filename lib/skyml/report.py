"""Regenerate the README results table from the metrics files.

    python -m skyml.report            # rewrite the table in README.md
    python -m skyml.report --check    # exit 1 when README.md is out of date

The table lies between ``<!-- results-table:start -->`` and
``<!-- results-table:end -->``; rows come from ``data/results/full/`` and
``data/results/quick/`` (see :mod:`skyml.results`). A metric appears only when
it is in :data:`METRICS` and present in a metrics file; nothing is typed by hand.
To add a row, add one :data:`METRICS` entry (and the notebook to :data:`ANALYSES`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from . import paths

START = "<!-- results-table:start -->"
END = "<!-- results-table:end -->"
README = paths.ROOT / "README.md"

ANALYSES = {
    "02_cta_cnn_cleaner": "CTA background cleaning",
    "03_cta_cnn_regressor": "CTA source localisation",
    "04_fermi_unet_kmeans": "Fermi-LAT point-source detection",
    "05_fermi_characterisation": "Fermi-LAT source characterisation",
    "06_ctao_survey_detection": "CTAO Galactic-plane survey detection",
    "07_radio_counts": "Radio source counts below threshold",
    "08_lhaaso_deconvolution": "LHAASO resolution enhancement",
}

CLEANER_NOTEBOOK = "astroAI cnn-cleaner notebook"
REGRESSOR_TALK = "astroAI talk-loc-compare notebook"


@dataclass(frozen=True)
class Metric:
    label: str
    anchor: str = ""  # published number and its source


METRICS: dict[str, Metric] = {
    "excess_relerr68_cnn": Metric("excess counts, 68% relative error (CNN-cleaned)", f"0.277 ({CLEANER_NOTEBOOK})"),
    "excess_relerr68_irf": Metric("excess counts, 68% relative error (IRF background)"),
    "excess_relerr68_ring": Metric("excess counts, 68% relative error (ring background)"),
    "snr_gain_median_cnn": Metric("median S/N gain of CNN cleaning"),
    "throughput_maps_per_s_cnn": Metric("CNN cleaning throughput (maps/s)", "≈2,000 maps/s on a GPU"),
}

LOCALISERS = {
    "talk_cnn": ("CNN of the talk", "0.070°", "0.047°"),
    "improved_cnn": ("improved CNN", "", ""),
    "gammapy_blind": ("gammapy blind search", "0.045°", "0.033°"),
    "gammapy_fit": ("gammapy likelihood fit (first n_fit test maps)", "", ""),
    "pointing_centre": ("pointing centre (trivial)", "", ""),
}
for method, (name, anchor68, anchor50) in LOCALISERS.items():
    METRICS[f"loc_err68_deg_{method}"] = Metric(
        f"localisation error, 68% containment (deg), {name}",
        f"{anchor68} ({REGRESSOR_TALK})" if anchor68 else "")
    METRICS[f"loc_err_median_deg_{method}"] = Metric(
        f"localisation error, median (deg), {name}",
        f"{anchor50} ({REGRESSOR_TALK})" if anchor50 else "")
    METRICS[f"sec_per_map_{method}"] = Metric(f"time per map (s), {name}")
del method, name, anchor68, anchor50
AUTOSOURCEID = "AutoSourceID, A&A 656 A62"
SEED_002 = "seed 002, real data vs DR2"
FERMI_METHODS = {"unet_kmeans": "U-Net + k-means", "unet_log": "U-Net + LoG", "tsmap": "TS map + find_peaks"}
for method, name in FERMI_METHODS.items():
    unet = method == "unet_kmeans"
    METRICS[f"completeness_hilat_f2.3e-10_{method}"] = Metric(
        f"completeness at F(1–100 GeV)=2.3e-10, |b|>20°, {name}", f"0.88 ({AUTOSOURCEID})" if unet else "")
    METRICS[f"purity_hilat_f2.3e-10_{method}"] = Metric(
        f"purity at F(1–100 GeV)=2.3e-10, |b|>20°, {name}", f"0.93 ({AUTOSOURCEID})" if unet else "")
    METRICS[f"dr2_recall_sig_gt10_{method}"] = Metric(
        f"simulated DR2 sky: recall of Signif_Avg>10 sources, {name}", f"≥0.90 ({SEED_002})" if unet else "")
    METRICS[f"dr2_recall_sig_lt10_{method}"] = Metric(
        f"simulated DR2 sky: recall of Signif_Avg<10 sources, {name}", f"0.48 ({SEED_002})" if unet else "")
    METRICS[f"dr2_candidates_allsky_{method}"] = Metric(
        f"simulated DR2 sky: candidates, scaled to the whole sky, {name}",
        f"≈8,000–9,200 at threshold 0.2 ({SEED_002})" if unet else "")
    METRICS[f"loc_err68_deg_{method}"] = Metric(f"localisation error, 68% containment (deg), {name}")
    METRICS[f"sec_per_patch_{method}"] = Metric(f"time per 10°×10° patch (s), {name}")
del method, name, unet
METRICS["completeness_hilat_f2.3e-10_unet_kmeans_front"] = Metric(
    "completeness at F(1–100 GeV)=2.3e-10, |b|>20°, U-Net + k-means, FRONT events only")
METRICS["purity_hilat_f2.3e-10_unet_kmeans_front"] = Metric(
    "purity at F(1–100 GeV)=2.3e-10, |b|>20°, U-Net + k-means, FRONT events only")
METRICS["dr2_recall_sig_gt10_unet_kmeans_healpix"] = Metric(
    "simulated DR2 sky as all-sky HEALPix maps cut into patches: recall of Signif_Avg>10 sources, U-Net + k-means")
METRICS["robust_completeness_drop_b1_to_b2"] = Metric(
    "completeness change at 2.3e-10, trained on diffuse variant 1, tested on 2 minus on 1")
METRICS["loc_err68_deg_crlb"] = Metric("Cramér-Rao bound, 68% containment (deg)")
METRICS["crlb_ratio_improved_cnn"] = Metric("improved CNN error / Cramér-Rao bound")

LHAASO_STUDENTS = "seed 000, xwgong01/LHAASOSR, 63 test maps"
LHAASO_METHODS = {"input": "blurred counts map", "cnn": "SRCNN-like CNN", "vae": "VAE", "gan": "GAN",
                  "psf_conditioned": "PSF-conditioned CNN at 40 TeV", "richardson_lucy": "Richardson–Lucy",
                  "smooth_0p29": "0.29° smoothing", "wiener": "Wiener filter"}
LHAASO_ANCHORS = {("psnr", "input"): "13.84", ("psnr", "cnn"): "20.05", ("ssim", "input"): "0.266",
                  ("ssim", "cnn"): "0.243", ("ms_ssim", "input"): "0.533", ("ms_ssim", "cnn"): "0.579",
                  ("nrmse", "input"): "0.204", ("nrmse", "cnn"): "0.102"}
for method, name in LHAASO_METHODS.items():
    for stat, stat_label in (("psnr", "PSNR (dB)"), ("ssim", "SSIM"), ("ms_ssim", "MS-SSIM"), ("nrmse", "NRMSE")):
        anchor_value = LHAASO_ANCHORS.get((stat, method), "")
        METRICS[f"{stat}_{method}"] = Metric(f"{stat_label}, {name}",
                                             f"{anchor_value} ({LHAASO_STUDENTS})" if anchor_value else "")
del method, name, stat, stat_label, anchor_value
METRICS["fwhm_ratio_cnn"] = Metric("bright isolated point source: reconstructed FWHM / PSF FWHM, CNN",
                                   "goal ≤ 0.5 (issue 7)")
METRICS["flux_conservation_err_cnn"] = Metric("median |total flux out / in − 1|, CNN", "goal ≤ 0.05 (issue 7)")
METRICS["fwhm_ratio_richardson_lucy"] = Metric(
    "bright isolated point source: reconstructed FWHM / PSF FWHM, Richardson–Lucy")
METRICS["fwhm_ratio_target"] = Metric("bright isolated point source: target FWHM / PSF FWHM (the best possible)")
for method, name in (("cnn", "CNN"), ("richardson_lucy", "Richardson–Lucy"), ("input", "blurred counts map")):
    METRICS[f"min_resolved_sep_deg_{method}"] = Metric(f"two equal point sources: smallest resolved separation (deg), {name}")
del method, name

ASID = "AutoSourceID, A&A 656 A62"
METRICS["accuracy_3class_cnn"] = Metric("AGN/PSR/FAKE accuracy, 3D CNN on yearly cut-outs", f"≈0.70 ({ASID}); goal ≥ 0.90")
METRICS["accuracy_3class_trees"] = Metric("AGN/PSR/FAKE accuracy, gradient-boosted trees on catalogue features")
METRICS["balanced_accuracy_cnn"] = Metric("balanced accuracy, 3D CNN")
METRICS["balanced_accuracy_trees"] = Metric("balanced accuracy, gradient-boosted trees")
for method, name in (("cnn", "mean–variance network"), ("fit", "gammapy likelihood fit")):
    unet = method == "cnn"
    METRICS[f"flux_bias_frac_{method}"] = Metric(f"F(1–100 GeV) median relative bias above 2e-10, {name}",
                                                 "goal |bias| < 0.05 (issue 4)" if unet else "")
    METRICS[f"flux_pull_std_{method}"] = Metric(f"flux pull standard deviation above 2e-10, {name}",
                                                "goal 1 ± 0.1 (issue 4)" if unet else "")
METRICS["flux_scatter_ratio_cnn_vs_fit"] = Metric("flux scatter, network / likelihood fit (same cut-outs)",
                                                  "goal ≤ 1.2 (issue 4)")
del method, name, unet

CTAO_METHODS = {"unet_log": "U-Net + LoG (log scaling)", "unet_log_noscale": "U-Net + LoG (linear input)",
                "cedirnet": "centre-direction regression", "tsmap": "TS map + find_peaks"}
for method, name in CTAO_METHODS.items():
    METRICS[f"f1_above_sens_{method}"] = Metric(f"F1 above the survey sensitivity, {name}",
                                                "goal ≥ 0.95 (issue 5)" if method == "unet_log" else "")
    METRICS[f"recall_above_sens_{method}"] = Metric(f"recall above the survey sensitivity, {name}")
    METRICS[f"sep68_deg_{method}"] = Metric(f"68% separation of matched sources (deg), {name}",
                                            "goal ≤ 0.03 (issue 5)" if method == "unet_log" else "")
    if method != "tsmap":
        METRICS[f"recall_at_tsmap_precision_{method}"] = Metric(
            f"recall at the TS map's precision (TS-map patches), {name}")
del method, name
for method, name in (("unet_log", "U-Net + LoG"), ("daofinder", "photutils DAOStarFinder")):
    METRICS[f"f1_crowded_{method}"] = Metric(f"optical crowded field: F1, {name}",
                                             "goal: U-Net above DAOStarFinder (issue 5)" if method == "unet_log" else "")
del method, name

RADIO = "Todarello et al., arXiv 2306.15720"
for method, name in (("cnn_restored", "CNN, restored images"), ("cnn_skymodel", "CNN, sky-model images"),
                     ("pd_restored", "P(D) fit, restored images")):
    METRICS[f"depth_10pct_xthreshold_{method}"] = Metric(
        f"depth below the 5σ threshold (×) with every bin within 10%, {name}",
        f"≈10 ({RADIO}); goal ≥ 30 (issue 6)" if method == "cnn_restored" else "")
    METRICS[f"max_abs_resid_{method}"] = Metric(f"largest per-bin relative residual of N(s), {name}",
                                                "goal ≤ 0.10 (issue 6)" if method == "cnn_restored" else "")
del method, name
METRICS["pd_fraction_at_bound"] = Metric("P(D) fits on the edge of the (α, s0) prior range, same-shape test fields")
METRICS["faintest_bin_resid_cnn_restored"] = Metric(
    "relative residual in the faintest flux bin, CNN, restored images", "goal: below P(D) (issue 6)")
METRICS["faintest_bin_resid_pd_restored"] = Metric("relative residual in the faintest flux bin, P(D) fit, restored images")
METRICS["n_bins_cnn_restored_better_than_pd"] = Metric(
    "flux bins in which the restored-image CNN has a smaller residual than P(D), same-shape test fields")
METRICS["max_abs_resid_unseen_shape_cnn_restored"] = Metric(
    "largest per-bin relative residual, n(s) shape not seen in training, CNN, restored images")
METRICS["max_abs_resid_unseen_shape_pd_restored"] = Metric(
    "largest per-bin relative residual, n(s) shape not seen in training, P(D) fit, restored images")

COLUMNS = ("Analysis / notebook", "Metric", "Value", "Anchor (published)",
           "Profile", "Machine", "n_test", "Commit")


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


def read_results(profile: str, results_root: Path = paths.RESULTS) -> dict[str, dict]:
    """``{stem: metrics}`` of one profile, the layout of :func:`skyml.results.read_all`."""
    folder = Path(results_root) / profile
    if not folder.is_dir():
        return {}
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def results_table(results_root: Path = paths.RESULTS, profiles=("full", "quick")) -> str:
    """The Markdown table: notebooks in order, metrics in :data:`METRICS` order,
    one row per profile that has the metric."""
    by_profile = {profile: read_results(profile, results_root) for profile in profiles}
    stems = sorted({stem for found in by_profile.values() for stem in found})
    rows = []
    for stem in stems:
        analysis = f"{ANALYSES[stem]} (`{stem}`)" if stem in ANALYSES else f"`{stem}`"
        for key, metric in METRICS.items():
            for profile in profiles:
                found = by_profile[profile].get(stem, {})
                if key not in found:
                    continue
                rows.append((analysis, metric.label, format_value(found[key]), metric.anchor or "–",
                             profile, found.get("machine", "?"), found.get("n_test", "?"),
                             f"`{found.get('git_commit', '?')}`"))
    if not rows:
        return "_No results yet: run `make reproduce` (quick profile) or `make full`._"
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def replace_table(readme_text: str, table: str) -> str:
    """README text with the table between the markers replaced."""
    start, end = readme_text.find(START), readme_text.find(END)
    if start < 0 or end < 0 or end < start:
        raise ValueError(f"README has no results-table markers: add the lines\n{START}\n{END}")
    return readme_text[: start + len(START)] + "\n" + table + "\n" + readme_text[end:]


def main(argv: list[str] | None = None, *, readme: Path = README,
         results_root: Path = paths.RESULTS) -> int:
    parser = argparse.ArgumentParser(prog="python -m skyml.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 when the README table is out of date")
    parser.add_argument("--profile", action="append", choices=paths.PROFILES,
                        help="profiles to include (repeatable; default: full and quick)")
    args = parser.parse_args(argv)
    profiles = tuple(p for p in ("full", "quick") if not args.profile or p in args.profile)

    readme = Path(readme)
    if not readme.is_file():
        print(f"error: {readme} not found", file=sys.stderr)
        return 2
    text = readme.read_text()
    try:
        updated = replace_table(text, results_table(results_root, profiles))
    except ValueError as error:
        print(f"error: {readme}: {error}", file=sys.stderr)
        return 2
    if args.check:
        if updated != text:
            print(f"{readme} results table is out of date; run: python -m skyml.report", file=sys.stderr)
            return 1
        print(f"{readme} results table is up to date")
        return 0
    if updated != text:
        readme.write_text(updated)
        print(f"updated the results table in {readme}")
    else:
        print(f"{readme} results table already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
