"""Reading and validating user inputs (skyml.io): every error path on small
files made here, round trips of the atomic writers, and a real DL3 event
list simulated with gammapy."""

from __future__ import annotations

import os

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import QTable, Table
from astropy.wcs import WCS

from skyml.cta.simulate import CTASimParams, bin_events, map_wcs, simulate_dl3
from skyml.io import (
    InputError,
    fits_ascii,
    read_counts_map,
    read_cta_input,
    read_event_list,
    write_fits_map,
    write_table,
)

PNT_RA, PNT_DEC = 83.63, 22.01


@pytest.fixture(scope="module")
def dl3_path(tmp_path_factory):
    """One simulated CTA observation written as a GADF DL3 file."""
    path = tmp_path_factory.mktemp("dl3") / "obs_000001.fits"
    pnt = SkyCoord(PNT_RA, PNT_DEC, unit="deg")
    simulate_dl3(7, pnt=pnt, flux_crab=0.5).write(path)
    return path


@pytest.fixture
def wcs():
    return map_wcs(PNT_RA, PNT_DEC, 200, 0.025)


@pytest.fixture
def counts():
    return np.random.default_rng(1).poisson(2.0, size=(200, 200)).astype(np.float64)


def write_image(path, data, header=None, **kwargs):
    fits.PrimaryHDU(data=data, header=header, **kwargs).writeto(path)
    return path


def raises_input_error(path, *fragments):
    """Context manager asserting an InputError whose one-line message names
    ``path`` and contains every fragment."""

    class Check:
        def __enter__(self):
            self.ctx = pytest.raises(InputError)
            self.info = self.ctx.__enter__()
            return self.info

        def __exit__(self, *exc):
            suppressed = self.ctx.__exit__(*exc)
            message = str(self.info.value)
            assert "\n" not in message, message
            assert os.path.basename(str(path)) in message, message
            for fragment in fragments:
                assert fragment in message, message
            return suppressed

    return Check()


# ---------------------------------------------------------------------------
# Counts maps: good paths
# ---------------------------------------------------------------------------


def test_write_then_read_counts_map_round_trip(tmp_path, counts, wcs):
    path = write_fits_map(tmp_path / "map.fits", counts, wcs, {"BUNIT": ("count", "per pixel")})
    data, wcs_read = read_counts_map(path, expected_shape=(200, 200), expected_binsz_deg=0.025)
    assert data.dtype == np.float64 and data.shape == (200, 200)
    np.testing.assert_array_equal(data, counts)
    assert wcs_read.has_celestial and wcs_read.naxis == 2
    for x, y in [(0, 0), (99.5, 99.5), (199, 37)]:
        a, b = wcs.pixel_to_world(x, y), wcs_read.pixel_to_world(x, y)
        assert a.separation(b).to_value(u.arcsec) < 1e-6
    assert fits.getheader(path)["BUNIT"] == "count"


def test_header_extra_is_made_fits_ascii(tmp_path, counts, wcs):
    path = write_fits_map(tmp_path / "map.fits", counts, wcs,
                          {"INPUT": "map 200×200 at 0.025°", "HISTORY": "é" * 3})
    header = fits.getheader(path)
    assert header["INPUT"] == "map 200x200 at 0.025 deg"
    assert str(header["HISTORY"]) == "\\xe9" * 3
    assert fits_ascii("é–µ") == "\\xe9-u"


def test_named_hdu_and_first_image_hdu_with_data(tmp_path, counts, wcs):
    path = tmp_path / "two.fits"
    fits.HDUList([
        fits.PrimaryHDU(),  # no data: skipped
        fits.BinTableHDU(Table({"a": [1, 2]}), name="META"),
        fits.ImageHDU(counts, header=wcs.to_header(), name="COUNTS"),
        fits.ImageHDU(2 * counts, header=wcs.to_header(), name="COUNTS2"),
    ]).writeto(path)
    np.testing.assert_array_equal(read_counts_map(path)[0], counts)
    np.testing.assert_array_equal(read_counts_map(path, hdu="COUNTS2")[0], 2 * counts)
    with raises_input_error(path, "no HDU 'NOPE'", "COUNTS2"):
        read_counts_map(path, hdu="NOPE")
    with raises_input_error(path, "'META'", "not an image"):
        read_counts_map(path, hdu="META")


def test_cube_with_one_energy_bin_is_squeezed_and_reported(tmp_path, counts):
    from gammapy.maps import Map, MapAxis, WcsGeom

    axis = MapAxis.from_energy_bounds(0.05, 30, 1, unit="TeV")
    geom = WcsGeom.create(skydir=SkyCoord(PNT_RA, PNT_DEC, unit="deg"), npix=200, binsz=0.025,
                          frame="icrs", proj="TAN", axes=[axis])
    cube = Map.from_geom(geom, data=counts[None])
    path = tmp_path / "cube.fits"
    cube.write(path)
    data, wcs = read_counts_map(path, (200, 200), 0.025)
    np.testing.assert_array_equal(data, counts)
    centre = wcs.pixel_to_world(99.5, 99.5)
    assert centre.separation(SkyCoord(PNT_RA, PNT_DEC, unit="deg")).to_value(u.arcsec) < 1e-6
    _, _, description = read_cta_input(path)
    assert "squeezed the 3D cube of shape 1×200×200" in description


def test_cube_whose_wcs_mixes_a_map_axis_with_a_dropped_one_is_refused(tmp_path):
    # a 41 x 1 x 25 cube whose PC matrix couples the first axis to the second, length-1 axis: the map axes'
    # WCS cannot be separated from it (found by the CLI fuzz test: wcslib raised, the command gave a traceback)
    header = fits.Header({"CTYPE1": "FOO", "CTYPE2": "", "CTYPE3": "", "PC1_2": 0.5, "CDELT2": 0.1})
    path = write_image(tmp_path / "mixed.fits", np.zeros((25, 1, 41), dtype=np.float32), header)
    with raises_input_error(path, "cannot be cut to the map axes"):
        read_counts_map(path)


def test_galactic_counts_map_is_accepted(tmp_path, counts):
    header = WCS(naxis=2)
    header.wcs.ctype = ["GLON-CAR", "GLAT-CAR"]
    header.wcs.cdelt = [-0.025, 0.025]
    header.wcs.crpix = [100.5, 100.5]
    header.wcs.crval = [184.56, -5.78]
    path = write_image(tmp_path / "gal.fits", counts, header.to_header())
    _, wcs = read_counts_map(path, (200, 200), 0.025)
    assert wcs.wcs.lng == 0 and wcs.wcs.lat == 1


# ---------------------------------------------------------------------------
# Counts maps: error paths
# ---------------------------------------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "absent.fits"
    with raises_input_error(path, "file not found"):
        read_counts_map(path)


def test_folder_is_not_a_file(tmp_path):
    with raises_input_error(tmp_path, "is a folder"):
        read_counts_map(tmp_path)


def test_not_a_fits_file(tmp_path):
    path = tmp_path / "notes.fits"
    path.write_text("these are not FITS bytes\n" * 200)
    with raises_input_error(path, "not a FITS file or corrupt"):
        read_counts_map(path)


def test_truncated_fits_file(tmp_path, counts, wcs):
    good = write_fits_map(tmp_path / "good.fits", counts, wcs)
    path = tmp_path / "cut.fits"
    path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with raises_input_error(path, "corrupt or truncated"):
        read_counts_map(path)


def test_no_image_hdu(tmp_path):
    path = tmp_path / "table.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU(Table({"a": [1.0]}), name="CAT")]).writeto(path)
    with raises_input_error(path, "no image HDU with data", "CAT"):
        read_counts_map(path)


@pytest.mark.parametrize("shape, text", [((200,), "1D data"), ((2, 200, 200), "3D data of shape 2×200×200")])
def test_data_not_2d(tmp_path, shape, text):
    path = write_image(tmp_path / "bad.fits", np.ones(shape))
    with raises_input_error(path, text, "not a 2D map"):
        read_counts_map(path)


def test_wrong_shape(tmp_path):
    data = np.ones((128, 64))
    small = map_wcs(PNT_RA, PNT_DEC, 64, 0.025)
    path = write_fits_map(tmp_path / "small.fits", data, small)
    read_counts_map(path)  # fine without an expected shape
    with raises_input_error(path, "expected 200×200, got 128×64"):
        read_counts_map(path, expected_shape=(200, 200))


def test_no_wcs(tmp_path, counts):
    path = write_image(tmp_path / "nowcs.fits", counts)
    with raises_input_error(path, "has no WCS"):
        read_counts_map(path)


def test_non_celestial_wcs(tmp_path, counts):
    header = fits.Header({"CTYPE1": "LINEAR", "CTYPE2": "LINEAR", "CDELT1": 1.0, "CDELT2": 1.0})
    path = write_image(tmp_path / "linear.fits", counts, header)
    with raises_input_error(path, "not celestial", "'LINEAR'"):
        read_counts_map(path)


def test_wrong_pixel_size(tmp_path, counts):
    path = write_fits_map(tmp_path / "coarse.fits", counts, map_wcs(PNT_RA, PNT_DEC, 200, 0.05))
    read_counts_map(path, expected_binsz_deg=0.0501)  # within 1 %
    with raises_input_error(path, "pixel size 0.05°×0.05°, expected 0.025°"):
        read_counts_map(path, expected_binsz_deg=0.025)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_values(tmp_path, counts, wcs, value):
    counts[3, 4] = value
    counts[5, 6] = value
    path = write_fits_map(tmp_path / "nan.fits", counts, wcs)
    with raises_input_error(path, "2 pixels are NaN or infinite"):
        read_counts_map(path)


def test_negative_counts(tmp_path, counts, wcs):
    counts[10, 10] = -3
    path = write_fits_map(tmp_path / "negative.fits", counts, wcs)
    with raises_input_error(path, "1 pixels have negative counts", "min -3"):
        read_counts_map(path)


def test_empty_map(tmp_path, wcs):
    path = write_fits_map(tmp_path / "empty.fits", np.zeros((200, 200)), wcs)
    with raises_input_error(path, "empty"):
        read_counts_map(path)


# ---------------------------------------------------------------------------
# DL3 event lists
# ---------------------------------------------------------------------------


def test_read_event_list(dl3_path):
    events, pointing = read_event_list(dl3_path)
    assert len(events.table) > 100
    assert pointing.separation(SkyCoord(PNT_RA, PNT_DEC, unit="deg")).to_value(u.arcsec) < 1e-6
    assert pointing.frame.name == "icrs"


def test_read_cta_input_bins_dl3_at_its_pointing(dl3_path):
    counts, wcs, description = read_cta_input(dl3_path)
    events, _ = read_event_list(dl3_path)
    np.testing.assert_array_equal(counts, bin_events(events, PNT_RA, PNT_DEC))
    assert counts.shape == (200, 200) and counts.sum() > 100
    centre = wcs.pixel_to_world(99.5, 99.5)
    assert centre.separation(SkyCoord(PNT_RA, PNT_DEC, unit="deg")).to_value(u.arcsec) < 1e-6
    assert description.startswith(f"DL3 event list {dl3_path.name}")


def test_read_cta_input_counts_map(tmp_path, counts, wcs):
    path = write_fits_map(tmp_path / "map.fits", counts, wcs)
    data, wcs_read, description = read_cta_input(path, CTASimParams())
    np.testing.assert_array_equal(data, counts)
    assert description.startswith("counts map map.fits")
    with raises_input_error(path, "expected 100×100, got 200×200"):
        read_cta_input(path, CTASimParams(npix=100))


def test_counts_map_is_not_an_event_list(tmp_path, counts, wcs):
    path = write_fits_map(tmp_path / "map.fits", counts, wcs)
    with raises_input_error(path, "no EVENTS HDU", "PRIMARY"):
        read_event_list(path)


def test_dl3_without_events_hdu(tmp_path, dl3_path):
    path = tmp_path / "irf_only.fits"
    with fits.open(dl3_path) as hdul:
        fits.HDUList([hdu.copy() for hdu in hdul if hdu.name != "EVENTS"]).writeto(path)
    with raises_input_error(path, "no EVENTS HDU", "GTI"):
        read_event_list(path)
    # without EVENTS it is read as a counts map, which it is not either
    with raises_input_error(path, "no image HDU with data"):
        read_cta_input(path)


def _modified_dl3(dl3_path, path, modify):
    with fits.open(dl3_path) as hdul:
        hdus = [hdu.copy() for hdu in hdul]
    modify(hdus[[h.name for h in hdus].index("EVENTS")])
    fits.HDUList(hdus).writeto(path)
    return path


def test_dl3_without_events(tmp_path, dl3_path):
    def empty(hdu):
        hdu.data = hdu.data[:0]

    path = _modified_dl3(dl3_path, tmp_path / "no_events.fits", empty)
    with raises_input_error(path, "holds no events"):
        read_event_list(path)


@pytest.mark.parametrize("key", ["RA_PNT", "DEC_PNT"])
def test_dl3_without_pointing(tmp_path, dl3_path, key):
    path = _modified_dl3(dl3_path, tmp_path / "no_pointing.fits", lambda hdu: hdu.header.remove(key))
    with raises_input_error(path, "lacks the pointing keyword", key):
        read_event_list(path)


def test_dl3_without_energy_column(tmp_path, dl3_path):
    events = Table.read(dl3_path, hdu="EVENTS")
    events.remove_column("ENERGY")
    hdu = fits.table_to_hdu(events)
    hdu.name = "EVENTS"
    path = tmp_path / "no_energy.fits"
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path)
    with raises_input_error(path, "cannot read the EVENTS table"):
        read_event_list(path)


def test_truncated_dl3(tmp_path, dl3_path):
    path = tmp_path / "cut.fits"
    path.write_bytes(dl3_path.read_bytes()[:-50_000])
    with raises_input_error(path, "corrupt or truncated"):
        read_cta_input(path)


def test_dl3_with_no_event_inside_the_map(tmp_path, dl3_path):
    def far_pointing(hdu):
        hdu.header["DEC_PNT"] = -60.0

    path = _modified_dl3(dl3_path, tmp_path / "elsewhere.fits", far_pointing)
    with raises_input_error(path, "none of the", "events falls in the 200×200 map"):
        read_cta_input(path)


# ---------------------------------------------------------------------------
# Atomic writers
# ---------------------------------------------------------------------------


def test_write_fits_map_refuses_to_overwrite(tmp_path, counts, wcs):
    path = write_fits_map(tmp_path / "map.fits", counts, wcs)
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="map.fits: output file exists"):
        write_fits_map(path, 2 * counts, wcs)
    assert path.read_bytes() == before
    write_fits_map(path, 2 * counts, wcs, overwrite=True)
    np.testing.assert_array_equal(read_counts_map(path)[0], 2 * counts)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.fits"]


def test_write_fits_map_creates_no_file_on_failure(tmp_path, counts, wcs):
    with pytest.raises(ValueError, match="2D"):
        write_fits_map(tmp_path / "cube.fits", counts[None], wcs)
    with pytest.raises(ValueError):  # a header value FITS cannot hold
        write_fits_map(tmp_path / "bad.fits", counts, wcs, {"BADVALUE": object()})
    with pytest.raises(InputError, match="output folder"):
        write_fits_map(tmp_path / "missing" / "map.fits", counts, wcs)
    assert list(tmp_path.iterdir()) == []


def test_write_table_round_trip_and_refusal(tmp_path):
    table = QTable({"ra": [1.5, 2.5] * u.deg, "name": ["a", "b"]})
    table.meta["model"] = "cta_localiser.keras"
    path = write_table(tmp_path / "out.ecsv", table)
    back = QTable.read(path)
    assert back["ra"].unit == u.deg and list(back["name"]) == ["a", "b"]
    assert back.meta["model"] == "cta_localiser.keras"
    with pytest.raises(FileExistsError):
        write_table(path, table)
    write_table(path, table[:1], overwrite=True)
    assert len(QTable.read(path)) == 1
    with pytest.raises(InputError, match="unknown table format"):
        write_table(tmp_path / "out.xyz", table)


def test_write_table_failure_leaves_no_file(tmp_path):
    class FailingTable:
        """Writes a partial file, then fails (as a full disk would)."""

        def write(self, path, format, overwrite):
            with open(path, "w") as fh:
                fh.write("# %ECSV 1.0\n# partial")
            raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_table(tmp_path / "out.ecsv", FailingTable())
    assert list(tmp_path.iterdir()) == []
