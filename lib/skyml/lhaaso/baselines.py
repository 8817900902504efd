"""Classical baselines of notebook 08 on normalised counts maps (scikit-image
and scipy): Richardson–Lucy, the TS-map-style Gaussian smoothing at 0.29°,
and the Wiener filter. Their free parameter (iterations, balance) is chosen on
validation maps by the mean PSNR (:func:`choose`). Richardson–Lucy and Wiener
estimate the intrinsic map; with ``target_sigma_deg`` > 0 their output is
brought to the reconstruction target's resolution
(:func:`skyml.lhaaso.simulate.to_target`), as the networks are trained to give."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter
from skimage import restoration

from . import psf
from .evaluation import image_metrics
from .simulate import to_target

SMOOTH_SIGMA_DEG = 0.29
RL_ITERATIONS = (5, 10, 20, 40, 80, 160, 320)
WIENER_BALANCE = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)


def richardson_lucy(maps: np.ndarray, sigma1_deg: float, num_iter: int, target_sigma_deg: float = 0.0) -> np.ndarray:
    k = psf.kernel(sigma1_deg)
    out = np.stack([restoration.richardson_lucy(np.asarray(m, np.float64), k, num_iter=int(num_iter), clip=False)
                    for m in maps])
    return to_target(out, target_sigma_deg)


def smooth(maps: np.ndarray, sigma_deg: float = SMOOTH_SIGMA_DEG, binsz_deg: float = psf.BINSZ_DEG) -> np.ndarray:
    return np.stack([gaussian_filter(np.asarray(m, np.float64), sigma_deg / binsz_deg, mode="constant")
                     for m in maps])


def wiener(maps: np.ndarray, sigma1_deg: float, balance: float, target_sigma_deg: float = 0.0) -> np.ndarray:
    k = psf.kernel(sigma1_deg)
    out = np.stack([restoration.wiener(np.asarray(m, np.float64), k, float(balance), clip=False) for m in maps])
    return to_target(out, target_sigma_deg)


def choose(method, maps: np.ndarray, truth: np.ndarray, values, **kwargs):
    """(best value, {value: mean PSNR}) of ``method(maps, value=...)`` on validation maps."""
    scores = {}
    for v in values:
        scores[v] = float(np.mean(image_metrics(truth, method(maps, v, **kwargs))["psnr"]))
    return max(scores, key=scores.get), scores
