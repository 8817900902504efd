"""Property-based fuzzing of the FITS readers behind the commands: random
shapes, data types, values and header cards give exit status 0 with a
readable output, or exit status 2 with one error line; never a traceback."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from astropy.io import fits
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from skyml import cli

pytestmark = pytest.mark.filterwarnings("ignore")

CARDS = {
    "CTYPE1": st.sampled_from(["RA---TAN", "GLON-CAR", "RA---XYZ", "FOO", "", "DEC--TAN"]),
    "CTYPE2": st.sampled_from(["DEC--TAN", "GLAT-CAR", "DEC--XYZ", "BAR", "RA---TAN"]),
    "CTYPE3": st.sampled_from(["ENERGY", "FREQ", "STOKES"]),
    "CDELT1": st.sampled_from([0.1, -0.1, 0.0, 1e-30, 1e30, 0.025, -2e-4]),
    "CDELT2": st.sampled_from([0.1, 0.0, -1.0, 0.025, 2e-4]),
    "CRPIX1": st.floats(-1e6, 1e6, allow_nan=False),
    "CRVAL2": st.floats(-200, 200, allow_nan=False),
    "CUNIT1": st.sampled_from(["deg", "m", "rad", "arcsec", "parsec"]),
    "CUNIT2": st.sampled_from(["deg", "m", "", "km/s"]),
    "BUNIT": st.sampled_from(["count", "Jy/beam", "", "erg", "ct"]),
    "PC1_2": st.sampled_from([0.0, 1.0, 1e10]),
    "BLANK": st.sampled_from([0, -1, 99]),
    "BSCALE": st.sampled_from([1.0, 0.0, 1e30, -1.0]),
}


@st.composite
def fits_files(draw):
    ndim = draw(st.integers(1, 3))
    shape = tuple(draw(st.lists(st.integers(1, 48), min_size=ndim, max_size=ndim)))
    kind = draw(st.sampled_from(["uint8", "int16", "int32", "float32", "float64"]))
    fill = draw(st.sampled_from(["zeros", "poisson", "normal", "constant", "nan", "inf", "huge"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    data = {"zeros": np.zeros(shape), "poisson": rng.poisson(3.0, shape), "normal": rng.normal(0, 10, shape),
            "constant": np.full(shape, 7.0), "nan": np.where(rng.random(shape) < 0.1, np.nan, 1.0),
            "inf": np.where(rng.random(shape) < 0.1, np.inf, 2.0), "huge": rng.random(shape) * 1e300}[fill]
    if np.dtype(kind).kind in "ui":
        data = np.nan_to_num(data, nan=0, posinf=0, neginf=0).clip(0, 200)
    data = data.astype(kind)
    cards = draw(st.dictionaries(st.sampled_from(sorted(CARDS)), st.none(), max_size=8))
    header = fits.Header()
    for key in cards:
        header[key] = draw(CARDS[key])
    return data, header


@pytest.fixture(scope="module")
def fuzz_models(tmp_path_factory):
    import keras

    from skyml.cta.models import build_cleaner, save_model
    from skyml.ctao.models import build_unet
    from skyml.lhaaso.models import build_cnn

    keras.utils.set_random_seed(0)
    folder = tmp_path_factory.mktemp("fuzz-models")
    return {"lhaaso-deconvolve": save_model(build_cnn(filters=(2, 2)), folder / "l.keras",
                                            {"task": "lhaaso-deconvolve"}),
            "optical-detect": save_model(build_unet(1, filters=2, depth=2), folder / "o.keras",
                                         {"task": "optical-detect"}),
            "cta-clean": save_model(build_cleaner(), folder / "c.keras",
                                    {"task": "cta-clean", "smooth_sigma_px": 1.0})}


@pytest.mark.parametrize("command", ["lhaaso-deconvolve", "optical-detect", "cta-clean"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=fits_files())
def test_random_fits_never_gives_a_traceback(tmp_path_factory, fuzz_models, capsys, command, case):
    data, header = case
    folder = tmp_path_factory.mktemp("case")
    src = folder / "in.fits"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fits.PrimaryHDU(data, header=header).writeto(src, output_verify="silentfix")
    except Exception:
        assume(False)  # astropy itself refuses to write such a file
    out = folder / ("out.fits" if command != "optical-detect" else "out.ecsv")
    model = fuzz_models[command]
    status = cli.main([command, str(src), "-o", str(out), "--model", str(model)])
    captured = capsys.readouterr()
    if status == 0:
        assert out.is_file() and captured.err.strip() == ""
    else:
        assert status == 2
        err = captured.err.strip()
        assert "\n" not in err and err.startswith(f"skyml {command}: error: "), err
        assert not out.exists()
