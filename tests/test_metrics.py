"""Metric functions on inputs with known answers."""

import time

import numpy as np
import pytest

from skyml.metrics import (
    angular_separation_deg,
    containment,
    lima_significance,
    relative_error,
    relative_error_percentile,
    tail_fraction,
    throughput,
)


def test_angular_separation_known_pairs():
    assert angular_separation_deg(0.0, 0.0, 90.0, 0.0) == pytest.approx(90.0, abs=1e-12)
    # two points at dec 89 on opposite meridians pass over the pole
    assert angular_separation_deg(0.0, 89.0, 180.0, 89.0) == pytest.approx(2.0, abs=1e-10)
    assert angular_separation_deg(10.0, 90.0, 123.0, -90.0) == pytest.approx(180.0, abs=1e-10)
    # RA wraps around 0/360
    assert angular_separation_deg(359.5, 0.0, 0.5, 0.0) == pytest.approx(1.0, abs=1e-10)
    # small separation at dec 60: the RA offset shrinks by cos(dec) (haversine)
    lat = np.deg2rad(60.0)
    d_lon = np.deg2rad(0.1)
    expected = np.rad2deg(2 * np.arcsin(np.cos(lat) * np.sin(d_lon / 2)))
    assert angular_separation_deg(83.0, 60.0, 83.1, 60.0) == pytest.approx(expected, rel=1e-9)
    assert expected == pytest.approx(0.05, rel=1e-3)


def test_angular_separation_vectorised():
    lon2 = np.array([0.0, 1.0, 2.0])
    sep = angular_separation_deg(0.0, 0.0, lon2, 0.0)
    assert sep.shape == (3,)
    np.testing.assert_allclose(sep, lon2, atol=1e-12)
    grid = angular_separation_deg(np.zeros((2, 1)), np.array([[0.0], [10.0]]), 0.0, np.array([0.0, 10.0]))
    assert grid.shape == (2, 2)
    np.testing.assert_allclose(grid, [[0.0, 10.0], [10.0, 0.0]], atol=1e-12)


def test_containment_known_sample():
    # numpy linear quantile of 1..100 at 0.68: position 0.68 * 99 = 67.32 -> 68.32
    assert containment(np.arange(1, 101), 0.68) == pytest.approx(68.32)
    assert containment(np.arange(1, 101), 1.0) == 100.0
    # Rayleigh(sigma) 68% radius = sigma * sqrt(-2 ln 0.32)
    rng = np.random.default_rng(0)
    r = np.hypot(*rng.normal(0.0, 2.0, size=(2, 200_000)))
    assert containment(r) == pytest.approx(2.0 * np.sqrt(-2 * np.log(0.32)), rel=0.01)


def test_containment_rejects_nan_and_bad_fraction():
    with pytest.raises(ValueError, match="NaN"):
        containment([1.0, np.nan, 2.0])
    with pytest.raises(ValueError, match="empty"):
        containment([])
    with pytest.raises(ValueError, match="fraction"):
        containment([1.0, 2.0], fraction=68)


def test_tail_fraction():
    assert tail_fraction([1.0, 2.0, 3.0, 4.0], 2.5) == 0.5
    assert tail_fraction([1.0, 2.0, 3.0, 4.0], 2.0) == 0.5  # strictly above
    assert tail_fraction([1.0, 2.0], 10.0) == 0.0
    with pytest.raises(ValueError, match="NaN"):
        tail_fraction([1.0, np.nan], 0.5)


def test_relative_error():
    assert relative_error(110.0, 100.0) == pytest.approx(0.1)
    np.testing.assert_allclose(relative_error([90.0, 50.0, 30.0], [100.0, 50.0, 20.0]), [0.1, 0.0, 0.5])
    with pytest.raises(ValueError, match="<= 0"):
        relative_error([1.0, 2.0], [1.0, 0.0])
    with pytest.raises(ValueError, match="<= 0"):
        relative_error(1.0, -3.0)
    # errors 0, 0.1, ..., 1.0: linear 68th percentile = 0.68
    truth = np.full(11, 10.0)
    estimate = truth * (1 + np.linspace(0.0, 1.0, 11))
    assert relative_error_percentile(estimate, truth, q=68) == pytest.approx(0.68)
    with pytest.raises(ValueError, match="NaN"):
        relative_error_percentile([np.nan, 1.0], [1.0, 1.0])


def _lima_eq17(n_on, n_off, alpha):
    """Li & Ma (1983) eq. 17, written out independently of gammapy."""
    n_on = np.asarray(n_on, dtype=float)
    n_off = np.asarray(n_off, dtype=float)
    total = n_on + n_off
    with np.errstate(divide="ignore", invalid="ignore"):
        term_on = np.where(n_on > 0, n_on * np.log((1 + alpha) / alpha * n_on / total), 0.0)
        term_off = np.where(n_off > 0, n_off * np.log((1 + alpha) * n_off / total), 0.0)
    return np.sign(n_on - alpha * n_off) * np.sqrt(2.0 * (term_on + term_off))


def test_lima_significance_matches_eq17():
    n_on = np.array([130.0, 25.0, 10.0, 0.0, 1000.0])
    n_off = np.array([500.0, 100.0, 80.0, 12.0, 4000.0])
    alpha = np.array([0.2, 0.2, 0.25, 0.1, 0.2])
    expected = _lima_eq17(n_on, n_off, alpha)
    got = lima_significance(n_on, n_off, alpha)
    assert got.shape == (5,)
    np.testing.assert_allclose(got, expected, rtol=1e-8)
    assert got[0] > 2.5  # 130 on vs 100 expected
    assert got[2] < 0  # deficit: 10 on vs 20 expected, signed
    assert lima_significance(25.0, 100.0, 0.2) == pytest.approx(expected[1], rel=1e-8)
    # scalar alpha broadcasts against arrays
    np.testing.assert_allclose(lima_significance(n_on[:2], n_off[:2], 0.2), expected[:2], rtol=1e-8)


def test_throughput_counts_items_per_second():
    calls = []

    def fn(batch):
        calls.append(len(batch))
        time.sleep(0.02)

    rate = throughput(fn, list(range(10)), repeats=3)
    assert len(calls) == 4  # one warm-up plus three timed calls
    # 10 items per >= 20 ms call: at most 500 per second, and not absurdly less
    assert 100 < rate <= 500
    with pytest.raises(ValueError):
        throughput(fn, [], repeats=1)
