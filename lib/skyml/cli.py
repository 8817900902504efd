"""The ``skyml`` command-line tool: trained models of the notebooks applied to
user data.

Usage::

    skyml --help
    skyml COMMAND INPUT -o OUTPUT [--profile quick|full] [--model PATH] [--overwrite] [options]
    skyml COMMAND INPUT [INPUT ...] --output-dir DIR [--profile quick|full] [--model PATH] [--overwrite]

    COMMAND: cta-clean, cta-localise, fermi-detect, fermi-catalogue, lhaaso-deconvolve,
             radio-counts, ctao-detect, optical-detect

This module holds the parser and the file policy shared by every command;
each command's work lives beside its analysis (``skyml.cta.command``,
``skyml.fermi.command``, ``skyml.lhaaso.command``, ``skyml.radio.command``,
``skyml.ctao.command``, ``skyml.optical.command``), as a pair of functions
``<name>_setup(args) -> state`` (check the options, load the model: once per
run) and ``<name>_process(state, input, output) -> str`` (one input file to
one output file; returns the success line). :func:`file_command` registers
such a pair; :func:`subcommand` registers a plain ``run(args) -> str``.

File policy (:func:`plan_outputs`, :func:`check_output`):

- an output that resolves to an input (the same path, a symbolic or hard
  link to it) or that exists and is not a regular file (a folder, FIFO,
  device, socket) is refused, even with ``--overwrite``; an existing regular
  file is replaced only with ``--overwrite``;
- the output folder is checked before any computation: it must exist and a
  file must be creatable in it (a read-only or full file system, missing
  permission, ``/proc``, a name longer than the file system allows are all
  found here); outputs are written to a hidden temporary file next to the
  output, whose name always fits the file-name limit, and moved into place,
  so a failed run leaves no output; such temporaries older than an hour
  (left by a killed run) are removed;
- inputs are checked for size from their FITS headers before any data are
  read or a model is loaded (:mod:`skyml.guards`), and for degenerate values
  (all zero, constant, not finite, absurd scale, non-integer counts) once read.

Errors the user can fix (bad input, missing model, existing output, any OS
error) print one line ``skyml <command>: error: <message>`` on stderr and exit
with status 2, without a traceback. With several inputs, each failing input
gets its line and the others are still processed; the exit status is 2 when
any failed. Heavy libraries (Keras, gammapy) are imported inside the commands
so that ``skyml --help`` is fast.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import stat
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from . import __version__

PROG = "skyml"
#: Exit status of every expected error (as for argparse usage errors).
EXIT_ERROR = 2
#: Output temporaries older than this (seconds) are left-overs of a killed run.
STALE_SECONDS = 3600


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
    the function that runs it and returns the success line (or, for a file
    command, the exit status after printing its lines)."""

    name: str
    help: str
    description: str
    arguments: tuple[Argument, ...]
    run: Callable[[argparse.Namespace], str | int]


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


def inputs(help: str) -> Argument:
    """The positional input files (one or more)."""
    return arg("inputs", metavar="INPUT", type=Path, nargs="+", help=help + " (several: use --output-dir)")


def output(suffix: str, what: str) -> Argument:
    """The ``-o/--output`` file argument (one input)."""
    return arg("-o", "--output", metavar=f"OUTPUT{suffix}", type=Path, default=None,
               help=f"{what} to write (refused if it exists, unless --overwrite; never the input or a "
                    "non-regular file)")


def output_dir(name_tail: str) -> Argument:
    return arg("--output-dir", metavar="DIR", type=Path, default=None,
               help=f"write one output per input into DIR (created if missing), named <input stem>{name_tail}")


PROFILE = arg(
    "--profile", choices=("quick", "full"), default="quick",
    help="which notebook run's trained model to use: data/models/<profile>/ (default: quick)",
)
MODEL = arg("--model", metavar="PATH", type=Path, default=None,
            help="a .keras model file to use instead of the profile's (its .json metadata "
                 "sidecar must sit next to it)")
OVERWRITE = arg("--overwrite", action="store_true",
                help="replace an existing OUTPUT (a regular file that is not an input)")


# ---------------------------------------------------------------------------
# File policy
# ---------------------------------------------------------------------------

#: Suffixes stripped from an input name to make the output stem.
INPUT_SUFFIXES = (".fits.gz", ".fits.fz", ".fit.gz", ".fits", ".fit", ".fts", ".gz")


def output_name(input_path: Path, tail: str) -> str:
    name = input_path.name
    for suffix in INPUT_SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
            break
    return name + tail


def plan_outputs(args: argparse.Namespace, tail: str) -> list[tuple[Path, Path]]:
    """(input, output) pairs of ``-o`` (one input) or ``--output-dir``."""
    given = list(args.inputs)
    if args.output is not None and args.output_dir is not None:
        raise CommandError("give either -o/--output or --output-dir, not both")
    if args.output is not None:
        if len(given) != 1:
            raise CommandError(f"-o/--output takes one input, got {len(given)}; use --output-dir for several")
        return [(given[0], args.output)]
    if args.output_dir is None:
        raise CommandError("give the output file with -o/--output (or a folder with --output-dir)")
    folder = args.output_dir
    if folder.exists() and not folder.is_dir():
        raise CommandError(f"{folder}: --output-dir is not a folder")
    if not folder.exists():
        if not folder.parent.is_dir():
            raise CommandError(f"{folder}: the folder above it, {folder.parent}, does not exist")
        try:
            folder.mkdir()
        except OSError as err:
            raise CommandError(f"{folder}: cannot create the output folder ({err.strerror})") from err
    pairs, seen = [], {}
    for path in given:
        out = folder / output_name(path, tail)
        if out in seen:
            raise CommandError(f"inputs {seen[out]} and {path} would both write {out}; rename one")
        seen[out] = path
        pairs.append((path, out))
    return pairs


def _name_max(folder: Path) -> int:
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return 255


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(os.path.realpath(a)) == os.path.abspath(os.path.realpath(b))


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def sweep_stale_outputs(folder: Path, max_age_s: float = STALE_SECONDS) -> None:
    """Remove output temporaries ``.<name>.<12 hex>.tmp`` older than ``max_age_s``."""
    from .io import TEMP_NAME

    now = time.time()
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            if TEMP_NAME.match(entry.name):
                with contextlib.suppress(OSError):
                    info = entry.stat(follow_symlinks=False)
                    if stat.S_ISREG(info.st_mode) and now - info.st_mtime > max_age_s:
                        os.unlink(entry.path)


def check_output(path: Path, overwrite: bool, inputs: list[Path] = ()) -> None:
    """Refuse early (before any slow work) an output that cannot or must not be written."""
    from .io import temp_path

    path = Path(path)
    limit = _name_max(path.parent if path.parent.is_dir() else Path("."))
    if len(os.fsencode(path.name)) > limit:
        raise CommandError(f"{path}: file name of {len(os.fsencode(path.name))} bytes is longer than the "
                           f"{limit} the file system allows")
    for source in inputs:
        if (path.exists() or path.is_symlink()) and Path(source).exists() and _same_file(path, source):
            raise CommandError(f"{path}: is the input file {source}; refusing to write over an input, "
                               "even with --overwrite")
    try:
        info = path.stat()  # follows links
    except (FileNotFoundError, NotADirectoryError):
        info = None
    except OSError as err:
        raise CommandError(f"{path}: cannot use as output ({err.strerror})") from err
    if info is not None:
        if stat.S_ISDIR(info.st_mode):
            raise CommandError(f"{path}: is a folder; give an output file name")
        if not stat.S_ISREG(info.st_mode):
            raise CommandError(f"{path}: is {_kind(info.st_mode)}, not a regular file; refusing to replace it, "
                               "even with --overwrite")
        if not overwrite:
            raise CommandError(f"{path}: output file exists; pass --overwrite to replace it")
    parent = path.parent
    if not parent.is_dir():
        state = "is not a folder" if parent.exists() else "does not exist"
        raise CommandError(f"{path}: output folder {parent} {state}")
    probe = temp_path(path)
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise CommandError(f"{path}: cannot write in the output folder {parent} ({err.strerror})") from err
    sweep_stale_outputs(parent)


def check_input(path: Path) -> list:
    """Checks of an input made before any model is loaded: a readable file,
    within the size limit (from its FITS headers). Returns the headers."""
    from . import guards
    from .io import _check_file

    _check_file(Path(path))
    return guards.check_size(path)


# ---------------------------------------------------------------------------
# Helpers of the commands
# ---------------------------------------------------------------------------


@dataclass
class LoadedModel:
    """What a command's set-up hands to the processing of each input: the
    parsed arguments and the loaded model with its sidecar metadata. Each
    command adds the settings it derives once (in a subclass)."""

    args: argparse.Namespace
    path: Path
    model: object
    metadata: dict


@dataclass(frozen=True)
class TrainedModel:
    """A model file of the notebooks: its file name under ``models_dir(profile)``,
    the notebook that trains it, the ``"task"`` its metadata records
    (:mod:`skyml.cta.pipeline`) and the profiles whose run trains it."""

    file_name: str
    notebook: str  # number prefix, e.g. "02"
    description: str
    task: str
    profiles: tuple[str, ...] = ("quick", "full")


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
    if not path.is_file() and args.profile not in trained.profiles:
        raise CommandError(
            f"{trained.description} model not found: {path}; notebook {trained.notebook} trains it in the "
            f"{' and '.join(trained.profiles)} profile only: use --profile {trained.profiles[0]}"
        )
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


def load_models_quietly(module: str) -> None:
    """Import ``skyml.<module>`` (it registers custom Keras objects) with
    TensorFlow's start-up noise filtered."""
    with filtered_stderr():
        importlib.import_module(f"skyml.{module}")


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


def check_probability(value: float | None, option: str = "--threshold") -> None:
    if value is not None and not 0.0 < value < 1.0:
        raise CommandError(f"{option} must be between 0 and 1, got {value}")


# ---------------------------------------------------------------------------
# File commands: setup once, then each input
# ---------------------------------------------------------------------------


def _error_line(command: str, err: BaseException) -> str:
    if isinstance(err, OSError) and err.strerror:
        names = " -> ".join(str(n) for n in (err.filename, err.filename2) if n is not None)
        message = f"{names}: {err.strerror}" if names else err.strerror
    elif isinstance(err, MemoryError):
        message = "out of memory" + (f" ({err})" if str(err) else "")
    else:
        message = str(err) or type(err).__name__
    message = " ".join(message.split())
    return f"{PROG} {command}: error: {message}"


def _user_errors() -> tuple[type[BaseException], ...]:
    from .cache import CacheError
    from .io import InputError

    return (CommandError, InputError, FileExistsError, OSError, MemoryError, CacheError)


def run_files(name: str, impl: str, tail: str, args: argparse.Namespace) -> int:
    """Run a file command: plan and check every (input, output) pair, set up
    once, process each input; one error line per failing input."""
    jobs = plan_outputs(args, tail)
    errors = _user_errors()
    ready, failed = [], 0
    for source, target in jobs:
        try:
            check_output(target, args.overwrite, [j[0] for j in jobs])
            check_input(source)
            ready.append((source, target))
        except errors as err:
            if len(jobs) == 1:
                raise
            print(_error_line(name, err), file=sys.stderr)
            failed += 1
    if not ready:
        return EXIT_ERROR
    module_name, attr = impl.split(":")
    module = importlib.import_module(module_name)
    state = getattr(module, f"{attr}_setup")(args)
    process = getattr(module, f"{attr}_process")
    for source, target in ready:
        try:
            print(process(state, source, target), flush=True)
        except errors as err:
            if len(jobs) == 1:
                raise
            print(_error_line(name, err), file=sys.stderr, flush=True)
            failed += 1
    return EXIT_ERROR if failed else 0


def file_command(name: str, help: str, description: str, input_help: str, suffix: str, what: str,
                 tail: str, impl: str, options: tuple[Argument, ...] = (), model: bool = True):
    """Register ``skyml <name>``: inputs, -o/--output-dir, --profile, [--model],
    ``options``, --overwrite; the work is ``<impl>_setup`` / ``<impl>_process``
    of the module named by ``impl`` (``"module:name"``)."""
    arguments = (inputs(input_help), output(suffix, what), output_dir(tail), PROFILE,
                 *((MODEL,) if model else ()), *options, OVERWRITE)

    def run(args: argparse.Namespace) -> int:
        return run_files(name, impl, tail, args)

    run.__doc__ = description
    subcommand(name, help, arguments)(run)


# ---------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------

CTA_INPUT = ("GADF DL3 event list (FITS with an EVENTS HDU), or a 200×200 counts map FITS image at "
             "0.025°/px with a celestial WCS (whole counts)")
FERMI_INPUT = (
    "counts in the six energy bins 0.3-1-3-10-30-100-1000 GeV: a WCS counts cube (gammapy Map or "
    "Fermi gtbin CCUBE) with 0.15625° pixels, width and height multiples of 64; or HEALPix counts "
    "(all-sky or partial), one gammapy HEALPix map per energy bin in HDUs COUNTS_E0..COUNTS_E5 "
    "(any NSIDE per bin) or one HEALPix map with the six-bin energy axis"
)

file_command(
    "cta-clean", "background-subtract a CTA counts map with the CNN-Cleaner",
    """Background-subtract a short CTA observation with the CNN-Cleaner
    (notebook 02). A DL3 event list is first binned into the 200×200 counts
    map of 0.025° pixels centred on its pointing. The map is smoothed with the
    Gaussian of the model's metadata (smooth_sigma_px) and stretched to [0, 1]
    by its maximum; the network output times that maximum is the cleaned map,
    in counts per pixel, written with the input's WCS.""",
    CTA_INPUT, ".fits", "cleaned map (FITS image)", "_cleaned.fits", "skyml.cta.command:clean",
)

file_command(
    "cta-localise", "localise the point source of a CTA observation with the improved CNN localiser",
    """Localise the point source of a short CTA observation with the improved
    heat-map localiser (notebook 03). A DL3 event list is first binned into
    the 200×200 counts map of 0.025° pixels centred on its pointing. The heat
    map is read as in notebook 03, by the vertex of a parabola through its
    peak (sub-pixel), on the map and its 7 rotations by 90° and flips, and
    the median of the 8 positions, mapped back, is taken (the readout notebook 03
    chose on its validation maps; --orientations 1 reads the map as given,
    8 times faster). The predicted position is written as an ECSV table of one row: ra, dec (ICRS,
    deg), x_pix, y_pix (0-based, pixel centres at integers, x = column) and
    the input file name.""",
    CTA_INPUT, ".ecsv", "position table (ECSV)", "_position.ecsv", "skyml.cta.command:localise",
    options=(
        arg("--orientations", type=int, choices=(1, 8), default=8,
            help="read the map as given (1) or take the median over its 8 orientations (default: 8, notebook 03's choice)"),
    ),
)

file_command(
    "fermi-detect", "detect Fermi-LAT point sources in a counts cube with the multi-input U-Net",
    """Detect point sources in a Fermi-LAT counts cube with the multi-input
    U-Net of notebook 04. A WCS cube is cut into 64×64-pixel (10°×10°) tiles;
    HEALPix counts are reprojected (counts preserved) onto the 10°×10° patches
    centred on the HEALPix NSIDE=8 pixel centres that the map covers, and a
    detection is kept only from the patch of the NSIDE=8 pixel that contains
    it, so overlapping patches give no duplicates. The probability map of
    each patch is turned into positions by k-means with a penalised number of
    clusters (or LoG). The source list has glon, glat, ra, dec [deg],
    probability and the input pixel (x_pix, y_pix; NaN for HEALPix input).""",
    FERMI_INPUT, ".ecsv", "source list (ECSV, or FITS with a .fits suffix)", "_sources.ecsv",
    "skyml.fermi.command:detect",
    options=(
        arg("--method", choices=("unet_kmeans", "unet_log"), default="unet_kmeans",
            help="positions from the probability map by k-means (default) or Laplacian of Gaussian"),
        arg("--threshold", type=float, default=0.5,
            help="probability threshold of source pixels (default: 0.5; Bhattacharyya et al. 2022 used 0.2 on real data)"),
        arg("--kmeans-penalty", type=float, metavar="PX2",
            help="k-means: the weighted inertia [px^2] a further cluster must remove (default: the library's, "
                 "skyml.fermi.detect.PENALTY_PX2; notebook 04 tunes it on its validation patches, results key "
                 "kmeans_penalty_px2_tuned)"),
        arg("--min-peak-distance", type=int, metavar="PX",
            help="k-means: minimum distance [px] between the probability peaks that bound the number of clusters "
                 "(default: skyml.fermi.detect.MIN_PEAK_DISTANCE_PX; tuned with the penalty, "
                 "kmeans_min_peak_distance_px_tuned)"),
    ),
)

#: PSF widths the CLI accepts for the PSF-conditioned CNN (its training range, ±10 %)
LHAASO_PSF_RANGE_DEG = (0.15, 0.29)

file_command(
    "lhaaso-deconvolve", "deconvolve a LHAASO KM2A counts map (0.1° pixels) with the CNN of notebook 08",
    """Deconvolve a LHAASO KM2A counts map with the SRCNN-like CNN of
    notebook 08 (or, with --psf-sigma-deg, the PSF-conditioned CNN). The
    networks are fully convolutional, so any map size at 0.1°/px works (up to
    the size limit); a large map is processed in overlapping tiles whose
    stitched result equals the one-pass result. The map is divided by its
    mean counts per pixel, passed through the network and multiplied back:
    the output is the estimated intrinsic counts per pixel at the networks'
    target resolution (a Gaussian of 0.1° sigma), written with the input's
    WCS. The networks keep the total counts of the input, so the map should
    be free of a flat background (subtract it first; non-integer values are
    accepted for that reason). With --unet, the U-Net that notebook 08
    trained on a randomised sky and PSF (pictures, other PSF widths and
    tails) is used instead: for maps unlike the simulated Galactic plane or
    a PSF off the 25 TeV one. It is told the PSF with --psf-sigma-deg
    (and --psf-tail-ratio, --psf-tail-weight for the second Gaussian; by
    default the KM2A tail), within the ranges of its training, and that the
    PSF is unknown without it (header PSFTOLD); its output is the intrinsic
    counts per pixel without the 0.1° smoothing (header TARGSIG).
    --dihedral averages the estimates of the map's 8 rotations and flips,
    --no-dihedral reads the map as given; by default the U-Net is read as
    notebook 08 chose on its validation maps (the 8 orientations) and the
    CNNs as given.""",
    "counts map: a FITS image with a celestial WCS, 0.1° pixels, at least 16×16",
    ".fits", "intensity map (FITS image)", "_deconvolved.fits", "skyml.lhaaso.command:deconvolve",
    options=(
        arg("--psf-sigma-deg", type=float, default=None, metavar="DEG",
            help="core Gaussian sigma of the KM2A PSF; given, the PSF-conditioned CNN is used "
                 f"({LHAASO_PSF_RANGE_DEG[0]}-{LHAASO_PSF_RANGE_DEG[1]} deg), or with --unet the U-Net is told "
                 "the PSF (0.1855-0.3445 deg); default: the CNN trained at 25 TeV (0.265 deg), or a U-Net not "
                 "told the PSF"),
        arg("--psf-tail-ratio", type=float, default=None, metavar="R",
            help="with --unet and --psf-sigma-deg: the PSF's second Gaussian sigma over the core's "
                 "(1.5-4; default 2, the KM2A PSF)"),
        arg("--psf-tail-weight", type=float, default=None, metavar="W",
            help="with --unet and --psf-sigma-deg: the weight of that second Gaussian (0-0.2; default 0.0407, "
                 "the KM2A PSF)"),
        arg("--unet", action="store_true",
            help="use the U-Net trained on a randomised sky and PSF (notebook 08, lhaaso_unet_lhai.keras)"),
        arg("--dihedral", action=argparse.BooleanOptionalAction, default=None,
            help="average the estimates of the map's 8 rotations by 90 degrees and flips (8 times the work), or "
                 "not; default: yes for the U-Net (notebook 08's choice), no for the CNNs"),
    ),
)

file_command(
    "fermi-catalogue", "Fermi-LAT catalogue (position, class, flux ± error, DR2 name) from a yearly counts cube",
    """Build the catalogue-like product from a yearly Fermi-LAT
    counts cube: notebook 04's U-Net + k-means on the 10-year sum finds the
    sources; around each, a yearly cut-out goes to notebook 05's 3D CNN
    (class AGN / PSR / FAKE and probabilities) and mean-variance network
    (F(1-100 GeV) ± error); each source gets the nearest 4FGL-DR2 name within
    --dr2-radius-deg. Columns: ASID_LON, ASID_LAT, RA, DEC, DET_PROB, CLASS,
    CLASS_PROB, P_AGN, P_PSR, P_FAKE, FLUX, FLUX_ERR, FLUX_LO, FLUX_HI,
    DR2_NAME, DR2_SEP.""",
    "WCS counts cube (gammapy Map) with axes 'energy' (0.3-1-3-10-30-100-1000 GeV) and 'year' (10 bins), "
    "0.15625° pixels, width and height multiples of 64",
    ".fits", "catalogue table (FITS, or ECSV with a .ecsv suffix)", "_catalogue.fits",
    "skyml.fermi.command:catalogue", model=False,
    options=(
        arg("--unet-model", metavar="PATH", type=Path, default=None,
            help="U-Net .keras file instead of the profile's fermi_unet.keras (notebook 04)"),
        arg("--classifier-model", metavar="PATH", type=Path, default=None,
            help="3D-CNN .keras file instead of the profile's fermi_classifier.keras (notebook 05)"),
        arg("--flux-model", metavar="PATH", type=Path, default=None,
            help="flux network .keras file instead of the profile's fermi_flux.keras (notebook 05)"),
        arg("--threshold", type=float, default=0.5, help="U-Net probability threshold (default: 0.5)"),
        arg("--dr2-radius-deg", type=float, default=0.5,
            help="association radius to 4FGL-DR2 names (default: 0.5)"),
    ),
)

file_command(
    "radio-counts", "radio source counts per flux bin, below the detection threshold, with the CNN of notebook 07",
    """Count radio sources per flux bin, down to far below the 5 sigma
    detection threshold, with the restored-image CNN of notebook 07. The
    image is cut into the model's context blocks (rows and columns that do not
    fill a whole one are left out), each block less its robust level (the
    image mean is no input), and these into sub-images (those with NaN
    pixels are left out); each sub-image is counted with the pixel histogram
    of its block as second input and, for a network trained on a range of
    instruments, the header's beam area, the thermal noise rms and the
    CLEAN limit (--clean-limit) as third, and the counts per bin are summed. The flux bins, pixel size,
    beam, noise and CLEAN-limit ranges and noise scale come from the model's metadata
    sidecar; an image with another pixel size, or a beam, thermal noise
    (--noise-rms or NOISE) or CLEAN limit outside the range the network was trained for, is
    refused (not resampled), and so is an image whose robust noise is more than 1000 times
    off the training images'. An image consistent with source-free noise (no
    pixel above 5 sigma, no skewness) is counted with a warning; the network
    was trained with source-free fields, and its stated errors hold its
    answer on them, so such counts are consistent with zero (a model trained
    without them refuses such an image). Columns: s_min, s_max, s_mid [Jy],
    x_below_threshold, counts, counts_err (the validation RMS relative
    residual of the bin times the counts, in quadrature with the network's
    answer on source-free validation fields times the number of
    sub-images), dnds, dnds_err [Jy-1 sr-1], euclidean, euclidean_err
    [Jy^1.5 sr-1], out_of_distribution (the image's robust noise or pixel
    histogram lies outside the range of the training images recorded with
    the model; a one-line warning is printed too), consistent_with_noise.""",
    "restored radio image: FITS with a celestial WCS, BUNIT Jy/beam, the restoring beam in "
    "BMAJ/BMIN/BPA, the pixel size of the model's training images and a beam inside their range",
    ".ecsv", "counts table (ECSV, or FITS with a .fits suffix)", "_counts.ecsv", "skyml.radio.command:counts",
    options=(
        arg("--noise-rms", type=float, default=None, metavar="JY_PER_BEAM",
            help="thermal noise rms of the image [Jy/beam] (default: the NOISE header keyword); a network "
                 "trained on a range of instruments needs it, inside its training range"),
        arg("--clean-limit", type=float, default=None, metavar="JY",
            help="flux density down to which the imaging restored the sky model with the restoring beam [Jy]: "
                 "the CLEAN limit; 0 when the whole sky model is restored (a CLEAN to the noise, or a simulated "
                 "sky convolved with the beam); fainter sources keep the dirty-beam response (default: the "
                 "training instrument's, 3 times its noise rms; inside the range the network was trained for)"),
    ),
)

file_command(
    "ctao-detect", "detect sources in a CTAO survey counts cube (3 energy bins, 0.02° pixels) with a network of notebook 06",
    """Detect sources in a CTAO Galactic-plane-survey counts cube with a
    network of notebook 06: by default its U-Net (log1p(counts) input) and
    scikit-image blob_log on its probability map; with --network randomised
    its network for any plausible sky (a CeDiRNet trained on randomised
    instruments and skies, its input divided by a local background; the
    better choice for a cube from another instrument or sky) and the peaks of
    its centre heat map. The networks are fully convolutional: any map of at
    least 16×16 px works (up to the size limit). The source list has glon,
    glat, ra, dec [deg], probability (the U-Net) or heat (the CeDiRNet), the
    input pixel (x_pix, y_pix) and out_of_distribution (the cube's background
    level in an energy bin lies outside the range of the training patches
    recorded with the model; a one-line warning is printed too). --dihedral
    averages the U-Net's probability maps of the cube's 8 rotations and
    flips, --no-dihedral reads the cube as given; by default it is read as
    notebook 06 chose on its validation patches.""",
    "WCS counts cube (gammapy Map) with the energy bins 0.07-0.788-8.88-100 TeV and 0.02° pixels",
    ".ecsv", "source list (ECSV, or FITS with a .fits suffix)", "_sources.ecsv", "skyml.ctao.command:detect",
    options=(
        arg("--network", choices=("unet", "randomised"), default="unet",
            help="unet: the U-Net of the nominal survey (default); randomised: the CeDiRNet trained on "
                 "domain-randomised instruments and skies, for cubes unlike the nominal survey (trained in the "
                 "full profile: with --profile full)"),
        arg("--threshold", type=float, default=None,
            help="score threshold: of a LoG blob's probability (U-Net; default 0.5) or of the centre heat "
                 "(CeDiRNet; default: notebook 06's validation choice for its randomised CeDiRNet)"),
        arg("--dihedral", action=argparse.BooleanOptionalAction, default=None,
            help="average the U-Net's probability maps of the cube's 8 rotations by 90 degrees and flips (8 "
                 "times the work), or not; default: notebook 06's choice for the U-Net"),
    ),
)

file_command(
    "optical-detect", "detect stars in an optical image (MeerLICHT-like, 2-3\" PSF) with the U-Net + LoG",
    """Detect stars in an optical image with the U-Net of notebook 06
    (asinh of the background-subtracted image in units of its robust noise)
    and scikit-image blob_log. The source list has x_pix, y_pix (0-based,
    pixel centres at integers), probability, and ra, dec [deg] when the image
    has a celestial WCS (an image without CTYPE keywords gets pixel positions
    only, with a note in the table's metadata; an invalid WCS is refused),
    and out_of_distribution (the image's sky level or robust noise lies
    outside the range of the training tiles recorded with the model; a
    one-line warning is printed too).""",
    "FITS image (2D, finite values), at least 32×32 px",
    ".ecsv", "source list (ECSV, or FITS with a .fits suffix)", "_sources.ecsv", "skyml.optical.command:detect",
    options=(
        arg("--threshold", type=float, default=None,
            help="probability threshold of a LoG blob (default: the model's, chosen on validation tiles)"),
    ),
)


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


def main(argv: list[str] | None = None) -> int:
    """Run ``skyml`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit
    status: 0 on success (and for ``--help``), 2 for usage, input and file errors."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version, usage errors
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else EXIT_ERROR)
    command = COMMANDS[args.command]
    try:
        result = command.run(args)
    except CommandError as err:
        print(_error_line(command.name, err), file=sys.stderr)
        return EXIT_ERROR
    except Exception as err:
        if not isinstance(err, _user_errors()):
            raise  # a bug, not a user error: keep the traceback
        print(_error_line(command.name, err), file=sys.stderr)
        return EXIT_ERROR
    if isinstance(result, int):
        return result
    print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
