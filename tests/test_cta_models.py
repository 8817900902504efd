"""Tests of skyml.cta.models: preprocessing, the three networks, training and
persistence. Run with KERAS_BACKEND=tensorflow and KERAS_BACKEND=jax."""

import io
import json
import os
import zipfile

import numpy as np
import pytest

if os.environ.get("KERAS_BACKEND") == "jax":
    # the JAX backend is the optional extra "jax" (make jax, or requirements-jax.txt)
    pytest.importorskip("jax", reason="KERAS_BACKEND=jax but jax is not installed (make jax installs the extra)")
keras = pytest.importorskip("keras")

from skyml.cta import models as m  # noqa: E402


@pytest.mark.skipif("KERAS_BACKEND" not in os.environ, reason="KERAS_BACKEND is not set")
def test_keras_runs_the_requested_backend():
    assert keras.backend.backend() == os.environ["KERAS_BACKEND"]


# ---------------------------------------------------------------------------
# Preprocessing
# ---------------------------------------------------------------------------


def test_stretch_known_values_and_zero_map():
    maps = np.zeros((3, 4, 5))
    maps[0, 1, 2] = 4.0
    maps[0, 3, 4] = 1.0
    maps[2] = 2.0
    original = maps.copy()
    scaled, scale = m.stretch(maps)
    assert scaled.dtype == np.float32 and scale.dtype == np.float32
    assert scaled.shape == maps.shape and scale.shape == (3,)
    np.testing.assert_array_equal(scale, [4.0, 1.0, 2.0])
    assert scaled[0, 1, 2] == 1.0 and scaled[0, 3, 4] == 0.25
    np.testing.assert_array_equal(scaled[1], 0.0)  # all-zero map, scale 1
    np.testing.assert_array_equal(scaled[2], 1.0)
    np.testing.assert_array_equal(maps, original)  # input untouched
    np.testing.assert_allclose(scaled * scale[:, None, None], maps)


def test_stretch_channel_axis_and_bad_input():
    maps = np.arange(2 * 3 * 3, dtype=np.float64).reshape(2, 3, 3, 1)
    scaled, scale = m.stretch(maps)
    assert scaled.shape == (2, 3, 3, 1)
    np.testing.assert_array_equal(scale, [8.0, 17.0])
    assert scaled.max(axis=(1, 2, 3)).tolist() == [1.0, 1.0]
    with pytest.raises(ValueError):
        m.stretch(np.zeros((3, 3)))
    with pytest.raises(ValueError):
        m.stretch(np.full((1, 3, 3), np.nan))


def test_smooth_delta_and_no_mixing_between_maps():
    maps = np.zeros((2, 41, 41, 1))
    maps[0, 20, 20, 0] = 1.0
    original = maps.copy()
    out = m.smooth(maps, 2.0)
    assert out.dtype == np.float32 and out.shape == maps.shape
    np.testing.assert_allclose(out[0].sum(), 1.0, rtol=1e-5)  # flux conserved far from edges
    np.testing.assert_allclose(out[0, 20, 20, 0], 1 / (2 * np.pi * 2.0**2), rtol=0.02)
    np.testing.assert_allclose(out[0, 20, 22, 0] / out[0, 20, 20, 0], np.exp(-0.5), rtol=0.02)
    np.testing.assert_array_equal(out[1], 0.0)  # the map axis is not smoothed
    flat = m.smooth(np.full((1, 20, 30), 0.4), 3.0)  # uniform background stays flat at the edges
    np.testing.assert_allclose(flat, 0.4, rtol=1e-5)
    np.testing.assert_array_equal(maps, original)
    same = m.smooth(maps[..., 0], 0)
    assert same.dtype == np.float32 and not np.shares_memory(same, maps)
    np.testing.assert_array_equal(same, maps[..., 0])
    with pytest.raises(ValueError):
        m.smooth(maps, -1.0)


def test_pix_to_label_known_values():
    lab = m.pix_to_label([99.5, 0.0, -0.5, 199.5], [99.5, 199.0, -0.5, 199.5])
    np.testing.assert_allclose(lab[0], [0.5, 0.5])
    np.testing.assert_allclose(lab[1], [0.5 / 200, 199.5 / 200])
    np.testing.assert_allclose(lab[2], [0.0, 0.0])  # outer corner of the first pixel
    np.testing.assert_allclose(lab[3], [1.0, 1.0])
    # non-square map, numpy order (ny, nx): x is divided by nx, y by ny
    np.testing.assert_allclose(m.pix_to_label(9.5, 4.5, shape=(10, 20)), [0.5, 0.5])
    np.testing.assert_allclose(m.pix_to_label(0, 0, shape=(10, 20)), [0.025, 0.05])


def test_label_round_trip():
    rng = np.random.default_rng(3)
    x, y = rng.uniform(-0.5, 149.5, 50), rng.uniform(-0.5, 99.5, 50)
    lab = m.pix_to_label(x, y, shape=(100, 150))
    assert lab.shape == (50, 2) and lab.min() >= 0 and lab.max() <= 1
    x2, y2 = m.label_to_pix(lab, shape=(100, 150))
    np.testing.assert_allclose(x2, x, atol=1e-4)
    np.testing.assert_allclose(y2, y, atol=1e-4)
    with pytest.raises(ValueError):
        m.label_to_pix(np.zeros((4, 3)))


def test_preprocess_localiser_input():
    counts = np.zeros((2, 16, 16))
    counts[0, 3, 4] = 10
    counts[0, 5, 5] = 5
    out = m.preprocess_localiser_input(counts)
    assert out.shape == (2, 16, 16, 1) and out.dtype == np.float32
    assert out[0, 3, 4, 0] == 1.0 and out[0, 5, 5, 0] == 0.5
    np.testing.assert_array_equal(out[1], 0.0)


# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------


def test_cleaner_parameters_shape_and_range():
    model = m.build_cleaner()
    assert model.name == "cnn_cleaner"
    assert m.count_params(model) == 1873
    x = np.random.default_rng(0).uniform(0, 1, (2, 200, 200, 1)).astype("float32")
    out = np.asarray(model.predict(x, verbose=0))
    assert out.shape == (2, 200, 200, 1)
    assert out.min() >= 0 and out.max() <= 1


def test_talk_regressor_parameter_arithmetic():
    model = m.build_talk_regressor()
    side = 200
    conv1 = 4 * 4 * 1 * 6 + 6
    side //= 2
    conv2 = 2 * 2 * 6 * 12 + 12
    side //= 2
    conv345 = 3 * (2 * 2 * 12 * 12 + 12)
    for _ in range(3):
        side //= 2
    flat = side * side * 12
    dense = flat * 10000 + 10000
    head = 10000 * 2 + 2
    assert side == 6
    assert m.count_params(model) == conv1 + conv2 + conv345 + dense + head
    out = np.asarray(model.predict(np.zeros((2, 200, 200, 1), "float32"), verbose=0))
    assert out.shape == (2, 2) and out.min() >= 0 and out.max() <= 1


def test_improved_localiser_size_shape_and_range():
    model = m.build_improved_localiser()
    assert model.name == "cnn_localiser_softargmax"
    assert m.count_params(model) <= 1_000_000
    x = np.random.default_rng(1).poisson(0.5, (2, 200, 200)).astype("float32")
    out = np.asarray(model.predict(m.preprocess_localiser_input(x), verbose=0))
    assert out.shape == (2, 2) and np.all((out > 0) & (out < 1))
    with pytest.raises(ValueError):
        m.build_improved_localiser(input_shape=(60, 64, 1))


def test_soft_argmax_on_known_heat_maps():
    layer = m.SpatialSoftArgmax(initial_beta=200.0)
    ny, nx = 10, 20
    logits = np.zeros((3, ny, nx, 1), "float32")
    logits[0, 7, 3, 0] = 1.0  # one spike at row 7, column 3
    logits[1, 2, 5, 0] = logits[1, 2, 15, 0] = 1.0  # two equal spikes on row 2
    out = np.asarray(keras.ops.convert_to_numpy(layer(logits)))
    np.testing.assert_allclose(out[0], m.pix_to_label(3, 7, shape=(ny, nx)), atol=1e-5)
    np.testing.assert_allclose(out[1], m.pix_to_label(10, 2, shape=(ny, nx)), atol=1e-5)
    np.testing.assert_allclose(out[2], [0.5, 0.5], atol=1e-6)  # flat heat map -> centre
    soft = m.SpatialSoftArgmax(initial_beta=1e-3)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(soft(logits))[0], [0.5, 0.5], atol=1e-3)
    cfg = layer.get_config()
    assert cfg["initial_beta"] == 200.0 and cfg["trainable_beta"] is True
    assert m.SpatialSoftArgmax.from_config(cfg).initial_beta == 200.0


def test_soft_argmax_with_offsets_moves_inside_the_cell():
    layer = m.SoftArgmaxWithOffsets(initial_beta=200.0)
    ny, nx = 10, 20
    logits = np.zeros((2, ny, nx, 1), "float32")
    logits[:, 7, 3, 0] = 1.0  # one spike at row 7, column 3
    offsets = np.zeros((2, ny, nx, 2), "float32")
    offsets[1, 7, 3] = (0.4, -0.3)  # the second map's source sits off that cell's centre
    out = np.asarray(keras.ops.convert_to_numpy(layer([logits, offsets])))
    np.testing.assert_allclose(out[0], m.pix_to_label(3, 7, shape=(ny, nx)), atol=1e-5)  # zero offsets: plain layer
    np.testing.assert_allclose(out[1], m.pix_to_label(3.4, 6.7, shape=(ny, nx)), atol=1e-5)
    plain = np.asarray(keras.ops.convert_to_numpy(m.SpatialSoftArgmax(initial_beta=200.0)(logits)))
    np.testing.assert_allclose(out[0], plain[0], atol=1e-6)
    with pytest.raises(ValueError, match="offsets"):
        m.SoftArgmaxWithOffsets()([logits, offsets[..., :1]])


def test_localiser_offsets_head_starts_at_zero_and_ablation_shares_weights(tmp_path):
    keras.utils.set_random_seed(0)
    model = m.build_improved_localiser(input_shape=(32, 32, 1), filters=(4, 4, 4), full_resolution_filters=2)
    assert m.count_params(model) - m.count_params(
        m.build_improved_localiser(input_shape=(32, 32, 1), filters=(4, 4, 4), full_resolution_filters=2,
                                   subcell_offsets=False)) == 2 * 4 + 2
    x = np.random.default_rng(2).random((3, 32, 32, 1)).astype("float32")
    plain = m.without_offsets(model)
    # zero-initialised offsets: the model and its ablation agree
    np.testing.assert_allclose(model.predict(x, verbose=0), plain.predict(x, verbose=0), atol=1e-6)
    head = model.get_layer("subcell_offsets")
    kernel, bias = head.get_weights()
    head.set_weights([kernel, np.full_like(bias, 0.5)])  # every cell shifted by tanh(0.5) cells in x and y
    shift = np.tanh(0.5) / 16  # one heat-map cell is 1/16 of the label range here
    np.testing.assert_allclose(model.predict(x, verbose=0) - plain.predict(x, verbose=0), shift, atol=1e-5)
    path = m.save_model(model, tmp_path / "loc.keras", {"input": m.LOCALISER_INPUT})
    loaded, _ = m.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_euclidean_distance_values():
    y_true = np.array([[0.0, 0.0], [0.5, 0.5]], "float32")
    y_pred = np.array([[0.3, 0.4], [0.5, 0.5]], "float32")
    d = keras.ops.convert_to_numpy(m.euclidean_distance(y_true, y_pred))
    np.testing.assert_allclose(d, [0.5, 0.0], atol=1e-4)


# ---------------------------------------------------------------------------
# Training and persistence
# ---------------------------------------------------------------------------


def _blob_maps(n, side, rng):
    """Gaussian blobs (sigma 1.5 px, peak 3) on Poisson noise (mean 0.3)."""
    yy, xx = np.mgrid[0:side, 0:side]
    x0 = rng.uniform(6, side - 7, n)
    y0 = rng.uniform(6, side - 7, n)
    blob = 3.0 * np.exp(-((xx - x0[:, None, None]) ** 2 + (yy - y0[:, None, None]) ** 2) / (2 * 1.5**2))
    counts = rng.poisson(0.3, (n, side, side)) + blob
    return m.preprocess_localiser_input(counts), m.pix_to_label(x0, y0, shape=(side, side))


def test_improved_localiser_learns_tiny_set():
    # 64 maps of 32 x 32 px: after 8 epochs the mean distance drops by a
    # factor ~20 (checked over several seeds with both backends); require 3.
    rng = np.random.default_rng(0)
    x, y = _blob_maps(64, 32, rng)
    x_val, y_val = _blob_maps(16, 32, rng)
    keras.utils.set_random_seed(0)
    model = m.build_improved_localiser(input_shape=(32, 32, 1), learning_rate=3e-3)
    before = float(model.evaluate(x, y, batch_size=16, verbose=0))
    history = m.train(model, x, y, x_val, y_val, epochs=8, batch_size=16, patience=8, verbose=0)
    after = float(model.evaluate(x, y, batch_size=16, verbose=0))
    assert set(history) == {"loss", "val_loss"}
    assert len(history["loss"]) == 8 and all(isinstance(v, float) for v in history["loss"])
    assert before > 0.15  # untrained: heat map nearly flat, prediction near the field centre
    assert after < before / 3, (before, after, history)


def test_saved_model_keeps_weights_not_optimizer_state(tmp_path, recwarn):
    """A trained model is saved with an unbuilt optimizer: the file holds no Adam
    moments, loads without a warning, predicts the same bit for bit and can be
    trained further; the model in memory keeps its optimizer and its state."""
    import h5py

    keras.utils.set_random_seed(3)
    model = m.build_cleaner(input_shape=(8, 8, 1))
    x = np.random.default_rng(0).random((16, 8, 8, 1)).astype("float32")
    model.fit(x, x, epochs=2, batch_size=8, verbose=0)
    state = [np.array(v) for v in model.optimizer.variables]
    assert len(state) > 2  # iterations, learning rate and the moments of every weight
    path = m.save_model(model, tmp_path / "cleaner.keras", {"profile": "quick"})
    after = [np.array(v) for v in model.optimizer.variables]
    assert len(after) == len(state) and all(np.array_equal(a, b) for a, b in zip(after, state))
    with zipfile.ZipFile(path) as z, h5py.File(io.BytesIO(z.read("model.weights.h5"))) as h5:
        sizes = {}
        h5.visititems(lambda name, obj: sizes.update({name: obj.size}) if isinstance(obj, h5py.Dataset) else None)
    n_optimizer = sum(s for k, s in sizes.items() if k.startswith("optimizer"))
    assert n_optimizer <= 2 and sum(sizes.values()) - n_optimizer == m.count_params(model)
    loaded, _ = m.load_model(path)
    assert not [w for w in recwarn if "optimizer" in str(w.message)]
    np.testing.assert_array_equal(np.asarray(loaded.predict(x, verbose=0)), np.asarray(model.predict(x, verbose=0)))
    loaded.fit(x, x, epochs=1, batch_size=8, verbose=0)


def test_save_load_round_trip(tmp_path):
    keras.utils.set_random_seed(2)
    model = m.build_improved_localiser(input_shape=(32, 32, 1), initial_beta=3.0)
    x, y = _blob_maps(4, 32, np.random.default_rng(5))
    expected = np.asarray(model.predict(x, verbose=0))
    meta = {"preprocessing": m.LOCALISER_INPUT, "shape": [32, 32], "n_train": np.int64(4)}
    path = tmp_path / "models" / "localiser.keras"
    assert m.save_model(model, path, meta) == path
    assert sorted(p.name for p in path.parent.iterdir()) == ["localiser.json", "localiser.keras"]

    loaded, meta2 = m.load_model(path)
    np.testing.assert_array_equal(np.asarray(loaded.predict(x, verbose=0)), expected)
    assert meta2["n_train"] == 4 and meta2["shape"] == [32, 32]
    assert meta2["saved_with"]["model_name"] == "cnn_localiser_softargmax"
    assert meta2["saved_with"]["n_params"] == m.count_params(model)
    assert meta2["saved_with"]["machine"]
    assert loaded.get_layer("soft_argmax").initial_beta == 3.0
    np.testing.assert_allclose(
        loaded.evaluate(x, y, verbose=0), model.evaluate(x, y, verbose=0), rtol=1e-6
    )
    heat = np.asarray(m.heatmap_model(loaded).predict(x, verbose=0))
    assert heat.shape == (4, 16, 16, 1)  # half resolution
    with pytest.raises(ValueError, match="keras"):
        m.save_model(model, tmp_path / "model.h5", meta)


def test_load_missing_and_corrupt_files(tmp_path):
    missing = tmp_path / "absent.keras"
    with pytest.raises(FileNotFoundError, match="absent.keras"):
        m.load_model(missing)

    model = m.build_cleaner(input_shape=(8, 8, 1))
    good = m.save_model(model, tmp_path / "cleaner.keras", {"profile": "quick"})
    assert json.loads(good.with_suffix(".json").read_text())["profile"] == "quick"

    os.remove(good.with_suffix(".json"))
    with pytest.raises(FileNotFoundError, match="cleaner.json"):
        m.load_model(good)

    garbage = tmp_path / "garbage.keras"
    garbage.write_bytes(b"this is not a zip archive")
    garbage.with_suffix(".json").write_text("{}")
    with pytest.raises(ValueError, match="garbage.keras"):
        m.load_model(garbage)

    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    truncated.with_suffix(".json").write_text("{}")
    with pytest.raises(ValueError, match="truncated.keras"):
        m.load_model(truncated)

    bad_meta = tmp_path / "badmeta.keras"
    bad_meta.write_bytes(good.read_bytes())
    bad_meta.with_suffix(".json").write_text("{not json")
    with pytest.raises(ValueError, match="badmeta.json"):
        m.load_model(bad_meta)


def test_background_normaliser_is_a_weighted_ratio(tmp_path):
    """Untrained, the learned FoV fit returns a weighted ratio of counts to
    template: exactly the normalisation on a noise-free scaled template, and
    it round-trips through save/load in safe mode."""
    from skyml.cta import models

    keras.utils.set_random_seed(0)
    template = np.linspace(1.0, 3.0, 32 * 32).reshape(1, 32, 32)
    x = models.background_normaliser_inputs(1.3 * template, template)
    model = models.build_background_normaliser(x.shape[1:], filters=4)
    assert np.allclose(np.exp(model.predict(x, verbose=0)), 1.3, rtol=1e-5)
    path = models.save_model(model, tmp_path / "bn.keras", {"task": "test"})
    loaded, _ = models.load_model(path)
    assert np.allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    with pytest.raises(ValueError):
        models.background_normaliser_inputs(template, np.zeros_like(template))


def test_clean_counts_does_not_depend_on_its_chunking():
    from skyml.cta import pipeline

    keras.utils.set_random_seed(3)
    cleaner = m.build_cleaner((16, 16, 1))
    counts = np.random.default_rng(3).poisson(2.0, size=(37, 16, 16)).astype(np.uint16)
    whole = pipeline.clean_counts(cleaner, counts, batch_size=8, chunk_batches=100)
    chunked = pipeline.clean_counts(cleaner, counts, batch_size=8, chunk_batches=1)
    assert whole.dtype == np.float32 and whole.shape == (37, 16, 16)
    np.testing.assert_array_equal(chunked, whole)
    assert np.all(np.isfinite(whole)) and whole.max() > 0
