"""The work of ``skyml radio-counts`` (parser and file policy in
:mod:`skyml.cli`): set up once (model and its metadata), then one restored
image to one counts table.

Degenerate images are refused with one line: all zero or constant, and
noise more than 1000 times off the training images' (a wrong BUNIT or
scaling). An image consistent with source-free noise (no pixel above 5
robust sigma, no skewness) is counted and said to be so: a warning on
stderr and ``consistent_with_noise`` true in the table (column and meta).
A network trained with source-free fields (``val_null_rms`` in its sidecar)
states errors that hold its answer on noise, so such counts are consistent
with zero within ``counts_err``; a network trained without them returns on
noise counts that its stated errors (a relative residual times the counts)
cannot make consistent with zero, so with such a model the image is refused.
Counts through the model's field calibration from an image with fewer
sub-images than the fields it was fitted on come with a warning on stderr.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from .. import __version__, guards, io
from ..cli import LoadedModel, CommandError, TrainedModel, load_trained_model, model_path, model_profile, write_output

RADIO_CNN = TrainedModel("radio_counts_cnn.keras", "07", "radio counts CNN (restored images)", "radio-counts")
NEEDED = ("edges_jy", "pixel_arcsec", "sub_npix", "context_npix", "bmaj_deg", "bmin_deg", "bpa_deg",
          "input_scale_jy", "target_scaler", "val_rel_rms", "threshold_jy")


@dataclass
class State(LoadedModel):
    """radio-counts derives nothing more from its model."""


def counts_setup(args: argparse.Namespace) -> State:
    """Load the model; a sidecar with ``conditioning`` (a network trained on
    a range of beams and noise levels) must also record their ranges."""
    path = model_path(RADIO_CNN, args)
    model, metadata = load_trained_model(path, RADIO_CNN)
    lacking = [k for k in NEEDED if k not in metadata]
    if lacking:
        raise CommandError(f"{path}: model metadata lacks {', '.join(lacking)}")
    cond = metadata.get("conditioning")
    if cond is not None:
        lacking = [k for k in ("beam_area_ref_px", "noise_ref_jy", "beam_area_px_range", "beam_axis_ratio_range",
                               "beam_bpa_deg_centre", "beam_bpa_deg_halfwidth") if k not in cond]
        if lacking:
            raise CommandError(f"{path}: model metadata's conditioning lacks {', '.join(lacking)}")
    if metadata.get("image_kind", "restored") != "restored":
        raise CommandError(f"{path}: this network was trained on {metadata['image_kind']} images, not on "
                           "restored images")
    return State(args, path, model, metadata)


def check_image(source: Path, image, metadata: dict) -> tuple[bool, str]:
    """The degenerate-image refusals of this module's text; returns whether
    the image is consistent with source-free noise and the numbers that say so."""
    guards.check_values(source, image, counts=False, allow_nan=True, what="image")
    expected = float(metadata.get("noise_rms_jy", metadata["input_scale_jy"]))
    guards.check_scale(source, image, expected, "Jy/beam")
    noise_only, numbers = guards.looks_like_pure_noise(image)
    if noise_only and metadata.get("val_null_rms") is None:
        raise io.InputError(f"{source}: the image is consistent with source-free noise ({numbers}); this "
                            "model was trained without source-free fields and cannot return counts "
                            "consistent with zero (retrain it with notebook 07)")
    return noise_only, numbers


def counts_process(state: State, source: Path, target: Path) -> str:
    from .pipeline import check_clean_limit, check_noise, count_image, counts_table, read_restored_image

    metadata = state.metadata
    image, _, beam = read_restored_image(source, metadata)
    noise = state.args.noise_rms if getattr(state.args, "noise_rms", None) is not None else beam.get("noise_rms_jy")
    if metadata.get("conditioning") is not None:
        if noise is None:
            raise io.InputError(f"{source}: this network is told the image's thermal noise rms: give it with "
                                "--noise-rms or the NOISE header keyword [Jy/beam]")
        reason = check_noise(noise, metadata)
        if reason:
            raise io.InputError(f"{source}: {reason}")
        beam["noise_rms_jy"] = float(noise)
    limit = getattr(state.args, "clean_limit", None)
    if "clean_limit_ref_jy" in (metadata.get("conditioning") or {}):
        limit = metadata["conditioning"]["clean_limit_ref_jy"] if limit is None else float(limit)
        reason = check_clean_limit(limit, metadata)
        if reason:
            raise io.InputError(f"{source}: {reason}")
        beam["clean_limit_jy"] = limit
    elif limit is not None:
        raise io.InputError(f"{source}: --clean-limit given, but this network was not trained on a range of CLEAN "
                            "limits (its sidecar's conditioning has no clean_limit_ref_jy)")
    noise_only, noise_numbers = check_image(source, image, metadata)
    try:
        result = count_image(state.model, metadata, image, beam["beam_area_px"], noise, limit)
    except ValueError as err:
        raise CommandError(f"{source}: {err}") from err
    table = counts_table(result, metadata)
    table["consistent_with_noise"] = [noise_only] * len(table)
    table["consistent_with_noise"].description = ("the image is consistent with source-free noise (no pixel "
                                                  "above 5 robust sigma, no skewness): counts should be "
                                                  "consistent with zero within counts_err")
    table.meta.update({"consistent_with_noise": bool(noise_only), "noise_test": noise_numbers})
    if noise_only:
        print(f"skyml radio-counts: warning: {source}: the image is consistent with source-free noise "
              f"({noise_numbers}); the counts should be read as consistent with zero within counts_err",
              file=sys.stderr)
    calib = metadata.get("field_calibration") if result.get("calibrated") else None
    if calib is not None and result["n_tiles"] < int(calib["n_sub_per_field"]):
        print(f"skyml radio-counts: warning: {source}: {result['n_tiles']} sub-images, fewer than the "
              f"{calib['n_sub_per_field']} of the fields the counts' field calibration was fitted on; its stretch of "
              "the faint bins may exceed what this image supports (counts_uncalibrated holds the network's sum)",
              file=sys.stderr)
    dist = result["distribution"]
    table.meta.update({"out_of_distribution": dist["out_of_distribution"], "ood_reason": dist["reason"],
                       "noise_mad_jy": dist["noise_mad_jy"], "hist_distance": dist["hist_distance"]})
    if dist["out_of_distribution"]:
        print(f"skyml radio-counts: warning: {source}: outside the network's training range ({dist['reason']}); "
              "the counts are an extrapolation", file=sys.stderr)
    table.meta.update({"creator": f"skyml {__version__} radio-counts", "model": str(state.path),
                       "profile": model_profile(state.args, metadata), "input": source.name,
                       "n_tiles": result["n_tiles"], "n_tiles_skipped": result["n_tiles_skipped"],
                       "area_deg2": result["area_sr"] / (math.pi / 180.0) ** 2,
                       "threshold_jy": float(metadata["threshold_jy"]), **beam})
    write_output(io.write_table, target, table, overwrite=state.args.overwrite)
    return (f"wrote {target}: counts in {len(table)} flux bins from {result['n_tiles']} sub-images "
            f"({result['n_tiles_skipped']} with NaN pixels skipped)")
