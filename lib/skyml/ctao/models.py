"""Fully convolutional networks of notebook 06 (plain Keras 3, ``keras.ops`` only).

- :func:`build_unet`: the AutoSourceID-Light U-Net (Stoppa et al. 2022,
  arXiv 2202.00489): an encoder–decoder with skip connections, ``depth``
  poolings, filters doubling per level from ``filters``; one sigmoid output
  trained on disk masks with binary cross-entropy (source pixels weighted
  ×10) plus soft Dice (:func:`weighted_bce_dice_loss`); convolutions are
  followed by batch normalisation, as in ASID-Light. The input size is free
  (multiples of 2^depth), so a network trained on 128×128 crops runs on
  512×512 patches.
- :func:`build_cedirnet`: the same backbone with three outputs per pixel
  after CeDiRNet (Tabernik, Muhovič & Skočaj 2024, arXiv 2408.14457;
  repository vicoslab/CeDiRNet): the unit vector (sin, cos) towards the
  nearest source centre (tanh) and a closeness exp(-d/3 px) (sigmoid); loss
  :func:`cedirnet_loss`. The vote field becomes a centre heat map with a fixed
  kernel bank (:func:`skyml.ctao.detect.centre_heatmap`).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from .. import training



@keras.saving.register_keras_serializable(package="skyml_ctao")
def weighted_bce_dice_loss(y_true, y_pred):
    """Binary cross-entropy with source pixels weighted ×10 (they are ~1 % of a
    survey patch) plus (1 - soft Dice) per image."""
    y_true = ops.cast(y_true, y_pred.dtype)
    eps = 1e-6
    p = ops.clip(y_pred, eps, 1 - eps)
    bce = -ops.mean(10.0 * y_true * ops.log(p) + (1 - y_true) * ops.log(1 - p), axis=(1, 2, 3))
    inter = ops.sum(y_true * y_pred, axis=(1, 2, 3))
    dice = (2 * inter + 1.0) / (ops.sum(y_true, axis=(1, 2, 3)) + ops.sum(y_pred, axis=(1, 2, 3)) + 1.0)
    return bce + (1 - dice)


#: focusing exponent of :func:`weighted_focal_dice_loss`
FOCAL_GAMMA = 2.0


@keras.saving.register_keras_serializable(package="skyml_ctao")
def weighted_focal_dice_loss(y_true, y_pred):
    """The focal loss (Lin et al. 2017, arXiv 1708.02002) with exponent
    :data:`FOCAL_GAMMA` and source pixels weighted ×10, plus (1 - soft Dice)
    per image: pixels already classified with confidence (the empty sky, most
    of a patch) weigh little, the faint sources and the noise peaks that look
    like them weigh more."""
    y_true = ops.cast(y_true, y_pred.dtype)
    eps = 1e-6
    p = ops.clip(y_pred, eps, 1 - eps)
    focal = -ops.mean(10.0 * y_true * ops.power(1 - p, FOCAL_GAMMA) * ops.log(p)
                      + (1 - y_true) * ops.power(p, FOCAL_GAMMA) * ops.log(1 - p), axis=(1, 2, 3))
    inter = ops.sum(y_true * y_pred, axis=(1, 2, 3))
    dice = (2 * inter + 1.0) / (ops.sum(y_true, axis=(1, 2, 3)) + ops.sum(y_pred, axis=(1, 2, 3)) + 1.0)
    return focal + (1 - dice)


#: losses of :func:`build_unet` by name
UNET_LOSSES = {"bce_dice": weighted_bce_dice_loss, "focal_dice": weighted_focal_dice_loss}


@keras.saving.register_keras_serializable(package="skyml_ctao")
def cedirnet_loss(y_true, y_pred):
    """Closeness-weighted L1 on (sin, cos) plus binary cross-entropy on the closeness."""
    y_true = ops.cast(y_true, y_pred.dtype)
    close = y_true[..., 2:3]
    weight = close + 0.05
    direction = ops.sum(weight * ops.abs(y_true[..., :2] - y_pred[..., :2]), axis=(1, 2, 3)) / \
        ops.sum(weight, axis=(1, 2, 3))
    eps = 1e-6
    p = ops.clip(y_pred[..., 2:3], eps, 1 - eps)
    bce = -ops.mean(close * ops.log(p) + (1 - close) * ops.log(1 - p), axis=(1, 2, 3))
    return direction + 4.0 * bce


def _block(x, filters, name):
    for i in (1, 2):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv{i}")(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn{i}")(x)
        x = layers.Activation("relu", name=f"{name}_relu{i}")(x)
    return x


def _backbone(channels: int, filters: int, depth: int, name: str):
    inp = keras.Input(shape=(None, None, int(channels)), name="image")
    x, skips = inp, []
    for level in range(depth):
        x = _block(x, filters * 2**level, f"enc{level}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"pool{level}")(x)
    x = _block(x, filters * 2**depth, "bottom")
    for level in reversed(range(depth)):
        x = layers.UpSampling2D(2, name=f"up{level}")(x)
        x = layers.Concatenate(name=f"skip{level}")([x, skips[level]])
        x = _block(x, filters * 2**level, f"dec{level}")
    return inp, x


def build_unet(channels: int = 3, filters: int = 8, depth: int = 3, learning_rate: float = 2e-3,
               name: str = "asid_unet", loss: str = "bce_dice") -> keras.Model:
    """U-Net with one sigmoid output (source-mask probability); ``loss`` a name in :data:`UNET_LOSSES`."""
    if loss not in UNET_LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose from {tuple(UNET_LOSSES)}")
    inp, x = _backbone(channels, filters, depth, name)
    out = layers.Conv2D(1, 1, activation="sigmoid", name="probability")(x)
    model = keras.Model(inp, out, name=name)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=UNET_LOSSES[loss])
    return model


def build_cedirnet(channels: int = 3, filters: int = 8, depth: int = 3, learning_rate: float = 2e-3,
                   name: str = "cedirnet") -> keras.Model:
    """Backbone with the dense centre-direction head: (sin, cos, closeness) per pixel."""
    inp, x = _backbone(channels, filters, depth, name)
    direction = layers.Conv2D(2, 1, activation="tanh", name="direction")(x)
    closeness = layers.Conv2D(1, 1, activation="sigmoid", name="closeness")(x)
    out = layers.Concatenate(name="vote_field")([direction, closeness])
    model = keras.Model(inp, out, name=name)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=cedirnet_loss)
    return model


class EpochCrops(keras.utils.PyDataset):
    """Training batches drawn anew for every epoch: ``draw(epoch)`` returns
    the epoch's (inputs, targets), which are shuffled with (``seed``,
    epoch) and cut into batches of ``batch_size``. The epoch is set by
    :meth:`set_epoch`, which :func:`train` calls at the start of each epoch
    with Keras' epoch number, so a training resumed at epoch k draws the
    crops of epoch k, as an uninterrupted one does."""

    def __init__(self, draw, batch_size: int, seed: int = 0):
        super().__init__(workers=1, use_multiprocessing=False)
        self.draw, self.batch_size, self.seed = draw, int(batch_size), int(seed)
        self.epoch = None
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        if epoch == self.epoch:
            return
        x, y = self.draw(int(epoch))
        order = np.random.default_rng([self.seed, int(epoch), 5]).permutation(len(x))
        self.x, self.y, self.epoch = x[order], y[order], int(epoch)

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch_size)

    def __getitem__(self, i):
        sl = slice(i * self.batch_size, (i + 1) * self.batch_size)
        return self.x[sl], self.y[sl]


def epoch_setter(data: EpochCrops):
    """The callback that sets ``data``'s epoch at the start of each epoch of a ``fit``."""
    class SetEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            data.set_epoch(epoch)

    return SetEpoch()


def train(model, x, y, x_val, y_val, *, epochs, batch_size=16, patience=3, seed=0, verbose=2,
          reduce_lr_patience=None):
    """Fit with early stopping on ``val_loss`` (best weights restored); returns
    the history. ``x`` is an array of inputs with targets ``y``, or an
    :class:`EpochCrops` (``y`` None; its own batch size). With
    ``reduce_lr_patience``, the learning rate is halved after that many epochs
    without a lower ``val_loss`` (:func:`skyml.training.halve_on_plateau`)."""
    keras.utils.set_random_seed(int(seed))
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=int(patience), mode="min",
                                         restore_best_weights=True)
    own = [stop]
    if reduce_lr_patience is not None:
        own.append(training.halve_on_plateau(reduce_lr_patience))
    if isinstance(x, EpochCrops):
        if y is not None:
            raise ValueError("give the targets through the EpochCrops, not as y")
        history = model.fit(x, validation_data=(x_val, y_val), epochs=int(epochs),
                            callbacks=[epoch_setter(x), *own, *training.fit_callbacks(*own)], verbose=verbose)
    else:
        history = model.fit(x, y, validation_data=(x_val, y_val), epochs=int(epochs), batch_size=int(batch_size),
                            shuffle=True, callbacks=[*own, *training.fit_callbacks(*own)], verbose=verbose)
    return {k: [float(v) for v in vals] for k, vals in history.history.items()}


def pad_to_multiple(x: np.ndarray, multiple: int):
    """Zero-pad (n, ny, nx, c) at the high ends to multiples of ``multiple``; returns (padded, (ny, nx))."""
    ny, nx = x.shape[1:3]
    py, px = (-ny) % multiple, (-nx) % multiple
    if py or px:
        x = np.pad(x, ((0, 0), (0, py), (0, px), (0, 0)))
    return x, (ny, nx)


#: Images of more pixels than this go through :func:`predict` in tiles.
TILE_ABOVE_PIXELS = 1024 * 1024
#: Inner side of those tiles (px; a multiple of every 2**depth used here).
TILE_PX = 512


def receptive_radius(depth: int) -> int:
    """A halo (px, a multiple of ``2**depth``) that covers the receptive field
    of the U-Net of :func:`_backbone`: two 3×3 convolutions per block at
    every scale 2**l of the encoder and decoder (4·(2**depth − 1) px), the
    bottom block (2·2**depth px) and the pooling/upsampling offsets (< 2**depth
    px) add up to less than 7·2**depth px."""
    return 8 * 2**int(depth)


def predict(model, x: np.ndarray, batch_size: int = 4, depth: int | None = None,
            tile: int | None = None) -> np.ndarray:
    """Outputs (n, ny, nx, c) of a fully convolutional model, padding the input as needed.

    An image of more than :data:`TILE_ABOVE_PIXELS` pixels (or any image when
    ``tile`` is given) is processed in tiles of ``tile`` px (default
    :data:`TILE_PX`) with a halo of :func:`receptive_radius` px on each side,
    on the pooling grid of the whole padded image, and the inner part of each
    tile is kept: the result equals the one-pass result (to float32 rounding)
    while the memory of the feature maps is bounded by the tile size."""
    if depth is None:
        depth = sum(1 for layer in model.layers if layer.name.startswith("pool"))
    grid = 2**depth
    xp, (ny, nx) = pad_to_multiple(np.asarray(x, np.float32), grid)
    if tile is None and ny * nx <= TILE_ABOVE_PIXELS:
        out = np.asarray(model.predict(xp, batch_size=batch_size, verbose=0))
        return out[:, :ny, :nx]
    tile = int(tile or TILE_PX)
    if tile % grid:
        raise ValueError(f"tile {tile} is not a multiple of 2**depth = {grid}")
    halo, (NY, NX) = receptive_radius(depth), xp.shape[1:3]
    out = None
    for y0 in range(0, NY, tile):
        for x0 in range(0, NX, tile):
            y1, x1 = min(y0 + tile, NY), min(x0 + tile, NX)
            ya, xa, yb, xb = max(0, y0 - halo), max(0, x0 - halo), min(NY, y1 + halo), min(NX, x1 + halo)
            part = np.asarray(model.predict(xp[:, ya:yb, xa:xb], batch_size=batch_size, verbose=0))
            if out is None:
                out = np.empty((xp.shape[0], NY, NX, part.shape[-1]), part.dtype)
            out[:, y0:y1, x0:x1] = part[:, y0 - ya:y1 - ya, x0 - xa:x1 - xa]
    return out[:, :ny, :nx]
