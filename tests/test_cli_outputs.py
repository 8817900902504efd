"""The output-side promises of every ``skyml`` command: an input or a
non-regular file is never replaced (even with --overwrite), the output
location is checked before any computation, temporary names fit the
file-name limit, every OS error is one line with exit status 2, left-over
temporaries are swept, and several inputs are processed with one model load,
a failing input not stopping the others."""

from __future__ import annotations

import errno
import os
import stat
import time

import numpy as np
import pytest

from skyml import cli, io
from skyml.cta.simulate import map_wcs

pytestmark = pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")

ALL = ["cta-clean", "cta-localise", "fermi-detect", "fermi-catalogue", "lhaaso-deconvolve", "radio-counts",
       "ctao-detect", "optical-detect"]


@pytest.fixture
def some_input(tmp_path):
    path = tmp_path / "in.fits"
    path.write_bytes(b"SIMPLE  = T" + b" " * 2869)
    return path


def no_model(command, tmp_path):
    """Options that would fail at model loading: the refusals tested here must come first."""
    return [] if command == "fermi-catalogue" else ["--model", str(tmp_path / "absent.keras")]


@pytest.mark.parametrize("command", ALL)
@pytest.mark.parametrize("how", ["same", "symlink", "hardlink", "dotted"])
def test_output_equal_to_input_is_refused_even_with_overwrite(tmp_path, some_input, cli_error, command, how):
    before = some_input.read_bytes()
    out = {"same": some_input, "symlink": tmp_path / "link.fits", "hardlink": tmp_path / "hard.fits",
           "dotted": tmp_path / "." / "in.fits"}[how]
    if how == "symlink":
        out.symlink_to(some_input)
    elif how == "hardlink":
        os.link(some_input, out)
    cli_error([command, str(some_input), "-o", str(out), "--overwrite"] + no_model(command, tmp_path),
              "is the input file")
    assert some_input.read_bytes() == before


@pytest.mark.parametrize("command", ALL)
def test_fifo_output_is_never_replaced(tmp_path, some_input, cli_error, command):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    cli_error([command, str(some_input), "-o", str(fifo), "--overwrite"] + no_model(command, tmp_path),
              "is a FIFO, not a regular file")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod of a character device needs root")
def test_character_device_output_is_never_replaced(tmp_path, some_input, cli_error):
    device = tmp_path / "null"
    os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    cli_error(["cta-clean", str(some_input), "-o", str(device), "--overwrite"] + no_model("cta-clean", tmp_path),
              "is a character device")
    assert stat.S_ISCHR(os.lstat(device).st_mode)


def test_dev_null_is_never_replaced(tmp_path, some_input, cli_error):
    if not os.path.exists("/dev/null"):
        pytest.skip("no /dev/null")
    cli_error(["cta-localise", str(some_input), "-o", "/dev/null", "--overwrite"]
              + no_model("cta-localise", tmp_path), "character device")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_folder_output_is_refused(tmp_path, some_input, cli_error):
    cli_error(["radio-counts", str(some_input), "-o", str(tmp_path), "--overwrite"]
              + no_model("radio-counts", tmp_path), "is a folder")


@pytest.mark.parametrize("where, fragment", [
    ("/proc/self/skyml-out.ecsv", "cannot write in the output folder"),
    ("{tmp}/a-file/out.ecsv", "is not a folder"),
    ("{tmp}/no-such/out.ecsv", "does not exist"),
])
def test_unwritable_output_location_is_found_before_the_model(tmp_path, some_input, cli_error, where, fragment):
    if where.startswith("/proc") and not os.path.isdir("/proc/self"):
        pytest.skip("no /proc")
    (tmp_path / "a-file").write_text("x")
    out = where.format(tmp=tmp_path)
    # the model does not exist either: the output problem must be reported first
    cli_error(["optical-detect", str(some_input), "-o", out] + no_model("optical-detect", tmp_path), fragment)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in read-only folders")
def test_read_only_folder_is_found_before_the_model(tmp_path, some_input, cli_error):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        cli_error(["ctao-detect", str(some_input), "-o", str(folder / "o.ecsv")] + no_model("ctao-detect", tmp_path),
                  "cannot write in the output folder", "Permission denied")
    finally:
        folder.chmod(0o755)


def test_too_long_name_is_one_line(tmp_path, some_input, cli_error):
    out = tmp_path / ("x" * 300 + ".ecsv")
    cli_error(["cta-localise", str(some_input), "-o", str(out)] + no_model("cta-localise", tmp_path),
              "longer than the 255")


def test_longest_legal_name_is_written(tmp_path):
    """A 250-byte name works: the temporary name is shortened to fit NAME_MAX."""
    out = tmp_path / ("m" * 245 + ".fits")
    assert len(out.name) == 250
    assert len(io.temp_path(out).name) <= 255
    io.write_fits_map(out, np.ones((4, 4)), map_wcs(83.6, 22.0, 4, 0.025))
    assert out.is_file()
    assert [p.name for p in tmp_path.iterdir()] == [out.name]


@pytest.fixture(scope="module")
def localiser(tmp_path_factory):
    from skyml.cta.models import LOCALISER_INPUT, build_improved_localiser, save_model

    return save_model(build_improved_localiser(filters=(4, 4, 4), full_resolution_filters=2),
                      tmp_path_factory.mktemp("m") / "cta_localiser.keras",
                      {"task": "cta-localise", "input": LOCALISER_INPUT, "profile": "quick"})


def counts_map(path, seed=0):
    rng = np.random.default_rng(seed)
    return io.write_fits_map(path, rng.poisson(1.0, (200, 200)).astype(float), map_wcs(83.63, 22.01))


def test_disk_full_while_writing_is_one_line(tmp_path, localiser, monkeypatch, cli_error):
    src = counts_map(tmp_path / "c.fits")

    def full(tmp):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))

    real = io._atomic_write
    monkeypatch.setattr(io, "_atomic_write", lambda path, write, overwrite: real(path, full, overwrite))
    out = tmp_path / "p.ecsv"
    cli_error(["cta-localise", str(src), "-o", str(out), "--model", str(localiser)], "No space left on device")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.fits"]


def test_stale_temporaries_are_swept(tmp_path, some_input, cli_error):
    stale = tmp_path / ".p.ecsv.0123456789ab.tmp"
    fresh = tmp_path / ".p.ecsv.ba9876543210.tmp"
    other = tmp_path / ".keep-me.tmp"
    for p in (stale, fresh, other):
        p.write_text("partial")
    old = time.time() - 2 * cli.STALE_SECONDS
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    cli_error(["cta-localise", str(some_input), "-o", str(tmp_path / "p.ecsv")]
              + no_model("cta-localise", tmp_path), "model file not found")
    assert not stale.exists() and fresh.exists() and other.exists()


def test_several_inputs_one_model_load_failures_reported(tmp_path, localiser, monkeypatch, capsys):
    good1, good2 = counts_map(tmp_path / "a.fits", 1), counts_map(tmp_path / "b.fits.gz", 2)
    bad = tmp_path / "c.fits"
    bad.write_text("not FITS")
    loads = []
    real = cli.load_trained_model

    def counting(path, trained):
        loads.append(path)
        return real(path, trained)

    monkeypatch.setattr(cli, "load_trained_model", counting)
    import skyml.cta.command as command

    monkeypatch.setattr(command, "load_trained_model", counting)
    out = tmp_path / "out"
    status = cli.main(["cta-localise", str(good1), str(bad), str(good2), "--output-dir", str(out),
                       "--model", str(localiser)])
    captured = capsys.readouterr()
    assert status == 2
    assert len(loads) == 1
    assert sorted(p.name for p in out.iterdir()) == ["a_position.ecsv", "b_position.ecsv"]
    errors = captured.err.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("skyml cta-localise: error: ") and "c.fits" in errors[0]
    assert captured.out.count("wrote ") == 2


def test_several_inputs_need_output_dir(tmp_path, some_input, cli_error):
    cli_error(["cta-clean", str(some_input), str(some_input), "-o", str(tmp_path / "x.fits")],
              "-o/--output takes one input")
    cli_error(["cta-clean", str(some_input)], "give the output file")
    other = tmp_path / "sub"
    other.mkdir()
    (other / "in.fits").write_bytes(some_input.read_bytes())
    cli_error(["cta-clean", str(some_input), str(other / "in.fits"), "--output-dir", str(tmp_path / "o")],
              "would both write")
