"""Checks shared by every ``skyml`` command, made before trusting an input.

Size (:func:`check_size`): the commands hold a map, its network input and
output in memory. :data:`MAX_VALUES` is the hard limit on the number of data
values of one FITS HDU, pixels × channels (energy bins, years, HEALPix
pixels × bins): 2**24 = 16 777 216, i.e. a 4096×4096 single-channel map or a
1672×1672 map of 6 energy bins. It is checked from the FITS headers alone
(``NAXISn``; for compressed images ``ZNAXISn``; for binary tables the row
length × rows in 4-byte values), before any data are read or a model is
loaded, so a too large input is refused at once, in a few tens of MB.

Degenerate values (:func:`check_values`, :func:`check_bunit`): a map that is
all zero, constant, not finite, of absurd scale, or not integer where counts
are required gives plausible-looking nonsense from any network; each is
refused with one line (:class:`skyml.io.InputError`) naming the file.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from .io import InputError

#: Hard limit on the data values of one HDU (pixels × channels), checked from the header.
MAX_VALUES = 2**24

#: BUNIT spellings of counts (lower case, spaces removed); an absent BUNIT is accepted.
COUNT_UNITS = {"", "count", "counts", "ct", "cts", "photon", "photons", "event", "events", "none"}

#: Largest counts per pixel a counts map may hold (no instrument here comes near it;
#: a map scaled by a large factor, or in other units, does).
MAX_COUNTS_PER_PIXEL = 1e9


def _hdu_values(header) -> tuple[int, str]:
    """(number of data values, what they are) of one HDU header."""
    if header.get("ZIMAGE"):
        naxis = int(header.get("ZNAXIS", 0))
        dims = [int(header.get(f"ZNAXIS{i}", 0)) for i in range(1, naxis + 1)]
        return (int(np.prod(dims, dtype=np.int64)) if dims else 0), "×".join(map(str, dims[::-1]))
    naxis = int(header.get("NAXIS", 0))
    dims = [int(header.get(f"NAXIS{i}", 0)) for i in range(1, naxis + 1)]
    if not dims:
        return 0, "no data"
    if header.get("XTENSION", "").strip().upper() in ("BINTABLE", "TABLE"):
        row_bytes, rows = dims[0], dims[1] if len(dims) > 1 else 0
        return int(row_bytes) * int(rows) // 4, f"table of {rows} rows × {row_bytes} bytes"
    return int(np.prod(dims, dtype=np.int64)), "×".join(map(str, dims[::-1]))


def fits_headers(path: Path) -> list:
    """Headers of every HDU of a FITS file, read without its data; [] when the
    file is not FITS (its reader then reports the problem)."""
    from astropy.io import fits

    headers = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(path, memmap=True, lazy_load_hdus=True) as hdul:
                for hdu in hdul:  # reads the headers one by one, skipping the data
                    headers.append(hdu.header.copy())
    except Exception:  # not FITS, truncated, ...: the command's reader says what is wrong
        return headers
    return headers


def check_size(path, limit: int = MAX_VALUES) -> list:
    """Refuse (InputError) a FITS file with an HDU of more than ``limit`` data
    values, from the headers alone; returns the headers."""
    path = Path(path)
    headers = fits_headers(path)
    for index, header in enumerate(headers):
        try:
            n, shape = _hdu_values(header)
        except (TypeError, ValueError):
            raise InputError(f"{path}: HDU {index} has invalid NAXISn keywords") from None
        if n > limit:
            name = str(header.get("EXTNAME", index))
            raise InputError(f"{path}: HDU {name} holds {n:,} values ({shape}), more than the limit of "
                             f"{limit:,} (pixels × channels) of the skyml commands; cut the input into "
                             "smaller pieces")
    return headers


def check_bunit(path, headers, allowed=COUNT_UNITS, what: str = "counts") -> None:
    """Refuse a file whose image HDUs declare a BUNIT outside ``allowed``."""
    for header in headers:
        if "BUNIT" not in header:
            continue
        unit = str(header["BUNIT"]).strip().lower().replace(" ", "")
        if unit not in allowed:
            raise InputError(f"{Path(path)}: BUNIT is {header['BUNIT']!r}; this command needs {what}")


def check_values(path, values, *, counts: bool, integer: bool = False, allow_nan: bool = False,
                 what: str = "map") -> None:
    """Refuse a degenerate array: not finite (NaN allowed for blanked pixels
    with ``allow_nan``, but not everywhere), all zero, constant; for
    ``counts``: negative, above :data:`MAX_COUNTS_PER_PIXEL`, or (with
    ``integer``) not whole numbers."""
    path = Path(path)
    values = np.asarray(values)
    finite = np.isfinite(values)
    if not finite.all():
        if not allow_nan or not finite.any() or np.isinf(values).any():
            raise InputError(f"{path}: {int((~finite).sum())} values of the {what} are NaN or infinite")
    good = values[finite] if not finite.all() else values.ravel()
    lo, hi = float(good.min()), float(good.max())
    if lo == hi == 0.0:
        raise InputError(f"{path}: the {what} is all zero; there is nothing to analyse")
    if lo == hi:
        raise InputError(f"{path}: every value of the {what} is {lo:.6g}; a constant {what} has no sources")
    if counts:
        if lo < 0:
            raise InputError(f"{path}: the {what} has negative values (min {lo:.4g}); counts must be >= 0")
        if hi > MAX_COUNTS_PER_PIXEL:
            raise InputError(f"{path}: the {what} has {hi:.4g} counts in a pixel (limit "
                             f"{MAX_COUNTS_PER_PIXEL:.0e}); is it in counts (BUNIT)?")
        if integer and not np.array_equal(good, np.round(good)):
            raise InputError(f"{path}: the {what} has non-integer values; counts (whole numbers) are required")


def check_scale(path, image, expected_rms: float, unit: str, factor: float = 1e3) -> float:
    """Robust noise (MAD) of a signed image, refused when more than ``factor``
    times off the ``expected_rms`` its model was trained for; returns it."""
    good = np.asarray(image)[np.isfinite(image)]
    rms = 1.4826 * float(np.median(np.abs(good - np.median(good))))
    if not rms > 0:
        raise InputError(f"{Path(path)}: the image has no noise (median absolute deviation 0); "
                         "is it a model or a mask?")
    if not expected_rms / factor <= rms <= expected_rms * factor:
        raise InputError(f"{Path(path)}: robust noise {rms:.3g} {unit} is {rms / expected_rms:.3g} times the "
                         f"{expected_rms:.3g} {unit} of the model's training images; check BUNIT and the scaling")
    return rms


def looks_like_pure_noise(image, nsigma: float = 5.0) -> tuple[bool, str]:
    """Whether a signed image is consistent with source-free Gaussian noise:
    no pixel above ``nsigma`` robust sigma, and a pixel distribution no more
    skewed than noise. Returns (verdict, the numbers as a phrase)."""
    good = np.asarray(image, np.float64)[np.isfinite(image)]
    med = float(np.median(good))
    rms = 1.4826 * float(np.median(np.abs(good - med)))
    if not rms > 0:
        return True, "no noise"
    z = (good - med) / rms
    n_bright = int((z > nsigma).sum())
    skew = float(np.mean(z**3))
    # a sky with sources is positively skewed; noise is symmetric
    verdict = n_bright == 0 and abs(skew) < 0.1
    return verdict, f"{n_bright} pixels above {nsigma:g} sigma, skewness {skew:.3f}"
