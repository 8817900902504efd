"""The ``skyml`` command line: help, the subcommand registry, the good paths
of cta-clean and cta-localise with small untrained models saved here, and
every expected error (exit status 2, one line on stderr, no output file)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import QTable

from skyml import cli, paths
from skyml.cta.simulate import map_wcs, simulate_dl3
from skyml.io import read_counts_map, read_cta_input, write_fits_map

PNT_RA, PNT_DEC = 83.63, 22.01
SMOOTH_SIGMA_PX = 1.5

# the models saved here are compiled but never trained: no optimizer state to restore
pytestmark = pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Untrained models in the notebooks' format: (cleaner path, localiser path)."""
    from skyml.cta.models import LOCALISER_INPUT, build_cleaner, build_improved_localiser, save_model

    folder = tmp_path_factory.mktemp("models")
    cleaner = save_model(build_cleaner(), folder / "cta_cleaner.keras",
                         {"task": "cta-clean", "smooth_sigma_px": SMOOTH_SIGMA_PX, "profile": "quick"})
    localiser = save_model(
        build_improved_localiser(filters=(4, 4, 4), full_resolution_filters=2),
        folder / "cta_localiser.keras",
        {"task": "cta-localise", "input": LOCALISER_INPUT, "profile": "quick"},
    )
    return cleaner, localiser


@pytest.fixture(scope="module")
def dl3_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("dl3") / "obs.fits"
    simulate_dl3(11, pnt=SkyCoord(PNT_RA, PNT_DEC, unit="deg"), flux_crab=0.5).write(path)
    return path


@pytest.fixture
def counts_path(tmp_path):
    """A 200×200 counts map at 0.025°/px: flat background and one bright blob."""
    rng = np.random.default_rng(5)
    y, x = np.mgrid[:200, :200]
    mu = 0.5 + 40 * np.exp(-((x - 140) ** 2 + (y - 60) ** 2) / (2 * 3.0**2))
    return write_fits_map(tmp_path / "counts.fits", rng.poisson(mu).astype(float),
                          map_wcs(PNT_RA, PNT_DEC))


def run_error(capsys, argv, command, *fragments):
    """Run ``main(argv)``; assert exit 2 and one stderr line with the fragments."""
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    assert err.startswith(f"skyml {command}: error: "), err
    for fragment in fragments:
        assert fragment in err, err
    return err


# ---------------------------------------------------------------------------
# Help and registry
# ---------------------------------------------------------------------------


def test_help_lists_exactly_the_registered_commands(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert set(cli.COMMANDS) == {"cta-clean", "cta-localise", "fermi-detect", "fermi-catalogue", "ctao-detect",
                                 "optical-detect", "radio-counts", "lhaaso-deconvolve"}
    for name in cli.COMMANDS:
        assert name in out


def test_console_script_help():
    script = Path(sys.executable).parent / "skyml"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "cta-clean" in result.stdout and "cta-localise" in result.stdout


def test_usage_errors_exit_nonzero(capsys):
    assert cli.main([]) == 2
    assert cli.main(["no-such-command"]) == 2
    assert cli.main(["cta-clean", "in.fits"]) == 2  # -o is required
    assert cli.main(["cta-clean", "in.fits", "-o", "x.fits", "--profile", "huge"]) == 2
    assert "usage: skyml" in capsys.readouterr().err


def test_a_subcommand_is_one_registered_function(monkeypatch, capsys):
    monkeypatch.setattr(cli, "COMMANDS", dict(cli.COMMANDS))

    @cli.subcommand("demo-echo", help="print the input name",
                    arguments=(cli.arg("name", help="what to print"),))
    def demo_echo(args):
        """Print the given name."""
        return f"hello {args.name}"

    assert cli.main(["demo-echo", "Crab"]) == 0
    assert capsys.readouterr().out.strip() == "hello Crab"
    assert cli.main(["--help"]) == 0
    assert "demo-echo" in capsys.readouterr().out
    with pytest.raises(ValueError, match="registered twice"):
        cli.subcommand("demo-echo", help="again", arguments=())(demo_echo)


# ---------------------------------------------------------------------------
# cta-clean
# ---------------------------------------------------------------------------


def test_cta_clean_counts_map(tmp_path, counts_path, models, capsys):
    from skyml.cta.models import as_images, load_model, smooth, stretch

    out = tmp_path / "cleaned.fits"
    assert cli.main(["cta-clean", str(counts_path), "-o", str(out), "--model", str(models[0])]) == 0
    assert f"wrote {out}" in capsys.readouterr().out

    cleaned, wcs = read_counts_map(out, expected_shape=(200, 200), expected_binsz_deg=0.025)
    counts, wcs_in = read_counts_map(counts_path)
    assert wcs.to_header_string() == wcs_in.to_header_string()
    # the pipeline: smooth, stretch, predict, times the stretch scale
    model, _ = load_model(models[0])
    scaled, scale = stretch(smooth(counts[None], SMOOTH_SIGMA_PX))
    expected = model.predict(as_images(scaled), verbose=0)[0, ..., 0] * scale[0]
    np.testing.assert_allclose(cleaned, expected, rtol=1e-5, atol=1e-6 * scale[0])
    assert 0 <= cleaned.min() and cleaned.max() <= scale[0]

    header = fits.getheader(out)
    assert header["MODEL"] == str(models[0])
    assert header["PROFILE"] == "quick"
    assert header["SMOOTHPX"] == SMOOTH_SIGMA_PX
    assert header["INPUT"] == "counts.fits"
    assert header["BUNIT"] == "count"


def test_cta_clean_dl3_and_overwrite(tmp_path, dl3_path, models, capsys):
    out = tmp_path / "cleaned.fits"
    argv = ["cta-clean", str(dl3_path), "-o", str(out), "--model", str(models[0])]
    assert cli.main(argv) == 0
    cleaned, wcs = read_counts_map(out, (200, 200), 0.025)
    centre = wcs.pixel_to_world(99.5, 99.5)
    assert centre.separation(SkyCoord(PNT_RA, PNT_DEC, unit="deg")) < 1e-6 * u.deg
    _, wcs_input, _ = read_cta_input(dl3_path)
    assert wcs.to_header_string() == wcs_input.to_header_string()

    before = out.read_bytes()
    run_error(capsys, argv, "cta-clean", "cleaned.fits: output file exists", "--overwrite")
    assert out.read_bytes() == before
    assert cli.main(argv + ["--overwrite"]) == 0


# ---------------------------------------------------------------------------
# cta-localise
# ---------------------------------------------------------------------------


def test_cta_localise_counts_map(tmp_path, counts_path, models, capsys):
    from skyml.cta.models import label_to_pix, load_model, preprocess_localiser_input, with_readout

    out = tmp_path / "position.ecsv"
    assert cli.main(["cta-localise", str(counts_path), "-o", str(out), "--model", str(models[1])]) == 0
    assert "source at RA" in capsys.readouterr().out

    table = QTable.read(out)
    assert table.colnames == ["ra", "dec", "x_pix", "y_pix", "input"]
    assert len(table) == 1
    assert table["ra"].unit == u.deg and table["dec"].unit == u.deg
    assert table["input"][0] == "counts.fits"
    assert table.meta["model"] == str(models[1]) and table.meta["profile"] == "quick"

    assert table.meta["orientations"] == 8

    counts, wcs = read_counts_map(counts_path)
    model, _ = load_model(models[1])
    model = with_readout(model, 0, "parabola")  # notebook 03's readout, not the training soft-argmax
    x = preprocess_localiser_input(counts[None])
    labels = []  # the map read in its 8 orientations, each position mapped back by hand
    for k in range(8):
        xk = np.swapaxes(x, 1, 2) if k & 1 else x
        xk = xk[:, :, ::-1] if k & 2 else xk
        xk = xk[:, ::-1] if k & 4 else xk
        lx, ly = model.predict(np.ascontiguousarray(xk), verbose=0)[0]
        ly = 1 - ly if k & 4 else ly
        lx = 1 - lx if k & 2 else lx
        labels.append((ly, lx) if k & 1 else (lx, ly))
    x_exp, y_exp = label_to_pix(np.median(labels, axis=0), (200, 200))
    row = table[0]
    np.testing.assert_allclose([row["x_pix"], row["y_pix"]], [x_exp, y_exp], atol=1e-4)

    one = tmp_path / "one.ecsv"
    assert cli.main(["cta-localise", str(counts_path), "-o", str(one), "--model", str(models[1]),
                     "--orientations", "1"]) == 0
    x1, y1 = label_to_pix(labels[0], (200, 200))
    row = QTable.read(one)[0]
    np.testing.assert_allclose([row["x_pix"], row["y_pix"]], [x1, y1], atol=1e-4)
    position = SkyCoord(row["ra"], row["dec"], frame="icrs")
    assert wcs.footprint_contains(position)
    x_back, y_back = wcs.world_to_pixel(position)
    np.testing.assert_allclose([x_back, y_back], [row["x_pix"], row["y_pix"]], atol=1e-6)


def test_cta_localise_default_orientations_are_the_published_choice():
    """The command's default readout is the one notebook 03's published run chose on validation."""
    from skyml import results

    default = cli.build_parser().parse_args(["cta-localise", "obs.fits", "-o", "p.ecsv"]).orientations
    assert default == results.read_metrics("03_cta_cnn_regressor", "full")["improved_orientations"]


def test_cta_localise_dl3(tmp_path, dl3_path, models):
    out = tmp_path / "position.ecsv"
    assert cli.main(["cta-localise", str(dl3_path), "-o", str(out), "--model", str(models[1])]) == 0
    row = QTable.read(out)[0]
    _, wcs, _ = read_cta_input(dl3_path)
    assert wcs.footprint_contains(SkyCoord(row["ra"], row["dec"], frame="icrs"))
    assert row["input"] == "obs.fits"


# ---------------------------------------------------------------------------
# Errors: exit 2, one line, no output file
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("command, suffix", [("cta-clean", ".fits"), ("cta-localise", ".ecsv")])
def test_missing_input(tmp_path, models, capsys, command, suffix):
    out = tmp_path / f"out{suffix}"
    model = models[0] if command == "cta-clean" else models[1]
    run_error(capsys, [command, str(tmp_path / "absent.fits"), "-o", str(out), "--model", str(model)],
              command, "absent.fits: file not found")
    assert not out.exists()


def test_invalid_inputs(tmp_path, models, capsys):
    wcs = map_wcs(PNT_RA, PNT_DEC, 64, 0.025)
    small = write_fits_map(tmp_path / "small.fits", np.ones((64, 64)), wcs)
    nan = np.ones((200, 200))
    nan[0, 0] = np.nan
    with_nan = write_fits_map(tmp_path / "nan.fits", nan, map_wcs(PNT_RA, PNT_DEC))
    text = tmp_path / "text.fits"
    text.write_text("not FITS at all\n" * 100)
    out = tmp_path / "out.fits"
    for path, fragment in [(small, "expected 200×200, got 64×64"), (with_nan, "NaN or infinite"),
                           (text, "not a FITS file")]:
        run_error(capsys, ["cta-clean", str(path), "-o", str(out), "--model", str(models[0])],
                  "cta-clean", path.name, fragment)
        assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan.fits", "small.fits", "text.fits"]


@pytest.mark.parametrize("command, notebook, profile", [
    ("cta-clean", "02", "quick"), ("cta-localise", "03", "full"),
])
def test_missing_default_model_says_which_notebook_trains_it(
        tmp_path, counts_path, monkeypatch, capsys, command, notebook, profile):
    monkeypatch.setattr(paths, "MODELS", tmp_path / "models")
    out = tmp_path / "out.file"
    err = run_error(capsys, [command, str(counts_path), "-o", str(out), "--profile", profile],
                    command, "model not found", str(tmp_path / "models" / profile),
                    f"notebook {notebook}")
    option = "" if profile == "quick" else " --profile full"
    assert err.endswith(f"python run_all.py{option} --only {notebook}")
    assert not out.exists()


def test_missing_model_file_given(tmp_path, counts_path, capsys):
    run_error(capsys, ["cta-localise", str(counts_path), "-o", str(tmp_path / "p.ecsv"),
                       "--model", str(tmp_path / "nope.keras")],
              "cta-localise", "model file not found", "nope.keras")


def test_model_problems(tmp_path, counts_path, models, capsys):
    from skyml.cta.models import build_cleaner, save_model

    out = tmp_path / "out.fits"
    # the localiser is not a cleaner
    run_error(capsys, ["cta-clean", str(counts_path), "-o", str(out), "--model", str(models[1])],
              "cta-clean", "trained for the task 'cta-localise', not 'cta-clean'")
    # a cleaner whose metadata lacks its input smoothing
    unsmoothed = tmp_path / "unsmoothed.keras"
    unsmoothed.write_bytes(models[0].read_bytes())
    unsmoothed.with_suffix(".json").write_text('{"task": "cta-clean"}')
    run_error(capsys, ["cta-clean", str(counts_path), "-o", str(out), "--model", str(unsmoothed)],
              "cta-clean", "lacks 'smooth_sigma_px'")
    # a cleaner of another map size
    small = save_model(build_cleaner(input_shape=(64, 64, 1)), tmp_path / "small.keras",
                       {"smooth_sigma_px": 1.0})
    run_error(capsys, ["cta-clean", str(counts_path), "-o", str(out), "--model", str(small)],
              "cta-clean", "model expects (64, 64) maps")
    # a damaged model file with its sidecar
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a zip archive")
    broken.with_suffix(".json").write_text('{"smooth_sigma_px": 1.0}')
    run_error(capsys, ["cta-clean", str(counts_path), "-o", str(out), "--model", str(broken)],
              "cta-clean", "broken.keras")
    # a model without its metadata sidecar
    lonely = tmp_path / "lonely.keras"
    lonely.write_bytes(models[0].read_bytes())
    run_error(capsys, ["cta-clean", str(counts_path), "-o", str(out), "--model", str(lonely)],
              "cta-clean", "sidecar not found", "lonely.json")
    assert not out.exists()


def test_output_folder_missing(tmp_path, counts_path, models, capsys):
    out = tmp_path / "no" / "such" / "p.ecsv"
    run_error(capsys, ["cta-localise", str(counts_path), "-o", str(out), "--model", str(models[1])],
              "cta-localise", "output folder", "does not exist")


def test_console_script_error_is_one_line(tmp_path, counts_path, models):
    """In a fresh process, so TensorFlow's start-up messages would show."""
    script = Path(sys.executable).parent / "skyml"
    out = tmp_path / "out.fits"
    result = subprocess.run(
        [str(script), "cta-clean", str(counts_path), "-o", str(out), "--model", str(models[1])],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"skyml cta-clean: error: {models[1]}: this model was trained for the task "
        "'cta-localise', not 'cta-clean' (CNN-Cleaner)"
    ]
    assert not out.exists()


def test_model_metadata_sim_params_set_the_dl3_binning(tmp_path, dl3_path, models, capsys):
    """A model that records its training geometry (metadata "sim_params") bins
    event lists with it: here only events above 1 TeV."""
    import json
    import shutil

    from skyml.cta.simulate import CTASimParams

    model = tmp_path / "localiser_1tev.keras"
    shutil.copy(models[1], model)
    metadata = {"sim_params": CTASimParams(energy_min_tev=1.0).to_dict()}
    model.with_suffix(".json").write_text(json.dumps(metadata))
    out = tmp_path / "p.ecsv"
    assert cli.main(["cta-localise", str(dl3_path), "-o", str(out), "--model", str(model)]) == 0
    assert "(1.0–30.0 TeV)" in QTable.read(out).meta["input_description"]
    assert QTable.read(out).meta["profile"] == "unknown"

    model.with_suffix(".json").write_text(json.dumps({"sim_params": {"npix": 200, "colour": 1}}))
    run_error(capsys, ["cta-localise", str(dl3_path), "-o", str(tmp_path / "q.ecsv"),
                       "--model", str(model)], "cta-localise", "invalid 'sim_params'")


def test_models_of_another_task_are_refused(tmp_path, counts_path, models, capsys):
    """Metadata as written by skyml.cta.pipeline: the talk's regressor (whose
    input is the cleaner output) is no improved localiser."""
    import json
    import shutil

    from skyml.cta.models import LOCALISER_INPUT

    model = tmp_path / "talk.keras"
    shutil.copy(models[1], model)
    model.with_suffix(".json").write_text(json.dumps({"task": "cta-localise-talk"}))
    out = tmp_path / "p.ecsv"
    argv = ["cta-localise", str(counts_path), "-o", str(out), "--model", str(model)]
    run_error(capsys, argv, "cta-localise", "trained for the task 'cta-localise-talk'")
    model.with_suffix(".json").write_text(json.dumps({"task": "cta-localise", "input": "log1p(counts)"}))
    run_error(capsys, argv, "cta-localise", "model input 'log1p(counts)' differs")
    model.with_suffix(".json").write_text(json.dumps({"task": "cta-localise", "input": LOCALISER_INPUT}))
    assert cli.main(argv) == 0
    assert out.exists()
