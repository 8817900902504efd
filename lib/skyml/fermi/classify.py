"""AGN / PSR / FAKE classification of yearly LAT cut-outs (Bhattacharyya et al., Fermi-LAT catalog meeting 2022; AutoSourceID).

**Input arrangement** (Bhattacharyya et al. 2022, "training strategy"): a cut-out
(10 years, 6 energy bins, H, W) becomes the 4-D array (H, W, 10, 6) —
width, height, year, energy. The years are ordered by their total counts in
the cut-out, maximum first ("max count on top"), the same order for every
pixel and energy bin, and the 10-year mean is subtracted from each year, so
that the variability dominates. This implementation also divides by the
Poisson scale sqrt(mean + 1) and compresses with asinh, so that bright and
faint sources share one range (:func:`variability_input`). Because the
mean-subtracted cube no longer carries the spectrum, a second input gives the
network log(1 + 10-year counts) per energy bin, (H, W, 6)
(:func:`spectral_input`).

**3D CNN** (:func:`build_classifier`): Conv3D over (H, W, year) with the
energy bins as channels — time and energy are treated separately: a
spatial (3, 3, 1) and a temporal (1, 1, 3) convolution per block, then
global pooling; the spectral image passes a small Conv2D branch; both join in
a dense softmax head over the three classes.

**Class imbalance** (seed: "augmentation; weighted loss"): the minority
classes of the training set are oversampled with random flips and 90°
rotations of the sky axes (:func:`augment_minority`) up to ``augment_to``
times the majority count, and the loss is weighted by inverse class
frequency of the augmented set (:func:`class_weights`).

**Tree baseline** (:func:`catalogue_features`, :func:`train_trees`): a
scikit-learn histogram gradient-boosted tree classifier (balanced class
weights) on catalogue-style features of the same cut-outs, measured in a
circular aperture per energy bin with the *known* expected background:
excess counts and significance, hardness ratios of adjacent bins, spectral
slope and curvature of log excess versus log energy, the variability index
(χ² of the ten yearly aperture counts, :func:`skyml.fermi.variability.variability_index`)
and fractional variability, the concentration of the excess (centre versus
aperture) and the background level.
"""

from __future__ import annotations

import numpy as np

from .. import training
from . import irf, variability
from .cutouts import AGN, CLASSES, FAKE, PSR

N_CLASSES = len(CLASSES)
FAKE_LABEL = FAKE


# --------------------------------------------------------------------------- inputs
def order_years(counts: np.ndarray) -> np.ndarray:
    """Yearly cut-outs (n, 10, 6, H, W) with the years of each cut-out sorted
    by total counts, maximum first (stable for ties)."""
    counts = np.asarray(counts)
    if counts.ndim != 5:
        raise ValueError(f"yearly cut-outs must be (n, years, energy, H, W), got shape {counts.shape}")
    totals = counts.sum(axis=(2, 3, 4))
    order = np.argsort(-totals, axis=1, kind="stable")
    return np.take_along_axis(counts, order[:, :, None, None, None], axis=1)


def variability_input(counts: np.ndarray) -> np.ndarray:
    """(n, H, W, 10, 6) float32: asinh((sorted yearly counts − 10-year mean) / sqrt(mean + 1))."""
    c = order_years(counts).astype(np.float32)
    mean = c.mean(axis=1, keepdims=True)
    x = np.arcsinh((c - mean) / np.sqrt(mean + 1.0))
    return np.ascontiguousarray(np.transpose(x, (0, 3, 4, 1, 2)))


def spectral_input(counts: np.ndarray) -> np.ndarray:
    """(n, H, W, 6) float32: log(1 + 10-year counts) per energy bin."""
    c = np.asarray(counts)
    if c.ndim != 5:
        raise ValueError(f"yearly cut-outs must be (n, years, energy, H, W), got shape {c.shape}")
    return np.log1p(np.moveaxis(c.sum(axis=1), 1, -1).astype(np.float32))


def network_inputs(counts: np.ndarray, background: np.ndarray, binsz_deg: float = 10.0 / 64) -> list[np.ndarray]:
    """The three inputs of the 3D CNN: the variability cube, the spectral image
    and the catalogue-style features of the trees (:func:`catalogue_features`,
    with the known background; standardised inside the network)."""
    return [variability_input(counts), spectral_input(counts),
            catalogue_features(counts, background, binsz_deg).astype(np.float32)]


def one_hot(labels, n_classes: int = N_CLASSES) -> np.ndarray:
    return np.eye(n_classes, dtype=np.float32)[np.asarray(labels, int)]


# --------------------------------------------------------------------------- imbalance
dihedral = training.dihedral  # one of the 8 flips/rotations of the last two (sky) axes


def augment_minority(counts: np.ndarray, labels: np.ndarray, rng: np.random.Generator, augment_to: float = 1.0):
    """Oversample every class smaller than ``augment_to`` × the largest one
    with random dihedral transforms of its cut-outs; returns (counts, labels, source index)."""
    labels = np.asarray(labels, int)
    sizes = np.bincount(labels, minlength=N_CLASSES)
    target = int(round(augment_to * sizes.max()))
    extra_idx, extra_k = [], []
    for c in range(N_CLASSES):
        if 0 < sizes[c] < target:
            pick = rng.choice(np.flatnonzero(labels == c), size=target - sizes[c], replace=True)
            extra_idx.append(pick)
            extra_k.append(rng.integers(1, 8, size=len(pick)))
    if not extra_idx:
        return counts, labels, np.arange(len(labels))
    idx = np.concatenate(extra_idx)
    ks = np.concatenate(extra_k)
    extra = np.stack([dihedral(counts[i], k) for i, k in zip(idx, ks)])
    return (np.concatenate([counts, extra]), np.concatenate([labels, labels[idx]]),
            np.concatenate([np.arange(len(labels)), idx]))


def class_weights(labels) -> dict[int, float]:
    """Inverse-frequency weights, normalised to a mean of 1 over the samples."""
    labels = np.asarray(labels, int)
    sizes = np.bincount(labels, minlength=N_CLASSES).astype(float)
    present = sizes > 0
    w = np.zeros(N_CLASSES)
    w[present] = len(labels) / (present.sum() * sizes[present])
    return {int(c): float(w[c]) for c in range(N_CLASSES)}


# --------------------------------------------------------------------------- the 3D CNN
def build_classifier(shape_var, shape_spec, train_features, filters: int = 16, dropout: float = 0.3,
                     learning_rate: float = 1e-3):
    """The 3D CNN with a spectral branch and a dense branch on the catalogue
    features (see the module docstring); ``train_features`` (n, n_features)
    adapt the features' standardisation layer."""
    import keras
    from keras import layers

    xv_in = keras.Input(shape=tuple(shape_var), name="yearly_variability")
    xs_in = keras.Input(shape=tuple(shape_spec), name="ten_year_spectrum")
    xf_in = keras.Input(shape=(np.shape(train_features)[1],), name="catalogue_features")
    x = xv_in
    for level, f in enumerate((filters, 2 * filters)):
        x = layers.Conv3D(f, (3, 3, 1), padding="same", activation="relu", name=f"var{level}_space")(x)
        x = layers.Conv3D(f, (1, 1, 3), padding="same", activation="relu", name=f"var{level}_time")(x)
        x = layers.MaxPooling3D((2, 2, 1), name=f"var{level}_pool")(x)
    xv = layers.Concatenate(name="var_pool")([layers.GlobalAveragePooling3D()(x), layers.GlobalMaxPooling3D()(x)])
    y = xs_in
    for level, f in enumerate((filters, 2 * filters)):
        y = layers.Conv2D(f, 3, padding="same", activation="relu", name=f"spec{level}_a")(y)
        y = layers.Conv2D(f, 3, padding="same", activation="relu", name=f"spec{level}_b")(y)
        y = layers.MaxPooling2D(2, name=f"spec{level}_pool")(y)
    ys = layers.Flatten(name="spec_flat")(y)
    norm = layers.Normalization(name="feature_standardisation")
    norm.adapt(np.asarray(train_features, np.float32))
    xf = layers.Dense(4 * filters, activation="relu", name="feature_dense")(norm(xf_in))
    h = layers.Concatenate(name="join")([xv, ys, xf])
    h = layers.Dense(4 * filters, activation="relu", name="dense")(h)
    h = layers.Dropout(dropout, name="dropout")(h)
    out = layers.Dense(N_CLASSES, activation="softmax", name="class_probability")(h)
    model = keras.Model([xv_in, xs_in, xf_in], out, name="fermi_3dcnn_classifier")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def train_classifier(train: dict, val: dict, *, epochs: int, seed: int, filters: int = 16, batch_size: int = 32,
                     patience: int = 10, augment_to: float = 1.0, learning_rate: float = 1e-3,
                     binsz_deg: float = 10.0 / 64, verbose: int = 2):
    """Augment, weight and fit (learning rate halved on plateaus of the
    validation loss); returns (model, history)."""
    import keras

    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 55]))
    counts, labels, src = augment_minority(train["counts"], train["label"], rng, augment_to)
    feats = catalogue_features(train["counts"], train["background"], binsz_deg).astype(np.float32)
    # the features are measured in a centred circular aperture: invariant under the augmentation
    x = [variability_input(counts), spectral_input(counts), feats[src]]
    xv = network_inputs(val["counts"], val["background"], binsz_deg)
    keras.utils.set_random_seed(int(seed))
    model = build_classifier(x[0].shape[1:], x[1].shape[1:], feats, filters=filters, learning_rate=learning_rate)
    callbacks = training.stopping_callbacks(patience)
    history = model.fit(x, one_hot(labels), validation_data=(xv, one_hot(val["label"])), epochs=int(epochs),
                        batch_size=int(batch_size), shuffle=True, class_weight=class_weights(labels),
                        callbacks=[*callbacks, *training.fit_callbacks(*callbacks)], verbose=verbose)
    return model, {k: [float(v) for v in vals] for k, vals in history.history.items()}


def predict_proba(model, counts: np.ndarray, background: np.ndarray, binsz_deg: float = 10.0 / 64,
                  batch_size: int = 128) -> np.ndarray:
    """Class probabilities (n, 3) of yearly cut-outs with their known background."""
    return np.asarray(model.predict(network_inputs(counts, background, binsz_deg), batch_size=batch_size,
                                    verbose=0), float)


# --------------------------------------------------------------------------- trees
FEATURE_NAMES = (
    [f"log_excess_{k}" for k in range(irf.N_BINS)] + [f"signif_{k}" for k in range(irf.N_BINS)]
    + [f"hardness_{k}{k + 1}" for k in range(irf.N_BINS - 1)]
    + ["slope", "curvature", "log_var_index", "frac_var", "concentration", "log_background", "signif_total"]
)


def aperture_radius_px(binsz_deg: float, event_types: str = "front+back") -> np.ndarray:
    """Aperture radius per energy bin [px]: the bin's rms PSF width, at least 1.5 px."""
    return np.maximum(irf.bin_psf_sigma_eff_deg(event_types) / binsz_deg, 1.5)


def catalogue_features(counts: np.ndarray, background: np.ndarray, binsz_deg: float,
                       event_types: str = "front+back") -> np.ndarray:
    """Catalogue-style features (n, len(FEATURE_NAMES)) of yearly cut-outs
    (n, 10, 6, H, W) with their known 10-year background (n, 6, H, W)."""
    counts = np.asarray(counts, float)
    background = np.asarray(background, float)
    n, n_years, n_e, h, w = counts.shape
    yy, xx = np.mgrid[:h, :w]
    r2 = (xx - (w - 1) / 2.0) ** 2 + (yy - (h - 1) / 2.0) ** 2
    radius = aperture_radius_px(binsz_deg, event_types)
    masks = np.stack([r2 <= r**2 for r in radius]).astype(float)  # (6, H, W)
    yearly = np.einsum("nyehw,ehw->nye", counts, masks)
    n_ap = yearly.sum(axis=1)
    b_ap = np.einsum("nehw,ehw->ne", background, masks)
    excess = n_ap - b_ap
    signif = excess / np.sqrt(np.maximum(b_ap, 1.0))
    log_excess = np.log10(np.maximum(excess, 1.0))
    hardness = (excess[:, 1:] - excess[:, :-1]) / (np.abs(excess[:, 1:]) + np.abs(excess[:, :-1]) + 1.0)
    loge = np.log10(np.sqrt(irf.ENERGY_EDGES_MEV[:-1] * irf.ENERGY_EDGES_MEV[1:]) / 1e3)
    # weighted quadratic fit of log10(excess) vs log10(E): slope and curvature
    wts = np.sqrt(np.maximum(excess, 0.0)) + 0.1
    design = np.stack([np.ones_like(loge), loge, loge**2], axis=1)
    coef = np.empty((n, 3))
    for i in range(n):
        a = design * wts[i, :, None]
        coef[i] = np.linalg.lstsq(a, log_excess[i] * wts[i], rcond=None)[0]
    sel = slice(0, n_e)  # all energies in the light curve
    lc = yearly[:, :, sel].sum(axis=2)
    lc_bkg = b_ap[:, sel].sum(axis=1)[:, None] / n_years
    var_index = variability.variability_index(lc, lc_bkg)
    lc_excess = lc.mean(axis=1) - lc_bkg[:, 0]
    frac_var = np.sqrt(np.maximum(lc.var(axis=1, ddof=1) - lc.mean(axis=1), 0.0)) / np.maximum(lc_excess, 1.0)
    centre = r2 <= 1.0
    n_c = counts.sum(axis=1)[:, 2:, centre].sum(axis=(1, 2))
    b_c = background[:, 2:, centre].sum(axis=(1, 2))
    concentration = (n_c - b_c) / np.maximum(excess[:, 2:].sum(axis=1), 1.0)
    log_bkg = np.log10(np.maximum(background.sum(axis=(1, 2, 3)), 1e-3))
    signif_total = excess.sum(axis=1) / np.sqrt(np.maximum(b_ap.sum(axis=1), 1.0))
    feats = np.column_stack([log_excess, signif, hardness, coef[:, 1], coef[:, 2], np.log10(var_index + 1.0),
                             frac_var, concentration, log_bkg, signif_total])
    assert feats.shape[1] == len(FEATURE_NAMES)
    return feats.astype(float)


def train_trees(features: np.ndarray, labels: np.ndarray, seed: int = 0, max_iter: int = 300):
    """Histogram gradient-boosted trees with balanced class weights."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    clf = HistGradientBoostingClassifier(max_iter=int(max_iter), learning_rate=0.08, class_weight="balanced",
                                         early_stopping=True, validation_fraction=0.15, random_state=int(seed))
    return clf.fit(features, np.asarray(labels, int))


# --------------------------------------------------------------------------- metrics
def _balanced_accuracy(labels, pred, axis=-1):
    """Mean recall over the classes present, along ``axis`` (vectorised for
    :func:`skyml.metrics.bootstrap_ci`; equal to scikit-learn's
    ``balanced_accuracy_score`` on one sample)."""
    labels, pred = np.moveaxis(np.asarray(labels), axis, -1), np.moveaxis(np.asarray(pred), axis, -1)
    recalls, present = [], []
    for k in range(N_CLASSES):
        n_k = np.sum(labels == k, axis=-1)
        recalls.append(np.sum((labels == k) & (pred == k), axis=-1) / np.maximum(n_k, 1))
        present.append(n_k > 0)
    recalls, present = np.array(recalls), np.array(present)
    return np.sum(recalls * present, axis=0) / np.sum(present, axis=0)


def classification_metrics(labels, proba, *, ci: bool = False, seed: int = 0) -> dict:
    """Accuracy, balanced accuracy, per-class recall and the confusion matrix
    (rows: true). With ``ci``, also ``accuracy_ci68`` and
    ``balanced_accuracy_ci68``: bootstrap 68 % intervals over the test items
    (:func:`skyml.metrics.bootstrap_ci`, resampling seed ``seed``)."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix

    from ..metrics import bootstrap_ci

    labels = np.asarray(labels, int)
    pred = np.argmax(np.asarray(proba), axis=1)
    cm = confusion_matrix(labels, pred, labels=list(range(N_CLASSES)))
    recall = np.where(cm.sum(axis=1) > 0, np.diag(cm) / np.maximum(cm.sum(axis=1), 1), np.nan)
    out = {"accuracy": float(accuracy_score(labels, pred)),
           "balanced_accuracy": float(balanced_accuracy_score(labels, pred)),
           "recall": recall, "confusion": cm}
    if ci:
        out["accuracy_ci68"] = bootstrap_ci(lambda c, axis=-1: np.mean(c, axis=axis), (labels == pred).astype(float),
                                            seed=seed, vectorized=True)
        out["balanced_accuracy_ci68"] = bootstrap_ci(_balanced_accuracy, labels, pred, seed=seed, vectorized=True)
    return out


def reliability(labels, proba, n_bins: int = 10):
    """Reliability diagram of the top-class probability: (bin centres, mean
    confidence, accuracy, count per bin) and the expected calibration error."""
    labels = np.asarray(labels, int)
    proba = np.asarray(proba, float)
    conf = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == labels).astype(float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(conf, edges) - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    mean_conf = np.bincount(idx, conf, minlength=n_bins) / np.maximum(count, 1)
    acc = np.bincount(idx, correct, minlength=n_bins) / np.maximum(count, 1)
    ece = float(np.sum(count * np.abs(acc - mean_conf)) / max(len(labels), 1))
    mask = count > 0
    return {"centre": 0.5 * (edges[1:] + edges[:-1]), "confidence": np.where(mask, mean_conf, np.nan),
            "accuracy": np.where(mask, acc, np.nan), "count": count, "ece": ece}


#: bins of true F(1–100 GeV) [cm⁻² s⁻¹] in which notebook 05 reports the classifiers' recall
RECALL_FLUX_EDGES = (1e-10, 2e-10, 4e-10, 1e-9, 1e-6)


def recall_vs_flux(labels, proba, flux, edges=RECALL_FLUX_EDGES) -> dict:
    """Recall of each source class per bin of true F(1–100 GeV): ``recall`` (n_bins, n_classes), the number of
    cut-outs behind each (``n``), and ``sources``, the mean of the AGN and pulsar recalls per bin (the balanced
    accuracy of the two source classes in that bin; NaN where either class has no cut-out there)."""
    labels = np.asarray(labels, int)
    pred = np.argmax(np.asarray(proba), axis=1)
    flux = np.asarray(flux, float)
    out = np.full((len(edges) - 1, N_CLASSES), np.nan)
    n = np.zeros((len(edges) - 1, N_CLASSES), int)
    for b, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        for c in range(N_CLASSES):
            m = (labels == c) & (flux >= lo) & (flux < hi)
            n[b, c] = int(m.sum())
            if n[b, c]:
                out[b, c] = float(np.mean(pred[m] == c))
    return {"edges": np.asarray(edges, float), "recall": out, "n": n, "sources": out[:, [AGN, PSR]].mean(axis=1)}
