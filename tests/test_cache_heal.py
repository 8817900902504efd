"""The data cache heals itself: damaged entries are detected, reported in one
line, removed and rebuilt; concurrent fills build once; left-overs of killed
builds are swept; an unwritable cache root falls back to the per-user cache;
folders follow the umask."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
import time
from pathlib import Path

import numpy as np
import pytest

from skyml import cache, paths

PARAMS = {"n": 3, "seed": 7}


def builder(calls: list):
    def build():
        calls.append(1)
        return {"x": np.arange(1000, dtype=np.float64) * PARAMS["seed"], "y": np.ones((4, 4), np.int32)}
    return build


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "CACHE", tmp_path / "cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "cache"


def entry(root):
    return root / "demo" / cache.param_hash("demo", PARAMS)


def fill(calls):
    return cache.cached_arrays("demo", PARAMS, builder(calls), verbose=False)


def test_entry_stores_params_and_checksum(root):
    calls = []
    fill(calls)
    folder = entry(root)
    record = json.loads((folder / "checksum.json").read_text())
    assert set(record["files"]) == {"arrays.npz", "params.json"}
    assert json.loads((folder / "params.json").read_text())["params"] == PARAMS
    fill(calls)
    assert len(calls) == 1  # second call loads


@pytest.mark.parametrize("damage", ["truncate", "empty", "bitflip", "delete"])
def test_damaged_arrays_are_rebuilt(root, capsys, damage):
    calls = []
    good = fill(calls)
    npz = entry(root) / "arrays.npz"
    data = bytearray(npz.read_bytes())
    if damage == "truncate":
        npz.write_bytes(bytes(data[: len(data) // 2]))
    elif damage == "empty":
        npz.write_bytes(b"")
    elif damage == "bitflip":
        data[len(data) // 2] ^= 0x10
        npz.write_bytes(bytes(data))
    else:
        npz.unlink()
    capsys.readouterr()
    again = fill(calls)
    err = capsys.readouterr().err.strip()
    assert len(calls) == 2
    assert "\n" not in err and "damaged entry" in err and "rebuilding" in err, err
    np.testing.assert_array_equal(again["x"], good["x"])
    fill(calls)  # healed: no third build, nothing reported
    assert len(calls) == 2 and capsys.readouterr().err == ""


def test_entry_without_params_is_rebuilt_once_and_kept(root, capsys):
    calls = []
    fill(calls)
    (entry(root) / "params.json").unlink()
    fill(calls)
    fill(calls)
    assert len(calls) == 2
    assert "params.json missing" in capsys.readouterr().err


def test_entry_with_other_parameters_is_rebuilt(root, capsys):
    calls = []
    fill(calls)
    p = entry(root) / "params.json"
    p.write_text(json.dumps({"kind": "demo", "params": {"n": 4, "seed": 7}}))
    fill(calls)
    assert len(calls) == 2
    assert "other parameters" in capsys.readouterr().err


def test_entry_of_an_older_version_is_adopted(root, capsys):
    calls = []
    fill(calls)
    (entry(root) / "checksum.json").unlink()
    fill(calls)
    assert len(calls) == 1
    assert (entry(root) / "checksum.json").is_file()
    assert "checksum added" in capsys.readouterr().err


def _slow_fill(root_str, out):
    paths.CACHE = Path(root_str)

    def build():
        with open(out, "a") as f:
            f.write("built\n")
        time.sleep(0.5)
        return {"x": np.arange(10)}

    arrays = cache.cached_arrays("demo", PARAMS, build, verbose=False)
    assert arrays["x"].tolist() == list(range(10))


def test_concurrent_fills_build_once(root, tmp_path):
    log = tmp_path / "builds.log"
    ctx = multiprocessing.get_context("forkserver")  # fork() of the threaded test process may deadlock
    procs = [ctx.Process(target=_slow_fill, args=(str(root), str(log))) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert log.read_text().count("built") == 1
    assert not list((root / "demo").glob(".*-*"))  # no hidden build folders left


def test_stale_build_folders_are_swept(root):
    kind_dir = root / "demo"
    kind_dir.mkdir(parents=True)
    stale = kind_dir / ".0123456789abcdef-dead"
    fresh = kind_dir / ".0123456789abcdef-live"
    for folder in (stale, fresh):
        folder.mkdir()
        (folder / "arrays.npz").write_bytes(b"partial")
    old = time.time() - 2 * cache.STALE_SECONDS
    os.utime(stale, (old, old))
    fill([])
    assert not stale.exists()
    assert fresh.exists()  # may belong to a running build


def test_unwritable_root_falls_back_to_user_cache(tmp_path, monkeypatch):
    blocker = tmp_path / "readonly-install"
    blocker.write_text("a file: nothing can be created below it")
    monkeypatch.setattr(paths, "CACHE", blocker / "data" / "cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    calls = []
    fill(calls)
    assert (tmp_path / "xdg" / "skyml" / "demo" / cache.param_hash("demo", PARAMS) / "arrays.npz").is_file()
    fill(calls)
    assert len(calls) == 1


def test_no_writable_root_is_one_clear_error(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setattr(paths, "CACHE", blocker / "cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker / "xdg"))
    with pytest.raises(cache.CacheError, match="no writable cache folder"):
        fill([])


def test_folders_follow_the_umask(root):
    old = os.umask(0o022)
    try:
        fill([])
    finally:
        os.umask(old)
    for folder in (root, root / "demo", entry(root)):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755, folder


def test_model_folders_are_checksummed_too(root, capsys):
    calls = []

    def build(tmp):
        calls.append(1)
        (tmp / "model.keras").write_bytes(b"weights" * 100)

    folder = cache.cached_dir("models", PARAMS, build, verbose=False)
    (folder / "model.keras").write_bytes(b"weights")  # truncated
    folder = cache.cached_dir("models", PARAMS, build, verbose=False)
    assert len(calls) == 2 and (folder / "model.keras").read_bytes() == b"weights" * 100
    assert "model.keras does not match its checksum" in capsys.readouterr().err
