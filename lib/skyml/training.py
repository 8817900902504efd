"""Train once, load afterwards: trained models cached by a hash of everything
that determines them, and installed where the command-line tools find them.

Every analysis (CTA, Fermi-LAT, LHAASO, optical) trains its networks through
:func:`train_cached`: the first call with a key trains the model with
``fit()``, stores it in the cache (:func:`skyml.cache.cached_dir`, checksummed
and self-healing) and copies it to ``data/models/<profile>/<install_as>``;
later calls load it from the cache.

Resumable training (:func:`fit_callbacks`): inside :func:`train_cached`, every
Keras ``fit()`` that adds ``*fit_callbacks(stop)`` to its callbacks keeps, in
``<cache>/training-backup/<kind>-<hash>/fit-<i>/``, Keras's
``BackupAndRestore`` checkpoint (weights, optimizer, epoch) and the state of
its early stopping (best value, epochs without improvement, best weights) and
learning curve, after every epoch. A run that is killed (session end, power
cut) and started again with the same parameters resumes each interrupted
``fit()`` at its last finished epoch, with the same early-stopping decision
and the whole learning curve; the folder is removed when the model is in the
cache. A resumed training is not the same bit for bit as an uninterrupted one
(the data order after the restart comes from a fresh random state), so the
model sidecar records ``resumed_fits``.

Published models (:func:`adoptable_model`): a full-profile model committed
under ``data/models/full/`` whose sidecar records the same training key (and
whose ``.keras`` file matches its recorded SHA-256) fills an empty cache
instead of a new training, so a fresh clone does not spend hours retraining a
network the repository already publishes. The sidecar keeps the original
``saved_with`` (commit, machine) and ``train_seconds`` and gains
``adopted_from``; the returned training time is ``None`` (not trained here).
A model published before sidecars carried the learning curve is used in place
(loaded from ``data/models/full/``, not copied into the cache) and only where
the caller does not use the curve (``history_needed=False``); its history is
empty.
``SKYML_ADOPT_MODELS=0`` turns this off (every model is trained).

Metadata outside the cache key (``install_metadata`` of :func:`train_cached`):
keys derived from the training inputs (e.g. the range of inputs a network
saw, against which its command flags an input) are computed when the model is
installed and merged into the returned metadata and the installed sidecar, so
that adding such a key does not retrain cached networks. Keys computed
from the trained network itself (``model_metadata(model, metadata)``, e.g. a
calibration of its outputs on simulations of its own) are merged the same way;
the caller caches them.
"""

from __future__ import annotations

import contextvars
import functools
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from . import cache, paths, results

#: (backup folder, [number of fit() calls so far, resumed fit() calls]) of the train_cached call running here
_BACKUP: contextvars.ContextVar = contextvars.ContextVar("skyml_training_backup", default=None)


def backup_root() -> Path:
    return cache.default_root() / "training-backup"


#: Attributes of a fit's own callbacks (EarlyStopping, ReduceLROnPlateau) kept across a restart
STATE_ATTRIBUTES = ("wait", "best", "best_epoch", "stopped_epoch", "cooldown_counter")


def halve_on_plateau(patience: int):
    """The learning-rate schedule the notebooks' networks share: halved after
    ``patience`` epochs in which ``val_loss`` did not fall at least 1e-4 below
    its best (Keras' default ``min_delta``, an absolute step: about 2 % of the
    CTA localiser's loss of 0.004, so that schedule halves the rate after
    nearly every epoch of slow progress; a negligible step for the LHAASO
    U-Net's log loss), down to 1e-5."""
    import keras

    return keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=int(patience), min_delta=1e-4,
                                             min_lr=1e-5)


def stopping_callbacks(patience: int) -> list:
    """Early stopping on ``val_loss`` after ``patience`` epochs without a
    lower value (best weights restored) and the learning rate halved after
    ``patience // 2`` such epochs (at least 1): the schedule of notebook 05's
    classifier and flux networks."""
    import keras

    return [keras.callbacks.EarlyStopping(monitor="val_loss", patience=int(patience), restore_best_weights=True),
            keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=max(int(patience) // 2, 1))]


def dihedral(cube: np.ndarray, k: int, axes=(-2, -1)) -> np.ndarray:
    """One of the 8 flips/rotations (k = 0…7) of the two sky ``axes`` (by
    default the last two): k mod 4 rotations by 90°, then a flip of the second
    sky axis for k ≥ 4 (the training augmentations of notebooks 05 and 08 draw
    from these)."""
    out = np.rot90(cube, k % 4, axes=axes)
    return np.flip(out, axis=axes[1]) if k >= 4 else out


def dihedral_mean(fn, x: np.ndarray, axes=(-2, -1)) -> np.ndarray:
    """The mean (float64) of ``fn`` over the 8 rotations by 90° and flips of ``x`` in its two sky ``axes``,
    each output turned back: a read-out that does not depend on how the map is oriented (test-time
    augmentation). ``fn`` maps an array to one with the same sky axes (a probability map, a deconvolved
    map); the other axes may differ between its input and output (channels)."""
    total = None
    for k in range(4):
        for flip in (False, True):
            out = np.asarray(fn(np.ascontiguousarray(dihedral(x, k + 4 * flip, axes))), np.float64)
            out = np.flip(out, axis=axes[1]) if flip else out
            out = np.rot90(out, -k, axes=axes)
            total = out.copy() if total is None else total + out
    return total / 8


def weights_digest(model) -> str:
    """SHA-256 of a Keras model's weights (the dtype, shape and bytes of each array, in order): the
    identity of a warm start's initial weights or of an average's members, independent of the file they were
    saved in."""
    import hashlib

    h = hashlib.sha256()
    for w in model.get_weights():
        a = np.ascontiguousarray(w)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def fit_callbacks(*stateful) -> list:
    """Callbacks that make a Keras ``fit()`` inside :func:`train_cached`
    resumable (see the module text); put them after the call's own callbacks,
    passing those with a state (``EarlyStopping`` with its best weights,
    ``ReduceLROnPlateau``) so that it survives a restart. Outside
    :func:`train_cached` the list is empty."""
    state = _BACKUP.get()
    if state is None:
        return []
    import keras

    folder, counter = state
    counter[0] += 1
    fit_dir = Path(folder) / f"fit-{counter[0]}"
    fit_dir.mkdir(parents=True, exist_ok=True)
    return [keras.callbacks.BackupAndRestore(str(fit_dir / "keras"), save_freq="epoch", delete_checkpoint=True),
            _FitState(fit_dir, stateful, counter)]


@functools.cache
def _fit_state_class():
    """:class:`_FitStateMixin` as a Keras callback (Keras imported on first use)."""
    import keras

    return type("FitState", (_FitStateMixin, keras.callbacks.Callback), {})


def _FitState(folder: Path, stateful, counter):
    return _fit_state_class()(folder, stateful, counter)


class _FitStateMixin:
    """Saves and restores what ``BackupAndRestore`` does not: the early
    stopping's state and best weights, and the learning curve so far."""

    def __init__(self, folder: Path, stateful, counter):
        super().__init__()
        self.folder, self.stops, self.counter = Path(folder), list(stateful), counter
        self.record: dict = {}

    @property
    def _state_file(self) -> Path:
        return self.folder / "state.json"

    def on_train_begin(self, logs=None):
        if not self._state_file.is_file():
            return
        state = json.loads(self._state_file.read_text())
        self.record = state["history"]
        self.counter[1] += 1
        for i, (callback, saved) in enumerate(zip(self.stops, state["callbacks"])):
            for name, value in saved.items():
                if name != "has_best_weights":
                    setattr(callback, name, value)
            weights = self.folder / f"best-{i}.npz"
            if saved.get("has_best_weights") and weights.is_file():
                with np.load(weights, allow_pickle=False) as f:
                    callback.best_weights = [f[f"w{j}"] for j in range(len(f.files))]

    def on_epoch_end(self, epoch, logs=None):
        for k, v in (logs or {}).items():
            self.record.setdefault(k, []).append(float(v))
        saved = []
        for i, callback in enumerate(self.stops):
            best_weights = getattr(callback, "best_weights", None)
            if best_weights is not None and getattr(callback, "best_epoch", None) == epoch:
                tmp = self.folder / f".best-{i}.npz"
                np.savez(tmp, **{f"w{j}": np.asarray(w) for j, w in enumerate(best_weights)})
                os.replace(tmp, self.folder / f"best-{i}.npz")
            record = {name: float(getattr(callback, name)) if name == "best" else int(getattr(callback, name))
                      for name in STATE_ATTRIBUTES if getattr(callback, name, None) is not None}
            record["has_best_weights"] = best_weights is not None
            saved.append(record)
        tmp = self.folder / ".state.json"
        tmp.write_text(json.dumps({"epoch": int(epoch), "history": self.record, "callbacks": saved}))
        os.replace(tmp, self._state_file)

    def on_train_end(self, logs=None):
        history = getattr(self.model, "history", None)
        if history is not None and self.record:
            history.history = {k: list(v) for k, v in self.record.items()}
        shutil.rmtree(self.folder, ignore_errors=True)


def install_model(src: Path, profile: str, name: str, extra: dict | None = None) -> Path:
    """Copy a cached model and its metadata to ``data/models/<profile>/<name>`` atomically.

    The full profile is refused from a dirty work tree
    (:func:`skyml.results.require_clean_tree`). The copied sidecar records the
    SHA-256 of the ``.keras`` file (checked against the cached one's when that
    records it, added when an older cache entry does not) and the keys of
    ``extra`` (metadata outside the cache key)."""
    from .cta import models

    results.require_clean_tree(profile, f"model {name}")
    target = paths.models_dir(profile) / name
    target.parent.mkdir(parents=True, exist_ok=True)
    metadata = json.loads(src.with_suffix(".json").read_text())
    models.check_sha256(src, metadata)
    metadata.update(extra or {})
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


ADOPT_ENV = "SKYML_ADOPT_MODELS"


def _normalised(value):
    """A key as the JSON sidecar stores it (tuples as lists, numpy scalars as numbers)."""
    return json.loads(json.dumps(value, sort_keys=True, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def adoptable_model(profile: str, install_as: str, key: dict, history_needed: bool = True) -> Path | None:
    """The published ``data/models/<profile>/<install_as>`` when it was trained
    with ``key``, its file matches the SHA-256 its sidecar records and, where
    ``history_needed``, the sidecar carries the learning curve; else ``None``.
    Only the full profile's models are published; set ``SKYML_ADOPT_MODELS=0``
    to train regardless."""
    if profile != "full" or os.environ.get(ADOPT_ENV, "1").strip() == "0":
        return None
    path = paths.models_dir(profile) / install_as
    sidecar = path.with_suffix(".json")
    if not (path.is_file() and sidecar.is_file()):
        return None
    try:
        metadata = json.loads(sidecar.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return None
    if not isinstance(metadata, dict) or "keras_sha256" not in metadata:
        return None
    if history_needed and not metadata.get("history"):
        return None
    if _normalised(metadata.get("cache_key")) != _normalised(key):
        return None
    if results.file_sha256(path) != metadata["keras_sha256"]:
        return None
    return path


def _adopted_from(path: Path, metadata: dict) -> dict:
    """The ``adopted_from`` record of a published model (and say so)."""
    commit = (metadata.get("saved_with") or {}).get("git_commit")
    print(f"[train] {path.name}: the published model, trained on commit {commit} ({ADOPT_ENV}=0 retrains)")
    return {"path": f"data/models/full/{path.name}", "git_commit": commit}


def _adopt(path: Path, tmp: Path) -> None:
    """Copy a published model, its sidecar (with ``adopted_from``) and its
    learning curve (the sidecar's ``history``) into the cache folder ``tmp``."""
    metadata = json.loads(path.with_suffix(".json").read_text())
    history = metadata.pop("history")
    metadata["adopted_from"] = _adopted_from(path, metadata)
    shutil.copyfile(path, tmp / "model.keras")
    (tmp / "model.json").write_text(json.dumps(metadata, indent=1, sort_keys=True) + "\n")
    (tmp / "history.json").write_text(json.dumps(history))


def train_cached(kind: str, key: dict, fit, profile: str, install_as: str, install_metadata=None,
                 history_needed: bool = True, model_metadata=None):
    """Train with ``fit() -> (model, metadata, history)`` once per ``key``;
    returns (model, metadata, history, seconds of training or None if loaded).
    A full-profile model from a dirty work tree is refused before training.
    ``install_metadata() -> dict`` (optional): keys outside the cache key,
    merged into the returned metadata and the installed sidecar;
    ``model_metadata(model, metadata) -> dict`` (optional): the same, computed
    from the loaded network and its metadata (those keys included).
    ``history_needed=False``: the caller does not use the learning curve, so a
    published model whose sidecar has none may be adopted (:func:`adoptable_model`)."""
    from .cta import models

    results.require_clean_tree(profile, f"model {install_as}")
    if not history_needed and cache._find_valid(kind, key, cache.cache_roots(), False) is None:
        published = adoptable_model(profile, install_as, key, history_needed=False)
        if published is not None and adoptable_model(profile, install_as, key) is None:
            model, metadata = models.load_model(published)
            extra = dict(install_metadata()) if install_metadata is not None else {}
            if model_metadata is not None:
                extra.update(model_metadata(model, {**metadata, **extra}))
            return model, {**metadata, "adopted_from": _adopted_from(published, metadata), **extra}, {}, None
    info = {}
    backup = backup_root() / f"{kind}-{cache.param_hash(kind, key)}"

    def build(tmp: Path):
        adopted = adoptable_model(profile, install_as, key)
        if adopted is not None:
            _adopt(adopted, tmp)
            info["adopted"] = True
            return
        t0 = time.perf_counter()
        counter = [0, 0]
        token = _BACKUP.set((backup, counter))
        try:
            model, metadata, history = fit()
        finally:
            _BACKUP.reset(token)
        info["seconds"] = time.perf_counter() - t0
        metadata = {**metadata, "train_seconds": info["seconds"], "cache_key": key}
        if counter[1]:
            metadata["resumed_fits"] = counter[1]
        models.save_model(model, tmp / "model.keras", metadata)
        (tmp / "history.json").write_text(json.dumps(history))

    folder = cache.cached_dir(kind, key, build)
    shutil.rmtree(backup, ignore_errors=True)
    model, metadata = models.load_model(folder / "model.keras")
    history = json.loads((folder / "history.json").read_text())
    extra = dict(install_metadata()) if install_metadata is not None else {}
    if model_metadata is not None:
        extra.update(model_metadata(model, {**metadata, **extra}))
    metadata = {**metadata, **extra}
    adopted = metadata.get("adopted_from") or {}
    if not (info.get("adopted") or (adopted.get("path") == f"data/models/{profile}/{install_as}"
                                    and adoptable_model(profile, install_as, key) is not None)):
        # not the published file already (a cache entry adopted from a file published under another name is
        # installed under this one)
        install_model(folder / "model.keras", profile, install_as, {**extra, "history": history})
    return model, metadata, history, info.get("seconds")
