"""The shifted CTA test set (held-out curve set, two-component PSF, other
spectra, edge and corner sources) and the localisation metrics reported on it."""

import numpy as np
import pytest
from skyml import cache
from skyml.cta import baselines, evaluation
from skyml.cta import irf as cta_irf
from skyml.cta import simulate as sim
from skyml.cta.psf import containment_radius

HELDOUT = cta_irf.HELDOUT_IRF_NAMES[0]
TRAIN_LIKE = "prod3b-v2 North z60"  # a training curve set at the same zenith
SHIFTED_P = sim.shifted_sky_params(sim.CTASimParams())


def test_heldout_curve_set_is_installed_but_never_drawn_in_training():
    assert HELDOUT == "prod3b-v2 South z60"
    assert HELDOUT not in cta_irf.IRF_NAMES and HELDOUT not in sim.CTASimParams().irfs
    assert set(cta_irf.IRF_NAMES).isdisjoint(SHIFTED_P.irfs)
    irf = cta_irf.build_irf(HELDOUT)
    r68 = irf.psf.containment_radius(0.68, energy_true=1 * cta_irf.u.TeV, offset=0 * cta_irf.u.deg)
    curve = cta_irf._curves(HELDOUT)["angres"]
    assert r68.to_value("deg") == pytest.approx(
        np.interp(0.0, np.log(curve["energy"].to_value("TeV")), np.asarray(curve["value"])), rel=0.1)


def test_spectral_reweight_is_one_at_the_crab_index_and_tilts_with_index():
    assert np.allclose(sim.spectral_reweight(sim.CRAB_INDEX), 1.0)
    hard, soft = sim.spectral_reweight(2.2), sim.spectral_reweight(2.8)
    assert np.all(np.diff(hard) > 0) and np.all(np.diff(soft) < 0)  # harder spectrum: more high-energy counts
    # the same amplitude at the reference energy: the bin holding 0.3 TeV keeps about its counts
    edges = np.geomspace(cta_irf.ENERGY_TRUE_EDGES_TEV[0], cta_irf.ENERGY_TRUE_EDGES_TEV[-1], sim.N_TRUE_ENERGY + 1)
    k = np.searchsorted(edges, 0.3) - 1
    assert hard[k] == pytest.approx(1.0, abs=0.05) and soft[k] == pytest.approx(1.0, abs=0.05)


def test_shifted_psf_is_wider_than_the_training_psf_of_the_same_curves():
    p = SHIFTED_P
    npred0, sig0, w0 = sim.source_model_at(HELDOUT, 1.0, 1.0, p)
    npred1, sig1, w1 = sim.shifted_source_model(HELDOUT, 1.0, 1.0, p, index=sim.CRAB_INDEX, aeff_scale=1.0,
                                                psf_scale=1.0, tail_fraction=0.25, tail_ratio=3.0)
    assert npred1 == pytest.approx(npred0)
    assert sig1.shape == (2 * sim.N_TRUE_ENERGY,) and np.allclose(sig1[sim.N_TRUE_ENERGY:], 3 * sig0)
    assert w1[sim.N_TRUE_ENERGY:].sum() == pytest.approx(0.25)
    r0, r1 = containment_radius(sig0, w0), containment_radius(sig1, w1)
    assert r1 > 1.3 * r0
    # no tail and unit scale: the training PSF again
    _, sig2, w2 = sim.shifted_source_model(HELDOUT, 1.0, 1.0, p, sim.CRAB_INDEX, 1.0, 1.0, 0.0, 3.0)
    assert containment_radius(sig2, w2) == pytest.approx(r0, rel=1e-6)
    # effective area and flux scale the counts
    n3, _, _ = sim.shifted_source_model(HELDOUT, 1.0, 2.0, p, sim.CRAB_INDEX, 1.2, 1.0, 0.0, 3.0)
    assert n3 == pytest.approx(2.4 * npred0)


@pytest.fixture(scope="module")
def shifted_maps():
    return sim.simulate_shifted_maps(30, 7, SHIFTED_P, sim.CTAShift(), progress=False)


def test_shifted_maps_are_deterministic_and_seeded(shifted_maps):
    again = sim.simulate_shifted_maps(30, 7, SHIFTED_P, sim.CTAShift(), progress=False)
    for key in shifted_maps:
        np.testing.assert_array_equal(shifted_maps[key], again[key])
    prefix = sim.simulate_shifted_maps(4, 7, SHIFTED_P, sim.CTAShift(), progress=False)
    np.testing.assert_array_equal(prefix["counts"], shifted_maps["counts"][:4])
    other = sim.simulate_shifted_maps(4, 8, SHIFTED_P, sim.CTAShift(), progress=False)
    assert not np.array_equal(other["counts"], prefix["counts"])


def test_shifted_maps_differ_from_training_as_intended(shifted_maps):
    m, s = shifted_maps, sim.CTAShift()
    assert list(m["irf_names"]) == [HELDOUT]
    assert m["psf_sigmas_deg"].shape == (30, 2 * sim.N_TRUE_ENERGY)
    for key, lo, hi in (("spectral_index", s.index_min, s.index_max), ("aeff_scale", 1 - s.aeff_spread, 1 + s.aeff_spread),
                        ("psf_scale", s.psf_scale_min, s.psf_scale_max),
                        ("psf_tail_fraction", s.tail_fraction_min, s.tail_fraction_max),
                        ("flux_crab", SHIFTED_P.flux_min_crab, SHIFTED_P.flux_max_crab),
                        ("bkg_norm", 1 - SHIFTED_P.bkg_norm_spread, 1 + SHIFTED_P.bkg_norm_spread)):
        assert np.all((m[key] >= lo) & (m[key] <= hi)), key
        assert np.ptp(m[key]) > 0.3 * (hi - lo), key  # drawn per map
    # PSF 68% radius wider than a training map's of the same curve set
    train = sim.simulate_maps(10, 7, sim.CTASimParams(irfs=(TRAIN_LIKE,)), progress=False)
    r_shift = np.median([containment_radius(a, b) for a, b in zip(m["psf_sigmas_deg"], m["psf_weights"])])
    r_train = np.median([containment_radius(a, b) for a, b in zip(train["psf_sigmas_deg"], train["psf_weights"])])
    assert r_shift > 1.3 * r_train
    # the source pixel is where the sky position is, through the map WCS, for every placement
    for i in range(len(m["counts"])):
        w = sim.map_wcs(m["pnt_ra_deg"][i], m["pnt_dec_deg"][i])
        x, y = w.world_to_pixel(sim.SkyCoord(m["src_ra_deg"][i], m["src_dec_deg"][i], unit="deg"))
        assert (float(x), float(y)) == pytest.approx((m["src_x_pix"][i], m["src_y_pix"][i]), abs=1e-6)
    # Poisson statistics against the expected counts inside the map (two-component PSF)
    mu = np.array([sim.expected_counts(m, i, SHIFTED_P).sum() for i in range(30)])
    total = m["counts"].reshape(30, -1).sum(axis=1)
    pulls = (total - mu) / np.sqrt(mu)
    assert abs(pulls.mean()) < 0.6 and 0.5 < pulls.std() < 1.5
    assert np.all(m["source_counts"] <= m["counts"])


def test_edge_and_corner_placements_lie_in_the_border_band():
    s = sim.CTAShift(edge_fraction=0.5, corner_fraction=0.5)
    p = SHIFTED_P
    m = sim.simulate_shifted_maps(20, 3, p, s, progress=False)
    half = 0.5 * p.npix * p.binsz_deg
    centre = 0.5 * (p.npix - 1)
    depth_x = half - np.abs(m["src_x_pix"] - centre) * p.binsz_deg
    depth_y = half - np.abs(m["src_y_pix"] - centre) * p.binsz_deg
    in_band_x = (depth_x >= s.edge_min_deg - 1e-9) & (depth_x <= s.edge_max_deg + 1e-9)
    in_band_y = (depth_y >= s.edge_min_deg - 1e-9) & (depth_y <= s.edge_max_deg + 1e-9)
    edge, corner = m["placement"] == sim.PLACEMENTS["edge"], m["placement"] == sim.PLACEMENTS["corner"]
    assert edge.sum() >= 3 and corner.sum() >= 3 and np.all(edge | corner)
    assert np.all(in_band_x[corner] & in_band_y[corner])
    assert np.all(in_band_x[edge] | in_band_y[edge])
    assert np.all(m["offset_deg"][corner] > p.offset_max_deg)  # beyond every training source
    # the default mixes the training's disc placement with the border band
    d = sim.simulate_shifted_maps(20, 3, p, sim.CTAShift(), progress=False)
    assert np.any(d["placement"] == sim.PLACEMENTS["disc"])
    assert np.all(d["offset_deg"][d["placement"] == 0] <= p.offset_max_deg)


def test_shift_parameters_are_checked():
    with pytest.raises(ValueError):
        sim.CTAShift(edge_fraction=0.8, corner_fraction=0.3)
    with pytest.raises(ValueError):
        sim.CTAShift(tail_fraction_max=1.0)
    with pytest.raises(ValueError):
        sim.CTAShift(psf_tail_ratio=3.0, psf_tail_ratio_max=2.0)
    with pytest.raises(ValueError):
        sim.CTASimParams(irfs=("prod3b-v1 South z60",))


def test_shifted_cache_is_keyed_by_the_shift(tmp_path, monkeypatch):
    monkeypatch.setattr(cache.paths, "CACHE", tmp_path)
    first = sim.load_shifted_maps(3, 2, SHIFTED_P, sim.CTAShift(), progress=False)
    again = sim.load_shifted_maps(3, 2, SHIFTED_P, sim.CTAShift(), progress=False)
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])
    assert len(list((tmp_path / "cta_shifted_maps").iterdir())) == 1
    other = sim.load_shifted_maps(3, 2, SHIFTED_P, sim.CTAShift(psf_tail_ratio=4.0), progress=False)
    assert len(list((tmp_path / "cta_shifted_maps").iterdir())) == 2
    assert not np.array_equal(first["psf_sigmas_deg"], other["psf_sigmas_deg"])


def test_tail_ratio_range_is_drawn_per_map_and_a_fixed_ratio_keeps_its_key():
    assert "psf_tail_ratio_max" not in sim.CTAShift().to_dict()  # the key of the shifted sets made before the range
    s = sim.CTAShift(psf_tail_ratio=2.0, psf_tail_ratio_max=4.0)
    assert s.to_dict()["psf_tail_ratio_max"] == 4.0
    m = sim.simulate_shifted_maps(12, 7, SHIFTED_P, s, progress=False)
    n = m["psf_sigmas_deg"].shape[1] // 2
    ratio = m["psf_sigmas_deg"][:, n:] / m["psf_sigmas_deg"][:, :n]
    assert np.allclose(ratio, ratio[:, :1])  # one ratio per map, for every energy's component
    assert ratio.min() >= 2.0 and ratio.max() <= 4.0 and np.ptp(ratio[:, 0]) > 0.5
    fixed = sim.simulate_shifted_maps(12, 7, SHIFTED_P, sim.CTAShift(), progress=False)
    assert np.allclose(fixed["psf_sigmas_deg"][:, n:] / fixed["psf_sigmas_deg"][:, :n], 3.0)


def test_localisation_metrics_on_shifted_maps_end_to_end(shifted_maps):
    m = shifted_maps
    x, y = baselines.smoothed_centroid(m["counts"], sim.background_for(m), 1.5, 4.0)
    ra, dec = np.empty(len(x)), np.empty(len(x))
    for i in range(len(x)):
        sky = sim.map_wcs(m["pnt_ra_deg"][i], m["pnt_dec_deg"][i]).pixel_to_world(x[i], y[i])
        ra[i], dec[i] = sky.ra.deg, sky.dec.deg
    errors = {"smoothed_centroid": evaluation.angular_errors(m, ra, dec),
              "pointing_centre": np.asarray(m["offset_deg"], float)}
    crlb_r68, errors["crlb"] = evaluation.crlb_errors(m, SHIFTED_P.binsz_deg, np.random.default_rng(0))
    out = evaluation.localisation_metrics(errors, "_shifted", n_boot=200, seed=1)
    expected = {f"loc_err68_deg_{k}_shifted" for k in errors} | {f"loc_err68_deg_{k}_shifted_ci68" for k in errors}
    methods = ("smoothed_centroid", "pointing_centre")
    expected |= {f"{q}_{k}_shifted{c}" for q in ("crlb_ratio", "frac_err_gt_0p1deg") for k in methods
                 for c in ("", "_ci68")}
    expected |= {f"{q}_{k}_shifted" for q in ("loc_err_median_deg", "loc_tail_frac_0p2deg") for k in methods}
    assert set(out) == expected
    for k in methods:
        frac, (lo, hi) = out[f"frac_err_gt_0p1deg_{k}_shifted"], out[f"frac_err_gt_0p1deg_{k}_shifted_ci68"]
        assert frac == pytest.approx(np.mean(errors[k] > 0.1)) and lo <= frac <= hi
        assert out[f"loc_err_median_deg_{k}_shifted"] == pytest.approx(np.median(errors[k]))
    for k, e in errors.items():
        v, (lo, hi) = out[f"loc_err68_deg_{k}_shifted"], out[f"loc_err68_deg_{k}_shifted_ci68"]
        assert lo <= v <= hi and v == pytest.approx(evaluation.r68(e))
    ratio = out["crlb_ratio_smoothed_centroid_shifted"]
    assert ratio == pytest.approx(out["loc_err68_deg_smoothed_centroid_shifted"] / out["loc_err68_deg_crlb_shifted"])
    lo, hi = out["crlb_ratio_smoothed_centroid_shifted_ci68"]
    assert lo <= ratio <= hi
    # no method beats the bound by more than noise; the centroid beats the pointing centre
    assert ratio > 0.7
    assert out["loc_err68_deg_smoothed_centroid_shifted"] < out["loc_err68_deg_pointing_centre_shifted"]
    # the per-map bound widens with the two-component PSF
    assert np.all(np.isfinite(crlb_r68)) and np.all(crlb_r68 > 0)
    # per-flux-bin errors
    bins = evaluation.per_flux_bin_r68(errors, m["flux_crab"], [0.3, 1.0, 10.0])
    b = evaluation.flux_bin_index(m["flux_crab"], [0.3, 1.0, 10.0])
    assert bins["crlb"][1] == pytest.approx(evaluation.r68(errors["crlb"][b == 1]))
    with pytest.raises(KeyError):
        evaluation.localisation_metrics({"a": errors["crlb"]}, "_x")
    with pytest.raises(ValueError):
        evaluation.localisation_metrics({"a": errors["crlb"][:5], "crlb": errors["crlb"]}, "_x")
