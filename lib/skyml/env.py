"""Environment report printed by the first cell of every notebook (where the
fan-outs of :mod:`skyml.parallel` run included), the lock file the environment
was installed from, and the one place where the start-up log lines of
TensorFlow's C++ runtime are quietened (:func:`quiet_native_logs`, called when
``skyml`` is imported)."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.abc
import importlib.util
import logging
import os
import platform
import re
import sys
import tempfile
from importlib import metadata
from pathlib import Path

PACKAGES = ("numpy", "scipy", "astropy", "gammapy", "healpy", "keras", "tensorflow-cpu", "tensorflow",
            "jax", "scikit-learn", "scikit-image", "matplotlib", "papermill", "ctaplot", "fermipy", "dask",
            "distributed")


def report(profile: str, keras_backend: bool = True) -> dict:
    """Print and return Python, package versions, Keras backend, devices,
    profile and where the fan-outs run (:func:`skyml.parallel.describe`).
    ``keras_backend=False`` (a notebook that runs no network) does not import
    Keras, whose start-up takes seconds; the backend is then reported as
    ``"not loaded"``."""
    from . import parallel, paths, results

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    if keras_backend:
        import keras

        backend = keras.backend.backend()
    else:
        backend = "not loaded"
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


# TensorFlow's C++ runtime writes straight to file descriptor 2, which Python's
# warnings filters never see, and every notebook would open with red lines. Its
# threshold must be in the environment before TensorFlow is first imported, so
# it is set when ``skyml`` is imported (every notebook imports skyml first).
# Level 3 hides INFO/WARNING/ERROR lines of the C++ runtime: its ERROR lines in
# these analyses are grappler's "remapper failed: INVALID_ARGUMENT" (the graph
# optimiser gives up a fusion and runs the unfused graph); real failures still
# raise Python exceptions. A value already set by the user is kept.
NATIVE_LOG_LEVELS = {"TF_CPP_MIN_LOG_LEVEL": "3"}

# Two lines are written while TensorFlow's shared libraries load, before its
# logger reads TF_CPP_MIN_LOG_LEVEL, so no variable turns them off (turning off
# oneDNN with TF_ENABLE_ONEDNN_OPTS=0 would change the numbers). Only these
# lines are dropped from what the import writes; anything else is passed on.
_STARTUP_LINES = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|port\.cc:\d+\] oneDNN custom operations are on"
)


@contextlib.contextmanager
def _drop_native_lines(pattern: re.Pattern = _STARTUP_LINES):
    """Capture file descriptor 2 in the block; write back every line but ``pattern``'s."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable descriptor 2: nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines = capture.read().decode("utf-8", "replace").splitlines(keepends=True)
            kept = "".join(line for line in lines if not pattern.search(line))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Runs the first ``import tensorflow`` inside :func:`_drop_native_lines`."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once: find the real spec without this finder
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def quiet_exec_module(module):
            with _drop_native_lines():
                exec_module(module)

        spec.loader.exec_module = quiet_exec_module
        return spec


# TensorFlow's Python logger warns when a tf.function was traced again for 5 of
# its last calls. Keras' predict traces its step once per new input shape, and
# the notebooks predict stacks of different sizes in turn (validation, test and
# shifted sets, the last partial batch): the warning then opens a notebook's
# outputs with a long paragraph although nothing is wrong and no number changes
# (tracing costs a second or two). Only this message is dropped, on the
# "tensorflow" logger alone; every other TensorFlow warning is passed on.
_RETRACING = re.compile(r"out of the last \d+ calls to .* triggered tf\.function retracing")


class _DropRetracingWarning(logging.Filter):
    """Drops TensorFlow's tf.function retracing warning (see :data:`_RETRACING`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is not ours to judge
            return True
        return not _RETRACING.search(message)


def quiet_native_logs() -> None:
    """Set :data:`NATIVE_LOG_LEVELS` (unless already set), quieten the first
    TensorFlow import and drop TensorFlow's retracing warning
    (:class:`_DropRetracingWarning`). Idempotent; does nothing more once
    TensorFlow is imported."""
    for name, value in NATIVE_LOG_LEVELS.items():
        os.environ.setdefault(name, value)
    tf_logger = logging.getLogger("tensorflow")
    if not any(isinstance(f, _DropRetracingWarning) for f in tf_logger.filters):
        tf_logger.addFilter(_DropRetracingWarning())
    if "tensorflow" in sys.modules or any(isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _QuietTensorFlowImport())


def fermipy_dir():
    """Folder of the installed fermipy package, whose catalogues and templates the
    Fermi and LHAASO simulations read. Found without importing fermipy: its
    ``__init__`` runs ``git describe`` in its own folder, which inside a virtual
    environment in a git checkout prints "fatal: No names found" and may rewrite
    fermipy's ``_version.py``; only the data files are needed here."""
    from pathlib import Path

    spec = importlib.util.find_spec("fermipy")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("fermipy is not installed (pip install fermipy)")
    return Path(list(spec.submodule_search_locations)[0])
