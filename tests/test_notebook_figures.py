"""Executed notebooks carry their figures, and every figure a notebook draws is saved."""

from __future__ import annotations

import ast
import json
import os

import nbformat
import pytest
from nbclient import NotebookClient

from skyml import paths

NUMBERED = sorted(paths.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def _code_cells(path):
    nb = json.loads(path.read_text())
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


def _calls(source: str, name: str) -> int:
    """Calls of ``<anything>.name(...)`` or ``name(...)`` in one code cell."""
    tree = ast.parse(source)
    count = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            called = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
            count += called == name
    return count


@pytest.mark.parametrize("path", NUMBERED, ids=lambda p: p.stem)
def test_every_drawn_figure_is_saved(path):
    """A cell that creates a figure also writes it to figures/ (PNG and PDF)."""
    for source in _code_cells(path):
        created = sum(_calls(source, n) for n in ("subplots", "figure", "subplot_mosaic"))
        if created:
            assert _calls(source, "save_figure") >= 1, f"{path.name}: a figure is drawn but not saved:\n{source[:300]}"


def test_plotting_notebooks_call_use_style():
    for path in NUMBERED:
        sources = "\n".join(_code_cells(path))
        if "plt." in sources:
            assert "use_style()" in sources, path.name


@pytest.mark.slow
def test_kernel_shows_figures_inline_despite_agg(monkeypatch, tmp_path):
    """A kernel started with MPLBACKEND=Agg (as a batch runner might) still
    returns the figure as an image/png output once use_style() has run."""
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "import matplotlib.pyplot as plt\n"
        "from skyml import plotting\n"
        "plotting.use_style()\n"
        "fig, ax = plt.subplots()\n"
        "ax.plot([0, 1], [1, 0]);")]
    env_path = os.pathsep.join(filter(None, [str(paths.ROOT / "lib"), os.environ.get("PYTHONPATH")]))
    monkeypatch.setenv("PYTHONPATH", env_path)
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = nb.cells[0].outputs
    assert any("image/png" in o.get("data", {}) for o in outputs), outputs
