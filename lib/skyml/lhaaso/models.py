"""Deconvolution networks of notebook 08 (Keras 3, ``keras.layers`` and
``keras.ops`` only; every model is fully convolutional, so it applies to maps
of any size at 0.1°/px).

* :func:`build_cnn` — the SRCNN-like CNN (the seed's best): 9×9, 5×5 and
  5×5 convolutions, mean-squared error on the normalised intrinsic map. With
  ``channels=2`` it is the PSF-conditioned CNN: the second input channel is
  the constant PSF width sigma1 / 0.265°.
* :func:`build_vae` — a small convolutional VAE conditioned on the observed
  map: the encoder maps counts to a 16×16×``latent`` Gaussian latent (KL term
  added with ``add_loss``, weight ``beta``), the decoder maps a latent sample
  to the intrinsic map; prediction uses the latent mean.
* :func:`build_unet` — a small U-Net (two 3×3 convolutions per level,
  max-pooling down, bilinear upsampling and skip connections up; widths
  ``filters`` from the finest level to the bottleneck). Notebook 08 trains it
  on a randomised sky and instrument for LHAI's protocol (``unet_lhai``),
  told each map's two-Gaussian PSF in :data:`PSF_CONDITIONS` constant input
  channels (:func:`psf_conditions`), or told that the PSF is unknown.
* :func:`train_gan` — a small conditional GAN: the generator is the CNN, the
  discriminator sees (observed, intrinsic) pairs; training alternates
  ``train_on_batch`` of the discriminator and of the generator through a
  frozen copy of the discriminator (weights copied every step), with the loss
  MSE + ``adv_weight`` × adversarial BCE — backend-agnostic, no GradientTape.

Every network ends with :class:`FluxConserving` (``flux_conserving=True``, the
default): the raw output is made non-negative (ReLU) and rescaled so that its
sum equals the sum of the input counts map — deconvolution moves flux, it does
not create or remove it. Without it, the MSE-trained networks shrink towards
the mean and lose ≈10 % of the flux. The input is assumed free of a flat
background (the main study has none); subtract one before applying a model.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from .. import training
from ..ctao.models import EpochCrops, epoch_setter

PSF_REF_DEG = 0.265
TAIL_RATIO_REF = 2.0   # sigma2 / sigma1 of the nominal KM2A PSF (skyml.lhaaso.psf.TAIL_RATIO)
TAIL_WEIGHT_REF = 0.1  # the scale of the tail weight in the condition channels
#: condition channels of the PSF-told U-Net: known (1 or 0), then, times known, sigma1 / 0.265°,
#: (sigma2 / sigma1) / 2 and the tail weight / 0.1
PSF_CONDITIONS = 4


def psf_conditions(n: int, sigma1_deg=None, tail_ratio=None, tail_weight=None, known=None) -> np.ndarray:
    """(n, :data:`PSF_CONDITIONS`) condition values of ``n`` maps observed
    through a two-Gaussian PSF (core width ``sigma1_deg``, tail width
    ``tail_ratio`` × the core, tail weight ``tail_weight``; scalars or (n,)
    arrays). ``sigma1_deg=None`` means unknown (all zeros); ``known``, a
    boolean (n,) array, marks the maps told their PSF (the others get zeros)."""
    out = np.zeros((int(n), PSF_CONDITIONS), np.float32)
    if sigma1_deg is None:
        return out
    if tail_ratio is None or tail_weight is None:
        raise ValueError("a known PSF needs sigma1_deg, tail_ratio and tail_weight")
    values = [np.broadcast_to(np.asarray(v, np.float64), (int(n),)) for v in (sigma1_deg, tail_ratio, tail_weight)]
    if np.any(values[0] <= 0) or np.any(values[1] < 1) or np.any((values[2] < 0) | (values[2] > 1)):
        raise ValueError("a two-Gaussian PSF needs sigma1 > 0, tail ratio >= 1 and a tail weight in [0, 1]")
    out[:, 0] = 1.0
    out[:, 1] = values[0] / PSF_REF_DEG
    out[:, 2] = values[1] / TAIL_RATIO_REF
    out[:, 3] = values[2] / TAIL_WEIGHT_REF
    if known is not None:
        out *= np.asarray(known, bool)[:, None]
    return out


def as_input(maps: np.ndarray, sigma1_deg=None, conditions=None) -> np.ndarray:
    """(n, ny, nx) normalised maps -> (n, ny, nx, 1), or 2 channels with the
    PSF-width channel sigma1 / 0.265° when ``sigma1_deg`` (scalar or (n,)) is
    given, or 1 + k channels when ``conditions`` ((n, k) or (k,), e.g.
    :func:`psf_conditions`) is given, each condition a constant channel."""
    x = np.asarray(maps, dtype=np.float32)[..., None]
    if conditions is not None:
        if sigma1_deg is not None:
            raise ValueError("pass sigma1_deg or conditions, not both")
        c = np.asarray(conditions, np.float32)
        c = np.broadcast_to(c if c.ndim == 2 else c[None], (len(x), c.shape[-1]))
        return np.concatenate([x, np.broadcast_to(c[:, None, None, :], (*x.shape[:3], c.shape[-1]))], axis=-1)
    if sigma1_deg is None:
        return x
    s = np.broadcast_to(np.asarray(sigma1_deg, dtype=np.float32) / PSF_REF_DEG, (len(x),))
    return np.concatenate([x, np.broadcast_to(s[:, None, None, None], x.shape)], axis=-1).astype(np.float32)


@keras.saving.register_keras_serializable(package="skyml_lhaaso")
class FluxConserving(layers.Layer):
    """``relu(raw) × Σ counts / Σ relu(raw)`` per map: the output keeps the
    total of the input counts (channel 0 of ``inputs``; the other channels are
    conditions). Called on ``[inputs, raw]``."""

    def call(self, tensors):
        inputs, raw = tensors
        out = ops.relu(raw)
        total_in = ops.sum(inputs[..., :1], axis=(1, 2, 3), keepdims=True)
        total_out = ops.sum(out, axis=(1, 2, 3), keepdims=True)
        return out * total_in / (total_out + 1e-6)


def _cnn_layers(x, filters, prefix, flux_conserving=True):
    h = layers.Conv2D(filters[0], 9, padding="same", activation="relu", name=f"{prefix}_conv9")(x)
    h = layers.Conv2D(filters[1], 5, padding="same", activation="relu", name=f"{prefix}_conv5a")(h)
    raw = layers.Conv2D(1, 5, padding="same", name=f"{prefix}_out")(h)
    return FluxConserving(name=f"{prefix}_flux")([x, raw]) if flux_conserving else raw


def build_cnn(channels: int = 1, filters=(32, 16), learning_rate: float = 1e-3, name: str = "lhaaso_cnn",
              flux_conserving: bool = True):
    inp = keras.Input(shape=(None, None, channels), name="counts_norm")
    model = keras.Model(inp, _cnn_layers(inp, filters, "srcnn", flux_conserving), name=name)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="mse")
    return model


@keras.saving.register_keras_serializable(package="skyml_lhaaso")
def minmax_mse(y_true, y_pred):
    """Per-map mean squared error after scaling each map, target and output on
    their own, to [0, 1] (min-max): the squared error of LHAI's protocol
    (:func:`skyml.lhaaso.evaluation.lhai_per_map`), as a training loss."""
    def scaled(a):
        lo = ops.min(a, axis=(1, 2, 3), keepdims=True)
        hi = ops.max(a, axis=(1, 2, 3), keepdims=True)
        return (a - lo) / (hi - lo + 1e-6)

    return ops.mean(ops.square(scaled(y_pred) - scaled(y_true)), axis=(1, 2, 3))


@keras.saving.register_keras_serializable(package="skyml_lhaaso")
def minmax_log_mse(y_true, y_pred):
    """log10 of :func:`minmax_mse` per map: minus a tenth of the map's PSNR
    on LHAI's protocol, so that every map counts by its PSNR (a map of point
    sources, whose squared error is small, as much as a picture's)."""
    return ops.log10(minmax_mse(y_true, y_pred) + 1e-10)


LOSSES = {"mse": "mse", "minmax_mse": minmax_mse, "minmax_log_mse": minmax_log_mse}


def build_unet(channels: int = 1, filters=(16, 32, 64), learning_rate: float = 1e-3, name: str = "lhaaso_unet",
               flux_conserving: bool = True, loss: str = "mse"):
    """U-Net of ``len(filters)`` levels; maps of any size divisible by
    2^(levels − 1) (64 × 64 with three levels). ``loss``: ``"mse"`` or
    ``"minmax_mse"`` (:func:`minmax_mse`, LHAI's protocol)."""
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose from {sorted(LOSSES)}")
    filters = [int(f) for f in filters]
    if len(filters) < 2:
        raise ValueError("a U-Net needs at least two levels of filters")

    def block(h, f, prefix):
        h = layers.Conv2D(f, 3, padding="same", activation="relu", name=f"{prefix}_conv_a")(h)
        return layers.Conv2D(f, 3, padding="same", activation="relu", name=f"{prefix}_conv_b")(h)

    inp = keras.Input(shape=(None, None, channels), name="counts_norm")
    skips, h = [], inp
    for i, f in enumerate(filters[:-1]):
        h = block(h, f, f"down{i}")
        skips.append(h)
        h = layers.MaxPooling2D(2, name=f"pool{i}")(h)
    h = block(h, filters[-1], "bottleneck")
    for i in reversed(range(len(filters) - 1)):
        h = layers.UpSampling2D(2, interpolation="bilinear", name=f"upsample{i}")(h)
        h = layers.Concatenate(name=f"skip{i}")([h, skips[i]])
        h = block(h, filters[i], f"up{i}")
    raw = layers.Conv2D(1, 1, activation="softplus", name="unet_out")(h)  # positive: never a dead (all-zero) output
    out = FluxConserving(name="unet_flux")([inp, raw]) if flux_conserving else raw
    model = keras.Model(inp, out, name=name)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=LOSSES[loss])
    return model


@keras.saving.register_keras_serializable(package="skyml_lhaaso")
class GaussianSampling(layers.Layer):
    """z = mean + exp(logvar / 2) ε while training (mean otherwise); adds
    ``beta`` × the mean KL divergence to N(0, 1) as a loss."""

    def __init__(self, beta: float = 1e-3, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.beta = float(beta)
        self.seed = int(seed)
        self.seed_generator = keras.random.SeedGenerator(self.seed)

    def call(self, inputs, training=None):
        mean, logvar = inputs
        kl = -0.5 * ops.mean(1 + logvar - ops.square(mean) - ops.exp(logvar))
        self.add_loss(self.beta * kl)
        if not training:
            return mean
        eps = keras.random.normal(ops.shape(mean), seed=self.seed_generator)
        return mean + ops.exp(0.5 * logvar) * eps

    def get_config(self):
        return {**super().get_config(), "beta": self.beta, "seed": self.seed}


def build_vae(latent: int = 8, filters: int = 32, beta: float = 1e-3, learning_rate: float = 1e-3, seed: int = 0,
              flux_conserving: bool = True):
    inp = keras.Input(shape=(None, None, 1), name="counts_norm")
    h = layers.Conv2D(filters, 5, padding="same", activation="relu", name="enc_conv0")(inp)
    h = layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu", name="enc_down1")(h)
    h = layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu", name="enc_down2")(h)
    mean = layers.Conv2D(latent, 1, name="z_mean")(h)
    logvar = layers.Conv2D(latent, 1, name="z_logvar")(h)
    z = GaussianSampling(beta, seed, name="sampling")([mean, logvar])
    h = layers.Conv2DTranspose(filters, 3, strides=2, padding="same", activation="relu", name="dec_up1")(z)
    h = layers.Conv2DTranspose(filters, 3, strides=2, padding="same", activation="relu", name="dec_up2")(h)
    h = layers.Concatenate(name="dec_skip")([h, inp])
    h = layers.Conv2D(filters, 5, padding="same", activation="relu", name="dec_conv")(h)
    out = layers.Conv2D(1, 5, padding="same", name="dec_out")(h)
    if flux_conserving:
        out = FluxConserving(name="dec_flux")([inp, out])
    model = keras.Model(inp, out, name="lhaaso_vae")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="mse")
    return model


def build_discriminator(filters: int = 16, name: str = "discriminator"):
    inp = keras.Input(shape=(None, None, 2), name="observed_and_map")
    h = inp
    for i, f in enumerate((filters, 2 * filters, 4 * filters)):
        h = layers.Conv2D(f, 4, strides=2, padding="same", name=f"{name}_conv{i}")(h)
        h = layers.LeakyReLU(0.2, name=f"{name}_lrelu{i}")(h)
    h = layers.GlobalAveragePooling2D(name=f"{name}_pool")(h)
    out = layers.Dense(1, activation="sigmoid", name=f"{name}_prob")(h)
    return keras.Model(inp, out, name=name)


def dihedral_pairs(x: np.ndarray, y: np.ndarray, seed) -> tuple[np.ndarray, np.ndarray]:
    """Each (input, target) pair of maps (n, ny, nx, c) turned by its own
    random element of the square's symmetry group (:func:`skyml.training.dihedral`
    of the sky axes, 8 elements), drawn from ``seed``; input
    and target alike, so that a pair stays a pair. For round PSFs (the
    condition channels are constant planes) each turned map is as valid a
    training map as the original. Returns new arrays."""
    x, y = np.asarray(x), np.asarray(y)
    if x.shape[1] != x.shape[2]:
        raise ValueError(f"dihedral turns need square maps, got {x.shape[1]} x {x.shape[2]}")
    ks = np.random.default_rng(np.random.SeedSequence([*(int(s) for s in np.atleast_1d(seed)), 83])).integers(
        0, 8, size=len(x))
    xo, yo = np.empty_like(x), np.empty_like(y)
    for k in range(8):
        idx = np.flatnonzero(ks == k)
        for src, dst in ((x, xo), (y, yo)):  # channels last: the sky axes moved last for the turn
            dst[idx] = np.moveaxis(training.dihedral(np.moveaxis(src[idx], -1, 1), k), 1, -1)
    return xo, yo


def train(model, x, y, x_val, y_val, *, epochs, batch_size=32, patience=3, seed=0, verbose=2,
          reduce_lr_patience: int | None = None, dihedral: bool = False) -> dict:
    """Fit with early stopping on ``val_loss`` (best weights restored); with
    ``reduce_lr_patience``, the learning rate is halved after that many epochs
    without a ``val_loss`` 1e-4 below the best (:func:`skyml.training.halve_on_plateau`).
    ``dihedral``: every epoch turns each training pair anew (:func:`dihedral_pairs`,
    drawn from ``seed`` and the epoch, so that a resumed training draws what an
    uninterrupted one does; :class:`skyml.ctao.models.EpochCrops`); the
    validation maps stay as they are."""
    keras.utils.set_random_seed(int(seed))
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=int(patience), restore_best_weights=True)
    own = [stop]
    if reduce_lr_patience is not None:
        own.append(training.halve_on_plateau(reduce_lr_patience))
    if dihedral:
        data = EpochCrops(lambda epoch: dihedral_pairs(x, y, (seed, epoch)), batch_size, seed)
        history = model.fit(data, validation_data=(x_val, y_val), epochs=int(epochs),
                            callbacks=[epoch_setter(data), *own, *training.fit_callbacks(*own)], verbose=verbose)
    else:
        history = model.fit(x, y, validation_data=(x_val, y_val), epochs=int(epochs), batch_size=int(batch_size),
                            shuffle=True, callbacks=[*own, *training.fit_callbacks(*own)], verbose=verbose)
    return {k: [float(v) for v in vals] for k, vals in history.history.items()}


def train_gan(x, y, x_val, y_val, *, steps, batch_size=32, adv_weight=1e-3, filters=(32, 16),
              learning_rate=1e-3, seed=0):
    """Conditional GAN; returns (generator, history with per-step losses and
    the validation MSE every 50 steps)."""
    keras.utils.set_random_seed(int(seed))
    gen = build_cnn(1, filters, learning_rate, name="lhaaso_gan_generator")
    disc = build_discriminator(name="discriminator")
    disc.compile(optimizer=keras.optimizers.Adam(learning_rate / 2, beta_1=0.5), loss="binary_crossentropy")
    frozen = build_discriminator(name="frozen_discriminator")
    frozen.trainable = False
    inp = keras.Input(shape=(None, None, 1), name="counts_norm")
    fake = gen(inp)
    judged = frozen(layers.Concatenate(name="pair")([inp, fake]))
    combined = keras.Model(inp, [fake, judged], name="gan_combined")
    combined.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=["mse", "binary_crossentropy"],
                     loss_weights=[1.0, float(adv_weight)])
    rng = np.random.default_rng(int(seed))
    ones, zeros = np.ones((batch_size, 1), np.float32), np.zeros((batch_size, 1), np.float32)
    hist = {"d_loss": [], "g_loss": [], "val_mse": [], "val_step": []}
    best, best_weights = np.inf, gen.get_weights()
    for step in range(int(steps)):
        idx = rng.choice(len(x), batch_size, replace=False)
        xb, yb = x[idx], y[idx]
        fb = np.asarray(gen.predict_on_batch(xb))
        d_in = np.concatenate([np.concatenate([xb, yb], -1), np.concatenate([xb, fb], -1)])
        d_loss = disc.train_on_batch(d_in, np.concatenate([ones, zeros]))
        frozen.set_weights(disc.get_weights())
        g_loss = combined.train_on_batch(xb, [yb, ones])
        hist["d_loss"].append(float(np.ravel(d_loss)[0]))
        hist["g_loss"].append(float(np.ravel(g_loss)[0]))
        if (step + 1) % 50 == 0 or step + 1 == steps:
            mse = float(np.mean((predict(gen, x_val)[..., None] - y_val) ** 2))
            hist["val_mse"].append(mse)
            hist["val_step"].append(step + 1)
            if mse < best:
                best, best_weights = mse, gen.get_weights()
    gen.set_weights(best_weights)
    return gen, hist


def predict(model, x, batch_size: int = 64) -> np.ndarray:
    """Model output (n, ny, nx), by direct calls in batches (no ``predict``
    function is traced, so maps of changing sizes cost no retracing)."""
    x = np.asarray(x, dtype=np.float32)
    parts = [np.asarray(model(x[i:i + batch_size], training=False)) for i in range(0, len(x), batch_size)]
    return np.concatenate(parts)[..., 0]
