"""TensorFlow's retracing warning is dropped; other TensorFlow warnings are not."""

import logging

import numpy as np

import skyml  # noqa: F401  (installs the filter)


def test_the_retracing_warning_is_dropped_and_others_pass(caplog):
    logger = logging.getLogger("tensorflow")
    with caplog.at_level(logging.WARNING, logger="tensorflow"):
        logger.warning("5 out of the last 7 calls to <function f at 0x1> triggered tf.function retracing. Tracing "
                       "is expensive")
        logger.warning("something else went wrong")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["something else went wrong"]


def test_predicting_with_many_models_writes_no_retracing_warning(caplog):
    """Every Keras model traces its own predict step, and TensorFlow counts the
    traces of that step over all models: a notebook that predicts with a few
    networks in turn gets the warning (without the filter, this test fails)."""
    import keras

    with caplog.at_level(logging.WARNING, logger="tensorflow"):
        for _ in range(8):
            inputs = keras.Input((8, 8, 1))
            model = keras.Model(inputs, keras.layers.Conv2D(1, 3, padding="same")(inputs))
            model.predict(np.zeros((2, 8, 8, 1), np.float32), verbose=0)
    assert len(caplog.records) == 0, [r.getMessage()[:80] for r in caplog.records]


def test_report_without_a_network_does_not_import_keras():
    """The results-figures notebook reports its environment without paying for
    Keras's start-up: ``report(keras_backend=False)`` leaves Keras unimported."""
    import subprocess
    import sys

    code = ("import sys; from skyml import env; info = env.report('quick', keras_backend=False); "
            "assert 'keras' not in sys.modules and 'tensorflow' not in sys.modules, sorted(sys.modules); "
            "assert info['backend'] == 'not loaded'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "keras backend: not loaded" in done.stdout
