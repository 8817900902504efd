"""Every file location of the repository, derived from its root in one place.

The root is the folder that holds ``pyproject.toml`` and ``lib/skyml``; it is
found from this file's location (the package is installed in editable mode),
and can be overridden with the ``SKYML_ROOT`` environment variable.
"""

from __future__ import annotations

import os
from pathlib import Path

PROFILES = ("quick", "full")


def _find_root() -> Path:
    env = os.environ.get("SKYML_ROOT")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").is_file() and (parent / "lib" / "skyml").is_dir():
            return parent
    raise RuntimeError(
        "cannot locate the repository root from %s; set SKYML_ROOT" % here
    )


ROOT = _find_root()
NOTEBOOKS = ROOT / "notebooks"
DATA = ROOT / "data"
CACHE = Path(os.environ.get("SKYML_CACHE", DATA / "cache"))
RESULTS = DATA / "results"
MODELS = DATA / "models"
FIGURES = ROOT / "figures"
BUILD = ROOT / "build"


def check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {PROFILES}")
    return profile


def results_dir(profile: str) -> Path:
    """Metrics files: ``data/results/<profile>/``."""
    return RESULTS / check_profile(profile)


def models_dir(profile: str) -> Path:
    """Trained models used by the command-line tools: ``data/models/<profile>/``."""
    return MODELS / check_profile(profile)


def figures_dir(profile: str) -> Path:
    """Paper figures of the full profile go to ``figures/``; quick-profile
    figures go to ``figures/quick/`` so they never overwrite the paper's."""
    check_profile(profile)
    return FIGURES if profile == "full" else FIGURES / "quick"
