"""The exercise notebooks of ``notebooks/exercises/``: one per analysis notebook,
each exercise a statement, collapsed solution cells and a collapsed answer; the
solutions ask for the data of the notebook they belong to through its own
parameters (:func:`skyml.workshop.notebook_parameters`)."""

from __future__ import annotations

import ast
import re

import nbformat
import papermill
import pytest

from skyml import paths, workshop

EXERCISES = sorted((paths.NOTEBOOKS / "exercises").glob("*.ipynb"))
NUMBERED = {p.stem: p for p in paths.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")}
WITH_EXERCISES = ("01_cta_simulate", "02_cta_cnn_cleaner", "03_cta_cnn_regressor", "04_fermi_unet_kmeans",
                  "05_fermi_characterisation", "06_ctao_survey_detection", "07_radio_counts", "08_lhaaso_deconvolution")


def main_stem(path) -> str:
    return path.stem.removesuffix("_exercises")


def is_solution(cell) -> bool:
    return "solution" in cell.metadata.get("tags", [])


def test_one_exercise_notebook_per_analysis():
    assert sorted(main_stem(p) for p in EXERCISES) == sorted(WITH_EXERCISES)
    assert all(p.name == f"{main_stem(p)}_exercises.ipynb" for p in EXERCISES)


@pytest.mark.parametrize("path", EXERCISES, ids=lambda p: p.stem)
def test_statement_then_hidden_solution_then_hidden_answer(path):
    cells = nbformat.read(path, as_version=4).cells
    assert cells[0].cell_type == "markdown" and cells[0].source.startswith("# ")
    starts = [i for i, c in enumerate(cells) if c.cell_type == "markdown" and c.source.startswith("## Exercise ")]
    assert 2 <= len(starts) <= 3, f"{path.name}: {len(starts)} exercises"
    assert not any(is_solution(c) for c in cells[:starts[0]]), "the set-up cells are not solutions"
    for k, (a, b) in enumerate(zip(starts, starts[1:] + [len(cells)]), 1):
        statement, rest = cells[a], cells[a + 1:b]
        assert statement.source.startswith(f"## Exercise {k} ") and "**Predict**" in statement.source, statement.source
        assert not is_solution(statement) and not statement.metadata.get("jupyter", {}).get("source_hidden")
        assert len(rest) >= 2 and all(is_solution(c) for c in rest), f"{path.name} exercise {k}"
        assert all(c.metadata.get("jupyter", {}).get("source_hidden") is True for c in rest), \
            f"{path.name} exercise {k}: solutions must be collapsed"
        *code, answer = rest
        assert code and all(c.cell_type == "code" for c in code)
        assert answer.cell_type == "markdown" and answer.source.startswith("**Answer.**")
        # the answer explains numbers that the solution prints; it types none of its own
        printed = "".join(c.source for c in code)
        assert "print(" in printed
        assert not re.search(r"\d\.\d\d", answer.source), f"{path.name} exercise {k}: a number typed into the answer"


@pytest.mark.parametrize("path", EXERCISES, ids=lambda p: p.stem)
def test_linked_both_ways_and_parameters_from_the_main_notebook(path):
    stem = main_stem(path)
    main = nbformat.read(NUMBERED[stem], as_version=4)
    last = main.cells[-1]
    assert last.cell_type == "markdown" and last.source.startswith("## Exercises")
    assert f"](exercises/{path.name})" in last.source
    cells = nbformat.read(path, as_version=4).cells
    assert f"](../{stem}.ipynb)" in cells[0].source
    calls = [node for c in cells if c.cell_type == "code" for node in ast.walk(ast.parse(c.source))
             if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "notebook_parameters"]
    assert [ast.literal_eval(call.args[0]) for call in calls] == [stem]


def test_only_the_notebooks_with_exercises_link_to_them():
    for stem, path in NUMBERED.items():
        linked = "](exercises/" in "".join(c.source for c in nbformat.read(path, as_version=4).cells)
        assert linked == (stem in WITH_EXERCISES), stem


@pytest.mark.parametrize("stem", sorted(NUMBERED))
def test_notebook_parameters_agree_with_papermill(stem):
    declared = papermill.inspect_notebook(str(NUMBERED[stem]))
    params = workshop.notebook_parameters(stem)
    assert set(params) == set(declared)
    for name, info in declared.items():
        assert params[name] == ast.literal_eval(info["default"]), name


def test_notebook_parameters_refuses_what_it_cannot_read(tmp_path):
    def write(name, *sources):
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(s, metadata={"tags": ["parameters"]}) for s in sources]
        nbformat.write(nb, tmp_path / f"{name}.ipynb")

    write("ok", 'seed = 1\nn = {"AGN": 4}\nprofile = "quick"  # a comment')
    assert workshop.notebook_parameters("ok", tmp_path) == {"seed": 1, "n": {"AGN": 4}, "profile": "quick"}
    write("expr", "n = 2 * 3")
    with pytest.raises(ValueError, match="parameter n is not a literal"):
        workshop.notebook_parameters("expr", tmp_path)
    write("call", "import os")
    with pytest.raises(ValueError, match="more than assignments"):
        workshop.notebook_parameters("call", tmp_path)
    write("two", "a = 1", "b = 2")
    with pytest.raises(ValueError, match="2 cells tagged"):
        workshop.notebook_parameters("two", tmp_path)
    with pytest.raises(FileNotFoundError):
        workshop.notebook_parameters("missing", tmp_path)
