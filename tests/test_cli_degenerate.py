"""Degenerate inputs are refused with one line instead of giving
plausible-looking nonsense: all-zero, constant, non-finite, absurd scale for
their BUNIT, non-integer values where counts are required; optical images
with an invalid WCS are refused, without one they give pixel positions
(said so); radio-counts counts source-free noise and flags it with a model
trained on empty fields, and refuses it with one trained without them."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import QTable

from skyml import cli, guards, io
from skyml.cta.simulate import map_wcs

pytestmark = pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    import keras

    from skyml.cta.models import LOCALISER_INPUT, build_improved_localiser, save_model
    from skyml.ctao.models import build_unet
    from skyml.lhaaso.models import build_cnn

    keras.utils.set_random_seed(0)
    folder = tmp_path_factory.mktemp("m")
    return {
        "cta-localise": save_model(build_improved_localiser(filters=(4, 4, 4), full_resolution_filters=2),
                                   folder / "loc.keras", {"task": "cta-localise", "input": LOCALISER_INPUT}),
        "lhaaso-deconvolve": save_model(build_cnn(filters=(4, 3)), folder / "lhaaso.keras",
                                        {"task": "lhaaso-deconvolve"}),
        "optical-detect": save_model(build_unet(1, filters=2, depth=2), folder / "opt.keras",
                                     {"task": "optical-detect"}),
    }


def cta_map(path, data, **header):
    return io.write_fits_map(path, np.asarray(data, float), map_wcs(83.63, 22.01), header or None)


@pytest.mark.parametrize("name, data, header, fragment", [
    ("zero", np.zeros((200, 200)), {}, "all pixels are zero"),
    ("constant", np.full((200, 200), 3.0), {}, "every value of the counts map is 3"),
    ("fraction", np.random.default_rng(0).poisson(2.0, (200, 200)) + 0.5, {}, "non-integer values"),
    ("huge", np.random.default_rng(0).poisson(2.0, (200, 200)) * 1e30, {}, "counts in a pixel"),
    ("jansky", np.random.default_rng(0).poisson(2.0, (200, 200)), {"BUNIT": "Jy/beam"}, "BUNIT is 'Jy/beam'"),
])
def test_cta_counts_maps(tmp_path, models, cli_error, name, data, header, fragment):
    src = cta_map(tmp_path / f"{name}.fits", data, **header)
    cli_error(["cta-localise", str(src), "-o", str(tmp_path / "p.ecsv"), "--model", str(models["cta-localise"])],
              fragment)
    assert not (tmp_path / "p.ecsv").exists()


def lhaaso_map(path, data):
    return io.write_fits_map(path, np.asarray(data, float), map_wcs(83.63, 22.01, data.shape[0], 0.1))


def test_lhaaso_constant_refused_fractional_accepted(tmp_path, models, cli_error, capsys):
    model = ["--model", str(models["lhaaso-deconvolve"])]
    cli_error(["lhaaso-deconvolve", str(lhaaso_map(tmp_path / "c.fits", np.ones((32, 32)))), "-o",
               str(tmp_path / "o.fits")] + model, "constant counts map has no sources")
    rng = np.random.default_rng(1)
    excess = rng.poisson(3.0, (32, 32)) + rng.uniform(0, 1, (32, 32))  # background-subtracted: not whole
    assert cli.main(["lhaaso-deconvolve", str(lhaaso_map(tmp_path / "x.fits", excess)), "-o",
                     str(tmp_path / "o.fits")] + model) == 0


def optical(path, data, **cards):
    header = fits.Header()
    for key, value in cards.items():
        header[key] = value
    fits.PrimaryHDU(np.asarray(data, np.float32), header=header).writeto(path)
    return path


GOOD_WCS = {"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 10.0, "CRVAL2": -30.0, "CRPIX1": 32.0,
            "CRPIX2": 32.0, "CDELT1": -1e-4, "CDELT2": 1e-4, "CUNIT1": "deg", "CUNIT2": "deg"}


@pytest.mark.parametrize("change, fragment", [
    ({"CTYPE1": "RA---XYZ", "CTYPE2": "DEC--XYZ"}, "invalid WCS"),
    ({"CDELT1": 0.0, "CDELT2": 0.0}, "invalid WCS"),
    ({"CUNIT1": "m", "CUNIT2": "m"}, "invalid WCS"),
    ({"CTYPE1": "FOO", "CTYPE2": "BAR"}, "invalid WCS"),
])
def test_optical_invalid_wcs_is_one_line(tmp_path, models, cli_error, change, fragment):
    img = np.random.default_rng(0).normal(100, 5, (64, 64))
    src = optical(tmp_path / "i.fits", img, **{**GOOD_WCS, **change})
    cli_error(["optical-detect", str(src), "-o", str(tmp_path / "s.ecsv"), "--model", str(models["optical-detect"])],
              fragment)


def test_optical_without_wcs_says_so(tmp_path, models, capsys, cli_error):
    img = np.random.default_rng(0).normal(100, 5, (64, 64))
    out = tmp_path / "s.ecsv"
    assert cli.main(["optical-detect", str(optical(tmp_path / "i.fits", img)), "-o", str(out), "--model",
                     str(models["optical-detect"])]) == 0
    assert "no WCS in the image: pixel positions only" in capsys.readouterr().out
    assert QTable.read(out).meta["wcs"] == "none"
    cli_error(["optical-detect", str(optical(tmp_path / "k.fits", np.full((64, 64), 7.0), **GOOD_WCS)), "-o",
               str(tmp_path / "k.ecsv"), "--model", str(models["optical-detect"])], "constant image")


def test_shared_value_checks():
    path = "x.fits"
    with pytest.raises(io.InputError, match="NaN or infinite"):
        guards.check_values(path, np.array([1.0, np.inf]), counts=False, allow_nan=True)
    with pytest.raises(io.InputError, match="NaN or infinite"):
        guards.check_values(path, np.full(4, np.nan), counts=False, allow_nan=True)
    guards.check_values(path, np.array([1.0, np.nan, 2.0]), counts=False, allow_nan=True)
    with pytest.raises(io.InputError, match="negative"):
        guards.check_values(path, np.array([1.0, -1.0]), counts=True)
    with pytest.raises(io.InputError, match="times the"):
        guards.check_scale(path, np.random.default_rng(0).normal(0, 1e25, 1000), 2e-5, "Jy/beam")
    with pytest.raises(io.InputError, match="no noise"):
        guards.check_scale(path, np.zeros(1000), 2e-5, "Jy/beam")


def test_noise_detector():
    rng = np.random.default_rng(4)
    noise = rng.normal(0, 2e-5, (512, 512))
    assert guards.looks_like_pure_noise(noise)[0]
    sky = noise.copy()
    sky[rng.integers(0, 512, 300), rng.integers(0, 512, 300)] += rng.pareto(1.5, 300) * 2e-5 + 2e-5
    assert not guards.looks_like_pure_noise(sky)[0]


# radio-counts: the small untrained CNN of test_radio_cli, on images of its beam and pixel size
@pytest.fixture(scope="module")
def radio(tmp_path_factory):
    import keras

    from skyml.cta.models import save_model
    from skyml.radio import models as rmodels
    from skyml.radio import pipeline
    from skyml.radio import simulate as sim

    P = sim.RadioSimParams()
    field = sim.simulate_field(np.random.default_rng(11), P, 128, "alpha_s0", 0.0, 1e-5)
    keras.utils.set_random_seed(0)
    model = rmodels.build_cnn(P.n_bins, filters=2, dense=8, hist_mean=np.full(rmodels.N_HIST, -3.0),
                              hist_std=np.ones(rmodels.N_HIST))
    scaler = rmodels.TargetScaler.fit(np.concatenate([field["counts"], 2 * field["counts"]]))
    beam = sim.beam_params(P)
    meta = {"task": "radio-counts", "image_kind": "restored", "input_scale_jy": P.noise_rms_jy,
            "target_scaler": scaler.to_dict(), "edges_jy": P.edges_jy.tolist(), "threshold_jy": P.threshold_jy,
            "noise_rms_jy": P.noise_rms_jy, "pixel_arcsec": P.pixel_arcsec, "sub_npix": P.sub_npix,
            "context_npix": 128, "bmaj_deg": beam["bmaj_deg"], "bmin_deg": beam["bmin_deg"],
            "bpa_deg": beam["bpa_deg"], "val_rel_rms": [0.1] * P.n_bins}
    folder = tmp_path_factory.mktemp("r")
    path = save_model(model, folder / "radio.keras", meta)

    def image(name, data):
        return pipeline.write_restored_image(folder / f"{name}.fits", data, P)

    return path, field, image, P


@pytest.mark.parametrize("kind, fragment", [
    ("zero", "all zero"), ("scaled", "times the"), ("noise", "consistent with source-free noise"),
])
def test_radio_degenerate_images(tmp_path, radio, cli_error, kind, fragment):
    model, field, image, P = radio
    rng = np.random.default_rng(5)
    data = {"zero": np.zeros((128, 128)), "scaled": field["restored"] * 1e30,
            "noise": rng.normal(0, P.noise_rms_jy, (128, 128))}[kind]
    cli_error(["radio-counts", str(image(kind, data)), "-o", str(tmp_path / "c.ecsv"), "--model", str(model)],
              fragment)
    assert not (tmp_path / "c.ecsv").exists()


def test_radio_noise_image_is_counted_and_flagged_by_a_model_trained_with_empty_fields(tmp_path, radio, capsys):
    """A model whose sidecar records its answer on source-free fields counts a
    noise image, says so on stderr and in the table, and states errors that
    hold that answer."""
    import json
    import shutil

    from skyml.radio import pipeline

    model, field, image, P = radio
    noisy = tmp_path / "with_null.keras"
    shutil.copy(model, noisy)
    meta = json.loads(model.with_suffix(".json").read_text())
    meta["val_null_rms"] = [0.5] * P.n_bins
    noisy.with_suffix(".json").write_text(json.dumps(meta))
    data = np.random.default_rng(5).normal(0, P.noise_rms_jy, (128, 128))
    out = tmp_path / "c.ecsv"
    assert cli.main(["radio-counts", str(image("noise2", data)), "-o", str(out), "--model", str(noisy)]) == 0
    err = capsys.readouterr().err
    assert "consistent with source-free noise" in err and "warning" in err
    table = QTable.read(out)
    assert table.meta["consistent_with_noise"] is True and bool(np.all(table["consistent_with_noise"]))
    n_sub = (128 // P.sub_npix) ** 2
    expected = pipeline.counts_error(np.asarray(table["counts"]), n_sub, meta)
    np.testing.assert_allclose(np.asarray(table["counts_err"]), expected, rtol=1e-6)
    assert np.all(np.asarray(table["counts_err"]) >= n_sub * 0.5 * (1 - 1e-6))


def test_radio_field_with_sources_is_counted(tmp_path, radio, capsys):
    model, field, image, _ = radio
    out = tmp_path / "c.ecsv"
    assert cli.main(["radio-counts", str(image("field", field["restored"])), "-o", str(out), "--model",
                     str(model)]) == 0
    assert len(QTable.read(out)) > 0
