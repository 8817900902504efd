"""Training and prediction speed of the CTA models on the active Keras
backend, and the memory of the ``skyml`` commands on a large input.

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
"""

from __future__ import annotations

import argparse
import json
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m skyml.benchmark", description=__doc__.splitlines()[0])
    parser.add_argument("--memory", action="store_true", help="peak memory of every command on a large input")
    parser.add_argument("--side", type=int, default=8000, help="input side in pixels for --memory (default 8000)")
    parser.add_argument("--profile", choices=("quick", "full"), default="full",
                        help="models the commands would use (default: full)")
    args = parser.parse_args(argv)
    print(json.dumps(memory(args.side, args.profile) if args.memory else run()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
