"""The restored-image network for a range of instruments: invariance to the
image mean, the randomised training fields, the beam check of
``skyml radio-counts`` and the conditioning ranges of the sidecar."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import QTable

from skyml import cli
from skyml.radio import models, pipeline
from skyml.radio import simulate as sim

from conftest import small_radio_network

P = sim.RadioSimParams()
pytestmark = pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")


@pytest.fixture(scope="module")
def randomised():
    """Twelve 64-px randomised training fields (one sub-image each) and the thinned ones."""
    return sim.simulate_fields(12, 3, P, "train", 64, ("alpha_s0", "broken"), thinning=True, randomise=True)


def test_instrument_draws_span_the_stated_ranges_and_depend_on_the_seed_only():
    draws = [sim.instrument_draw(4, "train", i) for i in range(400)]
    depth = np.array([d["clean_depth"] for d in draws])
    # a CLEAN limit of zero (the whole sky model restored) in the stated share, else log-uniform in its range
    assert abs(np.mean(depth == 0.0) - sim.DR_FULL_RESTORE_FRACTION) < 0.06
    for key, (lo, hi) in (("beam_scale", sim.DR_BEAM_RANGE), ("stretch", sim.DR_STRETCH_RANGE),
                          ("noise_scale", sim.DR_NOISE_RANGE), ("clean_depth", sim.DR_CLEAN_DEPTH_RANGE)):
        v = np.array([d[key] for d in draws])
        v = v[v > 0] if key == "clean_depth" else v
        assert lo <= v.min() < lo * 1.03 and hi / 1.03 < v.max() <= hi, key
        # log-uniform: the median near the geometric mean of the ends
        assert np.median(v) == pytest.approx(np.sqrt(lo * hi), rel=0.05), key
    removed = np.mean([d["mean_removed"] for d in draws])
    assert abs(removed - sim.DR_MEAN_REMOVED_FRACTION) < 0.07
    w = np.array([d["noise_restored"] for d in draws])  # uniform
    lo, hi = sim.DR_NOISE_RESTORED_RANGE
    assert lo <= w.min() < lo + 0.03 and hi - 0.03 < w.max() <= hi and np.median(w) == pytest.approx(0.5, abs=0.06)
    assert draws[:5] == [sim.instrument_draw(4, "train", i) for i in range(5)]
    assert draws[0] != sim.instrument_draw(5, "train", 0) and draws[0] != sim.instrument_draw(4, "val", 0)


def test_stretched_beams_scale_the_beam_and_keep_the_dirty_beam_normalised():
    psf, _, _ = sim.stretched_beams(P, 1.0, 1.0)
    np.testing.assert_allclose(psf, sim.dirty_beam(P), atol=1e-12)
    b0 = sim.beam_params(P)
    g0 = np.sqrt(b0["fwhm_major_px"] * b0["fwhm_minor_px"])
    for scale, stretch in ((0.8, 1.0), (1.3, 0.85), (1.1, 1.2)):
        psf, clean, (fmaj, fmin, _) = sim.stretched_beams(P, scale, stretch)
        c = P.psf_npix // 2
        assert psf[c, c] == pytest.approx(1.0) and abs(psf.sum()) < 1e-9 and clean.max() == pytest.approx(1.0)
        assert np.sqrt(fmaj * fmin) / g0 == pytest.approx(scale, rel=0.03), (scale, stretch)


def test_randomised_fields_have_their_instrument_the_same_sky_and_are_deterministic(randomised):
    again = sim.simulate_fields(12, 3, P, "train", 64, ("alpha_s0", "broken"), thinning=True, randomise=True)
    for key, value in randomised.items():
        np.testing.assert_array_equal(value, again[key], err_msg=key)
    plain = sim.simulate_fields(12, 3, P, "train", 64, ("alpha_s0", "broken"), thinning=True)
    for key in ("skymodel", "counts", "n_sources", "p1", "p2", "density"):
        np.testing.assert_array_equal(randomised[key], plain[key], err_msg=key)
    assert not np.allclose(randomised["restored"], plain["restored"])
    n = len(randomised["density"])  # with the thinned fields
    draws = [sim.instrument_draw(3, "train", i) for i in range(n)]
    np.testing.assert_array_equal(randomised["instrument_beam_scale"], [d["beam_scale"] for d in draws])
    np.testing.assert_array_equal(randomised["instrument_mean_removed"], [d["mean_removed"] for d in draws])
    area0 = sim.beam_params(P)["area_px"]
    np.testing.assert_allclose(randomised["beam_area_px"] / area0, randomised["instrument_beam_scale"] ** 2,
                               rtol=0.06)
    means = randomised["restored"].mean(axis=(1, 2), dtype=np.float64)
    removed = randomised["instrument_mean_removed"].astype(bool)
    assert removed.any() and (~removed).any()
    assert np.all(np.abs(means[removed]) < 1e-3 * P.noise_rms_jy)
    assert np.any(randomised["density"] == 0)


def test_randomised_noise_fields_have_the_drawn_rms_and_beam():
    null = sim.noise_fields(8, 3, P, 256, randomise=True)
    draws = [sim.instrument_draw(3, "null", i) for i in range(8)]
    scale = np.array([d["noise_scale"] for d in draws])
    assert scale.max() / scale.min() > 1.15
    np.testing.assert_allclose(null["restored"].std(axis=(1, 2)) / (scale * P.noise_rms_jy), 1.0, atol=0.06)
    area0 = sim.beam_params(P)["area_px"]
    np.testing.assert_allclose(null["beam_area_px"] / area0, [d["beam_scale"] ** 2 for d in draws], rtol=0.06)
    plain = sim.noise_fields(2, 3, P, 256)
    assert plain["restored"].std() == pytest.approx(P.noise_rms_jy, rel=0.06)
    np.testing.assert_allclose(plain["beam_area_px"], area0)


@pytest.fixture(scope="module")
def conditioned(randomised):
    """A small untrained network with the conditioning input and its sidecar keys."""
    return small_radio_network(randomised)


def test_counts_do_not_depend_on_the_image_mean(randomised, conditioned):
    model, meta = conditioned
    image = np.tile(randomised["restored"][0], (2, 3))
    base = pipeline.count_image(model, meta, image)
    for offset in (-image.mean(), 3.0 * P.noise_rms_jy):
        other = pipeline.count_image(model, meta, image + offset)
        np.testing.assert_allclose(other["counts"], base["counts"], rtol=1e-4)
        assert other["distribution"]["hist_distance"] == pytest.approx(base["distribution"]["hist_distance"],
                                                                        rel=1e-4)
    # the inputs of training and evaluation: the same
    x0, _ = pipeline.xy(randomised, "restored", P, 64)
    shifted = dict(randomised, restored=randomised["restored"] + 2.0 * P.noise_rms_jy)
    x1, _ = pipeline.xy(shifted, "restored", P, 64)
    for a, b in zip(x0, x1):
        np.testing.assert_allclose(a, b, atol=2e-5)
    # a model without a level (its sidecar has no "level"): the mean moves its inputs
    bare = {k: v for k, v in meta.items() if k != "level"}
    assert not np.allclose(pipeline.count_image(model, bare, image + 3.0 * P.noise_rms_jy)["counts"],
                           pipeline.count_image(model, bare, image)["counts"], rtol=1e-4)


def test_conditioning_follows_the_beam_and_the_noise(conditioned):
    _, meta = conditioned
    ref = meta["conditioning"]
    c = pipeline.conditioning(2.0 * ref["beam_area_ref_px"], 0.5 * ref["noise_ref_jy"], meta)
    np.testing.assert_allclose(c, [np.log(2.0), np.log(0.5), 1.0], rtol=1e-6)  # the CLEAN limit: the reference
    c = pipeline.conditioning(ref["beam_area_ref_px"], ref["noise_ref_jy"], meta, 0.25 * ref["clean_limit_ref_jy"])
    np.testing.assert_allclose(c, [0.0, 0.0, 0.25], atol=1e-7)
    assert pipeline.conditioning(ref["beam_area_ref_px"], ref["noise_ref_jy"], meta, 0.0)[2] == 0.0
    # a sidecar of a network conditioned on beam and noise only gets those two scalars
    old = {"conditioning": {k: v for k, v in ref.items() if k != "clean_limit_ref_jy"}}
    assert pipeline.conditioning(ref["beam_area_ref_px"], ref["noise_ref_jy"], old, 0.0).shape == (2,)


def test_training_fields_carry_their_clean_limit_into_the_conditioning(randomised, conditioned):
    _, meta = conditioned
    ref = meta["conditioning"]
    depth = np.asarray(randomised["instrument_clean_depth"])
    assert np.any(depth == 0.0) and np.any(depth > 0.0)
    assert ref["clean_limit_jy_range"] == pytest.approx([depth.min() * ref["clean_limit_ref_jy"],
                                                         depth.max() * ref["clean_limit_ref_jy"]])
    assert ref["full_restore_fraction"] == pytest.approx(np.mean(depth == 0.0))
    x, _ = pipeline.xy(randomised, "restored", P, 64)
    per_field = x[2].reshape(len(depth), -1, pipeline.N_COND)
    np.testing.assert_allclose(per_field[..., 2], np.repeat(depth[:, None], per_field.shape[1], 1), rtol=1e-6)
    # fields without a drawn instrument get the given limit, else the reference
    bare = {"restored": randomised["restored"], "counts": randomised["counts"]}
    assert np.all(pipeline.xy(bare, "restored", P, 64)[0][2][:, 2] == 1.0)
    assert np.all(pipeline.xy(bare, "restored", P, 64, clean_limit_jy=0.0)[0][2][:, 2] == 0.0)


def test_sidecar_records_the_conditioning_ranges(monkeypatch):
    """train_model's sidecar (cache and installation bypassed): the ranges of
    the randomised training fields, the randomisation, the level and the
    levelled training range."""
    monkeypatch.setattr(sim, "load_fields", lambda *a, **k: sim.simulate_fields(*a, **k))
    monkeypatch.setattr(pipeline, "train_cached", lambda kind, key, fit, profile, install: (*fit(), None))
    monkeypatch.setattr(pipeline, "N_NULL_FIELDS", 2)
    _, meta, _, _ = pipeline.train_model("restored", 3, 64, 1, 7, P, epochs=1, filters=2, profile="quick")
    rand = sim.simulate_fields(3, 7, P, "train", 64, pipeline.SPLIT_FAMILIES["train"], True, True)
    train = pipeline.with_randomised("train", 3, 7, P, 64)
    # the nominal instrument's fields, then the same skies through the randomised instruments
    n = len(rand["density"])
    assert len(train["density"]) == 2 * n and np.array_equal(train["counts"][n:], rand["counts"])
    np.testing.assert_array_equal(train["restored"][n:], rand["restored"])
    assert np.all(train["instrument_noise_scale"][:n] == 1.0) and np.all(train["beam_area_px"][:n] ==
                                                                          sim.beam_params(P)["area_px"])
    assert meta["n_train_sub_images"] == 2 * n
    cond = meta["conditioning"]
    assert cond["beam_area_px_range"] == [pytest.approx(train["beam_area_px"].min()),
                                          pytest.approx(train["beam_area_px"].max())]
    ratio = train["beam_fwhm_major_px"] / train["beam_fwhm_minor_px"]
    assert cond["beam_axis_ratio_range"] == [pytest.approx(ratio.min()), pytest.approx(ratio.max())]
    noise = train["instrument_noise_scale"] * P.noise_rms_jy
    assert cond["noise_rms_jy_range"] == [pytest.approx(noise.min()), pytest.approx(noise.max())]
    assert cond["randomisation"] == sim.randomisation()
    assert cond["beam_area_ref_px"] == pytest.approx(sim.beam_params(P)["area_px"])
    assert meta["level"]["method"] == pipeline.LEVEL_METHOD and meta["training_range"]["levelled"] is True
    # the sky-model network is not conditioned
    _, meta_sky, _, _ = pipeline.train_model("skymodel", 3, 64, 1, 7, P, epochs=1, filters=2, profile="quick")
    assert "conditioning" not in meta_sky and "level" not in meta_sky


@pytest.fixture(scope="module")
def model_path(tmp_path_factory, conditioned):
    from skyml.cta.models import save_model

    model, meta = conditioned
    return save_model(model, tmp_path_factory.mktemp("m") / "radio_counts_cnn.keras", meta)


def _beam_of_area(area_px, ratio=1.0, bpa=0.0):
    """BMAJ/BMIN [deg] of a beam of ``area_px`` pixels and axis ratio ``ratio``."""
    g = np.sqrt(area_px * 4 * np.log(2) / np.pi) * P.pixel_arcsec / 3600.0
    return {"bmaj_deg": g * np.sqrt(ratio), "bmin_deg": g / np.sqrt(ratio), "bpa_deg": bpa}


def test_cli_takes_a_beam_inside_the_training_range_and_refuses_one_outside(tmp_path, randomised, model_path,
                                                                            conditioned, capsys, cli_error):
    _, meta = conditioned
    lo, hi = meta["conditioning"]["beam_area_px_range"]
    nlo, nhi = meta["conditioning"]["noise_rms_jy_range"]
    noise = np.sqrt(nlo * nhi)
    limit = str(0.5 * meta["conditioning"]["clean_limit_jy_range"][1])  # inside the training range
    image = np.tile(randomised["restored"][0], (2, 2))
    inside = pipeline.write_restored_image(tmp_path / "in.fits", image, P, beam=_beam_of_area(np.sqrt(lo * hi)),
                                           noise_rms_jy=noise)
    out = tmp_path / "in.ecsv"
    assert cli.main(["radio-counts", str(inside), "-o", str(out), "--model", str(model_path),
                     "--clean-limit", limit]) == 0
    capsys.readouterr()
    table = QTable.read(out)
    assert table.meta["beam_area_px"] == pytest.approx(np.sqrt(lo * hi), rel=1e-5)
    assert table.meta["noise_rms_jy"] == pytest.approx(noise, rel=1e-6)
    # the conditioning the command gives the network is the header's beam and noise
    model, _ = conditioned
    direct = pipeline.count_image(model, meta, image, np.sqrt(lo * hi), noise, float(limit))
    np.testing.assert_allclose(table["counts"], direct["counts"], rtol=1e-5)
    assert not np.allclose(pipeline.count_image(model, meta, image, hi * 3, noise, float(limit))["counts"],
                           direct["counts"],
                           rtol=1e-4)
    assert not np.allclose(pipeline.count_image(model, meta, image, np.sqrt(lo * hi), 3 * noise,
                                               float(limit))["counts"],
                           direct["counts"], rtol=1e-4)
    # --noise-rms overrides the header
    out2 = tmp_path / "in2.ecsv"
    assert cli.main(["radio-counts", str(inside), "-o", str(out2), "--model", str(model_path),
                     "--clean-limit", limit, "--noise-rms", str(nlo)]) == 0
    capsys.readouterr()
    np.testing.assert_allclose(QTable.read(out2)["counts"],
                               pipeline.count_image(model, meta, image, np.sqrt(lo * hi), nlo, float(limit))["counts"],
                               rtol=1e-5)
    for name, beam, fragment in (("wide", _beam_of_area(hi * 1.3), "outside the training range"),
                                 ("narrow", _beam_of_area(lo / 1.3), "outside the training range"),
                                 ("elongated", _beam_of_area(np.sqrt(lo * hi), 3.0), "axis ratio")):
        path = pipeline.write_restored_image(tmp_path / f"{name}.fits", image, P, beam=beam, noise_rms_jy=noise)
        target = tmp_path / f"{name}.ecsv"
        cli_error(["radio-counts", str(path), "-o", str(target), "--model", str(model_path), "--clean-limit",
                   limit], "beam", fragment)
        assert not target.exists()
    # a thermal noise outside the training range, or none, is refused
    target = tmp_path / "noisy.ecsv"
    cli_error(["radio-counts", str(inside), "-o", str(target), "--model", str(model_path), "--clean-limit",
               limit, "--noise-rms", str(1.5 * nhi)], "thermal noise rms", "outside the training range")
    assert not target.exists()
    from astropy.io import fits

    with fits.open(inside) as hdul:
        del hdul[0].header["NOISE"]
        hdul.writeto(tmp_path / "no_noise.fits")
    cli_error(["radio-counts", str(tmp_path / "no_noise.fits"), "-o", str(target), "--model", str(model_path),
               "--clean-limit", limit],
              "--noise-rms", "NOISE")
    assert not target.exists()


def test_cli_takes_a_clean_limit_inside_the_training_range_and_refuses_one_outside(tmp_path, randomised, model_path,
                                                                                  conditioned, capsys, cli_error):
    model, meta = conditioned
    cond = meta["conditioning"]
    lo, hi = cond["clean_limit_jy_range"]
    noise = float(np.sqrt(np.prod(cond["noise_rms_jy_range"])))
    area = float(np.sqrt(np.prod(cond["beam_area_px_range"])))
    image = np.tile(randomised["restored"][0], (2, 2))
    path = pipeline.write_restored_image(tmp_path / "in.fits", image, P, beam=_beam_of_area(area), noise_rms_jy=noise)
    tables = {}
    for limit in (lo, 0.5 * hi):
        out = tmp_path / f"limit_{limit:g}.ecsv"
        assert cli.main(["radio-counts", str(path), "-o", str(out), "--model", str(model_path),
                         "--clean-limit", str(limit)]) == 0
        capsys.readouterr()
        tables[limit] = table = QTable.read(out)
        assert table.meta["clean_limit_jy"] == pytest.approx(limit)
        np.testing.assert_allclose(table["counts"], pipeline.count_image(model, meta, image, table.meta["beam_area_px"],
                                                                         noise, limit)["counts"], rtol=1e-5)
    assert not np.allclose(tables[lo]["counts"], tables[0.5 * hi]["counts"], rtol=1e-4)
    # above the training range, negative, or (this small model's range lacks it) the default reference: refused
    for extra in (["--clean-limit", str(1.5 * hi)], ["--clean-limit=-1e-6"], []):
        target = tmp_path / "refused.ecsv"
        cli_error(["radio-counts", str(path), "-o", str(target), "--model", str(model_path), *extra],
                  "CLEAN limit", "outside the training range")
        assert not target.exists()


def test_a_network_conditioned_on_beam_and_noise_only_counts_without_a_clean_limit_and_refuses_one(
        tmp_path, randomised, conditioned, capsys, cli_error):
    import keras

    from skyml.cta.models import save_model

    _, meta = conditioned
    old_cond = {k: v for k, v in meta["conditioning"].items()
                if k not in ("clean_limit_ref_jy", "clean_limit_jy_range", "full_restore_fraction")}
    old_cond["inputs"] = old_cond["inputs"][:2]
    old_meta = dict(meta, conditioning=old_cond)
    x, _ = pipeline.xy(randomised, "restored", P, 64)
    keras.utils.set_random_seed(0)
    old = models.build_cnn(P.n_bins, filters=2, dense=8, hist_mean=x[1].mean(0), hist_std=x[1].std(0), n_cond=2)
    path = save_model(old, tmp_path / "m" / "radio_counts_cnn.keras", old_meta)
    noise = float(np.sqrt(np.prod(old_cond["noise_rms_jy_range"])))
    area = float(np.sqrt(np.prod(old_cond["beam_area_px_range"])))
    image = np.tile(randomised["restored"][0], (2, 2))
    fits_path = pipeline.write_restored_image(tmp_path / "in.fits", image, P, beam=_beam_of_area(area),
                                              noise_rms_jy=noise)
    out = tmp_path / "in.ecsv"
    assert cli.main(["radio-counts", str(fits_path), "-o", str(out), "--model", str(path)]) == 0
    capsys.readouterr()
    table = QTable.read(out)
    assert "clean_limit_jy" not in table.meta
    np.testing.assert_allclose(table["counts"], pipeline.count_image(old, old_meta, image, table.meta["beam_area_px"],
                                                                     noise)["counts"], rtol=1e-5)
    target = tmp_path / "refused.ecsv"
    cli_error(["radio-counts", str(fits_path), "-o", str(target), "--model", str(path), "--clean-limit", "0"],
              "--clean-limit given", "not trained on a range of CLEAN limits")
    assert not target.exists()


def test_distribution_check_flags_noise_beyond_the_randomised_range(randomised, conditioned):
    _, meta = conditioned
    lo, hi = meta["training_range"]["noise_mad_jy"]
    rng = np.random.default_rng(0)
    inside = rng.normal(0.0, 0.5 * (lo + hi) / 1.0, (64, 64))
    beyond = rng.normal(0.0, hi * 1.15, (64, 64))
    assert pipeline.distribution_check([inside], meta)["noise_mad_jy"][0] > lo
    assert "robust noise" not in pipeline.distribution_check([inside], meta)["reason"]
    assert "robust noise" in pipeline.distribution_check([beyond], meta)["reason"]


def test_the_drawn_clean_depth_and_noise_kernel_shape_the_restored_image():
    base = sim.instrument_draw(3, "train", 0)
    sky = sim.render_sky(np.random.default_rng(9), P, 256, "alpha_s0", 0.0, 1e-5)
    deep = sim.render_sky(np.random.default_rng(9), P, 256, "alpha_s0", 0.0, 1e-5,
                          s_clean_jy=0.1 * P.clean_nsigma * P.noise_rms_jy)
    # the CLEAN limit only splits the same sky: a deeper CLEAN moves faint sources into the restored part
    np.testing.assert_allclose(sky[0] + sky[1], deep[0] + deep[1], rtol=1e-12, atol=1e-20)
    np.testing.assert_array_equal(sky[2], deep[2])
    assert deep[0].sum() > sky[0].sum() and deep[1].sum() < sky[1].sum()

    def field(**change):
        inst = {**base, "mean_removed": False, **change}
        return sim.simulate_field(np.random.default_rng(9), P, 256, "alpha_s0", 0.0, 1e-5, 0.0, inst)["restored"]

    def block_spread(img):  # spread of 32-px block means over the pixel rms: the noise's power on large scales
        return float(img.reshape(8, 32, 8, 32).mean(axis=(1, 3)).std() / img.std())

    dirty, smooth = field(noise_restored=0.0), field(noise_restored=1.0)
    rms = base["noise_scale"] * P.noise_rms_jy
    for img in (dirty, smooth, field(noise_restored=0.5)):  # the drawn rms whatever the kernel
        assert img.std() == pytest.approx(rms, rel=0.06)
    # the dirty beam's side lobes carry noise power to large scales, the restoring beam's Gaussian does not
    assert block_spread(dirty) > 1.5 * block_spread(smooth)
