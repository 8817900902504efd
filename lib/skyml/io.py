"""Reading and validating user inputs (counts maps, DL3 event lists) and
writing outputs atomically.

Every reader checks what the analyses rely on and raises :class:`InputError`
with a one-line message that names the file and the problem, so that the
command-line tools (:mod:`skyml.cli`) can print it as it is:

- counts maps (:func:`read_counts_map`): a FITS image with a celestial WCS,
  two non-degenerate axes, finite non-negative counts, not all zero, and
  optionally a given shape and pixel size;
- real-valued images (:func:`read_image`): a FITS image with a celestial WCS
  and two non-degenerate axes, signed values (e.g. a radio image in Jy/beam),
  NaN allowed for blanked pixels but not everywhere; the header is returned;
- event lists (:func:`read_event_list`): a GADF DL3 file with an ``EVENTS``
  HDU holding at least one event and the pointing keywords ``RA_PNT`` and
  ``DEC_PNT`` (ICRS degrees) in its header;
- CTA inputs (:func:`read_cta_input`): either of the two, turned into the
  counts map of the CTA analysis geometry.

The writers (:func:`write_fits_map`, :func:`write_table`) write to a
temporary file in the destination folder and move it into place, so a reader
never sees a half-written file and a failure leaves no file behind; they
refuse to replace an existing file unless ``overwrite=True``.

Array conventions: numpy order ``(ny, nx)``, ``x`` is the column index, pixel
centres at integers (astropy's 0-based pixel convention).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales

__all__ = [
    "InputError",
    "read_counts_map",
    "read_image",
    "read_counts_cube",
    "read_event_list",
    "read_cta_input",
    "write_fits_map",
    "write_table",
    "fits_ascii",
]

#: Relative tolerance on the pixel size of a counts map.
PIXEL_SIZE_RTOL = 0.01

_IMAGE_HDU_TYPES = (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)

#: Table formats of :func:`write_table`, by file-name suffix.
TABLE_FORMATS = {".ecsv": "ascii.ecsv", ".fits": "fits", ".fit": "fits", ".csv": "ascii.csv"}


class InputError(ValueError):
    """A user input (or output location) that cannot be used; the message is
    one line naming the file and the problem."""


def _shape_str(shape) -> str:
    return "×".join(str(int(n)) for n in shape)


def _check_file(path: Path) -> None:
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a file")
    if not os.access(path, os.R_OK):
        raise InputError(f"{path}: file is not readable (permission denied)")


@contextlib.contextmanager
def _open_fits(path: Path) -> Iterator[fits.HDUList]:
    """``fits.open`` with the failures of a missing, non-FITS or corrupt file
    turned into :class:`InputError`. Data are read into memory (no memmap)."""
    _check_file(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            hdul = fits.open(path, memmap=False)
        except Exception as err:  # astropy raises OSError, ValueError, ... for non-FITS bytes
            raise InputError(f"{path}: not a FITS file or corrupt ({_one_line(err)})") from err
        try:
            if len(hdul) == 0:
                raise InputError(f"{path}: not a FITS file or corrupt (no HDU)")
            yield hdul
        finally:
            hdul.close()
    for warning in caught:
        text = " ".join(str(warning.message).split())
        if "truncated" in text or "corrupt" in text:
            raise InputError(f"{path}: FITS file corrupt or truncated ({text})")
    for warning in caught:  # anything else is passed on unchanged
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _hdu_names(hdul: fits.HDUList) -> str:
    return ", ".join(hdu.name or str(i) for i, hdu in enumerate(hdul))


def _hdu_data(hdu, path: Path, label: str):
    try:
        return hdu.data
    except Exception as err:  # truncated file, bad BITPIX, ...
        raise InputError(f"{path}: cannot read the data of HDU {label}, file corrupt or truncated "
                         f"({_one_line(err)})") from err


def _select_image_hdu(hdul: fits.HDUList, path: Path, hdu: str | int | None):
    """The requested HDU, or the first image HDU with data; returns (hdu, label, data)."""
    if hdu is not None:
        try:
            chosen = hdul[hdu]
        except (KeyError, IndexError) as err:
            raise InputError(f"{path}: no HDU {hdu!r} (HDUs: {_hdu_names(hdul)})") from err
        label = repr(chosen.name or hdu)
        if not isinstance(chosen, _IMAGE_HDU_TYPES):
            raise InputError(f"{path}: HDU {label} is a {type(chosen).__name__}, not an image")
        data = _hdu_data(chosen, path, label)
        if data is None or np.size(data) == 0:
            raise InputError(f"{path}: HDU {label} holds no image data")
        return chosen, label, data
    for index, candidate in enumerate(hdul):
        if isinstance(candidate, _IMAGE_HDU_TYPES) and candidate.header.get("NAXIS", 0) > 0:
            label = repr(candidate.name or index)
            data = _hdu_data(candidate, path, label)
            if data is not None and np.size(data) > 0:
                return candidate, label, data
    raise InputError(f"{path}: no image HDU with data (HDUs: {_hdu_names(hdul)})")


def _parse_wcs(header: fits.Header, path: Path, label: str) -> WCS:
    from astropy.wcs import FITSFixedWarning

    try:
        with warnings.catch_warnings():
            # 'datfix'/'unitfix' notes on harmless header conventions
            warnings.simplefilter("ignore", FITSFixedWarning)
            return WCS(header)
    except Exception as err:
        raise InputError(f"{path}: invalid WCS in HDU {label} ({_one_line(err)})") from err


def _image_and_wcs(data, header: fits.Header, path: Path, label: str):
    """2D float64 image and its 2-axis celestial WCS; squeezes length-1 axes of
    a cube. Returns (image, wcs, notes) where notes lists what was done."""
    data = np.asarray(data)
    notes: list[str] = []
    if data.ndim < 2:
        raise InputError(f"{path}: HDU {label} holds {data.ndim}D data of shape "
                         f"{_shape_str(data.shape)}, not a 2D map")
    keep = [ax for ax in range(data.ndim) if data.shape[ax] != 1] if data.ndim > 2 else [0, 1]
    if len(keep) != 2:
        raise InputError(f"{path}: HDU {label} holds {data.ndim}D data of shape "
                         f"{_shape_str(data.shape)}, not a 2D map")
    image = data.reshape(data.shape[keep[0]], data.shape[keep[1]])
    if data.ndim > 2:
        notes.append(f"squeezed the {data.ndim}D cube of shape {_shape_str(data.shape)} "
                     f"to a 2D map of {_shape_str(image.shape)}")

    if not any(key.startswith("CTYPE") for key in header):
        raise InputError(f"{path}: HDU {label} has no WCS (no CTYPE1/CTYPE2 keywords)")
    wcs = _parse_wcs(header, path, label)
    # WCS axis (0-based) of numpy axis ``ax`` is ndim - 1 - ax; x (columns) first
    wcs_axes = [data.ndim - 1 - keep[1], data.ndim - 1 - keep[0]]
    if max(wcs_axes) >= wcs.naxis:
        raise InputError(f"{path}: HDU {label} has a {wcs.naxis}-axis WCS for "
                         f"{data.ndim}D data; cannot match map axes to sky axes")
    ctypes = [wcs.wcs.ctype[i] for i in wcs_axes]
    try:
        sub = wcs.sub([i + 1 for i in wcs_axes]) if wcs.naxis != 2 or wcs_axes != [0, 1] else wcs
    except Exception as err:  # wcslib refuses e.g. a PC/CD matrix that mixes a map axis with a dropped one
        raise InputError(f"{path}: the WCS of HDU {label} cannot be cut to the map axes "
                         f"({_one_line(err)})") from err
    if not sub.has_celestial or sub.celestial.naxis != 2 or sub.naxis != 2:
        raise InputError(f"{path}: WCS of HDU {label} is not celestial "
                         f"(map axes have CTYPE {ctypes[0]!r}, {ctypes[1]!r})")
    return image, sub.celestial, notes


def _read_counts_map(path, expected_shape=None, expected_binsz_deg=None, hdu=None):
    """:func:`read_counts_map` that also returns (notes, HDU label)."""
    path = Path(path)
    with _open_fits(path) as hdul:
        chosen, label, data = _select_image_hdu(hdul, path, hdu)
        image, wcs, notes = _image_and_wcs(data, chosen.header, path, label)
        header = chosen.header.copy()
        # the shape is known before the data are read: a wrong one is refused without reading them
        if expected_shape is not None and image.shape != tuple(int(n) for n in expected_shape):
            raise InputError(f"{path}: expected {_shape_str(expected_shape)}, got {_shape_str(image.shape)} "
                             "pixels (ny×nx)")
    try:
        counts = image.astype(np.float64)
    except (TypeError, ValueError) as err:
        raise InputError(f"{path}: HDU {label} data are not numeric ({_one_line(err)})") from err
    blank = header.get("BLANK")
    if blank is not None and header.get("BITPIX", -32) > 0 and np.any(image == blank):
        raise InputError(f"{path}: map has undefined (BLANK) pixels")
    scales = proj_plane_pixel_scales(wcs)  # per axis, in the WCS unit (deg for celestial axes)
    units = {str(u) for u in wcs.wcs.cunit}
    if units - {"deg", ""}:
        raise InputError(f"{path}: celestial WCS in unexpected units {sorted(units)}")
    if expected_binsz_deg is not None:
        expected = float(expected_binsz_deg)
        if np.any(np.abs(scales - expected) > PIXEL_SIZE_RTOL * expected):
            raise InputError(f"{path}: pixel size {scales[0]:.4g}°×{scales[1]:.4g}°, expected "
                             f"{expected:.4g}° (±{PIXEL_SIZE_RTOL:.0%})")
    bad = ~np.isfinite(counts)
    if bad.any():
        raise InputError(f"{path}: {int(bad.sum())} pixels are NaN or infinite; a counts map "
                         "must be finite")
    negative = counts < 0
    if negative.any():
        raise InputError(f"{path}: {int(negative.sum())} pixels have negative counts "
                         f"(min {counts.min():.4g}); a counts map must be >= 0")
    if not counts.any():
        raise InputError(f"{path}: the map is empty (all pixels are zero)")
    return counts, wcs, notes, label


def read_counts_map(path, expected_shape=None, expected_binsz_deg=None, hdu=None):
    """Read and validate a counts map from a FITS image.

    Parameters
    ----------
    path : str or Path
        FITS file (compressed ``.gz`` files too).
    expected_shape : (ny, nx), optional
        Required shape in numpy order (rows, columns).
    expected_binsz_deg : float, optional
        Required pixel size in degrees, on both axes, within 1 %.
    hdu : str or int, optional
        Name or index of the HDU to read; default: the first image HDU with data.

    Returns
    -------
    counts : float64 array, shape (ny, nx)
    wcs : astropy ``WCS``, celestial, 2 axes, matching ``counts``.

    A cube with length-1 axes (e.g. a single energy bin, 1×ny×nx) is squeezed
    to its 2D map; :func:`read_cta_input` reports it in its description.

    Raises
    ------
    InputError
        File missing or unreadable, not a FITS file or corrupt, no image HDU,
        data not 2D, wrong shape, WCS missing or not celestial, wrong pixel
        size, NaN or infinite values, negative counts, or an all-zero map.
    """
    counts, wcs, _, _ = _read_counts_map(path, expected_shape, expected_binsz_deg, hdu)
    return counts, wcs


def read_image(path, hdu=None):
    """Read a real-valued (signed) image with its celestial WCS from a FITS file.

    Unlike :func:`read_counts_map`, negative values are allowed (an
    interferometric image, a residual map) and so are NaN pixels (blanked
    regions; integer ``BLANK`` pixels are turned into NaN), as long as one
    pixel is finite.

    Parameters
    ----------
    path : str or Path
        FITS file (compressed ``.gz`` files too).
    hdu : str or int, optional
        Name or index of the HDU to read; default: the first image HDU with data.

    Returns
    -------
    image : float64 array, shape (ny, nx)
    wcs : astropy ``WCS``, celestial, 2 axes, matching ``image``.
    header : astropy ``fits.Header``, a copy of the chosen HDU's header.

    Raises
    ------
    InputError
        File missing or unreadable, not a FITS file or corrupt, no image HDU,
        data not 2D or not numeric, WCS missing or not celestial, or no finite
        pixel.
    """
    path = Path(path)
    with _open_fits(path) as hdul:
        chosen, label, data = _select_image_hdu(hdul, path, hdu)
        image, wcs, _ = _image_and_wcs(data, chosen.header, path, label)
        header = chosen.header.copy()
    try:
        values = np.array(image, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise InputError(f"{path}: HDU {label} data are not numeric ({_one_line(err)})") from err
    blank = header.get("BLANK")
    if blank is not None and header.get("BITPIX", -32) > 0:
        values[np.asarray(image) == blank] = np.nan
    if not np.isfinite(values).any():
        raise InputError(f"{path}: every pixel of HDU {label} is NaN or infinite")
    return values, wcs, header


def read_counts_cube(path, energy_edges, *, axes=("energy",), binsz_deg: float | None = None):
    """(counts int64 ndarray, celestial WCS, gammapy ``WcsGeom``) of a gammapy
    WCS counts cube, checked against what a model expects.

    ``energy_edges`` is an astropy Quantity of the expected energy-bin edges
    (1 % tolerance); ``axes`` the non-spatial axis names, in order, the cube
    must have (an "energy" axis is always required); ``binsz_deg`` the expected
    pixel size. The data must be finite non-negative integers. Every problem is
    an :class:`InputError` naming the file.
    """
    import astropy.units as u
    from gammapy.maps import Map, WcsGeom

    path = Path(path)
    _check_file(path)
    try:
        cube = Map.read(path)
    except Exception as err:  # astropy/gammapy raise many types for a non-map file
        raise InputError(f"{path}: not a readable counts cube ({type(err).__name__}: {err})") from err
    if not isinstance(cube.geom, WcsGeom):
        raise InputError(f"{path}: only WCS counts cubes are supported here (got {type(cube.geom).__name__}); "
                         "HEALPix counts: skyml.fermi.healpix.read_healpix_counts")
    expected = u.Quantity(energy_edges)
    names = cube.geom.axes.names
    if "energy" not in names:
        raise InputError(f"{path}: the cube has no 'energy' axis; expected {len(expected) - 1} energy bins")
    if list(names) != list(axes):
        raise InputError(f"{path}: axes {names}; expected {list(axes)}")
    edges = cube.geom.axes["energy"].edges.to(expected.unit)
    if len(edges) != len(expected) or not np.allclose(edges.value, expected.value, rtol=0.01):
        raise InputError(f"{path}: energy bins {np.round(edges.value, 4).tolist()} {expected.unit} differ from "
                         f"the model's {np.round(expected.value, 4).tolist()} {expected.unit}")
    if binsz_deg is not None:
        binsz = np.abs(cube.geom.pixel_scales.to_value("deg"))
        if not np.allclose(binsz, binsz_deg, rtol=PIXEL_SIZE_RTOL):
            raise InputError(f"{path}: pixel size {binsz.round(5).tolist()} deg differs from the model's "
                             f"{binsz_deg} deg")
    data = np.asarray(cube.data, dtype=float)
    if not np.all(np.isfinite(data)):
        raise InputError(f"{path}: {int(np.sum(~np.isfinite(data)))} pixels are NaN or infinite")
    if np.any(data < 0) or np.any(data != np.round(data)):
        raise InputError(f"{path}: counts must be non-negative integers")
    return data.astype(np.int64), cube.geom.wcs, cube.geom


def _pointing_from_header(header: fits.Header, path: Path):
    from astropy.coordinates import SkyCoord

    missing = [key for key in ("RA_PNT", "DEC_PNT") if key not in header]
    if missing:
        raise InputError(f"{path}: EVENTS header lacks the pointing keyword(s) {', '.join(missing)}")
    try:
        ra, dec = float(header["RA_PNT"]), float(header["DEC_PNT"])
    except (TypeError, ValueError) as err:
        raise InputError(f"{path}: pointing keywords RA_PNT/DEC_PNT are not numbers") from err
    if not (np.isfinite(ra) and np.isfinite(dec) and -90.0 <= dec <= 90.0):
        raise InputError(f"{path}: invalid pointing RA_PNT={ra}, DEC_PNT={dec}")
    return SkyCoord(ra % 360.0, dec, unit="deg", frame="icrs")


def _has_events_hdu(hdul: fits.HDUList) -> bool:
    return any(hdu.name == "EVENTS" for hdu in hdul)


def read_event_list(path):
    """Read a GADF DL3 event list.

    Returns
    -------
    events : gammapy ``EventList`` (at least one event)
    pointing : ``SkyCoord`` (ICRS) of the telescope pointing, from the
        ``RA_PNT`` / ``DEC_PNT`` keywords of the ``EVENTS`` header (as
        gammapy's ``EventList.pointing_radec``).

    Raises
    ------
    InputError
        File missing, not a FITS file or corrupt, no ``EVENTS`` HDU, missing
        or invalid pointing keywords, no events, or an ``EVENTS`` table that
        gammapy cannot read (e.g. missing RA/DEC/ENERGY columns).
    """
    from gammapy.data import EventList

    path = Path(path)
    with _open_fits(path) as hdul:
        if not _has_events_hdu(hdul):
            raise InputError(f"{path}: no EVENTS HDU, not a DL3 event list (HDUs: {_hdu_names(hdul)})")
        header = hdul["EVENTS"].header.copy()
        if not isinstance(hdul["EVENTS"], fits.BinTableHDU):
            raise InputError(f"{path}: EVENTS HDU is not a binary table")
        n_rows = int(header.get("NAXIS2", 0))
    pointing = _pointing_from_header(header, path)
    if n_rows == 0:
        raise InputError(f"{path}: the EVENTS table holds no events")
    try:
        events = EventList.read(path)
        n_events = len(events.table)
        # the columns the binning uses
        events.radec, events.energy  # noqa: B018
    except Exception as err:
        raise InputError(f"{path}: cannot read the EVENTS table ({_one_line(err)})") from err
    if n_events == 0:
        raise InputError(f"{path}: the EVENTS table holds no events")
    return events, pointing


def _is_event_list(path: Path) -> bool:
    with _open_fits(path) as hdul:
        return _has_events_hdu(hdul)


def read_cta_input(path, params=None):
    """A CTA observation as the counts map of the analysis geometry.

    Dispatches on the content of ``path``: a file with an ``EVENTS`` HDU is a
    DL3 event list, binned with :func:`skyml.cta.simulate.bin_events` into
    the ``params.npix``² map of ``params.binsz_deg`` centred on its pointing
    (reconstructed energies in [``energy_min_tev``, ``energy_max_tev``));
    anything else must be a counts map of that shape and pixel size
    (:func:`read_counts_map`), used at its own WCS.

    Parameters
    ----------
    path : str or Path
    params : :class:`skyml.cta.simulate.CTASimParams`, optional (defaults)

    Returns
    -------
    counts : float64 array (npix, npix)
    wcs : celestial astropy ``WCS`` of the map
    description : str, one line saying what was read.
    """
    from .cta.simulate import CTASimParams, bin_events, map_wcs

    path = Path(path)
    p = params or CTASimParams()
    if _is_event_list(path):
        events, pointing = read_event_list(path)
        counts = bin_events(events, pointing.ra.deg, pointing.dec.deg, p).astype(np.float64)
        n_in = int(counts.sum())
        if n_in == 0:
            raise InputError(f"{path}: none of the {len(events.table)} events falls in the "
                             f"{p.npix}×{p.npix} map of {p.binsz_deg}°/px around the pointing "
                             f"within {p.energy_min_tev}–{p.energy_max_tev} TeV")
        wcs = map_wcs(pointing.ra.deg, pointing.dec.deg, p.npix, p.binsz_deg)
        description = (
            f"DL3 event list {path.name}: {n_in} of {len(events.table)} events binned into "
            f"{p.npix}×{p.npix} px of {p.binsz_deg}° around the pointing RA {pointing.ra.deg:.3f}°, "
            f"Dec {pointing.dec.deg:.3f}° ({p.energy_min_tev}–{p.energy_max_tev} TeV)"
        )
        return counts, wcs, description
    counts, wcs, notes, label = _read_counts_map(path, (p.npix, p.npix), p.binsz_deg)
    centre = wcs.pixel_to_world((p.npix - 1) / 2, (p.npix - 1) / 2).icrs
    description = (
        f"counts map {path.name} (HDU {label}): {counts.sum():.0f} counts in "
        f"{p.npix}×{p.npix} px of {p.binsz_deg}°, centre RA {centre.ra.deg:.3f}°, "
        f"Dec {centre.dec.deg:.3f}°"
    )
    if notes:
        description += "; " + "; ".join(notes)
    return counts, wcs, description


# ---------------------------------------------------------------------------
# Atomic writers
# ---------------------------------------------------------------------------


#: Name of the temporary file of an atomic write: ``.<name>.<12 hex>.tmp``.
TEMP_NAME = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")


def temp_path(path) -> Path:
    """A fresh temporary name next to ``path``: ``.<name>.<12 hex>.tmp``, with
    ``<name>`` shortened so that the whole name fits the file system's
    file-name limit (255 bytes on most)."""
    path = Path(path)
    try:
        limit = int(os.pathconf(path.parent, "PC_NAME_MAX"))
    except (OSError, ValueError):
        limit = 255
    stem = os.fsdecode(os.fsencode(path.name)[: max(1, limit - 18)]) or "out"
    return path.parent / f".{stem}.{secrets.token_hex(6)}.tmp"


def _check_output(path: Path, overwrite: bool) -> None:
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give an output file name")
    if not path.parent.is_dir():
        raise InputError(f"{path}: output folder {path.parent} does not exist")
    if path.exists() and not path.is_file():
        raise InputError(f"{path}: exists and is not a regular file; refusing to replace it")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: output file exists (overwrite it explicitly to replace it)")


def _atomic_write(path, write: Callable[[Path], None], overwrite: bool) -> Path:
    """Call ``write(tmp)`` on a fresh temporary file next to ``path`` and move it
    into place; without ``overwrite`` an existing ``path`` is never replaced,
    even one created meanwhile. On any failure the temporary file is removed."""
    path = Path(path)
    _check_output(path, overwrite)
    tmp = temp_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # mode as for any new file
    os.close(fd)
    try:
        write(tmp)
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if path exists: no clobbering
            except FileExistsError as err:
                raise FileExistsError(f"{path}: output file exists (overwrite it explicitly to "
                                      "replace it)") from err
            except OSError:  # file system without hard links
                if path.exists():
                    raise FileExistsError(f"{path}: output file exists (overwrite it explicitly "
                                          "to replace it)") from None
                os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


_ASCII_SUBSTITUTES = str.maketrans({"×": "x", "°": " deg", "–": "-", "—": "-", "±": "+/-",
                                     "²": "^2", "µ": "u", "’": "'", "‘": "'", "“": '"', "”": '"'})


def fits_ascii(text: str) -> str:
    """``text`` in the printable ASCII that FITS header values allow: common
    symbols spelled out (``×`` → ``x``, ``°`` → `` deg``), any other character
    as its Python escape (``\\u00e9``)."""
    text = text.translate(_ASCII_SUBSTITUTES)
    text = text.encode("ascii", "backslashreplace").decode("ascii")
    return "".join(c if " " <= c <= "~" else " " for c in text)


def write_fits_map(path, data, wcs, header_extra: Mapping[str, Any] | None = None,
                   overwrite: bool = False) -> Path:
    """Write a 2D map as the primary image of a FITS file, atomically.

    Parameters
    ----------
    path : str or Path
    data : 2D array (ny, nx); written as float32 unless already float64 or integer
    wcs : celestial astropy ``WCS`` of 2 axes
    header_extra : mapping, optional
        Extra header cards, ``{KEYWORD: value}`` or ``{KEYWORD: (value, comment)}``;
        strings are made FITS-safe ASCII with :func:`fits_ascii`, long ones are
        continued (``CONTINUE``, or several ``HISTORY``/``COMMENT`` cards).
    overwrite : bool
        Replace an existing file; otherwise an existing file raises
        ``FileExistsError`` and is left untouched.

    Returns the path. On failure no file is created.
    """
    path = Path(path)
    arr = np.asarray(data)
    if arr.ndim != 2:
        raise ValueError(f"write_fits_map: data must be 2D, got shape {arr.shape}")
    if wcs.naxis != 2:
        raise ValueError(f"write_fits_map: WCS must have 2 axes, got {wcs.naxis}")
    if arr.dtype.kind == "b":
        arr = arr.astype(np.uint8)
    elif arr.dtype.kind == "f" and arr.dtype != np.float64:
        arr = arr.astype(np.float32)
    header = wcs.to_header()
    for key, value in (header_extra or {}).items():
        if isinstance(value, tuple):
            header[key] = tuple(fits_ascii(v) if isinstance(v, str) else v for v in value)
        else:
            header[key] = fits_ascii(value) if isinstance(value, str) else value
    hdu = fits.PrimaryHDU(data=arr, header=header)

    def write(tmp: Path) -> None:
        hdu.writeto(tmp, overwrite=True, output_verify="exception")

    return _atomic_write(path, write, overwrite)


def write_table(path, table, overwrite: bool = False, format: str | None = None) -> Path:
    """Write an astropy ``Table`` / ``QTable`` atomically.

    The format follows the suffix (``.ecsv`` → ECSV, ``.fits`` → FITS table,
    ``.csv`` → CSV) unless ``format`` (an astropy ``Table.write`` format name)
    is given. Refuses to replace an existing file unless ``overwrite=True``
    (``FileExistsError``). Returns the path; on failure no file is created.
    """
    path = Path(path)
    if format is None:
        format = TABLE_FORMATS.get(path.suffix.lower())
        if format is None:
            raise InputError(f"{path}: unknown table format of suffix {path.suffix!r}; "
                             f"use one of {', '.join(TABLE_FORMATS)}")

    def write(tmp: Path) -> None:
        table.write(tmp, format=format, overwrite=True)

    return _atomic_write(path, write, overwrite)
