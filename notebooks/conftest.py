"""nbval checks of the analysis notebooks beyond "every cell runs": a cell of
an analysis notebook (``notebooks/NN_*.ipynb``) that writes to stderr fails.

A warning or log line on stderr is noise for a reader (or a library warning
the project should prevent), so it is a test failure, not an output. The
exercise notebooks may show a command's own warning line on purpose and are
not checked."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ANALYSIS = re.compile(r"^\d\d_.+\.ipynb$")


def stderr_text(outputs) -> str:
    """The stderr stream text of a cell's outputs (nbval's ``test_outputs``)."""
    return "".join(o.get("text", "") for o in outputs or ()
                   if o.get("output_type") == "stream" and o.get("name") == "stderr")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if call.when != "call" or not report.passed or not hasattr(item, "test_outputs"):
        return
    path = Path(str(item.fspath))
    if path.parent.name != "notebooks" or not ANALYSIS.match(path.name):
        return
    text = stderr_text(item.test_outputs)
    if text:
        report.outcome = "failed"
        report.longrepr = f"{path.name}: the cell wrote to stderr:\n{text[:2000]}"
