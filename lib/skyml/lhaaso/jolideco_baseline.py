"""Jolideco (Donath et al. 2024, arXiv:2403.13933), the Poisson maximum a
posteriori deconvolution with image priors, as a classical baseline of
notebook 08: the strongest mathematical method to set the networks against,
where Richardson–Lucy is the plain maximum likelihood.

Jolideco and PyTorch are an optional extra (``make deconvolution``, extra
``deconvolution`` of pyproject.toml); importing :mod:`skyml` or this module
does not import either: every function that needs them imports them when
called, and :func:`available` says whether they can be.

The forward model is the notebook's own: the counts of a map are Poisson with
mean ``flux ⊛ PSF + background``, the PSF the two-Gaussian KM2A kernel that
Richardson–Lucy is given (:func:`skyml.lhaaso.psf.kernel`), the background the
simulator's flat level (``background_per_px``, 0 in the main study), the
exposure 1 (the flux is in counts per pixel). Jolideco's ``MAPDeconvolver``
maximises the Poisson likelihood plus ``beta`` × the log prior of the flux,
with Adam on the logarithm of the flux, one map at a time (maps run through
:func:`skyml.parallel.map_items`). Two priors, neither downloaded:

* ``"lira"``: the multiscale prior of LIRA (Esch et al. 2004, on the multiscale
  Poisson model of Nowak & Kolaczyk 2000): the image is a quad tree of 2×2 splits,
  level by level up to the whole map, and the four proportions into which each
  parent pixel splits follow a symmetric Dirichlet of concentration ``alpha``
  (1: flat; above 1, smoother). Jolideco 0.3 ships a ``LIRAPrior`` that is
  unfinished (it is left out of its own prior registry and fails when
  evaluated), so :func:`lira_prior` builds this one as a jolideco ``Prior``,
  with jolideco's random cycle spin. Its log density is ``(alpha - 1)`` × the
  sum of the log proportions plus a constant, so the strength is
  ``alpha - 1`` (> 0; ``beta`` = 1).
* ``"gmm"``: jolideco's ``GMMPatchPrior``: a Gaussian mixture model of 8×8
  patches (mean subtracted, stride 4, random cycle spin), here fitted with
  scikit-learn on the *training* truth maps (:func:`fit_patch_gmm`), the same
  knowledge the networks get, after the image norm of :func:`normed`
  (asinh of the flux over the map's mean counts per pixel, so that maps of
  every brightness share one patch distribution). The strength is ``beta``.

Both log priors are divided by the number of pixels, as jolideco's Poisson loss
is a mean over pixels, so that ``beta`` = 1 is the posterior itself.

Same seed, same arrays: every map seeds ``torch.manual_seed`` and the prior's
generator from its own seed (:func:`skyml.parallel.item_seeds`), PyTorch runs
with deterministic algorithms on one thread on the CPU, and results are cached
by the SHA-256 of the maps and every argument (:func:`deconvolve_cached`).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import sys
import tempfile
import warnings

import numpy as np

from . import psf

PRIORS = ("lira", "gmm")
#: the strength of each prior (LIRA: alpha - 1, the weight of its log proportions; GMM: jolideco's beta) and the
#: grids notebook 08 scans on validation maps, extended while the best value is an end (:func:`scan_interior`)
STRENGTH_NAME = {"lira": "alpha - 1", "gmm": "beta"}
STRENGTH_GRID = {"lira": (0.125, 0.25, 0.5, 1.0, 2.0), "gmm": (0.0625, 0.125, 0.25, 0.5, 1.0)}
#: the grid is extended by this factor beyond its ends while the best value is an end
STRENGTH_FACTOR = 2.0
STRENGTH_LIMITS = {"lira": (1e-3, 1000.0), "gmm": (1e-3, 1000.0)}
N_EPOCHS = 300
LEARNING_RATE = 0.1
PATCH = 8
PATCH_STRIDE = 4
GMM_COMPONENTS = 16
GMM_MAX_PATCHES = 20_000
#: version of the cached outputs of :func:`deconvolve_cached`: raise it when the method changes
JOLIDECO_CACHE_VERSION = 1


# ---------------------------------------------------------------------------
# The optional dependency
# ---------------------------------------------------------------------------


def available() -> tuple[bool, str]:
    """(True, version) when jolideco and PyTorch import, else (False, the reason)."""
    for name in ("torch", "jolideco"):
        if importlib.util.find_spec(name) is None:
            return False, f"{name} is not installed (make deconvolution adds the extra 'deconvolution')"
    try:
        jd = import_jolideco()
    except Exception as exc:  # an installed but broken package: say why, do not fail the caller
        return False, f"jolideco does not import: {type(exc).__name__}: {exc}"
    return True, f"jolideco {jd.__version__}, torch {sys.modules['torch'].__version__}"


def import_jolideco():
    """``import jolideco`` without its side effects on this process: jolideco 0.3
    reads a GMM library index from ``$JOLIDECO_GMM_LIBRARY`` when imported
    (a download of pre-trained GMMs that these priors do not use); when that
    variable is unset, it is pointed at an empty index in a temporary folder.
    Its ``logging.basicConfig(level=INFO)`` on the root logger is undone."""
    if "jolideco" in sys.modules:
        return sys.modules["jolideco"]
    if not os.environ.get("JOLIDECO_GMM_LIBRARY"):
        folder = tempfile.mkdtemp(prefix="skyml-jolideco-gmm-")
        with open(os.path.join(folder, "jolideco-gmm-library-index.json"), "w") as f:
            f.write("{}\n")
        os.environ["JOLIDECO_GMM_LIBRARY"] = folder
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import jolideco
    finally:
        for h in list(root.handlers):
            if h not in handlers:
                root.removeHandler(h)
        root.setLevel(level)
    logging.getLogger("jolideco").setLevel(logging.WARNING)
    return jolideco


# ---------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------


def check_prior(prior: str, strength: float) -> None:
    """ValueError unless ``prior`` is one of :data:`PRIORS` and ``strength`` is
    in its :data:`STRENGTH_LIMITS` (LIRA: alpha - 1 > 0, a Dirichlet of
    concentration alpha <= 1 has no interior mode; GMM: beta > 0)."""
    if prior not in PRIORS:
        raise ValueError(f"prior must be one of {PRIORS}, got {prior!r}")
    s = float(strength)
    lo, hi = STRENGTH_LIMITS[prior]
    if not (np.isfinite(s) and lo <= s <= hi):
        raise ValueError(f"{STRENGTH_NAME[prior]} of the {prior} prior must lie in [{lo:g}, {hi:g}], got {strength}")


def lira_levels(shape) -> int:
    """Number of 2×2 levels of the LIRA quad tree of a map of ``shape``: the
    largest n with both sides divisible by 2^n (a 64×64 map: 6, up to one pixel)."""
    ny, nx = (int(v) for v in shape)
    if ny < 2 or nx < 2 or ny % 2 or nx % 2:
        raise ValueError(f"the LIRA prior needs a map of even sides, got {shape}")
    n = 0
    while ny % 2 == 0 and nx % 2 == 0 and ny >= 2 and nx >= 2:
        ny, nx, n = ny // 2, nx // 2, n + 1
    return n


def lira_log_prior_numpy(flux: np.ndarray, alpha: float) -> float:
    """The LIRA multiscale log prior of a 2-D ``flux`` (> 0) per pixel, in
    NumPy: the sum over levels and parents of the log density of the split
    proportions under Dirichlet(alpha, alpha, alpha, alpha), divided by the
    number of pixels (:func:`lira_prior` evaluates the same in PyTorch)."""
    from scipy.special import gammaln

    f = np.asarray(flux, np.float64)
    npix = f.size
    total = 0.0
    for _ in range(lira_levels(f.shape)):
        ny, nx = f.shape
        quads = f.reshape(ny // 2, 2, nx // 2, 2).transpose(0, 2, 1, 3).reshape(ny // 2, nx // 2, 4)
        parent = quads.sum(-1)
        p = quads / parent[..., None]
        total += float(np.sum((alpha - 1) * np.log(p).sum(-1) + gammaln(4 * alpha) - 4 * gammaln(alpha)))
        f = parent
    return total / npix


# ---------------------------------------------------------------------------
# The Gaussian-mixture patch prior (fitted with scikit-learn, no PyTorch)
# ---------------------------------------------------------------------------


def normed(maps: np.ndarray, scale) -> np.ndarray:
    """The image norm of the GMM prior: asinh(map / scale), ``scale`` the mean
    counts per pixel of each map (:func:`skyml.lhaaso.simulate.map_scale`)."""
    maps = np.asarray(maps, np.float64)
    scale = np.asarray(scale, np.float64).reshape((-1,) + (1,) * (maps.ndim - 1))[: len(maps)]
    return np.arcsinh(np.clip(maps, 0, None) / scale)


def _windows(images: np.ndarray, patch: int, stride: int) -> np.ndarray:
    """The ``patch``×``patch`` windows of a (n, ny, nx) stack at ``stride``, a view
    of shape (n, rows, columns, patch, patch) (row-major, as jolideco cuts them)."""
    from numpy.lib.stride_tricks import sliding_window_view

    if images.ndim != 3 or min(images.shape[1:]) < patch:
        raise ValueError(f"need a (n, ny, nx) stack with sides >= {patch}, got {images.shape}")
    return sliding_window_view(images, (patch, patch), axis=(1, 2))[:, ::stride, ::stride]


def patches(images: np.ndarray, patch: int = PATCH, stride: int = PATCH_STRIDE) -> np.ndarray:
    """Overlapping ``patch``×``patch`` patches of a (n, ny, nx) stack at
    ``stride`` (row-major, as jolideco cuts them), each with its mean
    subtracted: shape (n × patches per image, patch²)."""
    out = _windows(np.asarray(images, np.float64), patch, stride).reshape(-1, patch * patch)
    return out - out.mean(axis=1, keepdims=True)


def fit_patch_gmm(truth: np.ndarray, scale, n_components: int = GMM_COMPONENTS, patch: int = PATCH,
                  stride: int = PATCH_STRIDE, max_patches: int = GMM_MAX_PATCHES, seed: int = 0,
                  reg_covar: float = 1e-4) -> dict[str, np.ndarray]:
    """A Gaussian mixture (full covariances, scikit-learn) of the mean-subtracted
    patches of the normed truth maps (:func:`normed`, :func:`patches`); at most
    ``max_patches`` patches, drawn without replacement with ``seed`` (only the
    drawn ones are cut out: the full profile's thousands of maps hold millions).
    Returns arrays ``means`` (k, patch²), ``covariances`` (k, patch², patch²),
    ``weights`` (k,) sorted by decreasing weight, and ``patch``, ``stride``."""
    from sklearn.mixture import GaussianMixture

    if int(n_components) < 1 or int(max_patches) < int(n_components):
        raise ValueError(f"need 1 <= n_components <= max_patches, got {n_components}, {max_patches}")
    truth = np.asarray(truth)
    scale = np.broadcast_to(np.asarray(scale, np.float64), (len(truth),))
    win = _windows(truth, patch, stride)
    total = int(np.prod(win.shape[:3]))
    rng = np.random.default_rng(seed)
    index = np.sort(rng.choice(total, int(max_patches), replace=False)) if total > max_patches else np.arange(total)
    i, row, col = np.unravel_index(index, win.shape[:3])
    raw = np.asarray(win[i, row, col], np.float64).reshape(len(index), patch * patch)
    x = np.arcsinh(np.clip(raw, 0, None) / scale[i, None])  # normed(), patch by patch
    x -= x.mean(axis=1, keepdims=True)
    gmm = GaussianMixture(n_components=int(n_components), covariance_type="full", reg_covar=reg_covar,
                          random_state=int(seed), max_iter=200)
    gmm.fit(x)
    order = np.argsort(-gmm.weights_, kind="stable")
    return {"means": gmm.means_[order], "covariances": gmm.covariances_[order], "weights": gmm.weights_[order],
            "patch": np.array(int(patch)), "stride": np.array(int(stride))}


def fit_patch_gmm_cached(truth: np.ndarray, scale, **kwargs) -> dict[str, np.ndarray]:
    """:func:`fit_patch_gmm`, cached in ``data/cache/lhaaso_jolideco_gmm/`` by the
    SHA-256 of the truth maps and scales and the arguments."""
    from .. import cache

    key = {"truth": _digest(truth), "scale": _digest(scale), "version": JOLIDECO_CACHE_VERSION,
           **{k: v for k, v in sorted(kwargs.items())}}
    return cache.cached_arrays("lhaaso_jolideco_gmm", key, lambda: fit_patch_gmm(truth, scale, **kwargs),
                               verbose=False)


# ---------------------------------------------------------------------------
# Jolideco priors (PyTorch)
# ---------------------------------------------------------------------------


def _prior_classes():
    """The jolideco priors of this module (classes built once jolideco is imported)."""
    global _CLASSES
    if _CLASSES is not None:
        return _CLASSES
    jd = import_jolideco()
    import torch
    from jolideco.priors.core import Prior
    from jolideco.utils.norms import ImageNorm

    class LIRAMultiscalePrior(Prior):
        """LIRA's multiscale Dirichlet prior (module doc) as a jolideco ``Prior``."""

        def __init__(self, alpha, n_levels, generator):
            super().__init__()
            self.register_buffer("alpha", torch.tensor(float(alpha), dtype=torch.float32))
            self.n_levels = int(n_levels)
            self.generator = generator
            a = torch.tensor(float(alpha), dtype=torch.float64)
            self.log_norm = float(torch.lgamma(4 * a) - 4 * torch.lgamma(a))

        def __call__(self, flux):
            if self.generator is not None:  # jolideco's cycle spin, over the largest block of the quad tree
                size = 2 ** self.n_levels
                shifts = torch.randint(0, size, (2,), generator=self.generator)
                flux = torch.roll(flux, shifts=(int(shifts[0]), int(shifts[1])), dims=(-2, -1))
            f = flux[0, 0]
            total = 0.0
            for _ in range(self.n_levels):
                ny, nx = f.shape
                quads = f.reshape(ny // 2, 2, nx // 2, 2).permute(0, 2, 1, 3).reshape(ny // 2, nx // 2, 4)
                parent = quads.sum(-1)
                logp = torch.log(quads) - torch.log(parent)[..., None]
                n_parents = quads.shape[0] * quads.shape[1]
                total = total + torch.sum((self.alpha - 1) * logp.sum(-1)) + n_parents * self.log_norm
                f = parent
            return total / flux.numel()

    class AsinhScaleNorm(ImageNorm):
        """asinh(flux / scale) with a fixed ``scale`` (a buffer: jolideco's own
        image norms hold their scales as parameters, which the optimiser of the
        flux would move)."""

        def __init__(self, scale):
            super().__init__(frozen=True)
            self.register_buffer("scale", torch.tensor(float(scale), dtype=torch.float32))

        def __call__(self, image):
            return torch.asinh(image / self.scale)

        def inverse(self, image):
            return self.scale * torch.sinh(image)

    _CLASSES = {"lira": LIRAMultiscalePrior, "norm": AsinhScaleNorm, "jolideco": jd}
    return _CLASSES


_CLASSES = None


def lira_prior(strength: float, shape, generator=None):
    """The LIRA multiscale prior (a jolideco ``Prior``) of concentration
    alpha = 1 + ``strength`` for maps of ``shape``."""
    check_prior("lira", strength)
    return _prior_classes()["lira"](1.0 + float(strength), lira_levels(shape), generator)


def gmm_prior(gmm: dict, scale: float, generator=None):
    """jolideco's ``GMMPatchPrior`` with the mixture ``gmm`` of :func:`fit_patch_gmm`,
    the image norm asinh(flux / ``scale``) and random cycle spin."""
    _prior_classes()
    from jolideco.priors import GaussianMixtureModel, GMMPatchPrior
    from jolideco.priors.patches.gmm import GaussianMixtureModelMeta
    from jolideco.utils.norms import SubtractMeanPatchNorm

    stride = int(gmm["stride"])
    meta = GaussianMixtureModelMeta(stride=stride, patch_norm=SubtractMeanPatchNorm())
    model = GaussianMixtureModel.from_numpy(means=np.asarray(gmm["means"]), covariances=np.asarray(gmm["covariances"]),
                                            weights=np.asarray(gmm["weights"]), meta=meta)
    return GMMPatchPrior(gmm=model, stride=stride, cycle_spin=True, generator=generator,
                         norm=_prior_classes()["norm"](scale), patch_norm=SubtractMeanPatchNorm())


@contextlib.contextmanager
def _torch_deterministic():
    """Deterministic algorithms on one thread while inside; the previous settings after."""
    import torch

    det, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(det)
        torch.set_num_threads(threads)


def _init_flux(counts: np.ndarray, background_per_px: float, sigma_px: float) -> np.ndarray:
    """The starting flux: the counts less the background, smoothed with a Gaussian
    of the PSF core width, floored at 1 % of the map's mean (the flux is fitted in
    logarithm, so it must start positive)."""
    from scipy.ndimage import gaussian_filter

    c = np.clip(np.asarray(counts, np.float64) - background_per_px, 0, None)
    mean = max(float(c.mean()), 1e-3)
    return np.maximum(gaussian_filter(c, sigma_px, mode="nearest"), 0.01 * mean)


def deconvolve_one(counts: np.ndarray, seed, *, sigma1_deg: float, prior: str, strength: float,
                   gmm: dict | None = None, n_epochs: int = N_EPOCHS, learning_rate: float = LEARNING_RATE,
                   background_per_px: float = 0.0, kernel: np.ndarray | None = None) -> np.ndarray:
    """Jolideco's MAP flux (counts per pixel) of one 2-D counts map (module doc);
    ``seed`` an int or a ``numpy.random.SeedSequence`` (the map's seed)."""
    check_prior(prior, strength)
    if prior == "gmm" and gmm is None:
        raise ValueError("the gmm prior needs the fitted mixture (fit_patch_gmm)")
    if int(n_epochs) < 1:
        raise ValueError(f"n_epochs must be >= 1, got {n_epochs}")
    jd = _prior_classes()["jolideco"]
    import torch
    from jolideco.models import SpatialFluxComponent

    counts = np.asarray(counts, np.float64)
    if counts.ndim != 2:
        raise ValueError(f"one 2-D map expected, got shape {counts.shape}")
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(int(seed))
    torch_seed = int(ss.generate_state(1, np.uint64)[0] % (2**63 - 1))
    k = psf.kernel(sigma1_deg) if kernel is None else np.asarray(kernel, np.float64)
    with _torch_deterministic(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(torch_seed)
        generator = torch.Generator("cpu")
        generator.manual_seed(torch_seed)
        scale = max(float(counts.mean()), 1e-12)
        if prior == "lira":
            p = lira_prior(strength, counts.shape, generator)
            beta = 1.0
        else:
            p = gmm_prior(gmm, scale, generator)
            beta = float(strength)
        sigma_px = float(sigma1_deg) / psf.BINSZ_DEG
        flux_init = _init_flux(counts, background_per_px, sigma_px).astype(np.float32)
        component = SpatialFluxComponent.from_numpy(flux=flux_init, prior=p, use_log_flux=True, upsampling_factor=1)
        dataset = {"counts": counts.astype(np.float32), "psf": (k / k.sum()).astype(np.float32),
                   "exposure": np.ones(counts.shape, np.float32),
                   "background": np.full(counts.shape, float(background_per_px), np.float32)}
        deconvolver = jd.MAPDeconvolver(n_epochs=int(n_epochs), beta=beta, learning_rate=float(learning_rate),
                                        display_progress=False, device="cpu")
        result = deconvolver.run(datasets={"map": dataset}, components=component)
        return np.asarray(result.flux_total, np.float64)


def _digest(a) -> str:
    a = np.ascontiguousarray(np.asarray(a, np.float64))
    return hashlib.sha256(f"{a.dtype.str}:{a.shape}".encode() + a.tobytes()).hexdigest()


def deconvolve(maps: np.ndarray, sigma1_deg: float, prior: str, strength: float, *, gmm: dict | None = None,
               n_epochs: int = N_EPOCHS, learning_rate: float = LEARNING_RATE, background_per_px: float = 0.0,
               seed: int = 0, progress=False) -> np.ndarray:
    """Jolideco's MAP flux of every counts map of a (n, ny, nx) stack (counts per
    pixel), the maps through :func:`skyml.parallel.map_items` with the seeds of
    ``seed``: the same arrays in this process or on any number of workers."""
    from .. import parallel

    maps = np.asarray(maps, np.float64)
    if maps.ndim != 3:
        raise ValueError(f"a (n, ny, nx) stack expected, got shape {maps.shape}")
    check_prior(prior, strength)
    out = parallel.map_items(deconvolve_one, list(maps), seed=int(seed), progress=progress, desc="jolideco",
                             sigma1_deg=float(sigma1_deg), prior=prior, strength=float(strength), gmm=gmm,
                             n_epochs=int(n_epochs), learning_rate=float(learning_rate),
                             background_per_px=float(background_per_px))
    return np.stack(out) if out else np.zeros_like(maps)


def deconvolve_cached(maps: np.ndarray, sigma1_deg: float, prior: str, strength: float, *, gmm: dict | None = None,
                      n_epochs: int = N_EPOCHS, learning_rate: float = LEARNING_RATE, background_per_px: float = 0.0,
                      seed: int = 0) -> np.ndarray:
    """:func:`deconvolve`, cached in ``data/cache/lhaaso_jolideco/`` by the SHA-256
    of the maps (and of the mixture) and the arguments, like
    :func:`skyml.lhaaso.baselines.richardson_lucy_cached`."""
    from .. import cache

    check_prior(prior, strength)
    key = {"maps": _digest(maps), "sigma1_deg": float(sigma1_deg), "prior": prior, "strength": float(strength),
           "gmm": None if gmm is None or prior != "gmm" else {k: _digest(gmm[k]) for k in sorted(gmm)},
           "n_epochs": int(n_epochs), "learning_rate": float(learning_rate),
           "background_per_px": float(background_per_px), "seed": int(seed), "version": JOLIDECO_CACHE_VERSION}
    return cache.cached_arrays(
        "lhaaso_jolideco", key,
        lambda: {"flux": deconvolve(maps, sigma1_deg, prior, strength, gmm=gmm if prior == "gmm" else None,
                                    n_epochs=n_epochs, learning_rate=learning_rate,
                                    background_per_px=background_per_px, seed=seed)},
        verbose=False)["flux"]


# ---------------------------------------------------------------------------
# Tuning: the strength strictly inside the grid searched
# ---------------------------------------------------------------------------


def scan_interior(method, values, scorers: dict, factor: float = STRENGTH_FACTOR, limits=(0.0, np.inf),
                  max_extensions: int = 8) -> dict:
    """Scores of ``method(value)`` for every scorer of ``scorers`` ({name:
    f(estimate) -> score, higher is better}), one run of ``method`` per value
    shared by all scorers, as :func:`skyml.lhaaso.baselines.scan_extending`
    but extended at both ends: while, for any scorer, the best value is the
    largest (smallest) tried, one value ``factor`` times larger (smaller) is
    added, within ``limits``, at most ``max_extensions`` in all. Returns
    {name: (best value, {value: score}, interior)}, ``interior`` True when the
    best lies strictly between the smallest and the largest value tried."""
    values = sorted({float(v) for v in values})
    if len(values) < 3 or not factor > 1 or not scorers:
        raise ValueError("need at least three values, a factor > 1 and a scorer")
    table: dict = {name: {} for name in scorers}

    def run(v):
        estimate = method(v)
        for name, f in scorers.items():
            table[name][v] = float(f(estimate))

    for v in values:
        run(v)
    for _ in range(int(max_extensions)):
        tried = sorted(table[next(iter(table))])
        bests = [max(t, key=t.get) for t in table.values()]
        if tried[-1] in bests and tried[-1] * factor <= limits[1]:
            run(tried[-1] * factor)
        elif tried[0] in bests and tried[0] / factor >= limits[0]:
            run(tried[0] / factor)
        else:
            break
    out = {}
    for name, t in table.items():
        best = max(t, key=t.get)
        out[name] = (best, dict(sorted(t.items())), bool(min(t) < best < max(t)))
    return out
