"""Multi-input U-Net for LAT point-source segmentation (Bhattacharyya et al., Fermi-LAT catalog meeting 2022).

One input branch per resolution group of energy bins (coarse low-energy
maps, fine high-energy maps; :func:`skyml.fermi.simulate.network_inputs`),
each joining the encoder at the level of its own resolution; the output is a
per-pixel source probability at the finest resolution (64×64), trained on the
disk masks of :func:`skyml.fermi.simulate.disk_masks` with binary
cross-entropy plus a soft Dice term. Only ``keras.layers`` and ``keras.ops``
are used, so the model runs on the TensorFlow and JAX backends. Models are
saved with :func:`skyml.cta.models.save_model` (``.keras`` + JSON sidecar).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from .. import training


@keras.saving.register_keras_serializable(package="skyml_fermi")
def bce_dice_loss(y_true, y_pred):
    """Binary cross-entropy plus (1 - soft Dice) per image."""
    y_true = ops.cast(y_true, y_pred.dtype)
    eps = 1e-6
    p = ops.clip(y_pred, eps, 1 - eps)
    bce = -ops.mean(y_true * ops.log(p) + (1 - y_true) * ops.log(1 - p), axis=(1, 2, 3))
    inter = ops.sum(y_true * y_pred, axis=(1, 2, 3))
    dice = (2 * inter + 1.0) / (ops.sum(y_true, axis=(1, 2, 3)) + ops.sum(y_pred, axis=(1, 2, 3)) + 1.0)
    return bce + (1 - dice)


def _block(x, filters, name):
    x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"{name}_conv1")(x)
    return layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"{name}_conv2")(x)


def build_unet(input_shapes, filters: int = 8, learning_rate: float = 2e-3) -> keras.Model:
    """The multi-input U-Net.

    ``input_shapes``: ``(ny, nx, channels)`` per input, finest first; each
    coarser input must be the finest size divided by a power of two. The
    encoder halves the resolution per level (filters doubling) and
    concatenates each input at its own level; the decoder mirrors it with skip
    connections; the output has the finest input's size and one sigmoid channel.
    """
    shapes = [tuple(int(v) for v in s) for s in input_shapes]
    fine = shapes[0][0]
    levels = {}
    for i, s in enumerate(shapes):
        ratio = fine // s[0]
        if s[0] != s[1] or fine % s[0] or ratio & (ratio - 1):
            raise ValueError(f"input {i} of shape {s} is not the finest size {fine} / 2^n")
        levels.setdefault(int(np.log2(ratio)), []).append(i)
    depth = max(levels) + 1
    inputs = [keras.Input(shape=s, name=f"counts_{s[0]}px_{i}") for i, s in enumerate(shapes)]

    skips, x = [], None
    for level in range(depth + 1):
        parts = [x] if x is not None else []
        for i in levels.get(level, []):
            parts.append(layers.Conv2D(filters, 3, padding="same", activation="relu",
                                       name=f"branch{i}_conv")(inputs[i]))
        x = parts[0] if len(parts) == 1 else layers.Concatenate(name=f"join{level}")(parts)
        x = _block(x, filters * 2**level, f"enc{level}")
        if level < depth:
            skips.append(x)
            x = layers.MaxPooling2D(2, name=f"pool{level}")(x)
    for level in reversed(range(depth)):
        x = layers.UpSampling2D(2, name=f"up{level}")(x)
        x = layers.Concatenate(name=f"skip{level}")([x, skips[level]])
        x = _block(x, filters * 2**level, f"dec{level}")
    out = layers.Conv2D(1, 1, activation="sigmoid", name="probability")(x)
    model = keras.Model(inputs, out, name="fermi_multi_input_unet")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=bce_dice_loss)
    return model


def train(model, x, y, x_val, y_val, *, epochs, batch_size=16, patience=3, seed=0, verbose=2):
    """Fit with early stopping on ``val_loss`` (best weights restored); returns the history."""
    keras.utils.set_random_seed(int(seed))
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=int(patience), mode="min",
                                         restore_best_weights=True)
    history = model.fit(list(x), y, validation_data=(list(x_val), y_val), epochs=int(epochs),
                        batch_size=int(batch_size), shuffle=True, callbacks=[stop, *training.fit_callbacks(stop)], verbose=verbose)
    return {k: [float(v) for v in vals] for k, vals in history.history.items()}


def predict(model, x, batch_size: int = 64) -> np.ndarray:
    """Probability maps (n, ny, nx) of network inputs ``x``."""
    return np.asarray(model.predict(list(x), batch_size=batch_size, verbose=0))[..., 0]
