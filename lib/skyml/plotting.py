"""One figure style and the A&A column widths for every notebook figure.

Usage in a notebook::

    use_style()
    fig, ax = plt.subplots(figsize=figsize("single", aspect=0.8))
    save_figure(fig, "02_excess_residuals", profile)

Figures of the full profile go to ``figures/``, quick ones to ``figures/quick/``
(see :func:`skyml.paths.figures_dir`).
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from . import paths

STYLE = Path(__file__).with_name("skyml.mplstyle")
MM_PER_INCH = 25.4
COLUMN_WIDTH_MM = {"single": 88.0, "double": 180.0}  # A&A single / double column
DPI = 200

# WCS axis type (first four letters of CTYPE) -> axis label
AXIS_LABELS = {
    "RA--": "Right ascension",
    "DEC-": "Declination",
    "GLON": "Galactic longitude $l$",
    "GLAT": "Galactic latitude $b$",
    "ELON": "Ecliptic longitude",
    "ELAT": "Ecliptic latitude",
}


def use_style() -> None:
    """Apply the project's figure style. Inside a Jupyter kernel, also show figures
    inline: a batch environment's ``MPLBACKEND=Agg`` (inherited by papermill's and
    nbval's kernels) would otherwise leave every executed notebook without figures."""
    show_inline_in_kernel()
    plt.style.use(STYLE)


def show_inline_in_kernel() -> bool:
    """Switch to the inline backend when running in an IPython kernel whose backend
    is not inline; return True when the kernel shows figures inline afterwards.
    Outside a kernel (scripts, pytest, the CLI) nothing changes."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None or "IPKernelApp" not in shell.config:
        return False
    if "inline" not in matplotlib.get_backend():
        shell.run_line_magic("matplotlib", "inline")
    return "inline" in matplotlib.get_backend()


def figsize(width: str | float = "single", aspect: float = 0.75) -> tuple[float, float]:
    """(width, height) in inches; ``width`` is "single", "double" or millimetres,
    ``aspect`` is height / width."""
    mm = COLUMN_WIDTH_MM[width] if isinstance(width, str) else float(width)
    inches = mm / MM_PER_INCH
    return inches, inches * aspect


def save_figure(fig: Figure, name: str, profile: str, folder: Path | None = None) -> tuple[Path, Path]:
    """Write ``<name>.png`` (200 dpi) and ``<name>.pdf`` atomically into the
    profile's figures folder (or ``folder``); return both paths."""
    folder = Path(folder) if folder is not None else paths.figures_dir(profile)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt, metadata in (("png", {"Software": None}), ("pdf", {"CreationDate": None})):
        target = folder / f"{name}.{fmt}"
        tmp = folder / f".{name}.{os.getpid()}.tmp.{fmt}"
        try:
            fig.savefig(tmp, format=fmt, dpi=DPI, metadata=metadata)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        written.append(target)
    return written[0], written[1]


def plot_wcs_map(ax_or_fig, data, wcs, *, label: str = "", title: str | None = None,
                 colorbar: bool = True, **imshow_kwargs):
    """Show a 2-D sky map on WCS axes with labelled coordinates and a colour bar.

    ``ax_or_fig`` is a Figure (a WCS subplot is added) or axes created with
    ``projection=wcs``. Returns ``(ax, image, colorbar or None)``.
    """
    if isinstance(ax_or_fig, Figure):
        ax = ax_or_fig.add_subplot(projection=wcs)
    elif isinstance(ax_or_fig, Axes) and hasattr(ax_or_fig, "coords"):
        ax = ax_or_fig
    else:
        raise TypeError("plot_wcs_map needs a Figure or WCS axes (e.g. fig.add_subplot(projection=wcs))")
    image = ax.imshow(data, origin="lower", **imshow_kwargs)
    for axis, ctype in enumerate(list(wcs.wcs.ctype)[:2]):
        ax.coords[axis].set_axislabel(AXIS_LABELS.get(ctype[:4], ctype[:4].rstrip("-")))
    if title:
        ax.set_title(title)
    bar = ax.figure.colorbar(image, ax=ax, label=label) if colorbar else None
    return ax, image, bar
