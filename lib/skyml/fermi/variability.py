"""Yearly variability of LAT sources: a documented stochastic light-curve model.

Seed 002 classifies sources from ten yearly counts cubes (2008–2018) because
"all blazars are likely variable, but fainter sources contain large
statistical uncertainty", while pulsars are steady. This module gives every
source ten yearly flux factors ``f_y`` (y = 0 … 9), the flux of year ``y``
being ``F1000 × f_y``:

- **Blazars and other AGN** (``catalog.class_group == "agn"``): independent
  (white) log-normal yearly fluxes, ``f_y ∝ exp(σ z_y)`` with ``z_y ~ N(0, 1)``,
  rescaled so that the ten factors average to exactly 1 — the catalogue flux
  is the 10-year mean flux. The amplitude ``σ`` is class-dependent and drawn
  per source: a fractional variability ``fv`` is drawn from the
  ``Frac_Variability`` values of the 4FGL-DR2 sources of the same CLASS1
  that were measured variable (``Frac_Variability > 0``; the zeros of faint
  sources are upper limits of the measurement, not steadiness), and
  ``σ = sqrt(ln(1 + fv²))``, the log-normal width whose fractional standard
  deviation is ``fv``. FSRQs (DR2 median fv ≈ 0.65) vary more than BL Lacs
  (≈ 0.45). CLASS1 values without measured variable DR2 members use the BCU
  distribution.
- **Pulsars and every other class** (``psr``, ``plane``, ``unassociated``):
  steady, ``f_y = 1``.

The yearly exposure is a tenth of the 10-year exposure of
:mod:`skyml.fermi.irf`, so the counts of year ``y`` are Poisson with mean
``f_y / 10`` times the 10-year expected source counts, plus a tenth of the
background: faint sources are dominated by Poisson noise, as in the seed.

:func:`variability_index` is the catalogue-style statistic of the yearly
counts of an aperture (a χ² of the ten counts against their mean, Poisson
variances), the variability feature of the tree baseline.
"""

from __future__ import annotations

import functools

import numpy as np

from . import catalog

N_YEARS = 10
#: CLASS1 whose distribution is used when a variable class has no measured DR2 member.
FALLBACK_CLASS = "bcu"


@functools.lru_cache(maxsize=1)
def dr2_frac_variability() -> dict[str, np.ndarray]:
    """Positive ``Frac_Variability`` values of 4FGL-DR2 per CLASS1 (AGN classes only)."""
    from astropy.io import fits

    d = fits.getdata(catalog.dr2_path(), "LAT_Point_Source_Catalog")
    cls = np.char.strip(np.char.lower(np.asarray(d["CLASS1"], dtype=str)))
    fv = np.asarray(d["Frac_Variability"], float)
    group = catalog.class_group(cls)
    out = {}
    for c in np.unique(cls[group == "agn"]):
        vals = fv[(cls == c) & np.isfinite(fv) & (fv > 0)]
        if len(vals):
            out[str(c)] = np.sort(vals)
    return out


def is_variable(class1) -> np.ndarray:
    """True for the classes that vary (the ``agn`` group of :func:`catalog.class_group`)."""
    return catalog.class_group(class1) == "agn"


def draw_sigma(class1, rng: np.random.Generator) -> np.ndarray:
    """Log-normal width σ of each source (0 for steady classes)."""
    class1 = np.char.strip(np.char.lower(np.atleast_1d(np.asarray(class1, dtype=str))))
    table = dr2_frac_variability()
    sigma = np.zeros(len(class1))
    variable = is_variable(class1)
    for c in np.unique(class1[variable]):
        m = variable & (class1 == c)
        pool = table.get(str(c), table[FALLBACK_CLASS])
        fv = rng.choice(pool, size=int(m.sum()), replace=True)
        sigma[m] = np.sqrt(np.log1p(fv**2))
    return sigma


def yearly_factors(sigma, rng: np.random.Generator, n_years: int = N_YEARS) -> np.ndarray:
    """Yearly flux factors (n_src, n_years) with mean exactly 1 per source:
    ``exp(σ z) / mean_y exp(σ z)``; σ = 0 gives all ones."""
    sigma = np.atleast_1d(np.asarray(sigma, float))
    if np.any(~np.isfinite(sigma)) or np.any(sigma < 0):
        raise ValueError("sigma must be finite and non-negative")
    z = rng.standard_normal((len(sigma), int(n_years)))
    f = np.exp(sigma[:, None] * z)
    return f / f.mean(axis=1, keepdims=True)


def draw_light_curves(class1, rng: np.random.Generator, n_years: int = N_YEARS):
    """(σ, yearly factors) of sources of the given CLASS1 values."""
    sigma = draw_sigma(class1, rng)
    return sigma, yearly_factors(sigma, rng, n_years)


def variability_index(yearly_counts, yearly_background=None) -> np.ndarray:
    """χ² of yearly counts against their mean, with Poisson variances.

    ``yearly_counts`` (..., n_years): counts of an aperture per year;
    ``yearly_background`` (same shape or broadcastable) the expected
    background there, added to the variance (not subtracted from the mean
    model, which is the constant of the counts). Steady sources give
    χ² ≈ n_years − 1 on average.
    """
    n = np.asarray(yearly_counts, float)
    mean = n.mean(axis=-1, keepdims=True)
    var = np.maximum(mean, 1.0)
    if yearly_background is not None:
        var = np.maximum(var, np.asarray(yearly_background, float))
    return np.sum((n - mean) ** 2 / var, axis=-1)


def fractional_variability(yearly_flux) -> np.ndarray:
    """Sample standard deviation over mean of yearly fluxes (..., n_years)."""
    f = np.asarray(yearly_flux, float)
    return f.std(axis=-1, ddof=1) / f.mean(axis=-1)
