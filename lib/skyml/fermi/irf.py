"""A documented Fermi-LAT instrument model: energy bins, PSF, exposure.

**Energy bins.** Six reconstructed-energy bins from 0.3 GeV to 1 TeV
(Bhattacharyya et al. 2022): 0.3–1, 1–3, 3–10, 10–30, 30–100, 100–1000 GeV. Energy dispersion
is neglected (it is ≲10 % for the LAT above 300 MeV).

**PSF.** The published P8R2/P8R3 scale law (Fermi Cicerone)::

    S(E) = sqrt((c0 (E / 100 MeV)^-0.8)^2 + c1^2)

with FRONT c0 = 6.38e-2 rad, c1 = 1.26e-3 rad and BACK c0 = 0.123 rad,
c1 = 2.22e-3 rad. This model takes the PSF of one event type at energy E as
a circular Gaussian of width sigma = S(E); its 68 % containment radius is then
1.51 S(E) (the 2-D Gaussian's r68 = sqrt(-2 ln 0.32) sigma), which gives about
5.5° at 100 MeV, 0.88° at 1 GeV and 0.13° at 20 GeV for FRONT events — the
"≈5°, 0.8°, 0.1°" of the seed. The real LAT PSF has broader (King-function)
tails; this model ignores them. Inside an energy bin the PSF is the mixture
of the Gaussians at :data:`NODES_PER_BIN` log-spaced energies weighted by the
source's own expected counts there (:func:`node_grid`).

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

import numpy as np

ENERGY_EDGES_MEV = np.array([300.0, 1.0e3, 3.0e3, 1.0e4, 3.0e4, 1.0e5, 1.0e6])
N_BINS = len(ENERGY_EDGES_MEV) - 1

#: PSF scale-law parameters (c0 [rad], c1 [rad]) per event type.
PSF_SCALE_PARAMS = {"front": (6.38e-2, 1.26e-3), "back": (0.123, 2.22e-3)}
PSF_BETA = 0.8
#: 68 % containment radius of a 2-D Gaussian in units of its sigma.
R68_PER_SIGMA = float(np.sqrt(-2.0 * np.log(1.0 - 0.68)))

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


def psf_sigma_deg(energy_mev, event_type: str = "front") -> np.ndarray:
    """Gaussian PSF width [deg] of one event type (sigma = S(E))."""
    return np.rad2deg(psf_scale_rad(energy_mev, event_type))


def psf_r68_deg(energy_mev, event_type: str = "front") -> np.ndarray:
    """68 % containment radius [deg] of the Gaussian PSF: 1.51 S(E)."""
    return R68_PER_SIGMA * psf_sigma_deg(energy_mev, event_type)


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


def psf_components(event_types: str = "front+back", nodes_per_bin: int = NODES_PER_BIN):
    """The Gaussian components of the model: ``(sigma_deg, bin, node, fraction)``.

    Component ``j`` is event type FRONT or BACK at energy node ``node[j]``;
    ``fraction[j]`` is the share of that node's counts it carries (1 for
    FRONT-only; :data:`FRONT_FRACTION` and its complement for FRONT+BACK).
    """
    check_event_types(event_types)
    energy, _, bins = node_grid(nodes_per_bin)
    nodes = np.arange(len(energy))
    if event_types == "front":
        return psf_sigma_deg(energy, "front"), bins, nodes, np.ones(len(energy))
    sig = np.concatenate([psf_sigma_deg(energy, "front"), psf_sigma_deg(energy, "back")])
    frac = np.concatenate([np.full(len(energy), FRONT_FRACTION), np.full(len(energy), 1 - FRONT_FRACTION)])
    return sig, np.concatenate([bins, bins]), np.concatenate([nodes, nodes]), frac


def bin_psf_sigma_eff_deg(event_types: str = "front+back", index: float = 2.2) -> np.ndarray:
    """Effective (rms) Gaussian width [deg] per energy bin for a power law of
    ``index``: sqrt of the counts-weighted mean sigma² of the components."""
    energy, weight, bins = node_grid()
    counts = energy**-index * weight * exposure_cm2s(energy, event_types)
    sig, cbins, nodes, frac = psf_components(event_types)
    w = counts[nodes] * frac
    out = np.empty(N_BINS)
    for k in range(N_BINS):
        m = cbins == k
        out[k] = np.sqrt(np.sum(w[m] * sig[m] ** 2) / np.sum(w[m]))
    return out
