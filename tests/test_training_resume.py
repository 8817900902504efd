"""A training killed between epochs resumes at its last finished epoch."""

import json

import keras
import numpy as np
import pytest
from skyml import paths, training


class _Killer(keras.callbacks.Callback):
    """Stands for the end of a session: stops the process after ``at`` epochs."""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.at:
            raise KeyboardInterrupt


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x @ np.array([1.0, -2.0, 0.5, 0.0], "float32"))[:, None]
    return x, y


def _fit(epochs_run, kill_at=None):
    """A small fit as the analyses write it, counting the epochs it runs."""
    x, y = _data()

    def fit():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
        stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=50, restore_best_weights=True)
        plateau = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=2)
        counter = keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: epochs_run.append(e))
        extra = [_Killer(kill_at)] if kill_at else []
        history = model.fit(x, y, validation_data=(x, y), epochs=8, batch_size=16, verbose=0,
                            callbacks=[stop, plateau, counter, *training.fit_callbacks(stop, plateau), *extra])
        return model, {"task": "test"}, {k: list(map(float, v)) for k, v in history.history.items()}

    return fit


@pytest.fixture
def cache_root(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(training.results, "require_clean_tree", lambda *a, **k: None)
    monkeypatch.setattr(training, "install_model", lambda *a, **k: None)
    return tmp_path / "cache"


def test_a_killed_training_resumes_where_it_stopped(cache_root):
    first, second = [], []
    with pytest.raises(KeyboardInterrupt):
        training.train_cached("toy", {"n": 1}, _fit(first, kill_at=3), "quick", "toy.keras")
    assert first == [0, 1, 2]
    backups = list((cache_root / "training-backup").iterdir())
    assert len(backups) == 1 and (backups[0] / "fit-1" / "state.json").is_file()
    saved = json.loads((backups[0] / "fit-1" / "state.json").read_text())
    assert saved["epoch"] == 2 and len(saved["history"]["loss"]) == 3

    _, metadata, history, _ = training.train_cached("toy", {"n": 1}, _fit(second), "quick", "toy.keras")
    assert second == [3, 4, 5, 6, 7]  # the first three epochs are not run again
    assert len(history["loss"]) == 8  # the whole learning curve
    assert history["loss"][:3] == saved["history"]["loss"]
    assert metadata["resumed_fits"] == 1
    assert not (cache_root / "training-backup" / backups[0].name).exists()  # removed once cached


def test_an_uninterrupted_training_leaves_no_backup_and_says_nothing(cache_root):
    epochs = []
    _, metadata, history, _ = training.train_cached("toy", {"n": 2}, _fit(epochs), "quick", "toy.keras")
    assert epochs == list(range(8)) and len(history["loss"]) == 8
    assert "resumed_fits" not in metadata
    assert not any((cache_root / "training-backup").glob("*/*"))


def test_outside_train_cached_nothing_is_added():
    assert training.fit_callbacks(keras.callbacks.EarlyStopping()) == []


def _crop_fit(draws, kill_at=None):
    """A fit on batches drawn anew per epoch (skyml.ctao.models.EpochCrops), killed when it is about to
    draw the crops of epoch ``kill_at`` (between two epochs, after the backup of the one before)."""
    from skyml.ctao import models as ctao_models

    x, y = _data()

    def draw(epoch):
        if epoch == kill_at:
            raise KeyboardInterrupt
        draws.append(epoch)
        rng = np.random.default_rng(epoch)
        return x + rng.normal(0, 0.01, x.shape).astype("float32"), y

    def fit():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
        history = ctao_models.train(model, ctao_models.EpochCrops(draw, 16, seed=1), None, x, y, epochs=6,
                                    patience=50, verbose=0)
        return model, {"task": "test"}, history

    return fit


def test_crops_drawn_per_epoch_follow_keras_epochs_also_after_a_restart(cache_root):
    from skyml.ctao import models as ctao_models

    draws = []
    _, _, history, _ = training.train_cached("toy", {"n": 3}, _crop_fit(draws), "quick", "toy.keras")
    assert draws == [0, 1, 2, 3, 4, 5] and len(history["loss"]) == 6
    first, second = [], []
    with pytest.raises(KeyboardInterrupt):
        training.train_cached("toy", {"n": 4}, _crop_fit(first, kill_at=3), "quick", "toy.keras")
    assert first == [0, 1, 2]
    _, metadata, history, _ = training.train_cached("toy", {"n": 4}, _crop_fit(second), "quick", "toy.keras")
    assert second == [0, 3, 4, 5]  # epoch 0's crops are drawn on construction; then the resumed epochs'
    assert len(history["loss"]) == 6 and metadata["resumed_fits"] == 1
    # batches: the epoch's items shuffled by (seed, epoch), the last batch short
    data = ctao_models.EpochCrops(lambda e: (np.arange(10.0)[:, None] + 100 * e, np.zeros((10, 1))), 4, seed=2)
    assert len(data) == 3 and len(data[2][0]) == 2
    assert sorted(np.concatenate([data[i][0] for i in range(3)]).ravel()) == list(np.arange(10.0))
    data.set_epoch(1)
    assert sorted(np.concatenate([data[i][0] for i in range(3)]).ravel()) == list(np.arange(10.0) + 100)
    with pytest.raises(ValueError, match="targets"):
        ctao_models.train(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]), data, np.zeros(10),
                          None, None, epochs=1)


def test_stopping_callbacks_stop_after_patience_and_halve_after_half_of_it():
    stop, plateau = training.stopping_callbacks(10)
    assert isinstance(stop, keras.callbacks.EarlyStopping) and stop.patience == 10 and stop.restore_best_weights
    assert isinstance(plateau, keras.callbacks.ReduceLROnPlateau) and plateau.patience == 5 and plateau.factor == 0.5
    assert stop.monitor == plateau.monitor == "val_loss"
    assert training.stopping_callbacks(1)[1].patience == 1
