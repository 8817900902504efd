"""Fixtures shared by several test modules."""

from __future__ import annotations

import pytest


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
