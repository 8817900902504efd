"""The LAT PSF of the simulator against the published P8R3_SOURCE_V3 containment."""

from __future__ import annotations

import numpy as np
import pytest

from skyml.fermi import irf
from skyml.fermi import simulate as S

ENERGIES = (300.0, 1.0e3, 3.0e3, 1.0e4, 3.0e4, 1.0e5, 1.0e6)  # the simulated range, 0.3 GeV-1 TeV


def test_king_function_from_containment_round_trip():
    for r68, r95 in ((0.55, 1.7), (1.05, 3.0), (0.1, 0.36)):
        sigma, gamma = irf.king_from_containment(r68, r95)
        assert irf.king_containment(r68, sigma, gamma) == pytest.approx(0.68, abs=1e-6)
        assert irf.king_containment(r95, sigma, gamma) == pytest.approx(0.95, abs=1e-6)
        assert 1.0 < gamma < 10.0
    with pytest.raises(ValueError):
        irf.king_from_containment(1.0, 1.5)  # narrower tails than a Gaussian


@pytest.mark.parametrize("event_type", ["front", "back"])
def test_model_psf_matches_published_containment(event_type):
    """The Gaussian mixture the simulator renders has the published r68 and r95 (within 10 %,
    in fact within 1 %) at every tabulated energy; the table itself is what the docs say."""
    table = irf.PSF_CONTAINMENT_TABLE
    c68, c95 = irf.EVENT_TYPE_COLUMNS[event_type]
    for e in ENERGIES:
        row = table[table[:, 0] == e][0]
        assert irf.psf_containment_deg(e, event_type, 0.68) == pytest.approx(row[c68], rel=0.01)
        assert irf.psf_containment_deg(e, event_type, 0.95) == pytest.approx(row[c95], rel=0.01)
    # BACK is broader than FRONT; the PSF narrows with energy
    r = irf.psf_r68_deg(np.array(ENERGIES), event_type)
    assert np.all(np.diff(r) <= 0)
    assert np.all(irf.psf_r68_deg(np.array(ENERGIES), "back") > irf.psf_r68_deg(np.array(ENERGIES), "front"))


def test_all_events_r68_at_1gev():
    """FRONT+BACK (half each) at 1 GeV: about 0.8° (the LAT's all-event figure)."""
    s_f, w_f = irf.model_psf(1.0e3, "front")
    s_b, w_b = irf.model_psf(1.0e3, "back")
    r68 = irf.mixture_containment_radius(np.r_[s_f, s_b], np.r_[w_f, w_b] * 0.5, 0.68)
    assert 0.7 < r68 < 0.9


def _rendered_radius(event_types, node, patch_deg, fraction):
    """Containment radius [deg] of one energy node rendered by the simulator at the patch centre."""
    p = S.FermiSimParams(event_types=event_types, npix=256, patch_deg=patch_deg)
    energy, _, bins = irf.node_grid()
    counts = np.zeros((1, len(energy)))
    counts[0, node] = 1000.0
    img = S.render_sources([127.5], [127.5], counts, p)[bins[node]]
    yy, xx = np.mgrid[:256, :256]
    r = (np.hypot(xx - 127.5, yy - 127.5) * p.binsz_deg).ravel()
    return r, img.ravel()


def _radius(r, img, total, fraction):
    order = np.argsort(r)
    cum = np.cumsum(img[order]) / total
    return float(np.interp(fraction, cum, r[order]))


@pytest.mark.parametrize("bin_index,node_in_bin,patch_deg", [(1, 0, 20.0), (2, 3, 8.0), (3, 3, 3.0)])
def test_rendered_counts_have_published_containment(bin_index, node_in_bin, patch_deg):
    """The counts the simulator puts into pixels (render_sources) contain 68 % and 95 % of a
    node's photons within the published radii of FRONT and BACK events (within 10 %)."""
    energy, _, bins = irf.node_grid()
    node = np.flatnonzero(bins == bin_index)[node_in_bin]
    e = energy[node]
    r, front = _rendered_radius("front", node, patch_deg, 0.68)
    _, both = _rendered_radius("front+back", node, patch_deg, 0.68)
    back = (both - irf.FRONT_FRACTION * front) / (1.0 - irf.FRONT_FRACTION)
    for event_type, img in (("front", front), ("back", back)):
        for q in (0.68, 0.95):
            ref = float(irf.reference_containment_deg(e, event_type, q))
            assert _radius(r, img, 1000.0, q) == pytest.approx(ref, rel=0.10), (event_type, e, q)


def test_bin_mixture_keeps_the_bin_containment():
    """The compact per-bin mixture (diffuse smoothing, gammapy PSF map) has the containment
    of the full counts-weighted mixture it stands for."""
    for q in (0.68, 0.95):
        full = irf.bin_psf_containment_deg("front+back", 2.2, q)
        compact = [irf.mixture_containment_radius(s, w, q) for s, w in irf.bin_psf_mixture("front+back", 2.2)]
        np.testing.assert_allclose(compact, full, rtol=0.01)
