"""The work of ``skyml fermi-detect`` and ``skyml fermi-catalogue`` (parser
and file policy in :mod:`skyml.cli`): set up once (models), then one input
cube to one output table."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__, guards, io
from ..cli import (LoadedModel, CommandError, TrainedModel, check_probability, load_models_quietly, load_trained_model,
                   model_path, model_profile, write_output)

FERMI_UNET = TrainedModel("fermi_unet.keras", "04", "Fermi-LAT multi-input U-Net", "fermi-detect")
FERMI_CLASSIFIER = TrainedModel("fermi_classifier.keras", "05", "Fermi-LAT 3D-CNN classifier", "fermi-catalogue")
FERMI_FLUX = TrainedModel("fermi_flux.keras", "05", "Fermi-LAT mean-variance flux network", "fermi-catalogue")


def sim_params(metadata: dict, path: Path):
    from .simulate import FermiSimParams

    try:
        return FermiSimParams.from_dict(metadata["sim_params"]) if "sim_params" in metadata else FermiSimParams()
    except (TypeError, ValueError, KeyError) as err:
        raise CommandError(f"{path}: invalid 'sim_params' in the model metadata ({err})") from err


def check_cube(source: Path, counts) -> None:
    """Whole, non-negative, not constant counts with a counts BUNIT."""
    guards.check_bunit(source, guards.fits_headers(source))
    guards.check_values(source, counts, counts=True, integer=True, what="counts cube")


@dataclass
class State(LoadedModel):
    params: object
    extra: dict = field(default_factory=dict)


def detect_kwargs(args: argparse.Namespace) -> dict:
    """The k-means settings of the command line, the library's where not given (none for LoG)."""
    from . import detect

    if args.method != "unet_kmeans":
        return {}
    return {"penalty_px2": detect.PENALTY_PX2 if args.kmeans_penalty is None else args.kmeans_penalty,
            "min_peak_distance_px": detect.MIN_PEAK_DISTANCE_PX if args.min_peak_distance is None
            else args.min_peak_distance}


def detect_setup(args: argparse.Namespace) -> State:
    check_probability(args.threshold)
    if args.kmeans_penalty is not None and not (np.isfinite(args.kmeans_penalty) and args.kmeans_penalty >= 0):
        raise CommandError(f"--kmeans-penalty must be a finite number >= 0, got {args.kmeans_penalty}")
    if args.min_peak_distance is not None and args.min_peak_distance < 1:
        raise CommandError(f"--min-peak-distance must be at least 1 pixel, got {args.min_peak_distance}")
    path = model_path(FERMI_UNET, args)
    load_models_quietly("fermi.models")  # registers the U-Net loss
    model, metadata = load_trained_model(path, FERMI_UNET)
    return State(args, path, model, metadata, sim_params(metadata, path))


def detect_process(state: State, source: Path, target: Path) -> str:
    from . import healpix
    from .cube import detect_in_cube, detections_table, read_counts_cube

    args, params = state.args, state.params
    extra = {}
    if healpix.is_healpix_file(source):
        maps, description = healpix.read_healpix_counts(source, params)
        values = np.concatenate([np.asarray(m.data, np.float64).ravel() for m in maps]) \
            if isinstance(maps, (list, tuple)) else np.asarray(getattr(maps, "data", maps), np.float64)
        guards.check_values(source, values[np.isfinite(values)] if values.size else values, counts=True,
                            integer=True, what="HEALPix counts")
        det = healpix.detect_in_healpix(state.model, maps, params, args.method, args.threshold, **detect_kwargs(args))
        if det["n_patches"] == 0:
            raise CommandError(f"{source}: the HEALPix map covers none of the 10°×10° patches "
                               f"centred on the NSIDE={healpix.NSIDE} pixel centres")
        table = healpix.sky_detections_table(det["glon"], det["glat"], det["probability"])
        description = f"{description}, {det['n_patches']} patches"
        extra = {"patches": int(det["n_patches"])}
    else:
        counts, wcs, description = read_counts_cube(source, params)
        check_cube(source, counts)
        x, y, prob = detect_in_cube(state.model, counts, params, args.method, args.threshold, **detect_kwargs(args))
        table = detections_table(x, y, prob, wcs)
    settings = detect_kwargs(args)  # FITS keywords: at most 8 characters
    kmeans_meta = {"penalty": settings["penalty_px2"], "peakdist": settings["min_peak_distance_px"]} if settings else {}
    table.meta.update({"creator": f"skyml {__version__} fermi-detect", "model": str(state.path),
                       "profile": model_profile(args, state.metadata), "method": args.method,
                       "thresh": float(args.threshold), **kmeans_meta,
                       "input": description.replace("×", "x"), **extra})  # FITS headers hold ASCII only
    write_output(io.write_table, target, table, overwrite=args.overwrite)
    return f"wrote {target}: {len(table)} sources (input: {description}, {args.method})"


def catalogue_setup(args: argparse.Namespace) -> State:
    check_probability(args.threshold)
    if not args.dr2_radius_deg > 0:
        raise CommandError(f"--dr2-radius-deg must be positive, got {args.dr2_radius_deg}")
    load_models_quietly("fermi.flux")  # registers the flux loss
    load_models_quietly("fermi.models")  # registers the U-Net loss
    loaded = {}
    for trained, given in ((FERMI_UNET, args.unet_model), (FERMI_CLASSIFIER, args.classifier_model),
                           (FERMI_FLUX, args.flux_model)):
        path = model_path(trained, argparse.Namespace(model=given, profile=args.profile))
        loaded[trained.file_name] = (path,) + load_trained_model(path, trained)
    unet_path, unet, unet_meta = loaded[FERMI_UNET.file_name]
    clf_path, classifier, clf_meta = loaded[FERMI_CLASSIFIER.file_name]
    flux_path, flux_model, _ = loaded[FERMI_FLUX.file_name]
    if clf_meta.get("role", "classifier") != "classifier" or tuple(classifier.output_shape)[-1] != 3:
        raise CommandError(f"{clf_path}: not the 3-class classifier of notebook 05")
    if tuple(flux_model.output_shape)[-1] != 2:
        raise CommandError(f"{flux_path}: not the (mu, sigma) flux network of notebook 05")
    return State(args, unet_path, unet, unet_meta, sim_params(unet_meta, unet_path),
                 {"classifier": classifier, "clf_path": clf_path, "clf_meta": clf_meta, "flux": flux_model,
                  "flux_path": flux_path})


def catalogue_process(state: State, source: Path, target: Path) -> str:
    from .catalogue import build_catalogue, read_yearly_cube

    args, x = state.args, state.extra
    counts, wcs, description = read_yearly_cube(source, state.params)
    check_cube(source, counts)
    npix = int(x["classifier"].input_shape[0][1])
    table, _, n_edge = build_catalogue(counts, wcs, state.model, state.params, x["classifier"], x["flux"], npix,
                                       threshold=args.threshold, dr2_radius_deg=args.dr2_radius_deg)
    profile = model_profile(argparse.Namespace(profile=args.profile, model=args.classifier_model), x["clf_meta"])
    table.meta.update({"creator": f"skyml {__version__} fermi-catalogue", "unet": str(state.path),
                       "classify": str(x["clf_path"]), "fluxnet": str(x["flux_path"]), "profile": profile,
                       "thresh": float(args.threshold), "n_edge": int(n_edge),
                       "input": description.replace("×", "x")})
    write_output(io.write_table, target, table, overwrite=args.overwrite)
    return (f"wrote {target}: {len(table)} sources ({n_edge} detections near the edge dropped; "
            f"input: {description})")
