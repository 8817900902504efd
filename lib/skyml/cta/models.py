"""Deep-learning models of the CTA real-time analysis on counts maps.

Reproduces the two networks of the talk by Di Piano et al. (public code:
``ambra-dipiano/astroAI``) and adds one localiser of our own design:

- :func:`build_cleaner`, the *CNN-Cleaner*: a convolutional autoencoder that
  maps a stretched counts map (source + background) to a background-subtracted
  map in [0, 1];
- :func:`build_talk_regressor`, the *CNN-Regressor*: convolutions and a wide
  dense layer that regress the normalised (x, y) position of the source;
- :func:`build_improved_localiser`: a small encoder-decoder that produces a
  heat map whose spatial softmax is reduced to a position by a soft-argmax
  (:class:`SpatialSoftArgmax`), trained on the Euclidean distance
  (:func:`euclidean_distance`).

Conventions shared with the simulation module
---------------------------------------------
- Maps are float arrays of shape ``(N, ny, nx)`` or ``(N, ny, nx, 1)``; the
  talk's geometry is 200 x 200 pixels of 0.025 deg (a 5 deg x 5 deg field).
- Pixel coordinates are 0-based with pixel centres at integers (numpy and
  astropy convention); ``x`` is the column index and ``y`` the row index.
- The normalised label of a position is ``((x + 0.5) / nx, (y + 0.5) / ny)``,
  in [0, 1]: 0 is the outer edge of the first pixel and 1 the outer edge of
  the last one (:func:`pix_to_label`, :func:`label_to_pix`). A distance of
  ``d`` in normalised units is ``d * nx`` pixels, i.e. ``d * nx * 0.025`` deg
  for the talk's geometry.

Every model uses only ``keras.layers`` and ``keras.ops``, so the same code
runs with ``KERAS_BACKEND=tensorflow`` (default) and ``KERAS_BACKEND=jax``.
Models are saved in the native ``.keras`` format with a JSON sidecar of
metadata (:func:`save_model`) that records the SHA-256 of the ``.keras`` file
(``"keras_sha256"``), and read back with ``safe_mode=True`` after that hash
is checked (:func:`load_model`).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any, Mapping

import keras
import numpy as np
from keras import layers, ops
from scipy import ndimage

from .. import training
from ..results import file_sha256, git_commit, machine

__all__ = [
    "stretch",
    "smooth",
    "pix_to_label",
    "label_to_pix",
    "as_images",
    "preprocess_localiser_input",
    "LOCALISER_INPUT",
    "SpatialSoftArgmax",
    "SoftArgmaxWithOffsets",
    "euclidean_distance",
    "build_cleaner",
    "build_talk_regressor",
    "build_improved_localiser",
    "heatmap_model",
    "without_offsets",
    "with_readout",
    "PeakParabola",
    "RandomDihedral",
    "UndoDihedral",
    "count_params",
    "train",
    "save_model",
    "load_model",
]

#: Readouts of :class:`SpatialSoftArgmax` at inference.
READOUTS = ("softmax", "parabola")
#: Default map geometry of the talk, numpy order ``(ny, nx)``.
MAP_SHAPE = (200, 200)
#: Default network input, ``(ny, nx, channels)``.
INPUT_SHAPE = (200, 200, 1)


# ---------------------------------------------------------------------------
# Preprocessing (numpy)
# ---------------------------------------------------------------------------


def _check_maps(maps, name: str = "maps") -> np.ndarray:
    arr = np.asarray(maps)
    if arr.ndim not in (3, 4) or (arr.ndim == 4 and arr.shape[-1] != 1):
        raise ValueError(
            f"{name} must have shape (N, ny, nx) or (N, ny, nx, 1), got {arr.shape}"
        )
    return arr


def stretch(maps) -> tuple[np.ndarray, np.ndarray]:
    """Linear stretch of each map to [0, 1] by its own maximum.

    Parameters
    ----------
    maps : array, shape (N, ny, nx) or (N, ny, nx, 1)
        Counts (or any non-negative intensity) per pixel.

    Returns
    -------
    scaled : float32 array, same shape as ``maps``
        ``maps / scale`` per map; a non-negative map lies in [0, 1].
    scale : float32 array, shape (N,)
        The maximum of each map, in the units of ``maps`` (counts per pixel),
        so that ``scaled * scale[:, None, None]`` restores the input. A map
        whose maximum is not positive (e.g. all zeros) gets scale 1 and is
        returned unchanged.

    The input is never modified. Non-finite values raise ``ValueError``.
    """
    arr = _check_maps(maps).astype(np.float32)  # always a copy
    if not np.all(np.isfinite(arr)):
        raise ValueError("stretch: maps contain NaN or infinite values")
    peak = arr.reshape(arr.shape[0], -1).max(axis=1) if arr.size else np.ones(arr.shape[0])
    scale = np.where(peak > 0, peak, 1.0).astype(np.float32)
    arr /= scale.reshape((-1,) + (1,) * (arr.ndim - 1))
    return arr, scale


def smooth(maps, sigma_px: float) -> np.ndarray:
    """Gaussian smoothing of each map on its two image axes.

    Parameters
    ----------
    maps : array, shape (N, ny, nx) or (N, ny, nx, 1)
    sigma_px : float
        Standard deviation of the Gaussian kernel in pixels (0.025 deg per
        pixel in the talk's geometry). 0 returns a float32 copy.

    Returns
    -------
    float32 array of the same shape. ``scipy.ndimage.gaussian_filter`` is
    applied with sigma 0 on the map axis ``N`` and on the channel axis, so
    maps are not mixed, and with its default ``mode="reflect"``: the
    background continues beyond the field edge, and reflection keeps its
    level flat near the edges where zero padding would darken a border of
    about 2 sigma.
    """
    arr = _check_maps(maps).astype(np.float32)
    if sigma_px < 0 or not math.isfinite(sigma_px):
        raise ValueError(f"smooth: sigma_px must be finite and >= 0, got {sigma_px}")
    if sigma_px == 0:
        return arr
    sigma = (0.0, float(sigma_px), float(sigma_px)) + ((0.0,) if arr.ndim == 4 else ())
    return ndimage.gaussian_filter(arr, sigma=sigma, mode="reflect").astype(np.float32)


def pix_to_label(x_pix, y_pix, shape=MAP_SHAPE) -> np.ndarray:
    """Normalised (x, y) labels of pixel positions.

    Parameters
    ----------
    x_pix, y_pix : array-like (broadcastable)
        Column and row positions in pixels, 0-based, pixel centres at integers.
    shape : (ny, nx)
        Map shape in numpy order (rows, columns).

    Returns
    -------
    float32 array of shape ``broadcast(x_pix, y_pix).shape + (2,)`` holding
    ``((x + 0.5) / nx, (y + 0.5) / ny)``; positions inside the map lie in [0, 1].
    """
    ny, nx = int(shape[0]), int(shape[1])
    x, y = np.broadcast_arrays(np.asarray(x_pix, dtype=np.float64), np.asarray(y_pix, dtype=np.float64))
    return np.stack([(x + 0.5) / nx, (y + 0.5) / ny], axis=-1).astype(np.float32)


def label_to_pix(labels, shape=MAP_SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """Pixel positions ``(x_pix, y_pix)`` of normalised labels (inverse of
    :func:`pix_to_label`).

    Parameters
    ----------
    labels : array-like, shape (..., 2)
        Normalised ``(x, y)`` labels.
    shape : (ny, nx)
        Map shape in numpy order.

    Returns
    -------
    x_pix, y_pix : float64 arrays of shape ``labels.shape[:-1]``, 0-based
    pixel coordinates (pixel centres at integers).
    """
    lab = np.asarray(labels, dtype=np.float64)
    if lab.shape[-1:] != (2,):
        raise ValueError(f"labels must have a last axis of length 2, got {lab.shape}")
    ny, nx = int(shape[0]), int(shape[1])
    return lab[..., 0] * nx - 0.5, lab[..., 1] * ny - 0.5


def as_images(maps) -> np.ndarray:
    """``(N, ny, nx)`` -> ``(N, ny, nx, 1)`` float32 (a 4-D input is only cast)."""
    arr = _check_maps(maps)
    if arr.ndim == 3:
        arr = arr[..., None]
    return np.asarray(arr, dtype=np.float32)


#: The input transform of the improved localiser, recorded in model metadata.
LOCALISER_INPUT = "stretch(counts): per-map linear stretch of the raw counts map to [0, 1]"


def preprocess_localiser_input(counts) -> np.ndarray:
    """Network input of :func:`build_improved_localiser` from raw counts maps.

    The choice is the per-map linear stretch of the *raw* counts (no
    smoothing, no log): ``counts / max(counts)``, returned with a channel
    axis, shape ``(N, ny, nx, 1)``, float32. Reasons:

    - it is the talk's input normalisation, so the comparison with the
      CNN-Regressor isolates the architecture;
    - a linear scale keeps the PSF profile of the source: the brightest
      pixels, which carry the position information, keep their relative
      weight (``log1p`` would flatten the peak towards the Poisson-noisy wings);
    - the source peak sits near 1 whatever the exposure, so the heat-map
      logits, and the learned softmax temperature, do not depend on the
      absolute counts.

    Smoothing is left to the network (its first layers act as a learned
    matched filter at full resolution).
    """
    scaled, _ = stretch(counts)
    return as_images(scaled)


# ---------------------------------------------------------------------------
# Custom layer and loss (registered for safe_mode loading)
# ---------------------------------------------------------------------------


def _parabola_vertex(logits, fine, h, w, offsets=None):
    """Normalised ``(x, y)`` of the arg-max cell of ``logits`` moved to the
    vertex of the parabola through ``fine`` at that cell and its two
    neighbours along each axis (the arg-max cell is moved one cell inwards at
    a border; the step is clipped to one cell), plus that cell's ``offsets``.
    Exact when ``fine`` is quadratic near the peak, as a log-likelihood is,
    whatever its curvature. ``logits``, ``fine``: ``(batch, h, w, 1)``."""
    lg = ops.reshape(ops.cast(logits, "float32"), (-1, h, w))
    fn = ops.reshape(ops.cast(fine, "float32"), (-1, h, w))
    peak = ops.argmax(ops.reshape(lg, (-1, h * w)), axis=-1)
    row0 = ops.clip(ops.cast(peak // w, "int32"), 1, h - 2)[:, None, None]
    col0 = ops.clip(ops.cast(peak % w, "int32"), 1, w - 2)[:, None, None]
    rows = ops.arange(h, dtype="int32")[None, :, None]
    cols = ops.arange(w, dtype="int32")[None, None, :]

    def at(di, dj):
        mask = ops.logical_and(rows == row0 + di, cols == col0 + dj)
        return ops.sum(ops.where(mask, fn, ops.zeros_like(fn)), axis=(1, 2)), mask

    centre, mask0 = at(0, 0)
    steps = []
    for (a, _), (b, _) in ((at(0, -1), at(0, 1)), (at(-1, 0), at(1, 0))):
        curvature = ops.minimum(a - 2.0 * centre + b, -1e-6)  # < 0 at a maximum
        steps.append(ops.clip(0.5 * (a - b) / curvature, -1.0, 1.0))
    x = ops.cast(col0[:, 0, 0], "float32") + 0.5 + steps[0]
    y = ops.cast(row0[:, 0, 0], "float32") + 0.5 + steps[1]
    if offsets is not None:
        pick = ops.cast(mask0, "float32")[..., None]
        shift = ops.sum(ops.reshape(ops.cast(offsets, "float32") * pick, (-1, h * w, 2)), axis=1)
        x, y = x + shift[:, 0], y + shift[:, 1]
    return ops.stack([x / w, y / h], axis=-1)


@keras.saving.register_keras_serializable(package="skyml")
class PeakParabola(layers.Layer):
    """Inputs ``[logits, fine]`` (both ``(batch, h, w, 1)``): the arg-max cell
    of ``logits`` refined by the vertex of a parabola through ``fine`` around
    it (:func:`_parabola_vertex`); output the normalised ``(x, y)`` label.
    With ``fine`` the localiser's linear matched filter of the input, the deep
    heat map says which peak is the source and the filter, a smooth quadratic
    bump for a bright source, where it is inside the cell."""

    def call(self, inputs):
        logits, fine = inputs
        return _parabola_vertex(logits, fine, int(logits.shape[1]), int(logits.shape[2]))

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], 2)


@keras.saving.register_keras_serializable(package="skyml")
class SpatialSoftArgmax(layers.Layer):
    """Spatial softmax of a single-channel heat map reduced to its expected
    position (soft-argmax).

    Input: logits of shape ``(batch, h, w, 1)``. The weights are
    ``p = softmax(beta * logits)`` over the ``h * w`` cells, and the output is
    ``(sum p * (j + 0.5) / w, sum p * (i + 0.5) / h)`` for cell row ``i`` and
    column ``j``, shape ``(batch, 2)``: the normalised ``(x, y)`` label of
    :func:`pix_to_label`. Because a heat-map cell of a network that halves
    the resolution k times covers ``2**k`` input pixels, the cell centre
    ``(j + 0.5) / w`` is exactly the normalised label of that block's centre
    on the input map, so the same labels serve at any heat-map resolution.
    The output is a convex combination of cell centres, hence in (0, 1).

    ``beta`` is an inverse temperature (dimensionless, > 0): large ``beta``
    approaches the hard argmax, small ``beta`` the heat-map centroid. It is
    stored as ``log(beta)`` and learned when ``trainable_beta`` is True.

    ``window`` (cells, default 0 = the whole map): at inference only, the
    softmax is restricted to the ``(2 window + 1)**2`` cells around the
    arg-max cell, a local sub-cell readout. The softmax mass that a global
    soft-argmax spreads over distant cells (a second noise peak, the
    background) pulls its output towards the map centre or between two
    candidates; the local window removes that pull. During training the
    whole map is used, so that the gradient reaches every cell.

    ``readout="parabola"`` (at inference only) replaces the softmax average
    by the vertex of a parabola fitted to the logits at the arg-max cell and
    its neighbours (a Gaussian fitted to the heat map). A soft-argmax of a
    heat map narrower than about one cell returns nearly the centre of its
    peak cell, so its error floors at a fraction of a cell however bright
    the source; the parabola's vertex does not depend on the curvature.
    """

    def __init__(self, initial_beta: float = 1.0, trainable_beta: bool = True, window: int = 0,
                 readout: str = "softmax", **kwargs):
        super().__init__(**kwargs)
        if not initial_beta > 0:
            raise ValueError(f"initial_beta must be > 0, got {initial_beta}")
        if int(window) != window or window < 0:
            raise ValueError(f"window must be an integer >= 0, got {window}")
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
        self.initial_beta = float(initial_beta)
        self.trainable_beta = bool(trainable_beta)
        self.window = int(window)
        self.readout = str(readout)

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] != 1:
            raise ValueError(f"SpatialSoftArgmax expects (batch, h, w, 1), got {input_shape}")
        h, w = input_shape[1], input_shape[2]
        if h is None or w is None:
            raise ValueError("SpatialSoftArgmax needs a static heat-map size")
        self._h, self._w = int(h), int(w)
        self.log_beta = self.add_weight(
            name="log_beta",
            shape=(),
            initializer=keras.initializers.Constant(math.log(self.initial_beta)),
            trainable=self.trainable_beta,
        )

    def _weights(self, logits, training=None):
        """Softmax weights ``(batch, h, w)`` of the logits, restricted at
        inference to the cells within ``window`` of the arg-max cell."""
        h, w = self._h, self._w
        flat = ops.reshape(ops.cast(logits, "float32"), (-1, h * w)) * ops.exp(self.log_beta)
        if self.window and not training:
            peak = ops.argmax(flat, axis=-1)
            row0 = ops.cast(peak // w, "int32")[:, None, None]
            col0 = ops.cast(peak % w, "int32")[:, None, None]
            rows = ops.arange(h, dtype="int32")[None, :, None]
            cols = ops.arange(w, dtype="int32")[None, None, :]
            near = ops.logical_and(ops.abs(rows - row0) <= self.window, ops.abs(cols - col0) <= self.window)
            flat = ops.where(ops.reshape(near, (-1, h * w)), flat, ops.full_like(flat, -1e30))
        return ops.reshape(ops.softmax(flat, axis=-1), (-1, h, w))

    def _parabola(self, logits, offsets=None):
        """Sub-cell peak of the logits: see :func:`_parabola_vertex`."""
        return _parabola_vertex(logits, logits, self._h, self._w, offsets)

    def call(self, logits, training=None):
        h, w = self._h, self._w
        if self.readout == "parabola" and not training:
            return self._parabola(logits)
        prob = self._weights(logits, training)
        x_centres = (ops.arange(w, dtype="float32") + 0.5) / w
        y_centres = (ops.arange(h, dtype="float32") + 0.5) / h
        x = ops.sum(ops.sum(prob, axis=1) * x_centres, axis=-1)  # marginal over rows
        y = ops.sum(ops.sum(prob, axis=2) * y_centres, axis=-1)  # marginal over columns
        return ops.stack([x, y], axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 2)

    def get_config(self):
        config = super().get_config()
        config.update(initial_beta=self.initial_beta, trainable_beta=self.trainable_beta, window=self.window,
                      readout=self.readout)
        return config


@keras.saving.register_keras_serializable(package="skyml")
class SoftArgmaxWithOffsets(SpatialSoftArgmax):
    """:class:`SpatialSoftArgmax` with a learned sub-cell offset per cell.

    Inputs ``[logits, offsets]``: logits ``(batch, h, w, 1)`` and offsets
    ``(batch, h, w, 2)``, the (x, y) shift of each cell's candidate position
    from its centre in units of one cell (a ``tanh`` output, so within one
    cell). The output is ``sum p * ((j + 0.5 + dx) / w, (i + 0.5 + dy) / h)``
    with ``p = softmax(beta * logits)``. When a bright source makes the heat
    map so sharp that ``p`` sits on one cell, the plain soft-argmax returns
    that cell's centre (an error up to half a cell); the offsets carry the
    position inside the cell, as the offset heads of keypoint detectors do.
    """

    def build(self, input_shape):
        logits_shape, offsets_shape = input_shape
        if len(offsets_shape) != 4 or offsets_shape[-1] != 2 or tuple(offsets_shape[1:3]) != tuple(logits_shape[1:3]):
            raise ValueError(f"SoftArgmaxWithOffsets: offsets must be (batch, h, w, 2) on the logits' grid, "
                             f"got {offsets_shape} for logits {logits_shape}")
        super().build(logits_shape)

    def call(self, inputs, training=None):
        logits, offsets = inputs
        h, w = self._h, self._w
        if self.readout == "parabola" and not training:
            return self._parabola(logits, offsets)
        prob = self._weights(logits, training)
        offsets = ops.cast(offsets, "float32")
        x_cells = (ops.arange(w, dtype="float32") + 0.5)[None, None, :] + offsets[..., 0]
        y_cells = (ops.arange(h, dtype="float32") + 0.5)[None, :, None] + offsets[..., 1]
        x = ops.sum(ops.reshape(prob * x_cells, (-1, h * w)), axis=-1) / w
        y = ops.sum(ops.reshape(prob * y_cells, (-1, h * w)), axis=-1) / h
        return ops.stack([x, y], axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], 2)


@keras.saving.register_keras_serializable(package="skyml")
class RandomDihedral(layers.Layer):
    """Training-time augmentation by the symmetries of a square map.

    In training each map of the batch is, at random and independently,
    transposed, flipped left-right and flipped up-down (the 8 elements of the
    dihedral group of the square); the layer returns the transformed maps and
    the three choices ``(batch, 3)`` (1.0 = applied) so that
    :class:`UndoDihedral` can map the network's position back to the input
    frame. The labels therefore stay those of the input map, and the
    network sees 8 orientations of every training map: the instrument
    response is symmetric under these operations (radial background and PSF),
    so this is free data, and it removes any preferred direction of the
    learned position (e.g. a bias tied to the padding of one border).
    At inference (``training`` false) the maps pass unchanged with choices 0.
    Random draws come from a :class:`keras.random.SeedGenerator` (``seed``).
    """

    def __init__(self, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.seed = int(seed)
        self.seed_generator = keras.random.SeedGenerator(self.seed)

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[1] != input_shape[2] or input_shape[1] is None:
            raise ValueError(f"RandomDihedral needs square maps (batch, n, n, c), got {input_shape}")

    def call(self, maps, training=None):
        maps = ops.cast(maps, "float32")
        batch = ops.shape(maps)[0]
        if not training:
            return maps, ops.zeros((batch, 3), dtype="float32")
        choice = ops.cast(keras.random.uniform((batch, 3), seed=self.seed_generator) < 0.5, "float32")
        flag = [ops.reshape(choice[:, k], (-1, 1, 1, 1)) > 0.5 for k in range(3)]
        maps = ops.where(flag[0], ops.transpose(maps, (0, 2, 1, 3)), maps)
        maps = ops.where(flag[1], ops.flip(maps, axis=2), maps)
        maps = ops.where(flag[2], ops.flip(maps, axis=1), maps)
        return maps, choice

    def compute_output_shape(self, input_shape):
        return tuple(input_shape), (input_shape[0], 3)

    def get_config(self):
        config = super().get_config()
        config.update(seed=self.seed)
        return config


@keras.saving.register_keras_serializable(package="skyml")
class UndoDihedral(layers.Layer):
    """Maps a normalised ``(x, y)`` label found on a map transformed by
    :class:`RandomDihedral` back to the frame of the untransformed map.

    Inputs ``[labels (batch, 2), choices (batch, 3)]``; the transforms are
    undone in reverse order: up-down flip (``y -> 1 - y``), left-right flip
    (``x -> 1 - x``), transpose (swap ``x`` and ``y``). These are exact for the
    labels of :func:`pix_to_label` (pixel ``x`` of ``n`` becomes ``n - 1 - x``).
    """

    def call(self, inputs):
        labels, choice = inputs
        x, y = labels[:, 0], labels[:, 1]
        y = ops.where(choice[:, 2] > 0.5, 1.0 - y, y)
        x = ops.where(choice[:, 1] > 0.5, 1.0 - x, x)
        swap = choice[:, 0] > 0.5
        x, y = ops.where(swap, y, x), ops.where(swap, x, y)
        return ops.stack([x, y], axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], 2)


@keras.saving.register_keras_serializable(package="skyml")
class WeightedRatio(layers.Layer):
    """Background normalisation as a learned weighted ratio of counts to template.

    Inputs ``[maps, logits]``: ``maps`` of shape ``(batch, h, w, 2)`` holding
    the counts and the background template (both divided by the template's
    mean), ``logits`` of shape ``(batch, h, w, 1)``. With pixel weights
    ``p = softmax(logits)`` over the ``h * w`` pixels, the output is
    ``log(sum p * counts / sum p * template)``, shape ``(batch, 1)``. Any
    weighting gives an unbiased normalisation on a source-free map; the
    network only learns where to look (away from sources), so the estimate
    stays a ratio of data to template whatever the exposure.
    """

    def call(self, inputs):
        maps, logits = inputs
        shape = ops.shape(logits)
        flat = ops.reshape(ops.cast(logits, "float32"), (shape[0], -1))
        prob = ops.softmax(flat, axis=-1)
        counts = ops.reshape(ops.cast(maps[..., 0], "float32"), (shape[0], -1))
        template = ops.reshape(ops.cast(maps[..., 1], "float32"), (shape[0], -1))
        ratio = ops.sum(prob * counts, axis=-1) / ops.maximum(ops.sum(prob * template, axis=-1), 1e-6)
        return ops.expand_dims(ops.log(ops.maximum(ratio, 1e-6)), -1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], 1)


def build_background_normaliser(input_shape=(200, 200, 2), filters: int = 16, pool: int = 4,
                                learning_rate: float = 1e-3) -> keras.Model:
    """A learned field-of-view background fit: predicts ``log`` of the
    background normalisation of a counts map against its IRF template,
    without the source position. Compiled (Adam, mean squared error on the
    log normalisation).

    Input ``(N, ny, nx, 2)``: counts and template, each divided by the
    template's mean (:func:`background_normaliser_inputs`). Both channels are
    first averaged in ``pool`` x ``pool`` blocks (block means of counts and
    template keep the ratio of their sums).
    Dilated 3 x 3 convolutions (dilation 1, 2, 4; receptive field 15 blocks,
    1.5 deg for 4 x 4 blocks of 0.025 deg, wider than the PSF and the on
    region) look at both channels and give per-block logits;
    :class:`WeightedRatio` turns them into the normalisation. The cleaned map
    is then ``counts - exp(output) * template``.
    """
    inputs = keras.Input(shape=tuple(input_shape), name="counts_and_template")
    maps = layers.AveragePooling2D(int(pool), name="block_mean")(inputs)
    x = maps
    for i, rate in enumerate((1, 2, 4)):
        x = layers.Conv2D(filters, 3, padding="same", dilation_rate=rate, activation="relu", name=f"conv{i + 1}")(x)
    logits = layers.Conv2D(1, 1, name="weight_logits")(x)
    outputs = WeightedRatio(name="log_norm")([maps, logits])
    model = keras.Model(inputs, outputs, name="background_normaliser")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate), loss="mse")
    return model


def background_normaliser_inputs(counts, templates) -> np.ndarray:
    """``(N, ny, nx, 2)`` float32 input of :func:`build_background_normaliser`:
    counts and template maps divided by each template's mean."""
    counts = _check_maps(counts)
    templates = _check_maps(templates)
    if counts.shape[:3] != templates.shape[:3]:
        raise ValueError(f"counts {counts.shape} and templates {templates.shape} differ")
    c = counts.reshape(counts.shape[:3]).astype(np.float32)
    t = templates.reshape(templates.shape[:3]).astype(np.float32)
    mean = t.reshape(len(t), -1).mean(axis=1)
    if np.any(~(mean > 0)):
        raise ValueError("background templates must have a positive mean")
    return np.stack([c / mean[:, None, None], t / mean[:, None, None]], axis=-1)


@keras.saving.register_keras_serializable(package="skyml")
def euclidean_distance(y_true, y_pred):
    """Euclidean distance between true and predicted normalised ``(x, y)``
    labels, per sample (Keras averages it over the batch).

    In normalised units: multiply by ``nx`` for pixels (200 in the talk's
    geometry) and by ``nx * 0.025`` for degrees. A floor of 1e-10 under the
    square root (1e-5 normalised units, 0.002 px) keeps the gradient finite at
    zero distance.
    """
    y_true = ops.cast(y_true, y_pred.dtype)
    sq = ops.sum(ops.square(y_pred - y_true), axis=-1)
    return ops.sqrt(sq + 1e-10)


# ---------------------------------------------------------------------------
# Model builders
# ---------------------------------------------------------------------------


def build_cleaner(input_shape=INPUT_SHAPE, learning_rate: float = 1e-3) -> keras.Model:
    """The talk's CNN-Cleaner, a background-subtraction autoencoder. Compiled.

    Architecture (all convolutions 2 x 2 px kernels, ``padding="same"``)::

        Conv2D(12, relu) -> AveragePooling2D(2) -> Conv2D(12, relu)
        -> AveragePooling2D(2) -> Conv2D(12, relu) -> UpSampling2D(2)
        -> Conv2D(12, relu) -> UpSampling2D(2) -> Conv2D(1, sigmoid)

    1,873 trainable parameters (60 + 3 x 588 + 49). Input: stretched noisy
    counts map in [0, 1], ``(N, ny, nx, 1)`` with ``ny`` and ``nx`` multiples
    of 4; output: the background-subtracted (source-only) map, stretched, in
    [0, 1], same shape. Compiled with Adam(``learning_rate``) and binary
    cross-entropy, as in the talk.
    """
    ny, nx = int(input_shape[0]), int(input_shape[1])
    if ny % 4 or nx % 4:
        raise ValueError(f"build_cleaner: map sides must be multiples of 4, got {input_shape}")
    conv = dict(kernel_size=(2, 2), activation="relu", padding="same")
    inputs = keras.Input(shape=tuple(input_shape), name="counts_map")
    x = layers.Conv2D(12, name="enc_conv1", **conv)(inputs)
    x = layers.AveragePooling2D(2, padding="same", name="enc_pool1")(x)
    x = layers.Conv2D(12, name="enc_conv2", **conv)(x)
    x = layers.AveragePooling2D(2, padding="same", name="enc_pool2")(x)
    x = layers.Conv2D(12, name="dec_conv1", **conv)(x)
    x = layers.UpSampling2D(2, name="dec_up1")(x)
    x = layers.Conv2D(12, name="dec_conv2", **conv)(x)
    x = layers.UpSampling2D(2, name="dec_up2")(x)
    outputs = layers.Conv2D(1, (2, 2), activation="sigmoid", padding="same", name="cleaned_map")(x)
    model = keras.Model(inputs, outputs, name="cnn_cleaner")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss=keras.losses.BinaryCrossentropy(),
    )
    return model


def build_talk_regressor(
    input_shape=INPUT_SHAPE,
    dense_units: int = 10000,
    dropout: float = 0.2,
    learning_rate: float = 1e-3,
) -> keras.Model:
    """The talk's CNN-Regressor of the source position. Compiled.

    Architecture (convolutions ``padding="same"``, max pooling ``valid``)::

        Conv2D(6, 4x4, relu) -> MaxPool2D(2)
        -> 4 x [Conv2D(12, 2x2, relu) -> MaxPool2D(2)]
        -> Dropout(0.2) -> Flatten -> Dense(dense_units, relu)
        -> Dropout(0.2) -> Dense(2, sigmoid)

    Output: the normalised ``(x, y)`` label of :func:`pix_to_label`. Compiled
    with Adam(``learning_rate``) and the mean absolute error loss, as in the
    talk's public notebook.

    Parameter count for 200 x 200 x 1 and ``dense_units=10000``: the feature
    map side goes 200 -> 100 -> 50 -> 25 -> 12 -> 6 through the five poolings,
    so Flatten gives 6 * 6 * 12 = 432 features and the model has

        102 (4*4*1*6 + 6) + 300 (2*2*6*12 + 12) + 3 * 588 (2*2*12*12 + 12)
        + 4,330,000 (432 * 10000 + 10000) + 20,002 (10000 * 2 + 2)
        = 4,352,168 parameters,

    99.5 % of them in the first dense layer. The public astroAI code
    (``create_loc_regressor``) instead uses ``valid`` convolutions and a
    single pooling after the four 2 x 2 convolutions, so its Flatten sees
    47 * 47 * 12 = 26,508 features and the dense layer alone holds about
    265 M parameters; here we follow the layer list of the talk.
    """
    conv = dict(activation="relu", padding="same")
    inputs = keras.Input(shape=tuple(input_shape), name="counts_map")
    x = layers.Conv2D(6, (4, 4), name="conv1", **conv)(inputs)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    for i in range(2, 6):
        x = layers.Conv2D(12, (2, 2), name=f"conv{i}", **conv)(x)
        x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = layers.Dropout(dropout, name="dropout1")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(int(dense_units), activation="relu", name="dense")(x)
    x = layers.Dropout(dropout, name="dropout2")(x)
    outputs = layers.Dense(2, activation="sigmoid", name="position")(x)
    model = keras.Model(inputs, outputs, name="cnn_regressor_talk")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss=keras.losses.MeanAbsoluteError(),
    )
    return model


def build_improved_localiser(
    input_shape=INPUT_SHAPE,
    filters: tuple[int, int, int] = (16, 32, 64),
    dilation_rates: tuple[int, ...] = (2, 4),
    full_resolution_filters: int = 8,
    initial_beta: float = 1.0,
    learning_rate: float = 1e-3,
    subcell_offsets: bool = True,
    full_resolution_head: bool = False,
    window: int = 0,
    readout: str = "softmax",
    dihedral_augment: bool = False,
    matched_filter_size: int = 0,
    seed: int = 0,
) -> keras.Model:
    """A heat-map localiser of a single point source: encoder-decoder, spatial
    softmax and soft-argmax. Compiled.

    Input: :func:`preprocess_localiser_input` of the counts map,
    ``(N, ny, nx, 1)`` with ``ny`` and ``nx`` multiples of 8. Output: the
    normalised ``(x, y)`` label of :func:`pix_to_label` (same labels as the
    talk's regressor).

    Architecture (3 x 3 convolutions, ReLU, ``padding="same"``)::

        full res.  Conv(full_resolution_filters)            (learned matched filter)
        1/2 res.   MaxPool -> 2 x Conv(filters[0])   = skip1
        1/4 res.   MaxPool -> 2 x Conv(filters[1])   = skip2
        1/8 res.   MaxPool -> Conv(filters[2]) -> dilated Conv(filters[2]) per rate
        1/4 res.   bilinear UpSampling -> concat skip2 -> Conv(filters[1])
        1/2 res.   bilinear UpSampling -> concat skip1 -> Conv(filters[0])
                   -> Conv 1x1 (1, linear) = heat-map logits  ("heatmap_logits")
                   -> Conv 1x1 (2, tanh)   = sub-cell offsets  ("subcell_offsets")
        SoftArgmaxWithOffsets(learnable inverse temperature) -> (x, y)

    With ``subcell_offsets=False`` the offsets head is left out and a plain
    :class:`SpatialSoftArgmax` reduces the heat map (the first version of this
    model). Without offsets the position of a bright source, whose heat map
    peaks on a single cell, is quantised to the 2-pixel cell grid: its error
    floors at about half a cell whatever the counts. The offsets head (zero
    at initialisation, so training starts from the plain soft-argmax) removes
    that floor.

    The heat map is at half resolution (100 x 100 cells of 0.05 deg for the
    talk's geometry); the soft-argmax interpolates between cells, so the
    position is not quantised to the cell grid. With the 1/8-resolution
    dilated context the receptive field of a heat-map cell spans about
    150 px (3.7 deg), so each cell compares a candidate source with the
    background of most of the field. With the defaults the model has
    144,434 parameters without and 144,468 with the offsets head (the count
    does not depend on the map size) and costs
    about 0.27 G multiply-adds per 200 x 200 map.

    ``full_resolution_head=True`` adds one more decoder stage: a bilinear
    up-sampling to the input resolution, concatenated with the full-resolution
    features (``full_conv``) and a 3 x 3 convolution of
    ``full_resolution_filters`` channels, so that the heat map and the offsets
    come out on the pixel grid (cells of one pixel, 200 x 200 for the talk's
    geometry). The half-resolution heat map sees the counts only through two
    max-poolings, which keep the strongest response of each 2 x 2 block but
    not where inside the block it lies; its errors on bright sources then
    follow the source's position inside a cell (a quantisation floor that
    training on 10 x brighter sources and the offsets head shrink but do not
    remove). On the pixel grid the heat map of a bright source spans a few
    cells and the soft-argmax interpolates between them. The new convolution
    has ``(full_resolution_filters + filters[0]) * 9 * full_resolution_filters
    + full_resolution_filters`` parameters and the 1 x 1 heads then read
    ``full_resolution_filters`` instead of ``filters[0]`` channels: 1,712 more
    parameters with the defaults (146,180 with the offsets head), and about
    0.07 G more multiply-adds per 200 x 200 map.

    ``window`` and ``readout``: how :class:`SpatialSoftArgmax` reads the heat
    map at inference (defaults: softmax average over the whole map).

    ``matched_filter_size=k`` (odd, > 0; needs the full-resolution head)
    adds to the heat-map logits a linear ``k`` x ``k`` convolution of the
    input map (``matched_filter``, no bias, initialised as a Gaussian of
    ``k / 6`` pixels): for a bright source without background the Poisson
    log-likelihood of a source at each pixel is such a convolution of the
    counts with the log of the PSF, a quadratic bump whose vertex is the
    photons' centroid. The deep heat map finds the source among the noise
    peaks; the linear term gives its peak the wide-aperture, sub-pixel shape
    that the 3 x 3 full-resolution convolutions (a 5-pixel receptive field,
    about one PSF sigma) cannot. ``k * k`` parameters.

    ``dihedral_augment=True`` puts :class:`RandomDihedral` after the input and
    :class:`UndoDihedral` after the soft-argmax (``seed`` seeds its draws):
    in training every map is seen in a random one of its 8 orientations, the
    label unchanged; at inference both layers are the identity.

    Compiled with Adam(``learning_rate``) and :func:`euclidean_distance`
    (mean distance in normalised units).
    """
    ny, nx = int(input_shape[0]), int(input_shape[1])
    if ny % 8 or nx % 8:
        raise ValueError(f"build_improved_localiser: map sides must be multiples of 8, got {input_shape}")
    k = int(matched_filter_size)
    if k and (k < 0 or k % 2 == 0 or not full_resolution_head):
        raise ValueError(f"build_improved_localiser: matched_filter_size must be 0 or odd with the full-resolution "
                         f"head, got {matched_filter_size}")
    f1, f2, f3 = (int(f) for f in filters)
    conv = dict(kernel_size=(3, 3), activation="relu", padding="same")

    inputs = keras.Input(shape=tuple(input_shape), name="counts_map")
    x, choice = inputs, None
    if dihedral_augment:
        x, choice = RandomDihedral(seed=seed, name="random_dihedral")(inputs)
    x_in = x
    skip0 = layers.Conv2D(int(full_resolution_filters), name="full_conv", **conv)(x)
    x = layers.MaxPooling2D(2, name="pool1")(skip0)
    x = layers.Conv2D(f1, name="half_conv1", **conv)(x)
    skip1 = layers.Conv2D(f1, name="half_conv2", **conv)(x)
    x = layers.MaxPooling2D(2, name="pool2")(skip1)
    x = layers.Conv2D(f2, name="quarter_conv1", **conv)(x)
    skip2 = layers.Conv2D(f2, name="quarter_conv2", **conv)(x)
    x = layers.MaxPooling2D(2, name="pool3")(skip2)
    x = layers.Conv2D(f3, name="context_conv", **conv)(x)
    for rate in dilation_rates:
        x = layers.Conv2D(f3, dilation_rate=int(rate), name=f"context_dilated{int(rate)}", **conv)(x)
    x = layers.UpSampling2D(2, interpolation="bilinear", name="up1")(x)
    x = layers.Concatenate(name="merge_quarter")([x, skip2])
    x = layers.Conv2D(f2, name="up_quarter_conv", **conv)(x)
    x = layers.UpSampling2D(2, interpolation="bilinear", name="up2")(x)
    x = layers.Concatenate(name="merge_half")([x, skip1])
    x = layers.Conv2D(f1, name="up_half_conv", **conv)(x)
    if full_resolution_head:
        x = layers.UpSampling2D(2, interpolation="bilinear", name="up3")(x)
        x = layers.Concatenate(name="merge_full")([x, skip0])
        x = layers.Conv2D(int(full_resolution_filters), name="up_full_conv", **conv)(x)
    if k:
        deep = layers.Conv2D(1, (1, 1), name="deep_logits")(x)
        r = np.arange(k) - k // 2
        gauss = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2.0 * (k / 6.0) ** 2))
        linear = layers.Conv2D(1, (k, k), padding="same", use_bias=False, name="matched_filter",
                               kernel_initializer=keras.initializers.Constant(
                                   (gauss / gauss.sum())[:, :, None, None].astype("float32")))(x_in)
        logits = layers.Add(name="heatmap_logits")([deep, linear])
    else:
        logits = layers.Conv2D(1, (1, 1), name="heatmap_logits")(x)
    if subcell_offsets:
        offsets = layers.Conv2D(2, (1, 1), activation="tanh", kernel_initializer="zeros",
                                name="subcell_offsets")(x)
        outputs = SoftArgmaxWithOffsets(initial_beta=initial_beta, window=window, readout=readout,
                                        name="soft_argmax")([logits, offsets])
    else:
        outputs = SpatialSoftArgmax(initial_beta=initial_beta, window=window, readout=readout,
                                    name="soft_argmax")(logits)
    if dihedral_augment:
        outputs = UndoDihedral(name="undo_dihedral")([outputs, choice])
    model = keras.Model(inputs, outputs, name="cnn_localiser_softargmax")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss=euclidean_distance,
    )
    return model


def heatmap_model(localiser: keras.Model) -> keras.Model:
    """A model sharing the localiser's weights that outputs its heat-map
    logits, shape ``(N, ny/2, nx/2, 1)`` (``(N, ny, nx, 1)`` with the
    full-resolution head), for figures."""
    return keras.Model(localiser.inputs, localiser.get_layer("heatmap_logits").output,
                       name=f"{localiser.name}_heatmap")


def _readout_head(localiser: keras.Model):
    """The soft-argmax layer of a localiser, or of one wrapped by :func:`with_readout` or
    :func:`without_offsets` (the one layer of the model that is a :class:`SpatialSoftArgmax`)."""
    heads = [layer for layer in localiser.layers if isinstance(layer, SpatialSoftArgmax)]
    if len(heads) != 1:
        raise ValueError(f"{localiser.name}: {len(heads)} soft-argmax readouts, expected one")
    return heads[0]


def without_offsets(localiser: keras.Model) -> keras.Model:
    """A model sharing the localiser's weights that reduces its heat map by the
    plain :class:`SpatialSoftArgmax` (same inverse temperature), ignoring the
    sub-cell offsets: the ablation that shows what the offsets head adds."""
    head = _readout_head(localiser)
    plain = SpatialSoftArgmax(initial_beta=float(np.exp(keras.ops.convert_to_numpy(head.log_beta))),
                              trainable_beta=False, window=head.window, readout=head.readout,
                              name="soft_argmax_plain")
    outputs = plain(localiser.get_layer("heatmap_logits").output)
    return keras.Model(localiser.inputs, outputs, name=f"{localiser.name}_no_offsets")


def with_readout(localiser: keras.Model, window: int = 0, readout: str = "softmax") -> keras.Model:
    """A model sharing the localiser's weights (its inverse temperature
    included) whose soft-argmax reads the heat map at inference with
    ``window`` and ``readout`` (see :class:`SpatialSoftArgmax`); for choosing
    the readout on validation maps without retraining. The dihedral
    augmentation layers, the identity at inference, are left out.

    ``readout="filter_parabola"`` (a localiser with a matched filter): the
    arg-max of the heat map refined by the parabola through the matched
    filter's output (:class:`PeakParabola`); ``window`` is then unused."""
    if readout == "filter_parabola":
        outputs = PeakParabola(name="peak_parabola")([localiser.get_layer("heatmap_logits").output,
                                                      localiser.get_layer("matched_filter").output])
        return keras.Model(localiser.inputs, outputs, name=f"{localiser.name}_filter_parabola")
    head = _readout_head(localiser)
    beta = float(np.exp(keras.ops.convert_to_numpy(head.log_beta)))
    logits = localiser.get_layer("heatmap_logits").output
    name = "soft_argmax_readout"
    if name in {layer.name for layer in localiser.layers}:  # a readout of a readout: unique names, so that
        name = f"{name}_{readout}{int(window)}"  # both can be outputs of one model
    kwargs = {"initial_beta": beta, "trainable_beta": False, "window": window, "readout": readout,
              "name": name}
    if isinstance(head, SoftArgmaxWithOffsets):
        outputs = SoftArgmaxWithOffsets(**kwargs)([logits, localiser.get_layer("subcell_offsets").output])
    else:
        outputs = SpatialSoftArgmax(**kwargs)(logits)
    return keras.Model(localiser.inputs, outputs, name=f"{localiser.name}_{readout}{int(window)}")


def count_params(model: keras.Model) -> int:
    """Total number of parameters (trainable and not) of a built model."""
    return int(model.count_params())


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------


def _as_input(x) -> np.ndarray:
    """Maps ``(N, ny, nx)`` get a channel axis; multi-channel ``(N, ny, nx, C)`` are only cast."""
    arr = np.asarray(x)
    return np.asarray(arr, dtype=np.float32) if arr.ndim == 4 else as_images(arr)


def _as_target(y) -> np.ndarray:
    arr = np.asarray(y, dtype=np.float32)
    return arr[..., None] if arr.ndim == 3 else arr


def validation_loss(model: keras.Model, x, y, batch_size: int = 32) -> float:
    """The compiled loss of ``model`` on ``(x, y)`` (inference mode), as
    :func:`train` reports it for its validation maps."""
    return float(model.evaluate(_as_input(x), _as_target(y), batch_size=int(batch_size), verbose=0,
                                return_dict=True)["loss"])


def train(
    model: keras.Model,
    x,
    y,
    x_val,
    y_val,
    *,
    epochs: int,
    batch_size: int = 32,
    patience: int = 3,
    seed: int = 0,
    verbose="auto",
    reduce_lr_patience: int | None = None,
) -> dict[str, list[float]]:
    """Fit a compiled model with early stopping; return its history.
    With ``reduce_lr_patience``, the learning rate is halved after that many
    epochs without a ``val_loss`` 1e-4 below the best
    (:func:`skyml.training.halve_on_plateau`).

    Maps of shape ``(N, ny, nx)`` (inputs, and cleaner targets) get their
    channel axis added; labels of shape ``(N, 2)`` are used as given.
    ``keras.utils.set_random_seed(seed)`` fixes the randomness of training
    (batch shuffling, dropout); the weights were initialised when the model
    was built, so call ``keras.utils.set_random_seed`` before the builder too
    for a fully reproducible run. Training stops after ``patience`` epochs without a
    lower ``val_loss`` and the weights of the best epoch are restored. Keras
    prints its own progress bar (``verbose``: "auto", 0, 1 or 2).

    Returns
    -------
    dict mapping each logged quantity ("loss", "val_loss", ...) to the list of
    its per-epoch values (floats), one entry per epoch actually run.
    """
    keras.utils.set_random_seed(int(seed))
    stop = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=int(patience), mode="min", restore_best_weights=True
    )
    own = [stop]
    if reduce_lr_patience is not None:
        own.append(training.halve_on_plateau(reduce_lr_patience))
    history = model.fit(
        _as_input(x),
        _as_target(y),
        validation_data=(_as_input(x_val), _as_target(y_val)),
        epochs=int(epochs),
        batch_size=int(batch_size),
        shuffle=True,
        callbacks=[*own, *training.fit_callbacks(*own)],
        verbose=verbose,
    )
    return {key: [float(v) for v in values] for key, values in history.history.items()}


# ---------------------------------------------------------------------------
# Persistence
# ---------------------------------------------------------------------------


def _json_default(obj):
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"metadata value of type {type(obj).__name__} is not JSON serialisable")


SHA256_KEY = "keras_sha256"


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def save_model(model: keras.Model, path, metadata: Mapping[str, Any]) -> Path:
    """Save ``model`` to ``path`` (``.keras``) and ``metadata`` to the JSON
    sidecar ``path.with_suffix(".json")``, both atomically.

    Each file is written under a temporary name in the destination folder and
    renamed into place with ``os.replace``, so a reader never sees a
    half-written file. ``metadata`` (preprocessing, geometry, training set
    size, profile, ...) must be JSON-like; numpy scalars and arrays are
    converted. A ``"saved_with"`` entry (model name, parameter count, Keras
    version, backend, the machine it was trained on and the git commit) is
    added unless present, and ``"keras_sha256"``, the SHA-256 of the saved
    ``.keras`` file, always. Returns ``path``.

    The optimizer is saved unbuilt, without its state (Adam's moments: twice
    the weights): no command or notebook resumes training from a saved model
    (resumable training keeps its own checkpoints, :mod:`skyml.training`), and
    the published files are a third of the size. Weights, architecture and
    compile settings are saved as they are.
    """
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"model path must end with .keras, got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(metadata)
    meta.setdefault(
        "saved_with",
        {
            "model_name": model.name,
            "n_params": count_params(model),
            "keras_version": keras.__version__,
            "keras_backend": keras.backend.backend(),
            "machine": machine(),
            "git_commit": git_commit(),
        },
    )
    meta.pop(SHA256_KEY, None)
    json.dumps(meta, default=_json_default)  # refuse unserialisable metadata before any write

    fd, tmp_model = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".keras", dir=path.parent)
    os.close(fd)
    fd, tmp_meta = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".json", dir=path.parent)
    optimizer = getattr(model, "optimizer", None)
    try:
        if optimizer is not None:
            model.optimizer = type(optimizer).from_config(optimizer.get_config())
        try:
            model.save(tmp_model)
        finally:
            if optimizer is not None:
                model.optimizer = optimizer
        meta[SHA256_KEY] = file_sha256(tmp_model)
        text = json.dumps(meta, indent=1, sort_keys=True, default=_json_default)
        with os.fdopen(fd, "w") as fh:
            fh.write(text + "\n")
        os.replace(tmp_model, path)
        os.replace(tmp_meta, _sidecar(path))
    except BaseException:
        for tmp in (tmp_model, tmp_meta):
            if os.path.exists(tmp):
                os.remove(tmp)
        raise
    return path


def check_sha256(path, metadata: Mapping[str, Any]) -> None:
    """Refuse (``ValueError``, one line) a ``.keras`` file whose SHA-256 differs
    from the one its sidecar records (sidecars written before the hash was
    recorded have none and are not checked)."""
    path = Path(path)
    expected = metadata.get(SHA256_KEY)
    if expected is None:
        return
    actual = file_sha256(path)
    if actual != expected:
        raise ValueError(f"model file {path} does not match its metadata: sha256 {actual[:12]}…, "
                         f"sidecar records {str(expected)[:12]}… (modified or replaced)")


def load_model(path) -> tuple[keras.Model, dict]:
    """Read a model written by :func:`save_model` and its metadata.

    Uses ``keras.saving.load_model(path, safe_mode=True)``; the custom layer
    and loss of this module are registered, so no ``custom_objects`` are
    needed. Raises ``FileNotFoundError`` naming the missing file (model or
    sidecar) and ``ValueError`` naming the file that cannot be read or whose
    SHA-256 differs from the one the sidecar records (:func:`check_sha256`).
    """
    path = Path(path)
    meta_path = _sidecar(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    if not meta_path.is_file():
        raise FileNotFoundError(f"model metadata sidecar not found: {meta_path} (for {path})")
    try:
        metadata = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"corrupt model metadata file {meta_path}: {err}") from err
    if not isinstance(metadata, dict):
        raise ValueError(f"corrupt model metadata file {meta_path}: expected a JSON object")
    check_sha256(path, metadata)
    if not zipfile.is_zipfile(path):
        raise ValueError(f"corrupt or non-Keras model file {path}: not a .keras (zip) archive")
    try:
        with warnings.catch_warnings():  # the optimizer is saved without its state (save_model)
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            model = keras.saving.load_model(path, safe_mode=True)
    except Exception as err:  # Keras raises several types for a damaged archive
        raise ValueError(f"cannot load Keras model {path}: {type(err).__name__}: {err}") from err
    return model, metadata
