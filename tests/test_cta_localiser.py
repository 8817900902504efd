"""Tests of the heat-map localiser's readout, head and training augmentation
(skyml.cta.models) and of its cache key (skyml.cta.pipeline)."""

import os

import numpy as np
import pytest

if os.environ.get("KERAS_BACKEND") == "jax":
    pytest.importorskip("jax", reason="KERAS_BACKEND=jax but jax is not installed (make jax installs the extra)")
keras = pytest.importorskip("keras")

from skyml.cta import models as m  # noqa: E402
from skyml.cta import pipeline, simulate  # noqa: E402


def _gaussian_logits(shape, x0, y0, sigma):
    """Log of a Gaussian bump (a heat map whose softmax is a Gaussian of width ``sigma`` cells)."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    return -((xx - x0) ** 2 + (yy - y0) ** 2) / (2.0 * sigma**2)


def _readout(layer, logits, training=False):
    return np.asarray(keras.ops.convert_to_numpy(layer(logits[..., None].astype("float32"), training=training)))


def test_local_window_readout_finds_a_known_subpixel_peak():
    shape = (64, 64)
    truth = [(37.3, 21.7), (10.05, 50.45), (31.5, 31.5)]
    logits = np.stack([_gaussian_logits(shape, x, y, 1.0) for x, y in truth])
    # a second, weaker candidate far from the first in the first map (a noise peak)
    logits[0] = np.maximum(logits[0], _gaussian_logits(shape, 5.0, 60.0, 1.0) - 1.0)
    out = _readout(m.SpatialSoftArgmax(window=4), logits)
    x, y = m.label_to_pix(out, shape)
    np.testing.assert_array_less(np.hypot(x - [t[0] for t in truth], y - [t[1] for t in truth]), 0.05)
    # the global soft-argmax is pulled towards the second candidate; in training the whole map is read
    xg, yg = m.label_to_pix(_readout(m.SpatialSoftArgmax(window=0), logits[:1]), shape)
    assert np.hypot(xg[0] - 37.3, yg[0] - 21.7) > 1.0
    np.testing.assert_allclose(_readout(m.SpatialSoftArgmax(window=4), logits[:1], training=True),
                               _readout(m.SpatialSoftArgmax(window=0), logits[:1]), atol=1e-6)
    assert m.SpatialSoftArgmax.from_config(m.SpatialSoftArgmax(window=4).get_config()).window == 4
    with pytest.raises(ValueError, match="window"):
        m.SpatialSoftArgmax(window=-1)


def test_local_window_readout_adds_the_offsets_of_the_window_cells():
    shape = (32, 32)
    logits = _gaussian_logits(shape, 12.0, 20.0, 0.3)[None, ..., None].astype("float32")  # one dominant cell
    offsets = np.zeros((1,) + shape + (2,), "float32")
    offsets[0, 20, 12] = (0.25, -0.4)
    layer = m.SoftArgmaxWithOffsets(window=2)
    x, y = m.label_to_pix(np.asarray(keras.ops.convert_to_numpy(layer([logits, offsets]))), shape)
    assert abs(x[0] - 12.25) < 0.05 and abs(y[0] - 19.6) < 0.05


def _likelihood_heat_maps(n_counts, rng, n_maps=40, side=32, sigma_px=2.0, cell=1):
    """Heat maps of bright point sources without background: the Poisson log-likelihood of a source at each
    cell, ``sum_i n_i log PSF(i - cell)``, divided by the map's peak count (the input stretch of the localiser),
    on a grid of ``cell`` x ``cell`` pixels (1: the full-resolution head, 2: the half-resolution one)."""
    yy, xx = np.mgrid[0:side, 0:side]
    x0, y0 = rng.uniform(10, side - 11, (2, n_maps))
    maps, truth = [], np.stack([x0, y0], 1)
    centres = (np.arange(side // cell) * cell + 0.5 * (cell - 1))
    for x, y in truth:
        mu = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma_px**2))
        counts = rng.poisson(n_counts * mu / mu.sum())
        cx = np.sum(counts * xx) / counts.sum()
        cy = np.sum(counts * yy) / counts.sum()
        # sum_i n_i log PSF = -N ((cx - c)^2 + (cy - c)^2) / (2 sigma^2) + terms independent of the cell c
        logl = -counts.sum() * ((cx - centres[None, :]) ** 2 + (cy - centres[:, None]) ** 2) / (2 * sigma_px**2)
        maps.append(logl / counts.max())
    return np.stack(maps), truth


def test_parabola_readout_has_no_floor_for_bright_sources():
    # heat maps of bright sources (the log-likelihood on the cell grid): the parabola readout's error keeps
    # falling as 1/sqrt(counts) from 1e3 to 1e5 counts, on the pixel grid and on 2 x 2 pixel cells alike; the
    # soft-argmax of the same heat maps, narrower than a cell, floors at a fraction of a cell
    rng = np.random.default_rng(3)
    counts = (1e3, 1e4, 1e5)
    ideal = np.array([2.0 * np.sqrt(np.log(4.0) / n) for n in counts])  # median radial error of the centroid
    for cell in (1, 2):
        err = {"parabola": [], "softmax": []}
        for n in counts:
            heat, truth = _likelihood_heat_maps(n, rng, cell=cell)
            for kind, errs in err.items():
                x, y = m.label_to_pix(_readout(m.SpatialSoftArgmax(window=3, readout=kind), heat), heat.shape[1:])
                x, y = x * cell + 0.5 * (cell - 1), y * cell + 0.5 * (cell - 1)  # cells -> pixels
                errs.append(np.median(np.hypot(x - truth[:, 0], y - truth[:, 1])))
        assert np.all(np.array(err["parabola"]) < 1.3 * ideal), (cell, err, ideal)
        assert err["softmax"][2] > 5 * ideal[2] and err["softmax"][2] > 0.5 * err["softmax"][1], (cell, err)
    with pytest.raises(ValueError, match="readout"):
        m.SpatialSoftArgmax(readout="argmax")


def test_parabola_readout_adds_the_peak_cell_offsets_and_is_exact_on_a_quadratic():
    shape = (24, 24)
    logits = _gaussian_logits(shape, 7.3, 15.8, 0.4)[None, ..., None].astype("float32")
    offsets = np.zeros((1,) + shape + (2,), "float32")
    layer = m.SoftArgmaxWithOffsets(readout="parabola")
    x, y = m.label_to_pix(np.asarray(keras.ops.convert_to_numpy(layer([logits, offsets]))), shape)
    assert abs(x[0] - 7.3) < 1e-3 and abs(y[0] - 15.8) < 1e-3
    offsets[0, 16, 7] = (0.1, -0.2)  # the arg-max cell's offsets are added
    x, y = m.label_to_pix(np.asarray(keras.ops.convert_to_numpy(layer([logits, offsets]))), shape)
    assert abs(x[0] - 7.4) < 1e-3 and abs(y[0] - 15.6) < 1e-3
    # in training the layer is the soft-argmax
    soft = np.asarray(keras.ops.convert_to_numpy(m.SoftArgmaxWithOffsets()([logits, offsets])))
    np.testing.assert_allclose(np.asarray(keras.ops.convert_to_numpy(layer([logits, offsets], training=True))),
                               soft, atol=1e-6)


def test_dihedral_augmentation_round_trip_is_exact():
    side, n = 16, 64
    rng = np.random.default_rng(0)
    xs, ys = rng.integers(0, side, (2, n))
    maps = np.zeros((n, side, side, 1), "float32")
    maps[np.arange(n), ys, xs, 0] = 1.0
    layer = m.RandomDihedral(seed=4)
    moved, choice = (np.asarray(keras.ops.convert_to_numpy(v)) for v in layer(maps, training=True))
    assert len({tuple(c) for c in choice}) == 8  # all 8 orientations drawn
    flat = moved[..., 0].reshape(n, -1).argmax(1)
    labels = m.pix_to_label(flat % side, flat // side, shape=(side, side))
    back = np.asarray(keras.ops.convert_to_numpy(m.UndoDihedral()([labels, choice])))
    np.testing.assert_allclose(back, m.pix_to_label(xs, ys, shape=(side, side)), atol=1e-6)
    same, zero = (np.asarray(keras.ops.convert_to_numpy(v)) for v in layer(maps, training=False))
    np.testing.assert_array_equal(same, maps)
    assert not zero.any()


def test_orientations_round_trip_and_readout_mean():
    """pipeline.orient / unorient_labels map a pixel of each of the 8 orientations back exactly; the
    8-orientation readout of an equivariant localiser (a parabola readout of the map itself) is its plain
    readout, and of a localiser with a fixed shift, the shift cancels."""
    side, n = 16, 24
    rng = np.random.default_rng(1)
    xs, ys = rng.integers(0, side, (2, n))
    maps = np.zeros((n, side, side), "float32")
    maps[np.arange(n), ys, xs] = 1.0
    orientations = set()
    for k in range(8):
        moved = pipeline.orient(maps, k)
        orientations.add(moved.tobytes())
        flat = moved.reshape(n, -1).argmax(1)
        back = pipeline.unorient_labels(m.pix_to_label(flat % side, flat // side, shape=(side, side)), k)
        np.testing.assert_allclose(back, m.pix_to_label(xs, ys, shape=(side, side)), atol=1e-6)
    assert len(orientations) == 8

    counts = rng.poisson(0.5, (n, side, side)).astype("float32")
    yy, xx = np.mgrid[0:side, 0:side]
    for i, (x0, y0) in enumerate(rng.uniform(4, side - 5, (n, 2))):
        counts[i] += rng.poisson(40 * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / 4.0))
    counts += rng.uniform(0, 0.1, counts.shape).astype("float32")  # no tied peaks, whose pick follows the scan order
    inp = keras.Input((side, side, 1))
    equivariant = keras.Model(inp, m.SpatialSoftArgmax(initial_beta=1.0, readout="parabola")(keras.ops.log1p(inp)))
    one = pipeline.localise(equivariant, counts, 1)
    np.testing.assert_allclose(pipeline.localise(equivariant, counts, 8), one, atol=1e-5)
    shifted = keras.Model(inp, equivariant(inp) + keras.ops.convert_to_tensor([[0.03, -0.02]]))
    np.testing.assert_allclose(pipeline.localise(shifted, counts, 1), one + [0.03, -0.02], atol=1e-5)
    np.testing.assert_allclose(pipeline.localise(shifted, counts, 8), one, atol=1e-5)
    both = keras.Model(inp, [equivariant(inp), shifted(inp)])
    a, b = pipeline.localise(both, counts, 8)
    np.testing.assert_allclose(a, one, atol=1e-5)
    np.testing.assert_allclose(b, one, atol=1e-5)
    with pytest.raises(ValueError, match="orientations"):
        pipeline.localise(equivariant, counts, 4)
    with pytest.raises(ValueError, match="square"):
        pipeline.orient(np.zeros((1, 4, 5)), 1)


def _blobs(n, side, rng):
    yy, xx = np.mgrid[0:side, 0:side]
    x0, y0 = rng.uniform(6, side - 7, (2, n))
    blob = 3.0 * np.exp(-((xx - x0[:, None, None]) ** 2 + (yy - y0[:, None, None]) ** 2) / (2 * 1.5**2))
    return m.preprocess_localiser_input(rng.poisson(0.3, (n, side, side)) + blob), m.pix_to_label(x0, y0, (side, side))


def _train_small(seed):
    rng = np.random.default_rng(0)
    x, y = _blobs(32, 32, rng)
    xv, yv = _blobs(8, 32, rng)
    keras.utils.set_random_seed(seed)
    model = m.build_improved_localiser((32, 32, 1), filters=(4, 8, 8), full_resolution_filters=4,
                                       full_resolution_head=True, dihedral_augment=True, window=3, seed=seed)
    m.train(model, x, y, xv, yv, epochs=2, batch_size=8, patience=10, seed=seed, verbose=0)
    return model, np.asarray(model.predict(xv, verbose=0))


def test_full_resolution_localiser_is_deterministic_and_round_trips(tmp_path):
    model, first = _train_small(5)
    _, again = _train_small(5)
    _, other = _train_small(6)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)
    assert model.get_layer("heatmap_logits").output.shape[1:3] == (32, 32)  # heat map on the pixel grid
    path = m.save_model(model, tmp_path / "loc.keras", {"input": m.LOCALISER_INPUT})
    loaded, _ = m.load_model(path)
    x = _blobs(4, 32, np.random.default_rng(9))[0]
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    np.testing.assert_allclose(m.with_readout(model, 3).predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    # notebook 03's readout and its two ablations as the outputs of one model sharing the heat map
    readout = m.with_readout(model, 0, "parabola")
    ablations = (m.without_offsets(readout), m.with_readout(readout, 0, "softmax"))
    assert all(m._readout_head(a).readout == r for a, r in zip((readout, *ablations), ("parabola", "parabola", "softmax")))
    joint = keras.Model(readout.inputs, [a.outputs[0] for a in (readout, *ablations)])
    for out, alone in zip(joint.predict(x, verbose=0), (readout, *ablations)):
        np.testing.assert_allclose(out, alone.predict(x, verbose=0), atol=1e-6)


def test_full_resolution_head_parameter_count():
    small = {"input_shape": (32, 32, 1), "filters": (4, 8, 8), "full_resolution_filters": 4}
    extra = m.count_params(m.build_improved_localiser(**small, full_resolution_head=True)) \
        - m.count_params(m.build_improved_localiser(**small))
    assert extra == (4 + 4) * 9 * 4 + 4 - (4 - 4) * 3  # new 3x3 conv; the 1x1 heads read 4 channels either way
    assert m.count_params(m.build_improved_localiser(full_resolution_head=True)) == 146_180


def test_new_localiser_options_keep_the_old_cache_key_at_their_defaults(monkeypatch):
    keys = []
    def fake_cached(name, key, fit, profile, install):
        keys.append(key)
        return m.build_improved_localiser((32, 32, 1), filters=(4, 4, 4), full_resolution_filters=2), {}, {}, 0.0

    monkeypatch.setattr(pipeline, "train_cached", fake_cached)
    params = simulate.CTASimParams()
    pipeline.train_improved_localiser(10, 5, 1, params, epochs=1)
    model = pipeline.train_improved_localiser(10, 5, 1, params, epochs=1, full_resolution_head=True, window=3,
                                              readout="parabola", dihedral_augment=True,
                                              train_shift=simulate.CTAShift())[0]
    head = model.get_layer("soft_argmax_readout")  # the inference readout wraps the cached model
    assert head.readout == "parabola" and head.window == 3
    assert set(keys[0]) == {"n_train", "n_val", "seed", "sim", "epochs", "batch_size", "patience",
                            "learning_rate", "subcell_offsets", "version"}
    assert keys[1]["full_resolution_head"] is True and "window" not in keys[1] and "readout" not in keys[1] and keys[1]["dihedral_augment"] is True
    assert keys[1]["train_shift"] == simulate.CTAShift().to_dict()


def test_matched_filter_is_added_to_the_heat_map_and_checked():
    small = {"input_shape": (32, 32, 1), "filters": (4, 8, 8), "full_resolution_filters": 4,
             "full_resolution_head": True}
    keras.utils.set_random_seed(1)
    model = m.build_improved_localiser(**small, matched_filter_size=7)
    kernel = model.get_layer("matched_filter").get_weights()[0]
    assert kernel.shape == (7, 7, 1, 1) and abs(kernel.sum() - 1) < 1e-5 and kernel[3, 3, 0, 0] == kernel.max()
    x = _blobs(3, 32, np.random.default_rng(2))[0]
    heat = m.heatmap_model(model)
    deep = keras.Model(model.inputs, model.get_layer("deep_logits").output)
    filtered = np.asarray(keras.ops.convert_to_numpy(keras.ops.conv(x, kernel, padding="same")))
    np.testing.assert_allclose(heat.predict(x, verbose=0), deep.predict(x, verbose=0) + filtered, atol=1e-5)
    for bad in ({"matched_filter_size": 6}, {"matched_filter_size": 7, "full_resolution_head": False}):
        with pytest.raises(ValueError, match="matched_filter_size"):
            m.build_improved_localiser(**{**small, **bad})


def test_peak_parabola_locates_on_one_map_and_refines_on_another():
    shape = (24, 24)
    logits = _gaussian_logits(shape, 5.0, 5.0, 1.0)  # the peak cell is chosen on this map ...
    fine = _gaussian_logits(shape, 5.3, 4.6, 2.0)  # ... and its sub-cell position read on this one
    out = m.PeakParabola()([logits[None, ..., None].astype("float32"), fine[None, ..., None].astype("float32")])
    x, y = m.label_to_pix(np.asarray(keras.ops.convert_to_numpy(out)), shape)
    assert abs(x[0] - 5.3) < 1e-3 and abs(y[0] - 4.6) < 1e-3
    same = m.PeakParabola()([fine[None, ..., None].astype("float32")] * 2)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(same),
                               _readout(m.SpatialSoftArgmax(readout="parabola"), fine[None]), atol=1e-6)


def test_continued_training_starts_from_the_first_one_and_keeps_its_key(tmp_path, monkeypatch):
    from skyml import paths

    monkeypatch.setattr(paths, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(paths, "MODELS", tmp_path / "models")
    params = simulate.CTASimParams(npix=32)
    kw = dict(epochs=1, full_resolution_head=True, profile="quick")
    first, first_meta, first_history, _ = pipeline.train_improved_localiser(8, 4, 1, params, **kw)
    more, meta, history, seconds = pipeline.train_improved_localiser(8, 4, 1, params, continue_epochs=2, **kw)
    assert seconds is not None and len(history["loss"]) == 3 and history["loss"][0] == first_history["loss"][0]
    assert meta["continued_from"]["keras_sha256"] == first_meta["keras_sha256"] and meta["continue_epochs"] == 2
    assert history["learning_rate"][0] == pytest.approx(2.5e-4)  # the fine-tuning rate, not the first training's
    assert meta["cache_key"]["continue_epochs"] == 2 and meta["continue_learning_rate"] == 2.5e-4 and "continue_epochs" not in first_meta["cache_key"]
    # the kept weights are those of the lowest validation loss, the first training's epoch included
    x = np.random.default_rng(3).poisson(1.0, (2, 32, 32, 1)).astype(np.float32)
    same = np.array_equal(more.predict(x, verbose=0), first.predict(x, verbose=0))
    assert same == (min(history["val_loss"][1:]) >= history["val_loss"][0])
    # the first training stays cached under its own key: asking for it again trains nothing
    assert pipeline.train_improved_localiser(8, 4, 1, params, **kw)[3] is None


def test_randomised_stage_starts_from_the_nominal_network_and_keeps_the_better_one(tmp_path, monkeypatch):
    from skyml import paths
    from skyml.cta import sweep

    monkeypatch.setattr(paths, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(paths, "MODELS", tmp_path / "models")
    params = simulate.CTASimParams(npix=32)
    kw = dict(epochs=1, full_resolution_head=True, continue_epochs=1, profile="quick")
    base, base_meta, base_history, _ = pipeline.train_improved_localiser(8, 4, 1, params, **kw)
    sky = dict(randomise_params=sweep.randomised_params(params), randomise_shift=sweep.TRAIN_SHIFT)
    model, meta, history, seconds = pipeline.train_improved_localiser(8, 4, 1, params, randomise_epochs=2, **sky, **kw)
    assert seconds is not None and len(history["loss"]) == 4 and history["loss"][:2] == base_history["loss"]
    assert meta["randomised_from"]["keras_sha256"] == base_meta["keras_sha256"] and meta["randomised_from"]["epochs"] == 2
    assert history["learning_rate"][2] == pytest.approx(2.5e-4)
    assert meta["cache_key"]["randomise_sky"]["shift"] == sweep.TRAIN_SHIFT.to_dict()
    assert meta["cache_key"]["continue_epochs"] == 1 and "randomise_epochs" not in base_meta["cache_key"]
    # the randomised sky's validation maps decide: the starting network is kept unless an epoch scored lower there
    x = np.random.default_rng(3).poisson(1.0, (2, 32, 32, 1)).astype(np.float32)
    same = np.array_equal(model.predict(x, verbose=0), base.predict(x, verbose=0))
    assert same == (min(history["val_loss"][2:]) >= meta["randomised_from"]["val_loss_randomised_sky"])
    # the nominal network stays cached under its own key, the randomised one under its own
    assert pipeline.train_improved_localiser(8, 4, 1, params, **kw)[3] is None
    assert pipeline.train_improved_localiser(8, 4, 1, params, randomise_epochs=2, **sky, **kw)[3] is None
    with pytest.raises(ValueError, match="randomise_params"):
        pipeline.train_improved_localiser(8, 4, 1, params, randomise_epochs=2, **kw)
    # the widened stage starts from the randomised network, on its own sky and under its own key
    wide = dict(widen_params=sweep.wide_params(params), widen_shift=sweep.WIDE_SHIFT)
    widened, wmeta, whistory, wseconds = pipeline.train_improved_localiser(8, 4, 1, params, randomise_epochs=2,
                                                                           widen_epochs=1, **sky, **wide, **kw)
    assert wseconds is not None and len(whistory["loss"]) == 5 and whistory["loss"][:4] == history["loss"]
    assert wmeta["widened_from"]["keras_sha256"] == meta["keras_sha256"] and wmeta["widened_from"]["epochs"] == 4
    assert wmeta["randomised_from"] == meta["randomised_from"] and wmeta["widen_epochs"] == 1
    assert wmeta["cache_key"]["widen_sky"]["shift"]["psf_tail_ratio_max"] == sweep.WIDE_SHIFT.psf_tail_ratio_max
    assert {k: v for k, v in wmeta["cache_key"].items() if not k.startswith("widen_")} == meta["cache_key"]
    same = np.array_equal(widened.predict(x, verbose=0), model.predict(x, verbose=0))
    assert same == (min(whistory["val_loss"][4:]) >= wmeta["widened_from"]["val_loss_randomised_sky"])
    with pytest.raises(ValueError, match="widen_epochs"):
        pipeline.train_improved_localiser(8, 4, 1, params, widen_epochs=1, **wide, **kw)
    # continuing the wider stage starts from its network, not from the randomised one, at its own rate and key
    more, cmeta, chistory, cseconds = pipeline.train_improved_localiser(
        8, 4, 1, params, randomise_epochs=2, widen_epochs=1, widen_continue_epochs=1,
        widen_continue_learning_rate=5e-5, **sky, **wide, **kw)
    assert cseconds is not None and len(chistory["loss"]) == 6 and chistory["loss"][:5] == whistory["loss"]
    assert chistory["learning_rate"][-1] == pytest.approx(5e-5)
    assert cmeta["widen_continued_from"]["keras_sha256"] == wmeta["keras_sha256"]
    assert cmeta["widen_continued_from"]["epochs"] == 5 and cmeta["widened_from"] == wmeta["widened_from"]
    assert {k: v for k, v in cmeta["cache_key"].items() if not k.startswith("widen_continue")} == wmeta["cache_key"]
    same = np.array_equal(more.predict(x, verbose=0), widened.predict(x, verbose=0))
    assert same == (min(chistory["val_loss"][5:]) >= cmeta["widen_continued_from"]["val_loss_randomised_sky"])
    # the wider stage stays cached under its own key
    assert pipeline.train_improved_localiser(8, 4, 1, params, randomise_epochs=2, widen_epochs=1, **sky, **wide,
                                             **kw)[3] is None
    with pytest.raises(ValueError, match="widen_continue_epochs"):
        pipeline.train_improved_localiser(8, 4, 1, params, randomise_epochs=2, widen_continue_epochs=1, **sky,
                                          **wide, **kw)
