"""The catalogue-like product of Pérez-Romero et al. (2025): detection + class + flux per source.

**Input**: a yearly WCS counts cube, a gammapy ``Map`` with a ``year`` axis
(10 bins) and the six ``energy`` bins of :mod:`skyml.fermi.irf`, pixels of
10°/64, width and height multiples of 64 (:func:`write_yearly_cube`,
:func:`read_yearly_cube`); data shape (10, 6, ny, nx).

**Steps** (:func:`build_catalogue`): the 10-year sum goes to notebook 04's
U-Net + k-means (:func:`skyml.fermi.cube.detect_in_cube`); a yearly cut-out
of the classifier's size is cropped around every detection (detections
closer than half a cut-out to the cube edge are dropped and counted); the 3D
CNN gives the class probabilities and the mean–variance network the flux
and its error, both with the diffuse + isotropic background model of the
cut-out as the known background (a new cube comes without a model of the
neighbouring sources, which the training cut-outs' known background includes); each detection is matched to the nearest 4FGL-DR2 source
within ``dr2_radius_deg`` (astropy ``match_coordinates_sky``).

**Table** (the "final catalog-like product" of Pérez-Romero et al., FITS-safe names):
``ASID_LON``, ``ASID_LAT`` (Galactic, deg), ``RA``, ``DEC`` (ICRS, deg),
``DET_PROB`` (U-Net probability), ``CLASS`` (AGN/PSR/FAKE), ``CLASS_PROB``
(its probability), ``P_AGN``, ``P_PSR``, ``P_FAKE``, ``FLUX`` and
``FLUX_ERR`` (F(1–100 GeV), ph cm⁻² s⁻¹; symmetric error F ln10 σ),
``FLUX_LO``, ``FLUX_HI`` (68 % interval), ``DR2_NAME`` (empty if none),
``DR2_SEP`` (deg).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io import InputError, read_counts_cube
from . import catalog, classify, flux, irf, variability
from .cube import detect_in_cube
from .cutouts import CLASSES, CutoutParams, crop, diffuse_background
from .simulate import FermiSimParams

YEAR_AXIS = "year"


def write_yearly_cube(path, counts: np.ndarray, glon: float, glat: float, p: FermiSimParams,
                      overwrite: bool = False) -> Path:
    """Write a (10, 6, ny, nx) yearly counts cube centred on (glon, glat)."""
    import astropy.units as u
    from astropy.coordinates import SkyCoord
    from gammapy.maps import Map, MapAxis, WcsGeom

    counts = np.asarray(counts)
    energy = MapAxis.from_energy_edges(irf.ENERGY_EDGES_MEV * u.MeV, name="energy")
    years = MapAxis.from_edges(np.arange(counts.shape[0] + 1), name=YEAR_AXIS, unit="yr", interp="lin")
    geom = WcsGeom.create(skydir=SkyCoord(glon, glat, unit="deg", frame="galactic"),
                          npix=(counts.shape[-1], counts.shape[-2]), binsz=p.binsz_deg, frame="galactic",
                          proj="TAN", axes=[energy, years])
    Map.from_geom(geom, data=counts.astype(np.float32), unit="").write(path, overwrite=overwrite)
    return Path(path)


def read_yearly_cube(path, p: FermiSimParams):
    """(counts (10, 6, ny, nx) int64, celestial WCS, description)
    (:func:`skyml.io.read_counts_cube`); every problem is an
    :class:`skyml.io.InputError` naming the file."""
    import astropy.units as u

    data, wcs, geom = read_counts_cube(path, irf.ENERGY_EDGES_MEV * u.MeV, axes=("energy", YEAR_AXIS),
                                       binsz_deg=p.binsz_deg)
    if geom.axes[YEAR_AXIS].nbin != variability.N_YEARS:
        raise InputError(f"{path}: {geom.axes[YEAR_AXIS].nbin} yearly bins; expected {variability.N_YEARS}")
    ny, nx = data.shape[-2:]
    if ny % p.npix or nx % p.npix:
        raise InputError(f"{path}: cube shape {data.shape} is not (10, 6, ny, nx) with ny, nx multiples of {p.npix}")
    return data, wcs, f"{nx}×{ny} px × {irf.N_BINS} energy bins × {variability.N_YEARS} years"


def match_dr2(glon, glat, radius_deg: float = 0.5):
    """(DR2 name or "", separation deg, DR2 index or -1) of the nearest DR2 source within ``radius_deg``."""
    import astropy.units as u
    from astropy.coordinates import SkyCoord, match_coordinates_sky

    glon, glat = np.atleast_1d(glon).astype(float), np.atleast_1d(glat).astype(float)
    if len(glon) == 0:
        return np.zeros(0, dtype="<U20"), np.zeros(0), np.zeros(0, int)
    cat = catalog.load_dr2()
    idx, sep, _ = match_coordinates_sky(SkyCoord(glon, glat, unit="deg", frame="galactic"),
                                        SkyCoord(cat["glon"], cat["glat"], unit="deg", frame="galactic"))
    sep = sep.to_value(u.deg)
    ok = sep <= radius_deg
    return np.where(ok, cat["name"][idx], ""), sep, np.where(ok, idx, -1)


def build_catalogue(counts_yearly: np.ndarray, wcs, unet, unet_params: FermiSimParams, classifier, flux_model,
                    npix_cutout: int, threshold: float = 0.5, dr2_radius_deg: float = 0.5):
    """(astropy QTable of the catalogue, yearly cut-outs (n, 10, 6, h, w), number of edge detections dropped)."""
    import astropy.units as u
    from astropy.table import QTable

    counts_yearly = np.asarray(counts_yearly)
    x, y, prob = detect_in_cube(unet, counts_yearly.sum(axis=0), unet_params, "unet_kmeans", threshold)
    cuts, keep = [], []
    for j, (xj, yj) in enumerate(zip(x, y)):
        c = crop(counts_yearly, xj, yj, npix_cutout)
        if c is not None:
            cuts.append(c[0])
            keep.append(j)
    keep = np.asarray(keep, int)
    n_edge = len(x) - len(keep)
    x, y, prob = x[keep], y[keep], prob[keep]
    cuts = np.stack(cuts) if cuts else np.zeros((0, variability.N_YEARS, irf.N_BINS, npix_cutout, npix_cutout))
    sky = wcs.pixel_to_world(x, y) if len(x) else None
    if len(cuts):
        # the background known for any position: the diffuse + isotropic model of each cut-out
        gal0 = wcs.pixel_to_world(np.round(x - (npix_cutout - 1) / 2.0) + (npix_cutout - 1) / 2.0,
                                  np.round(y - (npix_cutout - 1) / 2.0) + (npix_cutout - 1) / 2.0).galactic
        cp = CutoutParams(npix=npix_cutout, binsz_deg=unet_params.binsz_deg, event_types=unet_params.event_types,
                          diffuse_variant=unet_params.diffuse_variant)
        bkg = diffuse_background(gal0.l.deg, gal0.b.deg, cp)
        proba = classify.predict_proba(classifier, cuts, bkg, cp.binsz_deg)
        f, sig = flux.predict_flux(flux_model, cuts.sum(axis=1), bkg, cp.binsz_deg)
    else:
        proba, f, sig = np.zeros((0, len(CLASSES))), np.zeros(0), np.zeros(0)
    gal = sky.galactic if sky is not None else None
    icrs = sky.icrs if sky is not None else None
    lon = gal.l.deg if gal is not None else np.zeros(0)
    lat = gal.b.deg if gal is not None else np.zeros(0)
    name, sep, _ = match_dr2(lon, lat, dr2_radius_deg)
    cls = np.argmax(proba, axis=1) if len(proba) else np.zeros(0, int)
    flux_unit = u.Unit("cm-2 s-1")
    table = QTable({
        "ASID_LON": lon * u.deg, "ASID_LAT": lat * u.deg,
        "RA": (icrs.ra.deg if icrs is not None else np.zeros(0)) * u.deg,
        "DEC": (icrs.dec.deg if icrs is not None else np.zeros(0)) * u.deg,
        "DET_PROB": np.asarray(prob, float),
        "CLASS": np.array([CLASSES[c] for c in cls], dtype="<U4"),
        "CLASS_PROB": proba.max(axis=1) if len(proba) else np.zeros(0),
        "P_AGN": proba[:, 0], "P_PSR": proba[:, 1], "P_FAKE": proba[:, 2],
        "FLUX": f * flux_unit, "FLUX_ERR": f * np.log(10.0) * sig * flux_unit,
        "FLUX_LO": f * 10 ** -sig * flux_unit, "FLUX_HI": f * 10 ** sig * flux_unit,
        "DR2_NAME": np.asarray(name, dtype="<U20"), "DR2_SEP": sep * u.deg,
    })
    descriptions = {
        "ASID_LON": "Galactic longitude of the detection (U-Net + k-means)",
        "ASID_LAT": "Galactic latitude of the detection", "DET_PROB": "highest U-Net probability",
        "CLASS": "3D-CNN class (AGN, PSR or FAKE)", "CLASS_PROB": "probability of CLASS",
        "FLUX": "F(1-100 GeV), mean-variance network (median)", "FLUX_ERR": "1 sigma error of FLUX",
        "FLUX_LO": "FLUX 68% interval, lower", "FLUX_HI": "FLUX 68% interval, upper",
        "DR2_NAME": f"nearest 4FGL-DR2 source within {dr2_radius_deg} deg", "DR2_SEP": "separation to DR2_NAME",
    }
    for k, v in descriptions.items():
        table[k].description = v
    return table, cuts, n_edge


# --------------------------------------------------------------------------- simulated yearly skies
def simulate_yearly_region(sky: dict, glon: float, glat: float, npix: int, seed: int,
                           p: FermiSimParams | None = None):
    """A yearly counts cube (10, 6, npix, npix) of a region of a simulated sky
    (e.g. :func:`skyml.fermi.catalog.dr2_sky`), every source with the light
    curve of :mod:`skyml.fermi.variability` (drawn from ``seed``).
    Returns (counts, yearly factors of the sky's sources, indices of the
    sources near the region, their pixel x, y)."""
    from .simulate import _unit, background_model, node_counts, patch_wcs, render_sources, world_to_pix

    base = p or FermiSimParams()
    q = FermiSimParams(npix=int(npix), patch_deg=npix * base.binsz_deg, event_types=base.event_types,
                       downsample=(1,) * irf.N_BINS, diffuse_variant=base.diffuse_variant)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 4242]))
    _, yearly = variability.draw_light_curves(sky["class1"], rng)
    unit = _unit(sky["glon"], sky["glat"])
    radius = np.deg2rad(q.patch_deg / np.sqrt(2.0) + q.source_margin_deg)
    near = np.flatnonzero(unit @ _unit(glon, glat) > np.cos(radius))
    wcs = patch_wcs(glon, glat, q)
    x, y = world_to_pix(wcs, sky["glon"][near], sky["glat"][near])
    nc = node_counts({k: sky[k][near] for k in catalog.SPECTRUM_FIELDS}, q.event_types)
    bkg = background_model(glon, glat, q) / variability.N_YEARS
    counts = np.empty((variability.N_YEARS, irf.N_BINS, q.npix, q.npix), np.int32)
    for year in range(variability.N_YEARS):
        mu = render_sources(x, y, nc * (yearly[near, year] / variability.N_YEARS)[:, None], q) + bkg
        counts[year] = rng.poisson(mu)
    return counts, yearly, near, x, y
