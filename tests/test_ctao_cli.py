"""``skyml ctao-detect`` and ``skyml optical-detect``: source lists out, and their expected errors."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import QTable

from skyml import cli
from skyml.ctao import simulate
from skyml.ctao.pipeline import write_counts_cube
from skyml.ctao.simulate import SurveyParams

P = SurveyParams(npix=64)
pytestmark = pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Untrained (small) networks in the notebook's format."""
    import keras

    from skyml.cta.models import save_model
    from skyml.ctao.models import build_unet

    keras.utils.set_random_seed(0)
    folder = tmp_path_factory.mktemp("m")
    ctao = save_model(build_unet(3, filters=2, depth=2), folder / "ctao_unet.keras",
                      {"task": "ctao-detect", "sim_params": P.to_dict(), "scaling": "log", "profile": "quick"})
    optical = save_model(build_unet(1, filters=2, depth=2), folder / "optical_unet.keras",
                         {"task": "optical-detect", "profile": "quick"})
    optical_t = save_model(build_unet(1, filters=2, depth=2), folder / "optical_unet_t.keras",
                           {"task": "optical-detect", "profile": "quick", "threshold": 0.9})
    return ctao, optical, optical_t


@pytest.fixture(scope="module")
def cube_path(tmp_path_factory):
    d = simulate.simulate_patches(1, 3, P, "test")
    return write_counts_cube(tmp_path_factory.mktemp("c") / "cube.fits", d["counts"][0], P)


def run_error(capsys, argv, *fragments):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith(f"skyml {argv[0]}: error: "), err
    for fragment in fragments:
        assert fragment in err, err


def test_ctao_detect_writes_a_source_list(tmp_path, cube_path, models, capsys):
    out = tmp_path / "sources.ecsv"
    argv = ["ctao-detect", str(cube_path), "-o", str(out), "--model", str(models[0]), "--threshold", "0.3"]
    assert cli.main(argv) == 0
    assert "sources (input: 64×64 px × 3 energy bins" in capsys.readouterr().out
    table = QTable.read(out)
    assert table.colnames == ["glon", "glat", "ra", "dec", "probability", "x_pix", "y_pix", "out_of_distribution"]
    assert np.all(table["probability"] >= 0.3)
    if len(table):
        assert np.all(np.abs(table["glon"].value - P.centre_glon) < 0.7)
    run_error(capsys, argv, "output file exists", "--overwrite")


def test_ctao_detect_dihedral_readout(tmp_path, cube_path, models, capsys):
    """--dihedral: blobs of the mean probability over the 8 orientations; --no-dihedral: of the cube as given;
    by default notebook 06's choice for the published U-Net, recorded in the table."""
    import keras

    from skyml import results
    from skyml.ctao import command, detect
    from skyml.ctao.models import predict
    from skyml.ctao.pipeline import read_counts_cube
    from skyml.ctao.simulate import network_input
    from skyml.training import dihedral_mean

    assert command.UNET_DIHEDRAL == bool(results.read_metrics("06_ctao_survey_detection", "full")["readout_dihedral_unet_log"])
    model = keras.saving.load_model(models[0], compile=False, safe_mode=True)
    counts, _, _ = read_counts_cube(cube_path, P.binsz_deg)
    x = network_input(counts[None], P, "log")
    probs = {True: dihedral_mean(lambda xt: predict(model, xt, batch_size=1), x, axes=(1, 2))[0, ..., 0],
             False: predict(model, x, batch_size=1)[0, ..., 0]}
    assert np.max(np.abs(probs[True] - probs[False])) > 1e-4
    threshold = float(np.quantile(probs[False], 0.99))
    for flag, dihedral in (("--dihedral", True), ("--no-dihedral", False), (None, command.UNET_DIHEDRAL)):
        out = tmp_path / f"{flag}.ecsv"
        argv = ["ctao-detect", str(cube_path), "-o", str(out), "--model", str(models[0]), "--threshold", str(threshold)]
        assert cli.main(argv + ([flag] if flag else [])) == 0
        capsys.readouterr()
        table = QTable.read(out)
        assert table.meta["dihedral"] is dihedral
        x_pix, y_pix, score = detect.log_positions(probs[dihedral], threshold=threshold)
        np.testing.assert_allclose(np.sort(np.asarray(table["probability"])), np.sort(score), rtol=1e-5)
        np.testing.assert_allclose(np.sort(np.asarray(table["x_pix"])), np.sort(x_pix), atol=1e-6)


def test_ctao_detect_reads_a_vote_field_through_its_centre_heat(tmp_path, cube_path, capsys):
    """A centre-direction network (three output channels) is read through the peaks of its centre heat map, at
    the randomised network's threshold by default, as given (no --dihedral), with its local-background input."""
    import keras

    from skyml.cta.models import save_model
    from skyml.ctao import command, detect
    from skyml.ctao.models import build_cedirnet
    from skyml.ctao.pipeline import predict, read_counts_cube

    keras.utils.set_random_seed(1)
    path = save_model(build_cedirnet(3, filters=2, depth=2), tmp_path / "cedirnet_dr.keras",
                      {"task": "ctao-detect", "sim_params": P.to_dict(), "scaling": "log", "normalise": "local",
                       "profile": "quick"})
    model = keras.saving.load_model(path, compile=False, safe_mode=True)
    counts, _, _ = read_counts_cube(cube_path, P.binsz_deg)
    field = predict(model, counts[None], P, "log", batch_size=1, normalise="local")[0][0]
    heat = detect.centre_heatmap(field)
    threshold = float(np.quantile(heat, 0.995))
    for given in (None, threshold):
        out = tmp_path / f"{given}.ecsv"
        argv = ["ctao-detect", str(cube_path), "-o", str(out), "--model", str(path), "--network", "randomised"]
        assert cli.main(argv + (["--threshold", str(given)] if given else [])) == 0
        capsys.readouterr()
        table = QTable.read(out)
        thr = command.RANDOMISED_THRESHOLD if given is None else given
        assert table.meta["thresh"] == thr and table.meta["dihedral"] is False
        assert "heat" in table.colnames and "probability" not in table.colnames
        _, _, score = detect.cedirnet_positions(field, threshold=thr)
        np.testing.assert_allclose(np.sort(np.asarray(table["heat"])), np.sort(score), rtol=1e-5)
    assert len(score) > 0  # the run at the given threshold found peaks
    run_error(capsys, ["ctao-detect", str(cube_path), "-o", str(tmp_path / "d.ecsv"), "--model", str(path),
                       "--dihedral"], "--dihedral: only for a U-Net")
    assert not (tmp_path / "d.ecsv").exists()


def test_ctao_detect_randomised_network_is_notebook_06s_choice(tmp_path, cube_path, capsys):
    """--network randomised loads the randomised network notebook 06 chose on validation, and its default
    threshold is that notebook's validation choice for it."""
    from skyml import results
    from skyml.ctao import command

    metrics = results.read_metrics("06_ctao_survey_detection", "full")
    assert metrics["randomised_network_is_cedirnet"] == 1.0 and command.CTAO_RANDOMISED.file_name == "ctao_cedirnet_dr.keras"
    assert command.RANDOMISED_THRESHOLD == pytest.approx(metrics["threshold_cedirnet_dr"], rel=1e-3)
    out = tmp_path / "s.ecsv"
    assert cli.main(["ctao-detect", str(cube_path), "-o", str(out), "--profile", "full", "--network", "randomised"]) == 0
    capsys.readouterr()
    table = QTable.read(out)
    assert table.meta["model"].endswith("ctao_cedirnet_dr.keras") and "heat" in table.colnames


def test_ctao_detect_bad_inputs(tmp_path, cube_path, models, capsys):
    out = str(tmp_path / "s.ecsv")
    model = ["--model", str(models[0])]
    run_error(capsys, ["ctao-detect", str(tmp_path / "nope.fits"), "-o", out] + model, "file not found")
    text = tmp_path / "notes.fits"
    text.write_text("not a FITS file")
    run_error(capsys, ["ctao-detect", str(text), "-o", out] + model, "not a readable counts cube")
    write_counts_cube(tmp_path / "coarse.fits", np.zeros((3, 64, 64)), SurveyParams(npix=64, binsz_deg=0.05))
    run_error(capsys, ["ctao-detect", str(tmp_path / "coarse.fits"), "-o", out] + model, "pixel size")
    write_counts_cube(tmp_path / "neg.fits", -np.ones((3, 64, 64)), P)
    run_error(capsys, ["ctao-detect", str(tmp_path / "neg.fits"), "-o", out] + model, "non-negative integers")
    nan = np.zeros((3, 64, 64))
    nan[0, 3, 3] = np.nan
    write_counts_cube(tmp_path / "nan.fits", nan, P)
    run_error(capsys, ["ctao-detect", str(tmp_path / "nan.fits"), "-o", out] + model, "NaN")
    write_counts_cube(tmp_path / "tiny.fits", np.zeros((3, 8, 8)), P)
    run_error(capsys, ["ctao-detect", str(tmp_path / "tiny.fits"), "-o", out] + model, "ny, nx >= 16")

    import astropy.units as u
    from astropy.coordinates import SkyCoord
    from gammapy.maps import Map, MapAxis, WcsGeom

    axis = MapAxis.from_energy_bounds(0.1, 100, 3, unit="TeV", name="energy")
    geom = WcsGeom.create(skydir=SkyCoord(15, 0, unit="deg", frame="galactic"), npix=32, binsz=0.02,
                          frame="galactic", axes=[axis])
    Map.from_geom(geom).write(tmp_path / "ebins.fits")
    run_error(capsys, ["ctao-detect", str(tmp_path / "ebins.fits"), "-o", out] + model, "energy bins")
    Map.from_geom(geom.to_image()).write(tmp_path / "image.fits")
    run_error(capsys, ["ctao-detect", str(tmp_path / "image.fits"), "-o", out] + model, "no 'energy' axis")
    run_error(capsys, ["ctao-detect", str(cube_path), "-o", out, "--threshold", "1.5"] + model, "--threshold")
    run_error(capsys, ["ctao-detect", str(cube_path), "-o", out, "--model", str(models[1])],
              "trained for the task 'optical-detect'")
    assert not (tmp_path / "s.ecsv").exists()
    del u


def test_ctao_detect_missing_model(tmp_path, cube_path, capsys, monkeypatch):
    from skyml import paths

    monkeypatch.setattr(paths, "MODELS", tmp_path / "models")
    run_error(capsys, ["ctao-detect", str(cube_path), "-o", str(tmp_path / "s.ecsv")], "model not found",
              "notebook 06", "--only 06")
    # the randomised CeDiRNet comes from the full profile's run only: the quick profile is told to use it
    run_error(capsys, ["ctao-detect", str(cube_path), "-o", str(tmp_path / "s.ecsv"), "--network", "randomised"],
              "model not found", "in the full profile only: use --profile full")
    run_error(capsys, ["ctao-detect", str(cube_path), "-o", str(tmp_path / "s.ecsv"), "--network", "randomised",
                       "--profile", "full"], "model not found", "python run_all.py --profile full --only 06")
    assert not (tmp_path / "s.ecsv").exists()


def _image(path, data, with_wcs=True):
    header = fits.Header()
    if with_wcs:
        from astropy.wcs import WCS

        w = WCS(naxis=2)
        w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        w.wcs.crval = [201.7, -47.5]
        w.wcs.crpix = [32, 32]
        w.wcs.cdelt = [-0.56 / 3600, 0.56 / 3600]
        header = w.to_header()
    fits.PrimaryHDU(np.asarray(data, np.float32), header=header).writeto(path)
    return path


def test_optical_detect(tmp_path, models, capsys):
    from skyml.optical import simulate as opt

    p = opt.OpticalParams(npix=64, n_crowded=20)
    img, _, _ = opt.simulate_tile(np.random.default_rng(0), "crowded", p)
    src = _image(tmp_path / "img.fits", img)
    out = tmp_path / "stars.ecsv"
    assert cli.main(["optical-detect", str(src), "-o", str(out), "--model", str(models[1]), "--threshold",
                     "0.2"]) == 0
    assert "sources (64×64 px)" in capsys.readouterr().out
    table = QTable.read(out)
    assert table.colnames[:3] == ["x_pix", "y_pix", "probability"] and "ra" in table.colnames
    assert table.meta["thresh"] == pytest.approx(0.2)
    # without --threshold: the model's own (validation-chosen) threshold, 0.3 if it has none
    out2 = tmp_path / "stars2.ecsv"
    assert cli.main(["optical-detect", str(src), "-o", str(out2), "--model", str(models[2])]) == 0
    assert QTable.read(out2).meta["thresh"] == pytest.approx(0.9)
    assert cli.main(["optical-detect", str(src), "-o", str(tmp_path / "s3.ecsv"), "--model", str(models[1])]) == 0
    assert QTable.read(tmp_path / "s3.ecsv").meta["thresh"] == pytest.approx(0.3)
    bad = img.copy()
    bad[5, 5] = np.nan
    e = str(tmp_path / "e.ecsv")
    model = ["--model", str(models[1])]
    run_error(capsys, ["optical-detect", str(_image(tmp_path / "nan.fits", bad)), "-o", e] + model, "NaN")
    run_error(capsys, ["optical-detect", str(_image(tmp_path / "small.fits", img[:16, :16])), "-o", e] + model,
              "too small")
    run_error(capsys, ["optical-detect", str(_image(tmp_path / "cube.fits", np.zeros((2, 64, 64)))), "-o", e]
              + model, "not 2D")
    run_error(capsys, ["optical-detect", str(tmp_path / "missing.fits"), "-o", e] + model, "not found")
    text = tmp_path / "t.fits"
    text.write_text("hello")
    run_error(capsys, ["optical-detect", str(text), "-o", e] + model, "not a readable FITS image")
    run_error(capsys, ["optical-detect", str(src), "-o", e, "--model", str(models[0])],
              "trained for the task 'ctao-detect'")
    assert not (tmp_path / "e.ecsv").exists()


# --------------------------------------------------------------------------- inputs outside the training range
def _with_range(src, folder, name, training_range):
    """A copy of the model ``src`` whose sidecar records ``training_range``."""
    import json

    target = folder / name
    target.write_bytes(src.read_bytes())
    meta = json.loads(src.with_suffix(".json").read_text())
    meta["training_range"] = training_range
    target.with_suffix(".json").write_text(json.dumps(meta))
    return target


def _flag_run(capsys, argv):
    """(table, stderr) of a successful run."""
    assert cli.main(argv) == 0
    err = capsys.readouterr().err.strip()
    return QTable.read(argv[argv.index("-o") + 1]), err


def test_ctao_detect_flags_a_cube_outside_the_training_range(tmp_path, cube_path, models, capsys):
    """An in-range cube: flag false, no warning; five times the background:
    flag true, a one-line warning naming the bin, and still a source list; a
    model without a recorded range: a masked flag, no warning."""
    from skyml.ctao import pipeline

    rng = pipeline.training_range(simulate.simulate_patches(2, 0, P, "train")["counts"])
    model = _with_range(models[0], tmp_path, "ranged.keras", rng)
    # read as given: the untrained network's mean over the 8 orientations has no blob above 0.05
    common = ["--model", str(model), "--threshold", "0.05", "--no-dihedral"]
    table, err = _flag_run(capsys, ["ctao-detect", str(cube_path), "-o", str(tmp_path / "in.ecsv")] + common)
    assert "warning" not in err and table.meta["out_of_distribution"] is False and table.meta["ood_reason"] == ""
    assert len(table) and not table["out_of_distribution"].any()

    background = simulate.irf_maps(P)["background"].astype(float)
    bright = np.random.default_rng(4).poisson(5 * background)
    path = write_counts_cube(tmp_path / "bright.fits", bright, P)
    table, err = _flag_run(capsys, ["ctao-detect", str(path), "-o", str(tmp_path / "bright.ecsv")] + common)
    assert "\n" not in err and err.startswith(f"skyml ctao-detect: warning: {path}: outside the network's training "
                                              "range (background "), err
    assert "0.07-0.788 TeV bin" in err and "extrapolation" in err
    assert table.meta["out_of_distribution"] is True and "0.07-0.788 TeV" in table.meta["ood_reason"]
    assert len(table) and table["out_of_distribution"].all()
    assert table.colnames[:7] == ["glon", "glat", "ra", "dec", "probability", "x_pix", "y_pix"]
    assert np.all((table["probability"] >= 0.05) & (table["probability"] <= 1))
    assert table.meta["background_counts_per_px"][0] > 4 * background.mean(axis=(1, 2))[0]

    table, err = _flag_run(capsys, ["ctao-detect", str(path), "-o", str(tmp_path / "bare.ecsv"), "--model",
                                    str(models[0]), "--threshold", "0.05", "--no-dihedral"])
    assert "warning" not in err and table.meta["out_of_distribution"] is None
    assert len(table) and np.ma.getmaskarray(table["out_of_distribution"]).all()


def test_optical_detect_flags_an_image_outside_the_training_range(tmp_path, models, capsys):
    """An in-range image: flag false, no warning; a sky level far above the
    training range and ten times the noise: flag true (both named), a
    one-line warning and still a source list; no recorded range: masked."""
    import keras

    from skyml.cta.models import save_model
    from skyml.ctao.models import build_unet
    from skyml.optical import pipeline as opt_pipeline
    from skyml.optical import simulate as opt

    # an untrained U-Net's probabilities hardly vary (no blobs): its output layer's weights are scaled
    # up, so that the map has structure and the source lists rows
    keras.utils.set_random_seed(0)
    unet = build_unet(1, filters=2, depth=2)
    weights = unet.layers[-1].get_weights()
    unet.layers[-1].set_weights([weights[0] * 100.0] + weights[1:])
    bare = save_model(unet, tmp_path / "bare.keras", {"task": "optical-detect", "profile": "quick"})
    p = opt.OpticalParams(npix=64, n_crowded=20, n_cluster=8)
    tiles = [opt.simulate_tile(np.random.default_rng(10 + i), d, p)[0] for i in range(4) for d in opt.DENSITIES]
    model = _with_range(bare, tmp_path, "ranged.keras", opt_pipeline.training_range(np.stack(tiles)))
    img, _, _ = opt.simulate_tile(np.random.default_rng(0), "crowded", p)
    common = ["--model", str(model), "--threshold", "0.05"]
    src = _image(tmp_path / "img.fits", img)
    table, err = _flag_run(capsys, ["optical-detect", str(src), "-o", str(tmp_path / "in.ecsv")] + common)
    assert "warning" not in err and table.meta["out_of_distribution"] is False and table.meta["ood_reason"] == ""
    assert len(table) and not table["out_of_distribution"].any()

    odd = _image(tmp_path / "odd.fits", 10.0 * (img - p.sky_e) + 3000.0)
    table, err = _flag_run(capsys, ["optical-detect", str(odd), "-o", str(tmp_path / "odd.ecsv")] + common)
    assert "\n" not in err and err.startswith(f"skyml optical-detect: warning: {odd}: outside the network's "
                                              "training range (sky level "), err
    assert "robust noise" in err and "extrapolation" in err
    assert table.meta["out_of_distribution"] is True and "robust noise" in table.meta["ood_reason"]
    assert len(table) and table["out_of_distribution"].all() and "ra" in table.colnames
    assert table.meta["sky"] == pytest.approx(3000.0, abs=100.0)

    table, err = _flag_run(capsys, ["optical-detect", str(odd), "-o", str(tmp_path / "bare.ecsv"), "--model",
                                    str(bare), "--threshold", "0.05"])
    assert "warning" not in err and table.meta["out_of_distribution"] is None
    assert len(table) and np.ma.getmaskarray(table["out_of_distribution"]).all()
