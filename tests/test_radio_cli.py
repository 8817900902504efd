"""``skyml radio-counts``: restored image in, counts table out, and its expected errors."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import QTable

from skyml import cli
from skyml.radio import models, pipeline
from skyml.radio import simulate as sim

P = sim.RadioSimParams()
pytestmark = pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")


def metadata(scaler, training_range=None):
    beam = sim.beam_params(P)
    return {"task": "radio-counts", "image_kind": "restored", "profile": "quick", "input_scale_jy": P.noise_rms_jy,
            "target_scaler": scaler.to_dict(), "edges_jy": P.edges_jy.tolist(), "threshold_jy": P.threshold_jy,
            "noise_rms_jy": P.noise_rms_jy, "pixel_arcsec": P.pixel_arcsec, "sub_npix": P.sub_npix,
            "context_npix": 128, "bmaj_deg": beam["bmaj_deg"], "bmin_deg": beam["bmin_deg"], "bpa_deg": beam["bpa_deg"],
            "val_rel_rms": [0.1] * P.n_bins, "training_range": training_range}


@pytest.fixture(scope="module")
def field():
    return sim.simulate_field(np.random.default_rng(11), P, 128, "alpha_s0", 0.0, 1e-5)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory, field):
    """An untrained (small) CNN in the notebook's format."""
    import keras

    from skyml.cta.models import save_model

    keras.utils.set_random_seed(0)
    model = models.build_cnn(P.n_bins, filters=2, dense=8, hist_mean=np.full(models.N_HIST, -3.0),
                             hist_std=np.ones(models.N_HIST))
    scaler = models.TargetScaler.fit(np.concatenate([field["counts"], 2 * field["counts"]]))
    # the training range of three 128-px fields of the simulation's count-law prior
    blocks = [field["restored"]] + [sim.simulate_field(np.random.default_rng(s), P, 128, "alpha_s0", a, s0)["restored"]
                                    for s, a, s0 in ((12, -0.5, 4e-5), (13, 0.25, 6e-6))]
    rng = pipeline.training_range(np.array(blocks), P.noise_rms_jy)
    return save_model(model, tmp_path_factory.mktemp("m") / "radio_counts_cnn.keras", metadata(scaler, rng))


@pytest.fixture(scope="module")
def image_path(tmp_path_factory, field):
    img = np.tile(field["restored"], (1, 2))[:, :160]  # 128 x 160 px: one 128-px context block, 32 columns left out
    return pipeline.write_restored_image(tmp_path_factory.mktemp("i") / "restored.fits", img, P)


def run_error(capsys, argv, *fragments):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("skyml radio-counts: error: "), err
    for fragment in fragments:
        assert fragment in err, err


def test_counts_table(tmp_path, image_path, model_path, capsys):
    out = tmp_path / "counts.ecsv"
    argv = ["radio-counts", str(image_path), "-o", str(out), "--model", str(model_path)]
    assert cli.main(argv) == 0
    assert "from 4 sub-images (0 with NaN pixels skipped)" in capsys.readouterr().out
    table = QTable.read(out)
    assert len(table) == P.n_bins
    assert table.colnames[:5] == ["s_min", "s_max", "s_mid", "x_below_threshold", "counts"]
    np.testing.assert_allclose(table["s_min"].to_value("Jy"), P.edges_jy[:-1])
    # the table is what the library computes on the same image
    import warnings

    from skyml.cta.models import load_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the optimizer state of an untrained model
        model, meta = load_model(model_path)
    image, _, _ = pipeline.read_restored_image(image_path, meta)
    result = pipeline.count_image(model, meta, image)
    np.testing.assert_allclose(table["counts"], result["counts"], rtol=1e-6)
    np.testing.assert_allclose(table["counts_err"], 0.1 * table["counts"], rtol=1e-6)
    area = 4 * P.sub_npix**2 * P.pixel_sr
    width = np.diff(P.edges_jy)
    np.testing.assert_allclose(table["dnds"].to_value("Jy-1 sr-1"), result["counts"] / width / area, rtol=1e-6)
    assert table.meta["n_tiles"] == 4 and table.meta["area_deg2"] == pytest.approx(area / (np.pi / 180) ** 2)
    run_error(capsys, argv, "output file exists", "--overwrite")


def test_nan_sub_images_are_skipped(tmp_path, field, model_path, capsys):
    img = field["restored"].copy()
    img[:10, :10] = np.nan
    path = pipeline.write_restored_image(tmp_path / "nan.fits", img, P)
    assert cli.main(["radio-counts", str(path), "-o", str(tmp_path / "c.ecsv"), "--model", str(model_path)]) == 0
    assert "from 3 sub-images (1 with NaN pixels skipped)" in capsys.readouterr().out
    img[:] = np.nan
    path = pipeline.write_restored_image(tmp_path / "allnan.fits", img, P)
    run_error(capsys, ["radio-counts", str(path), "-o", str(tmp_path / "d.ecsv"), "--model", str(model_path)],
              "NaN")
    assert not (tmp_path / "d.ecsv").exists()


def _edit(src, dst, **cards):
    with fits.open(src) as hdul:
        for key, value in cards.items():
            if value is None:
                del hdul[0].header[key]
            else:
                hdul[0].header[key] = value
        hdul.writeto(dst)
    return dst


def test_bad_inputs(tmp_path, image_path, model_path, field, capsys):
    out = str(tmp_path / "c.ecsv")
    model = ["--model", str(model_path)]

    def err(path, *fragments):
        run_error(capsys, ["radio-counts", str(path), "-o", out] + model, *fragments)

    err(tmp_path / "nope.fits", "file not found")
    text = tmp_path / "notes.fits"
    text.write_text("not a FITS file")
    err(text, "not a FITS file")
    err(_edit(image_path, tmp_path / "bunit.fits", BUNIT="Jy/pixel"), "BUNIT", "Jy/beam")
    err(_edit(image_path, tmp_path / "nobunit.fits", BUNIT=None), "BUNIT")
    err(_edit(image_path, tmp_path / "nobeam.fits", BMAJ=None), "BMAJ")
    beam = sim.beam_params(P)
    err(_edit(image_path, tmp_path / "beam.fits", BMAJ=1.3 * beam["bmaj_deg"]), "beam", "not convolved")
    err(_edit(image_path, tmp_path / "pix.fits", CDELT1=-2 * P.pixel_arcsec / 3600,
              CDELT2=2 * P.pixel_arcsec / 3600), "pixel size", "not resampled")
    small = pipeline.write_restored_image(tmp_path / "small.fits", field["restored"][:32, :32], P)
    err(small, "smaller than one 128×128-px context block")
    fits.PrimaryHDU(np.zeros((64, 64), np.float32)).writeto(tmp_path / "nowcs.fits")
    err(tmp_path / "nowcs.fits", "no WCS")
    assert not (tmp_path / "c.ecsv").exists()


def test_model_problems(tmp_path, image_path, model_path, capsys, monkeypatch):
    out = str(tmp_path / "c.ecsv")
    from skyml import paths

    monkeypatch.setattr(paths, "MODELS", tmp_path / "models")
    run_error(capsys, ["radio-counts", str(image_path), "-o", out], "model not found", "notebook 07", "--only 07")
    other = tmp_path / "other.keras"
    other.write_bytes(model_path.read_bytes())
    other.with_suffix(".json").write_text('{"task": "cta-clean"}')
    run_error(capsys, ["radio-counts", str(image_path), "-o", out, "--model", str(other)],
              "trained for the task 'cta-clean'")
    other.with_suffix(".json").write_text('{"task": "radio-counts", "edges_jy": [1e-7, 1e-6]}')
    run_error(capsys, ["radio-counts", str(image_path), "-o", out, "--model", str(other)],
              "metadata lacks")
    assert not (tmp_path / "c.ecsv").exists()


def test_read_image_signed_values_nan_and_errors(tmp_path, field):
    from skyml import io

    img = field["restored"].astype(np.float32).copy()
    img[:3, :5] = np.nan
    path = pipeline.write_restored_image(tmp_path / "signed.fits", img, P)
    values, wcs, header = io.read_image(path)
    assert values.dtype == np.float64 and values.shape == img.shape
    assert np.array_equal(np.isnan(values), np.isnan(img)) and (values < 0).any()
    np.testing.assert_array_equal(values[3:], img[3:])
    assert wcs.has_celestial and header["BUNIT"] == "Jy/beam"
    finite = pipeline.write_restored_image(tmp_path / "finite.fits", field["restored"], P)
    assert np.array_equal(io.read_image(finite)[0], field["restored"].astype(np.float32))
    with pytest.raises(io.InputError, match="negative counts"):  # the counts-map reader is unchanged
        io.read_counts_map(finite)
    allnan = pipeline.write_restored_image(tmp_path / "allnan.fits", np.full((8, 8), np.nan), P)
    with pytest.raises(io.InputError, match="every pixel"):
        io.read_image(allnan)
    fits.PrimaryHDU(np.zeros((8, 8), np.float32)).writeto(tmp_path / "nowcs.fits")
    with pytest.raises(io.InputError, match="no WCS"):
        io.read_image(tmp_path / "nowcs.fits")
    ints = fits.PrimaryHDU(np.array([[1, -5], [7, -32768]], np.int16))
    ints.header.update({"CTYPE1": "RA---SIN", "CTYPE2": "DEC--SIN", "CDELT1": -0.002, "CDELT2": 0.002})
    ints.header["BLANK"] = -32768
    ints.writeto(tmp_path / "ints.fits")
    values, _, _ = io.read_image(tmp_path / "ints.fits")
    assert values[0, 1] == -5 and np.isnan(values[1, 1])


def test_out_of_distribution_inputs_are_flagged(tmp_path, field, image_path, model_path, capsys):
    """Counts are written for an input outside the training range, with the
    flag column set and a one-line warning; an input inside gets neither."""
    model = ["--model", str(model_path)]
    out = tmp_path / "in.ecsv"
    assert cli.main(["radio-counts", str(image_path), "-o", str(out)] + model) == 0
    assert "warning" not in capsys.readouterr().err
    table = QTable.read(out)
    assert not table["out_of_distribution"].any() and table.meta["out_of_distribution"] is False
    rng = np.random.default_rng(0)
    cases = {"noise10": (field["restored"] + np.sqrt(99.0) * sim.correlated_noise(rng, P, 128), "robust noise"),
             "mean_in": (field["restored"] + 5.0 * P.noise_rms_jy, "pixel histogram")}
    for name, (img, reason) in cases.items():
        path = pipeline.write_restored_image(tmp_path / f"{name}.fits", img, P)
        out = tmp_path / f"{name}.ecsv"
        assert cli.main(["radio-counts", str(path), "-o", str(out)] + model) == 0
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and err.startswith("skyml radio-counts: warning: ") and reason in err, err
        assert "outside the network's training range" in err
        table = QTable.read(out)
        assert len(table) == P.n_bins and table["out_of_distribution"].all() and table.meta["out_of_distribution"]
    # a sidecar without a training range: the flag is unknown (masked), no warning
    bare = tmp_path / "bare.keras"
    bare.write_bytes(model_path.read_bytes())
    import json

    meta = json.loads(model_path.with_suffix(".json").read_text())
    meta.pop("training_range")
    bare.with_suffix(".json").write_text(json.dumps(meta))
    out = tmp_path / "bare.ecsv"
    assert cli.main(["radio-counts", str(tmp_path / "noise10.fits"), "-o", str(out), "--model", str(bare)]) == 0
    assert "warning" not in capsys.readouterr().err
    table = QTable.read(out)
    assert np.ma.getmaskarray(table["out_of_distribution"]).all() and table.meta["out_of_distribution"] is None


@pytest.mark.slow
def test_a_network_trained_with_empty_fields_counts_independent_noise_as_zero(tmp_path, monkeypatch, capsys):
    """Trained as notebook 07 trains it (thinned fields, the answer on empty
    sky in its sidecar), the network's counts of a source-free image from
    another noise model than the simulation's (white noise convolved with the
    Gaussian restoring beam, not the dirty beam) are consistent with zero
    within the stated errors in every bin, and the command says the image is
    noise."""
    from astropy.convolution import Gaussian2DKernel, convolve_fft

    from skyml import paths

    monkeypatch.setattr(paths, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(paths, "MODELS", tmp_path / "models")
    params = sim.RadioSimParams()
    model, meta, _, _ = pipeline.train_model("restored", 16, 128, 8, 3, params, epochs=4, filters=8)
    # one source-free validation field per 8, through the nominal and through a randomised instrument
    assert meta["val_null_rms"] is not None and meta["n_val_null_fields"] == 2 + pipeline.N_NULL_FIELDS
    beam = sim.beam_params(params)
    sigma = [beam[k] * 3600.0 / params.pixel_arcsec / sim.FWHM_PER_SIGMA for k in ("bmaj_deg", "bmin_deg")]
    noise = convolve_fft(np.random.default_rng(21).standard_normal((256, 256)),
                         Gaussian2DKernel(*sigma, theta=np.radians(beam["bpa_deg"])), boundary="wrap")
    image = pipeline.write_restored_image(tmp_path / "noise.fits", noise * params.noise_rms_jy / noise.std(), params)
    out = tmp_path / "counts.ecsv"
    assert cli.main(["radio-counts", str(image), "-o", str(out), "--model",
                     str(tmp_path / "models" / "quick" / pipeline.CNN_FILE)]) == 0
    assert "consistent with source-free noise" in capsys.readouterr().err
    table = QTable.read(out)
    z = np.asarray(table["counts"]) / np.asarray(table["counts_err"])
    assert table.meta["consistent_with_noise"] is True
    assert np.all(np.abs(z) < 2.0), z
