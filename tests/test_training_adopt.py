"""A published full-profile model with the same training key fills an empty
cache instead of a new training; any mismatch trains."""

import json

import keras
import numpy as np
import pytest
from skyml import paths, training


def _fit(calls):
    def fit():
        calls.append(1)
        keras.utils.set_random_seed(0)
        rng = np.random.default_rng(0)
        x = rng.normal(size=(32, 3)).astype("float32")
        y = x.sum(axis=1, keepdims=True)
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        model.compile(optimizer="adam", loss="mse")
        history = model.fit(x, y, epochs=2, batch_size=16, verbose=0)
        return model, {"task": "test"}, {k: list(map(float, v)) for k, v in history.history.items()}

    return fit


@pytest.fixture
def roots(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(paths, "MODELS", tmp_path / "models")
    monkeypatch.setattr(training.results, "require_clean_tree", lambda *a, **k: None)
    monkeypatch.delenv(training.ADOPT_ENV, raising=False)
    return tmp_path


def _publish(roots, key):
    """Train once into one cache and keep only the installed model, as a fresh clone has it."""
    calls = []
    model, _, history, seconds = training.train_cached("toy", key, _fit(calls), "full", "toy.keras")
    assert calls == [1] and seconds is not None
    sidecar = json.loads((paths.models_dir("full") / "toy.json").read_text())
    assert sidecar["history"] == history  # the learning curve travels with the published model
    import shutil
    shutil.rmtree(roots / "cache")
    return model


def test_an_empty_cache_adopts_the_published_model(roots):
    published = _publish(roots, {"n": 1, "sizes": (2, 3)})
    before = (paths.models_dir("full") / "toy.json").read_text()
    calls = []
    model, metadata, history, seconds = training.train_cached("toy", {"n": 1, "sizes": (2, 3)}, _fit(calls),
                                                               "full", "toy.keras")
    assert calls == [] and seconds is None
    assert metadata["adopted_from"]["path"] == "data/models/full/toy.keras"
    assert len(history["loss"]) == 2
    x = np.ones((4, 3), "float32")
    np.testing.assert_array_equal(model.predict(x, verbose=0), published.predict(x, verbose=0))
    assert (paths.models_dir("full") / "toy.json").read_text() == before  # the published sidecar is untouched
    # the cache now holds it: the next call loads it without training either
    assert training.train_cached("toy", {"n": 1, "sizes": (2, 3)}, _fit(calls), "full", "toy.keras")[3] is None
    assert calls == [] and (paths.models_dir("full") / "toy.json").read_text() == before


@pytest.mark.parametrize("change", ["key", "tampered", "env", "quick"])
def test_any_mismatch_trains(roots, monkeypatch, change):
    _publish(roots, {"n": 1})
    key, profile = {"n": 1}, "full"
    if change == "key":
        key = {"n": 2}
    elif change == "tampered":
        with open(paths.models_dir("full") / "toy.keras", "ab") as fh:
            fh.write(b"\0")
    elif change == "env":
        monkeypatch.setenv(training.ADOPT_ENV, "0")
    else:
        profile = "quick"
    calls = []
    training.train_cached("toy", key, _fit(calls), profile, "toy.keras")
    assert calls == [1]


def test_a_sidecar_without_learning_curve_is_adopted_only_where_the_curve_is_not_used(roots):
    _publish(roots, {"n": 3})
    sidecar = paths.models_dir("full") / "toy.json"
    metadata = json.loads(sidecar.read_text())
    del metadata["history"]  # as published before sidecars carried it
    sidecar.write_text(json.dumps(metadata))
    calls = []
    _, _, history, seconds = training.train_cached("toy", {"n": 3}, _fit(calls), "full", "toy.keras",
                                                   history_needed=False)
    assert calls == [] and seconds is None and history == {}
    assert not (roots / "cache" / "toy").exists() or not any((roots / "cache" / "toy").iterdir())  # not cached
    training.train_cached("toy", {"n": 3}, _fit(calls), "full", "toy.keras")  # a caller that plots the curve
    assert calls == [1]


def test_a_model_adopted_under_another_name_is_installed_under_the_new_one(roots):
    """A cached model adopted from a published file that is later published under another name (a network
    that became one member of an ensemble) is installed under the new name, so a fresh clone adopts it."""
    key = {"n": 3}
    _publish(roots, key)
    calls = []
    training.train_cached("toy", key, _fit(calls), "full", "toy.keras")  # the cache adopts toy.keras
    assert calls == [] and not (paths.models_dir("full") / "member_0.keras").exists()
    model, metadata, history, seconds = training.train_cached("toy", key, _fit(calls), "full", "member_0.keras")
    assert calls == [] and seconds is None and metadata["adopted_from"]["path"] == "data/models/full/toy.keras"
    assert training.adoptable_model("full", "member_0.keras", key) is not None  # with its learning curve
    # once toy.keras is replaced by another model, the member is still installed and adoptable
    (paths.models_dir("full") / "toy.keras").unlink()
    training.train_cached("toy", key, _fit(calls), "full", "member_0.keras")
    assert calls == [] and training.adoptable_model("full", "member_0.keras", key) is not None
