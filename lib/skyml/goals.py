"""The repository's goals for each analysis, checked against the results files.

Each :class:`Goal` is a comparison of one measured quantity (a results key,
or a ratio or difference of two) with a target: a published number to beat
or a bound this repository sets itself. :func:`assess` evaluates every goal
on the metrics of one profile and says, per goal, *met*, *not met* or *not
measured* (a key is missing, e.g. the notebook has not been run in that
profile), with the measured value beside the target. Notebook 09 and the
results page show the table; nothing here is typed in from a run.

    python -m skyml.goals [--profile full]
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from typing import Callable

from . import paths, published
from .fermi.classify import RECALL_FLUX_EDGES

MET, NOT_MET, NOT_MEASURED = "met", "not met", "not measured"


@dataclass(frozen=True)
class Goal:
    """``value(metrics)`` compared with ``target`` by ``op`` (``"<="``, ``">="``
    or ``"within"``, the last with ``target = (low, high)``). ``keys`` are the
    results keys ``value`` reads; the goal is not measured when one is absent."""

    stem: str
    text: str
    keys: tuple[str, ...]
    op: str
    target: float | tuple[float, float]
    value: Callable[[dict], float] | None = None
    #: the measured numbers behind the verdict, as ``(label, key)`` pairs read from the same metrics (shown with
    #: their ``_ci68`` intervals where present) when the goal is not met: where the method falls short
    detail: tuple[tuple[str, str], ...] = ()

    def measure(self, metrics: dict) -> float | None:
        if any(not isinstance(metrics.get(key), (int, float)) for key in self.keys):
            return None
        value = float(self.value(metrics) if self.value is not None else metrics[self.keys[0]])
        return value if math.isfinite(value) else None

    def meets(self, value: float) -> bool:
        if self.op == "<=":
            return value <= self.target
        if self.op == ">=":
            return value >= self.target
        if self.op == "within":
            return self.target[0] <= value <= self.target[1]
        raise ValueError(f"unknown comparison {self.op!r}")

    def status(self, metrics: dict) -> tuple[str, float | None]:
        value = self.measure(metrics)
        if value is None:
            return NOT_MEASURED, None
        return (MET if self.meets(value) else NOT_MET), value

    def value_text(self, value: float | None) -> str:
        """``value`` to three significant digits, or to as many more (up to six) as it takes for the printed
        number to give the same verdict as the value (1.504 against a bound of 1.5 reads 1.504, not 1.5)."""
        if value is None:
            return "–"
        for digits in range(3, 7):
            text = f"{value:.{digits}g}"
            if self.meets(float(text)) == self.meets(value):
                break
        return text

    def interval(self, metrics: dict) -> list[float] | None:
        """The 68 % interval of a goal that reads one key as it is (``<key>_ci68``), else None."""
        if self.value is not None or len(self.keys) != 1:
            return None
        ci = metrics.get(f"{self.keys[0]}_ci68")
        ok = isinstance(ci, (list, tuple)) and len(ci) == 2 and all(
            isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c) for c in ci)
        return [float(ci[0]), float(ci[1])] if ok else None

    def measured_text(self, value: float | None, metrics: dict) -> str:
        """:meth:`value_text`, with the goal's 68 % interval (:meth:`interval`) where there is one."""
        ci = self.interval(metrics) if value is not None else None
        return self.value_text(value) + (f" [{ci[0]:.3g}, {ci[1]:.3g}]" if ci is not None else "")

    def target_text(self) -> str:
        if self.op == "within":
            return f"in [{self.target[0]:g}, {self.target[1]:g}]"
        return f"{'≤' if self.op == '<=' else '≥'} {self.target:g}"


def _number(metrics: dict, key: str) -> str | None:
    """``key``'s value with its 68 % interval, or None when it is not a finite number."""
    value = metrics.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    ci = metrics.get(f"{key}_ci68")
    text = f"{value:.3g}"
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(c, (int, float)) for c in ci):
        text += f" [{ci[0]:.3g}, {ci[1]:.3g}]"
    return text


def _ratio(a: str, b: str) -> Callable[[dict], float]:
    return lambda m: m[a] / m[b]


def _difference(a: str, b: str) -> Callable[[dict], float]:
    return lambda m: m[a] - m[b]


def _published(key: str) -> float:
    """The published value of results key ``key`` (``data/published.yml``)."""
    return float(published.for_metric(key).value)


def _radio_bins() -> int:
    from .radio.simulate import RadioSimParams

    return RadioSimParams().n_bins


CTA_CLEAN, CTA_LOC = "02_cta_cnn_cleaner", "03_cta_cnn_regressor"
FERMI, FERMI_CHAR = "04_fermi_unet_kmeans", "05_fermi_characterisation"
CTAO, RADIO, LHAASO = "06_ctao_survey_detection", "07_radio_counts", "08_lhaaso_deconvolution"
F_BIN = "asid_bin_2.34e-10"

GOALS: tuple[Goal, ...] = (
    Goal(CTA_CLEAN, "talk's metric (CNN-Cleaner vs IRF-subtracted map, σ = 5 px), below astroAI's published value",
         ("excess_relerr68_cnn_talk_metric",), "<=", 0.25),
    Goal(CTA_CLEAN, "true-count excess error of the CNN-Cleaner within 1.5× the IRF-background method's",
         ("excess_relerr68_cnn", "excess_relerr68_irf"), "<=", 1.5,
         _ratio("excess_relerr68_cnn", "excess_relerr68_irf"),
         # why: the cleaned map loses part of the source's counts (a median bias), besides its scatter
         detail=(("excess counts, 68% relative error (CNN-cleaned)", "excess_relerr68_cnn"),
                 ("the same, IRF background", "excess_relerr68_irf"),
                 ("median relative bias of the excess counts, CNN-cleaned", "excess_bias_median_cnn"),
                 ("the same, IRF background", "excess_bias_median_irf"),
                 ("68% relative error, background-normaliser CNN (learned field-of-view fit)",
                  "excess_relerr68_bgnet"))),
    Goal(CTA_CLEAN, "learned background subtraction (background-normaliser CNN): true-count excess error within "
         "1.5× the IRF-background method's",
         ("excess_relerr68_bgnet", "excess_relerr68_irf"), "<=", 1.5,
         _ratio("excess_relerr68_bgnet", "excess_relerr68_irf")),
    Goal(CTA_CLEAN, "the same on the shifted test set",
         ("excess_relerr68_bgnet_shifted", "excess_relerr68_irf_shifted"), "<=", 1.5,
         _ratio("excess_relerr68_bgnet_shifted", "excess_relerr68_irf_shifted")),
    Goal(CTA_LOC, "heat-map CNN error / Cramér–Rao bound, training flux range",
         ("crlb_ratio_improved_cnn",), "<=", 1.1),
    Goal(CTA_LOC, "heat-map CNN error / Cramér–Rao bound, worst flux bin up to 10× brighter than training",
         ("crlb_ratio_max_bin_improved_cnn_wide",), "<=", 1.1,
         detail=(("the same, smoothed centroid", "crlb_ratio_max_bin_smoothed_centroid_wide"),
                 ("the same, CNN refined by the centroid", "crlb_ratio_max_bin_improved_cnn_refined_wide"))),
    # the centroid is at or below itself in every flux bin that holds maps: its own count is the number of bins
    Goal(CTA_LOC, "flux bins up to 10× brighter than training where the heat-map CNN is at or below the smoothed "
         "centroid, out of all",
         ("n_bins_le_centroid_improved_cnn_wide", "n_bins_le_centroid_smoothed_centroid_wide"), ">=", 1.0,
         _ratio("n_bins_le_centroid_improved_cnn_wide", "n_bins_le_centroid_smoothed_centroid_wide"),
         detail=(("heat-map CNN, flux bins at or below the centroid", "n_bins_le_centroid_improved_cnn_wide"),
                 ("flux bins", "n_bins_le_centroid_smoothed_centroid_wide"),
                 ("heat-map CNN, whole 0.1-10 Crab set", "loc_err68_deg_wide_improved_cnn"),
                 ("smoothed centroid, the same maps", "loc_err68_deg_wide_smoothed_centroid"),
                 *((f"heat-map CNN / smoothed centroid, {lo}-{hi} Crab (paired)",
                    f"loc_err68_ratio_improved_cnn_to_centroid_wide_fluxbin{b}")
                   for b, (lo, hi) in enumerate((("0.1", "0.3"), ("0.3", "1"), ("1", "3"), ("3", "10")))))),
    Goal(CTA_LOC, "heat-map CNN: fraction of maps with error > 0.1°",
         ("frac_err_gt_0p1deg_improved_cnn",), "<=", 0.01),
    Goal(CTA_LOC, "heat-map CNN error / smoothed centroid's (68% containment)",
         ("loc_err68_deg_improved_cnn", "loc_err68_deg_smoothed_centroid"), "<=", 1.0,
         _ratio("loc_err68_deg_improved_cnn", "loc_err68_deg_smoothed_centroid")),
    Goal(CTA_LOC, "heat-map CNN error / smoothed centroid's on the shifted test set",
         ("loc_err68_deg_improved_cnn_shifted", "loc_err68_deg_smoothed_centroid_shifted"), "<=", 1.0,
         _ratio("loc_err68_deg_improved_cnn_shifted", "loc_err68_deg_smoothed_centroid_shifted")),
    Goal(CTA_LOC, "heat-map CNN error / gammapy likelihood fit's on the same shifted maps (the fit given their PSF)",
         # the ratio on the same maps, with its paired interval
         ("loc_err68_ratio_improved_cnn_to_gammapy_fit_shifted",), "<=", 1.0,
         detail=(("heat-map CNN, the fitted shifted maps", "loc_err68_deg_improved_cnn_shifted_fit_subset"),
                 ("gammapy likelihood fit, the same maps", "loc_err68_deg_gammapy_fit_shifted"),
                 ("Cramér–Rao bound, the same maps", "loc_err68_deg_crlb_shifted_fit_subset"))),
    Goal(FERMI, "U-Net + k-means completeness, |b| > 20°, [2.34e-10, 4.28e-10), at least AutoSourceID's",
         (f"completeness_hilat_{F_BIN}_unet_kmeans",), ">=", _published(f"completeness_hilat_{F_BIN}_unet_kmeans")),
    Goal(FERMI, "U-Net + k-means purity over all detections, every flux and latitude",
         ("purity_all_detections_unet_kmeans",), ">=", 0.93),
    Goal(FERMI, "flux bins, |b| > 20°, where the U-Net is below the TS map at equal purity",
         ("n_bins_unet_below_tsmap_at_equal_purity_hilat",), "<=", 0,
         detail=(("completeness in AutoSourceID's bin [2.34e-10, 4.28e-10) at equal purity, U-Net",
                  f"completeness_hilat_{F_BIN}_unet_kmeans_at_equal_purity"),
                 ("the same, TS map", f"completeness_hilat_{F_BIN}_tsmap_at_equal_purity"))),
    Goal(FERMI, "U-Net completeness degradation on the shifted test set (training-like / shifted)",
         (f"completeness_hilat_{F_BIN}_unet_kmeans", f"completeness_hilat_{F_BIN}_unet_kmeans_shifted"),
         "<=", 1.5, _ratio(f"completeness_hilat_{F_BIN}_unet_kmeans",
                           f"completeness_hilat_{F_BIN}_unet_kmeans_shifted")),
    Goal(FERMI, "U-Net minus TS map, purity over all detections, shifted test set",
         ("purity_all_detections_unet_kmeans_shifted", "purity_all_detections_tsmap_shifted"), ">=", 0.0,
         _difference("purity_all_detections_unet_kmeans_shifted", "purity_all_detections_tsmap_shifted")),
    Goal(FERMI, "U-Net minus TS map, completeness |b| > 20° in the bin, shifted test set",
         (f"completeness_hilat_{F_BIN}_unet_kmeans_shifted", f"completeness_hilat_{F_BIN}_tsmap_shifted"),
         ">=", 0.0, _difference(f"completeness_hilat_{F_BIN}_unet_kmeans_shifted",
                                f"completeness_hilat_{F_BIN}_tsmap_shifted")),
    Goal(FERMI_CHAR, "3D CNN balanced accuracy (AGN/PSR/FAKE)", ("balanced_accuracy_cnn",), ">=", 0.90,
         detail=(("3D CNN", "balanced_accuracy_cnn"), ("gradient-boosted trees", "balanced_accuracy_trees"),
                 *((f"3D CNN, mean of the AGN and pulsar recalls, F(1–100 GeV) {lo:.0e}–{hi:.0e} cm⁻² s⁻¹",
                    f"recall_sources_cnn_fluxbin{b}")
                   for b, (lo, hi) in enumerate(zip(RECALL_FLUX_EDGES[:-1], RECALL_FLUX_EDGES[1:]))))),
    Goal(FERMI_CHAR, "mean–variance network flux pulls: standard deviation", ("flux_pull_std_cnn",),
         "within", (0.9, 1.1)),
    Goal(FERMI_CHAR, "network flux scatter / likelihood fit's", ("flux_scatter_ratio_cnn_vs_fit",), "<=", 1.0),
    Goal(FERMI_CHAR, "3D CNN balanced error on the shifted test set / training-like (1 − balanced accuracy)",
         ("balanced_accuracy_cnn", "balanced_accuracy_cnn_shifted"), "<=", 1.5,
         lambda m: (1.0 - m["balanced_accuracy_cnn_shifted"]) / (1.0 - m["balanced_accuracy_cnn"])),
    Goal(FERMI_CHAR, "3D CNN minus gradient-boosted trees, balanced accuracy, shifted test set",
         ("balanced_accuracy_cnn_shifted", "balanced_accuracy_trees_shifted"), ">=", 0.0,
         _difference("balanced_accuracy_cnn_shifted", "balanced_accuracy_trees_shifted")),
    Goal(FERMI_CHAR, "network flux scatter / likelihood fit's, shifted test set",
         ("flux_scatter_ratio_cnn_vs_fit_shifted",), "<=", 1.0,
         detail=(("network scatter, sources above 2e-10", "flux_scatter_cnn_shifted"),
                 ("likelihood fit scatter, the fitted sources", "flux_scatter_fit_shifted"),
                 ("network of the nominal instrument only, / fit", "flux_scatter_ratio_cnn_nominal_vs_fit_shifted"))),
    # "randomised": the network for any plausible sky, of those trained on the randomised sky (the U-Net and, in the
    # full profile, CeDiRNet) the one of higher F1 on the randomised and edge validation patches
    Goal(CTAO, "randomised network F1 above the survey sensitivity", ("f1_above_sens_randomised",), ">=", 0.90,
         # why: the F1's two parts, for the chosen network and the TS map
         detail=(("randomised U-Net", "f1_above_sens_unet_log_dr"), ("randomised CeDiRNet", "f1_above_sens_cedirnet_dr"),
                 ("TS map", "f1_above_sens_tsmap"),
                 ("randomised network: recall above the survey sensitivity", "recall_above_sens_randomised"),
                 ("the same: precision", "precision_randomised"),
                 ("TS map: recall above the survey sensitivity", "recall_above_sens_tsmap"),
                 ("TS map: precision", "precision_tsmap"),
                 # and what a test told each source's position and shape would recall at the survey's 5 sigma
                 ("ideal known-position test, √TS ≥ 5: recall above the survey sensitivity", "recall_above_sens_ideal"),
                 ("the same with no false detection: F1", "f1_above_sens_ideal_no_false"),
                 ("randomised network: recall of isolated point sources", "recall_isolated_randomised"),
                 ("the same, ideal test", "recall_isolated_ideal"),
                 ("randomised network: recall of extended sources", "recall_extended_randomised"),
                 ("the same, ideal test", "recall_extended_ideal"))),
    Goal(CTAO, "randomised network minus TS map, F1 above the survey sensitivity",
         # the difference on the TS map's patches, with its paired interval
         ("f1_above_sens_randomised_minus_tsmap",), ">=", 0.0,
         detail=(("randomised U-Net", "f1_above_sens_unet_log_dr"), ("randomised CeDiRNet", "f1_above_sens_cedirnet_dr"),
                 ("TS map", "f1_above_sens_tsmap"))),
    Goal(CTAO, "randomised network minus TS map, F1 on the shifted sky",
         ("f1_above_sens_randomised_minus_tsmap_shifted",), ">=", 0.0,
         detail=(("randomised U-Net", "f1_above_sens_unet_log_dr_shifted"),
                 ("randomised CeDiRNet", "f1_above_sens_cedirnet_dr_shifted"),
                 ("TS map", "f1_above_sens_tsmap_shifted"))),
    Goal(CTAO, "sensitivity ratio F50(TS map) / F50(randomised network)",
         ("sensitivity_ratio_tsmap_over_randomised",), ">=", 1.0),
    Goal(CTAO, "optical U-Net minus the best tuned photutils detector, crowded-field F1",
         ("f1_crowded_unet_log", "f1_crowded_daofinder", "f1_crowded_segmentation"), ">=", 0.0,
         lambda m: m["f1_crowded_unet_log"] - max(m["f1_crowded_daofinder"], m["f1_crowded_segmentation"])),
    Goal(RADIO, "flux bins where the restored-image CNN's residual is below P(D)'s, out of all",
         ("n_bins_cnn_restored_better_than_pd",), ">=", 1.0,
         lambda m: m["n_bins_cnn_restored_better_than_pd"] / _radio_bins(),
         (("headline residual (median over bins), CNN", "counts_rel_residual"),
          ("the same, P(D)", "counts_rel_residual_pd"),
          ("faintest bin, CNN", "faintest_bin_resid_cnn_restored"),
          ("faintest bin, P(D)", "faintest_bin_resid_pd_restored"),
          ("RMS residual 20× below the threshold, CNN", "rms_rel_resid_20x_cnn"),
          ("the same, P(D)", "rms_rel_resid_20x_pd"))),
    Goal(RADIO, "depth below the 5σ threshold (×) with every bin within 10 %, CNN",
         ("depth_within_10pct_cnn",), ">=", 10.0,
         detail=(("depth of P(D) on the same fields", "depth_within_10pct_pd"),
                 ("largest per-bin RMS residual, CNN", "max_abs_resid_cnn_restored"))),
    Goal(RADIO, "the same on the shifted test set", ("depth_within_10pct_cnn_shifted",), ">=", 10.0,
         detail=(("depth of P(D) on the shifted fields", "depth_within_10pct_pd_shifted"),
                 ("headline residual on the shifted fields / in distribution, CNN",
                  "counts_rel_residual_shift_ratio"),
                 ("the same, P(D)", "counts_rel_residual_pd_shift_ratio"),
                 ("shifted fields the distribution check flags", "ood_flagged_shifted_fields"),
                 ("shifted fields", "n_shift_fields"))),
    Goal(RADIO, "CNN headline residual on the shifted test set within 1.5× its in-distribution value",
         # the ratio, with an interval that resamples each set of fields on its own
         ("counts_rel_residual_shift_ratio",), "<=", 1.5,
         detail=(("headline residual, CNN, shifted fields", "counts_rel_residual_shifted"),
                 ("the same, in distribution", "counts_rel_residual"),
                 ("the same, in distribution with the noise raised to the shifted level",
                  "counts_rel_residual_test_noise_raised"),
                 ("shifted headline / that at the same noise, CNN", "counts_rel_residual_shift_ratio_same_noise"),
                 ("shifted headline / in distribution, P(D)", "counts_rel_residual_pd_shift_ratio"),
                 ("shifted fields the distribution check flags", "ood_flagged_shifted_fields"))),
    # LHAI's protocol: the repository's network for it, the U-Net trained on a randomised sky and instrument
    # (the SRCNN-like CNN of LHAI, ``*_cnn_lhai``, is reported beside it in the notebook and on the results page)
    Goal(LHAASO, "U-Net PSNR gain over the input (dB), LHAI's protocol, at least LHAI's published gain",
         ("psnr_unet_lhai", "psnr_input_lhai"), ">=", _published("psnr_cnn_lhai") - _published("psnr_input_lhai"),
         _difference("psnr_unet_lhai", "psnr_input_lhai")),
    Goal(LHAASO, "U-Net SSIM minus the input's, LHAI's protocol", ("ssim_unet_lhai", "ssim_input_lhai"), ">=", 0.0,
         _difference("ssim_unet_lhai", "ssim_input_lhai")),
    # the PSNR differences on the same maps, with paired bootstrap intervals (skyml.lhaaso.evaluation)
    Goal(LHAASO, "U-Net PSNR minus tuned Richardson–Lucy's (dB), LHAI's protocol",
         ("psnr_unet_minus_richardson_lucy_lhai",), ">=", 1.0,
         detail=(("U-Net", "psnr_unet_lhai"), ("Richardson–Lucy", "psnr_richardson_lucy_lhai"))),
    Goal(LHAASO, "U-Net SSIM minus tuned Richardson–Lucy's, LHAI's protocol",
         ("ssim_unet_lhai", "ssim_richardson_lucy_lhai"), ">=", 0.0,
         _difference("ssim_unet_lhai", "ssim_richardson_lucy_lhai")),
    # the best mathematical deconvolution, not only Richardson–Lucy (optional extra; full profile)
    Goal(LHAASO, "U-Net PSNR minus tuned Jolideco's (dB), LHAI's protocol",
         ("psnr_unet_minus_jolideco_lhai",), ">=", 0.0,
         detail=(("U-Net", "psnr_unet_lhai"), ("Jolideco", "psnr_jolideco_lhai"))),
    Goal(LHAASO, "U-Net PSNR minus tuned Jolideco's (dB), LHAI's protocol, shifted test set",
         ("psnr_unet_minus_jolideco_lhai_shifted",), ">=", 0.0,
         detail=(("U-Net", "psnr_unet_lhai_shifted"), ("Jolideco", "psnr_jolideco_lhai_shifted"))),
)


def assess(all_metrics: dict[str, dict]) -> list[dict]:
    """One row per goal: ``stem``, ``goal``, ``target``, ``value`` (None when
    not measured), ``status`` and the results file's ``commit``."""
    rows = []
    for goal in GOALS:
        metrics = all_metrics.get(goal.stem, {})
        status, value = goal.status(metrics)
        rows.append({"stem": goal.stem, "goal": goal.text, "target": goal.target_text(), "value": value,
                     "measured": goal.measured_text(value, metrics), "status": status, "commit": metrics.get("git_commit", "–")})
    return rows


def conclusion(stem: str, metrics: dict, only_unmet: bool = False) -> list[str]:
    """The verdict on each of notebook ``stem``'s goals from its own metrics, one line each; a goal that is not
    met is followed by the numbers behind it (its ``detail``, or the keys it compares), so that a notebook's
    conclusion states every unreached goal with the measured number. ``only_unmet`` keeps the goals not met.
    A key compared without a ``detail`` label is named by its label on the results page (``skyml.report``)."""
    from .report import METRICS

    lines = []
    for goal in GOALS:
        if goal.stem != stem:
            continue
        status, value = goal.status(metrics)
        if only_unmet and status != NOT_MET:
            continue
        lines.append(f"{status.upper()}: {goal.text}: measured {goal.measured_text(value, metrics)}, "
                     f"goal {goal.target_text()}")
        if status == NOT_MET:
            # by default the keys compared (a single key's value and interval are on the line above)
            pairs = goal.detail or tuple((METRICS[key].label if key in METRICS else key, key) for key in goal.keys
                                         if len(goal.keys) > 1)
            for label, key in pairs:
                number = _number(metrics, key)
                if number is not None:
                    lines.append(f"    {label}: {number}")
    return lines


def format_rows(rows: list[dict]) -> list[tuple[str, ...]]:
    """Rows as text cells: notebook, goal, target, measured, status, commit."""
    return [(r["stem"][:2], r["goal"], r["target"], r["measured"], r["status"], r["commit"]) for r in rows]


COLUMNS = ("NN", "goal", "target", "measured", "status", "commit")


def main(argv: list[str] | None = None) -> int:
    from . import report

    parser = argparse.ArgumentParser(prog="python -m skyml.goals", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=paths.PROFILES, default="full")
    args = parser.parse_args(argv)
    rows = assess(report.read_results(args.profile))
    print(report._markdown(COLUMNS, format_rows(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
