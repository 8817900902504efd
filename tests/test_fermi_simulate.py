"""The LAT instrument model, the catalogues, the diffuse variants and the patch simulation."""

from __future__ import annotations

import numpy as np
import pytest

from skyml.fermi import catalog, diffuse, irf
from skyml.fermi import simulate as S

P = S.FermiSimParams()


def power_law(flux1000, index=2.0):
    n = len(np.atleast_1d(flux1000))
    return {"spectrum_type": np.full(n, catalog.POWERLAW), "index": np.full(n, float(index)),
            "beta": np.zeros(n), "expfactor": np.zeros(n), "exp_index": np.ones(n),
            "pivot_mev": np.full(n, 1000.0), "flux1000": np.atleast_1d(flux1000).astype(float)}


def test_psf_scale_law():
    # S(E) of the Cicerone at 100 MeV is c0 (FRONT 6.38e-2 rad); at high energy it tends to c1
    assert irf.psf_scale_rad(100.0, "front") == pytest.approx(np.hypot(6.38e-2, 1.26e-3))
    assert irf.psf_scale_rad(1e7, "back") == pytest.approx(2.22e-3, rel=1e-3)


def test_expected_counts_of_a_known_flux():
    """An E^-2 power law: photon flux per bin is F * ln-ratio; counts are flux × exposure."""
    f = 1e-9
    spec = power_law([f], 2.0)
    # dN/dE ∝ E^-2 normalised to F over 1–100 GeV: flux in [a, b] = F (1/a - 1/b) / (1/1e3 - 1/1e5)
    e = irf.ENERGY_EDGES_MEV
    expected_flux = f * (1 / e[:-1] - 1 / e[1:]) / (1 / 1e3 - 1 / 1e5)
    for k in range(irf.N_BINS):
        assert catalog.band_photon_flux(spec, e[k], e[k + 1])[0] == pytest.approx(expected_flux[k], rel=0.01)
    counts = S.expected_bin_counts(spec, "front+back")[0]
    # exposure varies slowly within a bin: counts ≈ flux × exposure at the bin's log centre (±10 %)
    centre = np.sqrt(e[:-1] * e[1:])
    assert counts == pytest.approx(expected_flux * irf.exposure_cm2s(centre), rel=0.1)
    assert counts[1] == pytest.approx(expected_flux[1] * irf.EXPOSURE_1GEV_CM2S, rel=0.1)
    front = S.expected_bin_counts(spec, "front")[0]
    assert front == pytest.approx(irf.FRONT_FRACTION * counts)


def test_dr2_catalogue_and_spectra():
    cat = catalog.load_dr2()
    assert len(cat["name"]) == 5788
    assert cat["c_source"].sum() > 100
    catalog.check_spectra({k: cat[k] for k in catalog.SPECTRUM_FIELDS})
    # the 1–100 GeV integral of every normalised catalogue spectrum is its Flux1000
    flux = catalog.band_photon_flux({k: cat[k][:200] for k in catalog.SPECTRUM_FIELDS}, 1e3, 1e5, 256)
    assert flux == pytest.approx(cat["flux1000"][:200], rel=2e-3)


def test_mock_catalogue_distributions_and_determinism():
    a = catalog.mock_catalogue(3)
    b = catalog.mock_catalogue(3)
    c = catalog.mock_catalogue(4)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["glon"], c["glon"])
    cat = catalog.load_dr2()
    assert a["faint"].sum() > 0.4 * len(a["faint"])  # the below-threshold population exists
    assert np.median(a["flux1000"][a["faint"]]) < np.percentile(cat["flux1000"], 5)
    assert np.all(a["spectrum_type"][a["group"] == "psr"] == catalog.PLEC)
    assert np.all(a["spectrum_type"][a["group"] == "agn"] == catalog.LOGPARABOLA)
    # AGN isotropic (<sin|b|> = 0.5), pulsars and plane sources concentrated to the plane
    sinb = np.abs(np.sin(np.deg2rad(a["glat"])))
    assert np.mean(sinb[a["group"] == "agn"]) == pytest.approx(0.5, abs=0.03)
    assert np.median(np.abs(a["glat"][a["group"] == "plane"])) < 10
    assert np.median(np.abs(a["glat"][a["group"] == "psr"])) < 15


def test_diffuse_variants_differ_and_are_plane_concentrated():
    lon = np.array([0.0, 0.0, 60.0, 180.0, 90.0])
    lat = np.array([0.0, 2.5, 0.0, 0.0, 60.0])
    v1 = diffuse.integral_intensity(lon, lat, 1)
    v2 = diffuse.integral_intensity(lon, lat, 2)
    assert v1[0] > v1[2] > v1[3] and v1[0] > 10 * v1[4]
    assert np.all(np.abs(v2 / v1 - 1) > 0.05)
    assert 1e-5 < v1[0] < 1e-4 and 1e-7 < v1[4] < 2e-6
    with pytest.raises(ValueError):
        diffuse.get_variant(3)


def test_patch_geometry_wrap_and_ownership():
    wcs = S.patch_wcs(0.0, 0.0, P)
    x, y = S.world_to_pix(wcs, [359.0, 1.0, 0.0], [0.0, 0.0, 4.9])
    assert x[0] > 31.5 > x[1]  # longitude increases to the left, across l = 0/360
    assert S.in_patch(x, y, P.npix).all()
    lon, lat = S.pix_to_world(wcs, x, y)
    np.testing.assert_allclose(lon, [359.0, 1.0, 0.0], atol=1e-9)
    lon_c, lat_c = S.healpix_centres()
    assert len(lon_c) == 768
    np.testing.assert_array_equal(S.owner_pixel(lon_c, lat_c), np.arange(768))


def test_simulated_patches_are_deterministic_and_consistent():
    a = S.simulate_patches(2, 7, P, "train")
    b = S.simulate_patches(2, 7, P, "train")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert a["counts"].dtype == np.int32 and a["counts"].shape == (2, 6, 64, 64)
    # counts are Poisson around background + sources: the total is at least the background
    assert a["counts"].sum() > 0.95 * a["background"].sum()
    inputs = S.network_inputs(a["counts"], P)
    assert [x.shape for x in inputs] == [(2, 64, 64, 4), (2, 32, 32, 1), (2, 16, 16, 1)]
    np.testing.assert_allclose(np.expm1(inputs[2]).sum(axis=(1, 2, 3)), a["counts"][:, 0].sum(axis=(1, 2)),
                               rtol=1e-5)
    masks = S.disk_masks(a, P)
    bright = a["src_in_patch"] & (a["src_flux1000"] >= P.label_flux_min)
    for i, x, y in zip(a["src_patch"][bright], a["src_x_pix"][bright], a["src_y_pix"][bright]):
        assert masks[int(i), int(round(y)), int(round(x)), 0] == 1.0


def test_shifted_instrument_psf_and_exposure():
    """psf_scale widens every PSF by its factor; exposure_scale scales sources and
    background; the nominal instrument keeps the cache keys it always had."""
    import pytest

    from skyml.fermi import baselines, healpix

    nominal = S.FermiSimParams()
    wide = S.FermiSimParams(psf_scale=1.2)
    dim = S.FermiSimParams(exposure_scale=0.8)
    assert "psf_scale" not in nominal.to_dict() and "exposure_scale" not in nominal.to_dict()
    assert wide.to_dict()["psf_scale"] == 1.2 and S.FermiSimParams.from_dict(wide.to_dict()) == wide
    assert S.FermiSimParams.from_dict(nominal.to_dict()) == nominal and nominal.nominal_instrument
    with pytest.raises(ValueError):
        S.FermiSimParams(psf_scale=0.0)

    def rms_radius(p, k=1):  # 1-3 GeV: the PSF is several pixels wide
        img = S.render_sources([31.5], [31.5], np.ones((1, len(S.irf.node_grid()[0]))), p)[k]
        yy, xx = np.mgrid[:p.npix, :p.npix]
        r2 = ((xx - 31.5) ** 2 + (yy - 31.5) ** 2) * p.binsz_deg**2
        core = r2 < 3.0**2
        return np.sqrt(np.sum(img[core] * r2[core]) / np.sum(img[core]))

    ratio = rms_radius(wide) / rms_radius(nominal)
    assert 1.12 < ratio < 1.28
    b0, b1 = S.background_model(40.0, 30.0, nominal), S.background_model(40.0, 30.0, dim)
    np.testing.assert_allclose(b1, 0.8 * b0, rtol=1e-12)
    sky = S._sky("mock", [5, 0, 1000], nominal)
    np.testing.assert_allclose(S._sky("mock", [5, 0, 1000], dim)["node_counts"], 0.8 * sky["node_counts"])
    # the TS map's PSF follows the scale and stays normalised
    _, et = baselines._axes()
    for p in (nominal, wide):
        psf = baselines.psf_map(p, et).psf_map
        rad = psf.geom.axes["rad"]
        r = np.deg2rad(rad.center.to_value("deg"))
        dr = np.deg2rad(rad.bin_width.to_value("deg"))
        norm = np.sum(psf.data[:, :, 0, 0] * 2 * np.pi * r * dr, axis=1)
        assert np.all(np.abs(norm - 1.0) < 0.03)
    assert baselines.default_kernel_width_deg(wide) > 1.15 * baselines.default_kernel_width_deg(nominal)
    with pytest.raises(ValueError, match="nominal PSF"):
        healpix.expected_allsky(None, wide, nside=[8] * 6)


def test_background_models_of_a_patch_set():
    """The expected background of each patch: the simulation's own for the instrument that drew the
    patches, the analyst's (another exposure) scaled by the exposure ratio."""
    data = S.simulate_patches(2, 7, P, "train")
    own = S.background_models(data, P)
    assert own.dtype == np.float32 and own.shape == data["background"].shape
    np.testing.assert_allclose(own, data["background"], rtol=1e-6)
    analyst = S.background_models(data, S.FermiSimParams(exposure_scale=0.8))
    np.testing.assert_allclose(analyst, 0.8 * own, rtol=1e-5)
