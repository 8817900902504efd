"""A cache of expensive products keyed by a hash of their parameters.

A notebook asks for "CTA maps with these parameters"; :func:`cached_arrays`
returns them from ``<cache root>/<kind>/<hash>/`` or builds and stores them.
Arrays are stored with ``numpy.savez`` and read with ``allow_pickle=False``.

The cache heals itself:

- every entry holds ``params.json`` (the parameters it was built from) and
  ``checksum.json`` (the SHA-256 of every file of the entry, params.json
  included); an entry whose files are missing, truncated, altered, or built
  for other parameters is reported in one line on stderr, removed and
  rebuilt;
- a build goes to a hidden temporary folder ``.<hash>-<random>`` next to the
  entry and is renamed into place, under an exclusive lock
  (``<root>/.locks/<kind>-<hash>.lock``), so concurrent fills of one entry build it once and an
  interrupted build never leaves a half-written entry; temporary folders
  older than :data:`STALE_SECONDS` (left by a killed process) are swept;
- the root is ``$SKYML_CACHE`` or the repository's ``data/cache``; when that
  is not writable (a read-only install, another user's checkout) valid
  entries are still read from it, and new ones go to the per-user cache
  :func:`user_cache_dir` (``$XDG_CACHE_HOME/skyml``, else ``~/.cache/skyml``);
- folders are created with the permissions of the process's umask.

Entries of an older skyml (no ``checksum.json``) whose parameters match and
whose arrays load are adopted: their checksum is written once.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import shutil
import sys
import time
import zipfile
from pathlib import Path
from typing import Callable, Iterator, Mapping

import numpy as np

from . import paths
from .results import file_sha256

#: Hidden build folders (and output temporaries) older than this are left-overs of a killed process.
STALE_SECONDS = 3600
PARAMS_FILE = "params.json"
CHECKSUM_FILE = "checksum.json"
ARRAYS_FILE = "arrays.npz"


class CacheError(RuntimeError):
    """No cache location is writable."""


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


def array_digest(*arrays) -> str:
    """SHA-256 (hex) of arrays' dtypes, shapes and bytes, in order: a cache key
    for a result computed from arrays (the same arrays, the same digest)."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}:{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def param_hash(kind: str, params: Mapping) -> str:
    """Hash of ``kind`` and the canonical JSON form of ``params`` (16 hex digits)."""
    text = json.dumps({"kind": kind, "params": _canonical(params)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------
# Where the cache lives
# ---------------------------------------------------------------------------


def user_cache_dir() -> Path:
    """The per-user cache folder (XDG base directory convention, as
    ``platformdirs.user_cache_dir("skyml")`` on Linux)."""
    base = os.environ.get("XDG_CACHE_HOME", "").strip()
    if not base or not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "skyml"


def _writable(folder: Path) -> bool:
    """Whether ``folder`` exists writable, or could be created in a writable ancestor."""
    folder = Path(folder)
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            return candidate.is_dir() and os.access(candidate, os.W_OK | os.X_OK)
    return False


def default_root() -> Path:
    """:data:`skyml.paths.CACHE`: ``$SKYML_CACHE`` or ``data/cache``."""
    return Path(paths.CACHE)


def cache_roots(root: Path | None = None) -> list[Path]:
    """Roots searched for an entry, the first writable one is built in: an
    explicit ``root`` alone; else :func:`default_root` then :func:`user_cache_dir`."""
    if root is not None:
        return [Path(root)]
    primary, fallback = default_root(), user_cache_dir()
    return [primary] if primary == fallback else [primary, fallback]


def entry_dir(kind: str, params: Mapping, root: Path | None = None) -> Path:
    """Folder of the entry in ``root`` (default: the first root of :func:`cache_roots`)."""
    base = Path(root) if root is not None else cache_roots()[0]
    return base / kind / param_hash(kind, params)


# ---------------------------------------------------------------------------
# Checksums and verification
# ---------------------------------------------------------------------------


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.is_file() and p.name != CHECKSUM_FILE)


def _write_checksum(folder: Path) -> None:
    sums = {name: file_sha256(folder / name) for name in _files(folder)}
    (folder / CHECKSUM_FILE).write_text(json.dumps({"algorithm": "sha256", "files": sums}, indent=1))


def _params_record(kind: str, params: Mapping) -> dict:
    return {"kind": kind, "params": _canonical(params)}


def _check_params(folder: Path, kind: str, params: Mapping) -> str | None:
    try:
        recorded = json.loads((folder / PARAMS_FILE).read_text())
    except FileNotFoundError:
        return f"{PARAMS_FILE} missing"
    except (OSError, ValueError) as err:
        return f"{PARAMS_FILE} unreadable ({type(err).__name__})"
    if recorded != _params_record(kind, params):
        return f"{PARAMS_FILE} records other parameters"
    return None


def _legacy_ok(folder: Path) -> bool:
    """An entry of an older skyml (no checksum): its arrays load completely
    (zip CRC checked on read)."""
    npz = folder / ARRAYS_FILE
    if not npz.is_file():
        return True  # a model folder: nothing more to check than params.json
    try:
        with np.load(npz, allow_pickle=False) as f:
            for name in f.files:
                f[name]
    except Exception:
        return False
    return True


def verify(folder: Path, kind: str, params: Mapping) -> str | None:
    """None when ``folder`` is a complete entry of ``(kind, params)``, else the
    reason it is not (one phrase)."""
    folder = Path(folder)
    problem = _check_params(folder, kind, params)
    if problem:
        return problem
    try:
        record = json.loads((folder / CHECKSUM_FILE).read_text())
        sums = dict(record["files"])
    except FileNotFoundError:
        return None if _legacy_ok(folder) else f"no {CHECKSUM_FILE} and {ARRAYS_FILE} does not load"
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"{CHECKSUM_FILE} unreadable ({type(err).__name__})"
    present = _files(folder)
    missing = sorted(set(sums) - set(present))
    if missing:
        return f"file(s) missing: {', '.join(missing)}"
    extra = sorted(set(present) - set(sums))
    if extra:
        return f"unexpected file(s): {', '.join(extra)}"
    for name in present:
        try:
            actual = file_sha256(folder / name)
        except OSError as err:
            return f"{name} unreadable ({type(err).__name__})"
        if actual != sums[name]:
            return f"{name} does not match its checksum (truncated or altered)"
    return None


def _report(kind: str, folder: Path, message: str) -> None:
    print(f"[cache] {kind}: {folder}: {message}", file=sys.stderr, flush=True)


def _remove(folder: Path) -> None:
    if folder.is_symlink() or folder.is_file():
        folder.unlink()
    else:
        shutil.rmtree(folder)


def sweep_stale(folder: Path, max_age_s: float = STALE_SECONDS) -> list[Path]:
    """Remove hidden build folders ``.<hash>-*`` older than ``max_age_s`` in
    ``folder`` (the left-overs of a killed build); returns what was removed."""
    removed = []
    now = time.time()
    try:
        candidates = list(Path(folder).glob(".*-*"))
    except OSError:
        return removed
    for p in candidates:
        try:
            if p.is_dir() and not p.is_symlink() and now - p.stat().st_mtime > max_age_s:
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
        except OSError:
            continue
    return removed


def _refuse_while_bootstrapping(kind: str) -> None:
    """Refuse a cache access from a process that is still importing its parent's
    main script (multiprocessing's spawn start method: the check CPython makes
    before starting a process from there). The dask workers of ``SKYML_WORKERS``
    are spawned; a script without ``if __name__ == "__main__":`` runs again in
    each of them, and its first cached step would wait forever for the lock that
    the parent holds while it builds the same entry."""
    import multiprocessing

    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise RuntimeError(f"skyml: a worker process reached the cache ({kind}) while importing its parent's "
                           "script: with SKYML_WORKERS > 1, put the script's code under "
                           "`if __name__ == \"__main__\":`")


def _lock_path(base: Path, kind: str, name: str) -> Path:
    """The lock file of an entry: ``<root>/.locks/<kind>-<hash>.lock`` (kept
    out of the kind folder, whose listing is the list of entries)."""
    folder = base / ".locks"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{kind}-{name}.lock"


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """An exclusive lock on ``lock_path`` (fcntl.flock); a no-op where file
    locks are unavailable (then rename-and-retry alone resolves races)."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass  # e.g. NFS without locks
        yield
    finally:
        os.close(fd)  # releases the lock


# ---------------------------------------------------------------------------
# The two entry points
# ---------------------------------------------------------------------------


def _find_valid(kind: str, params: Mapping, roots: list[Path], verbose: bool) -> Path | None:
    """A valid entry in one of the roots; damaged ones in writable roots are
    reported and removed (in read-only roots only reported)."""
    name = param_hash(kind, params)
    for base in roots:
        folder = base / kind / name
        if not folder.exists() and not folder.is_symlink():
            continue
        problem = verify(folder, kind, params) if folder.is_dir() else "not a folder"
        if problem is None:
            if not (folder / CHECKSUM_FILE).exists() and _writable(folder):
                with contextlib.suppress(OSError):
                    _write_checksum(folder)
                    _report(kind, folder, "entry of an older skyml verified; checksum added")
            return folder
        if _writable(folder.parent):
            with _locked(_lock_path(base, kind, name)):
                if folder.exists() and verify(folder, kind, params) is not None:
                    _report(kind, folder, f"damaged entry ({problem}); removed, rebuilding")
                    _remove(folder)
                elif folder.exists():
                    return folder  # repaired concurrently
        else:
            _report(kind, folder, f"damaged entry ({problem}) in a read-only cache; rebuilding elsewhere")
    return None


def cached_dir(
    kind: str,
    params: Mapping,
    build: Callable[[Path], None],
    root: Path | None = None,
    verbose: bool = True,
) -> Path:
    """Return the cache folder of ``(kind, params)``, calling ``build(tmpdir)``
    to fill it the first time. ``build`` writes its files into ``tmpdir``;
    ``params.json`` and ``checksum.json`` are added here."""
    roots = cache_roots(root)
    found = _find_valid(kind, params, roots, verbose)
    if found is not None:
        if verbose:
            print(f"[cache] {kind}: loaded {found.relative_to(found.parents[1])}")
        return found
    base = next((r for r in roots if _writable(r)), None)
    if base is None:
        raise CacheError(f"no writable cache folder for {kind!r}: tried {', '.join(map(str, roots))}; "
                         "set SKYML_CACHE or XDG_CACHE_HOME to a writable folder")
    _refuse_while_bootstrapping(kind)
    name = param_hash(kind, params)
    parent = base / kind
    parent.mkdir(parents=True, exist_ok=True)  # mode 0o777 & ~umask
    target = parent / name
    with _locked(_lock_path(base, kind, name)):
        sweep_stale(parent)
        if target.exists():
            problem = verify(target, kind, params)
            if problem is None:  # built concurrently while we waited for the lock
                if verbose:
                    print(f"[cache] {kind}: loaded {target.relative_to(target.parents[1])}")
                return target
            _report(kind, target, f"damaged entry ({problem}); removed, rebuilding")
            _remove(target)
        tmp = parent / f".{name}-{secrets.token_hex(4)}"
        os.mkdir(tmp)  # mode 0o777 & ~umask (tempfile.mkdtemp would force 0o700)
        try:
            build(tmp)
            (tmp / PARAMS_FILE).write_text(json.dumps(_params_record(kind, params), indent=1, sort_keys=True))
            _write_checksum(tmp)
            try:
                tmp.rename(target)
            except OSError as err:
                # an unlocked concurrent fill got there first: keep its entry if valid
                if err.errno not in (errno.ENOTEMPTY, errno.EEXIST) or verify(target, kind, params):
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    if verbose:
        print(f"[cache] {kind}: built {target.relative_to(target.parents[1])}")
    return target


def _load_arrays(folder: Path) -> dict[str, np.ndarray]:
    with np.load(folder / ARRAYS_FILE, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def best_cached_arrays(kind: str, score: Callable[[dict], float | None], root: Path | None = None,
                       verbose: bool = True) -> tuple[dict, dict[str, np.ndarray]] | None:
    """The arrays of the complete entry of ``kind`` whose recorded parameters
    get the highest ``score(params)`` (entries scored None are skipped), as
    ``(params, arrays)``, or None when no entry qualifies. Entries that do not
    verify (:func:`verify`) are passed over, not removed. For builds that can
    start from a related entry, e.g. the first maps of a longer simulation."""
    candidates = []
    for base in cache_roots(root):
        for folder in sorted((Path(base) / kind).glob("[0-9a-f]*")):
            try:
                record = json.loads((folder / PARAMS_FILE).read_text())
            except (OSError, ValueError):
                continue
            if record.get("kind") != kind or not isinstance(record.get("params"), dict):
                continue
            value = score(record["params"])
            if value is not None:
                candidates.append((value, str(folder), record["params"]))
    for _, folder, params in sorted(candidates, key=lambda c: c[0], reverse=True):
        if verify(Path(folder), kind, params) is None:
            try:
                arrays = _load_arrays(Path(folder))
            except (OSError, ValueError, EOFError, zipfile.BadZipFile):
                continue
            if verbose:
                print(f"[cache] {kind}: starting from {Path(folder).relative_to(Path(folder).parents[1])}")
            return params, arrays
    return None


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
        np.savez(tmp / ARRAYS_FILE, **arrays)

    folder = cached_dir(kind, params, _write, root=root, verbose=verbose)
    try:
        return _load_arrays(folder)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        # checksum matched but the arrays do not load (written damaged): rebuild once
        _report(kind, folder, f"arrays do not load ({type(err).__name__}); removed, rebuilding")
        if _writable(folder.parent):
            _remove(folder)
        folder = cached_dir(kind, params, _write, root=root, verbose=verbose)
        return _load_arrays(folder)
