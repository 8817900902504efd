"""The work of ``skyml ctao-detect`` (parser and file policy in
:mod:`skyml.cli`): set up once (model), then one counts cube to one source
list.

A cube whose background level per energy bin lies outside the range the
network was trained on (:func:`skyml.ctao.pipeline.distribution_check`) is
still searched, and said to be so: ``out_of_distribution`` true in the table
(column and meta, with ``ood_reason``) and a warning on stderr; the column is
masked for a model without a recorded range.

``--network unet`` (the default) is notebook 06's U-Net of the nominal
survey; ``--network randomised`` its network for any plausible sky, the
CeDiRNet trained on domain-randomised skies with its input divided by a
local background, which notebook 06 chose on validation patches as its
randomised network. The kind of read-out follows the model: a one-channel
probability map goes through LoG blobs (column ``probability``), a
centre-direction vote field through its centre heat map (column ``heat``).

With ``--dihedral`` the U-Net's probability map is the mean over the cube's
8 rotations by 90° and flips, each turned back; ``--no-dihedral`` reads the
cube as given. Without either, the cube is read as notebook 06 chose for
this network on its validation patches (:data:`UNET_DIHEDRAL`, results key
``readout_dihedral_unet_log``). A vote field is read as given (its
directions would have to turn with the image)."""

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
#: the default score threshold of the U-Net's probability
UNET_THRESHOLD = 0.5
#: the default threshold of a vote field's centre heat: notebook 06's validation choice for its randomised CeDiRNet
#: (results key ``threshold_cedirnet_dr``, which a test holds this to)
RANDOMISED_THRESHOLD = 0.0951

CTAO_UNET = TrainedModel("ctao_unet.keras", "06", "CTAO survey U-Net (log scaling)", "ctao-detect")
CTAO_RANDOMISED = TrainedModel("ctao_cedirnet_dr.keras", "06",
                               "CTAO survey network for any plausible sky (CeDiRNet, randomised skies)", "ctao-detect",
                               profiles=("full",))  # the quick profile trains the randomised U-Net alone
NETWORKS = {"unet": CTAO_UNET, "randomised": CTAO_RANDOMISED}


@dataclass
class State(LoadedModel):
    params: object
    scaling: str
    vote_field: bool  # a centre-direction network (three output channels)
    threshold: float
    dihedral: bool


def detect_setup(args: argparse.Namespace) -> State:
    from .simulate import SurveyParams

    check_probability(args.threshold)
    trained = NETWORKS[args.network]
    path = model_path(trained, args)
    load_models_quietly("ctao.models")  # registers the losses
    model, metadata = load_trained_model(path, trained)
    vote_field = model.output_shape[-1] == 3
    if vote_field and args.dihedral:
        raise CommandError(f"--dihedral: only for a U-Net; {path} is a centre-direction network, read as given")
    threshold = args.threshold if args.threshold is not None else (RANDOMISED_THRESHOLD if vote_field
                                                                    else UNET_THRESHOLD)
    dihedral = False if vote_field else (UNET_DIHEDRAL if args.dihedral is None else bool(args.dihedral))
    try:
        params = SurveyParams.from_dict(metadata["sim_params"]) if "sim_params" in metadata else SurveyParams()
    except (TypeError, ValueError, KeyError) as err:
        raise CommandError(f"{path}: invalid 'sim_params' in the model metadata ({err})") from err
    return State(args, path, model, metadata, params, metadata.get("scaling", "log"), vote_field, threshold, dihedral)


def detect_process(state: State, source: Path, target: Path) -> str:
    from . import detect as ctao_detect
    from .pipeline import detections_table, distribution_check, predict, read_counts_cube

    args = state.args
    counts, wcs, description = read_counts_cube(source, state.params.binsz_deg)
    guards.check_bunit(source, guards.fits_headers(source))
    guards.check_values(source, counts, counts=True, integer=True, what="counts cube")
    out = predict(state.model, counts[None], state.params, state.scaling, batch_size=1,
                  normalise=state.metadata.get("normalise", "mean"), dihedral=state.dihedral)[0][0]
    if state.vote_field:
        x, y, score = ctao_detect.cedirnet_positions(out, threshold=state.threshold)
    else:
        x, y, score = ctao_detect.log_positions(out, threshold=state.threshold)
    dist = distribution_check(counts, state.metadata)
    table = detections_table(x, y, score, wcs, score_name="heat" if state.vote_field else "probability",
                             distribution=dist)
    table.meta.update({"out_of_distribution": dist["out_of_distribution"], "ood_reason": dist["reason"],
                       "background_counts_per_px": dist["background"]})
    if dist["out_of_distribution"]:
        hint = "" if args.network == "randomised" else " (--network randomised was trained on a wider range of skies)"
        print(f"skyml ctao-detect: warning: {source}: outside the network's training range ({dist['reason']}); "
              f"the detections are an extrapolation{hint}", file=sys.stderr)
    table.meta.update({"creator": f"skyml {__version__} ctao-detect", "model": str(state.path),
                       "profile": model_profile(args, state.metadata), "thresh": float(state.threshold),
                       "dihedral": state.dihedral,
                       "input": description})
    write_output(io.write_table, target, table, overwrite=args.overwrite)
    return f"wrote {target}: {len(table)} sources (input: {description})"
