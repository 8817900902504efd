"""Inference throughput benchmark (``python -m skyml.benchmark --throughput``) on tiny models."""

import json

import numpy as np
import pytest

keras = pytest.importorskip("keras")


def _tiny_model():
    inputs = keras.Input(shape=(16, 16, 1))
    x = keras.layers.Conv2D(2, 3, padding="same", activation="relu")(inputs)
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, outputs)


def test_time_inference_gives_positive_finite_rates_and_leaves_the_model_alone():
    from skyml import benchmark

    model = _tiny_model()
    weights = [w.copy() for w in model.get_weights()]
    x = benchmark.benchmark_maps(16, seed=0, shape=(16, 16))
    assert x.shape == (16, 16, 16, 1) and x.dtype == np.float32
    for mode, jit in (("predict", False), ("predict_on_batch", True), ("call", False)):
        r = benchmark.time_inference(model, x, batch_size=8, mode=mode, jit_compile=jit, repeats=3)
        assert len(r["rates"]) == 3 and all(np.isfinite(r["rates"])) and min(r["rates"]) > 0, r
        assert np.isfinite(r["median"]) and r["median"] > 0
        low, high = r["ci68"]
        assert 0 < low <= r["median"] <= high, r
        assert r["mode"] == mode and r["jit_compile"] == (jit and mode != "call")
    assert model.compiled is False  # the timing used a copy
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights()))
    with pytest.raises(ValueError, match="unknown inference mode"):
        benchmark.time_inference(model, x, mode="fit")
    with pytest.raises(ValueError, match="repeats"):
        benchmark.time_inference(model, x, repeats=1)


def test_throughput_report_chooses_a_screened_setting(tmp_path):
    from skyml import benchmark

    grid = {"batch_size": (4, 16), "mode": ("predict_on_batch", "call"), "jit_compile": (False,)}
    report = benchmark.throughput({"tiny": _tiny_model()}, n_maps=16, repeats=3, screen_repeats=2, grid=grid)
    rate = report["throughput_maps_per_s_tiny"]
    assert np.isfinite(rate) and rate > 0
    low, high = report["throughput_maps_per_s_tiny_ci68"]
    assert 0 < low <= rate <= high
    screened = report["throughput_tiny"]["screened"]
    assert len(screened) == 4 and all(s["median"] > 0 for s in screened)
    chosen = report["throughput_tiny"]["setting"]
    best = max(screened, key=lambda s: s["median"])
    assert chosen == {k: best[k] for k in ("batch_size", "mode", "jit_compile")}
    assert report["cpu_count"] >= 1 and report["keras_backend"] == keras.backend.backend()
    assert report["flops_per_map_tiny"] == benchmark.forward_flops(_tiny_model())
    assert report["gflops_per_s_tiny"] == pytest.approx(report["flops_per_map_tiny"] * rate / 1e9)
    out = tmp_path / "t.json"
    benchmark._write_json(out, report)
    assert benchmark.read_throughput(out)["throughput_maps_per_s_tiny"] == rate
    assert benchmark.read_throughput(tmp_path / "missing.json") is None


def test_throughput_cli_refuses_bad_arguments(capsys):
    from skyml import benchmark

    for argv, fragment in ((["--throughput", "--scaling"], "choose one of"),
                           (["--repeats", "3"], "needs --throughput or --scaling"),
                           (["--throughput", "--repeats", "1"], "--repeats >= 2")):
        assert benchmark.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("python -m skyml.benchmark: error: ") and fragment in err, err
    json.dumps(benchmark.THROUGHPUT_GRID)


def test_throughput_for_reads_the_benchmark_file_or_measures(tmp_path):
    from skyml import benchmark

    model = _tiny_model()
    grid = {"batch_size": (8,), "mode": ("predict_on_batch",), "jit_compile": (False,)}
    measured = benchmark.throughput_for("tiny", model, path=tmp_path / "absent.json", n_maps=8, repeats=2, grid=grid)
    assert measured["maps_per_s"] > 0 and measured["source"].startswith("measured in this run")
    assert set(measured["load_average"]) == {"start", "end"}
    report = {"keras_backend": keras.backend.backend(), "machine": "m", "git_commit": "abc",
              "load_average_at_start": [1.0, 1.0, 1.0], "load_average_at_end": [2.0, 2.0, 2.0],
              "throughput_maps_per_s_tiny": 123.0, "throughput_maps_per_s_tiny_ci68": [120.0, 125.0],
              "throughput_tiny": {"setting": {"batch_size": 8, "mode": "predict", "jit_compile": False}}}
    path = tmp_path / "throughput.json"
    benchmark._write_json(path, report)
    read = benchmark.throughput_for("tiny", model, path=path)
    assert read["maps_per_s"] == 123.0 and read["ci68"] == [120.0, 125.0] and "abc" in read["source"]
    benchmark._write_json(path, {**report, "keras_backend": "another"})  # another backend: measured again
    again = benchmark.throughput_for("tiny", model, path=path, n_maps=8, repeats=2, grid=grid)
    assert again["source"].startswith("measured")


def test_forward_flops_counts_convolutions_and_dense_layers():
    from skyml import benchmark
    from skyml.cta import models

    # tiny model: 3x3 conv of 1 -> 2 channels on 16x16 (2*16*16*2*9), dense 2 -> 2 (2*2*2)
    assert benchmark.forward_flops(_tiny_model()) == 2 * 16 * 16 * 2 * 9 + 2 * 2 * 2
    # the talk's CNN-Cleaner, layer by layer (2x2 kernels, 12 filters): 200^2 x 12 x 4, 100^2 x 12 x 48,
    # 50^2 x 12 x 48, 100^2 x 12 x 48 and 200^2 x 1 x 48 multiply-adds
    macs = 200**2 * 12 * 4 + 100**2 * 12 * 48 + 50**2 * 12 * 48 + 100**2 * 12 * 48 + 200**2 * 48
    assert benchmark.forward_flops(models.build_cleaner()) == 2 * macs
    # a nested model counts once per use
    inputs = keras.Input(shape=(16, 16, 1))
    wrapped = keras.Model(inputs, _tiny_model()(inputs))
    assert benchmark.forward_flops(wrapped) == benchmark.forward_flops(_tiny_model())
