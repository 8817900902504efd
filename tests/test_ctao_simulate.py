"""CTAO survey toy: determinism, labels, and the expected counts against gammapy."""

from __future__ import annotations

import numpy as np
import pytest

from skyml.ctao import simulate
from skyml.ctao.simulate import SurveyParams

P = SurveyParams(npix=128)  # a 2.56° patch on the same grid spacing: fast


def test_same_seed_same_patches_bit_for_bit():
    a = simulate.simulate_patches(2, 7, P, "train")
    b = simulate.simulate_patches(2, 7, P, "train")
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    c = simulate.simulate_patches(2, 8, P, "train")
    assert not np.array_equal(a["counts"], c["counts"])
    d = simulate.simulate_patches(1, 7, P, "val")
    assert not np.array_equal(a["counts"][0], d["counts"][0])


def test_population_follows_the_recipe():
    rng = np.random.default_rng(0)
    p = SurveyParams()
    draws = [simulate.draw_sources(rng, p) for _ in range(200)]
    n = np.array([len(d["glon"]) for d in draws])
    assert n.min() >= 20 and n.max() <= 40
    glat = np.concatenate([d["glat"] for d in draws])
    assert np.all(np.abs(glat) < 5.12 + p.pair_sep_max_deg)
    assert 1.1 < np.std(glat[~np.concatenate([d["companion"] >= 0 for d in draws])]) < 1.5
    index = np.concatenate([d["index"] for d in draws])
    assert abs(index.mean() - 2.2) < 0.02 and abs(index.std() - np.sqrt(0.05)) < 0.02
    flux = np.concatenate([d["flux_1tev"] for d in draws]) / simulate.MCRAB
    assert flux.min() >= 1.0 and flux.max() <= 1000.0
    # N(>F) ∝ F^-0.8: the fraction above 10 mCrab is 10^-0.8 of the whole (truncation aside)
    assert abs(np.mean(flux > 10) - 10**-0.8) < 0.02
    kind = np.concatenate([d["kind"] for d in draws])
    assert abs(np.mean(kind > 0) - 0.25) < 0.03
    pairs = np.concatenate([d["companion"] for d in draws])
    assert np.mean(pairs >= 0) > 0.2


def test_sensitivity_is_finite_and_worse_off_the_plane():
    sens = simulate.sensitivity_map(SurveyParams()) / simulate.MCRAB
    assert np.all(np.isfinite(sens)) and np.all(sens > 0)
    assert 1.0 < sens[256, 256] < 10.0  # a few mCrab, as the CTAO GPS
    assert sens[5, 256] > 2 * sens[256, 256]


def test_labels_and_counts_are_consistent():
    d = simulate.simulate_patches(1, 3, P, "test")
    s = simulate.patch_sources(d, 0)
    assert np.all(s["labelled"] == (s["flux_1tev"] >= s["sens_flux"]) & (np.abs(s["x_pix"] - 63.5) < 64)
                  & (np.abs(s["y_pix"] - 63.5) < 64))
    bkg = simulate.irf_maps(P)["background"]
    total = d["source_npred"][0].sum(axis=(1, 2)) + bkg.sum(axis=(1, 2))
    assert np.all(np.abs(d["counts"][0].sum(axis=(1, 2)) - total) < 5 * np.sqrt(total) + 5)


def test_direction_targets_point_to_the_nearest_centre():
    t = simulate.direction_targets([10.0, 40.0], [20.0, 20.0], (32, 64))
    # a pixel left of the first centre points right (+x): cos = 1, sin = 0
    np.testing.assert_allclose(t[20, 5, :2], [0.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(t[25, 40, :2], [-1.0, 0.0], atol=1e-6)  # above-right of centre 2 ... straight down
    assert t[20, 10, 2] == pytest.approx(1.0)
    assert np.allclose(np.hypot(t[..., 0], t[..., 1])[t[..., 2] < 1], 1.0, atol=1e-5)


def test_disk_mask_and_label_radius():
    m = simulate.disk_mask([5.0], [5.0], [2.0], (11, 11))
    assert m.sum() == 13  # the lattice points within radius 2
    r = simulate.label_radius_px([0.0, 0.5], SurveyParams())
    np.testing.assert_allclose(r, [2.0, 12.5])


def test_network_input_scalings():
    c = np.ones((1, 3, 8, 8), np.int32)
    lin = simulate.network_input(c, P, "linear")
    np.testing.assert_allclose(simulate.network_input(c, P, "log"), np.log1p(lin), rtol=1e-6)
    assert lin.shape == (1, 8, 8, 3) and lin[0, 0, 0, 0] < lin[0, 0, 0, 2]
    with pytest.raises(ValueError, match="scaling"):
        simulate.network_input(c, P, "sqrt")
    with pytest.raises(ValueError, match="counts must be"):
        simulate.network_input(np.ones((3, 8, 8)), P)


@pytest.mark.slow
def test_expected_counts_agree_with_gammapy_mapdataset():
    """Exposure, background and point-source npred of the fast path against
    gammapy's MapDatasetMaker on the survey's pointings and MapDataset.npred,
    per energy bin.

    gammapy integrates the background rate over each reconstructed-energy bin
    log-log between the bin edges only; the seed's bins span a factor 11 each,
    the rate is curved, and the prod3b-v2 background curve ends at 25 TeV (its
    last node), so without oversampling gammapy is ~20 % low in 0.07-0.788 TeV
    and zero in 8.88-100 TeV (an edge outside the curve). ``background_oversampling``
    is gammapy's own remedy and is used here."""
    import astropy.units as u
    from astropy.coordinates import SkyCoord
    from gammapy.data import FixedPointingInfo, Observation
    from gammapy.datasets import MapDataset
    from gammapy.makers import MapDatasetMaker
    from gammapy.maps import WcsGeom
    from gammapy.modeling.models import PointSpatialModel, PowerLawSpectralModel, SkyModel

    p = P
    irf = simulate.survey_irf(p)
    e, et = simulate.energy_axes()
    geom = WcsGeom.create(skydir=SkyCoord(p.centre_glon, p.centre_glat, unit="deg", frame="galactic"),
                          npix=p.npix, binsz=p.binsz_deg, frame="galactic", proj="CAR", axes=[e])
    stacked = MapDataset.create(geom, energy_axis_true=et, binsz_irf=0.2, name="stacked")
    maker = MapDatasetMaker(selection=["exposure", "background", "psf", "edisp"], background_oversampling=16)
    plon, plat = simulate.pointings(p)
    for k, (lo, la) in enumerate(zip(plon, plat)):
        pnt = SkyCoord(lo, la, unit="deg", frame="galactic").icrs
        obs = Observation.create(pointing=FixedPointingInfo(fixed_icrs=pnt), livetime=p.livetime_h * u.h,
                                 irfs=irf.as_dict(), obs_id=k)
        ds = maker.run(MapDataset.create(geom, energy_axis_true=et, binsz_irf=0.2, name=f"o{k}"), obs)
        stacked.stack(ds)
    maps = simulate.irf_maps(p)
    # exposure: every true-energy bin and pixel within 1 %
    ex_gp = stacked.exposure.quantity.to_value("cm2 s")
    live = ex_gp > 0
    np.testing.assert_allclose(maps["exposure_cm2s"][live], ex_gp[live], rtol=0.01)
    assert np.all(maps["exposure_cm2s"][~live] == 0)
    # background per reconstructed bin: totals within 1.5 %, 95 % of the pixels within 5 %
    bkg_mine, bkg_gp = maps["background"].astype(float), stacked.background.data
    assert np.all(bkg_gp.sum(axis=(1, 2)) > 0)
    np.testing.assert_allclose(bkg_mine.sum(axis=(1, 2)), bkg_gp.sum(axis=(1, 2)), rtol=0.015)
    for k in range(3):
        assert np.percentile(np.abs(bkg_mine[k] / bkg_gp[k] - 1), 95) < 0.05, k
    # a point source of 20 mCrab, index 2.4, at the patch centre and off-centre
    index, flux = 2.4, 20 * simulate.MCRAB
    for x, y in ((64.0, 64.0), (30.0, 100.0)):
        spec = PowerLawSpectralModel(index=index, amplitude=1 * u.Unit("cm-2 s-1 TeV-1"), reference=1 * u.TeV)
        spec.amplitude.value = flux / spec.integral(1 * u.TeV, 1e5 * u.TeV).to_value("cm-2 s-1")
        glon, glat = simulate.wcs(p).wcs_pix2world(x, y, 0)
        stacked.models = [SkyModel(spectral_model=spec, spatial_model=PointSpatialModel(
            lon_0=float(glon) * u.deg, lat_0=float(glat) * u.deg, frame="galactic"))]
        npred_gp = stacked.npred_signal().data
        comps = simulate.npred_components(flux, index, x, y, p)[0]
        mine = np.zeros((3, p.npix, p.npix))
        simulate.render_source(x, y, comps, 0, 0.0, p, mine)
        # npred per reconstructed bin within 2 %
        np.testing.assert_allclose(mine.sum(axis=(1, 2)), npred_gp.sum(axis=(1, 2)), rtol=0.02)
        xi, yi = int(x), int(y)
        core = (slice(yi - 3, yi + 4), slice(xi - 3, xi + 4))
        # the PSF (exposure-weighted over the pointings, as gammapy stacks it): counts within 3 px, per bin
        np.testing.assert_allclose(mine[(slice(None),) + core].sum(axis=(1, 2)),
                                   npred_gp[(slice(None),) + core].sum(axis=(1, 2)), rtol=0.03)


def test_dihedral_crops_turn_images_masks_and_direction_targets_together():
    c = 16
    xs, ys = np.array([3.0, 11.0]), np.array([5.0, 12.0])
    direc = simulate.direction_targets(xs, ys, (c, c))
    mask = simulate.disk_mask(xs, ys, [1.5, 1.5], (c, c))[..., None].astype(np.float32)
    counts = np.arange(2 * c * c, dtype=np.float32).reshape(1, 2, c, c)
    n = 64  # the same crop many times: every element of the group turns up
    args = (np.repeat(counts, n, 0), np.repeat(mask[None], n, 0), np.repeat(direc[None], n, 0))
    extra = args[0] + 0.5
    tc, tm, td, te = simulate.dihedral_crops(*args, seed=(3, 1), extra=extra)
    assert np.array_equal(te, tc + 0.5)  # the extra array turned like the counts
    seen = set()
    for i in range(n):
        # find the element: the position of the first pixel of the counts tells it
        ref = tc[i, 0]
        for transpose in (False, True):
            for fr in (False, True):
                for fc in (False, True):
                    x, y = xs.copy(), ys.copy()
                    img = counts[0, 0]
                    if transpose:
                        img, x, y = img.T, y, x
                    if fr:
                        img, y = img[::-1], c - 1 - y
                    if fc:
                        img, x = img[:, ::-1], c - 1 - x
                    if np.array_equal(img, ref):
                        seen.add((transpose, fr, fc))
                        # the turned targets are those of the turned source positions
                        np.testing.assert_allclose(td[i], simulate.direction_targets(x, y, (c, c)), atol=1e-5)
                        np.testing.assert_array_equal(tm[i, ..., 0], simulate.disk_mask(x, y, [1.5, 1.5], (c, c)))
    assert len(seen) == 8
    # the inputs are not modified; the same seed gives the same turns
    np.testing.assert_array_equal(args[2][0], direc)
    again = simulate.dihedral_crops(*args, seed=(3, 1), extra=extra)
    for a, b in zip((tc, tm, td, te), again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(simulate.dihedral_crops(*args, seed=(3, 2))[0], tc)


def test_training_crops_of_a_seed_sequence():
    data = simulate.simulate_patches(2, 5, P)
    a = simulate.training_crops(data, P, 32, 4, 7)
    b = simulate.training_crops(data, P, 32, 4, (7,))  # an int seed is the sequence of that one int
    c = simulate.training_crops(data, P, 32, 4, (7, 1))
    d = simulate.training_crops(data, P, 32, 4, (7, 2))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(c[0], d[0]) and not np.array_equal(a[0], c[0])
