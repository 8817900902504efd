"""Validation sweep of the U-Net trained for any plausible sky (``unet_log_dr`` of notebook 06).

``python -m skyml.ctao.dr_sweep [--variants A,B --n-eval N --out FILE]`` trains
(or loads from the cache, :func:`skyml.ctao.pipeline.train_model`) the
variants of :data:`VARIANTS` on the domain-randomised training sky and scores
them on *validation* patches only (split ``val``; never the test or the
shifted test patches), on three skies:

- ``nominal``: the nominal survey;
- ``randomised``: the randomised training sky (the skies the thresholds are
  chosen on);
- ``edge``: :func:`skyml.ctao.simulate.edge_params`, the randomised ranges at
  their hard ends plus a PSF tail (the widest that the randomised training
  sky of notebook 06 now draws; when this sweep ran, the training sky drew no
  tail): a validation sky at the corner of the training distribution, other
  than the shifted test sky.

Two threshold rules, both chosen on the randomised validation patches:
``max_f1`` (:func:`skyml.ctao.evaluation.best_threshold`) and ``false_rate``
(:func:`skyml.ctao.evaluation.threshold_at_false_rate`, at the false
detections per patch of the TS map at sqrt(TS) = 5 on the nominal validation
patches). The TS map (fitted background) is scored on the same edge patches
as the reference. The table is printed and written as JSON.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from . import baselines, evaluation, pipeline, simulate
from .simulate import SurveyParams

#: the quick-profile training of notebook 06 that every variant changes
BASE = {"n_train": 16, "n_val": 2, "crop_px": 128, "crops_per_patch": 8, "epochs": 5, "filters": 8, "depth": 3,
        "batch_size": 16, "patience": 3}
#: name -> changes to :data:`BASE`
VARIANTS = {
    "before": {},
    "long": {"epochs": 40, "patience": 10},
    "long_val4": {"epochs": 40, "patience": 10, "n_val": 4},
    "long_crops16": {"epochs": 40, "patience": 10, "crops_per_patch": 16},
    "long_focal": {"epochs": 40, "patience": 10, "loss": "focal_dice"},
    "long_val4_crops16": {"epochs": 40, "patience": 10, "n_val": 4, "crops_per_patch": 16},
    "long_val4_focal": {"epochs": 40, "patience": 10, "n_val": 4, "loss": "focal_dice"},
    "long_val4_depth4": {"epochs": 40, "patience": 10, "n_val": 4, "depth": 4},
    "long_val4_train32": {"epochs": 40, "patience": 10, "n_val": 4, "n_train": 32},
}


def validation_skies(p: SurveyParams) -> dict:
    return {"nominal": p, "randomised": simulate.randomised_params(p), "edge": simulate.edge_params(p)}


def score(data: dict, det: dict, sky: SurveyParams, threshold: float, radius_deg: float = 0.1) -> dict:
    """F1, precision, recall and false detections per patch at ``threshold``."""
    t, d = evaluation.evaluate(data, evaluation.apply_threshold(det, threshold), sky, radius_deg)
    r = evaluation.prf(t, d)
    n = len(np.unique(data["patch"])) if len(data["patch"]) else len(data["counts"])
    return {"f1": r["f1"], "precision": r["precision"], "recall": r["recall"], "false_per_patch": r["fp"] / n}


def thresholds(truth, dets, n_patches: int, rate: float, low: float = 0.1) -> dict:
    """The two threshold rules of the module text on validation tables
    (:func:`skyml.ctao.evaluation.evaluate` of ``n_patches`` patches), neither below ``low``."""
    return {"max_f1": max(evaluation.best_threshold(truth, dets), low),
            "false_rate": max(evaluation.threshold_at_false_rate(dets, n_patches, rate), low)}


def run(variants, n_eval: int = 4, n_tsmap: int = 2, seed: int = 1, tsmap_downsample: int = 2) -> dict:
    p = SurveyParams()
    skies = validation_skies(p)
    data = {name: simulate.load_patches(n_eval, seed, sky, "val") for name, sky in skies.items()}
    ts_nom = baselines.tsmap_detect_all(data["nominal"]["counts"][:n_tsmap], p, downsampling_factor=tsmap_downsample)
    _, d = evaluation.evaluate(data["nominal"], ts_nom, p, 0.1, patches=np.arange(n_tsmap))
    rate = float(np.sum(np.isnan(np.asarray(d["matched_rel_flux"], float)))) / n_tsmap
    ts_edge = baselines.tsmap_detect_all(data["edge"]["counts"], p, downsampling_factor=tsmap_downsample,
                                         background="fitted")
    out = {"tsmap_false_per_nominal_val_patch": rate, "n_eval": n_eval,
           "tsmap_edge": score(data["edge"], ts_edge, skies["edge"], 5.0), "variants": {}}
    for name in variants:
        cfg = {**BASE, **VARIANTS[name]}
        n_train, n_val = cfg.pop("n_train"), cfg.pop("n_val")
        t0 = time.perf_counter()
        model, _, history, seconds = pipeline.train_model("unet_log_dr", n_train, n_val, seed, p, **cfg)
        dets = {k: pipeline.detect_patches(model, "unet_log_dr", data[k]["counts"], p, 0.1)[0] for k in skies}
        ev = {k: evaluation.evaluate(data[k], dets[k], skies[k], 0.1) for k in skies}
        thr = thresholds(*ev["randomised"], n_eval, rate)
        # the randomised and the edge validation patches together (max F1), and the false rate of
        # the TS map on the edge patches matched there
        thr["max_f1_pooled"] = max(evaluation.best_threshold(*evaluation.stack_evaluated(ev["randomised"], ev["edge"])), 0.1)
        thr["false_rate_edge"] = max(evaluation.threshold_at_false_rate(ev["edge"][1], n_eval,
                                                                        out["tsmap_edge"]["false_per_patch"]), 0.1)
        row = {"config": {**VARIANTS[name]}, "epochs_run": len(history["loss"]),
               "best_val_loss": float(min(history["val_loss"])), "train_seconds": seconds,
               "wall_seconds": time.perf_counter() - t0, "thresholds": thr}
        for rule, th in thr.items():
            for k, sky in skies.items():
                row[f"{k}_{rule}"] = score(data[k], dets[k], sky, th)
        out["variants"][name] = row
    return out


def print_table(res: dict) -> None:
    print(f"TS map false detections per nominal validation patch: {res['tsmap_false_per_nominal_val_patch']:.2f}; "
          f"TS map on the edge sky: " + ", ".join(f"{k} {v:.3f}" for k, v in res["tsmap_edge"].items()))
    print(f"{'variant':14s} {'rule':10s} {'thr':>5s} {'ep':>3s} | " +
          " | ".join(f"{s:^23s}" for s in ("nominal F1 P fp", "randomised F1 P fp", "edge F1 P fp")))
    for name, row in res["variants"].items():
        for rule, th in row["thresholds"].items():
            cells = [row[f"{k}_{rule}"] for k in ("nominal", "randomised", "edge")]
            print(f"{name:14s} {rule:10s} {th:5.2f} {row['epochs_run']:3d} | " + " | ".join(
                f"{c['f1']:.3f} {c['precision']:.2f} {c['false_per_patch']:5.2f}" for c in cells))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--n-eval", type=int, default=4)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    res = run(args.variants.split(","), n_eval=args.n_eval)
    print_table(res)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1, default=float)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
