"""The per-notebook metrics files, ``data/results/<profile>/<stem>.json``.

A flat JSON object of named numbers (units in the names) plus ``profile``,
``backend``, ``seconds``, ``n_test``, ``git_commit`` and ``machine``. The
results notebook and the README results table read these files only.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
from pathlib import Path
from typing import Mapping

from . import paths

RESERVED = ("profile", "backend", "seconds", "n_test", "git_commit", "machine")


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=paths.ROOT,
            capture_output=True, text=True, timeout=10,
        )
        commit = out.stdout.strip() or "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=paths.ROOT,
            capture_output=True, text=True, timeout=10,
        ).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine() -> str:
    """CPU model (and GPU, when the JAX/TF backend sees one), in words."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    n = os.cpu_count() or 0
    gpu = ""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10,
        )
        if out.returncode == 0 and out.stdout.strip():
            gpu = out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError):
        pass
    text = f"{cpu} ({n} cores)"
    return f"{text} + {gpu}" if gpu else text


def write_metrics(
    stem: str,
    profile: str,
    metrics: Mapping[str, float],
    *,
    seconds: float,
    n_test: int,
    backend: str | None = None,
) -> Path:
    """Write the metrics file of notebook ``stem`` and return its path."""
    if backend is None:
        import keras

        backend = keras.backend.backend()
    out = {}
    for key, value in metrics.items():
        if key in RESERVED:
            raise ValueError(f"metric name {key!r} is reserved")
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"metric {key!r} is not finite ({value})")
        out[key] = value
    out.update(
        profile=paths.check_profile(profile), backend=backend, seconds=round(float(seconds), 1),
        n_test=int(n_test), git_commit=git_commit(), machine=machine(),
    )
    folder = paths.results_dir(profile)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{stem}.json"
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    tmp.replace(target)
    return target


def read_metrics(stem: str, profile: str) -> dict | None:
    target = paths.results_dir(profile) / f"{stem}.json"
    if not target.is_file():
        return None
    return json.loads(target.read_text())


def read_all(profile: str) -> dict[str, dict]:
    folder = paths.results_dir(profile)
    if not folder.is_dir():
        return {}
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}
