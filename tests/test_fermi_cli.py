"""``skyml fermi-detect``: counts cube in, source list out, and its expected errors."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import QTable

from skyml import cli
from skyml.fermi import irf
from skyml.fermi.cube import detect_in_cube, read_counts_cube, write_counts_cube
from skyml.fermi.simulate import FermiSimParams, simulate_patches

P = FermiSimParams()
pytestmark = pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")


@pytest.fixture(scope="module")
def cube_path(tmp_path_factory):
    data = simulate_patches(2, 3, P, "train")
    counts = np.concatenate([data["counts"][0], data["counts"][1]], axis=2)  # 64 × 128 px
    return write_counts_cube(tmp_path_factory.mktemp("c") / "cube.fits", counts, 120.0, 45.0, P)


@pytest.mark.parametrize("suffix", [".ecsv", ".fits"])
def test_detect_writes_a_source_list(tmp_path, cube_path, fermi_unet_path, capsys, suffix, cli_error):
    out = tmp_path / f"sources{suffix}"
    argv = ["fermi-detect", str(cube_path), "-o", str(out), "--model", str(fermi_unet_path), "--threshold", "0.3"]
    assert cli.main(argv) == 0
    assert "sources (input: 128×64 px × 6 energy bins" in capsys.readouterr().out
    table = QTable.read(out)
    assert table.colnames == ["glon", "glat", "ra", "dec", "probability", "x_pix", "y_pix"]
    counts, wcs, _ = read_counts_cube(cube_path, P)
    from skyml.cta.models import load_model

    model, _ = load_model(fermi_unet_path)
    x, y, prob = detect_in_cube(model, counts, P, "unet_kmeans", 0.3)
    assert len(table) == len(x)
    np.testing.assert_allclose(table["x_pix"], x)
    np.testing.assert_allclose(table["probability"], prob)
    assert np.all(table["probability"] > 0.3)
    assert len(table) > 0  # the untrained network is near 0.5 everywhere
    if len(table):
        sky = wcs.pixel_to_world(x, y).galactic
        np.testing.assert_allclose(table["glon"].value, sky.l.deg)
        np.testing.assert_allclose(table["glat"].value, sky.b.deg)
    # refuses to overwrite
    cli_error(argv, "output file exists", "--overwrite")


def test_bad_inputs(tmp_path, cube_path, fermi_unet_path, cli_error):
    out = str(tmp_path / "s.ecsv")
    model = ["--model", str(fermi_unet_path)]
    cli_error(["fermi-detect", str(tmp_path / "nope.fits"), "-o", out] + model, "file not found")
    text = tmp_path / "notes.fits"
    text.write_text("not a FITS file")
    cli_error(["fermi-detect", str(text), "-o", out] + model, "not a readable counts cube")
    counts = np.zeros((6, 64, 64))
    wide = FermiSimParams(patch_deg=20.0)  # 0.3125° pixels
    write_counts_cube(tmp_path / "coarse.fits", counts, 0.0, 0.0, wide)
    cli_error(["fermi-detect", str(tmp_path / "coarse.fits"), "-o", out] + model, "pixel size")
    write_counts_cube(tmp_path / "odd.fits", np.zeros((6, 64, 40)), 0.0, 0.0, P)
    cli_error(["fermi-detect", str(tmp_path / "odd.fits"), "-o", out] + model, "multiples of 64")
    write_counts_cube(tmp_path / "neg.fits", -np.ones((6, 64, 64)), 0.0, 0.0, P)
    cli_error(["fermi-detect", str(tmp_path / "neg.fits"), "-o", out] + model, "non-negative integers")

    import astropy.units as u
    from astropy.coordinates import SkyCoord
    from gammapy.maps import Map, MapAxis, WcsGeom

    axis = MapAxis.from_energy_bounds(0.1, 100, 6, unit="GeV", name="energy")
    geom = WcsGeom.create(skydir=SkyCoord(0, 0, unit="deg", frame="galactic"), npix=64, binsz=P.binsz_deg,
                          frame="galactic", axes=[axis])
    Map.from_geom(geom).write(tmp_path / "ebins.fits")
    cli_error(["fermi-detect", str(tmp_path / "ebins.fits"), "-o", out] + model, "energy bins")
    Map.from_geom(geom.to_image()).write(tmp_path / "image.fits")
    cli_error(["fermi-detect", str(tmp_path / "image.fits"), "-o", out] + model, "no 'energy' axis")
    cli_error(["fermi-detect", str(cube_path), "-o", out, "--threshold", "1.5"] + model, "--threshold")
    cli_error(["fermi-detect", str(cube_path), "-o", out, "--kmeans-penalty", "nan"] + model, "--kmeans-penalty")
    cli_error(["fermi-detect", str(cube_path), "-o", out, "--min-peak-distance", "0"] + model, "--min-peak-distance")
    assert not (tmp_path / "s.ecsv").exists()
    del u


def test_model_problems(tmp_path, cube_path, fermi_unet_path, cli_error, monkeypatch):
    out = str(tmp_path / "s.ecsv")
    from skyml import paths

    monkeypatch.setattr(paths, "MODELS", tmp_path / "models")
    cli_error(["fermi-detect", str(cube_path), "-o", out], "model not found", "notebook 04",
              "--only 04")
    other = tmp_path / "other.keras"
    other.write_bytes(fermi_unet_path.read_bytes())
    other.with_suffix(".json").write_text('{"task": "cta-clean"}')
    cli_error(["fermi-detect", str(cube_path), "-o", out, "--model", str(other)],
              "trained for the task 'cta-clean'")


def test_detect_takes_the_kmeans_settings(tmp_path, cube_path, fermi_unet_path):
    """--kmeans-penalty and --min-peak-distance reach the k-means step (the
    setting notebook 04 tunes) and are recorded in the table's metadata."""
    counts, _, _ = read_counts_cube(cube_path, P)
    from skyml.cta.models import load_model

    model, _ = load_model(fermi_unet_path)
    out = tmp_path / "tuned.ecsv"
    argv = ["fermi-detect", str(cube_path), "-o", str(out), "--model", str(fermi_unet_path), "--threshold", "0.3",
            "--kmeans-penalty", "45", "--min-peak-distance", "1"]
    assert cli.main(argv) == 0
    table = QTable.read(out)
    x, _, _ = detect_in_cube(model, counts, P, "unet_kmeans", 0.3, penalty_px2=45.0, min_peak_distance_px=1)
    np.testing.assert_allclose(table["x_pix"], x)
    assert table.meta["penalty"] == 45.0 and table.meta["peakdist"] == 1
    assert cli.main(argv[:-4] + ["--method", "unet_log", "-o", str(tmp_path / "log.ecsv")]) == 0
    assert "penalty" not in QTable.read(tmp_path / "log.ecsv").meta
    # without the options, the library's default setting (that of notebook 05's cut-outs)
    from skyml.fermi import detect

    assert cli.main(argv[:-4] + ["-o", str(tmp_path / "default.ecsv")]) == 0
    meta = QTable.read(tmp_path / "default.ecsv").meta
    assert meta["penalty"] == detect.PENALTY_PX2 and meta["peakdist"] == detect.MIN_PEAK_DISTANCE_PX
