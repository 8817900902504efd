"""One execution layer for the fan-outs of skyml: simulations and classical baselines.

:func:`map_items` maps a pure function over a list of items (patches, fields,
maps, cut-outs, tiles) and returns the results in item order. Where the items
are random, each gets its own ``numpy.random.SeedSequence`` spawned from the
parameter seed (:func:`item_seeds`), so the arrays are the same bit for bit
whatever the number of workers, the chunking or the order in which the items
finish. Where the items run is chosen by the environment, never by the code:

* default: in this process, one item after the other; nothing is started and
  dask is not even imported (the workshop laptop pays nothing);
* ``SKYML_WORKERS=N``: a dask.distributed ``LocalCluster`` of N worker
  processes (one thread each, on the loopback interface, no dashboard),
  started on the first fan-out and reused until the interpreter exits;
* ``SKYML_SCHEDULER=tcp://host:8786`` or ``SKYML_SCHEDULER=/path/scheduler.json``
  (a ``--scheduler-file``): the workers of an existing cluster, e.g. one
  started with dask-jobqueue on a SLURM machine;
* :func:`use` (``with parallel.use(client): ...``): a given ``Client``.

``SKYML_SIM_WORKERS`` is the deprecated name of ``SKYML_WORKERS`` (1: in this
process).

Large arrays do not travel through the scheduler: the client talks to the
workers directly (``direct_to_workers``) to hand them their items and collect
small results, and a worker writes a result of more than :data:`SPILL_BYTES`
(a dict of arrays) as a cache entry (:func:`skyml.cache.cached_dir`, an atomic
write) under ``data/cache/parallel/`` and returns only its location; the client
reads it and removes it. The workers therefore need to see the repository's
``data/cache`` (or ``SKYML_CACHE``), as on a cluster with a shared file system.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import shutil
import sys
import threading
import uuid
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

ENV_WORKERS = "SKYML_WORKERS"
ENV_SCHEDULER = "SKYML_SCHEDULER"
ENV_LEGACY = "SKYML_SIM_WORKERS"
#: results (dicts of arrays) larger than this are written to disk by the worker
SPILL_BYTES = 4 * 2**20
#: environment of the LocalCluster workers: CPU only, so that a worker never
#: takes GPU memory from the training in the main process
WORKER_ENV = {"CUDA_VISIBLE_DEVICES": "", "JAX_PLATFORMS": "cpu"}

_lock = threading.RLock()
_owned: dict = {}  # the cluster/client started from the environment: {"key", "client", "cluster"}
_explicit: list = []  # stack of clients given with use()


# --------------------------------------------------------------------------- seeds
def item_seeds(seed, stop: int, start: int = 0) -> list[np.random.SeedSequence]:
    """The seed sequences of items ``start`` … ``stop - 1`` spawned from
    ``seed`` (an int, a sequence of ints or a ``SeedSequence``, which is not
    modified): item ``i`` gets ``SeedSequence(seed).spawn(n)[i]``, the same for
    any ``n > i``, so its stream does not depend on how the items are chunked."""
    base = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    return [np.random.SeedSequence(base.entropy, spawn_key=(*base.spawn_key, i), pool_size=base.pool_size)
            for i in range(int(start), int(stop))]


# --------------------------------------------------------------------------- where items run
@dataclasses.dataclass(frozen=True)
class Mode:
    """Where :func:`map_items` runs: ``kind`` is "in-process", "local" (a
    LocalCluster of ``workers`` processes) or "scheduler" (``address`` is a
    scheduler address or a scheduler file)."""

    kind: str
    workers: int = 1
    address: str | None = None

    def __str__(self) -> str:
        if self.kind == "local":
            return f"local dask cluster of {self.workers} worker process{'es' if self.workers > 1 else ''}"
        if self.kind == "scheduler":
            return f"dask scheduler {self.address}"
        return "in-process"


def _positive_int(name: str, value: str, minimum: int) -> int:
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None
    if n < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {n}")
    return n


def configured_mode(environ=None) -> Mode:
    """The mode the environment asks for (``SKYML_WORKERS``, ``SKYML_SCHEDULER``,
    deprecated ``SKYML_SIM_WORKERS``); raises ValueError on a bad value."""
    env = os.environ if environ is None else environ
    scheduler = env.get(ENV_SCHEDULER, "").strip()
    workers = env.get(ENV_WORKERS, "").strip()
    legacy = env.get(ENV_LEGACY, "").strip()
    if scheduler and workers:
        raise ValueError(f"set either {ENV_SCHEDULER} or {ENV_WORKERS}, not both")
    if scheduler:
        if "://" not in scheduler and not Path(scheduler).is_file():
            raise ValueError(f"{ENV_SCHEDULER} must be a scheduler address (tcp://host:port) or an existing "
                             f"scheduler file, got {scheduler!r}")
        return Mode("scheduler", address=scheduler)
    if workers:
        n = _positive_int(ENV_WORKERS, workers, 0)
        return Mode("local", n) if n >= 1 else Mode("in-process")
    if legacy:
        warnings.warn(f"{ENV_LEGACY} is deprecated; use {ENV_WORKERS}", FutureWarning, stacklevel=3)
        n = _positive_int(ENV_LEGACY, legacy, 1)
        return Mode("local", n) if n > 1 else Mode("in-process")
    return Mode("in-process")


def _in_worker() -> bool:
    """Whether this code runs inside a dask worker (a nested fan-out runs in place)."""
    if "distributed" not in sys.modules:
        return False
    from distributed import get_worker

    try:
        get_worker()
    except ValueError:
        return False
    return True


def _start(mode: Mode):
    from distributed import Client, LocalCluster

    if mode.kind == "local":
        environ = dict(os.environ)
        try:
            # no dashboard; the scheduler's small HTTP server (health checks) on a free loopback port
            cluster = LocalCluster(n_workers=mode.workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                   dashboard_address=None, env=WORKER_ENV,
                                   scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"})
        finally:
            # the nannies set OMP_NUM_THREADS=1 & co. in this process for their workers; the main
            # process (training) keeps its own threads
            for key in set(os.environ) - set(environ):
                del os.environ[key]
            os.environ.update(environ)
        return cluster, Client(cluster, direct_to_workers=True, set_as_default=False)
    if "://" in mode.address:
        return None, Client(mode.address, direct_to_workers=True, set_as_default=False)
    return None, Client(scheduler_file=mode.address, direct_to_workers=True, set_as_default=False)


def shutdown() -> None:
    """Close the cluster and client started from the environment, if any."""
    with _lock:
        client, cluster = _owned.pop("client", None), _owned.pop("cluster", None)
        _owned.clear()
    if client is not None:
        client.close()
    if cluster is not None:
        cluster.close()


def current_client():
    """The dask ``Client`` the next :func:`map_items` uses, or None (in-process)."""
    if _explicit:
        return _explicit[-1]
    if _in_worker():
        return None
    mode = configured_mode()
    if mode.kind == "in-process":
        return None
    with _lock:
        if _owned.get("key") != mode:
            shutdown()
            cluster, client = _start(mode)
            _owned.update(key=mode, client=client, cluster=cluster)
            # registered after distributed's own exit handlers, so it runs before them: the
            # client lets go of its data before the cluster closes
            atexit.unregister(shutdown)
            atexit.register(shutdown)
        return _owned["client"]


def describe() -> str:
    """Where the next :func:`map_items` runs, in words."""
    if _explicit:
        return f"dask client {_explicit[-1].scheduler.address}"
    return str(configured_mode())


def n_workers() -> int:
    """Worker processes (threads) available to :func:`map_items`; 1 in-process."""
    client = current_client()
    return 1 if client is None else max(sum(client.nthreads().values()), 1)


@contextlib.contextmanager
def use(client):
    """Run the fan-outs inside the ``with`` block on ``client`` (a dask
    ``Client``, or a scheduler address for a client made and closed here)."""
    own = isinstance(client, str)
    if own:
        from distributed import Client

        client = Client(client, direct_to_workers=True, set_as_default=False)
    _explicit.append(client)
    try:
        yield client
    finally:
        _explicit.remove(client)
        if own:
            client.close()


# --------------------------------------------------------------------------- exact transport
def _exact_wcs_reduce(wcs):
    """Pickle an astropy ``WCS`` with its numbers exact: astropy pickles it as
    a FITS header, whose 20-character values keep 16 significant digits
    (a reference coordinate moves by ~1e-12 deg), and a position fitted on a
    worker would then differ in its last bits from the same fit here."""
    prm = wcs.wcs
    exact = {name: np.array(getattr(prm, name)) for name in ("crval", "crpix", "cdelt", "lonpole", "latpole")}
    if prm.has_cd():
        exact["cd"] = np.array(prm.cd)
    elif prm.has_pc():
        exact["pc"] = np.array(prm.pc)
    if prm.get_pv():
        exact["pv"] = list(prm.get_pv())
    return _exact_wcs_rebuild, (wcs.__reduce__(), exact)


def _exact_wcs_rebuild(reduced, exact):
    # a worker that receives an exact WCS sends it on exactly (to a worker that needs the item)
    _register_exact_pickles()
    rebuild, args = reduced[:2]
    wcs = rebuild(*args)
    prm = wcs.wcs
    for name, value in exact.items():
        if name == "pv":
            prm.set_pv(value)
        else:
            setattr(prm, name, value[()] if value.ndim == 0 else value)
    prm.set()
    return wcs


def _register_exact_pickles() -> None:
    """Pickle astropy WCS objects exactly in this process: the client before it
    sends items to the workers, a worker once it has received such a WCS."""
    import copyreg

    from astropy.wcs import WCS

    copyreg.pickle(WCS, _exact_wcs_reduce)


# --------------------------------------------------------------------------- progress
def _progress_enabled(progress) -> bool:
    if progress is not None:
        return bool(progress)
    ipython = sys.modules.get("IPython")
    if ipython is not None:
        shell = ipython.get_ipython()
        if shell is not None and "IPKernelApp" in getattr(shell, "config", {}):
            return True
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def _bar(total: int, desc: str | None, progress):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not _progress_enabled(progress), mininterval=2)


# --------------------------------------------------------------------------- results on disk
@dataclasses.dataclass(frozen=True)
class _Spilled:
    """A worker's result written as a cache entry: its folder, and which of its
    arrays were Python or NumPy scalars."""

    folder: str
    python_scalars: tuple
    numpy_scalars: tuple


def _spillable(result) -> int:
    """Bytes of a dict of arrays and scalars (0 if it is anything else)."""
    if not isinstance(result, dict) or not result:
        return 0
    total = 0
    for k, v in result.items():
        if not isinstance(k, str):
            return 0
        if isinstance(v, np.ndarray) and v.dtype != object:
            total += v.nbytes
        elif not isinstance(v, (bool, int, float, np.generic)):
            return 0
    return total


def _spill(result: dict, scratch: str, index: int) -> _Spilled:
    from . import cache

    def build(tmp: Path) -> None:
        np.savez(tmp / "arrays.npz", **{k: np.asarray(v) for k, v in result.items()})

    folder = cache.cached_dir("result", {"item": int(index)}, build, root=Path(scratch), verbose=False)
    # NumPy scalars first: np.float64 is also a Python float, and must come back as np.float64
    numpy_scalars = tuple(k for k, v in result.items() if isinstance(v, np.generic))
    python_scalars = tuple(k for k, v in result.items()
                           if isinstance(v, (bool, int, float)) and k not in numpy_scalars)
    return _Spilled(str(folder), python_scalars, numpy_scalars)


def _unspill(result):
    if not isinstance(result, _Spilled):
        return result
    with np.load(Path(result.folder) / "arrays.npz", allow_pickle=False) as f:
        out = {k: f[k] for k in f.files}
    for k in result.python_scalars:
        out[k] = out[k].item()
    for k in result.numpy_scalars:
        out[k] = out[k][()]
    shutil.rmtree(result.folder, ignore_errors=True)
    return out


def _call(index: int, item, seed, *, fn, shared, scratch=None, spill_bytes=None):
    """One item on a worker (or here): ``func(item[, seed], **shared)``; on a
    worker a result of more than ``spill_bytes`` goes to ``scratch`` on disk."""
    result = fn(item, **shared) if seed is None else fn(item, seed, **shared)
    if scratch is not None and _spillable(result) > spill_bytes:
        return _spill(result, scratch, index)
    return result


# --------------------------------------------------------------------------- the map
def map_items(func: Callable, items: Iterable, *, seed=None, progress=None, desc: str | None = None,
              **shared: Any) -> list:
    """``[func(item, **shared) for item in items]``, or with ``seed``
    ``[func(item, seeds[i], **shared) ...]`` where ``seeds = item_seeds(seed,
    len(items))``, run where the environment says (see the module doc).

    ``func`` must be pure and importable (a module-level function): the result
    of an item depends only on the item, its seed and ``shared``, so it is the
    same bit for bit in this process and on any number of workers. ``shared``
    (parameters, a model) is sent to the workers once. ``progress``: a tqdm
    bar (None: in a terminal or a notebook only). The first exception of an
    item is raised here, with the remaining items cancelled.
    """
    items = list(items)
    out: list = [None] * len(items)
    for i, result in imap_items(func, items, seed=seed, progress=progress, desc=desc, **shared):
        out[i] = result
    return out


def imap_items(func: Callable, items: Iterable, *, seed=None, progress=None, desc: str | None = None,
               **shared: Any) -> Iterator[tuple[int, Any]]:
    """:func:`map_items` as a generator of ``(index, result)`` pairs in the
    order the items finish (in item order in this process), so that a caller
    can store each result and drop it before the next one arrives."""
    items = list(items)
    seeds: Sequence = item_seeds(seed, len(items)) if seed is not None else [None] * len(items)
    desc = desc or getattr(func, "__name__", None)
    client = current_client() if items else None
    if client is None:
        with _bar(len(items), desc, progress) as bar:
            for i, item in enumerate(items):
                yield i, _call(i, item, seeds[i], fn=func, shared=shared)
                bar.update(1)
        return
    yield from _imap_on(client, func, items, seeds, shared, desc, progress)


def _raise_unless_finished(future, result, index: int) -> None:
    """Raise here what an item's task did not finish with: its own exception
    (``as_completed`` raises only futures whose status is still "error" when
    they are read), or an error saying that the task was cancelled or lost
    (a cancelled future's "result" is a ``CancelledError`` object, which must
    never be returned as the item's result)."""
    status = getattr(future, "status", "finished")
    if status == "finished":
        return
    if isinstance(result, tuple) and len(result) == 3 and isinstance(result[1], BaseException):
        raise result[1].with_traceback(result[2])
    if isinstance(result, BaseException) and not isinstance(result, _cancelled_errors()):
        raise result
    raise RuntimeError(f"item {index} did not finish on the cluster (task {status}); "
                       "a worker may have died or the task was cancelled")


def _cancelled_errors() -> tuple:
    import asyncio
    import concurrent.futures
    return (asyncio.CancelledError, concurrent.futures.CancelledError)


def _imap_on(client, func, items, seeds, shared, desc, progress):
    from distributed import as_completed

    from . import paths

    _register_exact_pickles()
    token = uuid.uuid4().hex[:12]
    name = "".join(c if c.isalnum() or c in "_-" else "_" for c in (desc or "item"))[:40]
    scratch = paths.CACHE / "parallel" / f"{name}-{token}"
    n = len(items)
    futures, item_futures, shared_future = [], [], None
    try:
        item_futures = client.scatter(items, direct=True, hash=False)
        [shared_future] = client.scatter([shared], direct=True, hash=False)
        futures = client.map(_call, range(n), item_futures, list(seeds), key=[f"{name}-{token}-{i}" for i in range(n)],
                             pure=False, fn=func, shared=shared_future, scratch=str(scratch), spill_bytes=SPILL_BYTES)
        where = {f.key: i for i, f in enumerate(futures)}
        with _bar(n, desc, progress) as bar:
            for batch in as_completed(futures, loop=client.loop, with_results=True, raise_errors=True).batches():
                for future, result in batch:
                    i = where[future.key]
                    _raise_unless_finished(future, result, i)
                    future.release()
                    item_futures[i].release()
                    yield i, _unspill(result)
                    bar.update(1)
    finally:
        # forget the items, the shared arguments and any unfinished task on the scheduler now
        client.cancel([*futures, *item_futures, *([shared_future] if shared_future is not None else [])])
        shutil.rmtree(scratch, ignore_errors=True)
