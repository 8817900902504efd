"""The size policy: inputs above the hard limit (pixels × channels, from the
FITS header) are refused before any data are read or a model is loaded, in a
small process; lhaaso-deconvolve tiles large maps and the stitched result
equals the one-pass result."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from skyml import guards, paths

ALL = ["cta-clean", "cta-localise", "fermi-detect", "fermi-catalogue", "lhaaso-deconvolve", "radio-counts",
       "ctao-detect", "optical-detect"]


def sparse_fits(path: Path, shape, bitpix=-32, extra=None) -> Path:
    """A valid FITS image of ``shape`` (numpy order) written as a header and
    a sparse data area: large on paper, nothing on disk."""
    header = fits.Header()
    header["SIMPLE"] = True
    header["BITPIX"] = bitpix
    header["NAXIS"] = len(shape)
    for i, n in enumerate(shape[::-1], start=1):
        header[f"NAXIS{i}"] = n
    for key, value in (extra or {}).items():
        header[key] = value
    text = header.tostring().encode()
    size = len(text) + int(np.prod(shape, dtype=np.int64)) * abs(bitpix) // 8
    size = -(-size // 2880) * 2880
    with open(path, "wb") as f:
        f.write(text)
        f.truncate(size)
    return path


def test_limit_counts_every_channel(tmp_path):
    ok = sparse_fits(tmp_path / "ok.fits", (4096, 4096))
    assert guards.check_size(ok)[0]["NAXIS1"] == 4096
    cube = sparse_fits(tmp_path / "cube.fits", (6, 2048, 2048))  # 25 M values
    with pytest.raises(guards.InputError, match="more than the limit of 16,777,216"):
        guards.check_size(cube)
    with pytest.raises(guards.InputError, match=r"64,000,000 values \(8000×8000\)"):
        guards.check_size(sparse_fits(tmp_path / "big.fits", (8000, 8000)))


def test_not_fits_is_left_to_the_reader(tmp_path):
    text = tmp_path / "t.fits"
    text.write_text("hello")
    assert guards.check_size(text) == []


@pytest.mark.parametrize("command", ALL)
@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs /proc/self/status (Linux)")
def test_oversized_input_refused_from_the_header_in_a_small_process(tmp_path, command):
    big = sparse_fits(tmp_path / "big.fits", (8000, 8000), extra={"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN"})
    script = (
        "import json, sys\n"
        "from skyml import cli\n"
        f"status = cli.main({[command, str(big), '-o', str(tmp_path / 'out.fits')]!r})\n"
        # VmHWM: this process's own peak (ru_maxrss would include the forking parent's)
        "peak = int([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0]) / 1024\n"
        "print(json.dumps({'status': status, 'peak_mb': peak, 'keras': 'keras' in sys.modules}))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env={"PYTHONPATH": str(paths.ROOT / "lib"), "PATH": "/usr/bin:/bin"})
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["status"] == 2
    err = result.stderr.strip()
    assert "\n" not in err and "more than the limit" in err, err
    assert not report["keras"]  # refused before any model was loaded
    assert report["peak_mb"] < 400, report  # the 256 MB of data were never read
    assert not (tmp_path / "out.fits").exists()


@pytest.mark.parametrize("channels", [1, 2])
def test_tiled_deconvolution_equals_one_pass(channels):
    import keras

    from skyml.lhaaso.command import deconvolve_tiled, raw_submodel
    from skyml.lhaaso.models import build_cnn
    from skyml.lhaaso.pipeline import deconvolve

    keras.utils.set_random_seed(3)
    model = build_cnn(channels=channels, filters=(4, 3))
    assert raw_submodel(model)[1] == 4 + 2 + 2
    rng = np.random.default_rng(1)
    counts = rng.poisson(2.0, (97, 75)).astype(float)
    counts[40:44, 30:33] += 200
    sigma = 0.2 if channels == 2 else None
    one_pass = deconvolve(model, counts[None], sigma)[0]
    tiled = deconvolve_tiled(model, counts, sigma, tile=32)
    np.testing.assert_allclose(tiled, one_pass, rtol=2e-5, atol=1e-6 * one_pass.max())
    assert tiled.sum() == pytest.approx(counts.sum(), rel=1e-4)


def test_tiles_without_overlap_would_differ(monkeypatch):
    """The halo is what makes tiling exact: with none, the seams differ."""
    import keras

    from skyml.lhaaso import command
    from skyml.lhaaso.models import build_cnn
    from skyml.lhaaso.pipeline import deconvolve

    keras.utils.set_random_seed(3)
    model = build_cnn(filters=(4, 3))
    counts = np.random.default_rng(2).poisson(2.0, (64, 64)).astype(float)
    sub, _ = command.raw_submodel(model)
    monkeypatch.setattr(command, "raw_submodel", lambda m: (sub, 0))
    seams = command.deconvolve_tiled(model, counts, None, tile=32)
    assert not np.allclose(seams, deconvolve(model, counts[None])[0], rtol=1e-3)
