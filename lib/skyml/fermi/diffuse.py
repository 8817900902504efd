"""Analytic Galactic diffuse emission and the isotropic background.

The LAT Galactic interstellar emission model (``gll_iem_v07``) is not
installable here, so this module builds an analytic stand-in with the
features a detector has to cope with, tuned to published intensities. All
intensities are photon intensities I(E) [ph cm⁻² s⁻¹ sr⁻¹ MeV⁻¹]; each
component is normalised by its integral over 1–100 GeV, the band of
``Flux1000``.

**Isotropic** (extragalactic background plus residual cosmic rays of the
SOURCE class, as ``iso_P8R3_SOURCE_V3``): a power law of index 2.32 with
I(>100 MeV) = 1.0e-5 ph cm⁻² s⁻¹ sr⁻¹ (the IGRB of Ackermann et al. 2015,
ApJ 799, 86, is 7.2e-6 above 100 MeV; the residual background adds about
40 %).

**Galactic** = sum of three components, each ``spatial(l, b) × spectrum(E)``:

1. *gas (pion decay)*: I1(1–100 GeV) = ``gas_norm`` at (l, b) = (0, 0);
   longitude profile ``exp(-|l|/l_scale) + floor``; latitude profile a
   Gaussian of width ``b_gas_deg``; log-parabola spectrum (α, β) at 1 GeV;
   multiplied by a log-normal small-scale structure field (clouds), a
   Gaussian random field on a HEALPix NSIDE=256 sphere with angular power
   C_ℓ ∝ ℓ^-2.5 (ℓ ≥ 2), unit variance, scaled by ``structure_sigma``;
2. *inverse Compton*: broad in latitude (exponential scale ``b_ic_deg``)
   and longitude (``l_ic_deg``), harder spectrum;
3. *local gas at high latitude*: proportional to the column density of a
   plane-parallel slab, 1/max(sin|b|, sin 5°), normalised at the poles.

With the default variant 1, I(1–100 GeV) is 3e-5 ph cm⁻² s⁻¹ sr⁻¹ towards
the Galactic centre (EGRET/LAT inner-Galaxy intensities, Hunter et al. 1997;
Ackermann et al. 2012, ApJ 750, 3) and ≈5e-7 at |b| ≈ 30–60°, comparable to
the isotropic background there, as observed.

Two variants (:data:`VARIANTS`) differ in every shape parameter, in the
spectra and in the realisation and strength of the small-scale structure, for
the seed's robustness test (train on one, test on the other).
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import numpy as np

from .catalog import FLUX_BAND_MEV, _log_grid

ISO_INDEX = 2.32
ISO_INTEGRAL_ABOVE_100MEV = 1.0e-5


@dataclass(frozen=True)
class DiffuseVariant:
    """Parameters of the analytic Galactic diffuse model."""

    gas_norm: float = 3.0e-5
    l_scale_deg: float = 40.0
    l_floor: float = 0.15
    b_gas_deg: float = 2.0
    gas_alpha: float = 2.45
    gas_beta: float = 0.10
    structure_sigma: float = 0.5
    structure_seed: int = 1
    ic_norm: float = 2.0e-6
    l_ic_deg: float = 80.0
    b_ic_deg: float = 12.0
    ic_index: float = 2.35
    local_norm: float = 2.5e-7
    local_alpha: float = 2.6
    local_beta: float = 0.05

    def to_dict(self) -> dict:
        return asdict(self)


VARIANTS = {
    1: DiffuseVariant(),
    2: DiffuseVariant(
        gas_norm=2.4e-5, l_scale_deg=60.0, l_floor=0.25, b_gas_deg=3.0, gas_alpha=2.55, gas_beta=0.06,
        structure_sigma=0.7, structure_seed=2, ic_norm=3.0e-6, l_ic_deg=60.0, b_ic_deg=20.0,
        ic_index=2.45, local_norm=3.5e-7, local_alpha=2.5, local_beta=0.08,
    ),
}


def get_variant(variant) -> DiffuseVariant:
    if isinstance(variant, DiffuseVariant):
        return variant
    if variant not in VARIANTS:
        raise ValueError(f"unknown diffuse variant {variant!r}; choose from {tuple(VARIANTS)}")
    return VARIANTS[variant]


def _logparabola(e_mev, alpha, beta):
    x = np.asarray(e_mev, float) / 1.0e3
    return x ** (-alpha - beta * np.log(x))


def _normalised(shape_fn):
    """``shape_fn`` scaled to unit integral over 1–100 GeV."""
    e, w = _log_grid(*FLUX_BAND_MEV, 128)
    norm = np.sum(shape_fn(e) * w)
    return lambda energy: shape_fn(energy) / norm


def isotropic_intensity(energy_mev) -> np.ndarray:
    """I(E) of the isotropic background [ph cm⁻² s⁻¹ sr⁻¹ MeV⁻¹]."""
    e = np.asarray(energy_mev, float)
    k = ISO_INTEGRAL_ABOVE_100MEV * (ISO_INDEX - 1) / 100.0
    return k * (e / 100.0) ** -ISO_INDEX


def component_spectra(variant) -> dict:
    """Unit-normalised (over 1–100 GeV) spectra of the three Galactic components."""
    v = get_variant(variant)
    return {
        "gas": _normalised(lambda e: _logparabola(e, v.gas_alpha, v.gas_beta)),
        "ic": _normalised(lambda e: (np.asarray(e, float) / 1.0e3) ** -v.ic_index),
        "local": _normalised(lambda e: _logparabola(e, v.local_alpha, v.local_beta)),
    }


@functools.lru_cache(maxsize=4)
def structure_map(seed: int, nside: int = 256) -> np.ndarray:
    """Unit-variance Gaussian random field on the sphere, C_ℓ ∝ ℓ^-2.5 (ℓ ≥ 2)."""
    import healpy as hp

    lmax = 3 * nside - 1
    ell = np.arange(lmax + 1, dtype=float)
    cl = np.zeros(lmax + 1)
    cl[2:] = ell[2:] ** -2.5
    # healpy's synfast draws from numpy's global generator: seed it locally
    state = np.random.get_state()
    try:
        np.random.seed(int(seed))
        field = hp.synfast(cl, nside, lmax=lmax, new=True)
    finally:
        np.random.set_state(state)
    return (field - field.mean()) / field.std()


def spatial_templates(glon_deg, glat_deg, variant) -> dict:
    """Spatial factors of the three components at (l, b): each times its
    1–100 GeV normalisation gives I(1–100 GeV) [ph cm⁻² s⁻¹ sr⁻¹]."""
    import healpy as hp

    v = get_variant(variant)
    lon = np.asarray(glon_deg, float)
    lat = np.asarray(glat_deg, float)
    lw = np.abs((lon + 180.0) % 360.0 - 180.0)  # |l| in [0, 180]
    field = hp.get_interp_val(structure_map(v.structure_seed), lon, lat, lonlat=True)
    clumps = np.exp(v.structure_sigma * field - 0.5 * v.structure_sigma**2)
    gas = v.gas_norm * (np.exp(-lw / v.l_scale_deg) + v.l_floor) / (1 + v.l_floor) \
        * np.exp(-0.5 * (lat / v.b_gas_deg) ** 2) * clumps
    ic = v.ic_norm * np.exp(-lw / v.l_ic_deg) * np.exp(-np.abs(lat) / v.b_ic_deg)
    local = v.local_norm / np.maximum(np.sin(np.deg2rad(np.abs(lat))), np.sin(np.deg2rad(5.0)))
    return {"gas": gas, "ic": ic, "local": local}


def galactic_intensity(energy_mev, glon_deg, glat_deg, variant) -> np.ndarray:
    """I(E; l, b) of the Galactic model, shape (n_energy,) + shape of glon."""
    spatial = spatial_templates(glon_deg, glat_deg, variant)
    spectra = component_spectra(variant)
    e = np.atleast_1d(np.asarray(energy_mev, float))
    out = 0.0
    for name, template in spatial.items():
        out = out + spectra[name](e).reshape((-1,) + (1,) * np.ndim(template)) * template[None]
    return out


def integral_intensity(glon_deg, glat_deg, variant, e_lo_mev=1.0e3, e_hi_mev=1.0e5) -> np.ndarray:
    """Galactic I(e_lo–e_hi) [ph cm⁻² s⁻¹ sr⁻¹] at (l, b)."""
    e, w = _log_grid(e_lo_mev, e_hi_mev, 64)
    spatial = spatial_templates(glon_deg, glat_deg, variant)
    spectra = component_spectra(variant)
    return sum(np.sum(spectra[n](e) * w) * t for n, t in spatial.items())
