"""LHAASO networks (notebook 08): shapes, the VAE's KL term, one GAN step,
saving and loading, and the ``skyml lhaaso-deconvolve`` command."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from skyml import cli
from skyml.io import write_fits_map
from skyml.lhaaso import models, pipeline
from skyml.lhaaso import simulate as sim

pytestmark = pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")
P = sim.LHAASOSimParams()


def _wcs(binsz=0.1):
    w = WCS(naxis=2)
    w.wcs.ctype = ["GLON-CAR", "GLAT-CAR"]
    w.wcs.crval = [30.0, 0.0]
    w.wcs.crpix = [24.5, 20.5]
    w.wcs.cdelt = [-binsz, binsz]
    return w


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    from skyml.cta.models import save_model

    folder = tmp_path_factory.mktemp("m")
    cnn = save_model(models.build_cnn(1, (4, 4)), folder / "lhaaso_cnn.keras",
                     {"task": "lhaaso-deconvolve", "binsz_deg": 0.1, "sigma1_deg": 0.265, "profile": "quick"})
    cond = save_model(models.build_cnn(2, (4, 4)), folder / "lhaaso_psf_conditioned.keras",
                      {"task": "lhaaso-deconvolve", "binsz_deg": 0.1, "profile": "quick"})
    return cnn, cond


def test_networks_are_fully_convolutional():
    x = np.random.default_rng(0).random((2, 40, 48, 1)).astype("float32")
    for model in (models.build_cnn(1, (4, 4)), models.build_vae(latent=2, filters=4)):
        assert models.predict(model, x).shape == (2, 40, 48)
    x2 = models.as_input(x[..., 0], 0.239)
    assert x2.shape == (2, 40, 48, 2) and np.all(x2[..., 1] == np.float32(0.239 / 0.265))
    assert models.predict(models.build_cnn(2, (4, 4)), x2).shape == (2, 40, 48)


def test_outputs_are_non_negative_and_conserve_the_input_counts():
    rng = np.random.default_rng(3)
    x = rng.poisson(2.0, (3, 32, 40, 1)).astype("float32")
    nets = (models.build_cnn(1, (4, 4)), models.build_vae(latent=2, filters=4),
            models.build_cnn(2, (4, 4)))
    for model in nets:
        xin = models.as_input(x[..., 0], 0.2) if model.input_shape[-1] == 2 else x
        out = models.predict(model, xin)
        assert out.min() >= 0
        np.testing.assert_allclose(out.sum((1, 2)), x.sum((1, 2, 3)), rtol=1e-4)
    raw = models.predict(models.build_cnn(1, (4, 4), flux_conserving=False), x)
    assert not np.allclose(raw.sum((1, 2)), x.sum((1, 2, 3)), rtol=1e-2)


def test_vae_adds_the_kl_loss_and_predicts_the_mean():
    vae = models.build_vae(latent=2, filters=4, beta=1.0)
    x = np.random.default_rng(1).random((4, 32, 32, 1)).astype("float32")
    a, b = models.predict(vae, x), models.predict(vae, x)
    assert np.array_equal(a, b)  # inference uses the latent mean
    vae(x, training=True)
    assert len(vae.losses) == 1 and float(vae.losses[0]) >= 0


def test_vae_training_repeats_bit_for_bit_for_a_seed():
    """The latent sampling draws from the layer's own seeded generator, so
    a retraining with the same seed gives the same weights."""
    import keras

    x = np.random.default_rng(2).random((16, 16, 16, 1)).astype("float32")

    def fit(seed):
        keras.utils.set_random_seed(seed)
        vae = models.build_vae(latent=2, filters=4, seed=seed)
        models.train(vae, x, x, x[:4], x[:4], epochs=2, batch_size=4, patience=2, seed=seed, verbose=0)
        return np.concatenate([w.ravel() for w in vae.get_weights()])

    first = fit(3)
    assert np.array_equal(first, fit(3))
    assert not np.array_equal(first, fit(4))


def test_gan_and_training_run_and_learn():
    data = sim.simulate(24, 5, P, "train")
    x, y = pipeline.xy(data)
    gen, hist = models.train_gan(x[:16], y[:16], x[16:], y[16:], steps=3, batch_size=4, filters=(4, 4))
    assert len(hist["d_loss"]) == 3 and all(np.isfinite(hist["g_loss"])) and hist["val_step"] == [3]
    cnn = models.build_cnn(1, (8, 8), learning_rate=3e-3)
    before = float(np.mean((models.predict(cnn, x) - y[..., 0]) ** 2))
    history = models.train(cnn, x, y, x, y, epochs=6, batch_size=8, patience=6, verbose=0)
    assert min(history["val_loss"]) < before


def test_deconvolve_returns_counts_units():
    model = models.build_cnn(1, (4, 4))
    counts = sim.simulate(2, 6, P, "test")["counts"]
    out = pipeline.deconvolve(model, counts)
    scale = sim.map_scale(counts)
    np.testing.assert_allclose(out / scale[:, None, None],
                               models.predict(model, models.as_input(sim.normalise(counts, scale))), rtol=1e-5)


def test_cli_deconvolves_a_counts_map(tmp_path, saved_models, capsys):
    cnn, cond = saved_models
    counts = np.random.default_rng(2).poisson(2.0, (40, 48)).astype(float)
    src = write_fits_map(tmp_path / "counts.fits", counts, _wcs())
    out = tmp_path / "out.fits"
    assert cli.main(["lhaaso-deconvolve", str(src), "-o", str(out), "--model", str(cnn)]) == 0
    assert "intensity map" in capsys.readouterr().out
    with fits.open(out) as hdul:
        assert hdul[0].data.shape == (40, 48) and hdul[0].header["BUNIT"] == "count"
        assert WCS(hdul[0].header).wcs.crval[0] == pytest.approx(30.0)
    out2 = tmp_path / "out2.fits"
    assert cli.main(["lhaaso-deconvolve", str(src), "-o", str(out2), "--model", str(cond),
                     "--psf-sigma-deg", "0.239"]) == 0
    assert out2.is_file()


def _error(capsys, argv, *fragments):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("skyml lhaaso-deconvolve: error: "), err
    for f in fragments:
        assert f in err, err


def test_cli_errors(tmp_path, saved_models, capsys):
    cnn, cond = saved_models
    good = write_fits_map(tmp_path / "c.fits", np.ones((40, 48)), _wcs())
    coarse = write_fits_map(tmp_path / "coarse.fits", np.ones((40, 48)), _wcs(0.5))
    tiny = write_fits_map(tmp_path / "tiny.fits", np.ones((8, 8)), _wcs())
    out = str(tmp_path / "o.fits")
    base = ["lhaaso-deconvolve"]
    _error(capsys, base + [str(tmp_path / "missing.fits"), "-o", out, "--model", str(cnn)], "not found")
    _error(capsys, base + [str(coarse), "-o", out, "--model", str(cnn)], "pixel size")
    _error(capsys, base + [str(tiny), "-o", out, "--model", str(cnn)], "too small")
    _error(capsys, base + [str(good), "-o", out, "--model", str(cnn), "--psf-sigma-deg", "0.6"], "outside")
    _error(capsys, base + [str(good), "-o", out, "--model", str(cnn), "--psf-sigma-deg", "0.2"], "channel")
    _error(capsys, base + [str(good), "-o", out, "--model", str(tmp_path / "none.keras")], "model file not found")
    (tmp_path / "exists.fits").write_text("x")
    _error(capsys, base + [str(good), "-o", str(tmp_path / "exists.fits"), "--model", str(cnn)], "--overwrite")
    assert not (tmp_path / "o.fits").exists()


def test_unet_is_fully_convolutional_and_conserves_the_input_counts():
    x = np.random.default_rng(4).poisson(2.0, (2, 32, 48, 1)).astype("float32")
    unet = models.build_unet(1, (4, 8, 8))
    out = models.predict(unet, x)
    assert out.shape == (2, 32, 48) and out.min() >= 0
    np.testing.assert_allclose(out.sum((1, 2)), x.sum((1, 2, 3)), rtol=1e-4)
    assert [layer.name for layer in unet.layers if layer.name.startswith("pool")] == ["pool0", "pool1"]
    with pytest.raises(ValueError, match="two levels"):
        models.build_unet(1, (8,))


def test_minmax_loss_is_the_squared_error_of_lhais_protocol(tmp_path):
    from skyml.cta.models import load_model, save_model
    from skyml.lhaaso import evaluation

    rng = np.random.default_rng(5)
    truth, estimate = rng.gamma(0.5, 3.0, (2, 3, 16, 16)).astype("float32")
    loss = np.asarray(models.minmax_mse(truth[..., None], estimate[..., None]))
    np.testing.assert_allclose(loss, evaluation.lhai_per_map(truth, estimate)["mse"], rtol=1e-4)
    assert np.asarray(models.minmax_mse(truth[..., None], 5 * truth[..., None] + 2)).max() < 1e-9  # scale-free
    unet = models.build_unet(1, (4, 8), loss="minmax_mse")
    path = save_model(unet, tmp_path / "unet.keras", {"task": "lhaaso-deconvolve", "profile": "quick"})
    loaded, _ = load_model(path)
    x = rng.poisson(2.0, (1, 16, 16, 1)).astype("float32")
    np.testing.assert_array_equal(models.predict(loaded, x), models.predict(unet, x))
    with pytest.raises(ValueError, match="unknown loss"):
        models.build_unet(1, (4, 8), loss="l1")


def test_dihedral_readout_is_the_mean_over_the_eight_orientations():
    rng = np.random.default_rng(8)
    counts = rng.poisson(3.0, (2, 16, 24)).astype("float64")
    unet = models.build_unet(1, (4, 8))
    plain = pipeline.deconvolve(unet, counts)
    mean = pipeline.deconvolve(unet, counts, dihedral=True)
    assert mean.shape == counts.shape and not np.allclose(mean, plain)
    np.testing.assert_allclose(mean.sum((1, 2)), counts.sum((1, 2)), rtol=1e-4)  # each estimate keeps the counts
    turned = pipeline.deconvolve(unet, np.rot90(counts, 1, axes=(1, 2)).copy(), dihedral=True)
    np.testing.assert_allclose(np.rot90(turned, -1, axes=(1, 2)), mean, rtol=1e-4, atol=1e-6)  # equivariant


def test_unet_tiles_give_the_one_pass_estimate_on_any_map_size():
    from skyml.lhaaso import command

    unet = models.build_unet(1, (4, 8, 8))
    counts = np.random.default_rng(9).poisson(2.0, (70, 90)).astype(float)  # not a multiple of 4
    one_pass = command.deconvolve_unet_tiled(unet, counts, tile=128, halo=48)
    tiled = command.deconvolve_unet_tiled(unet, counts, tile=32, halo=48)
    assert one_pass.shape == counts.shape and one_pass.min() >= 0
    np.testing.assert_allclose(tiled, one_pass, rtol=1e-4, atol=1e-6)
    assert tiled.sum() == pytest.approx(counts.sum(), rel=1e-4)
    # a map of a multiple of 4 px: the plain network pass of the notebook
    square = counts[:64, :64]
    np.testing.assert_allclose(command.deconvolve_unet_tiled(unet, square, tile=32),
                               pipeline.deconvolve(unet, square[None])[0], rtol=1e-4, atol=1e-6)
    turned = command.deconvolve_map(unet, square, dihedral=True)
    np.testing.assert_allclose(turned, pipeline.deconvolve(unet, square[None], dihedral=True)[0], rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="multiples of 4"):
        command.deconvolve_unet_tiled(unet, counts, tile=30)


def test_cli_deconvolves_with_the_unet(tmp_path, saved_models, capsys):
    from skyml.cta.models import save_model

    cnn, _ = saved_models
    unet = save_model(models.build_unet(1, (4, 8, 8)), tmp_path / "lhaaso_unet_lhai.keras",
                      {"task": "lhaaso-deconvolve", "binsz_deg": 0.1, "target_sigma_deg": 0.0, "profile": "quick"})
    counts = np.random.default_rng(2).poisson(2.0, (42, 50)).astype(float)
    src = write_fits_map(tmp_path / "counts.fits", counts, _wcs())
    out = tmp_path / "out.fits"
    assert cli.main(["lhaaso-deconvolve", str(src), "-o", str(out), "--model", str(unet), "--unet",
                     "--dihedral"]) == 0
    with fits.open(out) as hdul:
        h = hdul[0].header
        assert hdul[0].data.shape == (42, 50) and h["NETWORK"] == "U-Net" and h["DIHEDRAL"] is True
        assert h["TARGSIG"] == 0.0 and float(hdul[0].data.sum()) == pytest.approx(counts.sum(), rel=1e-4)
    base = ["lhaaso-deconvolve", str(src), "-o", str(tmp_path / "o.fits")]
    _error(capsys, base + ["--model", str(cnn), "--unet"], "--unet needs the U-Net")
    _error(capsys, base + ["--model", str(unet), "--unet", "--psf-sigma-deg", "0.2"], "has no PSF input")
    assert not (tmp_path / "o.fits").exists()


def test_cli_tells_the_unet_the_psf(tmp_path, capsys):
    from skyml.cta.models import save_model
    from skyml.lhaaso import command, psf

    meta = {"task": "lhaaso-deconvolve", "binsz_deg": 0.1, "target_sigma_deg": 0.0, "profile": "quick",
            "sigma1_deg": 0.265, "randomisation": {"sigma_scale": [0.7, 1.3], "tail_ratio": [1.5, 4.0],
                                                   "tail_weight": [0.0, 0.2]}}
    keras_unet = models.build_unet(1 + models.PSF_CONDITIONS, (4, 8, 8))
    unet = save_model(keras_unet, tmp_path / "lhaaso_unet_lhai.keras", meta)
    counts = np.random.default_rng(4).poisson(2.0, (36, 44)).astype(float)
    src = write_fits_map(tmp_path / "counts.fits", counts, _wcs())
    runs = {"told": ["--psf-sigma-deg", "0.24", "--psf-tail-ratio", "2.5", "--psf-tail-weight", "0.08", "--no-dihedral"],
            "nominal_tail": ["--psf-sigma-deg", "0.3"], "unknown": []}
    data = {}
    for name, extra in runs.items():
        out = tmp_path / f"{name}.fits"
        assert cli.main(["lhaaso-deconvolve", str(src), "-o", str(out), "--model", str(unet), "--unet", *extra]) == 0
        with fits.open(out) as hdul:
            data[name], h = hdul[0].data.astype(float), hdul[0].header
        assert h["PSFTOLD"] is (name != "unknown")
        if name == "told":
            assert (h["PSFSIG"], h["PSFTAILR"], h["PSFTAILW"]) == (0.24, 2.5, 0.08)
        elif name == "nominal_tail":
            assert h["PSFTAILR"] == psf.TAIL_RATIO and h["PSFTAILW"] == pytest.approx(psf.tail_weight())
        else:
            assert "PSFSIG" not in h
    # the command's output is the network told the same PSF, map by map (one tile here), read as given with
    # --no-dihedral, and by default over the 8 orientations (notebook 08's choice)
    cond = models.psf_conditions(1, 0.24, 2.5, 0.08)[0]
    np.testing.assert_allclose(data["told"], command.deconvolve_unet_tiled(keras_unet, counts, conditions=cond),
                               rtol=1e-5, atol=1e-8)
    nominal = models.psf_conditions(1, 0.3, psf.TAIL_RATIO, psf.tail_weight())[0]
    np.testing.assert_allclose(data["nominal_tail"], command.deconvolve_map(keras_unet, counts, dihedral=True,
                                                                            conditions=nominal), rtol=1e-5, atol=1e-8)
    assert not np.allclose(data["told"], data["unknown"])
    base = ["lhaaso-deconvolve", str(src), "-o", str(tmp_path / "o.fits"), "--model", str(unet)]
    _error(capsys, base + ["--unet", "--psf-sigma-deg", "0.4"], "outside the U-Net's training range")
    _error(capsys, base + ["--unet", "--psf-sigma-deg", "0.25", "--psf-tail-ratio", "5"], "--psf-tail-ratio 5 is outside")
    _error(capsys, base + ["--unet", "--psf-tail-weight", "0.1"], "use them with --unet and --psf-sigma-deg")
    _error(capsys, base + ["--psf-sigma-deg", "0.2", "--psf-tail-ratio", "2"], "use them with --unet")
    assert not (tmp_path / "o.fits").exists()


def test_cli_reads_the_unet_as_notebook_08_chose_by_default(tmp_path):
    from skyml import results
    from skyml.lhaaso import command

    assert command.UNET_DIHEDRAL == bool(results.read_metrics("08_lhaaso_deconvolution", "full")["unet_lhai_dihedral"])
    parser = cli.build_parser()
    base = ["lhaaso-deconvolve", "c.fits", "-o", str(tmp_path / "o.fits")]
    readout = {tuple(extra): command.dihedral_readout(parser.parse_args(base + extra))
               for extra in ([], ["--unet"], ["--unet", "--no-dihedral"], ["--dihedral"], ["--unet", "--dihedral"])}
    assert readout == {(): False, ("--unet",): command.UNET_DIHEDRAL, ("--unet", "--no-dihedral"): False,
                       ("--dihedral",): True, ("--unet", "--dihedral"): True}


def test_psf_conditions_channels():
    c = models.psf_conditions(3, 0.265, [2.0, 3.0, 1.5], 0.1, known=[True, False, True])
    np.testing.assert_allclose(c, [[1, 1, 1, 1], [0, 0, 0, 0], [1, 1, 0.75, 1]], rtol=1e-6)
    assert not models.psf_conditions(2).any()
    x = models.as_input(np.ones((3, 8, 8)), conditions=c)
    assert x.shape == (3, 8, 8, 1 + models.PSF_CONDITIONS) and np.array_equal(x[1, :, :, 1:], np.zeros((8, 8, 4)))
    np.testing.assert_allclose(x[2, 5, 3, 1:], c[2])
    np.testing.assert_allclose(models.as_input(np.ones((2, 4, 4)), conditions=c[0])[..., 1:], np.broadcast_to(c[0], (2, 4, 4, 4)))
    with pytest.raises(ValueError, match="needs sigma1_deg"):
        models.psf_conditions(1, 0.2)
    with pytest.raises(ValueError, match="tail ratio >= 1"):
        models.psf_conditions(1, 0.2, 0.5, 0.1)
    with pytest.raises(ValueError, match="not both"):
        models.as_input(np.ones((1, 4, 4)), 0.2, c[:1])


def test_unet_conditions_tell_three_quarters_their_own_psf():
    maps = {"counts": np.ones((400, 2, 2)), "sigma1_deg": np.full(400, 0.2), "tail_ratio": np.full(400, 3.0),
            "tail_weight": np.full(400, 0.05)}
    c = pipeline.unet_conditions(maps, 1, "train")
    np.testing.assert_array_equal(c, pipeline.unet_conditions(maps, 1, "train"))  # seeded
    assert not np.array_equal(c, pipeline.unet_conditions(maps, 1, "val"))
    known = c[:, 0] == 1
    assert abs(known.mean() - (1 - pipeline.UNET_PSF_UNKNOWN_FRACTION)) < 0.06
    np.testing.assert_allclose(c[known][0], [1, 0.2 / 0.265, 1.5, 0.5], rtol=1e-6)
    assert not c[~known].any()


def test_log_loss_is_minus_a_tenth_of_each_maps_psnr():
    from skyml.lhaaso import evaluation

    rng = np.random.default_rng(6)
    truth, estimate = rng.gamma(0.5, 3.0, (2, 4, 16, 16)).astype("float32")
    loss = np.asarray(models.minmax_log_mse(truth[..., None], estimate[..., None]))
    psnr = 10 * np.log10(1 / evaluation.lhai_per_map(truth, estimate)["mse"])
    np.testing.assert_allclose(loss, -psnr / 10, rtol=1e-4)
    assert pipeline.UNET_LOSS in models.LOSSES


def test_cli_help_states_the_unet_psf_ranges_of_the_simulation(capsys):
    from skyml.lhaaso import psf

    assert cli.main(["lhaaso-deconvolve", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    lo, hi = (s * psf.SIGMA1_DEG[25.0] for s in sim.RANDOM_SIGMA_SCALE)
    assert f"the U-Net is told the PSF ({lo:.4g}-{hi:.4g} deg)" in text
    assert f"({sim.RANDOM_TAIL_RATIO[0]:g}-{sim.RANDOM_TAIL_RATIO[1]:g}; default {psf.TAIL_RATIO:g}, the KM2A PSF)" in text
    assert (f"({sim.RANDOM_TAIL_WEIGHT[0]:g}-{sim.RANDOM_TAIL_WEIGHT[1]:g}; default {psf.tail_weight():.3g}, "
            "the KM2A PSF)") in text


def _turns(a):
    """The 8 rotations and flips of (ny, nx, c) in the order of models.dihedral_pairs."""
    out = []
    for k in range(8):
        t = np.rot90(a, k % 4, axes=(0, 1))
        out.append(t[:, ::-1] if k >= 4 else t)
    return out


def test_dihedral_pairs_turn_input_and_target_together():
    rng = np.random.default_rng(4)
    x = rng.random((64, 6, 6, 5)).astype("float32")
    y = rng.random((64, 6, 6, 1)).astype("float32")
    xo, yo = models.dihedral_pairs(x, y, (1, 0))
    used = []
    for i in range(len(x)):
        k = [j for j, t in enumerate(_turns(x[i])) if np.array_equal(t, xo[i])]
        assert len(k) == 1 and np.array_equal(_turns(y[i])[k[0]], yo[i])  # the same turn for the pair
        used.append(k[0])
    assert set(used) == set(range(8))
    again, _ = models.dihedral_pairs(x, y, (1, 0))
    assert np.array_equal(again, xo)
    assert not np.array_equal(models.dihedral_pairs(x, y, (1, 1))[0], xo)  # another epoch, other turns
    assert np.array_equal(x, np.random.default_rng(4).random((64, 6, 6, 5)).astype("float32"))  # input untouched
    with pytest.raises(ValueError, match="square"):
        models.dihedral_pairs(x[:, :4], y[:, :4], 0)


def test_unet_training_on_turned_maps_repeats_bit_for_bit_for_a_seed():
    import keras

    data = sim.simulate(20, 5, P, "train")
    x, y = pipeline.xy(data)

    def fit(seed):
        keras.utils.set_random_seed(seed)
        unet = models.build_unet(1, (4, 8), loss="minmax_log_mse")
        history = models.train(unet, x[:16], y[:16], x[16:], y[16:], epochs=2, batch_size=8, patience=2, seed=seed,
                               verbose=0, dihedral=True)
        assert len(history["val_loss"]) == 2
        return np.concatenate([w.ravel() for w in unet.get_weights()])

    first = fit(3)
    assert np.array_equal(first, fit(3))
    assert not np.array_equal(first, fit(4))
