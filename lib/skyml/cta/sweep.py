"""Validation sweep of the heat-map localiser's head, training and readout.

``python -m skyml.cta.sweep [--n-train N --n-val N --epochs E --out FILE]``
trains (or loads from the cache, :func:`skyml.cta.pipeline.train_improved_localiser`)
the variants of :data:`VARIANTS` on the localiser's training simulation
(0.1-10 Crab) and scores every variant and readout window on *validation*
maps only (never the test or the shifted test maps):

- the independent validation simulation of the training sky (split ``val``,
  0.1-10 Crab): the 68 % error per flux bin divided by the Cramér-Rao bound of
  the same maps, and the fraction of maps with an error above 0.1 deg;
- on the same maps above 3 Crab, the mean x error [px] and the correlation of
  the x error with the source's position inside a 2 x 2-pixel cell (the
  signature of a readout quantised to the cell grid);
- validation maps of the randomised training sky (:data:`TRAIN_SHIFT`, split
  ``val``, training curve sets), restricted to sources near a border or in a
  corner: the 68 % error there.

The smoothed centroid (tuned on the first set, as in notebook 03) is scored
on the same maps as the reference. The variant and window with the lowest
worst-bin ratio to the bound are chosen (ties: the lower edge error). The
table is printed and written as JSON.
"""

from __future__ import annotations

import argparse
import itertools
import json
from dataclasses import replace

import numpy as np

from .. import metrics
from . import baselines, evaluation, models, pipeline, simulate

#: the randomisation of the training sky (training curve sets only): PSF width and a second, wider component,
#: effective area, spectral index, background normalisation spread and sources up to the map borders
TRAIN_SHIFT = simulate.CTAShift(psf_scale_min=0.85, psf_scale_max=1.15, psf_tail_ratio=2.5, tail_fraction_min=0.0,
                                tail_fraction_max=0.2, aeff_spread=0.2, index_min=2.3, index_max=2.7,
                                edge_fraction=0.2, corner_fraction=0.1, edge_min_deg=0.0, edge_max_deg=0.5)
TRAIN_BKG_NORM_SPREAD = 0.25
#: the wider sky of the localiser's last training stage (training curve sets only): every range of
#: :data:`TRAIN_SHIFT` widened, the second PSF component's width drawn per map, 2-4 times the first
WIDE_SHIFT = simulate.CTAShift(psf_scale_min=0.75, psf_scale_max=1.25, psf_tail_ratio=2.0, psf_tail_ratio_max=4.0,
                               tail_fraction_min=0.0, tail_fraction_max=0.35, aeff_spread=0.25, index_min=2.1,
                               index_max=2.9, edge_fraction=0.2, corner_fraction=0.1, edge_min_deg=0.0,
                               edge_max_deg=0.5)
WIDE_BKG_NORM_SPREAD = 0.35

#: name -> keyword arguments of :func:`skyml.cta.pipeline.train_improved_localiser`
VARIANTS = {
    "half_res": {"patience": 3},  # the previous version (its own early stopping)
    "full_res_dihedral": {"full_resolution_head": True, "dihedral_augment": True},
    "full_res_dihedral_mf15": {"full_resolution_head": True, "dihedral_augment": True, "matched_filter_size": 15},
    "full_res_dihedral_mf15_randomised": {"full_resolution_head": True, "dihedral_augment": True,
                                          "matched_filter_size": 15, "randomise": True},
}
#: (readout, window) pairs scored for every variant (see :class:`skyml.cta.models.SpatialSoftArgmax`)
READOUTS = (("softmax", 0), ("softmax", 2), ("softmax", 4), ("parabola", 0), ("filter_parabola", 0))
FLUX_EDGES = (0.1, 0.3, 1.0, 3.0, 10.0)


def randomised_params(params: simulate.CTASimParams) -> simulate.CTASimParams:
    """The localiser's training simulation with the background spread of the randomised sky."""
    return replace(params, bkg_norm_spread=TRAIN_BKG_NORM_SPREAD)


def wide_params(params: simulate.CTASimParams) -> simulate.CTASimParams:
    """The localiser's training simulation with the background spread of the wider sky."""
    return replace(params, bkg_norm_spread=WIDE_BKG_NORM_SPREAD)


def _scores(errors_deg, crlb_deg, flux, edges=FLUX_EDGES) -> dict:
    b = evaluation.flux_bin_index(flux, np.asarray(edges))
    r = [metrics.containment(errors_deg[b == k], 0.68) for k in range(len(edges) - 1)]
    c = [metrics.containment(crlb_deg[b == k], 0.68) for k in range(len(edges) - 1)]
    ratios = [float(x / y) for x, y in zip(r, c)]
    return {"r68_deg_per_bin": [float(x) for x in r], "crlb_ratio_per_bin": ratios,
            "worst_bin_ratio": float(max(ratios)), "r68_deg": float(metrics.containment(errors_deg, 0.68)),
            "frac_gt_0p1deg": float(np.mean(errors_deg > 0.1))}


def _bright_pattern(x_pred, x_true, flux, flux_min=3.0) -> dict:
    """On the maps above ``flux_min`` Crab: the mean x error [px] (a common shift) and the correlation of the
    x error with the source's position inside a 2 x 2-pixel block (a half-resolution cell): a quantised
    readout returns the cell centre, so its error falls as the source moves across the cell."""
    sel = np.asarray(flux) >= flux_min
    dx = np.asarray(x_pred)[sel] - np.asarray(x_true)[sel]
    phase = ((np.asarray(x_true)[sel] + 0.5) / 2.0) % 1.0
    return {"bright_bias_x_px": float(np.mean(dx)), "bright_cell_phase_corr": float(np.corrcoef(phase, dx)[0, 1])}


def run(n_train=1200, n_val=300, seed=1, epochs=8, patience=10, batch_size=32, variants=None, readouts=READOUTS,
        profile="quick") -> dict:
    """Train or load every variant and score it on the validation maps; returns the table."""
    params = pipeline.localiser_params(simulate.CTASimParams(), 10.0)
    val = simulate.load_maps(n_val, seed, params, split="val")
    rparams = randomised_params(params)
    rval = pipeline.localiser_training_maps(n_val, seed, rparams, "val", TRAIN_SHIFT)
    edge = rval["placement"] != simulate.PLACEMENTS["disc"]
    binsz = params.binsz_deg
    _, crlb = evaluation.crlb_errors(val, binsz, np.random.default_rng(seed))
    choice = baselines.tune_smoothed_centroid(val["counts"], simulate.background_for(val), val["src_x_pix"],
                                              val["src_y_pix"])

    def centroid(maps):
        x, y = baselines.smoothed_centroid(maps["counts"], simulate.background_for(maps), choice["sigma_px"],
                                           choice["radius_px"])
        return pipeline.labels_to_sky(maps, models.pix_to_label(x, y, maps["counts"].shape[1:]))

    table = {"smoothed_centroid": {**_scores(evaluation.angular_errors(val, *centroid(val)), crlb, val["flux_crab"]),
                                   "edge_r68_deg": float(metrics.containment(
                                       evaluation.angular_errors(rval, *centroid(rval))[edge], 0.68))}}
    x_val, x_rval = models.preprocess_localiser_input(val["counts"]), models.preprocess_localiser_input(rval["counts"])
    for name, kwargs in (variants or VARIANTS).items():
        kwargs = dict(kwargs)
        randomise = kwargs.pop("randomise", False)
        kwargs.setdefault("patience", patience)
        model, _, history, _ = pipeline.train_improved_localiser(
            n_train, n_val, seed, rparams if randomise else params, epochs=epochs, batch_size=batch_size,
            train_shift=TRAIN_SHIFT if randomise else None, profile=profile, **kwargs)
        for kind, window in readouts:
            if kind == "filter_parabola" and not kwargs.get("matched_filter_size"):
                continue
            readout = models.with_readout(model, window, kind)
            labels = readout.predict(x_val, verbose=0)
            err = evaluation.angular_errors(val, *pipeline.labels_to_sky(val, labels))
            xp, _ = models.label_to_pix(labels, val["counts"].shape[1:])
            err_r = evaluation.angular_errors(rval, *pipeline.labels_to_sky(rval, readout.predict(x_rval, verbose=0)))
            table[f"{name}/{kind}{window}"] = {**_scores(err, crlb, val["flux_crab"]),
                                               "edge_r68_deg": float(metrics.containment(err_r[edge], 0.68)),
                                               **_bright_pattern(xp, val["src_x_pix"], val["flux_crab"]),
                                               "epochs_run": len(history["loss"]),
                                               "best_val_loss": float(min(history["val_loss"]))}
    return table


def best(table: dict) -> str:
    """The network entry of ``table`` with the lowest worst-bin ratio to the bound (ties: lower edge error)."""
    nets = [k for k in table if "/" in k]
    return min(nets, key=lambda k: (round(table[k]["worst_bin_ratio"], 2), table[k]["edge_r68_deg"]))


def format_table(table: dict) -> str:
    lines = [f"{'variant/readout':40s} " + " ".join(f"{a:>4g}-{b:<4g}" for a, b in itertools.pairwise(FLUX_EDGES))
             + "  worst  >0.1deg  edge r68  bias_x  phase_corr"]
    for k, v in table.items():
        lines.append(f"{k:40s} " + " ".join(f"{r:9.2f}" for r in v["crlb_ratio_per_bin"])
                     + f"  {v['worst_bin_ratio']:5.2f}  {v['frac_gt_0p1deg']:6.3f}  {v['edge_r68_deg']:.4f}"
                     + (f"  {v['bright_bias_x_px']:+6.2f}  {v['bright_cell_phase_corr']:+6.2f}" if "/" in k else ""))
    lines.append(f"chosen: {best(table)} (per-bin columns: 68% error / Cramér-Rao bound on the validation maps)")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=1200)
    ap.add_argument("--n-val", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--patience", type=int, default=10)
    ap.add_argument("--variants", nargs="*", default=None, help=f"a subset of {list(VARIANTS)}")
    ap.add_argument("--out", default=None, help="JSON file for the table")
    args = ap.parse_args(argv)
    variants = None if not args.variants else {k: VARIANTS[k] for k in args.variants}
    table = run(args.n_train, args.n_val, args.seed, args.epochs, args.patience, variants=variants)
    print(format_table(table))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(table, fh, indent=1)


if __name__ == "__main__":
    main()
