"""A cache of expensive products keyed by a hash of their parameters.

A notebook asks for "CTA maps with these parameters"; :func:`cached_arrays`
returns them from ``data/cache/<kind>/<hash>/`` or builds and stores them.
Arrays are stored with ``numpy.savez`` and read with ``allow_pickle=False``;
writes go to a temporary folder that is renamed into place, so an interrupted
build never leaves a half-written entry.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from . import paths


def _canonical(obj):
    if isinstance(obj, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(obj.items())}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    raise TypeError(f"cache parameters must be JSON-like, got {type(obj).__name__}")


def param_hash(kind: str, params: Mapping) -> str:
    """Hash of ``kind`` and the canonical JSON form of ``params`` (16 hex digits)."""
    text = json.dumps({"kind": kind, "params": _canonical(params)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def entry_dir(kind: str, params: Mapping, root: Path | None = None) -> Path:
    root = Path(root) if root is not None else paths.CACHE
    return root / kind / param_hash(kind, params)


def cached_dir(
    kind: str,
    params: Mapping,
    build: Callable[[Path], None],
    root: Path | None = None,
    verbose: bool = True,
) -> Path:
    """Return the cache folder of ``(kind, params)``, calling ``build(tmpdir)``
    to fill it the first time. ``build`` writes its files into ``tmpdir``."""
    target = entry_dir(kind, params, root)
    if (target / "params.json").is_file():
        if verbose:
            print(f"[cache] {kind}: loaded {target.relative_to(target.parents[1])}")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(tmp)
        (tmp / "params.json").write_text(
            json.dumps({"kind": kind, "params": _canonical(params)}, indent=1, sort_keys=True)
        )
        if target.exists():  # built concurrently by another process
            shutil.rmtree(tmp)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if verbose:
        print(f"[cache] {kind}: built {target.relative_to(target.parents[1])}")
    return target


def cached_arrays(
    kind: str,
    params: Mapping,
    build: Callable[[], Mapping[str, np.ndarray]],
    root: Path | None = None,
    verbose: bool = True,
) -> dict[str, np.ndarray]:
    """Arrays of ``build()`` for ``(kind, params)``, from the cache when present."""

    def _write(tmp: Path) -> None:
        arrays = build()
        for name, arr in arrays.items():
            if np.asarray(arr).dtype == object:
                raise TypeError(f"array {name!r} has dtype object; it cannot be cached safely")
        np.savez(tmp / "arrays.npz", **arrays)

    folder = cached_dir(kind, params, _write, root=root, verbose=verbose)
    with np.load(folder / "arrays.npz", allow_pickle=False) as f:
        return {k: f[k] for k in f.files}
