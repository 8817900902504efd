"""The papermill driver on tiny throwaway notebooks (real kernels, ~1 s each)."""

from __future__ import annotations

import json
import sys

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from skyml import paths

sys.path.insert(0, str(paths.ROOT))
import run_all  # noqa: E402

WRITE_METRICS = """
import json, os, pathlib, sys
out = pathlib.Path(results_root) / profile
out.mkdir(parents=True, exist_ok=True)
(out / "{stem}.json").write_text(json.dumps({{
    "{key}": value, "python": sys.executable, "cwd": os.getcwd(),
    "keras_backend": os.environ.get("KERAS_BACKEND"),
}}))
"""


def write_notebook(folder, stem, parameters, body):
    nb = new_notebook(cells=[
        new_code_cell(parameters, metadata={"tags": ["parameters"]}),
        new_code_cell(body),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = folder / f"{stem}.ipynb"
    nbformat.write(nb, path)
    return path


@pytest.fixture
def project(tmp_path):
    """Three notebooks (01 writes a metrics file, 02 writes one too, 09 prints)
    plus a full profile; returns the keyword arguments of run_all.main."""
    notebooks = tmp_path / "notebooks"
    (notebooks / "profiles").mkdir(parents=True)
    results = tmp_path / "results"
    for stem, key in (("01_cta_simulate", "n_maps_total"), ("02_cta_cnn_cleaner", "excess_relerr68_cnn")):
        write_notebook(
            notebooks, stem,
            f'profile = "quick"\nvalue = 0.5\nresults_root = "{results}"',
            WRITE_METRICS.format(stem=stem, key=key),
        )
    write_notebook(notebooks, "09_results_figures", 'profile = "quick"', 'print("figures done")')
    (notebooks / "profiles" / "full.yml").write_text("02_cta_cnn_cleaner:\n  value: 0.25\n")
    return dict(notebooks_dir=notebooks, results_root=results, build_root=tmp_path / "build")


def sources(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.ipynb"))}


def executed(project, profile):
    return sorted(p.stem for p in (project["build_root"] / profile).glob("*.ipynb"))


def metrics(project, profile, stem):
    return json.loads((project["results_root"] / profile / f"{stem}.json").read_text())


def test_run_order_puts_results_figures_last(tmp_path):
    for stem in ("10_extra", "09_results_figures", "02_b", "01_a"):
        write_notebook(tmp_path, stem, 'profile = "quick"', "pass")
    (tmp_path / "notes.ipynb").write_text("{}")
    found = [p.stem for p in run_all.find_notebooks(tmp_path)]
    assert found == ["01_a", "02_b", "10_extra", "09_results_figures"]


def test_unknown_parameters_refused_before_running(project, capsys):
    (project["notebooks_dir"] / "profiles" / "full.yml").write_text(
        "02_cta_cnn_cleaner:\n  value: 0.25\n  n_epochs: 30\n"
    )
    before = sources(project["notebooks_dir"])
    assert run_all.main(["--profile", "full"], **project) == 2
    err = capsys.readouterr().err
    assert "02_cta_cnn_cleaner" in err and "n_epochs" in err
    assert "declared: profile, value, results_root" in err
    assert not project["build_root"].exists()
    assert sources(project["notebooks_dir"]) == before


def test_notebook_without_profile_parameter_refused(project, capsys):
    write_notebook(project["notebooks_dir"], "03_cta_cnn_regressor", "n = 1", "pass")
    assert run_all.main(["--only", "03"], **project) == 2
    assert "unknown parameter(s) profile" in capsys.readouterr().err


def test_list_shows_parameters_defaults_and_full_overrides(project, capsys):
    assert run_all.main(["--list"], **project) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "01_cta_simulate"
    assert "value        = 0.5    [full: 0.25]" in out
    assert "profile      = \"quick\"" in out
    assert not project["build_root"].exists()


def test_full_run_executes_copies_and_summarises(project, capsys, monkeypatch):
    monkeypatch.setenv("SKYML_ALLOW_DIRTY", "1")  # independent of this checkout's git state
    before = sources(project["notebooks_dir"])
    assert run_all.main(["--profile", "full", "--backend", "jax"], **project) == 0
    out = capsys.readouterr().out
    assert executed(project, "full") == ["01_cta_simulate", "02_cta_cnn_cleaner", "09_results_figures"]
    assert sources(project["notebooks_dir"]) == before

    cleaner = metrics(project, "full", "02_cta_cnn_cleaner")
    assert cleaner["excess_relerr68_cnn"] == 0.25  # full.yml override applied
    assert metrics(project, "full", "01_cta_simulate")["n_maps_total"] == 0.5  # defaults kept
    assert cleaner["keras_backend"] == "jax"
    assert cleaner["cwd"] == str(project["notebooks_dir"])
    assert cleaner["python"] == sys.executable  # the kernel runs this interpreter

    summary = out[out.index("notebook  "):]
    for line, stem in zip(summary.splitlines()[2:], executed(project, "full")):
        assert line.startswith(stem) and " ok " in line
    assert "excess_relerr68_cnn=0.25" in summary and "n_maps_total=0.5" in summary
    assert summary.splitlines()[-1].rstrip().endswith("-")  # 09 has no metrics file


@pytest.fixture
def failing(project):
    write_notebook(project["notebooks_dir"], "02_cta_cnn_cleaner", 'profile = "quick"',
                   'x = 1\nraise RuntimeError("the cleaner diverged")')
    return project


def test_failure_stops_and_reports_the_cell(failing, capsys):
    assert run_all.main([], **failing) == 1
    captured = capsys.readouterr()
    assert "RuntimeError: the cleaner diverged" in captured.out
    assert '| raise RuntimeError("the cleaner diverged")' in captured.out
    assert "--from 02" in captured.err
    assert executed(failing, "quick") == ["01_cta_simulate", "02_cta_cnn_cleaner"]
    rows = {line.split()[0]: line.split()[1] for line in captured.out.splitlines()
            if line.startswith(("01_", "02_", "09_")) and len(line.split()) > 2}
    assert rows == {"01_cta_simulate": "ok", "02_cta_cnn_cleaner": "FAILED", "09_results_figures": "skipped"}


def test_keep_going_runs_the_rest(failing):
    assert run_all.main(["--keep-going"], **failing) == 1
    assert executed(failing, "quick") == ["01_cta_simulate", "02_cta_cnn_cleaner", "09_results_figures"]


def test_from_and_only_select_notebooks(project, capsys):
    assert run_all.main(["--from", "02"], **project) == 0
    assert executed(project, "quick") == ["02_cta_cnn_cleaner", "09_results_figures"]
    assert run_all.main(["--only", "01"], **project) == 0
    assert executed(project, "quick") == ["01_cta_simulate", "02_cta_cnn_cleaner", "09_results_figures"]
    capsys.readouterr()
    assert run_all.main(["--only", "01", "09"], **project) == 0
    summary = capsys.readouterr().out.split("\nnotebook")[1]
    assert "01_cta_simulate" in summary and "09_results_figures" in summary
    assert "02_cta_cnn_cleaner" not in summary


def test_unknown_selection_is_an_error(project):
    with pytest.raises(SystemExit, match="no notebook matches '07'"):
        run_all.main(["--only", "07"], **project)


@pytest.mark.skipif(sys.platform == "win32", reason="Unix sockets: POSIX only")
def test_kernels_talk_over_private_unix_sockets(project, capfd, monkeypatch):
    """No TCP ports, so ipykernel prints no warning about unencrypted TCP at
    each start, and no socket is left beside the notebooks."""
    monkeypatch.setenv("SKYML_ALLOW_DIRTY", "1")
    write_notebook(project["notebooks_dir"], "09_results_figures", 'profile = "quick"',
                   "from ipykernel.kernelapp import IPKernelApp\n"
                   "print('transport:', IPKernelApp.instance().transport)")
    assert run_all.main(["--only", "09"], **project) == 0
    out, err = capfd.readouterr()
    assert "without encryption" not in out + err
    executed_nb = nbformat.read(project["build_root"] / "quick" / "09_results_figures.ipynb", as_version=4)
    assert "transport: ipc" in "".join(o.get("text", "") for o in executed_nb.cells[-1].outputs)
    assert sorted(p.name for p in project["notebooks_dir"].iterdir()) == [
        "01_cta_simulate.ipynb", "02_cta_cnn_cleaner.ipynb", "09_results_figures.ipynb", "profiles"]


def test_jobs_run_notebooks_at_once_with_logs_and_results_figures_last(project, capsys):
    # 09 must see every other notebook's metrics file: it starts after all of them
    write_notebook(project["notebooks_dir"], "09_results_figures", 'profile = "quick"',
                   f'import pathlib\nfound = sorted(p.name for p in pathlib.Path(r"{project["results_root"]}", '
                   f'"quick").glob("*.json"))\nassert found == ["01_cta_simulate.json", "02_cta_cnn_cleaner.json"]'
                   f', found\nprint("figures from", found)')
    assert run_all.main(["--jobs", "2"], **project) == 0
    out = capsys.readouterr().out
    assert executed(project, "quick") == ["01_cta_simulate", "02_cta_cnn_cleaner", "09_results_figures"]
    build = project["build_root"] / "quick"
    for stem in ("01_cta_simulate", "02_cta_cnn_cleaner"):
        assert f"start {stem} (output: {build / stem}.log)" in out
        assert "Executing Cell" in (build / f"{stem}.log").read_text()
    assert out.index("done 01_cta_simulate") < out.index("start 09_results_figures")
    assert out.index("done 02_cta_cnn_cleaner") < out.index("start 09_results_figures")
    parallel = {stem: metrics(project, "quick", stem) for stem in ("01_cta_simulate", "02_cta_cnn_cleaner")}
    assert run_all.main([], **project) == 0
    for stem, found in parallel.items():
        assert metrics(project, "quick", stem) == found  # same results one at a time


def test_jobs_failure_reports_the_cell_and_skips_results_figures(failing, capsys):
    assert run_all.main(["--jobs", "2"], **failing) == 1
    captured = capsys.readouterr()
    assert "RuntimeError: the cleaner diverged" in captured.out
    assert "--from 02" in captured.err
    assert executed(failing, "quick") == ["01_cta_simulate", "02_cta_cnn_cleaner"]


def test_jobs_must_be_positive(project, capsys):
    with pytest.raises(SystemExit):
        run_all.main(["--jobs", "0"], **project)
    assert "--jobs must be at least 1" in capsys.readouterr().err
