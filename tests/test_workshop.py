"""The workshop kit: pack data/cache + data/models/quick, verify and unpack."""

from __future__ import annotations

import hashlib
import tarfile

import pytest

from skyml import workshop


def fake_repo(root):
    files = {
        "data/cache/cta/abc123/maps.npz": b"\x93NUMPY fake maps",
        "data/cache/cta/abc123/meta.json": b'{"seed": 1}\n',
        "data/models/quick/cta_cleaner.keras": b"PK fake model",
        "data/models/full/not_packed.keras": b"full profile model",
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files


def test_round_trip(tmp_path):
    src, dst = tmp_path / "teacher", tmp_path / "learner"
    files = fake_repo(src)
    archive = tmp_path / "kit.tar.gz"
    n, digest = workshop.pack(archive, root=src)
    assert n == 3
    assert workshop.checksum_path(archive).read_text() == f"{digest}  kit.tar.gz\n"
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == digest
    with tarfile.open(archive) as tar:
        assert sorted(tar.getnames()) == sorted(k for k in files if "/full/" not in k)

    assert workshop.unpack(archive, root=dst) == {"files": 3, "written": 3, "unchanged": 0}
    for name, data in files.items():
        assert (dst / name).is_file() == ("/full/" not in name)
        if "/full/" not in name:
            assert (dst / name).read_bytes() == data
    # again: identical files are left alone
    assert workshop.unpack(archive, root=dst)["unchanged"] == 3


def test_same_files_same_archive(tmp_path):
    fake_repo(tmp_path / "a")
    d1 = workshop.pack(tmp_path / "one.tar.gz", root=tmp_path / "a")[1]
    d2 = workshop.pack(tmp_path / "two.tar.gz", root=tmp_path / "a")[1]
    assert d1 == d2


def test_refuses_to_overwrite_different_file_without_force(tmp_path):
    src, dst = tmp_path / "teacher", tmp_path / "learner"
    fake_repo(src)
    archive = tmp_path / "kit.tar.gz"
    workshop.pack(archive, root=src)
    mine = dst / "data/models/quick/cta_cleaner.keras"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"my own model")
    with pytest.raises(workshop.WorkshopError, match="different content"):
        workshop.unpack(archive, root=dst)
    assert mine.read_bytes() == b"my own model"
    assert not (dst / "data/cache").exists()  # nothing written before every check passed
    assert workshop.unpack(archive, root=dst, force=True)["written"] == 3
    assert mine.read_bytes() == b"PK fake model"


def test_damaged_archive_is_refused(tmp_path):
    fake_repo(tmp_path / "teacher")
    archive = tmp_path / "kit.tar.gz"
    workshop.pack(archive, root=tmp_path / "teacher")
    data = bytearray(archive.read_bytes())
    data[-20] ^= 0xFF
    archive.write_bytes(bytes(data))
    with pytest.raises(workshop.WorkshopError, match="sha256 does not match"):
        workshop.unpack(archive, root=tmp_path / "learner")
    assert not (tmp_path / "learner").exists()


def test_member_outside_the_kit_is_refused(tmp_path):
    evil = tmp_path / "payload"
    evil.write_bytes(b"x")
    archive = tmp_path / "kit.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(evil, arcname="data/cache/../../outside.txt")
    workshop.checksum_path(archive).write_text(f"{workshop.file_sha256(archive)}  kit.tar.gz\n")
    with pytest.raises(workshop.WorkshopError, match="outside the repository"):
        workshop.unpack(archive, root=tmp_path / "learner")


def test_cli_errors_exit_2(tmp_path, capsys):
    assert workshop.main(["unpack", str(tmp_path / "missing.tar.gz")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1
    fake_repo(tmp_path / "t")
    archive = tmp_path / "kit.tar.gz"
    workshop.pack(archive, root=tmp_path / "t")
    with pytest.raises(workshop.WorkshopError, match="exists"):
        workshop.pack(archive, root=tmp_path / "t")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(workshop.WorkshopError, match="nothing to pack"):
        workshop.pack(tmp_path / "e.tar.gz", root=empty)


def test_archive_and_restored_files_get_the_umask_mode(tmp_path):
    """The archive and the files it restores have the mode a plain open() gives
    (0666 less the umask), not a temporary file's 0600: a shared copy is readable."""
    import os
    import stat

    src, dst = tmp_path / "teacher", tmp_path / "learner"
    fake_repo(src)
    archive = tmp_path / "kit.tar.gz"
    old = os.umask(0o022)
    try:
        workshop.pack(archive, root=src)
        workshop.unpack(archive, root=dst)
    finally:
        os.umask(old)
    assert stat.S_IMODE(archive.stat().st_mode) == 0o644
    assert stat.S_IMODE((dst / "data/cache/cta/abc123/maps.npz").stat().st_mode) == 0o644
