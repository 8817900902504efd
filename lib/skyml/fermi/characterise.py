"""Train-or-load steps of notebook 05, cached by a hash of their inputs.

:func:`train_classifier` and :func:`train_flux_net` return the same trained
model for the same cut-out sets and hyper-parameters, training it the first
time and loading it from ``data/cache/`` afterwards; the models are installed
under ``data/models/<profile>/`` where ``skyml fermi-catalogue`` finds them.
"""

from __future__ import annotations

import numpy as np

from ..training import train_cached, weights_digest
from . import classify, flux

CLASSIFIER_FILE = "fermi_classifier.keras"
FLUX_FILE = "fermi_flux.keras"
FLUX_NOMINAL_FILE = "fermi_flux_nominal.keras"


def flux_member_file(stage: str, member: int) -> str:
    """Installed file name of flux network ``member`` (0, 1, ...) of an
    ensemble at training ``stage`` ("nominal" or "randomised"); the nominal
    member 0 keeps the name of the single network, ``fermi_flux_nominal.keras``."""
    if stage not in ("nominal", "randomised") or int(member) < 0:
        raise ValueError(f"flux_member_file: unknown stage {stage!r} or member {member}")
    if stage == "nominal" and int(member) == 0:
        return FLUX_NOMINAL_FILE
    return f"fermi_flux_{stage}_{int(member)}.keras"
TASK = "fermi-catalogue"


def train_classifier(train: dict, val: dict, data_key: dict, *, epochs: int, seed: int, filters: int = 16,
                     batch_size: int = 32, patience: int = 10, augment_to: float = 1.0, learning_rate: float = 1e-3,
                     profile: str = "quick"):
    """The 3D CNN classifier (:mod:`skyml.fermi.classify`); ``data_key``
    identifies the cut-out sets. Returns (model, metadata, history, seconds or None)."""
    key = {"data": data_key, "epochs": int(epochs), "seed": int(seed), "filters": int(filters),
           "batch_size": int(batch_size), "patience": int(patience), "augment_to": float(augment_to),
           "learning_rate": float(learning_rate), "version": 2}

    def fit():
        model, history = classify.train_classifier(train, val, epochs=epochs, seed=seed, filters=filters,
                                                   batch_size=batch_size, patience=patience, augment_to=augment_to,
                                                   learning_rate=learning_rate)
        meta = {"task": TASK, "role": "classifier", "classes": list(classify.CLASSES),
                "input": "yearly cut-outs (10, 6, H, W): sorted, mean-subtracted variability + log1p 10-year counts"
                         " + catalogue features with the known background",
                "npix": int(train["counts"].shape[-1]), "profile": profile}
        return model, meta, history

    return train_cached("fermi_classifier", key, fit, profile, CLASSIFIER_FILE)


def train_flux_net(train: dict, val: dict, data_key: dict, *, epochs: int, seed: int, filters: int = 32,
                   batch_size: int = 32, patience: int = 10, flat_weights: bool = False, member: int = 0,
                   profile: str = "quick"):
    """The mean–variance flux network (:mod:`skyml.fermi.flux`), trained on the
    source (non-FAKE) cut-outs of ``train`` with their known background, of
    the nominal instrument, installed as :func:`flux_member_file` of
    ``member`` (an index within an ensemble, not in the cache key: members
    differ by ``seed``); the ensemble of :func:`flux_ensemble` of the
    domain-randomised networks of :func:`randomise_flux_net` is the one that
    ``skyml fermi-catalogue`` uses. Returns (model, metadata, history, seconds or None)."""
    key = {"data": data_key, "epochs": int(epochs), "seed": int(seed), "filters": int(filters),
           "batch_size": int(batch_size), "patience": int(patience), "flat_weights": bool(flat_weights),
           "version": 5}

    def fit():
        t, v = train["label"] != classify.FAKE_LABEL, val["label"] != classify.FAKE_LABEL
        model, history = flux.train_flux_net(
            train["counts"][t].sum(axis=1), train["background"][t], train["flux1000"][t],
            val["counts"][v].sum(axis=1), val["background"][v], val["flux1000"][v], epochs=epochs, seed=seed,
            filters=filters, batch_size=batch_size, patience=patience, flat_weights=flat_weights)
        meta = {"task": TASK, "role": "flux",
                "input": "log1p counts, log1p background, asinh(counts - background) (H, W, 18) + aperture photometry (12)",
                "output": "mu, sigma of log10(F(1-100 GeV) / 1e-10 ph cm-2 s-1)",
                "mean": f"gated mix of a photometric flux ({flux.PHOTOMETRIC_RADIUS_DEG:g} deg disc, weighted excess per bin)"
                        " and the dense branches'",
                "sigma_scale": float(model.get_layer("sigma_calibration").scale.numpy()),
                "npix": int(train["counts"].shape[-1]), "profile": profile}
        return model, meta, history

    return train_cached("fermi_flux", key, fit, profile, flux_member_file("nominal", member))


def randomise_flux_net(model, base_meta: dict, train: dict, val: dict, calibration: dict, data_key: dict, *,
                       epochs: int, seed: int, batch_size: int = 32, patience: int = 10,
                       learning_rate: float = 3e-5, member: int = 0, profile: str = "quick"):
    """The flux network of :func:`train_flux_net` (``model``, its metadata
    ``base_meta``) trained further on the source cut-outs of several
    instruments and populations (``train`` and ``val`` from
    :func:`skyml.fermi.cutouts.randomised_cutouts`, with their
    ``exposure_scale``; ``data_key`` identifies them) by
    :func:`skyml.fermi.flux.finetune_flux_net`, sigma calibrated on the nominal
    validation cut-outs ``calibration``; installed as :func:`flux_member_file`
    of ``member``. Returns (model, metadata, history, seconds or None)."""
    base_key = base_meta.get("cache_key")
    if base_key is None:
        raise ValueError("randomise_flux_net: the base network's metadata has no cache_key")
    key = {"base": base_key, "data": data_key, "epochs": int(epochs), "seed": int(seed), "batch_size": int(batch_size),
           "patience": int(patience), "learning_rate": float(learning_rate), "version": 1}

    def fit():
        t, v = train["label"] != classify.FAKE_LABEL, val["label"] != classify.FAKE_LABEL
        c = calibration["label"] != classify.FAKE_LABEL
        tuned, history = flux.finetune_flux_net(
            model, train["counts"][t].sum(axis=1), train["background"][t], train["flux1000"][t],
            train["exposure_scale"][t], val["counts"][v].sum(axis=1), val["background"][v], val["flux1000"][v],
            val["exposure_scale"][v], (calibration["counts"][c].sum(axis=1), calibration["background"][c],
                                       calibration["flux1000"][c]),
            epochs=epochs, seed=seed, batch_size=batch_size, patience=patience, learning_rate=learning_rate)
        meta = {key_: value for key_, value in base_meta.items()
                if key_ in ("task", "role", "input", "output", "mean", "npix", "profile")}
        meta.update({"training": "the nominal network trained further on several instruments and populations"
                                 " (domain randomisation); target: the flux at the nominal exposure",
                     "variants": data_key.get("variants"),
                     "sigma_scale": float(tuned.get_layer("sigma_calibration").scale.numpy())})
        return tuned, meta, history

    return train_cached("fermi_flux_randomised", key, fit, profile, flux_member_file("randomised", member))


def flux_ensemble(members, metas, calibration: dict, calibration_key: dict, *, dihedral: bool = False,
                  profile: str = "quick"):
    """The flux networks ``members`` (with their metadata ``metas``, from
    :func:`randomise_flux_net`) averaged by :func:`skyml.fermi.flux.build_flux_ensemble`,
    each on the 8 flips/rotations of the cut-out when ``dihedral``, its sigma
    scaled on the nominal validation cut-outs ``calibration`` (identified by
    ``calibration_key``) by :func:`skyml.fermi.flux.calibrate_sigma`; cached
    by the members' cache keys and the digests of their weights
    (:func:`skyml.training.weights_digest`: members trained again on another
    machine make another average) and installed as ``fermi_flux.keras``, the
    network of ``skyml fermi-catalogue``. Returns (model, metadata, history
    (empty: nothing is trained), seconds or None)."""
    members, metas = list(members), list(metas)
    if not members or len(members) != len(metas):
        raise ValueError("flux_ensemble needs one metadata dict per member, and at least one member")
    keys = [m.get("cache_key") for m in metas]
    if any(k is None for k in keys):
        raise ValueError("flux_ensemble: a member's metadata has no cache_key")
    key = {"members": keys, "member_weights_sha256": [weights_digest(m) for m in members], "dihedral": bool(dihedral),
           "calibration": calibration_key, "version": 1}

    def fit():
        model = flux.build_flux_ensemble(members, dihedral=dihedral)
        c = calibration["label"] != classify.FAKE_LABEL
        scale = flux.calibrate_sigma(model, flux.flux_inputs(calibration["counts"][c].sum(axis=1),
                                                             calibration["background"][c]),
                                     flux.log_flux_target(calibration["flux1000"][c]))
        meta = {k: v for k, v in metas[0].items() if k in ("task", "role", "input", "output", "npix", "profile")}
        meta.update({"training": f"mean of {len(members)} domain-randomised flux networks (training seeds)"
                                 + (", each on the 8 flips/rotations of the cut-out" if dihedral else "")
                                 + "; sigma of the Gaussian mixture, scaled on the nominal validation cut-outs",
                     "members": len(members), "dihedral": bool(dihedral), "variants": metas[0].get("variants"),
                     "sigma_scale": float(scale)})
        return model, meta, {}

    return train_cached("fermi_flux_ensemble", key, fit, profile, FLUX_FILE, history_needed=False)


def ensemble_validation(members, calibration: dict, sets: dict, *, seed: int = 0):
    """How the average of :func:`flux_ensemble` compares with its first
    member alone, on validation cut-outs only: an astropy ``Table`` with one
    row per estimate (the first member; it on the 8 flips/rotations; all
    members; all members on the flips) and validation set (``sets``: name ->
    a cut-out set, with ``exposure_scale`` where it is not the nominal one).
    Columns: the scatter of F / F_true − 1 (:func:`skyml.fermi.flux.flux_metrics`)
    with its bootstrap 68 % interval, the pull standard deviation (sigma
    scaled on ``calibration`` as in :func:`flux_ensemble`) and the scatter
    over the first member's on the same cut-outs
    (:func:`skyml.fermi.flux.scatter_ratio`, paired bootstrap)."""
    from astropy.table import Table

    members = list(members)
    candidates = [("member 0", members[:1], False), ("member 0, 8 flips", members[:1], True)]
    if len(members) > 1:
        candidates += [(f"{len(members)} members", members, False), (f"{len(members)} members, 8 flips", members, True)]
    c = calibration["label"] != classify.FAKE_LABEL
    cal_inputs = flux.flux_inputs(calibration["counts"][c].sum(axis=1), calibration["background"][c])
    cal_target = flux.log_flux_target(calibration["flux1000"][c])
    data = {}
    for name, d in sets.items():
        s = d["label"] != classify.FAKE_LABEL
        exposure = np.asarray(d["exposure_scale"], float)[s] if "exposure_scale" in d else np.ones(int(s.sum()))
        data[name] = (flux.flux_inputs(d["counts"][s].sum(axis=1), d["background"][s]), d["flux1000"][s], exposure)
    rows, first = [], {}
    for label, ms, dihedral in candidates:
        model = flux.build_flux_ensemble(ms, dihedral=dihedral)
        flux.calibrate_sigma(model, cal_inputs, cal_target)
        for name, (inputs, truth, exposure) in data.items():
            out = np.asarray(model.predict(inputs, batch_size=256, verbose=0), float)
            estimate = flux.FLUX_SCALE * 10 ** out[:, 0] / exposure
            m = flux.flux_metrics(estimate, truth, flux.pulls(np.log10(estimate), out[:, 1], np.log10(truth)), ci=True,
                                  seed=seed)
            first.setdefault(name, estimate)
            ratio, ratio_ci = flux.scatter_ratio(estimate, first[name], truth, seed=seed)
            rows.append((label, name, len(truth), m["scatter"], *m["scatter_ci68"], m["pull_std"], ratio, *ratio_ci))
    return Table(rows=rows, names=("estimate", "validation set", "n", "scatter", "scatter_lo68", "scatter_hi68",
                                   "pull std", "scatter / member 0", "ratio_lo68", "ratio_hi68"))
