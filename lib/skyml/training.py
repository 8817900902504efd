"""Train once, load afterwards: trained models cached by a hash of everything
that determines them, and installed where the command-line tools find them.

Every analysis (CTA, Fermi-LAT, LHAASO, optical) trains its networks through
:func:`train_cached`: the first call with a key trains the model with
``fit()``, stores it in the cache (:func:`skyml.cache.cached_dir`, checksummed
and self-healing) and copies it to ``data/models/<profile>/<install_as>``;
later calls load it from the cache.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from . import cache, paths


def install_model(src: Path, profile: str, name: str) -> Path:
    """Copy a cached model and its metadata to ``data/models/<profile>/<name>`` atomically."""
    target = paths.models_dir(profile) / name
    target.parent.mkdir(parents=True, exist_ok=True)
    for s, t in ((src, target), (src.with_suffix(".json"), target.with_suffix(".json"))):
        fd, tmp = tempfile.mkstemp(prefix=f".{t.name}-", dir=t.parent)
        os.close(fd)
        try:
            shutil.copyfile(s, tmp)
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0o600
            os.replace(tmp, t)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return target


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def train_cached(kind: str, key: dict, fit, profile: str, install_as: str):
    """Train with ``fit() -> (model, metadata, history)`` once per ``key``;
    returns (model, metadata, history, seconds of training or None if loaded)."""
    from .cta import models

    info = {}

    def build(tmp: Path):
        t0 = time.perf_counter()
        model, metadata, history = fit()
        info["seconds"] = time.perf_counter() - t0
        metadata = {**metadata, "train_seconds": info["seconds"], "cache_key": key}
        models.save_model(model, tmp / "model.keras", metadata)
        (tmp / "history.json").write_text(json.dumps(history))

    folder = cache.cached_dir(kind, key, build)
    model, metadata = models.load_model(folder / "model.keras")
    history = json.loads((folder / "history.json").read_text())
    install_model(folder / "model.keras", profile, install_as)
    return model, metadata, history, info.get("seconds")
