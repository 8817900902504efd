"""The nbval check of notebooks/conftest.py: an analysis notebook cell that
writes to stderr fails; a clean one passes (a real kernel, ~5 s)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

from skyml import paths


def _notebook(path, source):
    nb = new_notebook(cells=[new_code_cell(source)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def test_a_cell_writing_to_stderr_fails_under_nbval(tmp_path):
    folder = tmp_path / "notebooks"
    (folder / "exercises").mkdir(parents=True)
    shutil.copy(paths.NOTEBOOKS / "conftest.py", folder / "conftest.py")
    _notebook(folder / "01_clean.ipynb", "print('to stdout')")
    _notebook(folder / "02_noisy.ipynb", "import sys\nprint('a stray warning', file=sys.stderr)")
    _notebook(folder / "exercises" / "02_noisy_exercises.ipynb",
              "import sys\nprint('shown on purpose', file=sys.stderr)")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                             "--nbval-current-env", str(folder)], capture_output=True, text=True, cwd=tmp_path,
                            timeout=300)
    out = result.stdout
    assert result.returncode == 1, out
    assert "1 failed, 2 passed" in out and "a stray warning" in out
    assert "02_noisy.ipynb: the cell wrote to stderr" in out
