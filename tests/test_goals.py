"""The goals table: each goal met, not met or not measured from a results dict."""

from __future__ import annotations

import pytest

from skyml import goals, report

F = "completeness_hilat_asid_bin_2.34e-10_unet_kmeans"


def by_goal(rows, stem, start):
    (row,) = [r for r in rows if r["stem"] == stem and r["goal"].startswith(start)]
    return row


def test_met_not_met_and_not_measured():
    rows = goals.assess({
        "04_fermi_unet_kmeans": {F: 0.9, f"{F}_shifted": 0.5, "purity_all_detections_unet_kmeans": 0.92,
                                 "git_commit": "abc1234"},
        "02_cta_cnn_cleaner": {"excess_relerr68_cnn": 0.3, "excess_relerr68_irf": 0.1},
    })
    assert len(rows) == len(goals.GOALS)
    completeness = by_goal(rows, "04_fermi_unet_kmeans", "U-Net + k-means completeness")
    assert completeness["status"] == goals.MET and completeness["value"] == 0.9
    assert completeness["commit"] == "abc1234"
    assert by_goal(rows, "04_fermi_unet_kmeans", "U-Net + k-means purity")["status"] == goals.NOT_MET
    degradation = by_goal(rows, "04_fermi_unet_kmeans", "U-Net completeness degradation")
    assert degradation["status"] == goals.NOT_MET and degradation["value"] == pytest.approx(1.8)
    ratio = by_goal(rows, "02_cta_cnn_cleaner", "true-count excess error")
    assert ratio["status"] == goals.NOT_MET and ratio["value"] == pytest.approx(3.0)
    missing = by_goal(rows, "08_lhaaso_deconvolution", "U-Net PSNR gain")
    assert missing["status"] == goals.NOT_MEASURED and missing["value"] is None


def test_within_bounds_and_non_finite_values():
    goal = next(g for g in goals.GOALS if g.op == "within")
    key = goal.keys[0]
    assert goal.status({key: 1.0})[0] == goals.MET
    assert goal.status({key: 1.2})[0] == goals.NOT_MET
    assert goal.status({key: float("nan")})[0] == goals.NOT_MEASURED
    assert goal.status({key: "1.0"})[0] == goals.NOT_MEASURED  # only numbers are measurements


def test_a_measured_value_is_printed_with_the_digits_its_verdict_needs():
    goal = goals.Goal("07_radio_counts", "ratio", ("r",), "<=", 1.5)
    assert goal.value_text(1.5043517) == "1.504"  # not "1.5", which would read as met
    assert goal.value_text(1.5) == "1.5" and goal.value_text(0.93461) == "0.935" and goal.value_text(None) == "–"
    assert goal.value_text(1.50000004) == "1.5"  # beyond six digits: the verdict line still says NOT MET
    lines = goals.conclusion("07_radio_counts", {"counts_rel_residual_shift_ratio": 0.328 / 0.218})
    assert any(line.startswith("NOT MET: CNN headline residual on the shifted test set") and "measured 1.505," in line
               for line in lines)
    within = goals.Goal("05_fermi_characterisation", "pulls", ("p",), "within", (0.9, 1.1))
    assert within.value_text(1.10004) == "1.10004" and within.value_text(0.8996) == "0.8996"


def test_goals_name_known_analyses_and_comparisons():
    for goal in goals.GOALS:
        assert goal.stem in report.ANALYSES
        assert goal.op in ("<=", ">=", "within")


def test_results_page_has_the_goals_table(tmp_path):
    folder = tmp_path / "full"
    folder.mkdir()
    (folder / "04_fermi_unet_kmeans.json").write_text(
        f'{{"{F}": 0.916, "git_commit": "abc1234", "purity_all_detections_unet_kmeans": 0.95, '
        f'"purity_all_detections_unet_kmeans_ci68": [0.94, 0.96]}}')
    page = report.results_page(tmp_path)
    section = page[page.index("## Goals, full profile"):]
    assert "| 04 | U-Net + k-means completeness" in section
    assert "| 0.916 | met | abc1234 |" in section
    assert "| 0.95 [0.94, 0.96] | met | abc1234 |" in section  # a goal that reads one key, with its interval


def test_conclusion_states_each_unmet_goal_with_its_numbers():
    metrics = {"depth_within_10pct_cnn": 5.62, "depth_within_10pct_cnn_ci68": [3.16, 10.0],
               "depth_within_10pct_pd": 10.0, "depth_within_10pct_cnn_shifted": 17.8,
               "n_bins_cnn_restored_better_than_pd": goals._radio_bins()}
    lines = goals.conclusion("07_radio_counts", metrics)
    heads = [line for line in lines if not line.startswith("    ")]
    assert len(heads) == sum(g.stem == "07_radio_counts" for g in goals.GOALS)
    assert heads[0].startswith("MET: flux bins") and heads[2].startswith("MET: the same on the shifted")
    i = next(k for k, line in enumerate(lines) if line.startswith("NOT MET: depth below"))
    assert "measured 5.62 [3.16, 10], goal ≥ 10" in lines[i]  # its key's interval beside it
    # the numbers behind an unmet goal follow it, with their interval where there is one; absent keys are left out
    assert lines[i + 1] == "    depth of P(D) on the same fields: 10"
    assert lines[i + 2].startswith("MET")
    # a goal without its own detail shows the keys it compares, named as on the results page
    cleaner = {"excess_relerr68_bgnet": 0.3, "excess_relerr68_bgnet_ci68": [0.29, 0.31], "excess_relerr68_irf": 0.1}
    lines = goals.conclusion("02_cta_cnn_cleaner", cleaner)
    bgnet, irf = (report.METRICS[k].label for k in ("excess_relerr68_bgnet", "excess_relerr68_irf"))
    i = next(k for k, line in enumerate(lines) if line.startswith("NOT MET: learned background subtraction"))
    assert bgnet != "excess_relerr68_bgnet" and lines[i + 1:i + 3] == [f"    {bgnet}: 0.3 [0.29, 0.31]", f"    {irf}: 0.1"]
    assert any(line.startswith("NOT MEASURED: talk's metric") for line in lines)
    # a goal with its own detail shows its labels instead, those of its keys that are present
    lines = goals.conclusion("02_cta_cnn_cleaner", {"excess_relerr68_cnn": 0.3, "excess_relerr68_irf": 0.1,
                                                    "excess_bias_median_cnn": -0.2}, only_unmet=True)
    assert lines[1:] == ["    excess counts, 68% relative error (CNN-cleaned): 0.3", "    the same, IRF background: 0.1",
                         "    median relative bias of the excess counts, CNN-cleaned: -0.2"]
    # a goal that reads one key states its interval on its own line, and no detail line repeats it
    lines = goals.conclusion("03_cta_cnn_regressor", {"frac_err_gt_0p1deg_improved_cnn": 0.02,
                                                      "frac_err_gt_0p1deg_improved_cnn_ci68": [0.01, 0.03]})
    i = next(k for k, line in enumerate(lines) if line.startswith("NOT MET: heat-map CNN: fraction of maps"))
    assert "measured 0.02 [0.01, 0.03], goal ≤ 0.01" in lines[i]
    assert not any("frac_err_gt_0p1deg_improved_cnn" in line for line in lines)
    # the numbers behind a paired difference: both methods' values with their intervals
    lhaaso = {"psnr_unet_minus_jolideco_lhai": -0.5, "psnr_unet_minus_jolideco_lhai_ci68": [-1.0, 0.1],
              "psnr_unet_lhai": 39.0, "psnr_unet_lhai_ci68": [38.0, 40.0], "psnr_jolideco_lhai": 39.5}
    lines = goals.conclusion("08_lhaaso_deconvolution", lhaaso, only_unmet=True)
    assert lines == ["NOT MET: U-Net PSNR minus tuned Jolideco's (dB), LHAI's protocol: measured -0.5 [-1, 0.1], goal ≥ 0",
                     "    U-Net: 39 [38, 40]", "    Jolideco: 39.5"]
    only = goals.conclusion("02_cta_cnn_cleaner", cleaner, only_unmet=True)
    assert only[0].startswith("NOT MET: learned background subtraction") and len(only) == 3


def test_localiser_comparisons_show_their_paired_intervals():
    """The CNN-versus-centroid count of flux bins and the CNN-versus-fit ratio, when not met, are followed by the
    paired ratios with their intervals, bin by bin, so that a reader sees which verdicts are ties."""
    metrics = {"n_bins_le_centroid_improved_cnn_wide": 2, "n_bins_le_centroid_smoothed_centroid_wide": 4,
               "loc_err68_deg_improved_cnn_shifted_fit_subset": 0.0148, "loc_err68_deg_gammapy_fit_shifted": 0.0142,
               "loc_err68_ratio_improved_cnn_to_gammapy_fit_shifted": 1.05,
               "loc_err68_ratio_improved_cnn_to_gammapy_fit_shifted_ci68": [0.99, 1.1]}
    for b, (r, lo, hi) in enumerate(((0.97, 0.95, 0.99), (1.0, 0.98, 1.02), (1.02, 1.0, 1.04), (1.03, 1.01, 1.05))):
        metrics[f"loc_err68_ratio_improved_cnn_to_centroid_wide_fluxbin{b}"] = r
        metrics[f"loc_err68_ratio_improved_cnn_to_centroid_wide_fluxbin{b}_ci68"] = [lo, hi]
    lines = goals.conclusion("03_cta_cnn_regressor", metrics, only_unmet=True)
    assert "    heat-map CNN / smoothed centroid, 0.1-0.3 Crab (paired): 0.97 [0.95, 0.99]" in lines
    assert "    heat-map CNN / smoothed centroid, 3-10 Crab (paired): 1.03 [1.01, 1.05]" in lines
    i = next(k for k, line in enumerate(lines) if line.startswith("NOT MET: heat-map CNN error / gammapy likelihood"))
    assert "measured 1.05 [0.99, 1.1], goal ≤ 1" in lines[i]  # the ratio's paired interval on the verdict line
    assert lines[i + 1] == "    heat-map CNN, the fitted shifted maps: 0.0148"
    # results written before the per-bin ratios existed: their lines are left out, the verdict unchanged
    old = {k: v for k, v in metrics.items() if "_to_centroid_" not in k}
    assert not any("(paired)" in line for line in goals.conclusion("03_cta_cnn_regressor", old))
    assert [line for line in lines if not line.startswith("    ")] == [
        line for line in goals.conclusion("03_cta_cnn_regressor", old, only_unmet=True) if not line.startswith("    ")]


def test_survey_and_radio_comparisons_show_their_intervals():
    """The randomised U-Net against the TS map and the radio CNN's shifted-over-nominal ratio, when not met, are
    followed by the paired difference and the ratio with their intervals."""
    ctao = {"f1_above_sens_unet_log_dr": 0.82, "f1_above_sens_tsmap": 0.827,
            "f1_above_sens_randomised_minus_tsmap": -0.007, "f1_above_sens_randomised_minus_tsmap_ci68": [-0.02, 0.004]}
    lines = goals.conclusion("06_ctao_survey_detection", ctao, only_unmet=True)
    i = next(k for k, line in enumerate(lines) if line.startswith("NOT MET: randomised network minus TS map, F1 above"))
    assert "measured -0.007 [-0.02, 0.004], goal ≥ 0" in lines[i]
    assert lines[i + 1:i + 3] == ["    randomised U-Net: 0.82", "    TS map: 0.827"]
    radio = {"counts_rel_residual_shifted": 0.33, "counts_rel_residual": 0.218,
             "counts_rel_residual_shift_ratio": 0.33 / 0.218, "counts_rel_residual_shift_ratio_ci68": [1.3, 1.8]}
    lines = goals.conclusion("07_radio_counts", radio, only_unmet=True)
    i = next(k for k, line in enumerate(lines) if line.startswith("NOT MET: CNN headline residual on the shifted"))
    assert "measured 1.51 [1.3, 1.8], goal ≤ 1.5" in lines[i]
    assert lines[i + 1:i + 3] == ["    headline residual, CNN, shifted fields: 0.33", "    the same, in distribution: 0.218"]
