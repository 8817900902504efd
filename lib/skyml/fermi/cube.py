"""Counts cubes in and source lists out, for ``skyml fermi-detect``.

Input: a WCS counts cube readable by gammapy ``Map.read`` (gammapy's own
format, or a Fermi ``gtbin`` CCUBE with an ``EBOUNDS`` HDU) with the six
energy bins of :data:`skyml.fermi.irf.ENERGY_EDGES_MEV` and square pixels of
the model's size (10°/64 = 0.15625°); its width and height must be multiples
of 64. The image is cut into non-overlapping 64×64 tiles (the model's
patches); each tile is given to the U-Net and the probability map to k-means
(or LoG). HEALPix counts maps are handled by :mod:`skyml.fermi.healpix`
(reprojected onto patches at the HEALPix NSIDE=8 centres).

Output: one row per detection: glon, glat, ra, dec [deg], probability,
x_pix, y_pix (0-based pixel of the input image, centres at integers; NaN
for a HEALPix input, :func:`skyml.fermi.healpix.sky_detections_table`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io import InputError
from ..io import read_counts_cube as read_cube
from . import detect, irf, models
from .simulate import FermiSimParams, network_inputs, patch_geom


def write_counts_cube(path, counts: np.ndarray, glon: float, glat: float, p: FermiSimParams,
                      overwrite: bool = False) -> Path:
    """Write a (6, ny, nx) counts cube centred on (glon, glat) in gammapy's format."""
    import astropy.units as u
    from astropy.coordinates import SkyCoord
    from gammapy.maps import Map, MapAxis, WcsGeom

    counts = np.asarray(counts)
    axis = MapAxis.from_energy_edges(irf.ENERGY_EDGES_MEV * u.MeV, name="energy")
    geom = WcsGeom.create(skydir=SkyCoord(glon, glat, unit="deg", frame="galactic"),
                          npix=(counts.shape[2], counts.shape[1]), binsz=p.binsz_deg, frame="galactic",
                          proj="TAN", axes=[axis])
    Map.from_geom(geom, data=counts.astype(np.float32), unit="").write(path, overwrite=overwrite)
    return Path(path)


def read_counts_cube(path, p: FermiSimParams):
    """(counts (6, ny, nx), astropy celestial WCS, description) of a counts cube
    (:func:`skyml.io.read_counts_cube`); every problem is an
    :class:`skyml.io.InputError` naming the file."""
    import astropy.units as u

    data, wcs, _ = read_cube(path, irf.ENERGY_EDGES_MEV * u.MeV, binsz_deg=p.binsz_deg)
    ny, nx = data.shape[-2:]
    if data.ndim != 3 or ny % p.npix or nx % p.npix:
        raise InputError(f"{path}: cube shape {data.shape} is not (6, ny, nx) with ny, nx multiples of {p.npix}")
    return data, wcs, f"{nx}×{ny} px × {irf.N_BINS} energy bins"


def detect_in_cube(model, counts: np.ndarray, p: FermiSimParams, method: str = "unet_kmeans",
                   threshold: float = 0.5, **detect_kwargs):
    """Detections (x_pix, y_pix, probability) of a counts cube tiled in 64×64 patches
    (``detect_kwargs`` go to :func:`skyml.fermi.detect.detect_all`)."""
    ny, nx = counts.shape[-2:]
    tiles, origins = [], []
    for y0 in range(0, ny, p.npix):
        for x0 in range(0, nx, p.npix):
            tiles.append(counts[:, y0:y0 + p.npix, x0:x0 + p.npix])
            origins.append((x0, y0))
    prob = models.predict(model, network_inputs(np.stack(tiles), p))
    det = detect.detect_all(prob, method, threshold, **detect_kwargs)
    offsets = np.array(origins, float)[det["patch"].astype(int)] if len(det["patch"]) else np.zeros((0, 2))
    return det["x_pix"] + offsets[:, 0], det["y_pix"] + offsets[:, 1], det["probability"]


def detections_table(x, y, probability, wcs):
    """Astropy QTable of detections with Galactic and ICRS positions."""
    import astropy.units as u
    from astropy.table import QTable

    sky = wcs.pixel_to_world(x, y) if len(x) else None
    gal = sky.galactic if sky is not None else None
    icrs = sky.icrs if sky is not None else None
    empty = np.zeros(0)
    table = QTable({
        "glon": (gal.l.deg if gal is not None else empty) * u.deg,
        "glat": (gal.b.deg if gal is not None else empty) * u.deg,
        "ra": (icrs.ra.deg if icrs is not None else empty) * u.deg,
        "dec": (icrs.dec.deg if icrs is not None else empty) * u.deg,
        "probability": np.asarray(probability, float),
        "x_pix": np.asarray(x, float), "y_pix": np.asarray(y, float),
    })
    table["probability"].description = "highest U-Net source probability of the detection"
    table["x_pix"].description = "input image column, 0-based, pixel centres at integers"
    table["y_pix"].description = "input image row, 0-based, pixel centres at integers"
    return table
