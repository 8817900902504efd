"""All-sky HEALPix counts maps of the LAT model, cut into the U-Net's patches.

**Maps.** One HEALPix map per energy bin of :data:`skyml.fermi.irf.ENERGY_EDGES_MEV`,
GALACTIC frame, RING ordering, counts per pixel. Each bin has its own NSIDE
(:func:`bin_nsides`): the smallest power of two whose pixel size
(``healpy.nside2resol``, the square root of the pixel area) is at most

    min(PIXEL_PER_R68 × r68_k, binsz × downsample_k)

where r68_k is the bin's 68 % PSF radius
(:func:`skyml.fermi.irf.bin_psf_containment_deg` for a spectral index 2.2) and ``binsz × downsample_k`` the pixel
of that bin's U-Net input (0.625°, 0.3125°, 0.156°…), so that the map
samples the PSF with two pixels per r68 and is never coarser than the
patch it is cut into. NSIDE is capped at ``nside_max`` (default
:data:`NSIDE_MAX` = 512, 0.115° pixels, 3.1 M pixels, 25 MB of float64 per
bin); with the default parameters the bins get NSIDE 128, 256, 512, 512, 512,
512 (the last three bins would ask for 1024 without the cap).

**Expected counts** (:func:`expected_allsky`) — the model of
:func:`skyml.fermi.simulate.background_model` and
:func:`skyml.fermi.simulate.render_sources` on the sphere: the Galactic
diffuse counts per sr of :func:`skyml.fermi.simulate.diffuse_counts_per_sr`
at the pixel centres times the pixel solid angle, smoothed with
``healpy.smoothing`` by the bin's PSF (the beam window of the Gaussian mixture of
:func:`skyml.fermi.simulate.diffuse_psf_mixture`; tiny negative ringing
of the harmonic transform is clipped to 0), plus the isotropic counts; each
catalogue source adds, for every Gaussian PSF component of the bin
(:func:`skyml.fermi.irf.psf_components`: the King mixtures of FRONT/BACK at the
energy nodes), the Gaussian evaluated at the centres of the pixels within
:data:`PSF_DISC_SIGMAS` widths of the largest component
(``healpy.query_disc``), normalised by its sum over such a disc of pixels so that
each component carries its share of the source's expected counts
(:func:`skyml.fermi.simulate.node_counts`); components narrower than a third of
a pixel go into the source's pixel (:func:`source_counts_map`).
The counts (:func:`simulate_allsky`) are one Poisson draw of
``np.random.default_rng(seed)``, bin after bin: same seed, same maps.

**File format** (:func:`write_allsky`, :func:`read_healpix_counts`). Because
the bins have different NSIDEs, a file holds one gammapy HEALPix map per
energy bin, in HDUs ``COUNTS_E0`` … ``COUNTS_E5`` (gammapy's GADF HEALPix
format: a binary table of one ``CHANNEL1`` column with the ``PIXTYPE =
'HEALPIX'``, ``ORDERING``, ``NSIDE``, ``COORDSYS`` keywords, readable by
``healpy.read_map(path, hdu=...)``), each with an energy axis of its one bin
(the ``COUNTS_E<k>_BANDS`` HDUs), so ``gammapy.maps.Map.read(path,
hdu="COUNTS_E2")`` returns the 3–10 GeV map with its energy bounds. The reader
also accepts a single HEALPix map with an energy axis of the six bins (one
NSIDE for all bins; e.g. gammapy's own ``HpxNDMap.write`` or a Fermi
``gtbin`` HEALPix CCUBE). Partial-sky maps (explicit pixel lists) are allowed.

**Patches** (:func:`cut_patch`). Bin k of a patch is the map reprojected onto
the patch's TAN grid at that bin's resolution (:func:`skyml.fermi.simulate.patch_geom`
with ``downsample = p.downsample[k]``: 16×16 at 0.3–1 GeV, 32×32 at 1–3 GeV,
64×64 above) with gammapy's ``Map.reproject_to_geom(preserve_counts=True)``,
which splits each HEALPix pixel's counts over sub-pixels and sums them in the
WCS pixel that contains them. The detector receives these reprojected counts
as they are — not rounded: they are non-negative but not integers (rounding
would lose or create counts in faint pixels) — as ``log(1 + counts)``, the
transform of :func:`skyml.fermi.simulate.network_inputs`.

**Detection** (:func:`detect_in_healpix`). Patches are centred on the
NSIDE = 8 pixel centres (:func:`skyml.fermi.simulate.healpix_centres`): all
768 for an all-sky map; for a partial-sky map those whose patch lies entirely
inside every bin's map. Neighbouring patches overlap, so a source can be
detected several times; a detection is kept only from the patch of the
NSIDE = 8 pixel that owns it (:func:`skyml.fermi.simulate.owner_pixel`), or,
when that patch was not processed (edge of a partial map), from the
processed patch whose centre is nearest.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io import InputError, _check_file, _hdu_names, _one_line, _open_fits
from . import irf
from .simulate import (NSIDE, FermiSimParams, diffuse_counts_per_sr, diffuse_psf_mixture, healpix_centres,
                       node_counts, owner_pixel, patch_geom, patch_wcs, pix_to_world, resolution_groups)

#: Default cap on the NSIDE of a bin.
NSIDE_MAX = 512
#: HEALPix pixel size per 68 % PSF radius (at most).
PIXEL_PER_R68 = 0.5
#: Sources are rendered within this many widths of the bin's largest PSF component.
PSF_DISC_SIGMAS = 4.0
#: HDU name of energy bin k in the file format of :func:`write_allsky`.
HDU_FORMAT = "COUNTS_E{k}"
#: ``precision_factor`` of ``Map.reproject_to_geom`` in :func:`cut_patch`
#: (gammapy's default is 10; 4 is 6× faster and changes patch totals by < 0.5 %).
PRECISION_FACTOR = 4
#: Frame and ordering of the simulated maps.
FRAME, NEST = "galactic", False


# --------------------------------------------------------------------------- resolution
def bin_r68_deg(p: FermiSimParams) -> np.ndarray:
    """68 % PSF radius [deg] per energy bin (power law of index 2.2)."""
    return irf.bin_psf_containment_deg(p.event_types, 2.2, 0.68)


def bin_nsides(p: FermiSimParams, nside_max: int = NSIDE_MAX) -> tuple[int, ...]:
    """NSIDE of each energy bin: the smallest power of two with pixel size
    ≤ min(:data:`PIXEL_PER_R68` × r68, the bin's U-Net input pixel), at most ``nside_max``."""
    import healpy as hp

    if not hp.isnsideok(nside_max):
        raise ValueError(f"nside_max must be a power of two, got {nside_max}")
    out = []
    for k, r68 in enumerate(bin_r68_deg(p)):
        target = min(PIXEL_PER_R68 * r68, p.binsz_deg * p.downsample[k])
        nside = 1
        while nside < nside_max and np.rad2deg(hp.nside2resol(nside)) > target:
            nside *= 2
        out.append(nside)
    return tuple(out)


def _nsides(p: FermiSimParams, nside, nside_max: int) -> tuple[int, ...]:
    import healpy as hp

    if nside is None:
        return bin_nsides(p, nside_max)
    values = (int(nside),) * irf.N_BINS if np.ndim(nside) == 0 else tuple(int(n) for n in nside)
    if len(values) != irf.N_BINS or not all(hp.isnsideok(n) for n in values):
        raise ValueError(f"nside must be a power of two or {irf.N_BINS} of them, got {nside!r}")
    return values


# --------------------------------------------------------------------------- expected counts
def source_counts_map(glon, glat, counts_nodes, k: int, nside: int, p: FermiSimParams) -> np.ndarray:
    """Expected counts (npix,) in energy bin ``k`` on a RING map of ``nside`` of
    point sources at (glon, glat) [deg] with node counts ``counts_nodes`` (n_src, n_nodes).

    Each source's radial profile (the sum of its PSF Gaussians, :func:`skyml.fermi.irf.psf_components`)
    is evaluated at the pixel centres of a disc of :data:`PSF_DISC_SIGMAS` widest widths: the
    Gaussians two pixels or wider through a profile tabulated on a fine grid of angles and
    normalised by their sum over such a disc, those about a pixel wide exactly and normalised
    source by source, and those narrower than a third of a pixel go into the source's pixel."""
    import healpy as hp

    sig_deg, cbins, weights = irf.psf_components(p.event_types)
    m = cbins == k
    sig = np.deg2rad(sig_deg[m])
    amp = np.atleast_2d(counts_nodes) @ weights[:, m]  # (n_src, n_comp)
    out = np.zeros(hp.nside2npix(nside))
    vec = np.atleast_2d(hp.ang2vec(np.atleast_1d(glon), np.atleast_1d(glat), lonlat=True))
    resol = hp.nside2resol(nside)
    narrow, mid = sig < resol / 3.0, (sig >= resol / 3.0) & (sig < 2.0 * resol)
    wide = ~(narrow | mid)
    centre_pix = hp.vec2pix(nside, vec[:, 0], vec[:, 1], vec[:, 2])
    np.add.at(out, centre_pix, amp[:, narrow].sum(axis=1))

    def disc(v, radius):
        pix = hp.query_disc(nside, v, radius)
        return pix, np.arccos(np.clip(np.asarray(hp.pix2vec(nside, pix)).T @ v, -1.0, 1.0))

    if mid.any():  # about a pixel wide: sampled and normalised source by source
        radius = PSF_DISC_SIGMAS * sig[mid].max() + resol
        for i in np.flatnonzero(amp[:, mid].sum(axis=1) > 0):
            pix, theta = disc(vec[i], radius)
            g = np.exp(-0.5 * (theta[:, None] / sig[mid][None]) ** 2)
            out[pix] += g @ (amp[i, mid] / g.sum(axis=0))
    if wide.any():  # two pixels or wider: a radial profile tabulated once, normalised once
        radius = PSF_DISC_SIGMAS * sig[wide].max() + resol
        grid = np.linspace(0.0, radius, 4096)
        dens = np.exp(-0.5 * (grid[:, None] / sig[wide][None]) ** 2)
        _, theta0 = disc(np.array([1.0, 0.0, 0.0]), radius)
        norm = np.stack([np.interp(theta0, grid, dens[:, c]).sum() for c in range(dens.shape[1])])
        a_wide = amp[:, wide] / norm[None]
        for i in np.flatnonzero(amp[:, wide].sum(axis=1) > 0):
            pix, theta = disc(vec[i], radius)
            out[pix] += np.interp(theta, grid, dens @ a_wide[i])
    return out


def background_counts_map(k: int, nside: int, p: FermiSimParams, variant: int | None = None) -> np.ndarray:
    """Expected diffuse + isotropic counts (npix,) in energy bin ``k`` on a RING map of ``nside``."""
    import healpy as hp

    glon, glat = hp.pix2ang(nside, np.arange(hp.nside2npix(nside)), lonlat=True)
    galactic, iso = diffuse_counts_per_sr(glon, glat, p, variant)
    omega = hp.nside2pixarea(nside)
    sig, w = diffuse_psf_mixture(p)[k]
    lmax = 3 * nside - 1
    beam = sum(wj * hp.gauss_beam(np.deg2rad(sj) * np.sqrt(8.0 * np.log(2.0)), lmax=lmax) for sj, wj in zip(sig, w))
    smooth = hp.smoothing(galactic[k] * omega, beam_window=beam, lmax=lmax)
    return np.maximum(smooth, 0.0) + iso[k] * omega


def _sky_node_counts(sky: dict, p: FermiSimParams) -> np.ndarray:
    if "node_counts" in sky:
        return np.asarray(sky["node_counts"])
    from .catalog import SPECTRUM_FIELDS

    return node_counts({f: np.atleast_1d(sky[f]) for f in SPECTRUM_FIELDS}, p.event_types)


def expected_allsky(sky: dict | None, p: FermiSimParams, nside=None, nside_max: int = NSIDE_MAX,
                    background: bool = True) -> list[np.ndarray]:
    """Expected counts per energy bin, a list of 6 RING arrays (GALACTIC), bin
    ``k`` at NSIDE ``nside[k]`` (default :func:`bin_nsides`); ``sky`` is a
    catalogue dict with ``glon``, ``glat`` and either ``node_counts`` or the
    spectrum fields (``None``: no sources); ``background=False`` leaves out the
    diffuse and isotropic emission."""
    if not p.nominal_instrument:
        raise ValueError("the all-sky HEALPix simulation has the nominal PSF and exposure only "
                         "(psf_scale = exposure_scale = 1)")
    nsides = _nsides(p, nside, nside_max)
    out = []
    for k, ns in enumerate(nsides):
        mu = background_counts_map(k, ns, p) if background else np.zeros(12 * ns * ns)
        if sky is not None and len(np.atleast_1d(sky["glon"])):
            mu += source_counts_map(sky["glon"], sky["glat"], _sky_node_counts(sky, p), k, ns, p)
        out.append(mu)
    return out


def to_maps(arrays, dtype=np.float64) -> list:
    """gammapy ``HpxNDMap`` images (RING, GALACTIC) of a list of all-sky arrays."""
    import healpy as hp
    from gammapy.maps import HpxGeom, Map

    return [Map.from_geom(HpxGeom.create(nside=hp.npix2nside(len(a)), nest=NEST, frame=FRAME),
                          data=np.asarray(a, dtype=dtype), unit="") for a in arrays]


def simulate_allsky(sky: dict | None, p: FermiSimParams, seed: int, nside=None, nside_max: int = NSIDE_MAX,
                    background: bool = True) -> list:
    """Poisson counts of :func:`expected_allsky`: a list of 6 gammapy
    ``HpxNDMap`` images (RING, GALACTIC, float32 holding integers), one per
    energy bin. ``np.random.default_rng(seed)`` draws bin after bin, so the
    same arguments give the same maps."""
    rng = np.random.default_rng(seed)
    mu = expected_allsky(sky, p, nside, nside_max, background)
    return to_maps([rng.poisson(m) for m in mu], np.float32)


def load_allsky(seed: int, p: FermiSimParams, sky: str = "dr2", split: str = "test", nside=None,
                nside_max: int = NSIDE_MAX) -> list:
    """:func:`simulate_allsky` of the sky that :func:`skyml.fermi.simulate.load_patches`
    uses for ``(seed, split, sky)`` with ``sky="dr2"`` or a test split (the
    same catalogue, faint population included; an independent Poisson draw,
    seed sequence ``[seed, split, 5000]``), cached in
    ``data/cache/fermi_allsky/<hash>/``. Returns the six gammapy HEALPix maps."""
    from .. import cache
    from .simulate import SPLITS, _sky

    if not (sky == "dr2" or split in ("test", "demo")):
        raise ValueError("all-sky maps are made of one catalogue: the DR2 sky or a test/demo split")
    nsides = _nsides(p, nside, nside_max)
    key = {"seed": int(seed), "split": split, "sky": sky, "nsides": list(nsides), **p.to_dict(), "version": 1}

    def build():
        catalogue = _sky(sky, [int(seed), SPLITS[split], 1000], p)
        rng_seed = np.random.SeedSequence([int(seed), SPLITS[split], 5000])
        maps = simulate_allsky(catalogue, p, int(rng_seed.generate_state(1)[0]), nside=nsides)
        return {f"e{k}": m.data.astype(np.int32) for k, m in enumerate(maps)}

    arrays = cache.cached_arrays("fermi_allsky", key, build)
    return to_maps([arrays[f"e{k}"] for k in range(irf.N_BINS)], np.float32)


# --------------------------------------------------------------------------- files
def write_allsky(path, maps, overwrite: bool = False) -> Path:
    """Write one HEALPix map per energy bin (HDUs ``COUNTS_E0`` … ``COUNTS_E5``,
    each with the energy axis of its bin); atomic, refuses an existing file
    unless ``overwrite``."""
    import astropy.units as u
    from astropy.io import fits
    from gammapy.maps import Map, MapAxis

    from ..io import _atomic_write

    if len(maps) != irf.N_BINS:
        raise ValueError(f"need {irf.N_BINS} maps (one per energy bin), got {len(maps)}")
    primary = fits.PrimaryHDU()
    primary.header["SKYMLFMT"] = ("fermi-healpix-v1", "one HEALPix map per bin: HDUs COUNTS_E<k>")
    primary.header["NEBINS"] = irf.N_BINS
    hdus = [primary]
    for k, m in enumerate(maps):
        edges = irf.ENERGY_EDGES_MEV[k:k + 2] * u.MeV
        axis = MapAxis.from_energy_edges(edges, name="energy")
        geom = m.geom.to_image().to_cube([axis])
        cube = Map.from_geom(geom, data=np.asarray(m.data, np.float32).reshape(geom.data_shape), unit="")
        name = HDU_FORMAT.format(k=k)
        hdus.extend(cube.to_hdulist(hdu=name, hdu_bands=f"{name}_BANDS")[1:])
    hdul = fits.HDUList(hdus)
    return _atomic_write(path, lambda tmp: hdul.writeto(tmp, overwrite=True), overwrite)


def is_healpix_file(path) -> bool:
    """Whether ``path`` is a FITS file with a HEALPix HDU (``PIXTYPE = 'HEALPIX'``)
    or the ``COUNTS_E0`` HDU of :func:`write_allsky`; False for anything unreadable."""
    from astropy.io import fits

    try:
        with fits.open(path, memmap=False) as hdul:
            return any(h.name == HDU_FORMAT.format(k=0) or str(h.header.get("PIXTYPE", "")).upper() == "HEALPIX"
                       for h in hdul)
    except Exception:
        return False


def _read_map(path: Path, hdu: str | None):
    from gammapy.maps import Map

    try:
        return Map.read(path, hdu=hdu)
    except Exception as err:
        where = f"HDU {hdu!r}" if hdu else "the file"
        raise InputError(f"{path}: cannot read {where} as a gammapy map ({_one_line(err)})") from err


def _check_hpx(m, path: Path, label: str):
    from gammapy.maps import HpxGeom

    if not isinstance(m.geom, HpxGeom):
        raise InputError(f"{path}: {label} is not a HEALPix map (got {type(m.geom).__name__})")
    if not m.geom.is_regular:
        raise InputError(f"{path}: {label} has more than one NSIDE; one NSIDE per energy bin is required")


def _edges_str(edges_mev) -> str:
    return "-".join(f"{e / 1e3:g}" for e in edges_mev) + " GeV"


def _check_energy(m, path: Path, label: str, expected_mev: np.ndarray):
    names = m.geom.axes.names
    if names != ["energy"]:
        raise InputError(f"{path}: {label} has axes {names}; expected one 'energy' axis "
                         f"({_edges_str(expected_mev)})")
    edges = m.geom.axes["energy"].edges.to_value("MeV")
    if len(edges) != len(expected_mev) or not np.allclose(edges, expected_mev, rtol=0.01):
        raise InputError(f"{path}: {label} has energy bins {_edges_str(edges)}; expected "
                         f"{_edges_str(expected_mev)}")


def _check_counts(data: np.ndarray, path: Path, label: str) -> np.ndarray:
    data = np.asarray(data, float)
    bad = ~np.isfinite(data)
    if bad.any():
        raise InputError(f"{path}: {label}: {int(bad.sum())} pixels are NaN or infinite")
    if np.any(data < 0):
        raise InputError(f"{path}: {label}: {int(np.sum(data < 0))} pixels have negative counts; "
                         "counts must be non-negative integers")
    if np.any(data != np.round(data)):
        raise InputError(f"{path}: {label}: counts must be non-negative integers")
    return data


def read_healpix_counts(path, p: FermiSimParams | None = None):
    """(list of 6 ``HpxNDMap`` images, description) of a HEALPix counts file:
    the per-bin format of :func:`write_allsky` or one HEALPix map with the six
    energy bins. Every problem is an :class:`skyml.io.InputError` naming the
    file: not FITS, no HEALPix map, missing ``COUNTS_E<k>`` HDU, extra bins,
    wrong energy bins, NaN, negative or non-integer counts."""
    from gammapy.maps import Map

    path = Path(path)
    _check_file(path)
    with _open_fits(path) as hdul:
        names = [h.name for h in hdul]
        hpx_hdus = [h.name for h in hdul if str(h.header.get("PIXTYPE", "")).upper() == "HEALPIX"]
        hdu_list = _hdu_names(hdul)
    maps = []
    if HDU_FORMAT.format(k=0) in names:
        extra = HDU_FORMAT.format(k=irf.N_BINS)
        if extra in names:
            raise InputError(f"{path}: more than {irf.N_BINS} energy bins (HDU {extra}); expected "
                             f"{_edges_str(irf.ENERGY_EDGES_MEV)}")
        for k in range(irf.N_BINS):
            name = HDU_FORMAT.format(k=k)
            if name not in names:
                raise InputError(f"{path}: no HDU {name!r} (energy bin {k}); HDUs: {hdu_list}")
            m = _read_map(path, name)
            _check_hpx(m, path, f"HDU {name}")
            _check_energy(m, path, f"HDU {name}", irf.ENERGY_EDGES_MEV[k:k + 2])
            data = _check_counts(m.data, path, f"HDU {name}")
            maps.append(Map.from_geom(m.geom.to_image(), data=data.reshape(m.geom.to_image().data_shape), unit=""))
    else:
        if not hpx_hdus:
            raise InputError(f"{path}: not a HEALPix counts map (no HDU with PIXTYPE = 'HEALPIX' and no "
                             f"{HDU_FORMAT.format(k=0)} HDU; HDUs: {hdu_list})")
        m = _read_map(path, hpx_hdus[0])
        _check_hpx(m, path, f"HDU {hpx_hdus[0]}")
        _check_energy(m, path, f"HDU {hpx_hdus[0]}", irf.ENERGY_EDGES_MEV)
        data = _check_counts(m.data, path, f"HDU {hpx_hdus[0]}")
        image = m.geom.to_image()
        maps = [Map.from_geom(image, data=data[k], unit="") for k in range(irf.N_BINS)]
    for k, m in enumerate(maps):
        if m.geom.frame not in ("galactic", "icrs"):
            raise InputError(f"{path}: energy bin {k} is in the frame {m.geom.frame!r}; expected galactic or icrs")
    nsides = "/".join(str(int(m.geom.nside.item())) for m in maps)
    sky = "all-sky" if all(m.geom.is_allsky for m in maps) else "partial-sky"
    return maps, f"HEALPix {sky}, NSIDE {nsides} × {irf.N_BINS} energy bins"


# --------------------------------------------------------------------------- patches
def _local_map(m, glon: float, glat: float, p: FermiSimParams):
    """The part of ``m`` within the circle around the patch (half-diagonal plus
    two pixels): a cheap cut-out before the reprojection."""
    import astropy.units as u
    import healpy as hp
    from astropy.coordinates import SkyCoord
    from gammapy.maps import Map

    pos = SkyCoord(glon, glat, unit="deg", frame="galactic")
    width = 2 * (p.patch_deg / np.sqrt(2.0) + 2 * np.rad2deg(hp.nside2resol(int(m.geom.nside.item())))) * u.deg
    if m.geom.is_allsky:
        return m.cutout(pos, width)
    # HpxNDMap.cutout of a partial map reads outside pixels from the wrong index: add it into the cut-out
    local = Map.from_geom(m.geom.cutout(pos, width), unit=m.unit)
    local.coadd(m)
    return local


def patch_covered(maps, glon: float, glat: float, p: FermiSimParams) -> bool:
    """Whether every pixel centre of the patch lies in a pixel of every map
    (always true for all-sky maps)."""
    from astropy.coordinates import SkyCoord

    partial = [m for m in maps if not m.geom.is_allsky]
    if not partial:
        return True
    # quick rejection on the centre and the corners, then every pixel centre
    n = p.npix - 1
    x, y = np.array([n / 2, 0, n, 0, n]), np.array([n / 2, 0, 0, n, n])
    lon, lat = pix_to_world(patch_wcs(glon, glat, p), x, y)
    corners = SkyCoord(lon, lat, unit="deg", frame="galactic")
    if not all(np.all(m.geom.coord_to_idx(corners)[0] >= 0) for m in partial):
        return False
    coords = patch_geom(glon, glat, p).get_coord()
    return all(bool(np.all(m.geom.coord_to_idx(coords)[0] >= 0)) for m in partial)


def cut_patch(maps, glon: float, glat: float, p: FermiSimParams,
              precision_factor: int = PRECISION_FACTOR) -> list[np.ndarray]:
    """Counts of the patch centred on (glon, glat) in each energy bin: a list
    of 6 float arrays, bin k on ``patch_geom(glon, glat, p, downsample=p.downsample[k])``
    ((64/f)×(64/f), numpy order (y, x)), from ``Map.reproject_to_geom(preserve_counts=True)``;
    not rounded (see the module docstring)."""
    out = []
    for k, m in enumerate(maps):
        geom = patch_geom(glon, glat, p, downsample=p.downsample[k])
        local = _local_map(m, glon, glat, p)
        out.append(np.asarray(local.reproject_to_geom(geom, preserve_counts=True,
                                                      precision_factor=precision_factor).data, float))
    return out


def patch_inputs(patches: list[list[np.ndarray]], p: FermiSimParams) -> list[np.ndarray]:
    """U-Net multi-input of patches from :func:`cut_patch`: per resolution group
    log(1 + counts) with its energy bins as channels, (n, ny, nx, n_bins)
    float32, finest first — :func:`skyml.fermi.simulate.network_inputs` for
    counts that are already at each bin's resolution."""
    out = []
    for _, bins in resolution_groups(p):
        c = np.stack([np.stack([patch[k] for k in bins], axis=-1) for patch in patches])
        out.append(np.log1p(c.astype(np.float32)))
    return out


def keep_owned(det_glon, det_glat, det_patch, processed) -> np.ndarray:
    """Mask of the detections to keep: detection i found in the patch of NSIDE-8
    pixel ``det_patch[i]`` is kept iff that is its owner pixel, or, when the
    owner's patch is not in ``processed``, the processed pixel whose centre is nearest."""
    from .simulate import _unit

    det_patch = np.asarray(det_patch, int)
    if det_patch.size == 0:
        return np.zeros(0, bool)
    processed = np.asarray(processed, int)
    owner = owner_pixel(det_glon, det_glat, NSIDE)
    target = owner.copy()
    orphan = ~np.isin(owner, processed)
    if orphan.any():
        lon, lat = healpix_centres(NSIDE)
        centres = _unit(lon[processed], lat[processed])
        nearest = np.argmax(_unit(np.asarray(det_glon)[orphan], np.asarray(det_glat)[orphan]) @ centres.T, axis=1)
        target[orphan] = processed[nearest]
    return target == det_patch


def detect_in_healpix(model, maps, p: FermiSimParams, method: str = "unet_kmeans", threshold: float = 0.5,
                      batch: int = 64, progress: bool = False, pixels=None, **detect_kwargs) -> dict:
    """Detections in HEALPix counts maps: patches at the NSIDE-8 centres
    covered by the maps (only those of the NSIDE-8 ``pixels``, if given), U-Net
    per patch (``detect_kwargs`` go to :func:`skyml.fermi.detect.detect_all`),
    duplicates removed with :func:`keep_owned`. Returns ``glon``, ``glat``, ``probability``, ``patch``
    (NSIDE-8 pixel), ``x_pix``, ``y_pix`` (in that patch) and ``n_patches``."""
    from tqdm.auto import tqdm

    from . import detect, models

    lon, lat = healpix_centres(NSIDE)
    candidates = range(len(lon)) if pixels is None else np.unique(np.asarray(pixels, int))
    todo = np.array([i for i in candidates if patch_covered(maps, lon[i], lat[i], p)], int)
    keys = ("glon", "glat", "probability", "patch", "x_pix", "y_pix")
    found = {k: [] for k in keys}
    for start in tqdm(range(0, len(todo), batch), desc="HEALPix patches", disable=not progress):
        ids = todo[start:start + batch]
        prob = models.predict(model, patch_inputs([cut_patch(maps, lon[i], lat[i], p) for i in ids], p))
        det = detect.detect_all(prob, method, threshold, **detect_kwargs)
        patch = ids[det["patch"].astype(int)]
        for i in np.unique(patch):
            m = patch == i
            g_lon, g_lat = pix_to_world(patch_wcs(lon[i], lat[i], p), det["x_pix"][m], det["y_pix"][m])
            found["glon"].append(g_lon)
            found["glat"].append(g_lat)
            found["probability"].append(det["probability"][m])
            found["patch"].append(np.full(int(m.sum()), i))
            found["x_pix"].append(det["x_pix"][m])
            found["y_pix"].append(det["y_pix"][m])
    out = {k: np.concatenate(v) if v else np.zeros(0) for k, v in found.items()}
    keep = keep_owned(out["glon"], out["glat"], out["patch"], todo)
    out = {k: v[keep] for k, v in out.items()}
    out["patch"] = out["patch"].astype(int)
    out["n_patches"] = len(todo)
    return out


def as_patch_detections(det: dict, centre_pixels) -> dict:
    """Detections of :func:`detect_in_healpix` in the format of
    :func:`skyml.fermi.detect.detect_all` for a set of patches whose NSIDE-8
    pixels are ``centre_pixels`` (e.g. ``load_patches(...)["centre_pixel"]``):
    ``patch`` becomes the index into that set, so the evaluation of
    :mod:`skyml.fermi.evaluation` applies unchanged. Every detection's patch
    must be in the set."""
    index = {int(px): i for i, px in enumerate(np.asarray(centre_pixels, int))}
    missing = sorted({int(px) for px in det["patch"]} - set(index))
    if missing:
        raise ValueError(f"detections on NSIDE-8 pixels {missing[:5]} that are not among the patches")
    return {"patch": np.array([index[int(px)] for px in det["patch"]], int), "x_pix": np.asarray(det["x_pix"]),
            "y_pix": np.asarray(det["y_pix"]), "probability": np.asarray(det["probability"])}


def sky_detections_table(glon, glat, probability):
    """The table of :func:`skyml.fermi.cube.detections_table` for detections
    given on the sky: same columns, ``x_pix``/``y_pix`` NaN (no input image grid)."""
    import astropy.units as u
    from astropy.coordinates import SkyCoord
    from astropy.table import QTable

    glon, glat = np.asarray(glon, float), np.asarray(glat, float)
    icrs = SkyCoord(glon, glat, unit="deg", frame="galactic").icrs
    table = QTable({
        "glon": glon * u.deg, "glat": glat * u.deg,
        "ra": np.asarray(icrs.ra.deg, float).reshape(-1) * u.deg,
        "dec": np.asarray(icrs.dec.deg, float).reshape(-1) * u.deg,
        "probability": np.asarray(probability, float),
        "x_pix": np.full(len(glon), np.nan), "y_pix": np.full(len(glon), np.nan),
    })
    table["probability"].description = "highest U-Net source probability of the detection"
    table["x_pix"].description = "input image column; NaN for a HEALPix input (no image grid)"
    table["y_pix"].description = "input image row; NaN for a HEALPix input (no image grid)"
    return table
