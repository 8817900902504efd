"""The work of ``skyml optical-detect`` (parser and file policy in
:mod:`skyml.cli`): set up once (model), then one image to one source list.

The image's WCS is checked before the image is read: no CTYPE keywords means
no WCS (pixel positions only, said in the success line and the table's
``wcs`` metadata); CTYPE keywords that do not make a valid celestial WCS in
degrees with a non-singular pixel scale (unknown projection, CDELT = 0,
CUNIT = m, ...) are refused with one line.

An image whose sky level or robust noise lies outside the range of the
network's training tiles (:func:`skyml.optical.pipeline.distribution_check`)
is still searched, and said to be so: ``out_of_distribution`` true in the
table (column and meta, with ``ood_reason``) and a warning on stderr; the
column is masked for a model without a recorded range.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__, guards, io
from ..cli import (LoadedModel, TrainedModel, check_probability, load_models_quietly, load_trained_model,
                   model_path, model_profile, write_output)

OPTICAL_UNET = TrainedModel("optical_unet.keras", "06", "optical U-Net", "optical-detect")


def image_header(headers: list):
    """The header of the image the reader uses: the first image HDU with data."""
    for header in headers:
        kind = str(header.get("XTENSION", "IMAGE")).strip().upper()
        if (kind == "IMAGE" or header.get("ZIMAGE")) and int(header.get("ZNAXIS", header.get("NAXIS", 0))) > 0:
            return header
    return None


def check_wcs(source: Path, header) -> bool:
    """True for a valid celestial WCS, False for none; InputError for an invalid one."""
    if header is None or not any(str(k).startswith("CTYPE") for k in header):
        return False
    from astropy.wcs import WCS
    from astropy.wcs.utils import proj_plane_pixel_scales

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wcs = WCS(header)
            if not wcs.has_celestial:
                raise ValueError(f"CTYPE {list(wcs.wcs.ctype)} has no celestial axis pair")
            cel = wcs.celestial
            units = {str(u) for u in cel.wcs.cunit}
            if units - {"deg", ""}:
                raise ValueError(f"celestial axes in {sorted(units)}, not degrees")
            matrix = cel.pixel_scale_matrix
            if not np.all(np.isfinite(matrix)) or abs(np.linalg.det(matrix)) == 0:
                raise ValueError("singular pixel scale (CDELT or CD of zero)")
            scales = proj_plane_pixel_scales(cel)
            if not np.all(scales > 0):
                raise ValueError("zero pixel scale")
            cel.pixel_to_world_values(0.0, 0.0)  # the projection can be evaluated
    except Exception as err:  # astropy raises many types for a bad WCS
        raise io.InputError(f"{source}: invalid WCS ({io._one_line(err)}); fix or remove the CTYPE keywords") \
            from err
    return True


@dataclass
class State(LoadedModel):
    threshold: float


def detect_setup(args: argparse.Namespace) -> State:
    check_probability(args.threshold)
    path = model_path(OPTICAL_UNET, args)
    load_models_quietly("ctao.models")  # registers the loss
    model, metadata = load_trained_model(path, OPTICAL_UNET)
    threshold = args.threshold if args.threshold is not None else float(metadata.get("threshold", 0.3))
    return State(args, path, model, metadata, threshold)


def detect_process(state: State, source: Path, target: Path) -> str:
    import astropy.units as u
    from astropy.table import QTable

    from .pipeline import distribution_check, read_image, unet_detect
    from .simulate import OpticalParams

    has_wcs = check_wcs(source, image_header(guards.fits_headers(source)))
    image, wcs = read_image(source)
    guards.check_values(source, image, counts=False, what="image")
    if has_wcs and wcs is None:
        raise io.InputError(f"{source}: invalid WCS (no celestial axes)")
    det = unet_detect(state.model, image[None], OpticalParams(), state.threshold,
                      state.metadata.get("normalise", "global"))
    table = QTable({"x_pix": det["x_pix"], "y_pix": det["y_pix"], "probability": det["score"]})
    if wcs is not None and len(table):
        sky = wcs.pixel_to_world(det["x_pix"], det["y_pix"]).icrs
        table["ra"], table["dec"] = sky.ra.deg * u.deg, sky.dec.deg * u.deg
    elif wcs is not None:
        table["ra"], table["dec"] = np.zeros(0) * u.deg, np.zeros(0) * u.deg
    dist = distribution_check(image, state.metadata)
    ood = dist["out_of_distribution"]
    table["out_of_distribution"] = (np.full(len(table), bool(ood)) if ood is not None
                                    else np.ma.masked_all(len(table), dtype=bool))
    table["out_of_distribution"].description = ("the image's sky level or noise lies outside the range the "
                                                "network was trained on (masked: no range recorded)")
    table.meta.update({"out_of_distribution": ood, "ood_reason": dist["reason"], "sky": dist["sky"],
                       "noise_mad": dist["noise_mad"]})
    if ood:
        print(f"skyml optical-detect: warning: {source}: outside the network's training range ({dist['reason']}); "
              "the detections are an extrapolation", file=sys.stderr)
    table.meta.update({"creator": f"skyml {__version__} optical-detect", "model": str(state.path),
                       "profile": model_profile(state.args, state.metadata), "thresh": float(state.threshold),
                       "input": source.name, "wcs": "celestial" if wcs is not None else "none"})
    write_output(io.write_table, target, table, overwrite=state.args.overwrite)
    note = "" if wcs is not None else "; no WCS in the image: pixel positions only"
    return f"wrote {target}: {len(table)} sources ({image.shape[1]}×{image.shape[0]} px{note})"
