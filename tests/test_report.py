"""The README results table generated from metrics files."""

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
    write_metrics(root, "full", "02_cta_cnn_cleaner", excess_relerr68_cnn=0.28149,
                  throughput_maps_per_s_cnn=2034.6, unlisted_metric=1.0)
    write_metrics(root, "quick", "02_cta_cnn_cleaner", excess_relerr68_cnn=0.4)
    write_metrics(root, "full", "03_cta_cnn_regressor", loc_err68_deg_talk_cnn=0.07211,
                  sec_per_map_talk_cnn=0.000153)
    return root


def rows(table):
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in table.splitlines()[2:]]


def test_table_rows_values_and_anchors(results):
    table = report.results_table(results)
    assert table.splitlines()[0].startswith("| Analysis / notebook | Metric | Value | Anchor")
    got = [(r[0], r[2], r[3], r[4]) for r in rows(table)]
    assert got == [
        ("CTA background cleaning (`02_cta_cnn_cleaner`)", "0.281", "0.277 (astroAI cnn-cleaner notebook)", "full"),
        ("CTA background cleaning (`02_cta_cnn_cleaner`)", "0.400", "0.277 (astroAI cnn-cleaner notebook)", "quick"),
        ("CTA background cleaning (`02_cta_cnn_cleaner`)", "2,035", "≈2,000 maps/s on a GPU", "full"),
        ("CTA source localisation (`03_cta_cnn_regressor`)", "0.0721", f"0.070° ({report.REGRESSOR_TALK})", "full"),
        ("CTA source localisation (`03_cta_cnn_regressor`)", "1.53e-04", "–", "full"),
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
    readme = tmp_path / "README.md"
    readme.write_text(README)
    assert report.main(["--check"], readme=readme, results_root=results) == 1
    assert readme.read_text() == README  # --check never writes

    assert report.main([], readme=readme, results_root=results) == 0
    text = readme.read_text()
    assert "old table" not in text
    assert text.startswith("# skyml\n\nIntro.") and text.endswith(f"{report.END}\n\nFooter.\n")
    assert report.results_table(results) in text
    assert report.main(["--check"], readme=readme, results_root=results) == 0

    write_metrics(results, "full", "02_cta_cnn_cleaner", excess_relerr68_cnn=0.3)
    assert report.main(["--check"], readme=readme, results_root=results) == 1
    assert "out of date" in capsys.readouterr().err


def test_readme_without_markers_is_a_clear_error(results, tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("# skyml\n")
    assert report.main([], readme=readme, results_root=results) == 2
    assert report.START in capsys.readouterr().err
    assert readme.read_text() == "# skyml\n"
