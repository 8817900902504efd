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

    python -m skyml.benchmark --scaling [--workers 1 2] [--patches 8] [--out PATH]

measures how the fan-outs of :mod:`skyml.parallel` scale on dask LocalClusters
of 1, 2, … worker processes: the wall time of the Fermi-LAT TS-map baseline
(:func:`skyml.fermi.baselines.tsmap_detect_all`) on ``--patches`` test
patches and of one simulation (:func:`skyml.fermi.simulate.simulate_patches`,
four mock skies of 16 training patches), each after a warm-up on every
worker, with the speed-up and efficiency (speed-up / workers) against one
worker, and checks that the outputs are the same bit for bit in this process
and on every cluster. Writes ``data/results/benchmarks/scaling.json`` (or
``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


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


def _scaling_tasks(p, patches, sim_p, seed: int) -> dict:
    """The two timed fan-outs: {name: (seconds, outputs)}."""
    from .fermi import baselines, simulate

    out = {}
    t0 = time.perf_counter()
    det = baselines.tsmap_detect_all(patches, p, progress=False)
    out["fermi_tsmap"] = (time.perf_counter() - t0, {k: v for k, v in det.items() if k != "seconds"})
    simulate._sky_cached.cache_clear()  # every run draws its skies (in this process too)
    t0 = time.perf_counter()
    sim = simulate.simulate_patches(SIM_SKIES * SIM_PATCHES_PER_SKY, seed, sim_p, "train")
    out["fermi_simulation"] = (time.perf_counter() - t0, sim)
    return out


def _warm_worker(p, counts, background, glon, glat) -> None:
    """Imports and first-call caches of one worker (not timed), as the
    inputs warmed this process: one TS map and one simulated test patch."""
    from .fermi import baselines, simulate

    baselines.tsmap_detect(counts, background, glon, glat, p)
    simulate.simulate_patches(1, 0, p, "test")


def scaling(workers=(1, 2), n_patches: int = 8, seed: int = 1) -> dict:
    """Wall times of the Fermi TS-map baseline and of a patch simulation in
    this process and on LocalClusters of ``workers`` (which must include 1),
    with speed-ups against one worker and efficiencies (speed-up / workers)."""
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
    timed = {"in-process": _scaling_tasks(p, patches, sim_p, seed)}
    for n in workers:
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address=None,
                          scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"}) as cluster, \
                Client(cluster, direct_to_workers=True, set_as_default=False) as client, parallel.use(client):
            client.run(_warm_worker, p, patches["counts"][0], patches["background"][0], patches["centre_glon"][0],
                       patches["centre_glat"][0])
            timed[f"{n} workers"] = _scaling_tasks(p, patches, sim_p, seed)
    timed = {k.replace("1 workers", "1 worker"): v for k, v in timed.items()}
    reference = timed["in-process"]
    identical = all(np.array_equal(np.asarray(reference[task][1][k]), np.asarray(run[task][1][k]))
                    for run in timed.values() for task in reference for k in reference[task][1])
    one = timed["1 worker"]
    for task in reference:
        rows = {"in-process": {"wall_s": round(reference[task][0], 2)}}
        for n in workers:
            name = "1 worker" if n == 1 else f"{n} workers"
            wall = timed[name][task][0]
            speedup = one[task][0] / wall
            rows[name] = {"wall_s": round(wall, 2), "speedup": round(speedup, 3),
                                    "efficiency": round(speedup / n, 3)}
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


def main(argv=None) -> int:
    parser = _Parser(prog="python -m skyml.benchmark", description=__doc__.splitlines()[0])
    parser.add_argument("--scaling", action="store_true", help="fan-out scaling on local dask clusters")
    parser.add_argument("--memory", action="store_true", help="peak memory of every command on a large input")
    parser.add_argument("--side", type=int, default=8000, help="input side in pixels for --memory (default 8000)")
    parser.add_argument("--profile", choices=("quick", "full"), default="full",
                        help="models the commands would use with --memory (default: full)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="cluster sizes; 1 is always measured, the reference of the speed-ups (default 1 2)")
    parser.add_argument("--patches", type=int, default=8, help="patches of the TS-map baseline (default 8)")
    parser.add_argument("--out", type=Path, default=None, help=f"output JSON (default {SCALING_OUT})")
    args = parser.parse_args(argv)
    if args.memory and args.scaling:
        print("python -m skyml.benchmark: error: choose one of --memory and --scaling", file=sys.stderr)
        return 2
    if args.memory:
        print(json.dumps(memory(args.side, args.profile)))
        return 0
    if not args.scaling:
        if args.out is not None or args.workers != [1, 2] or args.patches != 8:
            print("python -m skyml.benchmark: error: --workers, --patches and --out need --scaling", file=sys.stderr)
            return 2
        print(json.dumps(run()))
        return 0
    from . import paths

    try:
        if min(args.workers) < 1 or args.patches < 1:
            raise ValueError("--workers and --patches must be >= 1")
        out = _check_out(args.out if args.out is not None else paths.ROOT / SCALING_OUT)
    except ValueError as err:
        print(f"python -m skyml.benchmark: error: {err}", file=sys.stderr)
        return 2
    report = scaling(tuple(sorted(set(args.workers) | {1})), args.patches)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    tmp.replace(out)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
