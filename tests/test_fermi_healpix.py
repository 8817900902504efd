"""All-sky HEALPix counts maps, patches cut from them, and ``skyml fermi-detect`` on HEALPix input."""

from __future__ import annotations

import healpy as hp
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import QTable

from skyml import cli
from skyml.fermi import catalog, healpix, irf
from skyml.fermi.simulate import (FermiSimParams, background_model, expected_bin_counts, healpix_centres,
                                  network_inputs, owner_pixel, patch_geom, patch_wcs, world_to_pix)
from skyml.io import InputError

P = FermiSimParams()
SRC_LON, SRC_LAT = 33.0, 41.0  # away from the Galactic plane
pytestmark = pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")


def one_source(flux=1e-7, glon=SRC_LON, glat=SRC_LAT):
    return {"glon": np.array([glon]), "glat": np.array([glat]), "spectrum_type": np.array([catalog.POWERLAW]),
            "index": np.array([2.0]), "beta": np.array([0.0]), "expfactor": np.array([0.0]),
            "exp_index": np.array([1.0]), "pivot_mev": np.array([1000.0]), "flux1000": np.array([flux])}


@pytest.fixture(scope="module")
def maps128():
    return healpix.simulate_allsky(one_source(), P, seed=1, nside_max=128)


@pytest.fixture(scope="module")
def partial_path(maps128, tmp_path_factory):
    """A partial-sky HEALPix file (40° disc) around the bright source."""
    import astropy.units as u

    pos = SkyCoord(SRC_LON, SRC_LAT, unit="deg", frame="galactic")
    cut = [m.cutout(pos, 40 * u.deg) for m in maps128]
    return healpix.write_allsky(tmp_path_factory.mktemp("h") / "partial.fits", cut)


# --------------------------------------------------------------------------- maps
def test_nside_rule():
    assert healpix.bin_nsides(P) == (128, 256, 512, 512, 512, 512)
    assert healpix.bin_nsides(P, nside_max=64) == (64,) * 6
    r68 = healpix.bin_r68_deg(P)
    for k, ns in enumerate(healpix.bin_nsides(P, nside_max=4096)):
        target = min(healpix.PIXEL_PER_R68 * r68[k], P.binsz_deg * P.downsample[k])
        assert np.rad2deg(hp.nside2resol(ns)) <= target < np.rad2deg(hp.nside2resol(ns // 2))
    with pytest.raises(ValueError):
        healpix.expected_allsky(None, P, nside=(8, 8))


@pytest.mark.parametrize("nside_max", [64, 512])
def test_single_source_expected_counts(nside_max):
    sky = one_source(3e-9)
    mu = healpix.expected_allsky(sky, P, nside_max=nside_max, background=False)
    expected = expected_bin_counts({k: sky[k] for k in catalog.SPECTRUM_FIELDS}, P.event_types)[0]
    np.testing.assert_allclose([m.sum() for m in mu], expected, rtol=0.01)
    for m in mu:  # the PSF peaks in the pixel of the source
        assert np.argmax(m) == hp.ang2pix(hp.npix2nside(len(m)), SRC_LON, SRC_LAT, lonlat=True)


def test_background_matches_patch_model():
    bg = healpix.expected_allsky(None, P, nside_max=64)
    omega_wcs = np.deg2rad(P.binsz_deg) ** 2
    for glon, glat in [(120.0, 45.0), (300.0, -30.0), (200.0, 70.0)]:
        patch = background_model(glon, glat, P)[:, 31:33, 31:33].mean(axis=(1, 2)) / omega_wcs
        for k, m in enumerate(bg):
            nside = hp.npix2nside(len(m))
            per_sr = hp.get_interp_val(m, glon, glat, lonlat=True) / hp.nside2pixarea(nside)
            assert per_sr == pytest.approx(patch[k], rel=0.03)


def test_determinism():
    a = healpix.simulate_allsky(one_source(), P, seed=5, nside_max=32)
    b = healpix.simulate_allsky(one_source(), P, seed=5, nside_max=32)
    c = healpix.simulate_allsky(one_source(), P, seed=6, nside_max=32)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.data, y.data)
        assert x.geom.frame == "galactic" and not x.geom.nest
        assert np.all(x.data >= 0) and np.all(x.data == np.round(x.data))
    assert any(not np.array_equal(x.data, z.data) for x, z in zip(a, c))


# --------------------------------------------------------------------------- patches
def test_cut_patch_counts_and_source_position(maps128):
    glon, glat = 30.0, 40.0
    patch = healpix.cut_patch(maps128, glon, glat, P)
    x, y = world_to_pix(patch_wcs(glon, glat, P), SRC_LON, SRC_LAT)
    for k, (m, c) in enumerate(zip(maps128, patch)):
        f = P.downsample[k]
        assert c.shape == (P.npix // f, P.npix // f) and np.all(c >= 0)
        nside = int(m.geom.nside.item())
        lon, lat = hp.pix2ang(nside, np.arange(hp.nside2npix(nside)), lonlat=True)
        inside = patch_geom(glon, glat, P, downsample=f).contains(SkyCoord(lon, lat, unit="deg", frame="galactic"))
        assert c.sum() == pytest.approx(m.data[inside].sum(), rel=0.03)
        if f == 1:  # the bright source: the brightest pixel within a HEALPix pixel (0.46°) of its position
            row, col = np.unravel_index(np.argmax(c), c.shape)
            assert abs(col - x) <= 2.0 and abs(row - y) <= 2.0
    inputs = healpix.patch_inputs([patch, patch], P)
    assert [a.shape for a in inputs] == [(2, 64, 64, 4), (2, 32, 32, 1), (2, 16, 16, 1)]
    # the transform of network_inputs: a full-resolution cube whose f×f blocks sum to the patch
    cube = np.stack([np.kron(c, np.ones((f, f))) / f**2 for c, f in zip(patch, P.downsample)])
    for a, b in zip(inputs, network_inputs(np.stack([cube, cube]), P)):
        assert a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- files
def test_write_read_roundtrip(maps128, partial_path, tmp_path):
    path = healpix.write_allsky(tmp_path / "sky.fits", maps128)
    maps, description = healpix.read_healpix_counts(path)
    assert "all-sky" in description and "NSIDE 128/128/128/128/128/128" in description
    for a, b in zip(maps128, maps):
        np.testing.assert_array_equal(a.data, b.data)
    np.testing.assert_array_equal(hp.read_map(path, hdu="COUNTS_E2", dtype=None), maps128[2].data)
    with pytest.raises(FileExistsError):
        healpix.write_allsky(path, maps128)
    part, description = healpix.read_healpix_counts(partial_path)
    assert "partial-sky" in description and not part[0].geom.is_allsky
    assert healpix.is_healpix_file(path) and not healpix.is_healpix_file(tmp_path / "missing.fits")


def _edit(src, dst, k, data=None, drop=False):
    with fits.open(src) as hdul:
        hdus = fits.HDUList([h.copy() for h in hdul if not (drop and h.name.startswith(f"COUNTS_E{k}"))])
        if data is not None:
            col = "CHANNEL1"
            hdus[f"COUNTS_E{k}"].data[col][:] = data
        hdus.writeto(dst)
    return dst


def test_read_errors(partial_path, tmp_path):
    from gammapy.maps import HpxGeom, Map, MapAxis

    from skyml.fermi.cube import write_counts_cube

    def refuses(path, *fragments):
        with pytest.raises(InputError) as err:
            healpix.read_healpix_counts(path)
        assert str(path) in str(err.value) and "\n" not in str(err.value)
        for fragment in fragments:
            assert fragment in str(err.value)

    wcs = write_counts_cube(tmp_path / "wcs.fits", np.zeros((6, 64, 64)), 0.0, 0.0, P)
    refuses(wcs, "not a HEALPix counts map")
    refuses(_edit(partial_path, tmp_path / "nan.fits", 1, np.nan), "NaN")
    refuses(_edit(partial_path, tmp_path / "neg.fits", 2, -1.0), "negative counts")
    refuses(_edit(partial_path, tmp_path / "frac.fits", 0, 0.5), "non-negative integers")
    refuses(_edit(partial_path, tmp_path / "drop.fits", 3, drop=True), "no HDU 'COUNTS_E3'")
    axis = MapAxis.from_energy_bounds(0.1, 100, 6, unit="GeV", name="energy")
    Map.from_geom(HpxGeom.create(nside=8, frame="galactic", axes=[axis])).write(tmp_path / "ebins.fits")
    refuses(tmp_path / "ebins.fits", "energy bins", "0.3-1-3-10-30-100-1000 GeV")
    good = MapAxis.from_energy_edges(irf.ENERGY_EDGES_MEV, unit="MeV", name="energy")
    cube = Map.from_geom(HpxGeom.create(nside=8, frame="galactic", axes=[good]))
    cube.data[:] = 2.0
    cube.write(tmp_path / "cube.fits")
    maps, description = healpix.read_healpix_counts(tmp_path / "cube.fits")
    assert len(maps) == 6 and "NSIDE 8/8/8/8/8/8" in description and maps[5].data.sum() == 2 * 768


# --------------------------------------------------------------------------- duplicates
def test_keep_owned_removes_duplicates():
    lon, lat = healpix_centres()
    a, b = 300, 301  # neighbouring NSIDE-8 pixels: their patches overlap
    mid_lon, mid_lat = (lon[a] + lon[b]) / 2, (lat[a] + lat[b]) / 2
    owner = owner_pixel(mid_lon, mid_lat)
    assert owner in (a, b)
    det_lon, det_lat = np.array([mid_lon, mid_lon]), np.array([mid_lat, mid_lat])
    keep = healpix.keep_owned(det_lon, det_lat, np.array([a, b]), processed=[a, b])
    assert keep.tolist() == [owner == a, owner == b]
    # the owner's patch not processed (edge of a partial map): kept from the nearest processed patch only
    other, far = (a if owner == b else b), 0
    keep = healpix.keep_owned(det_lon, det_lat, np.array([other, far]), processed=[other, far])
    assert keep.tolist() == [True, False]
    assert healpix.keep_owned([], [], [], processed=[a]).size == 0


# --------------------------------------------------------------------------- CLI
def test_cli_on_healpix(partial_path, fermi_unet_path, tmp_path, capsys):
    out = tmp_path / "sources.ecsv"
    argv = ["fermi-detect", str(partial_path), "-o", str(out), "--model", str(fermi_unet_path), "--threshold", "0.3"]
    assert cli.main(argv) == 0
    assert "HEALPix partial-sky" in capsys.readouterr().out
    table = QTable.read(out)
    assert table.colnames == ["glon", "glat", "ra", "dec", "probability", "x_pix", "y_pix"]
    assert len(table) > 0 and np.all(np.isnan(table["x_pix"])) and np.all(table["probability"] > 0.3)
    n_patches = table.meta["patches"]
    assert 1 <= n_patches < 768
    # the same as the library call; every detection comes from the patch that owns it (or the nearest one)
    from skyml.cta.models import load_model

    model, _ = load_model(fermi_unet_path)
    maps, _ = healpix.read_healpix_counts(partial_path)
    det = healpix.detect_in_healpix(model, maps, P, "unet_kmeans", 0.3)
    np.testing.assert_allclose(table["glon"].value, det["glon"])
    np.testing.assert_allclose(table["probability"], det["probability"])
    owners = owner_pixel(det["glon"], det["glat"])
    lon, lat = healpix_centres()
    processed = [i for i in range(768) if healpix.patch_covered(maps, lon[i], lat[i], P)]
    assert len(processed) == n_patches
    own = np.isin(owners, processed)
    assert np.all(det["patch"][own] == owners[own])
    sky = SkyCoord(table["glon"], table["glat"], frame="galactic")
    if len(sky) > 1:  # no two detections at the same position
        assert np.min(sky.match_to_catalog_sky(sky, nthneighbor=2)[1].deg) > 0.05


def test_detect_in_healpix_restricted_to_given_pixels(partial_path, fermi_unet_path):
    from skyml.cta.models import load_model

    model, _ = load_model(fermi_unet_path)
    maps, _ = healpix.read_healpix_counts(partial_path)
    lon, lat = healpix_centres()
    covered = [i for i in range(768) if healpix.patch_covered(maps, lon[i], lat[i], P)]
    some = covered[:2] + [next(i for i in range(768) if i not in covered)]  # one pixel the map does not cover
    det = healpix.detect_in_healpix(model, maps, P, "unet_kmeans", 0.3, pixels=some)
    assert det["n_patches"] == 2 and set(np.unique(det["patch"])) <= set(covered[:2])
    fake = {"patch": np.array([covered[1], covered[0], covered[1]]), "x_pix": np.array([1.0, 2.0, 3.0]),
            "y_pix": np.array([4.0, 5.0, 6.0]), "probability": np.array([0.9, 0.8, 0.7])}
    as_set = healpix.as_patch_detections(fake, [covered[1], 5, covered[0]])
    np.testing.assert_array_equal(as_set["patch"], [0, 2, 0])
    np.testing.assert_array_equal(as_set["x_pix"], fake["x_pix"])
    with pytest.raises(ValueError, match="not among the patches"):
        healpix.as_patch_detections(fake, [covered[1]])


def test_load_allsky_is_the_patch_simulations_sky_and_cached(tmp_path, monkeypatch):
    from skyml import paths
    from skyml.fermi.simulate import SPLITS, _sky

    monkeypatch.setattr(paths, "CACHE", tmp_path)
    a = healpix.load_allsky(3, P, nside=(4, 4, 8, 8, 8, 8))
    b = healpix.load_allsky(3, P, nside=(4, 4, 8, 8, 8, 8))
    assert any(tmp_path.rglob("*.npz"))
    for ma, mb in zip(a, b):
        np.testing.assert_array_equal(ma.data, mb.data)
    # the expected counts of its catalogue: the DR2 sky of the patch simulation (same seed sequence)
    sky = _sky("dr2", [3, SPLITS["test"], 1000], P)
    mu = healpix.expected_allsky(sky, P, nside=(4, 4, 8, 8, 8, 8))
    for m, e in zip(a, mu):
        assert abs(m.data.sum() / e.sum() - 1) < 5 / np.sqrt(e.sum())
    with pytest.raises(ValueError, match="one catalogue"):
        healpix.load_allsky(3, P, sky="mock", split="train")


def test_cli_refuses_bad_healpix(maps128, partial_path, fermi_unet_path, tmp_path, cli_error):
    from gammapy.maps import HpxGeom, Map, MapAxis, WcsGeom

    out = tmp_path / "s.ecsv"
    model = ["--model", str(fermi_unet_path)]
    # COUNTS_E<k> HDUs that hold WCS images: not HEALPix
    hdus = [fits.PrimaryHDU()]
    for k in range(6):
        axis = MapAxis.from_energy_edges(irf.ENERGY_EDGES_MEV[k:k + 2], unit="MeV", name="energy")
        geom = WcsGeom.create(npix=8, binsz=1.0, frame="galactic", axes=[axis])
        hdus.extend(Map.from_geom(geom).to_hdulist(hdu=f"COUNTS_E{k}", hdu_bands=f"COUNTS_E{k}_BANDS")[1:])
    fits.HDUList(hdus).writeto(tmp_path / "wcs_bins.fits")
    cli_error(["fermi-detect", str(tmp_path / "wcs_bins.fits"), "-o", str(out)] + model,
              "is not a HEALPix map")
    axis = MapAxis.from_energy_bounds(0.1, 100, 6, unit="GeV", name="energy")
    Map.from_geom(HpxGeom.create(nside=8, frame="galactic", axes=[axis])).write(tmp_path / "ebins.fits")
    cli_error(["fermi-detect", str(tmp_path / "ebins.fits"), "-o", str(out)] + model, "energy bins")
    neg = _edit(partial_path, tmp_path / "neg.fits", 4, -3.0)
    cli_error(["fermi-detect", str(neg), "-o", str(out)] + model, "negative counts")
    # a small partial map that covers no patch
    import astropy.units as u

    pos = SkyCoord(SRC_LON, SRC_LAT, unit="deg", frame="galactic")
    small = healpix.write_allsky(tmp_path / "small.fits", [m.cutout(pos, 5 * u.deg) for m in maps128])
    cli_error(["fermi-detect", str(small), "-o", str(out)] + model, "covers none of the")
    assert not out.exists()

