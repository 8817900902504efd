"""The CNN of notebook 07 (Keras 3, ``keras.layers`` only): counts per flux
bin from a sub-image.

Input: the sub-image in units of the noise rms, stretched with asinh
(:func:`as_input`: asinh(image / ``scale_jy``); the same fixed scale for every
image, so absolute intensities are kept). Two branches:

* a **pixel branch**: 1×1 convolutions and global average pooling — learned
  one-point statistics of the intensities, the information a P(D) analysis
  uses; it contains the mean brightness, the auxiliary input the seed proposes;
* a **spatial branch**: 3×3 convolutions with max pooling and global average
  pooling — sources, blends and beam shapes.

* a **context branch** (optional, ``n_hist`` > 0): the pixel-intensity
  histogram of the context block the sub-image lies in (:func:`pixel_histogram`
  of a ``context_npix``² block, log fractions, normalised with fixed training
  means), dense layers. This is the P(D) information at the scale where it
  exists: on restored images the dirty beam integrates to zero, so the faint
  sources leave no mean brightness and a 64² sub-image holds too few beams for
  their confusion signal (notebook 07's diagnostics).

* a **conditioning input** (optional, ``n_cond`` > 0): scalars a user knows
  of the image, for the restored-image network the log of the restoring
  beam's area in pixels (from BMAJ/BMIN) and of the block's robust noise,
  each relative to the training instrument's (:func:`skyml.radio.pipeline.conditioning`);
  they enter the context branch beside the histogram and the dense layer
  beside the image features, so that one network serves a range of beams
  and noise levels (trained with domain randomisation, notebook 07).

Concatenated, a dense layer, and one output per flux bin. Target
(:class:`TargetScaler`): sqrt(N) per bin, standardised with the training mean
and standard deviation; MSE loss. sqrt stabilises the Poisson variance, so
faint and bright bins weigh alike; the prediction is turned back into counts
as (√N)² + 1/4, which corrects the bias E[√N]² = E[N] − Var(√N) ≈ E[N] − 1/4.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from .. import training


def as_input(images: np.ndarray, scale_jy: float) -> np.ndarray:
    """(n, ny, nx) images [Jy/beam or Jy/px] -> (n, ny, nx, 1) float32 network input."""
    return np.arcsinh(np.asarray(images, np.float64) / float(scale_jy)).astype(np.float32)[..., None]


#: Histogram bins of :func:`pixel_histogram`, in units of the input scale
#: (the noise rms): 0.5σ wide from −6σ to 20σ, plus under- and overflow.
HIST_EDGES_SIGMA = np.arange(-6.0, 20.01, 0.5)
N_HIST = len(HIST_EDGES_SIGMA) + 1
HIST_FLOOR = 1e-5
#: Default standard deviation of the Gaussian noise added to the normalised
#: context histogram during training (regularisation; off at prediction).
HIST_NOISE = 1.0


def pixel_histogram(image: np.ndarray, scale_jy: float) -> np.ndarray:
    """(N_HIST,) float32: log10(fraction + 1e-5) of the finite pixels of
    ``image`` in the bins :data:`HIST_EDGES_SIGMA` × ``scale_jy`` (with under-
    and overflow). Raises ValueError if no pixel is finite."""
    v = np.asarray(image, np.float64).ravel()
    v = v[np.isfinite(v)] / float(scale_jy)
    if v.size == 0:
        raise ValueError("pixel histogram of an image without finite pixels")
    e = HIST_EDGES_SIGMA
    h = np.concatenate([[np.sum(v < e[0])], np.histogram(v, e)[0], [np.sum(v >= e[-1])]])
    return np.log10(h / v.size + HIST_FLOOR).astype(np.float32)


class TargetScaler:
    """sqrt(counts) standardised per bin (module docstring)."""

    def __init__(self, mean, std):
        self.mean = np.asarray(mean, np.float64)
        self.std = np.asarray(std, np.float64)

    @classmethod
    def fit(cls, counts: np.ndarray) -> "TargetScaler":
        r = np.sqrt(np.asarray(counts, np.float64))
        return cls(r.mean(0), np.maximum(r.std(0), 1e-6))

    def transform(self, counts: np.ndarray) -> np.ndarray:
        return ((np.sqrt(np.asarray(counts, np.float64)) - self.mean) / self.std).astype(np.float32)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        r = np.clip(np.asarray(y, np.float64) * self.std + self.mean, 0.0, None)
        return r**2 + 0.25

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}


def build_cnn(n_bins: int, filters: int = 16, dense: int = 128, learning_rate: float = 1e-3,
              name: str = "radio_counts_cnn", hist_mean=None, hist_std=None,
              hist_noise: float = HIST_NOISE, n_cond: int = 0, flip_seed: int | None = None) -> keras.Model:
    """The CNN; with ``hist_mean``/``hist_std`` (per-bin training mean and
    standard deviation of :func:`pixel_histogram`) a second input, the
    context histogram, and its branch, regularised in training by Gaussian
    noise of standard deviation ``hist_noise`` on the normalised histogram;
    with ``n_cond`` > 0 (and a histogram) a third input of ``n_cond``
    conditioning scalars (module text). With ``flip_seed`` the image is flipped
    at random, left–right and up–down, in training (``keras.layers.RandomFlip``,
    seeded; off at prediction): the counts of a sub-image do not change under a
    flip, so the flips multiply the training images by four without new
    simulations and teach the spatial branch that a source's side lobes may
    point either way."""
    if n_cond and hist_mean is None:
        raise ValueError("conditioning scalars need the context-histogram input (give hist_mean and hist_std)")
    inp = keras.Input(shape=(None, None, 1), name="image_asinh")
    p = layers.Conv2D(2 * filters, 1, activation="relu", name="pix_1x1a")(inp)
    p = layers.Conv2D(2 * filters, 1, activation="relu", name="pix_1x1b")(p)
    p = layers.GlobalAveragePooling2D(name="pix_pool")(p)
    s = inp if flip_seed is None else layers.RandomFlip("horizontal_and_vertical", seed=int(flip_seed),
                                                         name="train_flip")(inp)
    for i, f in enumerate((filters, 2 * filters, 4 * filters)):
        s = layers.Conv2D(f, 3, padding="same", activation="relu", name=f"sp_conv{i}a")(s)
        s = layers.Conv2D(f, 3, padding="same", activation="relu", name=f"sp_conv{i}b")(s)
        if i < 2:
            s = layers.MaxPooling2D(2, name=f"sp_pool{i}")(s)
    s = layers.GlobalAveragePooling2D(name="sp_gap")(s)
    feats, inputs = [p, s], inp
    if hist_mean is not None:
        mean = np.asarray(hist_mean, np.float32)
        var = np.maximum(np.asarray(hist_std, np.float32), 1e-3) ** 2
        hin = keras.Input(shape=(len(mean),), name="context_histogram")
        c = layers.Normalization(mean=mean, variance=var, name="hist_norm")(hin)
        # training-time noise on the normalised histogram: with one histogram per
        # training field, the branch would otherwise memorise the fields
        c = layers.GaussianNoise(float(hist_noise), name="hist_noise")(c)
        inputs = [inp, hin]
        if n_cond:
            cin = keras.Input(shape=(int(n_cond),), name="conditioning")
            c = layers.Concatenate(name="hist_and_conditioning")([c, cin])
            feats, inputs = feats + [layers.Dense(16, activation="relu", name="cond_dense")(cin)], inputs + [cin]
        c = layers.Dense(64, activation="relu", name="hist_dense1")(c)
        c = layers.Dense(32, activation="relu", name="hist_dense2")(c)
        c = layers.Dropout(0.3, name="hist_dropout")(c)
        feats = feats + [c]
    h = layers.Concatenate(name="features")(feats)
    h = layers.Dense(dense, activation="relu", name="dense")(h)
    out = layers.Dense(int(n_bins), name="counts_scaled")(h)
    model = keras.Model(inputs, out, name=name)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="mse")
    return model


def train(model, x, y, x_val, y_val, *, epochs, batch_size=32, patience=4, seed=0, verbose=2) -> dict:
    """Fit with early stopping on ``val_loss`` (best weights restored)."""
    keras.utils.set_random_seed(int(seed))
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=int(patience), restore_best_weights=True)
    history = model.fit(x, y, validation_data=(x_val, y_val), epochs=int(epochs), batch_size=int(batch_size),
                        shuffle=True, callbacks=[stop, *training.fit_callbacks(stop)], verbose=verbose)
    return {k: [float(v) for v in vals] for k, vals in history.history.items()}


def predict(model, x, batch_size: int = 128) -> np.ndarray:
    """Scaled outputs (n, n_bins), by direct calls in batches; ``x`` is the
    image array or a list (images, context histograms)."""
    xs = [np.asarray(a, dtype=np.float32) for a in (x if isinstance(x, (list, tuple)) else [x])]
    return np.concatenate([np.asarray(model([a[i:i + batch_size] for a in xs] if len(xs) > 1 else
                                            xs[0][i:i + batch_size], training=False))
                           for i in range(0, len(xs[0]), batch_size)])
