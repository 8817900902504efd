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

from . import cache, paths, results


def install_model(src: Path, profile: str, name: str) -> Path:
    """Copy a cached model and its metadata to ``data/models/<profile>/<name>`` atomically.

    The full profile is refused from a dirty work tree
    (:func:`skyml.results.require_clean_tree`). The copied sidecar records the
    SHA-256 of the ``.keras`` file (checked against the cached one's when that
    records it, added when an older cache entry does not)."""
    from .cta import models

    results.require_clean_tree(profile, f"model {name}")
    target = paths.models_dir(profile) / name
    target.parent.mkdir(parents=True, exist_ok=True)
    metadata = json.loads(src.with_suffix(".json").read_text())
    models.check_sha256(src, metadata)
    metadata[models.SHA256_KEY] = results.file_sha256(src)
    text = json.dumps(metadata, indent=1, sort_keys=True) + "\n"
    temporaries = []
    try:
        for write, t in ((lambda tmp: shutil.copyfile(src, tmp), target),
                         (lambda tmp: Path(tmp).write_text(text), target.with_suffix(".json"))):
            fd, tmp = tempfile.mkstemp(prefix=f".{t.name}-", dir=t.parent)
            os.close(fd)
            temporaries.append(tmp)
            write(tmp)
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0o600
        os.replace(temporaries[0], target)
        os.replace(temporaries[1], target.with_suffix(".json"))
    except BaseException:
        for tmp in temporaries:
            Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def train_cached(kind: str, key: dict, fit, profile: str, install_as: str):
    """Train with ``fit() -> (model, metadata, history)`` once per ``key``;
    returns (model, metadata, history, seconds of training or None if loaded).
    A full-profile model from a dirty work tree is refused before training."""
    from .cta import models

    results.require_clean_tree(profile, f"model {install_as}")
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
