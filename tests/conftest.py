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
