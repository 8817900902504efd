"""Training and prediction speed of the CTA models on the active Keras backend.

    KERAS_BACKEND=tensorflow python -m skyml.benchmark
    KERAS_BACKEND=jax python -m skyml.benchmark

Prints one JSON line: seconds per training epoch on 512 random 200×200 maps
(batch 32, mean of two epochs after a warm-up epoch) and prediction throughput
(maps/s, batch 256) of the CNN-Cleaner and the heat-map localiser.
"""

from __future__ import annotations

import json
import time

import numpy as np


def run(n_maps: int = 512, seed: int = 0) -> dict:
    import keras

    from .cta import models

    rng = np.random.default_rng(seed)
    x, _ = models.stretch(rng.poisson(0.1, size=(n_maps, 200, 200)).astype(np.float32))
    x = x[..., None]
    targets = {"cleaner": 0.5 * x, "improved": rng.uniform(0, 1, (n_maps, 2)).astype(np.float32)}
    out = {"backend": keras.backend.backend()}
    for name, build in (("cleaner", models.build_cleaner), ("improved", models.build_improved_localiser)):
        keras.utils.set_random_seed(seed)
        model = build()
        model.fit(x, targets[name], epochs=1, batch_size=32, verbose=0)  # warm-up and compilation
        t0 = time.perf_counter()
        model.fit(x, targets[name], epochs=2, batch_size=32, verbose=0)
        out[f"{name}_train_s_per_epoch"] = (time.perf_counter() - t0) / 2
        model.predict(x[:256], batch_size=256, verbose=0)
        t0 = time.perf_counter()
        model.predict(x, batch_size=256, verbose=0)
        out[f"{name}_predict_maps_per_s"] = n_maps / (time.perf_counter() - t0)
    return out


if __name__ == "__main__":
    print(json.dumps(run()))
