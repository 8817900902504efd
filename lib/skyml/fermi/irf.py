"""A documented Fermi-LAT instrument model: energy bins, PSF, exposure.

**Energy bins.** Six reconstructed-energy bins from 0.3 GeV to 1 TeV
(Bhattacharyya et al. 2022): 0.3–1, 1–3, 3–10, 10–30, 30–100, 100–1000 GeV. Energy dispersion
is neglected (it is ≲10 % for the LAT above 300 MeV).

**PSF.** Each event type (FRONT, BACK) at energy E has a King-function PSF
(the LAT's own functional form, Fermi Cicerone "The Point Spread Function")::

    K(r; sigma, gamma) = (1 - 1/gamma) / (2 pi sigma^2) (1 + r^2 / (2 gamma sigma^2))^-gamma,
    containment C(r) = 1 - (1 + r^2 / (2 gamma sigma^2))^(1 - gamma),

whose two parameters are set, at every energy, so that its 68 % and 95 %
containment radii equal the published Pass 8 (P8R3_SOURCE_V3) containment of
that event type (:data:`PSF_CONTAINMENT_TABLE`, interpolated in log r versus
log E). For rendering, each King function is represented by a mixture of
circular Gaussians of fixed log-spaced widths whose non-negative weights are
fitted to its containment curve out to 2 r95, with the normalisation and the
68 % and 95 % containment pinned (:func:`fit_mixture`; the King tail beyond
about 3 r95 is not carried); a Gaussian mixture keeps the pixel integration
exact and separable. The
containment radii of the mixture actually used are computed numerically by
:func:`psf_containment_deg` and agree with the published ones within 1 %
(tests/test_fermi_psf.py). Inside an energy bin the PSF is the
mixture over :data:`NODES_PER_BIN` log-spaced energies weighted by the
source's own expected counts there (:func:`node_grid`); all nodes and event
types of a bin share one basis of :data:`N_BASIS` Gaussians
(:func:`psf_components`), so a source costs 10 Gaussians per bin to render.

An earlier version took the scale law S(E) of the Cicerone as the width of a
single Gaussian (r68 = 1.51 S(E), 0.88° FRONT and 1.70° BACK at 1 GeV): about
1.5 times broader than the LAT at 68 % and without its tails. The scale law
(:func:`psf_scale_rad`) is kept for reference only.

**Exposure.** 10 years of all-sky survey, sky-averaged and taken uniform over
the sky: ``exposure(E) = EXPOSURE_1GEV_CM2S * Aeff(E) / Aeff(1 GeV)``. The
shape ``Aeff(E)`` is the P8R3_SOURCE_V3 FRONT+BACK on-axis effective area read
from the LAT performance plots (Fermi-LAT "Pass 8 performance" page) at the
energies of :data:`AEFF_TABLE`, interpolated in log E. The normalisation
``EXPOSURE_1GEV_CM2S`` = 3.0e11 cm² s is the order of the 4FGL exposure at
1 GeV (≈2.4e11 cm² s over 8 years, 4FGL paper Fig. 1) scaled to 10 years.
FRONT events are taken as :data:`FRONT_FRACTION` of all events at every energy.
The real exposure varies by ±20 % across the sky; this model does not.
"""

from __future__ import annotations

import functools

import numpy as np

ENERGY_EDGES_MEV = np.array([300.0, 1.0e3, 3.0e3, 1.0e4, 3.0e4, 1.0e5, 1.0e6])
N_BINS = len(ENERGY_EDGES_MEV) - 1

#: PSF scale-law parameters (c0 [rad], c1 [rad]) per event type (P8R3_V2/V3, Fermi Cicerone).
PSF_SCALE_PARAMS = {"front": (6.38e-2, 1.26e-3), "back": (0.123, 2.22e-3)}
PSF_BETA = 0.8
#: 68 % containment radius of a 2-D Gaussian in units of its sigma.
R68_PER_SIGMA = float(np.sqrt(-2.0 * np.log(1.0 - 0.68)))

#: Published Pass 8 PSF containment of the LAT, P8R3_SOURCE_V3 (acceptance-weighted, i.e.
#: averaged over the field of view as in a survey): columns energy [MeV], FRONT r68, FRONT r95,
#: BACK r68, BACK r95 [deg]. Approximate values of the containment-versus-energy curves of the
#: Fermi-LAT collaboration's "Fermi LAT Performance" page (SLAC, P8R3_SOURCE_V3 IRFs), not a
#: tabulation: take them as good to about 10 %, and replace them by values computed from the
#: CALDB PSF file (psf_P8R3_SOURCE_V3_FB.fits, e.g. with gtpsf) where that precision matters.
#: FRONT and BACK in equal parts give an all-event 68 % radius of about 0.8° at 1 GeV.
PSF_CONTAINMENT_TABLE = np.array([
    # E [MeV]  F r68  F r95  B r68  B r95
    [1.0e2, 3.50, 10.0, 6.50, 17.0],
    [3.0e2, 1.45, 4.30, 2.70, 7.30],
    [1.0e3, 0.55, 1.70, 1.05, 3.00],
    [3.0e3, 0.22, 0.72, 0.43, 1.35],
    [1.0e4, 0.10, 0.36, 0.20, 0.70],
    [3.0e4, 0.065, 0.25, 0.14, 0.50],
    [1.0e5, 0.055, 0.21, 0.12, 0.42],
    [1.0e6, 0.050, 0.20, 0.11, 0.40],
])
EVENT_TYPE_COLUMNS = {"front": (1, 2), "back": (3, 4)}
#: Gaussians per King function in the rendered mixture, and their width range in units of (r68, r95).
N_GAUSS = 6
GAUSS_SIGMA_RANGE = (0.2, 1.2)
#: weight of the rows that pin the mixture's normalisation and its 68 % and 95 % containment
PIN_WEIGHT = 30.0
#: the containment curve is fitted out to this multiple of r95
FIT_RADIUS_R95 = 2.0
#: a name of this PSF model: part of every simulation's cache key (FermiSimParams.to_dict)
PSF_MODEL = "P8R3_SOURCE_V3 King, Gaussian mixture v1"

#: (energy [MeV], FRONT+BACK effective area [m²]) of P8R3_SOURCE_V3 at normal incidence.
AEFF_TABLE = np.array([
    [100.0, 0.55], [300.0, 0.80], [1.0e3, 0.90], [3.0e3, 0.93], [1.0e4, 0.94],
    [3.0e4, 0.92], [1.0e5, 0.88], [3.0e5, 0.84], [1.0e6, 0.78],
])
EXPOSURE_1GEV_CM2S = 3.0e11
FRONT_FRACTION = 0.5
EVENT_TYPES = ("front", "front+back")

NODES_PER_BIN = 6


def check_event_types(event_types: str) -> str:
    if event_types not in EVENT_TYPES:
        raise ValueError(f"unknown event types {event_types!r}; choose from {EVENT_TYPES}")
    return event_types


def psf_scale_rad(energy_mev, event_type: str = "front") -> np.ndarray:
    """The scale law S(E) [rad] of FRONT or BACK events."""
    if event_type not in PSF_SCALE_PARAMS:
        raise ValueError(f"event_type must be 'front' or 'back', got {event_type!r}")
    c0, c1 = PSF_SCALE_PARAMS[event_type]
    e = np.asarray(energy_mev, float)
    return np.sqrt((c0 * (e / 100.0) ** -PSF_BETA) ** 2 + c1**2)


def reference_containment_deg(energy_mev, event_type: str = "front", fraction: float = 0.68) -> np.ndarray:
    """Published 68 % or 95 % containment radius [deg] of FRONT or BACK events
    (:data:`PSF_CONTAINMENT_TABLE`, log-log interpolation, constant beyond the table)."""
    if event_type not in EVENT_TYPE_COLUMNS:
        raise ValueError(f"event_type must be 'front' or 'back', got {event_type!r}")
    if fraction not in (0.68, 0.95):
        raise ValueError("the table gives the 68 % and 95 % containment only")
    col = EVENT_TYPE_COLUMNS[event_type][0 if fraction == 0.68 else 1]
    loge = np.log(PSF_CONTAINMENT_TABLE[:, 0])
    return np.exp(np.interp(np.log(np.asarray(energy_mev, float)), loge, np.log(PSF_CONTAINMENT_TABLE[:, col])))


def king_containment(r, sigma, gamma) -> np.ndarray:
    """Fraction of a King function (sigma, gamma) within radius r (same unit as sigma)."""
    r, sigma, gamma = np.asarray(r, float), np.asarray(sigma, float), np.asarray(gamma, float)
    return 1.0 - (1.0 + r**2 / (2.0 * gamma * sigma**2)) ** (1.0 - gamma)


def king_from_containment(r68, r95) -> tuple[float, float]:
    """(sigma, gamma) of the King function with 68 % radius ``r68`` and 95 % radius ``r95``.

    From C(r) above, u_q = r_q^2 / (2 gamma sigma^2) = (1 - q)^(1 / (1 - gamma)) - 1, so
    r95^2 / r68^2 = u_95 / u_68 fixes gamma (a root in gamma > 1; the ratio falls from
    infinity to the Gaussian limit 1.62 as gamma grows) and then sigma."""
    from scipy.optimize import brentq

    ratio2 = (float(r95) / float(r68)) ** 2

    def u(q, g):
        return np.expm1(np.log(1.0 - q) / (1.0 - g))

    gauss_limit = np.log(0.05) / np.log(0.32)
    if ratio2 <= gauss_limit * 1.0001:
        raise ValueError(f"r95/r68 = {np.sqrt(ratio2):.3f} is at or below the Gaussian limit {np.sqrt(gauss_limit):.3f}")
    gamma = brentq(lambda g: u(0.95, g) / u(0.68, g) - ratio2, 1.02, 1.0e4, xtol=1e-10)
    sigma = float(r68) / np.sqrt(2.0 * gamma * u(0.68, gamma))
    return float(sigma), float(gamma)


def _gauss_containment(r, sigmas):
    return 1.0 - np.exp(-0.5 * (np.asarray(r, float)[:, None] / np.asarray(sigmas, float)[None]) ** 2)


def fit_mixture(r68: float, r95: float, containment, sigmas=None) -> tuple[np.ndarray, np.ndarray]:
    """Widths and weights of :data:`N_GAUSS` Gaussians (log-spaced from 0.2 r68 to 1.2 r95)
    fitted by non-negative least squares to the containment curve ``containment(r)`` out to
    2 r95, with heavily weighted rows that pin the total to 1 and the containment at r68 and
    r95 to 0.68 and 0.95 (the truncated far tail, which a finite mixture cannot carry, would
    otherwise pull r95 in). ``sigmas``: other widths to fit on."""
    from scipy.optimize import nnls

    if sigmas is None:
        sigmas = np.geomspace(GAUSS_SIGMA_RANGE[0] * r68, GAUSS_SIGMA_RANGE[1] * r95, N_GAUSS)
    sigmas = np.asarray(sigmas, float)
    r = np.linspace(0.0, FIT_RADIUS_R95 * r95, 200)[1:]
    a = np.vstack([_gauss_containment(r, sigmas), PIN_WEIGHT * _gauss_containment([r68, r95], sigmas),
                   PIN_WEIGHT * np.ones((1, len(sigmas)))])
    b = np.concatenate([containment(r), PIN_WEIGHT * np.array([0.68, 0.95, 1.0])])
    w, _ = nnls(a, b)
    return sigmas, w / w.sum()


def mixture_containment_radius(sigmas, weights, fraction: float = 0.68) -> float:
    """Radius [unit of sigmas] containing ``fraction`` of a mixture of circular Gaussians."""
    from scipy.optimize import brentq

    sigmas, weights = np.asarray(sigmas, float), np.asarray(weights, float)
    weights = weights / weights.sum()

    def f(r):
        return float(_gauss_containment([r], sigmas)[0] @ weights) - fraction

    return float(brentq(f, 1e-6 * sigmas.min(), 50.0 * sigmas.max(), xtol=1e-9 * sigmas.max()))


def psf_containment_deg(energy_mev, event_type: str = "front", fraction: float = 0.68) -> np.ndarray:
    """Containment radius [deg] of the PSF the simulator uses (:func:`model_psf`, 0.3 GeV–1 TeV),
    computed numerically from its Gaussians."""
    e = np.atleast_1d(np.asarray(energy_mev, float))
    out = np.array([mixture_containment_radius(*model_psf(x, event_type), fraction) for x in e])
    return out.reshape(np.shape(energy_mev))


def psf_r68_deg(energy_mev, event_type: str = "front") -> np.ndarray:
    """68 % containment radius [deg] of the simulator's PSF of one event type."""
    return psf_containment_deg(energy_mev, event_type, 0.68)


def aeff_cm2(energy_mev) -> np.ndarray:
    """FRONT+BACK effective area [cm²], log-log interpolation of :data:`AEFF_TABLE`."""
    e = np.asarray(energy_mev, float)
    loge = np.log(AEFF_TABLE[:, 0])
    return 1.0e4 * np.exp(np.interp(np.log(e), loge, np.log(AEFF_TABLE[:, 1])))


def exposure_cm2s(energy_mev, event_types: str = "front+back") -> np.ndarray:
    """10-year sky-averaged exposure [cm² s] of the selected event types."""
    check_event_types(event_types)
    expo = EXPOSURE_1GEV_CM2S * aeff_cm2(energy_mev) / aeff_cm2(1.0e3)
    return expo * (FRONT_FRACTION if event_types == "front" else 1.0)


def node_grid(nodes_per_bin: int = NODES_PER_BIN):
    """Energy nodes of every bin: ``(energy [MeV], integration weight [MeV] (trapezoid rule in ln E),
    bin index)``, each of length ``N_BINS * nodes_per_bin``."""
    energies, weights, bins = [], [], []
    for k in range(N_BINS):
        e = np.geomspace(ENERGY_EDGES_MEV[k], ENERGY_EDGES_MEV[k + 1], nodes_per_bin)
        w = np.zeros(nodes_per_bin)  # trapezoid rule in ln E: dE = E dln(E)
        w[:-1] += np.diff(np.log(e)) / 2
        w[1:] += np.diff(np.log(e)) / 2
        energies.append(e)
        weights.append(w * e)
        bins.append(np.full(nodes_per_bin, k))
    return np.concatenate(energies), np.concatenate(weights), np.concatenate(bins)


#: Gaussians of the shared basis of an energy bin (:func:`psf_components`)
N_BASIS = 10


@functools.lru_cache(maxsize=8)
def psf_components(event_types: str = "front+back", nodes_per_bin: int = NODES_PER_BIN):
    """The Gaussian components of the model: ``(sigma_deg, bin, weights)``.

    Each energy bin has a basis of :data:`N_BASIS` Gaussians (log-spaced widths from 0.2 times
    the smallest r68 to 1.2 times the largest r95 of its nodes and event types); the King
    function of every node and event type is fitted on its bin's basis (:func:`fit_mixture` with
    those widths: normalisation, r68 and r95 pinned). ``weights`` (n_nodes, n_components) holds
    the share of each node's counts that each component carries, summed over the event types
    (FRONT only; or :data:`FRONT_FRACTION` FRONT and the rest BACK), so that the expected counts
    of a source in component j are ``node_counts @ weights[:, j]``: the PSF of a source within a
    bin follows its own spectrum, with only :data:`N_BASIS` Gaussians per bin to render.
    """
    check_event_types(event_types)
    energy, _, bins = node_grid(nodes_per_bin)
    types = (("front", 1.0),) if event_types == "front" else (("front", FRONT_FRACTION),
                                                              ("back", 1.0 - FRONT_FRACTION))
    sig, cbins = [], []
    weights = np.zeros((len(energy), N_BINS * N_BASIS))
    for k in range(N_BINS):
        nodes = np.flatnonzero(bins == k)
        r68 = [float(reference_containment_deg(energy[j], t, 0.68)) for j in nodes for t, _ in types]
        r95 = [float(reference_containment_deg(energy[j], t, 0.95)) for j in nodes for t, _ in types]
        basis = np.geomspace(GAUSS_SIGMA_RANGE[0] * min(r68), GAUSS_SIGMA_RANGE[1] * max(r95), N_BASIS)
        sig.append(basis)
        cbins.append(np.full(N_BASIS, k))
        for j in nodes:
            for event_type, share in types:
                a68 = float(reference_containment_deg(energy[j], event_type, 0.68))
                a95 = float(reference_containment_deg(energy[j], event_type, 0.95))
                sigma, gamma = king_from_containment(a68, a95)
                _, w = fit_mixture(a68, a95, lambda r, sg=sigma, g=gamma: king_containment(r, sg, g), basis)
                weights[j, k * N_BASIS:(k + 1) * N_BASIS] += share * w
    return np.concatenate(sig), np.concatenate(cbins), weights


def model_psf(energy_mev: float, event_type: str = "front") -> tuple[np.ndarray, np.ndarray]:
    """(widths [deg], weights) of the PSF of one event type at ``energy_mev`` as the simulator
    represents it: the King function fitted on the Gaussian basis of the energy bin that holds
    ``energy_mev`` (:func:`psf_components`; at an energy node, exactly what is rendered)."""
    e = float(np.clip(energy_mev, ENERGY_EDGES_MEV[0], ENERGY_EDGES_MEV[-1]))
    k = int(np.clip(np.searchsorted(ENERGY_EDGES_MEV, e, side="right") - 1, 0, N_BINS - 1))
    sig, cbins, _ = psf_components("front" if event_type == "front" else "front+back")
    a68 = float(reference_containment_deg(e, event_type, 0.68))
    a95 = float(reference_containment_deg(e, event_type, 0.95))
    sigma, gamma = king_from_containment(a68, a95)
    return fit_mixture(a68, a95, lambda r: king_containment(r, sigma, gamma), sig[cbins == k])


def _bin_component_weights(event_types: str, index: float):
    energy, weight, _ = node_grid()
    counts = energy**-index * weight * exposure_cm2s(energy, event_types)
    sig, cbins, weights = psf_components(event_types)
    return sig, cbins, counts @ weights


def bin_psf_containment_deg(event_types: str = "front+back", index: float = 2.2,
                            fraction: float = 0.68) -> np.ndarray:
    """Containment radius [deg] per energy bin of the PSF of a power law of ``index``
    (the counts-weighted mixture over the bin's nodes and event types)."""
    sig, cbins, w = _bin_component_weights(event_types, index)
    return np.array([mixture_containment_radius(sig[cbins == k], w[cbins == k], fraction) for k in range(N_BINS)])


def bin_psf_sigma_eff_deg(event_types: str = "front+back", index: float = 2.2) -> np.ndarray:
    """Width [deg] per energy bin of the Gaussian with the same 68 % containment as the bin's
    PSF (:func:`bin_psf_containment_deg` / 1.51): a length scale, not the PSF."""
    return bin_psf_containment_deg(event_types, index, 0.68) / R68_PER_SIGMA


@functools.lru_cache(maxsize=16)
def bin_psf_mixture(event_types: str = "front+back", index: float = 2.2):
    """Per energy bin, ``(widths [deg], weights)`` of :data:`N_GAUSS` Gaussians fitted
    (non-negative least squares on the containment curve) to the bin's PSF of a power law of
    ``index``: a compact form of the same PSF for smoothing maps and for gammapy's PSF map."""
    sig, cbins, w = _bin_component_weights(event_types, index)
    out = []
    for k in range(N_BINS):
        s, wk = sig[cbins == k], w[cbins == k] / w[cbins == k].sum()
        r68 = mixture_containment_radius(s, wk, 0.68)
        r95 = mixture_containment_radius(s, wk, 0.95)
        out.append(fit_mixture(r68, r95, lambda r, s=s, wk=wk: _gauss_containment(r, s) @ wk))
    return tuple(out)


def bin_psf_profile(rad_deg, event_types: str = "front+back", index: float = 2.2) -> np.ndarray:
    """PSF per energy bin, dP/dOmega [sr^-1] at ``rad_deg`` (flat-sky Gaussians), shape (6, len(rad))."""
    r = np.asarray(rad_deg, float)
    out = np.empty((N_BINS, len(r)))
    for k, (s, w) in enumerate(bin_psf_mixture(event_types, index)):
        s_rad = np.deg2rad(s)
        out[k] = (np.exp(-0.5 * (np.deg2rad(r)[:, None] / s_rad[None]) ** 2) / (2 * np.pi * s_rad**2)) @ w
    return out
