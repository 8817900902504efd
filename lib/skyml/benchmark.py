"""Benchmarks: speed of the CTA models, memory of the commands, scaling of the fan-outs.

    KERAS_BACKEND=tensorflow python -m skyml.benchmark
    KERAS_BACKEND=jax python -m skyml.benchmark
    python -m skyml.benchmark --memory [--side 8000]

Speed: one JSON line with seconds per training epoch on 512 random 200×200
maps (batch 32, mean of two epochs after a warm-up epoch) and prediction
throughput (maps/s, batch 256) of the CNN-Cleaner and the heat-map localiser.

Memory (:func:`memory`): for each of the eight commands, a FITS input of
side × side pixels with the command's channels (1 for maps; 3, 6 and 10×6
for the CTAO, Fermi-LAT and yearly Fermi-LAT cubes) is written as a sparse
file (a valid FITS file whose data are zeros, so the disk holds only its
header), the command runs in a fresh process, and its peak resident memory
(VmHWM of that process, read from ``/proc/self/status`` as it exits), exit status, time and
stderr line are reported as one JSON line. The target is < 2 GB per command.

    python -m skyml.benchmark --scaling [--workers 1 2] [--patches 8] [--repeats 3] [--out PATH]

measures how the fan-outs of :mod:`skyml.parallel` scale on dask LocalClusters
of 1, 2, … worker processes: the wall time of the Fermi-LAT TS-map baseline
(:func:`skyml.fermi.baselines.tsmap_detect_all`) on ``--patches`` test
patches and of one simulation (:func:`skyml.fermi.simulate.simulate_patches`,
four mock skies of 16 training patches), each after a warm-up on every
worker, timed ``--repeats`` times (the fastest pass is reported, every pass
listed), with the speed-up and efficiency (speed-up / workers) against one
worker, and checks that the outputs are the same bit for bit in this process
and on every cluster. Writes ``data/results/benchmarks/scaling.json`` (or
``--out``).

    python -m skyml.benchmark --throughput [--repeats 7] [--n-maps 512] [--out PATH]

measures the inference throughput (maps/s) of the CTA CNN-Cleaner, the
talk's CNN-Regressor and the heat-map localiser on 200×200 maps in this
process (:func:`throughput`): for every setting of :data:`THROUGHPUT_GRID`
(batch size; ``model.predict``, ``model.predict_on_batch`` or the eager call
``model(x, training=False)``; XLA ``jit_compile`` on or off for the two
compiled paths) a screening measurement, then the fastest setting measured
again (a warm-up call excluded, ``--repeats`` timed passes over ``--n-maps``
maps) with the median and a bootstrap 68 % interval of the median. Writes
``data/results/benchmarks/throughput.json`` (or ``--out``) with
``throughput_maps_per_s_<model>``, its ``_ci68``, the chosen setting, every
screened setting and the machine (CPU model, CPU count, Keras backend), and
the arithmetic behind the rate (:func:`forward_flops`): ``flops_per_map_<model>``,
the rate reached ``gflops_per_s_<model>`` and, for a model with a goal in
:data:`THROUGHPUT_GOALS`, the rate the goal asks, ``throughput_goal_gflops_per_s_<model>``,
to set beside the cores' peak (cores × clock × FLOPs per cycle).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# --------------------------------------------------------------------------- inference throughput
THROUGHPUT_OUT = Path("data") / "results" / "benchmarks" / "throughput.json"
#: Settings screened by :func:`throughput`: batch sizes, inference paths, XLA.
THROUGHPUT_GRID = {"batch_size": (32, 128, 512), "mode": ("predict", "predict_on_batch", "call"),
                   "jit_compile": (False, True)}
#: Goals on the 2-core reference machine (this repository's, not published numbers).
THROUGHPUT_GOALS = {"cleaner": 5000.0, "regressor": 1000.0}


def forward_flops(model) -> int:
    """Floating-point operations of one forward pass of ``model`` for one input
    (two per multiply-add), counted from the shapes of its ``Conv2D`` and
    ``Dense`` layers, nested models included; pooling, up-sampling,
    activations and biases (under 5 % for the CTA networks) are left out. With a
    throughput it gives the arithmetic rate a model needs: maps/s × FLOPs/map."""
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += forward_flops(layer)
        elif isinstance(layer, keras.layers.Conv2D):
            _, oh, ow, oc = layer.output.shape
            kh, kw = layer.kernel_size
            in_ch = layer.input.shape[-1]
            total += 2 * int(oh) * int(ow) * int(oc) * int(kh) * int(kw) * int(in_ch) // int(layer.groups)
        elif isinstance(layer, keras.layers.Dense):
            lead = int(np.prod([int(d) for d in layer.input.shape[1:-1]], dtype=np.int64))
            total += 2 * lead * int(layer.input.shape[-1]) * int(layer.units)
    return int(total)


def _inference_fn(model, mode: str, batch_size: int):
    """``fn(x)`` that runs ``model`` over all maps of ``x`` by ``mode``, ``batch_size`` maps at a time."""
    import keras

    if mode == "predict":
        return lambda x: model.predict(x, batch_size=batch_size, verbose=0)
    if mode == "predict_on_batch":
        return lambda x: [model.predict_on_batch(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    if mode == "call":
        return lambda x: [keras.ops.convert_to_numpy(model(x[i:i + batch_size], training=False))
                          for i in range(0, len(x), batch_size)]
    raise ValueError(f"unknown inference mode {mode!r}; choose predict, predict_on_batch or call")


def _inference_copy(model, jit_compile: bool):
    """A copy of ``model`` (same architecture and weights) compiled for
    inference only with ``jit_compile``; the caller's model is left as it is."""
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    copy.compile(jit_compile=bool(jit_compile))
    return copy


def time_inference(model, x, *, batch_size: int = 128, mode: str = "predict", jit_compile: bool = False,
                   repeats: int = 5, seed: int = 0) -> dict:
    """Throughput of ``model`` over the maps ``x`` (``(N, ny, nx, C)``) with one setting.

    One untimed warm-up pass (tracing, XLA compilation, caches), then
    ``repeats`` timed passes over all of ``x``. Returns the setting, ``rates``
    (maps/s of each pass), their ``median`` and ``ci68``, the bootstrap 68 %
    interval of the median over the passes (``skyml.metrics.bootstrap_ci``).
    The eager call (``mode="call"``) does not use ``jit_compile``.
    """
    from . import metrics

    if repeats < 2:
        raise ValueError("repeats must be >= 2 (the interval needs two passes)")
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 4 or len(x) < 1:
        raise ValueError(f"x must be a non-empty (N, ny, nx, C) array, got shape {x.shape}")
    copy = _inference_copy(model, jit_compile and mode != "call")
    fn = _inference_fn(copy, mode, int(batch_size))
    fn(x)  # warm-up: not timed
    rates = []
    for _ in range(int(repeats)):
        t0 = time.perf_counter()
        fn(x)
        rates.append(len(x) / (time.perf_counter() - t0))
    rates = np.asarray(rates)
    del fn, copy
    gc.collect()  # the copy's traced and compiled functions go with it
    return {"batch_size": int(batch_size), "mode": mode, "jit_compile": bool(jit_compile and mode != "call"),
            "rates": [round(float(r), 1) for r in rates], "median": float(np.median(rates)),
            "ci68": metrics.bootstrap_ci(np.median, rates, n_resamples=1000, seed=seed)}


def fastest_inference(model, x, *, grid=None, screen_repeats: int = 2, repeats: int = 7, seed: int = 0) -> dict:
    """Screen every setting of ``grid`` (default :data:`THROUGHPUT_GRID`) with
    ``screen_repeats`` passes, choose the one of highest median rate, and
    measure it again with ``repeats`` passes (a fresh measurement, so the
    choice does not bias the reported rate). Returns ``{"maps_per_s",
    "ci68", "setting", "rates", "screened"}``."""
    grid = dict(THROUGHPUT_GRID if grid is None else grid)
    screened = []
    for bs in grid["batch_size"]:
        for mode in grid["mode"]:
            for jit in (grid["jit_compile"] if mode != "call" else (False,)):
                r = time_inference(model, x, batch_size=bs, mode=mode, jit_compile=jit,
                                   repeats=screen_repeats, seed=seed)
                screened.append({k: r[k] for k in ("batch_size", "mode", "jit_compile", "median")})
    best = max(screened, key=lambda r: r["median"])
    final = time_inference(model, x, batch_size=best["batch_size"], mode=best["mode"],
                           jit_compile=best["jit_compile"], repeats=repeats, seed=seed)
    return {"maps_per_s": final["median"], "ci68": final["ci68"], "rates": final["rates"],
            "setting": {k: best[k] for k in ("batch_size", "mode", "jit_compile")},
            "screened": [{**r, "median": round(r["median"], 1)} for r in screened]}


def throughput_models(dense_units: int = 10000) -> dict:
    """The three CTA networks of notebooks 02 and 03 at the talk's geometry
    (200×200×1), freshly built: the time of a forward pass depends on the
    architecture and the input size only, not on the values of the weights."""
    from .cta import models

    return {"cleaner": models.build_cleaner(), "regressor": models.build_talk_regressor(dense_units=dense_units),
            "localiser": models.build_improved_localiser()}


def benchmark_maps(n_maps: int = 512, seed: int = 0, shape=(200, 200)) -> np.ndarray:
    """``n_maps`` stretched Poisson maps ``(N, ny, nx, 1)`` of a flat
    background of 0.1 counts per pixel (the order of the CTA maps' background)."""
    from .cta import models

    rng = np.random.default_rng(seed)
    return models.stretch(rng.poisson(0.1, size=(int(n_maps), *shape)).astype(np.float32))[0][..., None]


def throughput(models_by_name: dict | None = None, n_maps: int = 512, repeats: int = 7, screen_repeats: int = 2,
               grid=None, seed: int = 0) -> dict:
    """:func:`fastest_inference` of each model (default :func:`throughput_models`)
    on :func:`benchmark_maps`; the report of ``--throughput``."""
    import keras

    from . import results

    models_by_name = throughput_models() if models_by_name is None else models_by_name
    report = {"machine": results.machine(), "cpu_count": os.cpu_count(),
              "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
              "keras_backend": keras.backend.backend(), "keras_version": keras.__version__,
              "git_commit": results.git_commit(), "n_maps": int(n_maps), "repeats": int(repeats),
              "screen_repeats": int(screen_repeats), "grid": {k: list(v) for k, v in dict(grid or THROUGHPUT_GRID).items()},
              "load_average_at_start": [round(v, 2) for v in os.getloadavg()]}
    for name, model in models_by_name.items():
        x = benchmark_maps(n_maps, seed, tuple(model.input_shape[1:3]))
        r = fastest_inference(model, x, grid=grid, screen_repeats=screen_repeats, repeats=repeats, seed=seed)
        report[f"throughput_maps_per_s_{name}"] = r["maps_per_s"]
        report[f"throughput_maps_per_s_{name}_ci68"] = r["ci68"]
        report[f"throughput_{name}"] = {k: r[k] for k in ("setting", "rates", "screened")}
        flops = forward_flops(model)
        report[f"flops_per_map_{name}"] = flops
        report[f"gflops_per_s_{name}"] = flops * r["maps_per_s"] / 1e9
        if name in THROUGHPUT_GOALS:
            report[f"throughput_goal_{name}"] = THROUGHPUT_GOALS[name]
            report[f"throughput_goal_met_{name}"] = bool(r["maps_per_s"] >= THROUGHPUT_GOALS[name])
            # the arithmetic rate the goal asks of this machine's cores, for comparison with their peak
            report[f"throughput_goal_gflops_per_s_{name}"] = flops * THROUGHPUT_GOALS[name] / 1e9
    report["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    return report


def read_throughput(path: Path | None = None) -> dict | None:
    """The report written by ``--throughput`` (default :data:`THROUGHPUT_OUT`), or None."""
    from . import paths

    path = paths.ROOT / THROUGHPUT_OUT if path is None else Path(path)
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def throughput_for(name: str, model, path: Path | None = None, n_maps: int = 256, repeats: int = 5,
                   seed: int = 0, grid=None) -> dict:
    """Throughput of one CTA network for a notebook: the ``--throughput``
    report's numbers when that file exists and was measured with this Keras
    backend, else :func:`fastest_inference` of ``model`` measured now.
    Returns ``{"maps_per_s", "ci68", "setting", "machine", "load_average"
    (1, 5 and 15 min, at the start and end of the measurement), "source"}``."""
    import keras

    from . import results

    report = read_throughput(path)
    key = f"throughput_maps_per_s_{name}"
    if report is not None and key in report and report.get("keras_backend") == keras.backend.backend():
        return {"maps_per_s": float(report[key]), "ci68": list(report[f"{key}_ci68"]),
                "setting": report[f"throughput_{name}"]["setting"], "machine": report["machine"],
                "load_average": {"start": report.get("load_average_at_start"),
                                 "end": report.get("load_average_at_end")},
                "source": f"{THROUGHPUT_OUT} (python -m skyml.benchmark --throughput, commit {report.get('git_commit')})"}
    start = [round(v, 2) for v in os.getloadavg()]
    x = benchmark_maps(n_maps, seed, tuple(model.input_shape[1:3]))
    r = fastest_inference(model, x, grid=grid, repeats=repeats, seed=seed)
    return {"maps_per_s": r["maps_per_s"], "ci68": r["ci68"], "setting": r["setting"], "machine": results.machine(),
            "load_average": {"start": start, "end": [round(v, 2) for v in os.getloadavg()]},
            "source": "measured in this run (skyml.benchmark.fastest_inference)"}


def run(n_maps: int = 512, seed: int = 0) -> dict:
    import keras

    from .cta import models

    rng = np.random.default_rng(seed)
    x, _ = models.stretch(rng.poisson(0.1, size=(n_maps, 200, 200)).astype(np.float32))
    x = x[..., None]
    targets = {"cleaner": 0.5 * x, "improved": rng.uniform(0, 1, (n_maps, 2)).astype(np.float32)}
    out = {"backend": keras.backend.backend()}
    for name, build in (("cleaner", models.build_cleaner), ("improved", models.build_improved_localiser)):
        keras.utils.set_random_seed(seed)
        model = build()
        model.fit(x, targets[name], epochs=1, batch_size=32, verbose=0)  # warm-up and compilation
        t0 = time.perf_counter()
        model.fit(x, targets[name], epochs=2, batch_size=32, verbose=0)
        out[f"{name}_train_s_per_epoch"] = (time.perf_counter() - t0) / 2
        model.predict(x[:256], batch_size=256, verbose=0)
        t0 = time.perf_counter()
        model.predict(x, batch_size=256, verbose=0)
        out[f"{name}_predict_maps_per_s"] = n_maps / (time.perf_counter() - t0)
    return out


#: (command, channel axes in numpy order before (ny, nx), output suffix) of :func:`memory`.
MEMORY_CASES = (
    ("cta-clean", (), ".fits"), ("cta-localise", (), ".ecsv"), ("fermi-detect", (6,), ".ecsv"),
    ("fermi-catalogue", (10, 6), ".fits"), ("lhaaso-deconvolve", (), ".fits"), ("radio-counts", (), ".ecsv"),
    ("ctao-detect", (3,), ".ecsv"), ("optical-detect", (), ".ecsv"),
)


def sparse_fits(path: Path, shape: tuple[int, ...], bitpix: int = -32) -> Path:
    """A FITS image of ``shape`` (numpy order) with a celestial TAN WCS, its
    data area left sparse (zeros that take no disk space)."""
    from astropy.io import fits

    header = fits.Header()
    header["SIMPLE"], header["BITPIX"], header["NAXIS"] = True, bitpix, len(shape)
    for i, n in enumerate(shape[::-1], start=1):
        header[f"NAXIS{i}"] = n
    header.update({"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 83.63, "CRVAL2": 22.01,
                   "CRPIX1": shape[-1] / 2, "CRPIX2": shape[-2] / 2, "CDELT1": -0.02, "CDELT2": 0.02,
                   "BUNIT": "count"})
    text = header.tostring().encode()
    size = len(text) + int(np.prod(shape, dtype=np.int64)) * abs(bitpix) // 8
    with open(path, "wb") as f:
        f.write(text)
        f.truncate(-(-size // 2880) * 2880)
    return path


#: Run in the measured process: the command, then its own peak resident memory
#: (VmHWM; ``ru_maxrss`` would include the high-water mark of the forking parent).
_CHILD = (
    "import sys\n"
    "from skyml import cli\n"
    "try:\n"
    "    status = cli.main(sys.argv[1:])\n"
    "finally:\n"
    "    for line in open('/proc/self/status'):\n"
    "        if line.startswith('VmHWM'):\n"
    "            sys.stderr.write('\\nVmHWM_KB ' + line.split()[1] + '\\n')\n"
    "sys.exit(status)\n"
)


def measure(command_argv: list[str]) -> dict:
    """Peak RSS [MB], exit status, seconds and last stderr line of ``skyml
    <command_argv>`` run in a fresh process (Linux: VmHWM of /proc)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.run([sys.executable, "-c", _CHILD, *command_argv], stdout=subprocess.DEVNULL,
                              stderr=err)
        err.seek(0)
        lines = err.read().decode(errors="replace").strip().splitlines()
    peak = [int(line.split()[1]) for line in lines if line.startswith("VmHWM_KB ")]
    lines = [line for line in lines if line.strip() and not line.startswith("VmHWM_KB ")]
    return {"peak_rss_mb": round(peak[-1] / 1024, 1) if peak else None, "exit": proc.returncode,
            "seconds": round(time.perf_counter() - t0, 2), "stderr": lines[-1] if lines else ""}


def memory(side: int = 8000, profile: str = "full") -> dict:
    """:func:`measure` of every command on a ``side`` × ``side`` input."""
    out = {"side": side}
    with tempfile.TemporaryDirectory(prefix="skyml-memory-") as folder:
        for command, channels, suffix in MEMORY_CASES:
            src = sparse_fits(Path(folder) / f"{command}.fits", (*channels, side, side))
            argv = [command, str(src), "-o", str(Path(folder) / f"{command}-out{suffix}"), "--profile", profile]
            out[command] = measure(argv)
            src.unlink()
    return out


# --------------------------------------------------------------------------- fan-out scaling
SCALING_OUT = Path("data") / "results" / "benchmarks" / "scaling.json"
SIM_SKIES, SIM_PATCHES_PER_SKY = 4, 16


def _scaling_inputs(n_patches: int, seed: int):
    from .fermi import simulate

    p = simulate.FermiSimParams()
    return p, simulate.simulate_patches(n_patches, seed, p, "test"), simulate.FermiSimParams(
        patches_per_sky=SIM_PATCHES_PER_SKY)


def _scaling_tasks(p, patches, sim_p, seed: int, repeats: int = 1) -> dict:
    """The two timed fan-outs, each timed ``repeats`` times:
    {name: ([seconds of each pass], outputs of the last pass)}."""
    from .fermi import baselines, simulate

    out = {"fermi_tsmap": ([], None), "fermi_simulation": ([], None)}
    for _ in range(int(repeats)):
        t0 = time.perf_counter()
        det = baselines.tsmap_detect_all(patches, p, progress=False)
        out["fermi_tsmap"] = (out["fermi_tsmap"][0] + [time.perf_counter() - t0],
                              {k: v for k, v in det.items() if k != "seconds"})
        simulate._sky_cached.cache_clear()  # every pass draws its skies (in this process too)
        t0 = time.perf_counter()
        sim = simulate.simulate_patches(SIM_SKIES * SIM_PATCHES_PER_SKY, seed, sim_p, "train")
        out["fermi_simulation"] = (out["fermi_simulation"][0] + [time.perf_counter() - t0], sim)
    return out


def _warm_worker(p, counts, background, glon, glat) -> None:
    """Imports and first-call caches of one worker (not timed), as the
    inputs warmed this process: one TS map and one simulated test patch."""
    from .fermi import baselines, simulate

    baselines.tsmap_detect(counts, background, glon, glat, p)
    simulate.simulate_patches(1, 0, p, "test")


def scaling(workers=(1, 2), n_patches: int = 8, seed: int = 1, repeats: int = 3) -> dict:
    """Wall times of the Fermi TS-map baseline and of a patch simulation in
    this process and on LocalClusters of ``workers`` (which must include 1),
    with speed-ups against one worker and efficiencies (speed-up / workers).

    Each configuration is timed ``repeats`` times; ``wall_s`` is the fastest
    pass (as :mod:`timeit` advises: slower passes measure other jobs on the
    machine, not the code) and ``wall_s_all`` lists every pass, so a reader
    sees the spread."""
    if 1 not in workers:
        raise ValueError("the worker counts must include 1, the reference of the speed-ups")
    from distributed import Client, LocalCluster

    from . import parallel, results

    p, patches, sim_p = _scaling_inputs(n_patches, seed)
    report = {"machine": results.machine(), "git_commit": results.git_commit(),
              "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
              "tasks": {"fermi_tsmap": f"TS-map baseline on {n_patches} test patches (64x64x6), one task per patch",
                        "fermi_simulation": f"{SIM_SKIES * SIM_PATCHES_PER_SKY} training patches of {SIM_SKIES} "
                                            f"mock skies, one task per sky"}}
    timed = {"in-process": _scaling_tasks(p, patches, sim_p, seed, repeats)}
    for n in workers:
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address=None,
                          scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"}) as cluster, \
                Client(cluster, direct_to_workers=True, set_as_default=False) as client, parallel.use(client):
            client.run(_warm_worker, p, patches["counts"][0], patches["background"][0], patches["centre_glon"][0],
                       patches["centre_glat"][0])
            timed[f"{n} workers"] = _scaling_tasks(p, patches, sim_p, seed, repeats)
    timed = {k.replace("1 workers", "1 worker"): v for k, v in timed.items()}
    reference = timed["in-process"]
    identical = all(np.array_equal(np.asarray(reference[task][1][k]), np.asarray(run[task][1][k]))
                    for run in timed.values() for task in reference for k in reference[task][1])
    one = timed["1 worker"]
    report["repeats"] = int(repeats)
    for task in reference:
        rows = {"in-process": {"wall_s": round(min(reference[task][0]), 2),
                               "wall_s_all": [round(t, 2) for t in reference[task][0]]}}
        for n in workers:
            name = "1 worker" if n == 1 else f"{n} workers"
            walls = timed[name][task][0]
            speedup = min(one[task][0]) / min(walls)
            rows[name] = {"wall_s": round(min(walls), 2), "wall_s_all": [round(t, 2) for t in walls],
                          "speedup": round(speedup, 3), "efficiency": round(speedup / n, 3)}
        report[task] = rows
    report["identical_outputs"] = bool(identical)
    report["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    return report


def _check_out(path: Path) -> Path:
    """The output file: a regular file or nothing, in a folder that exists or can be made."""
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise ValueError(f"{path} exists and is not a regular file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"cannot create the folder {path.parent}: {err.strerror}") from None
    if not os.access(path.parent, os.W_OK):
        raise ValueError(f"cannot write to {path.parent}")
    return path


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def _write_json(out: Path, report: dict) -> None:
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    tmp.replace(out)


def main(argv=None) -> int:
    parser = _Parser(prog="python -m skyml.benchmark", description=__doc__.splitlines()[0])
    parser.add_argument("--scaling", action="store_true", help="fan-out scaling on local dask clusters")
    parser.add_argument("--throughput", action="store_true",
                        help="inference throughput of the CTA networks, fastest setting of a screened grid")
    parser.add_argument("--memory", action="store_true", help="peak memory of every command on a large input")
    parser.add_argument("--side", type=int, default=8000, help="input side in pixels for --memory (default 8000)")
    parser.add_argument("--profile", choices=("quick", "full"), default="full",
                        help="models the commands would use with --memory (default: full)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="cluster sizes; 1 is always measured, the reference of the speed-ups (default 1 2)")
    parser.add_argument("--patches", type=int, default=8, help="patches of the TS-map baseline (default 8)")
    parser.add_argument("--n-maps", type=int, default=512, help="maps per timed pass of --throughput (default 512)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed passes of the chosen --throughput setting (default 7) or of each --scaling "
                             "configuration (default 3; the fastest is reported)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"output JSON (default {SCALING_OUT} or {THROUGHPUT_OUT})")
    args = parser.parse_args(argv)
    if sum((args.memory, args.scaling, args.throughput)) > 1:
        print("python -m skyml.benchmark: error: choose one of --memory, --scaling and --throughput", file=sys.stderr)
        return 2
    if args.memory:
        print(json.dumps(memory(args.side, args.profile)))
        return 0
    if not args.throughput and args.n_maps != 512:
        print("python -m skyml.benchmark: error: --n-maps needs --throughput", file=sys.stderr)
        return 2
    if not args.throughput and not args.scaling and args.repeats is not None:
        print("python -m skyml.benchmark: error: --repeats needs --throughput or --scaling", file=sys.stderr)
        return 2
    if not args.scaling and (args.workers != [1, 2] or args.patches != 8):
        print("python -m skyml.benchmark: error: --workers and --patches need --scaling", file=sys.stderr)
        return 2
    if not args.scaling and not args.throughput:
        if args.out is not None:
            print("python -m skyml.benchmark: error: --out: need --scaling or --throughput", file=sys.stderr)
            return 2
        print(json.dumps(run()))
        return 0
    from . import paths

    default = THROUGHPUT_OUT if args.throughput else SCALING_OUT
    try:
        repeats = args.repeats if args.repeats is not None else (7 if args.throughput else 3)
        if min(args.workers) < 1 or args.patches < 1 or args.n_maps < 1 or repeats < (2 if args.throughput else 1):
            raise ValueError("--workers, --patches and --n-maps must be >= 1, --repeats >= 2 with --throughput "
                             "and >= 1 with --scaling")
        out = _check_out(args.out if args.out is not None else paths.ROOT / default)
    except ValueError as err:
        print(f"python -m skyml.benchmark: error: {err}", file=sys.stderr)
        return 2
    if args.throughput:
        report = throughput(n_maps=args.n_maps, repeats=repeats)
    else:
        report = scaling(tuple(sorted(set(args.workers) | {1})), args.patches, repeats=repeats)
    _write_json(out, report)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
