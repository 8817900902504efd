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
TASK = "fermi-catalogue"


def train_classifier(train: dict, val: dict, data_key: dict, *, epochs: int, seed: int, filters: int = 16,
                     batch_size: int = 32, patience: int = 10, augment_to: float = 1.0, profile: str = "quick"):
    """The 3D CNN classifier (:mod:`skyml.fermi.classify`); ``data_key``
    identifies the cut-out sets. Returns (model, metadata, history, seconds or None)."""
    key = {"data": data_key, "epochs": int(epochs), "seed": int(seed), "filters": int(filters),
           "batch_size": int(batch_size), "patience": int(patience), "augment_to": float(augment_to), "version": 2}

    def fit():
        model, history = classify.train_classifier(train, val, epochs=epochs, seed=seed, filters=filters,
                                                   batch_size=batch_size, patience=patience, augment_to=augment_to)
        meta = {"task": TASK, "role": "classifier", "classes": list(classify.CLASSES),
                "input": "yearly cut-outs (10, 6, H, W): sorted, mean-subtracted variability + log1p 10-year counts"
                         " + catalogue features with the known background",
                "npix": int(train["counts"].shape[-1]), "profile": profile}
        return model, meta, history

    return train_cached("fermi_classifier", key, fit, profile, CLASSIFIER_FILE)


def train_flux_net(train: dict, val: dict, data_key: dict, *, epochs: int, seed: int, filters: int = 32,
                   batch_size: int = 32, patience: int = 10, flat_weights: bool = False, profile: str = "quick"):
    """The mean–variance flux network (:mod:`skyml.fermi.flux`), trained on the
    source (non-FAKE) cut-outs of ``train`` with their known background.
    Returns (model, metadata, history, seconds or None)."""
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

    return train_cached("fermi_flux", key, fit, profile, FLUX_FILE)
