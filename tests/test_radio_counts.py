"""The count law of notebook 07: anchors, integrals against closed forms,
sampling, and the modification families."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate

from skyml.radio import counts as cl

NU = 0.943


def test_hopkins_polynomial_and_extension():
    # the anchors' polynomial at S = 1 mJy is 10**a0
    assert cl.euclidean_1p4(1e-3) == pytest.approx(10**0.859, rel=1e-12)
    # continuous at the break, S^0.5 below it
    below, at = cl.euclidean_1p4(cl.S_BREAK_1P4_JY * (1 - 1e-9)), cl.euclidean_1p4(cl.S_BREAK_1P4_JY)
    assert below == pytest.approx(at, rel=1e-6)
    assert cl.euclidean_1p4(cl.S_BREAK_1P4_JY / 100) == pytest.approx(at / 10, rel=1e-12)
    # the well-known ~10 Jy^1.5/sr dip region of the 1.4 GHz counts at 1 mJy, and the rise to ~100 at 30 mJy
    assert 5 < cl.euclidean_1p4(1e-3) < 10 and 50 < cl.euclidean_1p4(3e-2) < 300


def test_frequency_scaling_conserves_numbers():
    k = cl.flux_scale(NU)
    assert k == pytest.approx((0.943 / 1.4) ** -0.7)
    # N(>k S) at 0.943 GHz equals N(>S) at 1.4 GHz
    n14 = integrate.quad(lambda s: cl.euclidean_1p4(s) * s**-2.5, 1e-5, 1e-3, limit=200)[0]
    nnu = integrate.quad(lambda s: cl.n_base(s, NU), k * 1e-5, k * 1e-3, limit=200)[0]
    assert nnu == pytest.approx(n14, rel=1e-6)


def test_counts_integrate_to_closed_forms():
    k = cl.flux_scale(NU)
    at = cl.euclidean_1p4(cl.S_BREAK_1P4_JY)
    s1, s2 = 1e-7, 1e-5  # below the break (x k): n_nu(S) = at S_b^-0.5 k^0.5 S^-2 ... integrate analytically
    amp = at * cl.S_BREAK_1P4_JY ** -cl.FAINT_SLOPE * k ** (1.5 - cl.FAINT_SLOPE)  # n = amp S^-2
    expected = amp * (1 / s1 - 1 / s2)
    got = cl.counts_in_bins([s1, s2], 1.0, NU)[0]
    assert got == pytest.approx(expected, rel=1e-5)
    # alpha = 1: (1 + s0/s) n = amp (S^-2 + s0 S^-3)
    s0 = 3e-6
    expected_mod = amp * ((1 / s1 - 1 / s2) + s0 * 0.5 * (1 / s1**2 - 1 / s2**2))
    assert cl.counts_in_bins([s1, s2], 1.0, NU, "alpha_s0", 1.0, s0)[0] == pytest.approx(expected_mod, rel=5e-5)
    # bins add up, and the CountLaw total agrees with the bins
    edges = cl.bin_edges(1e-7, 1e-2, 10)
    law = cl.CountLaw(NU, 1e-7, 1e-2, "alpha_s0", -0.3, 2e-5)
    assert cl.counts_in_bins(edges, 1.0, NU, "alpha_s0", -0.3, 2e-5).sum() == pytest.approx(law.total_per_sr(),
                                                                                            rel=1e-5)
    # ~1e6 sources per deg^2 above 0.1 uJy at 0.943 GHz
    assert 5e5 < cl.CountLaw(NU, 1e-7, 1e-2).total_per_sr() * cl.SR_PER_DEG2 < 3e6


@pytest.mark.parametrize("family,p1,p2", [("alpha_s0", 0.3, 5e-5), ("alpha_s0", -0.6, 5e-6),
                                          ("broken", -0.4, 1e-5), ("tanh", 1.0, 1e-5)])
def test_sampled_fluxes_follow_the_modified_law(family, p1, p2):
    law = cl.CountLaw(NU, 1e-7, 1e-3, family, p1, p2)
    n = 200_000
    s = law.sample(np.random.default_rng(4), n)
    assert s.min() >= 1e-7 and s.max() <= 1e-3
    edges = cl.bin_edges(1e-7, 1e-3, 16)
    observed = np.histogram(s, edges)[0]
    expected = cl.counts_in_bins(edges, 1.0, NU, family, p1, p2) / law.total_per_sr() * n
    ok = expected > 20
    pull = (observed[ok] - expected[ok]) / np.sqrt(expected[ok])
    assert np.all(np.abs(pull) < 5), pull
    chi2 = float(np.sum(pull**2))
    assert chi2 < ok.sum() + 5 * np.sqrt(2 * ok.sum())
    # and not the unmodified law (the test can fail): the baseline expectation is rejected
    base = cl.counts_in_bins(edges, 1.0, NU) / cl.CountLaw(NU, 1e-7, 1e-3).total_per_sr() * n
    assert np.sum((observed[ok] - base[ok]) ** 2 / base[ok]) > 10 * chi2


def test_modifications():
    s = np.geomspace(1e-8, 1e-2, 50)
    assert np.allclose(cl.modification(s, "alpha_s0", 0.0, 1e-5), 1.0)
    assert cl.modification(1e-7, "alpha_s0", 0.3, 5e-5) == pytest.approx(501**0.3)
    assert np.allclose(cl.modification(s[s > 2e-5], "broken", 0.4, 2e-5), 1.0)
    assert cl.modification(1e-6, "broken", 0.5, 1e-4) == pytest.approx(0.1)
    # the seed repository's shape: 1 + tanh(1e-5/s)^4 -> 2 at faint fluxes, 1 at bright
    assert cl.modification(1e-8, "tanh", 1.0, 1e-5) == pytest.approx(2.0)
    assert cl.modification(1e-2, "tanh", 1.0, 1e-5) == pytest.approx(1.0, abs=1e-11)
    with pytest.raises(ValueError, match="unknown modification"):
        cl.modification(s, "lognormal", 1.0, 1.0)
    with pytest.raises(ValueError, match="negative"):
        cl.CountLaw(NU, 1e-7, 1e-3, "tanh", -2.0, 1e-5)


def test_sfg_agn_split():
    f = cl.sfg_fraction(np.array([1e-6, 2e-4 * cl.flux_scale(NU), 1e-2]), NU)
    assert f[0] > 0.98 and f[1] == pytest.approx(0.5) and f[2] < 0.05
