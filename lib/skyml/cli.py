"""The ``skyml`` command-line tool: trained models of the notebooks applied to
user data.

Usage::

    skyml --help
    skyml cta-clean INPUT -o OUTPUT.fits [--profile quick|full] [--model PATH] [--overwrite]
    skyml cta-localise INPUT -o OUTPUT.ecsv [--profile quick|full] [--model PATH] [--overwrite]
    skyml fermi-detect INPUT -o OUTPUT.ecsv [--profile quick|full] [--model PATH] [--method M]
                       [--threshold P] [--overwrite]
    skyml fermi-catalogue INPUT -o OUTPUT.fits [--profile quick|full] [--unet-model PATH]
                       [--classifier-model PATH] [--flux-model PATH] [--threshold P] [--overwrite]
    skyml lhaaso-deconvolve INPUT -o OUTPUT.fits [--profile quick|full] [--model PATH]
                       [--psf-sigma-deg DEG] [--overwrite]
    skyml radio-counts INPUT -o OUTPUT.ecsv [--profile quick|full] [--model PATH] [--overwrite]
    skyml ctao-detect INPUT -o OUTPUT.ecsv [--profile quick|full] [--model PATH] [--threshold P] [--overwrite]
    skyml optical-detect INPUT -o OUTPUT.ecsv [--profile quick|full] [--model PATH] [--threshold P]
                       [--overwrite]

Each subcommand is one function decorated with :func:`subcommand`, which
registers it in :data:`COMMANDS` together with its arguments (built from the
shared :data:`INPUT_CTA`, :func:`output`, :data:`PROFILE`, :data:`MODEL` and
:data:`OVERWRITE` helpers). The function receives the parsed arguments and
returns the line printed on success.

Errors the user can fix (bad input, missing model, existing output) print one
line ``skyml <command>: error: <message>`` on stderr and exit with status 2,
without a traceback; outputs are written atomically, so a failed run leaves no
output file. Heavy libraries (Keras, gammapy) are imported inside the
commands so that ``skyml --help`` is fast.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from . import __version__

PROG = "skyml"
#: Exit status of every expected error (as for argparse usage errors).
EXIT_ERROR = 2


class CommandError(Exception):
    """An error the user can fix; printed as one line, exit status 2."""


@dataclass(frozen=True)
class Argument:
    """Positional ``flags`` and keyword arguments of ``ArgumentParser.add_argument``."""

    flags: tuple[str, ...]
    options: dict[str, Any]


def arg(*flags: str, **options: Any) -> Argument:
    """An argument of a subcommand, spelled as for ``add_argument``."""
    return Argument(flags, options)


@dataclass(frozen=True)
class Command:
    """A registered subcommand: its name, ``--help`` texts, arguments, and
    the function that runs it and returns the success line."""

    name: str
    help: str
    description: str
    arguments: tuple[Argument, ...]
    run: Callable[[argparse.Namespace], str]


#: Registered subcommands, in the order ``skyml --help`` lists them.
COMMANDS: dict[str, Command] = {}


def subcommand(name: str, help: str, arguments: tuple[Argument, ...]):
    """Register the decorated function ``run(args) -> str`` as ``skyml <name>``.

    ``help`` is the one-line summary of ``skyml --help``; the function's
    docstring is the description of ``skyml <name> --help``.
    """

    def register(run: Callable[[argparse.Namespace], str]):
        if name in COMMANDS:
            raise ValueError(f"subcommand {name!r} registered twice")
        COMMANDS[name] = Command(name, help, (run.__doc__ or help).strip(), tuple(arguments), run)
        return run

    return register


# ---------------------------------------------------------------------------
# Shared arguments
# ---------------------------------------------------------------------------

INPUT_CTA = arg(
    "input", metavar="INPUT", type=Path,
    help="GADF DL3 event list (FITS with an EVENTS HDU), or a 200×200 counts map "
         "FITS image at 0.025°/px with a celestial WCS",
)


def output(suffix: str, what: str) -> Argument:
    """The required ``-o/--output`` file argument."""
    return arg("-o", "--output", metavar=f"OUTPUT{suffix}", type=Path, required=True,
               help=f"{what} to write (refused if it exists, unless --overwrite)")


PROFILE = arg(
    "--profile", choices=("quick", "full"), default="quick",
    help="which notebook run's trained model to use: data/models/<profile>/ (default: quick)",
)
MODEL = arg("--model", metavar="PATH", type=Path, default=None,
            help="a .keras model file to use instead of the profile's (its .json metadata "
                 "sidecar must sit next to it)")
OVERWRITE = arg("--overwrite", action="store_true", help="replace OUTPUT if it exists")


# ---------------------------------------------------------------------------
# Helpers of the commands
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainedModel:
    """A model file of the notebooks: its file name under ``models_dir(profile)``,
    the notebook that trains it, and the ``"task"`` its metadata records
    (:mod:`skyml.cta.pipeline`)."""

    file_name: str
    notebook: str  # number prefix, e.g. "02"
    description: str
    task: str


CTA_CLEANER = TrainedModel("cta_cleaner.keras", "02", "CNN-Cleaner", "cta-clean")
CTA_LOCALISER = TrainedModel("cta_localiser.keras", "03", "improved localiser", "cta-localise")
FERMI_UNET = TrainedModel("fermi_unet.keras", "04", "Fermi-LAT multi-input U-Net", "fermi-detect")


def check_output(path: Path, overwrite: bool) -> None:
    """Refuse early (before any slow work) an output that cannot be written."""
    if path.is_dir():
        raise CommandError(f"{path}: is a folder; give an output file name")
    if not path.parent.is_dir():
        raise CommandError(f"{path}: output folder {path.parent} does not exist")
    if path.exists() and not overwrite:
        raise CommandError(f"{path}: output file exists; pass --overwrite to replace it")


def model_path(trained: TrainedModel, args: argparse.Namespace) -> Path:
    """``--model`` or the profile's model file; a missing file is a
    :class:`CommandError` that says how to make it."""
    from . import paths

    if args.model is not None:
        path = args.model
        if not path.is_file():
            raise CommandError(f"model file not found: {path} (given with --model)")
        return path
    path = paths.models_dir(args.profile) / trained.file_name
    if not path.is_file():
        profile_option = "" if args.profile == "quick" else f" --profile {args.profile}"
        raise CommandError(
            f"{trained.description} model not found: {path}; train it by running notebook "
            f"{trained.notebook} with the {args.profile} profile: "
            f"python run_all.py{profile_option} --only {trained.notebook}"
        )
    return path


#: Start-up messages that TensorFlow's C++ code writes to stderr whatever
#: TF_CPP_MIN_LOG_LEVEL says; dropped so that an error stays one line.
TENSORFLOW_NOISE = (
    "All log messages before absl::InitializeLog()",
    "oneDNN custom operations are on",
    "cpu_feature_guard",
    "To enable the following instructions",
    "Unable to register cu",  # CUDA plug-in factories on CPU-only machines
)


@contextlib.contextmanager
def filtered_stderr(noise: tuple[str, ...] = TENSORFLOW_NOISE):
    """Capture file descriptor 2 (C and Python writes alike) and pass on every
    line that contains none of ``noise``."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to filter
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().decode(errors="replace").splitlines()
                    if line.strip() and not any(n in line for n in noise)]
            if kept:
                print("\n".join(kept), file=sys.stderr)


def load_trained_model(path: Path, trained: TrainedModel):
    """(model, metadata) of :func:`skyml.cta.models.load_model`, with its
    errors (missing sidecar, corrupt file) as :class:`CommandError`; a model
    whose metadata records another task (e.g. the talk's regressor, whose
    input is the cleaner output) is refused."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # no TensorFlow info/warning logs
    with filtered_stderr():
        from .cta.models import load_model

    try:
        with warnings.catch_warnings():
            # a compiled model saved before training has no optimizer state: harmless here
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            model, metadata = load_model(path)
    except (FileNotFoundError, ValueError) as err:
        raise CommandError(str(err)) from err
    task = metadata.get("task", trained.task)
    if task != trained.task:
        raise CommandError(f"{path}: this model was trained for the task {task!r}, not "
                           f"{trained.task!r} ({trained.description})")
    return model, metadata


def model_map_shape(model, path: Path) -> tuple[int, int]:
    """(ny, nx) of the single-channel map input of ``model``."""
    shape = tuple(model.input_shape)
    if len(shape) != 4 or shape[-1] != 1 or None in shape[1:3]:
        raise CommandError(f"{path}: model input shape {shape} is not a single-channel map")
    return int(shape[1]), int(shape[2])


def sim_params_for(model, metadata: dict, path: Path):
    """The CTA geometry of the input: the model's training parameters
    (metadata ``"sim_params"``, a :class:`CTASimParams` dict) when recorded,
    else the defaults; the map side must match the model input."""
    from .cta.simulate import CTASimParams

    recorded = metadata.get("sim_params")
    if recorded is not None:
        try:
            params = CTASimParams(**{k: tuple(v) if k == "irfs" else v for k, v in recorded.items()})
        except (TypeError, ValueError) as err:
            raise CommandError(f"{path}: invalid 'sim_params' in the model metadata ({err})") from err
    else:
        params = CTASimParams()
    if model_map_shape(model, path) != (params.npix, params.npix):
        raise CommandError(
            f"{path}: model expects {model_map_shape(model, path)} maps, but the CTA geometry "
            f"is {params.npix}×{params.npix} px"
        )
    return params


def read_input(args: argparse.Namespace, params):
    from .io import InputError, read_cta_input

    try:
        return read_cta_input(args.input, params)
    except InputError as err:
        raise CommandError(str(err)) from err


def write_output(writer: Callable, *writer_args, overwrite: bool, **writer_kwargs) -> Path:
    from .io import InputError

    try:
        return writer(*writer_args, overwrite=overwrite, **writer_kwargs)
    except FileExistsError as err:
        raise CommandError(f"{writer_args[0]}: output file exists; pass --overwrite to "
                           "replace it") from err
    except InputError as err:
        raise CommandError(str(err)) from err


def model_profile(args: argparse.Namespace, metadata: dict) -> str:
    """The profile the model was trained with: recorded in its metadata, else
    the ``--profile`` it was found by (``"unknown"`` for a ``--model`` file)."""
    if "profile" in metadata:
        return str(metadata["profile"])
    return args.profile if args.model is None else "unknown"


# ---------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------


@subcommand(
    "cta-clean",
    help="background-subtract a CTA counts map with the CNN-Cleaner",
    arguments=(INPUT_CTA, output(".fits", "cleaned map (FITS image)"), PROFILE, MODEL, OVERWRITE),
)
def cta_clean(args: argparse.Namespace) -> str:
    """Background-subtract a short CTA observation with the CNN-Cleaner
    (notebook 02). A DL3 event list is first binned into the 200×200 counts
    map of 0.025° pixels centred on its pointing. The map is smoothed with the
    Gaussian of the model's metadata (smooth_sigma_px) and stretched to [0, 1]
    by its maximum; the network output times that maximum is the cleaned map,
    in counts per pixel, written with the input's WCS."""
    import numpy as np

    check_output(args.output, args.overwrite)
    path = model_path(CTA_CLEANER, args)
    model, metadata = load_trained_model(path, CTA_CLEANER)
    if "smooth_sigma_px" not in metadata:
        raise CommandError(f"{path}: model metadata lacks 'smooth_sigma_px' (the input smoothing)")
    sigma_px = float(metadata["smooth_sigma_px"])
    params = sim_params_for(model, metadata, path)
    counts, wcs, description = read_input(args, params)

    from . import io
    from .cta.models import as_images, smooth, stretch

    try:
        scaled, scale = stretch(smooth(counts[None], sigma_px))
    except ValueError as err:
        raise CommandError(f"{path}: invalid preprocessing in the model metadata ({err})") from err
    prediction = np.asarray(model.predict(as_images(scaled), verbose=0))
    cleaned = prediction[0, ..., 0].astype(np.float64) * float(scale[0])
    # free-length strings (file names) get no comment: astropy continues long values
    header = {
        "BUNIT": ("count", "cleaned counts per pixel"),
        "CREATOR": (f"skyml {__version__} cta-clean", "software that made this file"),
        "INPUT": args.input.name,
        "MODEL": str(path),
        "PROFILE": (model_profile(args, metadata), "notebook profile of the model"),
        "SMOOTHPX": (sigma_px, "[pix] Gaussian sigma of the input smoothing"),
        "INSCALE": (float(scale[0]), "[count] stretch scale, max of smoothed input"),
        "HISTORY": f"input: {description}",
    }
    write_output(io.write_fits_map, args.output, cleaned.astype(np.float32), wcs, header,
                 overwrite=args.overwrite)
    return (f"wrote {args.output}: cleaned map of {cleaned.sum():.1f} counts "
            f"(input: {description})")


@subcommand(
    "cta-localise",
    help="localise the point source of a CTA observation with the improved CNN localiser",
    arguments=(INPUT_CTA, output(".ecsv", "position table (ECSV)"), PROFILE, MODEL, OVERWRITE),
)
def cta_localise(args: argparse.Namespace) -> str:
    """Localise the point source of a short CTA observation with the improved
    heat-map localiser (notebook 03). A DL3 event list is first binned into
    the 200×200 counts map of 0.025° pixels centred on its pointing. The
    predicted position is written as an ECSV table of one row: ra, dec (ICRS,
    deg), x_pix, y_pix (0-based, pixel centres at integers, x = column) and
    the input file name."""
    import astropy.units as u
    import numpy as np
    from astropy.table import QTable

    check_output(args.output, args.overwrite)
    path = model_path(CTA_LOCALISER, args)
    model, metadata = load_trained_model(path, CTA_LOCALISER)

    from . import io
    from .cta.models import LOCALISER_INPUT, label_to_pix, preprocess_localiser_input

    if metadata.get("input", LOCALISER_INPUT) != LOCALISER_INPUT:
        raise CommandError(f"{path}: model input {metadata['input']!r} differs from this "
                           f"version's localiser input {LOCALISER_INPUT!r}")
    params = sim_params_for(model, metadata, path)
    counts, wcs, description = read_input(args, params)

    label = np.asarray(model.predict(preprocess_localiser_input(counts[None]), verbose=0))[0]
    x_pix, y_pix = (float(v) for v in label_to_pix(label, counts.shape))
    position = wcs.pixel_to_world(x_pix, y_pix).icrs
    table = QTable(
        {
            "ra": [position.ra.deg] * u.deg,
            "dec": [position.dec.deg] * u.deg,
            "x_pix": [x_pix],
            "y_pix": [y_pix],
            "input": [args.input.name],
        }
    )
    table["x_pix"].description = "source column, 0-based pixel, pixel centres at integers"
    table["y_pix"].description = "source row, 0-based pixel, pixel centres at integers"
    table["ra"].description = "source right ascension (ICRS)"
    table["dec"].description = "source declination (ICRS)"
    table.meta.update(
        {
            "creator": f"skyml {__version__} cta-localise",
            "model": str(path),
            "profile": model_profile(args, metadata),
            "input_description": description,
        }
    )
    write_output(io.write_table, args.output, table, overwrite=args.overwrite, format="ascii.ecsv")
    return (f"wrote {args.output}: source at RA {position.ra.deg:.4f}°, Dec {position.dec.deg:.4f}° "
            f"(x {x_pix:.2f}, y {y_pix:.2f} px; input: {description})")


# ---------------------------------------------------------------------------
# fermi-detect
# ---------------------------------------------------------------------------

INPUT_FERMI = arg(
    "input", metavar="INPUT", type=Path,
    help="counts in the six energy bins 0.3-1-3-10-30-100-1000 GeV: a WCS counts cube (gammapy Map or "
         "Fermi gtbin CCUBE) with 0.15625° pixels, width and height multiples of 64; or HEALPix counts "
         "(all-sky or partial), one gammapy HEALPix map per energy bin in HDUs COUNTS_E0..COUNTS_E5 "
         "(any NSIDE per bin) or one HEALPix map with the six-bin energy axis",
)


@subcommand(
    "fermi-detect",
    help="detect Fermi-LAT point sources in a counts cube with the multi-input U-Net",
    arguments=(
        INPUT_FERMI, output(".ecsv", "source list (ECSV, or FITS with a .fits suffix)"), PROFILE, MODEL,
        arg("--method", choices=("unet_kmeans", "unet_log"), default="unet_kmeans",
            help="positions from the probability map by k-means (default) or Laplacian of Gaussian"),
        arg("--threshold", type=float, default=0.5,
            help="probability threshold of source pixels (default: 0.5; the seed used 0.2 on real data)"),
        OVERWRITE,
    ),
)
def fermi_detect(args: argparse.Namespace) -> str:
    """Detect point sources in a Fermi-LAT counts cube with the multi-input
    U-Net of notebook 04. A WCS cube is cut into 64×64-pixel (10°×10°) tiles;
    HEALPix counts are reprojected (counts preserved) onto the 10°×10° patches
    centred on the HEALPix NSIDE=8 pixel centres that the map covers, and a
    detection is kept only from the patch of the NSIDE=8 pixel that contains
    it, so overlapping patches give no duplicates. The probability map of
    each patch is turned into positions by k-means with a penalised number of
    clusters (or LoG). The source list has glon, glat, ra, dec [deg],
    probability and the input pixel (x_pix, y_pix; NaN for HEALPix input)."""
    check_output(args.output, args.overwrite)
    if not 0.0 < args.threshold < 1.0:
        raise CommandError(f"--threshold must be between 0 and 1, got {args.threshold}")
    path = model_path(FERMI_UNET, args)
    with filtered_stderr():
        from .fermi import models as _fermi_models  # noqa: F401  registers the U-Net loss
    model, metadata = load_trained_model(path, FERMI_UNET)

    from . import io
    from .fermi.cube import detect_in_cube, detections_table, read_counts_cube
    from .fermi.simulate import FermiSimParams

    try:
        params = FermiSimParams.from_dict(metadata["sim_params"]) if "sim_params" in metadata \
            else FermiSimParams()
    except (TypeError, ValueError, KeyError) as err:
        raise CommandError(f"{path}: invalid 'sim_params' in the model metadata ({err})") from err
    from .fermi import healpix

    extra = {}
    if healpix.is_healpix_file(args.input):
        try:
            maps, description = healpix.read_healpix_counts(args.input, params)
        except io.InputError as err:
            raise CommandError(str(err)) from err
        det = healpix.detect_in_healpix(model, maps, params, args.method, args.threshold)
        if det["n_patches"] == 0:
            raise CommandError(f"{args.input}: the HEALPix map covers none of the 10°×10° patches "
                               f"centred on the NSIDE={healpix.NSIDE} pixel centres")
        table = healpix.sky_detections_table(det["glon"], det["glat"], det["probability"])
        description = f"{description}, {det['n_patches']} patches"
        extra = {"patches": int(det["n_patches"])}
    else:
        try:
            counts, wcs, description = read_counts_cube(args.input, params)
        except io.InputError as err:
            raise CommandError(str(err)) from err
        x, y, prob = detect_in_cube(model, counts, params, args.method, args.threshold)
        table = detections_table(x, y, prob, wcs)
    table.meta.update({"creator": f"skyml {__version__} fermi-detect", "model": str(path),
                       "profile": model_profile(args, metadata), "method": args.method,
                       "thresh": float(args.threshold), "input": description.replace("×", "x"), **extra})
    write_output(io.write_table, args.output, table, overwrite=args.overwrite)
    return f"wrote {args.output}: {len(table)} sources (input: {description}, {args.method})"


# ---------------------------------------------------------------------------
# lhaaso-deconvolve
# ---------------------------------------------------------------------------

LHAASO_CNN = TrainedModel("lhaaso_cnn.keras", "08", "LHAASO deconvolution CNN", "lhaaso-deconvolve")
LHAASO_PSF_CNN = TrainedModel("lhaaso_psf_conditioned.keras", "08", "LHAASO PSF-conditioned CNN",
                              "lhaaso-deconvolve")
#: PSF widths the CLI accepts for the PSF-conditioned CNN (its training range, ±10 %)
LHAASO_PSF_RANGE_DEG = (0.15, 0.29)


@subcommand(
    "lhaaso-deconvolve",
    help="deconvolve a LHAASO KM2A counts map (0.1° pixels) with the CNN of notebook 08",
    arguments=(
        arg("input", metavar="INPUT", type=Path,
            help="counts map: a FITS image with a celestial WCS, 0.1° pixels, at least 16×16"),
        output(".fits", "intensity map (FITS image)"), PROFILE, MODEL,
        arg("--psf-sigma-deg", type=float, default=None, metavar="DEG",
            help="core Gaussian sigma of the KM2A PSF; given, the PSF-conditioned CNN is used "
                 f"({LHAASO_PSF_RANGE_DEG[0]}-{LHAASO_PSF_RANGE_DEG[1]} deg); default: the CNN "
                 "trained at 25 TeV (0.265 deg)"),
        OVERWRITE,
    ),
)
def lhaaso_deconvolve(args: argparse.Namespace) -> str:
    """Deconvolve a LHAASO KM2A counts map with the SRCNN-like CNN of
    notebook 08 (or, with --psf-sigma-deg, the PSF-conditioned CNN). The
    networks are fully convolutional, so any map size at 0.1°/px works. The
    map is divided by its mean counts per pixel, passed through the network
    and multiplied back: the output is the estimated intrinsic counts per
    pixel at the networks' target resolution (a Gaussian of 0.1° sigma),
    written with the input's WCS. The networks keep the total counts of the
    input, so the map should be free of a flat background (subtract it first)."""
    import numpy as np

    check_output(args.output, args.overwrite)
    conditioned = args.psf_sigma_deg is not None
    if conditioned and not LHAASO_PSF_RANGE_DEG[0] <= args.psf_sigma_deg <= LHAASO_PSF_RANGE_DEG[1]:
        raise CommandError(f"--psf-sigma-deg {args.psf_sigma_deg} is outside the PSF-conditioned CNN's "
                           f"range {LHAASO_PSF_RANGE_DEG[0]}-{LHAASO_PSF_RANGE_DEG[1]} deg")
    trained = LHAASO_PSF_CNN if conditioned else LHAASO_CNN
    path = model_path(trained, args)
    with filtered_stderr():
        from .lhaaso import models as _lhaaso_models  # noqa: F401  registers the VAE layer
    model, metadata = load_trained_model(path, trained)
    channels = int(model.input_shape[-1])
    if channels != (2 if conditioned else 1):
        raise CommandError(f"{path}: model has {channels} input channel(s); "
                           + ("--psf-sigma-deg needs the PSF-conditioned CNN (2 channels)" if conditioned
                              else "pass --psf-sigma-deg for the PSF-conditioned CNN"))

    from . import io
    from .lhaaso.pipeline import deconvolve

    binsz = float(metadata.get("binsz_deg", 0.1))
    try:
        counts, wcs = io.read_counts_map(args.input, expected_binsz_deg=binsz)
    except io.InputError as err:
        raise CommandError(str(err)) from err
    if min(counts.shape) < 16:
        raise CommandError(f"{args.input}: map of {counts.shape[0]}×{counts.shape[1]} px is too small "
                           "(at least 16×16 px)")
    intensity = deconvolve(model, counts[None], args.psf_sigma_deg)[0]
    header = {
        "BUNIT": ("count", "estimated intrinsic counts per pixel"),
        "CREATOR": (f"skyml {__version__} lhaaso-deconvolve", "software that made this file"),
        "INPUT": args.input.name,
        "MODEL": str(path),
        "PROFILE": (model_profile(args, metadata), "notebook profile of the model"),
        "PSFSIG": (float(args.psf_sigma_deg if conditioned else metadata.get("sigma1_deg", 0.265)),
                   "[deg] core sigma of the KM2A PSF"),
        "INCOUNTS": (float(counts.sum()), "[count] total counts of the input"),
    }
    write_output(io.write_fits_map, args.output, intensity.astype(np.float32), wcs, header,
                 overwrite=args.overwrite)
    return (f"wrote {args.output}: intensity map of {intensity.sum():.1f} counts from {counts.sum():.0f} "
            f"input counts ({counts.shape[0]}×{counts.shape[1]} px)")


# ---------------------------------------------------------------------------
# fermi-catalogue
# ---------------------------------------------------------------------------

FERMI_CLASSIFIER = TrainedModel("fermi_classifier.keras", "05", "Fermi-LAT 3D-CNN classifier", "fermi-catalogue")
FERMI_FLUX = TrainedModel("fermi_flux.keras", "05", "Fermi-LAT mean-variance flux network", "fermi-catalogue")


@subcommand(
    "fermi-catalogue",
    help="Fermi-LAT catalogue (position, class, flux ± error, DR2 name) from a yearly counts cube",
    arguments=(
        arg("input", metavar="INPUT", type=Path,
            help="WCS counts cube (gammapy Map) with axes 'energy' (0.3-1-3-10-30-100-1000 GeV) and "
                 "'year' (10 bins), 0.15625° pixels, width and height multiples of 64"),
        output(".fits", "catalogue table (FITS, or ECSV with a .ecsv suffix)"), PROFILE,
        arg("--unet-model", metavar="PATH", type=Path, default=None,
            help="U-Net .keras file instead of the profile's fermi_unet.keras (notebook 04)"),
        arg("--classifier-model", metavar="PATH", type=Path, default=None,
            help="3D-CNN .keras file instead of the profile's fermi_classifier.keras (notebook 05)"),
        arg("--flux-model", metavar="PATH", type=Path, default=None,
            help="flux network .keras file instead of the profile's fermi_flux.keras (notebook 05)"),
        arg("--threshold", type=float, default=0.5, help="U-Net probability threshold (default: 0.5)"),
        arg("--dr2-radius-deg", type=float, default=0.5,
            help="association radius to 4FGL-DR2 names (default: 0.5, as Bhattacharyya et al. 2022)"),
        OVERWRITE,
    ),
)
def fermi_catalogue(args: argparse.Namespace) -> str:
    """Build the catalogue-like product of Pérez-Romero et al. (2025) from a yearly Fermi-LAT
    counts cube: notebook 04's U-Net + k-means on the 10-year sum finds the
    sources; around each, a yearly cut-out goes to notebook 05's 3D CNN
    (class AGN / PSR / FAKE and probabilities) and mean-variance network
    (F(1-100 GeV) ± error); each source gets the nearest 4FGL-DR2 name within
    --dr2-radius-deg. Columns: ASID_LON, ASID_LAT, RA, DEC, DET_PROB, CLASS,
    CLASS_PROB, P_AGN, P_PSR, P_FAKE, FLUX, FLUX_ERR, FLUX_LO, FLUX_HI,
    DR2_NAME, DR2_SEP."""
    check_output(args.output, args.overwrite)
    if not 0.0 < args.threshold < 1.0:
        raise CommandError(f"--threshold must be between 0 and 1, got {args.threshold}")
    if not args.dr2_radius_deg > 0:
        raise CommandError(f"--dr2-radius-deg must be positive, got {args.dr2_radius_deg}")
    with filtered_stderr():
        from .fermi import flux as _fermi_flux  # noqa: F401  registers the flux loss
        from .fermi import models as _fermi_models  # noqa: F401  registers the U-Net loss
    loaded = {}
    for trained, given in ((FERMI_UNET, args.unet_model), (FERMI_CLASSIFIER, args.classifier_model),
                           (FERMI_FLUX, args.flux_model)):
        path = model_path(trained, argparse.Namespace(model=given, profile=args.profile))
        loaded[trained.file_name] = (path,) + load_trained_model(path, trained)
    unet_path, unet, unet_meta = loaded[FERMI_UNET.file_name]
    clf_path, classifier, clf_meta = loaded[FERMI_CLASSIFIER.file_name]
    flux_path, flux_model, _ = loaded[FERMI_FLUX.file_name]
    if clf_meta.get("role", "classifier") != "classifier" or tuple(classifier.output_shape)[-1] != 3:
        raise CommandError(f"{clf_path}: not the 3-class classifier of notebook 05")
    if tuple(flux_model.output_shape)[-1] != 2:
        raise CommandError(f"{flux_path}: not the (mu, sigma) flux network of notebook 05")

    from . import io
    from .fermi.catalogue import build_catalogue, read_yearly_cube
    from .fermi.simulate import FermiSimParams

    try:
        params = FermiSimParams.from_dict(unet_meta["sim_params"]) if "sim_params" in unet_meta \
            else FermiSimParams()
    except (TypeError, ValueError, KeyError) as err:
        raise CommandError(f"{unet_path}: invalid 'sim_params' in the model metadata ({err})") from err
    try:
        counts, wcs, description = read_yearly_cube(args.input, params)
    except io.InputError as err:
        raise CommandError(str(err)) from err
    npix = int(classifier.input_shape[0][1])
    table, _, n_edge = build_catalogue(counts, wcs, unet, params, classifier, flux_model, npix,
                                       threshold=args.threshold, dr2_radius_deg=args.dr2_radius_deg)
    table.meta.update({"creator": f"skyml {__version__} fermi-catalogue", "unet": str(unet_path),
                       "classify": str(clf_path), "fluxnet": str(flux_path),
                       "profile": model_profile(argparse.Namespace(profile=args.profile, model=args.classifier_model),
                                                clf_meta),
                       "thresh": float(args.threshold), "n_edge": int(n_edge),
                       "input": description.replace("×", "x")})
    write_output(io.write_table, args.output, table, overwrite=args.overwrite)
    return (f"wrote {args.output}: {len(table)} sources ({n_edge} detections near the edge dropped; "
            f"input: {description})")


# ---------------------------------------------------------------------------
# radio-counts
# ---------------------------------------------------------------------------

RADIO_CNN = TrainedModel("radio_counts_cnn.keras", "07", "radio counts CNN (restored images)", "radio-counts")


@subcommand(
    "radio-counts",
    help="radio source counts per flux bin, below the detection threshold, with the CNN of notebook 07",
    arguments=(
        arg("input", metavar="INPUT", type=Path,
            help="restored radio image: FITS with a celestial WCS, BUNIT Jy/beam, the restoring beam in "
                 "BMAJ/BMIN/BPA, and the pixel size and beam of the model's training images"),
        output(".ecsv", "counts table (ECSV, or FITS with a .fits suffix)"), PROFILE, MODEL, OVERWRITE,
    ),
)
def radio_counts(args: argparse.Namespace) -> str:
    """Count radio sources per flux bin, down to far below the 5 sigma
    detection threshold, with the restored-image CNN of notebook 07. The
    image is cut into the model's context blocks (rows and columns that do not
    fill a whole one are left out) and these into sub-images (those with NaN
    pixels are left out); each sub-image is counted with the pixel histogram
    of its block as second input, and the counts per bin are summed. The flux bins, pixel size, beam and
    noise scale come from the model's metadata sidecar; an image with another
    pixel size or beam is refused (not resampled). Columns: s_min, s_max, s_mid
    [Jy], x_below_threshold, counts, counts_err (the validation RMS relative
    residual of the bin times the counts), dnds, dnds_err [Jy-1 sr-1],
    euclidean, euclidean_err [Jy^1.5 sr-1]."""
    check_output(args.output, args.overwrite)
    path = model_path(RADIO_CNN, args)
    model, metadata = load_trained_model(path, RADIO_CNN)
    needed = ("edges_jy", "pixel_arcsec", "sub_npix", "context_npix", "bmaj_deg", "bmin_deg", "bpa_deg",
              "input_scale_jy", "target_scaler", "val_rel_rms", "threshold_jy")
    lacking = [k for k in needed if k not in metadata]
    if lacking:
        raise CommandError(f"{path}: model metadata lacks {', '.join(lacking)}")
    if metadata.get("image_kind", "restored") != "restored":
        raise CommandError(f"{path}: this network was trained on {metadata['image_kind']} images, not on "
                           "restored images")

    from . import io
    from .radio.pipeline import count_image, counts_table, read_restored_image

    image, _, beam = read_restored_image(args.input, metadata)
    try:
        result = count_image(model, metadata, image)
    except ValueError as err:
        raise CommandError(f"{args.input}: {err}") from err
    table = counts_table(result, metadata)
    table.meta.update({"creator": f"skyml {__version__} radio-counts", "model": str(path),
                       "profile": model_profile(args, metadata), "input": args.input.name,
                       "n_tiles": result["n_tiles"], "n_tiles_skipped": result["n_tiles_skipped"],
                       "area_deg2": result["area_sr"] / (3.141592653589793 / 180.0) ** 2,
                       "threshold_jy": float(metadata["threshold_jy"]), **beam})
    write_output(io.write_table, args.output, table, overwrite=args.overwrite)
    return (f"wrote {args.output}: counts in {len(table)} flux bins from {result['n_tiles']} sub-images "
            f"({result['n_tiles_skipped']} with NaN pixels skipped)")


# ---------------------------------------------------------------------------
# ctao-detect, optical-detect
# ---------------------------------------------------------------------------

CTAO_UNET = TrainedModel("ctao_unet.keras", "06", "CTAO survey U-Net (log scaling)", "ctao-detect")
OPTICAL_UNET = TrainedModel("optical_unet.keras", "06", "optical U-Net", "optical-detect")


@subcommand(
    "ctao-detect",
    help="detect sources in a CTAO survey counts cube (3 energy bins, 0.02° pixels) with the U-Net + LoG",
    arguments=(
        arg("input", metavar="INPUT", type=Path,
            help="WCS counts cube (gammapy Map) with the energy bins 0.07-0.788-8.88-100 TeV and 0.02° pixels"),
        output(".ecsv", "source list (ECSV, or FITS with a .fits suffix)"), PROFILE, MODEL,
        arg("--threshold", type=float, default=0.5,
            help="probability threshold of a LoG blob (default: 0.5; notebook 06 reports the validation choice)"),
        OVERWRITE,
    ),
)
def ctao_detect(args: argparse.Namespace) -> str:
    """Detect sources in a CTAO Galactic-plane-survey counts cube with the
    U-Net of notebook 06 (log1p(counts) input) and scikit-image blob_log on
    its probability map. The network is fully convolutional: any map of at
    least 16×16 px works. The source list has glon, glat, ra, dec [deg],
    probability and the input pixel (x_pix, y_pix)."""
    check_output(args.output, args.overwrite)
    if not 0.0 < args.threshold < 1.0:
        raise CommandError(f"--threshold must be between 0 and 1, got {args.threshold}")
    path = model_path(CTAO_UNET, args)
    with filtered_stderr():
        from .ctao import models as _ctao_models  # noqa: F401  registers the loss
    model, metadata = load_trained_model(path, CTAO_UNET)

    from . import io
    from .ctao import detect as ctao_detect_mod
    from .ctao.models import predict as ctao_predict
    from .ctao.pipeline import detections_table, read_counts_cube
    from .ctao.simulate import SurveyParams, network_input

    try:
        params = SurveyParams.from_dict(metadata["sim_params"]) if "sim_params" in metadata else SurveyParams()
    except (TypeError, ValueError, KeyError) as err:
        raise CommandError(f"{path}: invalid 'sim_params' in the model metadata ({err})") from err
    scaling = metadata.get("scaling", "log")
    try:
        counts, wcs, description = read_counts_cube(args.input, params.binsz_deg)
    except io.InputError as err:
        raise CommandError(str(err)) from err
    prob = ctao_predict(model, network_input(counts[None], params, scaling), batch_size=1)[0, ..., 0]
    x, y, score = ctao_detect_mod.log_positions(prob, threshold=args.threshold)
    table = detections_table(x, y, score, wcs)
    table.meta.update({"creator": f"skyml {__version__} ctao-detect", "model": str(path),
                       "profile": model_profile(args, metadata), "thresh": float(args.threshold),
                       "input": description.replace("×", "x")})
    write_output(io.write_table, args.output, table, overwrite=args.overwrite)
    return f"wrote {args.output}: {len(table)} sources (input: {description})"


@subcommand(
    "optical-detect",
    help="detect stars in an optical image (MeerLICHT-like, 2-3\" PSF) with the U-Net + LoG",
    arguments=(
        arg("input", metavar="INPUT", type=Path, help="FITS image (2D, finite values), at least 32×32 px"),
        output(".ecsv", "source list (ECSV, or FITS with a .fits suffix)"), PROFILE, MODEL,
        arg("--threshold", type=float, default=None,
            help="probability threshold of a LoG blob (default: the model's, chosen on validation tiles)"),
        OVERWRITE,
    ),
)
def optical_detect(args: argparse.Namespace) -> str:
    """Detect stars in an optical image with the U-Net of notebook 06
    (asinh of the background-subtracted image in units of its robust noise)
    and scikit-image blob_log. The source list has x_pix, y_pix (0-based,
    pixel centres at integers), probability, and ra, dec [deg] when the image
    has a celestial WCS."""
    import astropy.units as u
    import numpy as np
    from astropy.table import QTable

    check_output(args.output, args.overwrite)
    if args.threshold is not None and not 0.0 < args.threshold < 1.0:
        raise CommandError(f"--threshold must be between 0 and 1, got {args.threshold}")
    path = model_path(OPTICAL_UNET, args)
    with filtered_stderr():
        from .ctao import models as _ctao_models  # noqa: F401  registers the loss
    model, metadata = load_trained_model(path, OPTICAL_UNET)
    if args.threshold is None:
        args.threshold = float(metadata.get("threshold", 0.3))

    from . import io
    from .optical.pipeline import read_image, unet_detect
    from .optical.simulate import OpticalParams

    try:
        image, wcs = read_image(args.input)
    except io.InputError as err:
        raise CommandError(str(err)) from err
    det = unet_detect(model, image[None], OpticalParams(), args.threshold)
    table = QTable({"x_pix": det["x_pix"], "y_pix": det["y_pix"], "probability": det["score"]})
    if wcs is not None and len(table):
        sky = wcs.pixel_to_world(det["x_pix"], det["y_pix"]).icrs
        table["ra"], table["dec"] = sky.ra.deg * u.deg, sky.dec.deg * u.deg
    elif wcs is not None:
        table["ra"], table["dec"] = np.zeros(0) * u.deg, np.zeros(0) * u.deg
    table.meta.update({"creator": f"skyml {__version__} optical-detect", "model": str(path),
                       "profile": model_profile(args, metadata), "thresh": float(args.threshold),
                       "input": args.input.name})
    write_output(io.write_table, args.output, table, overwrite=args.overwrite)
    return f"wrote {args.output}: {len(table)} sources ({image.shape[1]}×{image.shape[0]} px)"


# ---------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The ``skyml`` parser with one subparser per registered command."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Apply the trained models of the skyml notebooks to your own data.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS.values():
        p = sub.add_parser(command.name, help=command.help, description=command.description)
        for argument in command.arguments:
            p.add_argument(*argument.flags, **argument.options)
    return parser


def _error_line(command: str, err: BaseException) -> str:
    message = " ".join(str(err).split())
    return f"{PROG} {command}: error: {message}"


def main(argv: list[str] | None = None) -> int:
    """Run ``skyml`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit
    status: 0 on success (and for ``--help``), 2 for usage and input errors."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version, usage errors
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else EXIT_ERROR)
    command = COMMANDS[args.command]
    try:
        message = command.run(args)
    except CommandError as err:
        print(_error_line(command.name, err), file=sys.stderr)
        return EXIT_ERROR
    except Exception as err:
        from .io import InputError  # imported here: keeps `skyml --help` fast

        if not isinstance(err, (InputError, FileExistsError)):
            raise  # a bug, not a user error: keep the traceback
        print(_error_line(command.name, err), file=sys.stderr)
        return EXIT_ERROR
    print(message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
