"""Provenance of results and models: clean commits for the full profile, the
lock-file hash, and the SHA-256 of every saved model."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest

from skyml import env, paths, results

sys.path.insert(0, str(paths.ROOT))
import run_all  # noqa: E402


def git(root, *args):
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A throwaway git repository laid out like this one, used as the repository root."""
    root = tmp_path / "repo"
    (root / "lib").mkdir(parents=True)
    (root / "lib" / "code.py").write_text("x = 1\n")
    (root / "data" / "results" / "full").mkdir(parents=True)
    (root / "data" / "results" / "full" / "old.json").write_text("{}\n")
    (root / ".gitignore").write_text("data/cache/\n")
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    monkeypatch.setattr(paths, "ROOT", root)
    monkeypatch.setattr(paths, "RESULTS", root / "data" / "results")
    monkeypatch.setattr(paths, "MODELS", root / "data" / "models")
    monkeypatch.delenv(results.ALLOW_DIRTY_ENV, raising=False)
    return root


def write(stem="02_cta_cnn_cleaner", profile="full", **metrics):
    return results.write_metrics(stem, profile, metrics or {"m": 1.0}, seconds=1.0, n_test=3,
                                 backend="tensorflow")


def test_clean_commit_and_what_makes_it_dirty(repo):
    clean = results.git_commit()
    assert len(clean) >= 7 and not clean.endswith("-dirty")
    # outputs of the notebooks do not count
    (repo / "data" / "results" / "full" / "old.json").write_text('{"m": 2}\n')
    (repo / "data" / "models" / "full").mkdir(parents=True)
    (repo / "data" / "models" / "full" / "new.keras").write_bytes(b"x")
    (repo / "data" / "cache").mkdir()
    (repo / "data" / "cache" / "blob").write_text("ignored")
    assert results.git_commit() == clean
    # a changed or an untracked source file does
    (repo / "lib" / "new.py").write_text("y = 2\n")
    assert results.git_commit() == clean + "-dirty"
    (repo / "lib" / "new.py").unlink()
    (repo / "lib" / "code.py").write_text("x = 2\n")
    assert results.git_commit() == clean + "-dirty"
    assert results.git_commit(repo.parent) == "unknown"  # not a work tree


def test_full_results_refused_from_a_dirty_tree(repo):
    (repo / "lib" / "code.py").write_text("x = 2\n")
    with pytest.raises(results.DirtyTreeError, match="SKYML_ALLOW_DIRTY=1"):
        write()
    assert not (repo / "data" / "results" / "full" / "02_cta_cnn_cleaner.json").exists()
    # the quick profile records the dirty commit without refusing
    assert json.loads(write(profile="quick").read_text())["git_commit"].endswith("-dirty")


def test_full_results_from_a_dirty_tree_when_allowed(repo, monkeypatch):
    (repo / "lib" / "code.py").write_text("x = 2\n")
    monkeypatch.setenv(results.ALLOW_DIRTY_ENV, "1")
    assert json.loads(write().read_text())["git_commit"].endswith("-dirty")


def test_full_results_from_a_clean_tree_record_commit_and_lock_hash(repo):
    data = json.loads(write().read_text())
    assert data["git_commit"] == results.git_commit() and "-dirty" not in data["git_commit"]
    assert data["lock_sha256"] is None and data["lock_file"] is None  # no lock file in this repository
    for name in (env.LOCK_FILE, env.LOCK_FILE_JAX):
        (repo / name).write_text(f"# {name}\nnumpy==2.4.6 --hash=sha256:00\n")
    git(repo, "add", env.LOCK_FILE, env.LOCK_FILE_JAX)
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "lock")
    data = json.loads(write().read_text())
    assert data["lock_file"] in (env.LOCK_FILE, env.LOCK_FILE_JAX)
    assert data["lock_sha256"] == hashlib.sha256((repo / data["lock_file"]).read_bytes()).hexdigest()


def test_ci68_intervals(repo):
    data = json.loads(write(m=0.5, m_ci68=(0.4, 0.6)).read_text())
    assert data["m"] == 0.5 and data["m_ci68"] == [0.4, 0.6]
    for bad in ((0.6, 0.4), (0.1, float("nan")), 0.5, (1, 2, 3)):
        with pytest.raises(ValueError, match="m_ci68"):
            write(m=0.5, m_ci68=bad)


def test_run_all_refuses_a_dirty_full_run_before_running(repo, tmp_path, capsys, monkeypatch):
    (repo / "lib" / "code.py").write_text("x = 2\n")
    notebooks = tmp_path / "notebooks"
    (notebooks / "profiles").mkdir(parents=True)
    (notebooks / "profiles" / "full.yml").write_text("{}\n")
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(cells=[new_code_cell('profile = "quick"', metadata={"tags": ["parameters"]})])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, notebooks / "01_a.ipynb")
    kwargs = dict(notebooks_dir=notebooks, results_root=tmp_path / "results", build_root=tmp_path / "build")
    assert run_all.main(["--profile", "full"], **kwargs) == 2
    assert "refusing to write the full-profile" in capsys.readouterr().err
    assert not (tmp_path / "build").exists()
    assert run_all.parse_args(["--allow-dirty"]).allow_dirty


# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    from skyml.cta.models import build_cleaner, save_model

    return save_model(build_cleaner(input_shape=(16, 16, 1)), tmp_path_factory.mktemp("m") / "c.keras",
                      {"task": "cta-clean", "smooth_sigma_px": 0.0})


def test_saved_model_records_its_sha256_and_loads(small_model):
    from skyml.cta.models import load_model

    meta = json.loads(small_model.with_suffix(".json").read_text())
    assert meta["keras_sha256"] == hashlib.sha256(small_model.read_bytes()).hexdigest()
    model, loaded = load_model(small_model)
    assert loaded == meta and model.input_shape == (None, 16, 16, 1)


def test_tampered_model_refused(small_model, tmp_path, cli_error):
    from skyml.cta.models import load_model

    tampered = tmp_path / "tampered.keras"
    data = bytearray(small_model.read_bytes())
    data[-30] ^= 0xFF
    tampered.write_bytes(bytes(data))
    tampered.with_suffix(".json").write_text(small_model.with_suffix(".json").read_text())
    with pytest.raises(ValueError, match="does not match its metadata"):
        load_model(tampered)
    out = tmp_path / "out.fits"
    counts = tmp_path / "counts.fits"
    import numpy as np

    from skyml.cta.simulate import map_wcs
    from skyml.io import write_fits_map

    write_fits_map(counts, np.ones((16, 16)), map_wcs(83.6, 22.0, 16))
    cli_error(["cta-clean", str(counts), "-o", str(out), "--model", str(tampered)],
              "tampered.keras", "does not match its metadata")
    assert not out.exists()


def test_install_adds_the_hash_and_refuses_a_dirty_full_profile(repo, small_model, tmp_path):
    from skyml.training import install_model

    old = tmp_path / "old.keras"  # a cache entry written before the hash was recorded
    old.write_bytes(small_model.read_bytes())
    meta = json.loads(small_model.with_suffix(".json").read_text())
    del meta["keras_sha256"]
    old.with_suffix(".json").write_text(json.dumps(meta))
    installed = install_model(old, "full", "cta_cleaner.keras")
    assert json.loads(installed.with_suffix(".json").read_text())["keras_sha256"] == \
        hashlib.sha256(installed.read_bytes()).hexdigest()
    (repo / "lib" / "code.py").write_text("x = 2\n")
    installed.unlink()
    with pytest.raises(results.DirtyTreeError, match="model cta_cleaner.keras"):
        install_model(old, "full", "cta_cleaner.keras")
    assert not installed.exists()


def test_committed_models_match_their_sidecars():
    models = sorted((paths.MODELS / "full").glob("*.keras"))
    assert models
    for model in models:
        meta = json.loads(model.with_suffix(".json").read_text())
        assert meta.get("keras_sha256") == results.file_sha256(model), model.name


def test_committed_full_results_come_from_clean_commits():
    """Full-profile results must be reproducible from a commit: none may name a -dirty one."""
    found = results.read_all("full")
    assert found
    dirty = {stem: data.get("git_commit") for stem, data in found.items()
             if str(data.get("git_commit", "unknown")).endswith("-dirty") or data.get("git_commit") == "unknown"}
    assert not dirty, f"full-profile results from uncommitted work trees (re-run them from a clean commit): {dirty}"
