"""CTA instrument response functions built from the public CTA performance curves.

The seed talk simulated its maps with LST prod5 IRFs, which are not installable
from a package registry. The ``ctaplot`` package installs CTA's public
*prod3b* performance curves (v1 and v2; North and South; 20°, 40° and 60°
zenith; 0.5 h / 5 h / 50 h cuts) as text files. The training simulations draw
from :data:`IRF_NAMES`; :data:`HELDOUT_IRF_NAMES` (v2 South at 60° zenith) is
kept for a test set on an instrument the networks never saw. This module turns them into
gammapy IRF objects:

- effective area: the on-axis curve ("30m" cuts, the shortest available,
  closest to 100 s observations), times a Gaussian field-of-view fall-off
  ``exp(-offset² / (2 fov_sigma²))``;
- PSF: a circular Gaussian per true energy with ``sigma = r68 / 1.5096`` from
  the angular-resolution curve (50 h cuts; ``r68 = sqrt(-2 ln 0.32) sigma``),
  broadened with offset as ``sigma (1 + psf_broadening (offset / 2°)²)``,
  tabulated as a gammapy ``PSF3D``;
- energy dispersion: Gaussian in migration with the curve's relative
  resolution and no bias (``EnergyDispersion2D.from_gauss``);
- background: the residual cosmic-ray rate per deg² (50 h cuts) as a
  ``Background2D`` in s⁻¹ MeV⁻¹ sr⁻¹ with the same field-of-view fall-off.

The angular resolution, background and energy resolution curves exist for the
50 h cuts only; mixing them with the 30 min effective area is a documented
approximation.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import astropy.units as u
import numpy as np
from astropy.table import QTable
from gammapy.irf import Background2D, EffectiveAreaTable2D, EnergyDispersion2D, PSF3D
from gammapy.maps import MapAxis

R68_PER_SIGMA = float(np.sqrt(-2.0 * np.log(1.0 - 0.68)))  # 1.5096 for a 2D Gaussian

#: IRFs for which every curve exists in ctaplot: (version, site, zenith_deg).
IRF_CHOICES = tuple(
    [(v, s, z) for v in ("v1", "v2") for s in ("North", "South") for z in (20, 40)]
    + [("v2", "North", 60)]
)

#: Curve sets that ctaplot also installs but that no training simulation draws
#: (the default :class:`skyml.cta.simulate.CTASimParams` uses :data:`IRF_CHOICES`):
#: the southern site at 60° zenith, kept for the shifted test set.
HELDOUT_IRF_CHOICES = (("v2", "South", 60),)

ENERGY_TRUE_EDGES_TEV = np.geomspace(0.02, 150.0, 25)
OFFSET_MAX_DEG = 5.0


def irf_name(version: str, site: str, zenith_deg: int) -> str:
    return f"prod3b-{version} {site} z{zenith_deg}"


IRF_NAMES = tuple(irf_name(*c) for c in IRF_CHOICES)
HELDOUT_IRF_NAMES = tuple(irf_name(*c) for c in HELDOUT_IRF_CHOICES)
ALL_IRF_NAMES = IRF_NAMES + HELDOUT_IRF_NAMES


def performance_file(version: str, site: str, zenith_deg: int, quantity: str, duration: str) -> str:
    """Installed path of one ctaplot performance curve, e.g. quantity 'EffArea', duration '30m'."""
    from ctaplot.io import dataset

    name = f"CTA-Performance-prod3b-{version}-{site}-{zenith_deg}deg-{duration}-{quantity}.txt"
    try:
        return dataset.get(name)
    except Exception as exc:  # ctaplot raises a plain error for unknown names
        raise FileNotFoundError(f"ctaplot has no performance curve {name!r}") from exc


def read_performance_curve(path: str) -> QTable:
    """Numeric columns of a CTA performance text file as an astropy Table.

    Two-column files (E, value) give columns ``energy`` [TeV] and ``value``;
    background files (E_min, E_max, rate) give ``energy_min``, ``energy_max``
    [TeV] and ``value`` [Hz deg⁻²].
    """
    rows = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if not parts:
                continue
            try:
                rows.append([float(p) for p in parts])
            except ValueError:
                continue
    if not rows or len({len(r) for r in rows}) != 1:
        raise ValueError(f"{path}: no consistent numeric table found")
    data = np.array(rows)
    if data.shape[1] == 2:
        return QTable({"energy": data[:, 0] * u.TeV, "value": data[:, 1]})
    if data.shape[1] == 3:
        return QTable(
            {"energy_min": data[:, 0] * u.TeV, "energy_max": data[:, 1] * u.TeV, "value": data[:, 2]}
        )
    raise ValueError(f"{path}: unexpected {data.shape[1]} columns")


def _loglog_interp(x_new, x, y, floor=0.0):
    """Log-log interpolation, flat extrapolation in log y, values below floor clipped."""
    y = np.clip(y, 1e-30, None)
    out = np.exp(np.interp(np.log(x_new), np.log(x), np.log(y)))
    return np.where(out < floor, 0.0, out)


@dataclass(frozen=True)
class CTAIRF:
    """One set of gammapy IRFs and the curves they were made from."""

    name: str
    aeff: EffectiveAreaTable2D
    psf: PSF3D
    edisp: EnergyDispersion2D
    bkg: Background2D
    fov_sigma_deg: float
    psf_broadening: float

    def as_dict(self) -> dict:
        """The ``irfs`` mapping expected by ``gammapy.data.Observation.create``."""
        return {"aeff": self.aeff, "psf": self.psf, "edisp": self.edisp, "bkg": self.bkg}

    def psf_sigma_deg(self, energy_true_tev, offset_deg) -> np.ndarray:
        """Gaussian PSF sigma [deg] at true energy [TeV] and offset [deg] (broadcast)."""
        return _psf_sigma_deg(self.name, np.asarray(energy_true_tev), np.asarray(offset_deg), self.psf_broadening)


@functools.lru_cache(maxsize=None)
def _curves(name: str) -> dict:
    version, site, zen = _parse_name(name)
    return {
        "aeff": read_performance_curve(performance_file(version, site, zen, "EffArea", "30m")),
        "angres": read_performance_curve(performance_file(version, site, zen, "Angres", "50h")),
        "eres": read_performance_curve(performance_file(version, site, zen, "Eres", "50h")),
        "bkg": read_performance_curve(performance_file(version, site, zen, "BackgroundSqdeg", "50h")),
    }


def _parse_name(name: str):
    m = re.fullmatch(r"prod3b-(v[12]) (North|South) z(\d+)", name)
    if not m or (m.group(1), m.group(2), int(m.group(3))) not in IRF_CHOICES + HELDOUT_IRF_CHOICES:
        raise ValueError(f"unknown IRF {name!r}; choose one of {ALL_IRF_NAMES}")
    return m.group(1), m.group(2), int(m.group(3))


def _psf_sigma_deg(name, energy_true_tev, offset_deg, psf_broadening):
    c = _curves(name)["angres"]
    r68 = _loglog_interp(energy_true_tev, c["energy"].to_value("TeV"), c["value"])
    sigma0 = r68 / R68_PER_SIGMA
    return sigma0 * (1.0 + psf_broadening * (offset_deg / 2.0) ** 2)


BKG_DEX_PER_BIN = 0.2  # the background curves tabulate 5 bins per decade


def _background_bins(table: QTable):
    """Bin centres [TeV] and rates [Hz deg⁻²] of a background curve.

    prod3b-v2 files give (E_min, E_max, rate); prod3b-v1 files give the bin
    centre and the rate only (their header mislabels the column), with the
    same 5 bins per decade, so both are read as 0.2-dex bins.
    """
    if "energy_min" in table.colnames:
        centre = np.sqrt(table["energy_min"].to_value("TeV") * table["energy_max"].to_value("TeV"))
    else:
        centre = table["energy"].to_value("TeV")
    return centre, np.asarray(table["value"], dtype=float)


@functools.lru_cache(maxsize=None)
def build_irf(name: str, fov_sigma_deg: float = 2.5, psf_broadening: float = 0.1) -> CTAIRF:
    """gammapy IRFs for the curve set ``name`` (one of :data:`ALL_IRF_NAMES`)."""
    curves = _curves(name)
    e_true = MapAxis.from_energy_edges(ENERGY_TRUE_EDGES_TEV * u.TeV, name="energy_true")
    offset = MapAxis.from_edges(np.linspace(0.0, OFFSET_MAX_DEG, 26) * u.deg, name="offset")
    fov = np.exp(-0.5 * (offset.center.to_value("deg") / fov_sigma_deg) ** 2)
    meta = {"TELESCOP": "CTA", "INSTRUME": name.replace(" ", "-")}

    c = curves["aeff"]
    aeff0 = _loglog_interp(e_true.center.to_value("TeV"), c["energy"].to_value("TeV"), c["value"], floor=1.0)
    aeff = EffectiveAreaTable2D(axes=[e_true, offset], data=aeff0[:, None] * fov[None, :], unit="m2", meta=meta)

    rad = MapAxis.from_edges(np.linspace(0.0, 1.0, 401) * u.deg, name="rad")
    sig = _psf_sigma_deg(
        name, e_true.center.to_value("TeV")[:, None, None], offset.center.to_value("deg")[None, :, None], psf_broadening
    )
    sig_rad = np.deg2rad(sig)
    r = np.deg2rad(rad.center.to_value("deg"))[None, None, :]
    psf_data = np.exp(-0.5 * (r / sig_rad) ** 2) / (2.0 * np.pi * sig_rad**2)
    psf = PSF3D(axes=[e_true, offset, rad], data=psf_data, unit="sr-1", meta=meta)

    c = curves["eres"]
    eres = np.interp(
        np.log(e_true.center.to_value("TeV")), np.log(c["energy"].to_value("TeV")), c["value"]
    )
    migra = MapAxis.from_edges(np.linspace(0.2, 5.0, 241), name="migra")
    edisp = EnergyDispersion2D.from_gauss(
        energy_axis_true=e_true, migra_axis=migra, offset_axis=offset, bias=0.0, sigma=eres
    )
    edisp.meta.update(meta)

    e_centre, rate_per_bin = _background_bins(curves["bkg"])
    e_reco = MapAxis.from_nodes(e_centre * u.TeV, name="energy", interp="log")
    half = 10 ** (0.5 * BKG_DEX_PER_BIN)
    width_mev = e_centre * (half - 1.0 / half) * 1e6
    rate = rate_per_bin / width_mev / (np.pi / 180.0) ** 2  # Hz deg^-2 per bin -> s^-1 MeV^-1 sr^-1
    bkg = Background2D(axes=[e_reco, offset], data=rate[:, None] * fov[None, :], unit="s-1 MeV-1 sr-1", meta=meta)
    return CTAIRF(name, aeff, psf, edisp, bkg, float(fov_sigma_deg), float(psf_broadening))
