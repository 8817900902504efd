"""Workshop kit: the cached datasets and the quick-profile models in one archive.

A teacher runs the quick profile once (``make reproduce``), then packs
``data/cache/`` and ``data/models/quick/`` into one ``.tar.gz`` with a
``.sha256`` file next to it; learners unpack it into their clone and every
notebook loads its inputs instead of simulating and training them::

    python -m skyml.workshop pack   [ARCHIVE]           # make workshop-pack
    python -m skyml.workshop unpack [ARCHIVE] [--force]  # make workshop-unpack

The exercise notebooks (``notebooks/exercises/``) read the quick-profile
parameters of the notebook they belong to with :func:`notebook_parameters`, so
that they ask for the same datasets and models (the same cache keys) and load
what that notebook built.

Unpacking verifies the checksum first, accepts only regular files under the
two folders (no links, no absolute or ``..`` paths), and refuses to replace an
existing file with different content unless ``--force`` is given. Files with
the same content are left alone. Errors: one line on stderr, exit status 2,
nothing written.
"""

from __future__ import annotations

import argparse
import ast
import gzip
import hashlib
import os
import sys
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from . import paths
from .results import file_sha256

#: folders of the kit, relative to the repository root
MEMBERS = ("data/cache", "data/models/quick")
DEFAULT_ARCHIVE = "build/skyml-workshop-quick.tar.gz"


class WorkshopError(Exception):
    """A problem reported as one line, exit status 2."""


def notebook_parameters(stem: str, notebooks_dir: Path = paths.NOTEBOOKS) -> dict:
    """The quick-profile parameters of ``notebooks/<stem>.ipynb``: the
    assignments of its cell tagged ``parameters``, read without running it.

    Every value must be a Python literal (numbers, strings, lists, dicts), as
    papermill's parameters are; anything else raises ``ValueError``.
    """
    import nbformat

    path = Path(notebooks_dir) / f"{stem}.ipynb"
    if not path.is_file():
        raise FileNotFoundError(f"no notebook {path}")
    cells = [c for c in nbformat.read(path, as_version=4).cells
             if c.cell_type == "code" and "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"{path.name}: {len(cells)} cells tagged 'parameters', expected 1")
    params = {}
    for node in ast.parse(cells[0].source).body:
        if not (isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) for t in node.targets)):
            raise ValueError(f"{path.name}: the parameters cell holds more than assignments to names")
        try:
            value = ast.literal_eval(node.value)
        except ValueError:
            raise ValueError(f"{path.name}: parameter {node.targets[0].id} is not a literal") from None
        params.update({t.id: value for t in node.targets})
    return params


def checksum_path(archive: Path) -> Path:
    return archive.with_name(archive.name + ".sha256")


def _files(root: Path) -> list[Path]:
    """Regular files of the kit under ``root``, sorted (links are refused)."""
    found = []
    for member in MEMBERS:
        folder = root / member
        if not folder.exists():
            continue
        for path in sorted(folder.rglob("*")):
            if path.is_symlink():
                raise WorkshopError(f"{path}: symbolic links are not packed")
            if path.is_file():
                found.append(path)
    return found


def pack(archive: Path, root: Path = paths.ROOT, overwrite: bool = False) -> tuple[int, str]:
    """Write ``archive`` (tar.gz) and its ``.sha256``; return (number of files, digest)."""
    archive, root = Path(archive), Path(root)
    files = _files(root)
    if not files:
        raise WorkshopError(f"nothing to pack: no files under {', '.join(MEMBERS)} in {root} "
                            "(run the quick profile first: make reproduce)")
    sums = checksum_path(archive)
    for target in (archive, sums):
        if target.is_symlink() or (target.exists() and not target.is_file()):
            raise WorkshopError(f"{target} exists and is not a regular file")
        if target.exists() and not overwrite:
            raise WorkshopError(f"{target} exists; --overwrite replaces it")
    archive.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{archive.name}-", dir=archive.parent)
    os.close(fd)
    try:
        # fixed order, owner and mode, no name or time in the gzip header: the same
        # files (with the same modification times) give the same archive bit for bit
        with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path in files:
                info = tar.gettarinfo(str(path), arcname=path.relative_to(root).as_posix())
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mode = 0o644
                with open(path, "rb") as fh:
                    tar.addfile(info, fh)
        digest = file_sha256(Path(tmp))
        _as_created(tmp)
        os.replace(tmp, archive)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    sums.write_text(f"{digest}  {archive.name}\n")
    return len(files), digest


def _as_created(path) -> None:
    """Give a temporary file (mode 0600) the mode a plain ``open`` would have
    given it (0666 less the umask), so an archive on a shared server, or the
    files it restores, can be read by the room as any other file."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _check_member(info: tarfile.TarInfo) -> PurePosixPath:
    name = PurePosixPath(info.name)
    if not info.isfile():
        raise WorkshopError(f"archive member {info.name!r} is not a regular file")
    if name.is_absolute() or ".." in name.parts:
        raise WorkshopError(f"archive member {info.name!r} is outside the repository")
    if not any(name.parts[:len(PurePosixPath(m).parts)] == PurePosixPath(m).parts for m in MEMBERS):
        raise WorkshopError(f"archive member {info.name!r} is not under {' or '.join(MEMBERS)}")
    return name


def unpack(archive: Path, root: Path = paths.ROOT, force: bool = False) -> dict:
    """Verify and extract ``archive`` into ``root``; return counts of written/unchanged files."""
    archive, root = Path(archive), Path(root)
    if not archive.is_file():
        raise WorkshopError(f"{archive}: no such archive")
    sums = checksum_path(archive)
    if not sums.is_file():
        raise WorkshopError(f"{sums}: checksum file missing")
    fields = sums.read_text().split()
    if not fields or len(fields[0]) != 64:
        raise WorkshopError(f"{sums}: not a sha256 line")
    if file_sha256(archive) != fields[0].lower():
        raise WorkshopError(f"{archive}: sha256 does not match {sums.name} (damaged or incomplete copy)")

    with tarfile.open(archive, "r:gz") as tar:
        members = tar.getmembers()
        plan = []
        for info in members:
            name = _check_member(info)
            data = tar.extractfile(info).read()
            target = root.joinpath(*name.parts)
            if target.is_symlink() or (target.exists() and not target.is_file()):
                raise WorkshopError(f"{target} exists and is not a regular file")
            same = target.is_file() and hashlib.sha256(data).digest() == hashlib.sha256(target.read_bytes()).digest()
            if target.exists() and not same and not force:
                raise WorkshopError(f"{target} exists with different content; FORCE=1 (--force) replaces it")
            plan.append((target, data, same))
    written = 0
    for target, data, same in plan:  # every check passed: now write
        if same:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}-", dir=target.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        _as_created(tmp)
        os.replace(tmp, target)
        written += 1
    return {"files": len(plan), "written": written, "unchanged": len(plan) - written}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m skyml.workshop", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help=f"pack {' and '.join(MEMBERS)} into a tar.gz with a .sha256")
    p.add_argument("archive", nargs="?", default=DEFAULT_ARCHIVE, type=Path)
    p.add_argument("--overwrite", action="store_true", help="replace an existing archive")
    u = sub.add_parser("unpack", help="verify the .sha256 and restore the files")
    u.add_argument("archive", nargs="?", default=DEFAULT_ARCHIVE, type=Path)
    u.add_argument("--force", action="store_true", help="replace existing files whose content differs")
    args = parser.parse_args(argv)
    try:
        if args.command == "pack":
            n, digest = pack(args.archive, overwrite=args.overwrite)
            print(f"wrote {args.archive} ({n} files, {args.archive.stat().st_size / 1e6:.1f} MB) "
                  f"and {checksum_path(args.archive).name}; sha256 {digest}")
        else:
            r = unpack(args.archive, force=args.force)
            print(f"{args.archive}: checksum ok; {r['written']} files written, {r['unchanged']} unchanged")
    except WorkshopError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
