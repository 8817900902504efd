"""The 4FGL-DR2 catalogue, LAT source spectra, and mock catalogues drawn from it.

The catalogue is the ``gll_psc_v27.fit`` file that ``fermipy`` ships under
``fermipy/data/catalogs/`` (5,788 sources); nothing is downloaded.

Spectra (4FGL conventions, energies in MeV, natural logarithms):

- ``PowerLaw``:        dN/dE ∝ (E/E0)^-Γ
- ``LogParabola``:     dN/dE ∝ (E/E0)^(-α - β ln(E/E0))
- ``PLSuperExpCutoff`` (DR2 form): dN/dE ∝ (E/E0)^-Γ exp(a (E0^b - E^b))

Every source is normalised by its photon flux ``Flux1000`` = F(1–100 GeV)
[ph cm⁻² s⁻¹], the flux axis of AutoSourceID's purity/completeness table.

Mock catalogues (:func:`mock_catalogue`) follow the seed's recipe. Sources
are drawn per class group, with the group's size in DR2 times
``density_factor``:

- ``agn`` (BL Lacs, FSRQs, BCUs and the other extragalactic classes):
  isotropic on the sphere;
- ``psr`` (pulsars): longitude uniform, latitude a double Gaussian whose two
  widths and weight are fitted (maximum likelihood) to the DR2 pulsars;
- ``plane`` (PWN, SNR, SPP, binaries, globular clusters, star-forming
  regions, novae, ``unk``): longitude uniform, latitude a Gaussian fitted to
  DR2;
- ``unassociated``: longitude uniform, latitude a double Gaussian fitted to
  DR2 (a plane and a broad component).

Flux and spectral parameters of each mock source come from a random DR2 row
of the same group (the catalogue's own joint distribution); AGN-like groups get
that row's log-parabola parameters and pulsars its PLEC parameters, as in the
seed. The flux is jittered by 0.05 dex. Below the catalogue threshold a faint
population is added: ``faint_fraction`` times the group size, with
dN/dS ∝ S⁻² between ``faint_min_factor`` × and 1 × the group's 5th-percentile
DR2 flux, so that faint, undetectable sources exist in the training skies.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

#: Spectrum type codes used in the arrays of this module.
POWERLAW, LOGPARABOLA, PLEC = 0, 1, 2
SPECTRUM_TYPES = {"PowerLaw": POWERLAW, "LogParabola": LOGPARABOLA, "PLSuperExpCutoff": PLEC}

#: Photon-flux band of ``Flux1000`` [MeV].
FLUX_BAND_MEV = (1.0e3, 1.0e5)

GROUPS = ("agn", "psr", "plane", "unassociated")
_AGN = {"bll", "fsrq", "bcu", "agn", "rdg", "nlsy1", "css", "ssrq", "sey", "sbg", "gal"}
_PSR = {"psr", "msp"}

SPECTRUM_FIELDS = ("spectrum_type", "index", "beta", "expfactor", "exp_index", "pivot_mev", "flux1000")


def dr2_path() -> Path:
    """Path of ``gll_psc_v27.fit`` inside the installed fermipy package."""
    from ..env import fermipy_dir

    path = fermipy_dir() / "data" / "catalogs" / "gll_psc_v27.fit"
    if not path.is_file():
        raise FileNotFoundError(f"4FGL-DR2 catalogue not found at {path} (is fermipy installed?)")
    return path


def class_group(class1) -> np.ndarray:
    """Group name (one of :data:`GROUPS`) of each CLASS1 value."""
    cls = np.char.strip(np.char.lower(np.asarray(class1, dtype=str)))
    out = np.full(cls.shape, "plane", dtype="<U12")
    out[np.isin(cls, list(_AGN))] = "agn"
    out[np.isin(cls, list(_PSR))] = "psr"
    out[cls == ""] = "unassociated"
    return out


@functools.lru_cache(maxsize=2)
def _load_dr2(path: str) -> dict:
    from astropy.io import fits

    d = fits.getdata(path, "LAT_Point_Source_Catalog")
    names = np.char.strip(np.asarray(d["Source_Name"], dtype=str))
    spec_type = np.array([SPECTRUM_TYPES[s.strip()] for s in np.asarray(d["SpectrumType"], dtype=str)])
    index = np.select([spec_type == POWERLAW, spec_type == LOGPARABOLA],
                      [d["PL_Index"], d["LP_Index"]], d["PLEC_Index"]).astype(float)
    beta = np.where(spec_type == LOGPARABOLA, d["LP_beta"], 0.0).astype(float)
    expfactor = np.where(spec_type == PLEC, d["PLEC_Expfactor"], 0.0).astype(float)
    exp_index = np.where(spec_type == PLEC, d["PLEC_Exp_Index"], 1.0).astype(float)
    cls = np.char.strip(np.char.lower(np.asarray(d["CLASS1"], dtype=str)))
    out = {
        "name": names,
        "glon": np.asarray(d["GLON"], float), "glat": np.asarray(d["GLAT"], float),
        "signif_avg": np.asarray(d["Signif_Avg"], float),
        "flags": np.asarray(d["Flags"], int),
        "class1": cls, "group": class_group(cls),
        "c_source": np.char.endswith(names, "c"),
        "spectrum_type": spec_type, "index": index, "beta": beta, "expfactor": expfactor,
        "exp_index": exp_index, "pivot_mev": np.asarray(d["Pivot_Energy"], float),
        "flux1000": np.asarray(d["Flux1000"], float),
        # the alternative shapes, for mock sources of a given group
        "lp_index": np.asarray(d["LP_Index"], float), "lp_beta": np.asarray(d["LP_beta"], float),
        "plec_index": np.asarray(d["PLEC_Index"], float),
        "plec_expfactor": np.asarray(d["PLEC_Expfactor"], float),
        "plec_exp_index": np.asarray(d["PLEC_Exp_Index"], float),
    }
    return out


def load_dr2(path: str | Path | None = None) -> dict[str, np.ndarray]:
    """4FGL-DR2 as a dict of arrays (one entry per source; see the keys of
    :data:`SPECTRUM_FIELDS` plus name, glon, glat, signif_avg, flags, class1,
    group, c_source). ``Signif_Avg`` is NaN for one source."""
    data = _load_dr2(str(path or dr2_path()))
    return {k: v.copy() for k, v in data.items()}


# --------------------------------------------------------------------------- spectra
def dnde_shape(energy_mev, spectra: dict) -> np.ndarray:
    """Unnormalised dN/dE of each source at ``energy_mev``: shape (n_src, n_energy)."""
    e = np.asarray(energy_mev, float)[None, :]
    e0 = spectra["pivot_mev"][:, None]
    x = e / e0
    t = spectra["spectrum_type"][:, None]
    idx = spectra["index"][:, None]
    lnx = np.log(x)
    log_pl = -idx * lnx
    log_lp = -(idx + spectra["beta"][:, None] * lnx) * lnx
    b = spectra["exp_index"][:, None]
    log_plec = -idx * lnx + spectra["expfactor"][:, None] * (e0**b - e**b)
    logv = np.where(t == LOGPARABOLA, log_lp, np.where(t == PLEC, log_plec, log_pl))
    return np.exp(np.clip(logv, -700, 700))


def _log_grid(e_lo, e_hi, n):
    """Log-spaced nodes and weights for ∫ f(E) dE = ∫ f(E) E dln(E) from e_lo
    to e_hi (trapezoid rule in ln E)."""
    e = np.geomspace(e_lo, e_hi, n)
    w = np.zeros(n)
    dln = np.diff(np.log(e))
    w[:-1] += dln / 2
    w[1:] += dln / 2
    return e, w * e


def dnde_normalisation(spectra: dict, n_nodes: int = 64) -> np.ndarray:
    """Factor K per source so that K * :func:`dnde_shape` integrates to
    ``flux1000`` over 1–100 GeV [ph cm⁻² s⁻¹ MeV⁻¹ per unit shape]."""
    e, w = _log_grid(*FLUX_BAND_MEV, n_nodes)
    integral = dnde_shape(e, spectra) @ w
    return spectra["flux1000"] / integral


def band_photon_flux(spectra: dict, e_lo_mev: float, e_hi_mev: float, n_nodes: int = 48) -> np.ndarray:
    """Photon flux [ph cm⁻² s⁻¹] of each source between two energies."""
    e, w = _log_grid(e_lo_mev, e_hi_mev, n_nodes)
    return dnde_normalisation(spectra) * (dnde_shape(e, spectra) @ w)


def check_spectra(spectra: dict) -> None:
    for key in SPECTRUM_FIELDS:
        if key not in spectra:
            raise KeyError(f"spectra lack {key!r}")
        if not np.all(np.isfinite(spectra[key])):
            raise ValueError(f"spectra: non-finite values in {key!r}")
    if np.any(spectra["flux1000"] <= 0):
        raise ValueError("spectra: flux1000 must be positive")


# --------------------------------------------------------------------------- mock catalogues
@dataclass(frozen=True)
class MockParams:
    """How mock catalogues are drawn from DR2 (all hashed into cache keys)."""

    density_factor: float = 1.0
    faint_fraction: float = 1.0
    faint_min_factor: float = 0.2
    flux_jitter_dex: float = 0.05

    def to_dict(self) -> dict:
        return asdict(self)


def fit_double_gaussian(b_deg: np.ndarray) -> tuple[float, float, float]:
    """Maximum-likelihood (weight of the narrow component, sigma1, sigma2) [deg]
    of a latitude distribution w N(0, s1) + (1 - w) N(0, s2)."""
    from scipy.optimize import minimize

    b = np.asarray(b_deg, float)

    def nll(p):
        w = 1 / (1 + np.exp(-p[0]))
        s1, s2 = np.exp(p[1]), np.exp(p[2])
        pdf = (w * np.exp(-0.5 * (b / s1) ** 2) / s1 + (1 - w) * np.exp(-0.5 * (b / s2) ** 2) / s2)
        return -np.sum(np.log(pdf / np.sqrt(2 * np.pi) + 1e-300))

    res = minimize(nll, x0=[0.0, np.log(2.0), np.log(20.0)], method="Nelder-Mead",
                   options={"xatol": 1e-6, "fatol": 1e-8, "maxiter": 4000})
    w, s1, s2 = 1 / (1 + np.exp(-res.x[0])), np.exp(res.x[1]), np.exp(res.x[2])
    if s1 > s2:
        w, s1, s2 = 1 - w, s2, s1
    return float(w), float(s1), float(s2)


@functools.lru_cache(maxsize=1)
def latitude_models() -> dict[str, tuple]:
    """Sky model of each group fitted to DR2: ("iso",), ("gauss", s) or
    ("double", w, s1, s2)."""
    cat = load_dr2()
    out = {"agn": ("iso",)}
    for group in ("psr", "unassociated"):
        out[group] = ("double",) + fit_double_gaussian(cat["glat"][cat["group"] == group])
    b = cat["glat"][cat["group"] == "plane"]
    out["plane"] = ("gauss", float(np.sqrt(np.mean(b**2))))
    return out


def _draw_latitudes(model, n, rng):
    if model[0] == "iso":
        return np.rad2deg(np.arcsin(rng.uniform(-1, 1, n)))
    if model[0] == "gauss":
        sig = np.full(n, model[1])
    else:
        w, s1, s2 = model[1:]
        sig = np.where(rng.uniform(size=n) < w, s1, s2)
    b = rng.normal(0.0, sig)
    # fold the rare draws beyond the poles back onto the sphere
    b = np.where(np.abs(b) > 90, np.sign(b) * (180 - np.abs(b)), b)
    return np.clip(b, -90, 90)


def mock_catalogue(seed: int, params: MockParams | None = None) -> dict[str, np.ndarray]:
    """A full-sky mock catalogue drawn from the DR2 distributions (see the
    module docstring). Keys: glon, glat, class1, group, faint (below-threshold
    extension), plus :data:`SPECTRUM_FIELDS`. Same seed, same arrays."""
    p = params or MockParams()
    cat = load_dr2()
    models = latitude_models()
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 40]))
    parts = []
    for group in GROUPS:
        rows = np.flatnonzero(cat["group"] == group)
        n_main = int(round(p.density_factor * len(rows)))
        n_faint = int(round(p.faint_fraction * n_main))
        pick = rng.choice(rows, size=n_main + n_faint, replace=True)
        flux = cat["flux1000"][pick] * 10 ** rng.normal(0.0, p.flux_jitter_dex, n_main + n_faint)
        f_hi = np.percentile(cat["flux1000"][rows], 5)
        f_lo = p.faint_min_factor * f_hi
        u = rng.uniform(size=n_faint)  # dN/dS ∝ S^-2: inverse CDF of 1/S
        flux[n_main:] = 1.0 / (1.0 / f_lo - u * (1.0 / f_lo - 1.0 / f_hi))
        n = n_main + n_faint
        if group == "psr":
            st = np.full(n, PLEC)
            index, beta = cat["plec_index"][pick], np.zeros(n)
            expfactor, exp_index = cat["plec_expfactor"][pick], cat["plec_exp_index"][pick]
        else:
            st = np.full(n, LOGPARABOLA)
            index, beta = cat["lp_index"][pick], cat["lp_beta"][pick]
            expfactor, exp_index = np.zeros(n), np.ones(n)
        part = {
            "glon": rng.uniform(0.0, 360.0, n), "glat": _draw_latitudes(models[group], n, rng),
            "class1": cat["class1"][pick], "group": np.full(n, group, dtype="<U12"),
            "faint": np.arange(n) >= n_main,
            "spectrum_type": st, "index": index, "beta": beta, "expfactor": expfactor,
            "exp_index": exp_index, "pivot_mev": cat["pivot_mev"][pick], "flux1000": flux,
        }
        ok = np.all([np.isfinite(part[k]) for k in ("index", "beta", "expfactor", "exp_index")], axis=0)
        parts.append({k: v[ok] for k, v in part.items()})
    return {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}


def dr2_sky(seed: int, params: MockParams | None = None, add_faint: bool = True) -> dict[str, np.ndarray]:
    """The test sky "as the real one": every DR2 source at its catalogue
    position with its catalogue spectrum, plus (``add_faint``) the
    below-threshold population of a mock catalogue, which the real sky also
    has. Keys as :func:`mock_catalogue` plus ``dr2_index`` (-1 for the added
    faint sources), ``name``, ``signif_avg`` and ``c_source``."""
    cat = load_dr2()
    n = len(cat["glon"])
    sky = {k: cat[k] for k in ("glon", "glat", "class1", "group") + SPECTRUM_FIELDS}
    sky["faint"] = np.zeros(n, bool)
    sky["dr2_index"] = np.arange(n)
    sky["name"] = cat["name"]
    sky["signif_avg"] = cat["signif_avg"]
    sky["c_source"] = cat["c_source"]
    if add_faint:
        mock = mock_catalogue(seed, params)
        keep = mock["faint"]
        m = int(keep.sum())
        for k in ("glon", "glat", "class1", "group", "faint") + SPECTRUM_FIELDS:
            sky[k] = np.concatenate([sky[k], mock[k][keep]])
        sky["dr2_index"] = np.concatenate([sky["dr2_index"], np.full(m, -1)])
        sky["name"] = np.concatenate([sky["name"], np.full(m, "")])
        sky["signif_avg"] = np.concatenate([sky["signif_avg"], np.full(m, np.nan)])
        sky["c_source"] = np.concatenate([sky["c_source"], np.zeros(m, bool)])
    return sky
