"""Simulation of CTA observations: IRFs from the ctaplot curves, statistics,
determinism, the cache, and agreement with gammapy's own npred and DL3 paths."""

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord

from skyml import cache
from skyml.cta import irf as cta_irf
from skyml.cta.psf import containment_radius, source_npred_map
from skyml.cta.simulate import (
    CTASimParams, bin_events, crab_spectrum, load_maps, make_dataset, simulate_dl3, simulate_maps,
    source_model_at,
)

NAME = "prod3b-v2 South z20"


def test_performance_curves_resolve_and_parse():
    for version, site, zen in cta_irf.IRF_CHOICES:
        for quantity, duration in (("EffArea", "30m"), ("Angres", "50h"), ("Eres", "50h"),
                                   ("BackgroundSqdeg", "50h")):
            table = cta_irf.read_performance_curve(
                cta_irf.performance_file(version, site, zen, quantity, duration))
            assert len(table) > 10
            assert np.all(np.asarray(table["value"]) > 0)


def test_unknown_irf_is_refused():
    with pytest.raises(ValueError, match="unknown IRF"):
        cta_irf.build_irf("prod3b-v1 South z60")  # not among the installed curve sets


def test_irf_objects_reproduce_the_curves():
    irf = cta_irf.build_irf(NAME)
    curves = cta_irf._curves(NAME)
    # on-axis effective area at a tabulated energy
    e = curves["aeff"]["energy"][40]
    aeff = irf.aeff.evaluate(energy_true=e, offset=0 * u.deg).to_value("m2")
    assert aeff == pytest.approx(curves["aeff"]["value"][40], rel=0.05)
    # PSF 68% containment from gammapy's PSF3D against the angular-resolution curve
    for row in (4, 8, 12):
        e = curves["angres"]["energy"][row]
        r68 = irf.psf.containment_radius(0.68, energy_true=e, offset=0 * u.deg).to_value("deg")
        assert r68 == pytest.approx(curves["angres"]["value"][row], rel=0.06)
    # field-of-view fall-off of the effective area
    a0 = irf.aeff.evaluate(energy_true=1 * u.TeV, offset=0.1 * u.deg)
    a2 = irf.aeff.evaluate(energy_true=1 * u.TeV, offset=2.1 * u.deg)
    expected = np.exp(-0.5 * (2.1**2 - 0.1**2) / irf.fov_sigma_deg**2)
    assert (a2 / a0).to_value("") == pytest.approx(expected, rel=0.02)
    # background rate integrated over 1 deg² and the reco bin around 1 TeV (Hz deg^-2)
    centre, rate = cta_irf._background_bins(curves["bkg"])
    k = int(np.argmin(abs(centre - 1.0)))
    e_lo, e_hi = centre[k] * 10**-0.1, centre[k] * 10**0.1
    dnde = irf.bkg.evaluate(energy=centre[k] * u.TeV, offset=0 * u.deg)
    hz_per_deg2 = (dnde * (e_hi - e_lo) * u.TeV * (1 * u.deg**2)).to_value("s-1")
    assert hz_per_deg2 == pytest.approx(rate[k], rel=0.15)


def test_fast_source_model_matches_gammapy_npred():
    p = CTASimParams()
    pnt = SkyCoord(40.0, -20.0, unit="deg")
    src = pnt.directional_offset_by(70 * u.deg, 1.3 * u.deg)
    dataset, _ = make_dataset(NAME, pnt, p)
    from gammapy.modeling.models import PointSpatialModel, SkyModel

    dataset.models = [SkyModel(spectral_model=crab_spectrum(0.4),
                               spatial_model=PointSpatialModel(lon_0=src.ra, lat_0=src.dec, frame="icrs"))]
    gp = dataset.npred_signal().data.sum(axis=0)
    npred, sigmas, weights = source_model_at(NAME, pnt.separation(src).deg, 0.4, p)
    x, y = dataset.counts.geom.to_image().wcs.world_to_pixel(src)
    mine = source_npred_map(float(x), float(y), npred, sigmas / p.binsz_deg, weights, gp.shape)
    assert mine.sum() == pytest.approx(gp.sum(), rel=0.02)
    yy, xx = np.mgrid[: gp.shape[0], : gp.shape[1]]
    r_deg = np.hypot(xx - x, yy - y) * p.binsz_deg
    for radius in (0.05, 0.1, 0.2):
        assert mine[r_deg < radius].sum() == pytest.approx(gp[r_deg < radius].sum(), rel=0.05)
    # the energy-integrated PSF is wider than the 1 TeV one and narrower than at 50 GeV
    r68 = containment_radius(sigmas, weights)
    assert 0.049 < r68 < 0.25


def test_maps_statistics_and_labels():
    p = CTASimParams()
    m = simulate_maps(60, seed=5, params=p, progress=False)
    assert m["counts"].shape == (60, 200, 200) and m["counts"].dtype == np.uint16
    assert np.all(m["source_counts"] <= m["counts"])
    assert np.all(m["offset_deg"] <= p.offset_max_deg)
    # the source pixel is where the sky position is, through the map WCS
    from skyml.cta.simulate import map_wcs
    w = map_wcs(m["pnt_ra_deg"][0], m["pnt_dec_deg"][0])
    sky = w.pixel_to_world(m["src_x_pix"][0], m["src_y_pix"][0])
    assert sky.ra.deg == pytest.approx(m["src_ra_deg"][0], abs=1e-6)
    # Poisson statistics: total counts scatter around their expectation
    expected = m["npred_source"] + m["npred_background"]
    total = m["counts"].reshape(60, -1).sum(axis=1)
    pulls = (total - expected) / np.sqrt(expected)
    assert abs(pulls.mean()) < 0.5 and 0.6 < pulls.std() < 1.4
    # background template scaled by bkg_norm matches the background counts
    bkg = m["background_templates"][m["irf_id"]].reshape(60, -1).sum(axis=1) * m["bkg_norm"]
    assert np.allclose(bkg, m["npred_background"], rtol=1e-5)
    assert set(np.unique(m["irf_id"])) <= set(range(len(p.irfs)))
    assert len(np.unique(m["irf_id"])) >= 5  # IRFs drawn at random per map
    # the expected-counts map is the Poisson mean of each map: pulls of the totals
    from skyml.cta.simulate import expected_counts
    mu_total = np.array([expected_counts(m, i, p).sum() for i in range(60)])
    assert np.all(mu_total <= expected * (1 + 1e-6))  # the part of the PSF outside the map is lost
    pulls_map = (total - mu_total) / np.sqrt(mu_total)
    assert abs(pulls_map.mean()) < 0.5 and 0.6 < pulls_map.std() < 1.4


def test_same_seed_same_arrays_bit_for_bit(tmp_path):
    p = CTASimParams()
    a = simulate_maps(8, seed=11, params=p, progress=False)
    b = simulate_maps(8, seed=11, params=p, progress=False)
    c = simulate_maps(8, seed=12, params=p, progress=False)
    prefix = simulate_maps(3, seed=11, params=p, progress=False)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
        if key not in ("background_templates", "irf_names"):
            np.testing.assert_array_equal(a[key][:3], prefix[key])
    assert not np.array_equal(a["counts"], c["counts"])
    val = simulate_maps(8, seed=11, params=p, progress=False, split="val")
    assert not np.array_equal(a["counts"], val["counts"])


def test_cache_returns_identical_arrays(tmp_path, monkeypatch):
    monkeypatch.setattr(cache.paths, "CACHE", tmp_path)
    p = CTASimParams()
    first = load_maps(4, 3, p, progress=False)
    entries = list((tmp_path / "cta_maps").iterdir())
    assert len(entries) == 1
    second = load_maps(4, 3, p, progress=False)
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])
    assert cache.param_hash("cta_maps", {"a": 1}) != cache.param_hash("cta_maps", {"a": 2})


def test_dl3_event_list_binning_matches_direct_sampling(tmp_path):
    """Binning gammapy-sampled DL3 event lists gives the statistics of the
    direct (fast) sampling for the same observation."""
    p = CTASimParams()
    pnt = SkyCoord(120.0, 10.0, unit="deg")
    src = pnt.directional_offset_by(200 * u.deg, 0.8 * u.deg)
    flux = 0.6
    n_src, sigmas, weights = source_model_at(NAME, pnt.separation(src).deg, flux, p)
    dataset, _ = make_dataset(NAME, pnt, p)
    bkg_template = dataset.background.data.sum(axis=0)
    x, y = dataset.counts.geom.to_image().wcs.world_to_pixel(src)
    mu = bkg_template + source_npred_map(float(x), float(y), n_src, sigmas / p.binsz_deg, weights)
    yy, xx = np.mgrid[:200, :200]
    on = np.hypot(xx - x, yy - y) * p.binsz_deg < 0.2

    totals, on_counts = [], []
    for k in range(4):
        obs = simulate_dl3(k, p, NAME, pnt, src, flux_crab=flux)
        path = tmp_path / f"obs{k}.fits"
        obs.write(path)
        from gammapy.data import EventList

        counts = bin_events(EventList.read(path), pnt.ra.deg, pnt.dec.deg, p)
        totals.append(counts.sum())
        on_counts.append(counts[on].sum())
    # mean of 4 Poisson draws: standard error sqrt(mu / 4); allow 4 sigma plus 2% model difference
    assert abs(np.mean(totals) - mu.sum()) < 4 * np.sqrt(mu.sum() / 4) + 0.02 * mu.sum()
    assert abs(np.mean(on_counts) - mu[on].sum()) < 4 * np.sqrt(mu[on].sum() / 4) + 0.03 * mu[on].sum()


def test_map_wcs_is_the_wcs_of_map_geom():
    """The fast WCS of a pointing is the WcsGeom's: same header, same sky positions
    of the same pixels, for pointings all over the sky and both celestial poles."""
    from skyml.cta.simulate import map_geom, map_wcs

    rng = np.random.default_rng(11)
    pointings = [*zip(rng.uniform(0, 360, 40), rng.uniform(-89.99, 89.99, 40)), (0.0, 90.0), (12.0, -90.0),
                 (359.999, 0.0)]
    x, y = rng.uniform(-3, 103, 20), rng.uniform(-3, 103, 20)
    for npix, binsz in ((200, 0.025), (100, 0.05)):
        for ra, dec in pointings:
            fast, geom = map_wcs(ra, dec, npix, binsz), map_geom(ra, dec, npix, binsz).wcs
            assert fast.to_header_string() == geom.to_header_string()
            a, b = fast.pixel_to_world(x, y), geom.pixel_to_world(x, y)
            assert np.array_equal(a.ra.deg, b.ra.deg) and np.array_equal(a.dec.deg, b.dec.deg)


def test_longer_set_starts_from_the_cached_shorter_one(tmp_path, monkeypatch):
    monkeypatch.setattr(cache.paths, "CACHE", tmp_path)
    p = CTASimParams()
    load_maps(3, 4, p, progress=False)
    load_maps(2, 4, p, progress=False, split="val")  # another split is not a prefix
    starts = []
    real = simulate_maps

    def spy(*args, **kwargs):
        starts.append(kwargs.get("start", 0))
        return real(*args, **kwargs)

    monkeypatch.setattr("skyml.cta.simulate.simulate_maps", spy)
    longer = load_maps(5, 4, p, progress=False)
    assert starts == [3]  # only maps 3 and 4 simulated
    whole = real(5, 4, p, progress=False)
    assert set(longer) == set(whole)
    for key in whole:
        np.testing.assert_array_equal(longer[key], whole[key])
        assert longer[key].dtype == whole[key].dtype
    rest = real(5, 4, p, progress=False, start=3)
    np.testing.assert_array_equal(rest["counts"], whole["counts"][3:])
    with pytest.raises(ValueError, match="start"):
        real(5, 4, p, progress=False, start=5)
    # the longest cached shorter set is the one used; a damaged one is passed over
    load_maps(7, 4, p, progress=False)
    assert starts == [3, 5]
    entry = cache.entry_dir("cta_maps", {"n_maps": 7, "seed": 4, "split": "train", **p.to_dict(), "version": 1})
    with open(entry / cache.ARRAYS_FILE, "r+b") as f:
        f.seek(200)
        f.write(b"damaged")
    load_maps(8, 4, p, progress=False)
    assert starts == [3, 5, 5]
