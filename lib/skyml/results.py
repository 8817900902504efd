"""The per-notebook metrics files, ``data/results/<profile>/<stem>.json``.

A flat JSON object of named numbers (units in the names) plus ``profile``,
``backend``, ``seconds``, ``n_test``, ``git_commit``, ``machine`` and
``lock_sha256``. A metric ``K`` may come with its 68 % interval as
``K_ci68 = [low, high]``. The results notebook and the README results table
read these files only.

**Provenance.** ``git_commit`` is the short commit of the work tree, with
``-dirty`` when tracked or untracked (not ignored) files differ from it; the
outputs of the notebooks themselves (:data:`OUTPUTS`: ``data/results/``,
``data/models/``, ``figures/``) do not count, so a run of several notebooks
stays clean. Full-profile results and models are written only from a clean
work tree (:func:`require_clean_tree`); ``SKYML_ALLOW_DIRTY=1`` (or
``run_all.py --allow-dirty``) allows a dirty one, and the commit then says
``-dirty``. ``lock_file`` and ``lock_sha256`` name the hashed lock file the
environment was installed from and its SHA-256 (:func:`skyml.env.lock_file_sha256`;
null without one).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import subprocess
from pathlib import Path
from typing import Mapping

from . import paths

RESERVED = ("profile", "backend", "seconds", "n_test", "git_commit", "machine", "lock_file", "lock_sha256")
#: Folders the notebooks write into (relative to the repository root); their
#: changes do not make the work tree dirty.
OUTPUTS = ("data/results", "data/models", "figures")
ALLOW_DIRTY_ENV = "SKYML_ALLOW_DIRTY"
CI68_SUFFIX = "_ci68"


class DirtyTreeError(RuntimeError):
    """A full-profile output would be written from a work tree that differs from its commit."""


def file_sha256(path) -> str:
    """Hex SHA-256 of a file's bytes (read in blocks; the checksum of model
    sidecars, cache entries and workshop archives)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _git(args: list[str], root: Path) -> str:
    out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
    if out.returncode != 0:
        raise subprocess.SubprocessError(out.stderr.strip())
    return out.stdout.strip()


def git_commit(root: Path | None = None) -> str:
    """Short commit of the work tree at ``root`` (default: the repository),
    ``-dirty`` appended when files other than :data:`OUTPUTS` differ from it;
    ``"unknown"`` outside a git work tree."""
    root = Path(root or paths.ROOT)
    try:
        commit = _git(["rev-parse", "--short", "HEAD"], root) or "unknown"
        excluded = [f":(exclude,top){folder}" for folder in OUTPUTS]
        dirty = _git(["status", "--porcelain", "--untracked-files=normal", "--", ":/", *excluded], root)
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def dirty_allowed() -> bool:
    return os.environ.get(ALLOW_DIRTY_ENV, "") not in ("", "0")


def require_clean_tree(profile: str, what: str, root: Path | None = None) -> str:
    """The commit to record for a ``profile`` output; for the full profile a
    :class:`DirtyTreeError` when the work tree is dirty (or not a git work
    tree) unless ``SKYML_ALLOW_DIRTY=1``."""
    commit = git_commit(root)
    if paths.check_profile(profile) == "full" and not dirty_allowed() and (
            commit.endswith("-dirty") or commit == "unknown"):
        state = "not a git work tree" if commit == "unknown" else f"work tree differs from commit {commit[:-6]}"
        raise DirtyTreeError(
            f"refusing to write the full-profile {what}: {state}; commit or stash the changes "
            f"(`git status`), or set {ALLOW_DIRTY_ENV}=1 (run_all.py --allow-dirty) to record a -dirty commit")
    return commit


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
    """Write the metrics file of notebook ``stem`` and return its path.

    Values are finite numbers; a key ending in ``_ci68`` holds a pair
    ``(low, high)``, the 68 % interval of the metric it names. The full
    profile is refused from a dirty work tree (:func:`require_clean_tree`)
    before anything is written.
    """
    paths.check_profile(profile)
    out = {}
    for key, value in metrics.items():
        if key in RESERVED:
            raise ValueError(f"metric name {key!r} is reserved")
        if key.endswith(CI68_SUFFIX):
            try:
                pair = [float(v) for v in value]
            except TypeError:
                pair = []
            if len(pair) != 2 or not all(math.isfinite(v) for v in pair) or pair[0] > pair[1]:
                raise ValueError(f"metric {key!r} must be a finite interval (low, high), got {value!r}")
            out[key] = pair
            continue
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"metric {key!r} is not finite ({value})")
        out[key] = value
    commit = require_clean_tree(profile, f"results of {stem}")
    if backend is None:
        import keras

        backend = keras.backend.backend()
    from .env import lock_file_sha256

    lock = lock_file_sha256(root=paths.ROOT) or {}
    out.update(
        profile=profile, backend=backend, seconds=round(float(seconds), 1), n_test=int(n_test),
        git_commit=commit, machine=machine(), lock_file=lock.get("lock_file"), lock_sha256=lock.get("sha256"),
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
