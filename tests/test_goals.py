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
    missing = by_goal(rows, "08_lhaaso_deconvolution", "CNN PSNR gain")
    assert missing["status"] == goals.NOT_MEASURED and missing["value"] is None


def test_within_bounds_and_non_finite_values():
    goal = next(g for g in goals.GOALS if g.op == "within")
    key = goal.keys[0]
    assert goal.status({key: 1.0})[0] == goals.MET
    assert goal.status({key: 1.2})[0] == goals.NOT_MET
    assert goal.status({key: float("nan")})[0] == goals.NOT_MEASURED
    assert goal.status({key: "1.0"})[0] == goals.NOT_MEASURED  # only numbers are measurements


def test_goals_name_known_analyses_and_comparisons():
    for goal in goals.GOALS:
        assert goal.stem in report.ANALYSES
        assert goal.op in ("<=", ">=", "within")


def test_results_page_has_the_goals_table(tmp_path):
    folder = tmp_path / "full"
    folder.mkdir()
    (folder / "04_fermi_unet_kmeans.json").write_text(f'{{"{F}": 0.916, "git_commit": "abc1234"}}')
    page = report.results_page(tmp_path)
    section = page[page.index("## Goals, full profile"):]
    assert "| 04 | U-Net + k-means completeness" in section
    assert "| 0.916 | met | abc1234 |" in section
