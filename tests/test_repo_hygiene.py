"""Structural rules of the repository: notebooks, pins, environment."""

from __future__ import annotations

import ast
import re
import sys
import tomllib

import nbformat
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from skyml import paths

sys.path.insert(0, str(paths.ROOT))
import run_all  # noqa: E402

NOTEBOOKS = run_all.find_notebooks(paths.NOTEBOOKS)
PYPROJECT = tomllib.loads((paths.ROOT / "pyproject.toml").read_text())


def parameters_cells(nb):
    return [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]


@pytest.fixture(params=NOTEBOOKS, ids=lambda p: p.stem)
def notebook(request):
    return request.param, nbformat.read(request.param, as_version=4)


def test_one_parameters_cell_with_quick_profile(notebook):
    path, nb = notebook
    cells = parameters_cells(nb)
    assert len(cells) == 1, f"{path.name}: {len(cells)} cells tagged 'parameters', expected 1"
    assigned = {
        target.id: node.value
        for node in ast.parse(cells[0].source).body if isinstance(node, ast.Assign)
        for target in node.targets if isinstance(target, ast.Name)
    }
    value = assigned.get("profile")
    assert isinstance(value, ast.Constant) and value.value == "quick", \
        f'{path.name}: the parameters cell must define profile = "quick"'


def test_kernelspec_is_python3(notebook):
    path, nb = notebook
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", path.name


def test_outputs_stripped(notebook):
    path, nb = notebook
    dirty = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and (c.outputs or c.execution_count is not None)]
    assert not dirty, f"{path.name}: cells {dirty} have stored outputs or execution counts"


def test_listed_in_driver_headlines(notebook):
    path, _ = notebook
    assert path.stem in run_all.HEADLINE, f"add {path.stem} to run_all.HEADLINE"


def test_full_profile_overrides_are_declared(notebook):
    path, _ = notebook
    full_yml = paths.NOTEBOOKS / "profiles" / "full.yml"
    overrides = run_all.load_overrides("full", full_yml.parent) if full_yml.is_file() else {}
    problems = [p for p in run_all.check_parameters([path], "full", overrides) if path.stem in p]
    assert not problems


def test_every_dependency_pinned_exactly():
    project = PYPROJECT["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    assert requirements
    loose = [r for r in requirements
             if [s.operator for s in Requirement(r).specifier] != ["=="]]
    assert not loose, f"not pinned with ==: {loose}"


def test_environment_yml_has_no_pins_of_its_own():
    env = yaml.safe_load((paths.ROOT / "environment.yml").read_text())
    conda, pip = [], []
    for dep in env["dependencies"]:
        (pip.extend(dep["pip"]) if isinstance(dep, dict) else conda.append(dep))
    for dep in conda:
        name = re.split(r"[=<>!~ ]", dep, maxsplit=1)[0]
        if name == "python":
            version = dep[len(name):].lstrip("=")
            assert SpecifierSet(PYPROJECT["project"]["requires-python"]).contains(version + ".0"), \
                f"environment.yml {dep} disagrees with requires-python"
        else:
            assert dep == name, f"environment.yml pins {dep}; pins belong in pyproject.toml"
    assert pip and all(re.fullmatch(r"-r requirements(-jax)?\.txt", p) for p in pip), \
        f"environment.yml pip section must only install a lock file (-r requirements.txt): {pip}"
    assert all((paths.ROOT / p.split()[1]).is_file() for p in pip)


def test_full_profile_names_known_notebooks():
    full_yml = paths.NOTEBOOKS / "profiles" / "full.yml"
    assert full_yml.is_file(), "the full profile overrides notebooks/profiles/full.yml are missing"
    assert not run_all.check_parameters([], "full", run_all.load_overrides("full", full_yml.parent))
