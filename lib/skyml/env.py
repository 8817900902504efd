"""Environment report printed by the first cell of every notebook (where the
fan-outs of :mod:`skyml.parallel` run included)."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata

PACKAGES = ("numpy", "scipy", "astropy", "gammapy", "healpy", "keras", "tensorflow-cpu", "tensorflow",
            "jax", "scikit-learn", "scikit-image", "matplotlib", "papermill", "ctaplot", "fermipy", "dask",
            "distributed")


def report(profile: str) -> dict:
    """Print and return Python, package versions, Keras backend, devices,
    profile and where the fan-outs run (:func:`skyml.parallel.describe`)."""
    from . import parallel, paths, results

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
        "fan_out": parallel.describe(),
    }
    print(f"python {info['python']} ({info['executable']})")
    print(f"keras backend: {backend}   machine: {info['machine']}")
    print(f"profile: {profile}   repository: {info['root']}   fan-outs: {info['fan_out']}")
    print("  " + "  ".join(f"{k}={v}" for k, v in versions.items()))
    return info
