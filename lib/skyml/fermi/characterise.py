"""Train-or-load steps of notebook 05, cached by a hash of their inputs.

:func:`train_classifier` and :func:`train_flux_net` return the same trained
model for the same cut-out sets and hyper-parameters, training it the first
time and loading it from ``data/cache/`` afterwards; the models are installed
under ``data/models/<profile>/`` where ``skyml fermi-catalogue`` finds them.
"""

from __future__ import annotations

from ..training import train_cached
from . import classify, flux

CLASSIFIER_FILE = "fermi_classifier.keras"
FLUX_FILE = "fermi_flux.keras"
FLUX_NOMINAL_FILE = "fermi_flux_nominal.keras"
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
                   batch_size: int = 32, patience: int = 10, flat_weights: bool = False, profile: str = "quick"):
    """The mean–variance flux network (:mod:`skyml.fermi.flux`), trained on the
    source (non-FAKE) cut-outs of ``train`` with their known background, of
    the nominal instrument (installed as ``fermi_flux_nominal.keras``; the
    domain-randomised network of :func:`randomise_flux_net` is the one that
    ``skyml fermi-catalogue`` uses). Returns (model, metadata, history, seconds or None)."""
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

    return train_cached("fermi_flux", key, fit, profile, FLUX_NOMINAL_FILE)


def randomise_flux_net(model, base_meta: dict, train: dict, val: dict, calibration: dict, data_key: dict, *,
                       epochs: int, seed: int, batch_size: int = 32, patience: int = 10,
                       learning_rate: float = 3e-5, profile: str = "quick"):
    """The flux network of :func:`train_flux_net` (``model``, its metadata
    ``base_meta``) trained further on the source cut-outs of several
    instruments and populations (``train`` and ``val`` from
    :func:`skyml.fermi.cutouts.randomised_cutouts`, with their
    ``exposure_scale``; ``data_key`` identifies them) by
    :func:`skyml.fermi.flux.finetune_flux_net`, sigma calibrated on the nominal
    validation cut-outs ``calibration``. Returns (model, metadata, history, seconds or None)."""
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

    return train_cached("fermi_flux_randomised", key, fit, profile, FLUX_FILE)
