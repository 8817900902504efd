"""The work of ``skyml ctao-detect`` (parser and file policy in
:mod:`skyml.cli`): set up once (model), then one counts cube to one source
list.

A cube whose background level per energy bin lies outside the range the
network was trained on (:func:`skyml.ctao.pipeline.distribution_check`) is
still searched, and said to be so: ``out_of_distribution`` true in the table
(column and meta, with ``ood_reason``) and a warning on stderr; the column is
masked for a model without a recorded range.

With ``--dihedral`` the probability map is the mean over the cube's 8
rotations by 90° and flips, each turned back; ``--no-dihedral`` reads the
cube as given. Without either, the cube is read as notebook 06 chose for
this network on its validation patches (:data:`UNET_DIHEDRAL`, results key
``readout_dihedral_unet_log``)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from .. import __version__, guards, io
from ..cli import (LoadedModel, CommandError, TrainedModel, check_probability, load_models_quietly, load_trained_model,
                   model_path, model_profile, write_output)

#: the read-out by default: the one notebook 06 chose for the published U-Net (``unet_log``) on its validation
#: patches (1: the mean over the 8 orientations; results key ``readout_dihedral_unet_log``, which a test holds this to)
UNET_DIHEDRAL = True

CTAO_UNET = TrainedModel("ctao_unet.keras", "06", "CTAO survey U-Net (log scaling)", "ctao-detect")


@dataclass
class State(LoadedModel):
    params: object
    scaling: str


def detect_setup(args: argparse.Namespace) -> State:
    from .simulate import SurveyParams

    check_probability(args.threshold)
    path = model_path(CTAO_UNET, args)
    load_models_quietly("ctao.models")  # registers the loss
    model, metadata = load_trained_model(path, CTAO_UNET)
    try:
        params = SurveyParams.from_dict(metadata["sim_params"]) if "sim_params" in metadata else SurveyParams()
    except (TypeError, ValueError, KeyError) as err:
        raise CommandError(f"{path}: invalid 'sim_params' in the model metadata ({err})") from err
    return State(args, path, model, metadata, params, metadata.get("scaling", "log"))


def detect_process(state: State, source: Path, target: Path) -> str:
    from . import detect as ctao_detect
    from .pipeline import detections_table, distribution_check, predict, read_counts_cube

    args = state.args
    counts, wcs, description = read_counts_cube(source, state.params.binsz_deg)
    guards.check_bunit(source, guards.fits_headers(source))
    guards.check_values(source, counts, counts=True, integer=True, what="counts cube")
    dihedral = UNET_DIHEDRAL if args.dihedral is None else bool(args.dihedral)
    prob = predict(state.model, counts[None], state.params, state.scaling, batch_size=1,
                   normalise=state.metadata.get("normalise", "mean"), dihedral=dihedral)[0][0]
    x, y, score = ctao_detect.log_positions(prob, threshold=args.threshold)
    dist = distribution_check(counts, state.metadata)
    table = detections_table(x, y, score, wcs, distribution=dist)
    table.meta.update({"out_of_distribution": dist["out_of_distribution"], "ood_reason": dist["reason"],
                       "background_counts_per_px": dist["background"]})
    if dist["out_of_distribution"]:
        print(f"skyml ctao-detect: warning: {source}: outside the network's training range ({dist['reason']}); "
              "the detections are an extrapolation", file=sys.stderr)
    table.meta.update({"creator": f"skyml {__version__} ctao-detect", "model": str(state.path),
                       "profile": model_profile(args, state.metadata), "thresh": float(args.threshold),
                       "dihedral": dihedral,
                       "input": description})
    write_output(io.write_table, target, table, overwrite=args.overwrite)
    return f"wrote {target}: {len(table)} sources (input: {description})"
