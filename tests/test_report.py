"""The README headline table and docs/results.md generated from metrics files."""

from __future__ import annotations

import json

import pytest

from skyml import report

README = f"""# skyml

Intro.

## Results

{report.START}
old table
{report.END}

Footer.
"""


def write_metrics(root, profile, stem, **metrics):
    folder = root / profile
    folder.mkdir(parents=True, exist_ok=True)
    metrics = dict(profile=profile, backend="tensorflow", seconds=12.0, n_test=500,
                   git_commit="abc1234", machine="Test CPU (4 cores)", **metrics)
    (folder / f"{stem}.json").write_text(json.dumps(metrics))


@pytest.fixture
def results(tmp_path):
    root = tmp_path / "results"
    write_metrics(root, "full", "02_cta_cnn_cleaner", excess_relerr68_cnn_talk_metric=0.28149,
                  throughput_maps_per_s_cnn=2034.6, unlisted_metric=1.0)
    write_metrics(root, "quick", "02_cta_cnn_cleaner", excess_relerr68_cnn_talk_metric=0.4)
    write_metrics(root, "full", "03_cta_cnn_regressor", loc_err68_deg_talk_cnn=0.07211,
                  sec_per_map_talk_cnn=0.000153)
    return root


def rows(table):
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in table.splitlines()[2:]]


ASTROAI = "Di Piano, ambra-dipiano/astroAI"


def test_table_rows_values_and_anchors(results):
    table = report.results_table(results)
    assert table.splitlines()[0].startswith("| Analysis / notebook | Metric | Value | Published")
    got = [(r[0], r[2], r[3], r[4]) for r in rows(table)]
    assert got == [
        ("CTA background cleaning (`02_cta_cnn_cleaner`)", "0.281", f"0.277 ({ASTROAI})", "full"),
        ("CTA background cleaning (`02_cta_cnn_cleaner`)", "0.400", f"0.277 ({ASTROAI})", "quick"),
        ("CTA background cleaning (`02_cta_cnn_cleaner`)", "2,035", "–", "full"),
        ("CTA source localisation (`03_cta_cnn_regressor`)", "0.0721", f"0.070° ({ASTROAI})", "full"),
        ("CTA source localisation (`03_cta_cnn_regressor`)", "1.53e-04", f"≈0.00175 (≈570 maps/s) ({ASTROAI})",
         "full"),
    ]
    assert rows(table)[0][5:] == ["Test CPU (4 cores)", "500", "`abc1234`"]


def test_absent_and_unmapped_metrics_left_out(results):
    table = report.results_table(results)
    assert "unlisted_metric" not in table and "1.00" not in table
    assert report.METRICS["excess_relerr68_irf"].label not in table
    assert report.METRICS["loc_err68_deg_gammapy_blind"].label not in table
    assert len(rows(table)) == 5


def test_profile_selection_and_empty_results(results, tmp_path):
    assert {r[4] for r in rows(report.results_table(results, profiles=("full",)))} == {"full"}
    assert report.results_table(tmp_path / "nothing").startswith("_No results yet")


def test_format_value_significant_figures():
    assert [report.format_value(v) for v in (0.277, 0.07, 12.345, 1.5, 150.4, 2034.6, 0.00012)] == [
        "0.277", "0.0700", "12.3", "1.50", "150", "2,035", "1.20e-04"]


def test_machine_with_pipe_does_not_break_the_table(tmp_path):
    write_metrics(tmp_path, "full", "02_cta_cnn_cleaner", excess_relerr68_cnn=0.3)
    data = json.loads((tmp_path / "full" / "02_cta_cnn_cleaner.json").read_text())
    data["machine"] = "CPU | GPU"
    (tmp_path / "full" / "02_cta_cnn_cleaner.json").write_text(json.dumps(data))
    line = report.results_table(tmp_path).splitlines()[2]
    assert "CPU \\| GPU" in line


def test_update_then_check(results, tmp_path, capsys):
    readme, page = tmp_path / "README.md", tmp_path / "results.md"
    readme.write_text(README)
    kwargs = dict(readme=readme, page=page, results_root=results)
    assert report.main(["--check"], **kwargs) == 1
    assert readme.read_text() == README and not page.exists()  # --check never writes

    assert report.main([], **kwargs) == 0
    text = readme.read_text()
    assert "old table" not in text
    assert text.startswith("# skyml\n\nIntro.") and text.endswith(f"{report.END}\n\nFooter.\n")
    assert report.headline_table(results) in text
    assert page.read_text() == report.results_page(results)
    assert report.results_table(results) in page.read_text()
    assert report.main(["--check"], **kwargs) == 0

    write_metrics(results, "quick", "02_cta_cnn_cleaner", excess_relerr68_cnn=0.3)  # only the page changes
    capsys.readouterr()
    assert report.main(["--check"], **kwargs) == 1
    err = capsys.readouterr().err
    assert "out of date" in err and str(page) in err and str(readme) not in err


def test_readme_without_markers_is_a_clear_error(results, tmp_path, capsys):
    readme, page = tmp_path / "README.md", tmp_path / "results.md"
    readme.write_text("# skyml\n")
    assert report.main([], readme=readme, page=page, results_root=results) == 2
    assert report.START in capsys.readouterr().err
    assert readme.read_text() == "# skyml\n" and not page.exists()


def test_page_location_checked_before_writing(results, tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(README)
    assert report.main([], readme=readme, page=tmp_path / "no" / "results.md", results_root=results) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "dir.md").mkdir()
    assert report.main([], readme=readme, page=tmp_path / "dir.md", results_root=results) == 2
    assert "not a regular file" in capsys.readouterr().err
    assert readme.read_text() == README


def test_headline_best_network_classical_published_and_dirty_mark(tmp_path):
    write_metrics(tmp_path, "full", "03_cta_cnn_regressor", loc_err68_deg_talk_cnn=0.07211,
                  loc_err68_deg_improved_cnn=0.0175, loc_err68_deg_improved_cnn_ci68=[0.0170, 0.0181],
                  loc_err68_deg_gammapy_blind=0.0332, loc_err68_deg_gammapy_fit=0.0154,
                  loc_err68_deg_improved_cnn_shifted=0.0227, loc_err68_deg_talk_cnn_shifted=0.081,
                  loc_err68_deg_improved_cnn_shifted_ci68=[0.0210, 0.0240])
    write_metrics(tmp_path, "full", "06_ctao_survey_detection", f1_above_sens_unet_log=0.7,
                  f1_above_sens_cedirnet=0.81, f1_above_sens_tsmap=0.84)
    data = json.loads((tmp_path / "full" / "06_ctao_survey_detection.json").read_text())
    data["git_commit"] = "f0273a0-dirty"
    (tmp_path / "full" / "06_ctao_survey_detection.json").write_text(json.dumps(data))
    write_metrics(tmp_path, "quick", "02_cta_cnn_cleaner", excess_relerr68_cnn=0.4)  # quick: not a headline
    table = report.headline_table(tmp_path)
    got = rows("\n".join(line for line in table.splitlines() if line.startswith("|")))
    assert got == [
        ["CTA source localisation (`03_cta_cnn_regressor`)", "localisation error, 68% containment (deg)",
         "0.0175 [0.0170, 0.0181] (heat-map CNN)", "0.0154 (gammapy likelihood fit)",
         "0.0227 [0.0210, 0.0240] (heat-map CNN)", "–",
         f"0.070° (CNN of the talk), 0.045° (gammapy blind search); {ASTROAI}", "`abc1234`"],
        ["CTAO Galactic-plane survey detection (`06_ctao_survey_detection`)", "F1 above the survey sensitivity",
         "0.810 (centre-direction regression)", "0.840 (TS map)", "–", "–", "none published", "`f0273a0-dirty`"],
    ]
    assert len(report.HEADLINES) <= 15
    assert "docs/results.md" in table and "-dirty" in table


def test_headline_metrics_are_known_and_lower_is_better_where_it_should_be():
    for headline in report.HEADLINES:
        assert headline.stem in report.ANALYSES
        assert headline.better in ("lower", "higher", "zero")
        for key in (*headline.networks, *headline.classical):
            assert key in report.METRICS, key


def test_published_numbers_appear_only_next_to_known_metrics():
    from skyml import published

    entries = published.load()["entries"]
    assert set(entries) <= set(report.METRICS)
    for key in entries:
        assert report.anchor(key).startswith(entries[key].text)
    assert report.anchor("f1_above_sens_unet_log") == ""  # no published CTAO number


def test_no_internal_goals_in_the_published_column(results):
    every = [report.anchor(key) for key in report.METRICS]
    assert not [a for a in every if "goal" in a.lower() or "issue" in a.lower() or "seed" in a.lower()]


def test_results_page_shows_the_scaling_benchmark(results):
    assert "Scaling of the fan-outs" not in report.results_page(results)
    (results / "benchmarks").mkdir()
    scaling = {"machine": "test box", "git_commit": "abc1234", "load_average_at_start": [0.1, 0.2, 0.3],
               "repeats": 3, "tasks": {"fermi_tsmap": "TS maps"}, "identical_outputs": True,
               "fermi_tsmap": {"in-process": {"wall_s": 20.0, "wall_s_all": [20.0, 21.0, 22.0]},
                               "1 worker": {"wall_s": 21.0, "wall_s_all": [21.0, 25.0, 22.0], "speedup": 1.0,
                                            "efficiency": 1.0},
                               "2 workers": {"wall_s": 11.0, "wall_s_all": [11.0, 12.0, 11.5], "speedup": 1.909,
                                             "efficiency": 0.955}}}
    (results / "benchmarks" / "scaling.json").write_text(json.dumps(scaling))
    page = report.results_page(results)
    assert "## Scaling of the fan-outs on dask" in page and "`abc1234`" in page and "timed 3 times" in page
    assert "| TS maps | 2 workers | 11.00 | 1.91 | 0.95 |" in page
    assert "identical in every configuration: yes" in page


def test_every_metric_has_a_shifted_twin_listed_right_after_it(results):
    keys = list(report.METRICS)
    for key in ("completeness_hilat_asid_bin_2.34e-10_unet_kmeans", "loc_err68_deg_improved_cnn",
                "excess_relerr68_cnn", "depth_10pct_xthreshold_cnn_restored"):
        twin = key + "_shifted"
        assert keys.index(twin) == keys.index(key) + 1
        assert report.METRICS[twin].label.startswith(report.METRICS[key].label)
        assert "shifted test set" in report.METRICS[twin].label
    # twins with their own label are kept, not doubled
    assert "psnr_cnn_lhai_shifted_shifted" not in report.METRICS
    assert "LHAI's protocol, shifted test set" in report.METRICS["psnr_cnn_lhai_shifted"].label
    write_metrics(results, "quick", "03_cta_cnn_regressor", loc_err68_deg_improved_cnn_shifted=0.0227)
    labels = [r[1] for r in rows(report.results_table(results))]
    assert any(label.startswith("localisation error, 68% containment (deg), improved CNN — shifted")
               for label in labels)
