"""run_all.py refuses before running anything: a malformed profile file (one
line), profile values of the wrong type or sign for the notebooks'
parameters, selections by partial numbers, and empty selections."""

from __future__ import annotations

import sys

import pytest

from skyml import paths

sys.path.insert(0, str(paths.ROOT))
import run_all  # noqa: E402
from test_run_all import write_notebook  # noqa: E402


@pytest.fixture
def project(tmp_path):
    notebooks = tmp_path / "notebooks"
    (notebooks / "profiles").mkdir(parents=True)
    params = ('profile = "quick"\nn_train = 100\nn_val = 20\nepochs = 3\nlr = 0.001\nname = "x"\n'
              'flag = False\nsizes = [32, 16]\nmix = {"AGN": 3, "PSR": 1}\nanything = None')
    for stem in ("01_cta_simulate", "02_cta_cnn_cleaner", "05_fermi_characterisation", "09_results_figures"):
        write_notebook(notebooks, stem, params, "pass")
    return dict(notebooks_dir=notebooks, results_root=tmp_path / "results", build_root=tmp_path / "build")


def run_full(project, yml, capsys, *extra):
    (project["notebooks_dir"] / "profiles" / "full.yml").write_text(yml)
    status = run_all.main(["--profile", "full", *extra], **project)
    return status, capsys.readouterr().err


def test_malformed_yaml_is_one_line(project, capsys):
    (project["notebooks_dir"] / "profiles" / "full.yml").write_text("01_cta_simulate:\n  n_train: [1, 2\n  x: :\n")
    with pytest.raises(SystemExit) as info:
        run_all.main(["--profile", "full"], **project)
    message = str(info.value.code)
    assert "\n" not in message and message.startswith("error: ") and "invalid YAML at line" in message
    assert not project["build_root"].exists()


@pytest.mark.parametrize("line, fragment", [
    ('n_train: "lots"', "n_train = 'lots': expected int"),
    ("n_val: -5", "n_val = -5: must not be negative"),
    ("epochs: 0", "epochs = 0: must be at least 1"),
    ("n_train: 1.5", "expected int"),
    ("n_train: true", "expected int"),
    ("lr: fast", "expected float"),
    ("lr: .nan", "must be finite"),
    ("flag: 1", "expected bool"),
    ("name: 3", "expected str"),
    ("sizes: [32, big]", "items must be int"),
    ("mix: {AGN: x}", "items must be int"),
])
def test_wrong_values_are_refused(project, capsys, line, fragment):
    status, err = run_full(project, f"02_cta_cnn_cleaner:\n  {line}\n", capsys)
    assert status == 2
    assert fragment in err, err
    assert not project["build_root"].exists()


def test_right_values_are_accepted(project, capsys):
    yml = ("02_cta_cnn_cleaner:\n  n_train: 5\n  n_val: 0\n  lr: 1\n  name: y\n  flag: true\n  sizes: [8]\n"
           "  mix: {AGN: 1}\n  anything: [1, a]\n")
    (project["notebooks_dir"] / "profiles" / "full.yml").write_text(yml)
    overrides = run_all.load_overrides("full", project["notebooks_dir"] / "profiles")
    notebooks = run_all.find_notebooks(project["notebooks_dir"])
    assert run_all.check_parameters(notebooks, "full", overrides) == []


@pytest.mark.parametrize("argv, fragment", [
    (["--only", "0"], "no notebook matches '0'"),
    (["--only", "1_"], "is not a notebook number"),
    (["--only", "02", "--from", "05"], "--only 02 --from 05 selects no notebook"),
])
def test_selection_by_whole_numbers_never_empty(project, argv, fragment):
    with pytest.raises(SystemExit, match=fragment):
        run_all.main(argv, **project)
    assert not project["build_root"].exists()


def test_numbers_match_whole(project):
    notebooks = run_all.find_notebooks(project["notebooks_dir"])
    assert [p.stem for p in run_all.select(notebooks, ["2"])] == ["02_cta_cnn_cleaner"]
    assert [p.stem for p in run_all.select(notebooks, ["05", "9"])] == ["05_fermi_characterisation",
                                                                       "09_results_figures"]
    assert [p.stem[:2] for p in run_all.select(notebooks, None, "02")] == ["02", "05", "09"]
