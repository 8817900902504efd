"""The work of ``skyml cta-clean`` and ``skyml cta-localise`` (the parser and
the file policy are in :mod:`skyml.cli`): set up once (model and its
metadata), then one input file to one output file."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__, guards, io
from ..cli import (LoadedModel, CommandError, TrainedModel, load_trained_model, model_path, model_profile,
                   write_output)

CTA_CLEANER = TrainedModel("cta_cleaner.keras", "02", "CNN-Cleaner", "cta-clean")
CTA_LOCALISER = TrainedModel("cta_localiser.keras", "03", "improved localiser", "cta-localise")


def model_map_shape(model, path: Path) -> tuple[int, int]:
    """(ny, nx) of the single-channel map input of ``model``."""
    shape = tuple(model.input_shape)
    if len(shape) != 4 or shape[-1] != 1 or None in shape[1:3]:
        raise CommandError(f"{path}: model input shape {shape} is not a single-channel map")
    return int(shape[1]), int(shape[2])


def sim_params_for(model, metadata: dict, path: Path):
    """The CTA geometry of the input: the model's training parameters
    (metadata ``"sim_params"``, a :class:`CTASimParams` dict) when recorded,
    else the defaults; the map side must match the model input."""
    from .simulate import CTASimParams

    recorded = metadata.get("sim_params")
    if recorded is not None:
        try:
            params = CTASimParams(**{k: tuple(v) if k == "irfs" else v for k, v in recorded.items()})
        except (TypeError, ValueError) as err:
            raise CommandError(f"{path}: invalid 'sim_params' in the model metadata ({err})") from err
    else:
        params = CTASimParams()
    if model_map_shape(model, path) != (params.npix, params.npix):
        raise CommandError(
            f"{path}: model expects {model_map_shape(model, path)} maps, but the CTA geometry "
            f"is {params.npix}×{params.npix} px"
        )
    return params


def read_counts(source: Path, params):
    """(counts, wcs, description) of a DL3 event list or a counts map, with
    the degenerate-value checks: whole, non-negative, not constant counts in
    a map whose BUNIT (if any) is counts."""
    if not io._is_event_list(source):
        guards.check_bunit(source, guards.fits_headers(source))
    counts, wcs, description = io.read_cta_input(source, params)
    guards.check_values(source, counts, counts=True, integer=True, what="counts map")
    return counts, wcs, description


@dataclass
class State(LoadedModel):
    params: object
    sigma_px: float = 0.0


def clean_setup(args: argparse.Namespace) -> State:
    path = model_path(CTA_CLEANER, args)
    model, metadata = load_trained_model(path, CTA_CLEANER)
    if "smooth_sigma_px" not in metadata:
        raise CommandError(f"{path}: model metadata lacks 'smooth_sigma_px' (the input smoothing)")
    params = sim_params_for(model, metadata, path)
    return State(args, path, model, metadata, params, float(metadata["smooth_sigma_px"]))


def clean_process(state: State, source: Path, target: Path) -> str:
    from .models import as_images, smooth, stretch

    counts, wcs, description = read_counts(source, state.params)
    try:
        scaled, scale = stretch(smooth(counts[None], state.sigma_px))
    except ValueError as err:
        raise CommandError(f"{state.path}: invalid preprocessing in the model metadata ({err})") from err
    prediction = np.asarray(state.model.predict(as_images(scaled), verbose=0))
    cleaned = prediction[0, ..., 0].astype(np.float64) * float(scale[0])
    # free-length strings (file names) get no comment: astropy continues long values
    header = {
        "BUNIT": ("count", "cleaned counts per pixel"),
        "CREATOR": (f"skyml {__version__} cta-clean", "software that made this file"),
        "INPUT": source.name,
        "MODEL": str(state.path),
        "PROFILE": (model_profile(state.args, state.metadata), "notebook profile of the model"),
        "SMOOTHPX": (state.sigma_px, "[pix] Gaussian sigma of the input smoothing"),
        "INSCALE": (float(scale[0]), "[count] stretch scale, max of smoothed input"),
        "HISTORY": f"input: {description}",
    }
    write_output(io.write_fits_map, target, cleaned.astype(np.float32), wcs, header,
                 overwrite=state.args.overwrite)
    return f"wrote {target}: cleaned map of {cleaned.sum():.1f} counts (input: {description})"


#: How ``cta-localise`` reads the heat map: the readout of notebook 03's reported numbers.
LOCALISER_READOUT = "parabola"


def localise_setup(args: argparse.Namespace) -> State:
    from .models import LOCALISER_INPUT, with_readout

    path = model_path(CTA_LOCALISER, args)
    model, metadata = load_trained_model(path, CTA_LOCALISER)
    if metadata.get("input", LOCALISER_INPUT) != LOCALISER_INPUT:
        raise CommandError(f"{path}: model input {metadata['input']!r} differs from this "
                           f"version's localiser input {LOCALISER_INPUT!r}")
    params = sim_params_for(model, metadata, path)
    # the installed model keeps the soft-argmax of its training; positions are read as in notebook 03
    return State(args, path, with_readout(model, 0, LOCALISER_READOUT), metadata, params)


def localise_process(state: State, source: Path, target: Path) -> str:
    import astropy.units as u
    from astropy.table import QTable

    from .models import label_to_pix
    from .pipeline import localise

    counts, wcs, description = read_counts(source, state.params)
    label = np.asarray(localise(state.model, counts[None], state.args.orientations))[0]
    x_pix, y_pix = (float(v) for v in label_to_pix(label, counts.shape))
    position = wcs.pixel_to_world(x_pix, y_pix).icrs
    table = QTable({"ra": [position.ra.deg] * u.deg, "dec": [position.dec.deg] * u.deg,
                    "x_pix": [x_pix], "y_pix": [y_pix], "input": [source.name]})
    table["x_pix"].description = "source column, 0-based pixel, pixel centres at integers"
    table["y_pix"].description = "source row, 0-based pixel, pixel centres at integers"
    table["ra"].description = "source right ascension (ICRS)"
    table["dec"].description = "source declination (ICRS)"
    table.meta.update({"creator": f"skyml {__version__} cta-localise", "model": str(state.path),
                       "profile": model_profile(state.args, state.metadata), "input_description": description,
                       "orientations": int(state.args.orientations)})
    write_output(io.write_table, target, table, overwrite=state.args.overwrite, format="ascii.ecsv")
    return (f"wrote {target}: source at RA {position.ra.deg:.4f}°, Dec {position.dec.deg:.4f}° "
            f"(x {x_pix:.2f}, y {y_pix:.2f} px; input: {description})")
