"""Environment report printed by the first cell of every notebook, the lock
file the environment was installed from, and the number of simulation worker
processes (``SKYML_SIM_WORKERS``)."""

from __future__ import annotations

import hashlib
import os
import platform
import sys
from importlib import metadata
from pathlib import Path

PACKAGES = ("numpy", "scipy", "astropy", "gammapy", "healpy", "keras", "tensorflow-cpu", "tensorflow",
            "jax", "scikit-learn", "scikit-image", "matplotlib", "papermill", "ctaplot", "fermipy")


def report(profile: str) -> dict:
    """Print and return Python, package versions, Keras backend, devices and profile."""
    from . import paths, results

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    import keras

    backend = keras.backend.backend()
    info = {
        "python": platform.python_version(),
        "executable": sys.executable,
        "backend": backend,
        "machine": results.machine(),
        "profile": paths.check_profile(profile),
        "root": str(paths.ROOT),
        "versions": versions,
        "KERAS_BACKEND": os.environ.get("KERAS_BACKEND", "(unset: tensorflow)"),
    }
    print(f"python {info['python']} ({info['executable']})")
    print(f"keras backend: {backend}   machine: {info['machine']}")
    print(f"profile: {profile}   repository: {info['root']}")
    print("  " + "  ".join(f"{k}={v}" for k, v in versions.items()))
    return info


# the hashed lock files at the repository root (make lock): without and with the extra "jax"
LOCK_FILE = "requirements.txt"
LOCK_FILE_JAX = "requirements-jax.txt"


def lock_file_sha256(jax: bool | None = None, root: str | Path | None = None) -> dict | None:
    """``{"lock_file": name, "sha256": hex digest}`` of the lock file this
    environment was installed from: ``requirements-jax.txt`` when ``jax`` (by
    default: when the package jax is installed), else ``requirements.txt``;
    the lock files cover Python 3.11-3.13 on every platform. ``root``: the
    repository root (default: ``skyml.paths.ROOT``). None when that file is absent."""
    if jax is None:
        try:
            metadata.version("jax")
            jax = True
        except metadata.PackageNotFoundError:
            jax = False
    if root is None:
        from . import paths

        root = paths.ROOT
    path = Path(root) / (LOCK_FILE_JAX if jax else LOCK_FILE)
    if not path.is_file():
        return None
    return {"lock_file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def simulation_workers(workers: int | None = None) -> int:
    """Worker processes of the simulations that can run in parallel (the Fermi
    patches, the radio fields): ``workers``, else the environment variable
    ``SKYML_SIM_WORKERS``, else 1. The simulated arrays do not depend on it."""
    if workers is None:
        value = os.environ.get("SKYML_SIM_WORKERS", "1")
        try:
            workers = int(value)
        except ValueError:
            raise ValueError(f"SKYML_SIM_WORKERS must be an integer, got {value!r}") from None
    if workers < 1:
        raise ValueError(f"the number of simulation workers must be >= 1, got {workers}")
    return int(workers)
