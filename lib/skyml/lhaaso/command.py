"""The work of ``skyml lhaaso-deconvolve`` (parser and file policy in
:mod:`skyml.cli`), and the tiled application of the fully convolutional CNNs.

Tiling (:func:`deconvolve_tiled`): the CNNs are stride-1 convolutions with
'same' padding followed by :class:`skyml.lhaaso.models.FluxConserving`
(ReLU, then one global rescaling to the input's total counts). The raw
convolutional output of a pixel depends only on the input within the
receptive-field radius (the sum of the kernel half-widths, 8 px for the 9-5-5
CNN); so the map is cut into tiles that overlap by that radius on each side
(clipped at the map borders, where the network's own zero padding applies),
each tile's inner part is kept, and the global flux rescaling is applied once
to the stitched map. The result equals the one-pass result (to float32
rounding) while the memory of the network's feature maps is bounded by the
tile size.

The U-Net of LHAI's protocol (``--unet``; :func:`deconvolve_unet_tiled`)
halves the map twice, so its input is zero-padded at the far edges to a
multiple of 4 px; its tiles start on that grid and overlap by
:data:`UNET_HALO_PX` (more than its receptive-field radius), so they too
give the one-pass result. It is told the PSF (``--psf-sigma-deg`` with
``--psf-tail-ratio`` and ``--psf-tail-weight``, the nominal KM2A tail by
default) in constant condition channels, or that the PSF is unknown when no
``--psf-sigma-deg`` is given (:func:`skyml.lhaaso.models.psf_conditions`);
the values must lie in the ranges it was trained on (its metadata's
``randomisation``). With ``--dihedral`` the estimate is the mean over
the map's 8 rotations by 90° and flips, each turned back; ``--no-dihedral``
reads the map as given. Without either, the U-Net is read as notebook 08
chose on its validation maps (:data:`UNET_DIHEDRAL`, results key
``unet_lhai_dihedral``) and the CNNs as given.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__, guards, io
from ..training import dihedral_mean
from ..cli import (LoadedModel, LHAASO_PSF_RANGE_DEG, CommandError, TrainedModel, load_models_quietly, load_trained_model,
                   model_path, model_profile, write_output)

LHAASO_CNN = TrainedModel("lhaaso_cnn.keras", "08", "LHAASO deconvolution CNN", "lhaaso-deconvolve")
LHAASO_PSF_CNN = TrainedModel("lhaaso_psf_conditioned.keras", "08", "LHAASO PSF-conditioned CNN",
                              "lhaaso-deconvolve")
LHAASO_UNET = TrainedModel("lhaaso_unet_lhai.keras", "08", "LHAASO U-Net (randomised sky and PSF)",
                           "lhaaso-deconvolve")
#: Inner side (px) of the tiles of :func:`deconvolve_tiled`.
TILE_PX = 512
#: Overlap (px) of the U-Net's tiles on each side: a multiple of 4 above its receptive-field radius (about 30 px)
UNET_HALO_PX = 48


def raw_submodel(model):
    """(model of the raw convolutional output before FluxConserving, receptive
    radius in px), or (None, None) when ``model`` is not a stride-1
    convolutional stack ending in FluxConserving (then it is not tiled)."""
    import keras

    from .models import FluxConserving

    last = model.layers[-1]
    if not isinstance(last, FluxConserving):
        return None, None
    radius = 0
    for layer in model.layers[1:-1]:
        if not isinstance(layer, keras.layers.Conv2D) or tuple(layer.strides) != (1, 1) \
                or layer.padding != "same":
            return None, None
        k = np.asarray(layer.kernel_size)
        d = np.asarray(layer.dilation_rate)
        radius += int(np.max((k - 1) // 2 * d))
    raw = last.input[1]
    return keras.Model(model.inputs[0], raw), radius


def deconvolve_tiled(model, counts: np.ndarray, sigma1_deg=None, tile: int = TILE_PX) -> np.ndarray:
    """:func:`skyml.lhaaso.pipeline.deconvolve` of one map (ny, nx), in
    overlapping tiles of ``tile`` px (see the module text); falls back to one
    pass for a model that cannot be tiled or a map that fits one tile."""
    from . import models
    from .pipeline import deconvolve
    from .simulate import map_scale, normalise

    counts = np.asarray(counts, dtype=np.float64)
    ny, nx = counts.shape
    sub, halo = raw_submodel(model)
    if sub is None or (ny <= tile and nx <= tile):
        return deconvolve(model, counts[None], sigma1_deg)[0]
    scale = map_scale(counts[None])
    norm = normalise(counts[None], scale)[0]
    raw = _stitched(lambda block: np.asarray(sub(models.as_input(block[None], sigma1_deg), training=False))[0, ..., 0],
                    norm, tile, halo)
    return _flux_conserved(raw, norm) * scale[0]


def _stitched(raw_of, norm: np.ndarray, tile: int, halo: int) -> np.ndarray:
    """The raw output ``raw_of(block)`` of a map computed tile by tile: each
    tile of ``tile`` px with ``halo`` px of its neighbours around it (clipped
    at the map borders), of which the inner part is kept."""
    ny, nx = norm.shape
    raw = np.empty((ny, nx), np.float32)
    for y0 in range(0, ny, tile):
        for x0 in range(0, nx, tile):
            y1, x1 = min(y0 + tile, ny), min(x0 + tile, nx)
            ya, xa = max(0, y0 - halo), max(0, x0 - halo)
            yb, xb = min(ny, y1 + halo), min(nx, x1 + halo)
            raw[y0:y1, x0:x1] = raw_of(norm[ya:yb, xa:xb])[y0 - ya:y1 - ya, x0 - xa:x1 - xa]
    return raw


def _flux_conserved(raw: np.ndarray, norm: np.ndarray) -> np.ndarray:
    """:class:`skyml.lhaaso.models.FluxConserving` once, on a stitched raw output
    (as the layer does on the whole map): ReLU, then the total of ``norm``."""
    out = np.maximum(raw, 0.0)
    total_in, total_out = np.float32(norm.sum(dtype=np.float32)), np.float32(out.sum(dtype=np.float32))
    return (out * (total_in / (total_out + np.float32(1e-6)))).astype(np.float64)


def unet_factor(model) -> int:
    """2^(number of pooling layers) of a model: 1 for the stride-1 CNNs, 4 for the U-Net."""
    import keras

    return 2 ** sum(isinstance(layer, keras.layers.MaxPooling2D) for layer in model.layers)


def deconvolve_unet_tiled(model, counts: np.ndarray, tile: int = TILE_PX, halo: int = UNET_HALO_PX,
                          conditions=None) -> np.ndarray:
    """The U-Net's estimate of one map (ny, nx) in counts per pixel: the map
    normalised by its mean counts, zero-padded at the far edges to a multiple
    of the network's pooling factor, passed through the network up to its
    flux-conserving layer in overlapping tiles (see the module text), cropped,
    and rescaled once to the input's total counts. ``conditions``: the values
    of its condition channels (:func:`skyml.lhaaso.models.psf_conditions`),
    for a U-Net that has them."""
    import keras

    from .models import FluxConserving, as_input
    from .simulate import map_scale, normalise

    last = model.layers[-1]
    if not isinstance(last, FluxConserving):
        raise CommandError("the U-Net model does not end in its flux-conserving layer")
    raw_model = keras.Model(model.inputs[0], last.input[1])
    m = unet_factor(model)
    if tile % m or halo % m:
        raise ValueError(f"tile ({tile}) and halo ({halo}) must be multiples of {m}")
    counts = np.asarray(counts, dtype=np.float64)
    ny, nx = counts.shape
    py, px = -(-ny // m) * m, -(-nx // m) * m
    scale = map_scale(counts[None])
    norm = np.zeros((py, px), np.float32)
    norm[:ny, :nx] = normalise(counts[None], scale)[0]
    raw = _stitched(lambda block: np.asarray(raw_model(as_input(block[None], conditions=conditions),
                                                       training=False))[0, ..., 0], norm, tile, halo)
    return _flux_conserved(raw[:ny, :nx], norm) * scale[0]


#: the U-Net's readout by default: the one notebook 08 chose for the published U-Net on its validation maps
#: (the mean over the 8 orientations; results key ``unet_lhai_dihedral``, which a test holds this to)
UNET_DIHEDRAL = True


def dihedral_readout(args) -> bool:
    """``--dihedral`` / ``--no-dihedral`` as given, else :data:`UNET_DIHEDRAL` for the U-Net and plain for the CNNs."""
    return bool(args.dihedral) if args.dihedral is not None else bool(args.unet and UNET_DIHEDRAL)


def deconvolve_map(model, counts: np.ndarray, sigma1_deg=None, dihedral: bool = False, conditions=None) -> np.ndarray:
    """One map through the CNN (:func:`deconvolve_tiled`, with the PSF width
    ``sigma1_deg`` of the PSF-conditioned CNN) or the U-Net
    (:func:`deconvolve_unet_tiled`, with its ``conditions``); with
    ``dihedral``, the mean over its 8 rotations and flips, each turned back."""
    unet = unet_factor(model) > 1

    def once(c):
        return deconvolve_unet_tiled(model, c, conditions=conditions) if unet else deconvolve_tiled(model, c, sigma1_deg)

    return dihedral_mean(once, counts) if dihedral else once(counts)


@dataclass
class State(LoadedModel):
    conditioned: bool
    psf: tuple | None = None  # (core sigma [deg], tail ratio, tail weight) the U-Net is told; None: unknown
    conditions: np.ndarray | None = None  # the U-Net's condition channels


def _unet_psf(args: argparse.Namespace, path: Path, metadata: dict, channels: int):
    """(told PSF or None, condition values or None) of the U-Net from the
    options, checked against the ranges of its training (metadata)."""
    from . import models, psf
    from . import simulate as sim

    told = args.psf_sigma_deg is not None
    if channels == 1:  # a U-Net without condition channels is never told the PSF
        if told:
            raise CommandError(f"{path}: this U-Net has no PSF input; leave out --psf-sigma-deg")
        return None, None
    if channels != 1 + models.PSF_CONDITIONS:
        raise CommandError(f"{path}: model has {channels} input channel(s); the U-Net of notebook 08 has "
                           f"{1 + models.PSF_CONDITIONS} (the counts and its PSF conditions)")
    if not told:
        return None, models.psf_conditions(1)[0]
    nominal = float(metadata.get("sigma1_deg", psf.SIGMA1_DEG[25.0]))
    rand = metadata.get("randomisation") or {}
    scale = rand.get("sigma_scale", sim.RANDOM_SIGMA_SCALE)
    told_psf = (float(args.psf_sigma_deg),
                psf.TAIL_RATIO if args.psf_tail_ratio is None else float(args.psf_tail_ratio),
                psf.tail_weight() if args.psf_tail_weight is None else float(args.psf_tail_weight))
    ranges = (("--psf-sigma-deg", told_psf[0], (scale[0] * nominal, scale[1] * nominal), " deg"),
              ("--psf-tail-ratio", told_psf[1], tuple(rand.get("tail_ratio", sim.RANDOM_TAIL_RATIO)), ""),
              ("--psf-tail-weight", told_psf[2], tuple(rand.get("tail_weight", sim.RANDOM_TAIL_WEIGHT)), ""))
    for flag, value, (lo, hi), unit in ranges:
        if not lo <= value <= hi:
            raise CommandError(f"{flag} {value:g} is outside the U-Net's training range {lo:.4g}-{hi:.4g}{unit}")
    return told_psf, models.psf_conditions(1, *told_psf)[0]


def deconvolve_setup(args: argparse.Namespace) -> State:
    told = args.psf_sigma_deg is not None
    tail = args.psf_tail_ratio is not None or args.psf_tail_weight is not None
    if tail and not (args.unet and told):
        raise CommandError("--psf-tail-ratio and --psf-tail-weight describe the PSF told to the U-Net: "
                           "use them with --unet and --psf-sigma-deg")
    conditioned = told and not args.unet
    if conditioned and not LHAASO_PSF_RANGE_DEG[0] <= args.psf_sigma_deg <= LHAASO_PSF_RANGE_DEG[1]:
        raise CommandError(f"--psf-sigma-deg {args.psf_sigma_deg} is outside the PSF-conditioned CNN's "
                           f"range {LHAASO_PSF_RANGE_DEG[0]}-{LHAASO_PSF_RANGE_DEG[1]} deg")
    trained = LHAASO_PSF_CNN if conditioned else LHAASO_UNET if args.unet else LHAASO_CNN
    path = model_path(trained, args)
    load_models_quietly("lhaaso.models")  # registers the custom layers
    model, metadata = load_trained_model(path, trained)
    if args.unet and unet_factor(model) == 1:
        raise CommandError(f"{path}: --unet needs the U-Net of notebook 08 (lhaaso_unet_lhai.keras), "
                           "not a CNN without pooling layers")
    channels = int(model.input_shape[-1])
    if args.unet:
        told_psf, conditions = _unet_psf(args, path, metadata, channels)
        return State(args, path, model, metadata, False, told_psf, conditions)
    if channels != (2 if conditioned else 1):
        raise CommandError(f"{path}: model has {channels} input channel(s); "
                           + ("--psf-sigma-deg needs the PSF-conditioned CNN (2 channels)" if conditioned
                              else "pass --psf-sigma-deg for the PSF-conditioned CNN"))
    return State(args, path, model, metadata, conditioned)


def deconvolve_process(state: State, source: Path, target: Path) -> str:
    args, metadata = state.args, state.metadata
    binsz = float(metadata.get("binsz_deg", 0.1))
    guards.check_bunit(source, guards.fits_headers(source))
    counts, wcs = io.read_counts_map(source, expected_binsz_deg=binsz)
    if min(counts.shape) < 16:
        raise CommandError(f"{source}: map of {counts.shape[0]}×{counts.shape[1]} px is too small "
                           "(at least 16×16 px)")
    # background-subtracted counts are not whole numbers: integer values are not required here
    guards.check_values(source, counts, counts=True, integer=False, what="counts map")
    intensity = deconvolve_map(state.model, counts, args.psf_sigma_deg if state.conditioned else None,
                               dihedral=dihedral_readout(args), conditions=state.conditions)
    header = {
        "BUNIT": ("count", "estimated intrinsic counts per pixel"),
        "CREATOR": (f"skyml {__version__} lhaaso-deconvolve", "software that made this file"),
        "INPUT": source.name,
        "MODEL": str(state.path),
        "PROFILE": (model_profile(args, metadata), "notebook profile of the model"),
        "PSFSIG": (float(args.psf_sigma_deg if state.conditioned else metadata.get("sigma1_deg", 0.265)),
                   "[deg] core sigma of the KM2A PSF"),
        "INCOUNTS": (float(counts.sum()), "[count] total counts of the input"),
        "NETWORK": ("U-Net" if unet_factor(state.model) > 1 else "CNN", "network of notebook 08"),
        "TARGSIG": (float(metadata.get("target_sigma_deg", 0.1)), "[deg] Gaussian sigma of the output resolution"),
        "DIHEDRAL": (dihedral_readout(args), "mean over the map's 8 rotations and flips"),
    }
    if args.unet:  # the PSF the U-Net was told, or none
        del header["PSFSIG"]
        header["PSFTOLD"] = (state.psf is not None, "U-Net told the PSF (else: unknown to it)")
        if state.psf is not None:
            header["PSFSIG"] = (state.psf[0], "[deg] core sigma of the PSF told to the U-Net")
            header["PSFTAILR"] = (state.psf[1], "tail sigma / core sigma, PSF told to the U-Net")
            header["PSFTAILW"] = (state.psf[2], "tail weight of the PSF told to the U-Net")
    write_output(io.write_fits_map, target, intensity.astype(np.float32), wcs, header, overwrite=args.overwrite)
    return (f"wrote {target}: intensity map of {intensity.sum():.1f} counts from {counts.sum():.0f} "
            f"input counts ({counts.shape[0]}×{counts.shape[1]} px)")
