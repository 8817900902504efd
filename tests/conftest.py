"""Fixtures shared by several test modules."""

from __future__ import annotations

import matplotlib
import pytest

# Figures drawn by the tests themselves never open a window. This selects the
# backend of the pytest process only; the notebooks' kernels (nbval) are separate
# processes and show their figures inline (skyml.plotting.use_style).
matplotlib.use("Agg")


@pytest.fixture(scope="session")
def fermi_unet_path(tmp_path_factory):
    """An untrained (small) Fermi-LAT multi-input U-Net saved in notebook 04's format."""
    import keras

    from skyml.cta.models import save_model
    from skyml.fermi.models import build_unet
    from skyml.fermi.simulate import FermiSimParams

    keras.utils.set_random_seed(0)
    model = build_unet([(64, 64, 4), (32, 32, 1), (16, 16, 1)], filters=2)
    return save_model(model, tmp_path_factory.mktemp("m") / "fermi_unet.keras",
                      {"task": "fermi-detect", "sim_params": FermiSimParams().to_dict(), "profile": "quick"})


@pytest.fixture
def cli_error(capsys):
    """``cli_error(argv, *fragments)`` runs ``skyml`` with ``argv`` and asserts
    exit status 2 and one stderr line ``skyml <argv[0]>: error: ...`` that
    contains every fragment."""
    from skyml import cli

    def run(argv, *fragments):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and err.startswith(f"skyml {argv[0]}: error: "), err
        for fragment in fragments:
            assert fragment in err, err

    return run


def small_radio_network(fields: dict, context_npix: int = 64):
    """A small untrained restored-image counts network with the conditioning
    input, built on randomised radio ``fields`` of the default
    :class:`skyml.radio.simulate.RadioSimParams`, and its sidecar keys."""
    import keras

    from skyml.radio import models, pipeline
    from skyml.radio import simulate as sim

    p = sim.RadioSimParams()
    keras.utils.set_random_seed(0)
    x, c = pipeline.xy(fields, "restored", p, context_npix)
    model = models.build_cnn(p.n_bins, filters=2, dense=8, hist_mean=x[1].mean(0), hist_std=x[1].std(0),
                             n_cond=pipeline.N_COND)
    beam = sim.beam_params(p)
    meta = {"task": "radio-counts", "image_kind": "restored", "profile": "quick", "input_scale_jy": p.noise_rms_jy,
            "target_scaler": models.TargetScaler.fit(c).to_dict(), "edges_jy": p.edges_jy.tolist(),
            "threshold_jy": p.threshold_jy, "noise_rms_jy": p.noise_rms_jy, "pixel_arcsec": p.pixel_arcsec,
            "sub_npix": p.sub_npix, "context_npix": context_npix, "bmaj_deg": beam["bmaj_deg"],
            "bmin_deg": beam["bmin_deg"], "bpa_deg": beam["bpa_deg"], "val_rel_rms": [0.1] * p.n_bins,
            "level": {"method": pipeline.LEVEL_METHOD},
            "training_range": pipeline.training_range(fields["restored"], p.noise_rms_jy, level=True),
            **pipeline.conditioning_metadata(fields, p)}
    return model, meta
