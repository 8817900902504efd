"""Put the outputs of a clean full-profile run into the source notebooks, so
that a reader who opens ``notebooks/NN_*.ipynb`` on a code-hosting site or in
JupyterLab, without running it, sees the paper's figures and numbers.

    python -m skyml.publish 01 09           # after: python run_all.py --profile full --only 01 09
    python -m skyml.publish --strip 04      # the code of 04 changed: remove its published outputs
    python -m skyml.publish --check         # every notebook with outputs still matches them
    python -m skyml.publish --profile quick 07   # no full run of 07's code yet: its quick run's outputs

A notebook is published from ``build/notebooks/full/<stem>.ipynb`` only when

* its results file ``data/results/full/<stem>.json`` names a clean commit
  (no ``-dirty``): the outputs come from a state anyone can check out;
* every cell of the executed copy (less papermill's injected parameters cell)
  has the same type and source as the source notebook now: the outputs belong
  to the code a reader sees.

The published notebook keeps its quick-profile ``parameters`` cell (running it
still starts the quick profile); a markdown cell after "Before you start" says
that the outputs shown are the full profile's, from which commit, and with
which parameter overrides. The notebook's metadata records the commit and a
SHA-256 of its cells' sources; ``--check`` (and the repository's tests) fail
as soon as a cell is edited after publishing, so outputs never drift from the
code beside them: re-run and publish again, or ``--strip``. One edit keeps
them: a new value in the ``parameters`` cell for a parameter the published
run overrode (a quick-profile default the full run did not use). The record
keeps the parameters cell the run saw for that check; ``--record-parameters``
adds it to a notebook published before it was kept.

Where no full-profile run of a notebook's current code stands yet (one that
trains for hours), ``--profile quick`` publishes the outputs of a clean
quick-profile run (``build/notebooks/quick/``, ``data/results/quick/``) under
the same rules, with a banner that says they are the quick profile's: small
sets, a check that the analysis runs, not the paper's numbers. A published
full-profile run is never replaced by a quick one (``--strip`` it first); a
full-profile publication replaces a quick one.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import re
import sys
import tempfile
from pathlib import Path

from . import paths

BANNER_ID = "published-run"
BANNER_TAG = "skyml-published"
INJECTED_TAG = "injected-parameters"
NAVIGATION_TAG = "navigation"
PROG = "python -m skyml.publish"


class PublishError(Exception):
    """A notebook that cannot be published or stripped; one line for the user."""


def _read(path: Path):
    import nbformat

    return nbformat.read(str(path), as_version=4)


def _is_banner(cell) -> bool:
    return BANNER_TAG in cell.get("metadata", {}).get("tags", [])


def _is_injected(cell) -> bool:
    return INJECTED_TAG in cell.get("metadata", {}).get("tags", [])


def _is_navigation(cell) -> bool:
    """A markdown cell tagged ``navigation`` (links to the exercises, ...): it
    neither runs nor states a result, so adding one needs no new run."""
    return cell.cell_type == "markdown" and NAVIGATION_TAG in cell.get("metadata", {}).get("tags", [])


def content_cells(nb) -> list:
    """The cells whose outputs or text a run stands behind: without the
    banner, papermill's injected cell and navigation cells."""
    return [c for c in nb.cells if not _is_banner(c) and not _is_injected(c) and not _is_navigation(c)]


def sources_sha256(nb) -> str:
    """SHA-256 of the type and source of every content cell, in order."""
    h = hashlib.sha256()
    for cell in content_cells(nb):
        h.update(json.dumps([cell.cell_type, cell.source]).encode())
    return h.hexdigest()


#: an absolute file path in an output: "/" that starts no word, URL or relative path, two or more segments
_ABS_PATH = re.compile(r"(?<![\w.~:/-])/(?:[^\s/\"'()<>\[\]{},;:=]+/)+[^\s/\"'()<>\[\]{},;:=]*")
#: the repository a run reports in its environment cell (skyml.env.report)
_RUN_ROOT = re.compile(r"repository: (/\S+)")


def _local(path: str, roots: list[str]) -> str:
    """``path`` without the machine it was written on: relative to the run's
    repository, from the virtual environment or ``site-packages`` on, or its name."""
    for root in roots:
        if path == root:
            return "."
        if path.startswith(root + "/"):
            return path[len(root) + 1:]
    for marker in ("/.venv/", "/site-packages/", "/dist-packages/"):
        if marker in path:
            return path[path.index(marker) + 1:]
    return "…/" + path.rstrip("/").rsplit("/", 1)[-1]


def _output_texts(output):
    """(container, key) of every text an output carries."""
    if output.get("output_type") == "stream":
        yield output, "text"
    elif output.get("output_type") == "error":
        yield output, "traceback"
    for mime in ("text/plain", "text/html", "text/markdown", "text/latex"):
        if mime in output.get("data", {}):
            yield output["data"], mime


def _texts(nb) -> list[str]:
    """Every text the outputs of ``nb`` carry, each joined into one string."""
    return [box[key] if isinstance(box[key], str) else "".join(box[key])
            for cell in nb.cells for output in cell.get("outputs", []) for box, key in _output_texts(output)]


def machine_paths(nb) -> list[str]:
    """The absolute file paths the outputs of ``nb`` show."""
    return [p for text in _texts(nb) for p in _ABS_PATH.findall(text)]


def scrub_paths(nb, roots=()):
    """``nb`` with every absolute path in its outputs made machine-independent
    (the run's repository, given or as its environment cell reports it, becomes
    ``.``): published notebooks show no user names or folder layouts."""
    found = [m for t in _texts(nb) for m in _RUN_ROOT.findall(t)]
    all_roots = sorted({str(r).rstrip("/") for r in [*roots, *found] if str(r).startswith("/")}, key=len, reverse=True)
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            for box, key in _output_texts(output):
                value = box[key]
                if isinstance(value, str):
                    box[key] = _ABS_PATH.sub(lambda m: _local(m.group(0), all_roots), value)
                else:
                    box[key] = [_ABS_PATH.sub(lambda m: _local(m.group(0), all_roots), v) for v in value]
    return nb


def _parameters_cell(nb):
    cells = [c for c in content_cells(nb) if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]
    return cells[0] if len(cells) == 1 else None


def _assignments(source: str) -> dict | None:
    """``{name: normalised value expression}`` of a parameters cell made of
    plain assignments (comments and layout ignored); None for anything else."""
    import ast

    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    out = {}
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            return None
        out[node.targets[0].id] = ast.dump(node.value)
    return out


def _parameters_edit_kept(nb, record: dict) -> str | None:
    """Why the notebook's cells differ from the published run's beyond a new
    value of a parameter that run overrode (None: they do not)."""
    recorded = record.get("parameters_source")
    cell = _parameters_cell(nb)
    if recorded is None or cell is None:
        return "cell changed"
    then = copy.deepcopy(nb)
    _parameters_cell(then).source = recorded
    if sources_sha256(then) != record.get("sources_sha256"):
        return "cell changed"
    old, new = _assignments(recorded), _assignments(cell.source)
    if old is None or new is None or set(old) != set(new):
        return "the parameters cell changed its names"
    overridden = set(record.get("parameters") or {})
    used = sorted(k for k in old if old[k] != new[k] and k not in overridden)
    if used:
        return f"the parameters cell changed {', '.join(used)}, whose value the published run used"
    return None


def record_parameters(nb):
    """The notebook with its parameters cell kept in its publication record
    (its outputs must stand as they are)."""
    why = check(nb)
    if why:
        raise PublishError(why)
    record = nb.metadata.get("skyml", {}).get("published")
    cell = _parameters_cell(nb)
    if record is None or cell is None:
        raise PublishError("no published outputs with one parameters cell")
    nb = copy.deepcopy(nb)
    nb.metadata["skyml"]["published"]["parameters_source"] = cell.source
    return nb


def find_source(token: str, notebooks_dir: Path | None = None) -> Path:
    """``01`` or ``01_cta_simulate`` -> ``notebooks/01_cta_simulate.ipynb``."""
    notebooks_dir = paths.NOTEBOOKS if notebooks_dir is None else notebooks_dir
    matches = sorted(p for p in Path(notebooks_dir).glob("[0-9][0-9]_*.ipynb")
                     if p.stem == token or p.stem.split("_", 1)[0] == token)
    if len(matches) != 1:
        raise PublishError(f"no single notebook matches {token!r} in {notebooks_dir}")
    return matches[0]


def _strip(nb):
    nb = copy.deepcopy(nb)
    nb.cells = [c for c in nb.cells if not _is_banner(c)]
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    nb.metadata.pop("skyml", None)
    for key in ("papermill",):
        nb.metadata.pop(key, None)
    return nb


PROFILES = ("full", "quick")


def published_profile(nb) -> str | None:
    """The profile whose run a source notebook's outputs come from (None: none published)."""
    record = nb.metadata.get("skyml", {}).get("published")
    return None if record is None else str(record.get("profile", "full"))


def _banner(stem: str, commit: str, overrides: dict, profile: str = "full"):
    import nbformat

    number = stem.split("_", 1)[0]
    if profile == "quick":
        text = (f"> **The outputs below are those of the quick profile** (the parameters cell as shown), run on "
                f"commit `{commit}`: small training and test sets, so they show that the analysis runs and what "
                "it draws, not the paper's numbers. No full-profile run of this notebook's current code is "
                f"published yet; `python run_all.py --profile full --only {number}` runs it, and the results "
                "page (`docs/results.md`) lists every full-profile number that is.")
    else:
        shown = ", ".join(f"`{k} = {v!r}`" for k, v in sorted(overrides.items())) or "none"
        text = (f"> **The outputs below are those of the full profile**, run on commit `{commit}` "
                f"(parameter overrides: {shown}). Running this notebook here starts the quick profile of the "
                f"parameters cell; `python run_all.py --profile full --only {number}` reproduces "
                "these outputs.")
    cell = nbformat.v4.new_markdown_cell(text, id=BANNER_ID)
    cell.metadata["tags"] = [BANNER_TAG]
    return cell


def published(source: Path, executed: Path, results: Path, profile: str = "full"):
    """The source notebook with the executed copy's outputs and a banner."""
    if profile not in PROFILES:
        raise PublishError(f"unknown profile {profile!r} (one of {', '.join(PROFILES)})")
    if not Path(executed).is_file():
        raise PublishError(f"{source.stem}: no executed {profile}-profile copy {executed}; "
                           f"run python run_all.py --profile {profile} --only {source.stem[:2]} first")
    src, run = _read(source), _read(executed)
    if profile == "quick" and published_profile(src) == "full":
        raise PublishError(f"{source.stem}: holds the outputs of a full-profile run, which a quick run does not "
                           "replace (python -m skyml.publish --strip first)")
    meta = json.loads(Path(results).read_text()) if Path(results).is_file() else None
    if meta is None:
        raise PublishError(f"{source.stem}: no {profile}-profile results file {results}")
    commit = str(meta.get("git_commit") or "")
    if meta.get("profile") != profile or not commit or commit.endswith("-dirty") or commit == "unknown":
        raise PublishError(f"{source.stem}: the {profile}-profile results name no clean commit "
                           f"({commit or 'none'}); run it from a clean work tree first")
    params = run.metadata.get("papermill", {}).get("parameters", {})
    if params.get("profile") != profile:
        raise PublishError(f"{source.stem}: {executed} is not a {profile}-profile run")
    a, b = content_cells(src), content_cells(run)
    if [(c.cell_type, c.source) for c in a] != [(c.cell_type, c.source) for c in b]:
        raise PublishError(f"{source.stem}: the notebook changed since its {profile}-profile run; run it again")
    out = _strip(src)
    cells = content_cells(out)
    for mine, theirs in zip(cells, b):
        if mine.cell_type == "code":
            mine.outputs = theirs.outputs
            mine.execution_count = theirs.execution_count
    above = Path(results).resolve().parents  # <repository>/data/results/<profile>/<stem>.json
    scrub_paths(out, [str(above[3])] if len(above) > 3 else [])
    at = next((i + 1 for i, c in enumerate(out.cells) if c.cell_type == "markdown"
               and c.source.startswith("## Before you start")), 1)
    overrides = {k: v for k, v in params.items() if k != "profile"}
    out.cells.insert(at, _banner(source.stem, commit, overrides, profile))
    out.metadata["skyml"] = {"published": {"profile": profile, "commit": commit, "parameters": params,
                                           "sources_sha256": sources_sha256(out)}}
    if _parameters_cell(out) is not None:
        out.metadata["skyml"]["published"]["parameters_source"] = _parameters_cell(out).source
    return out


def check(nb) -> str | None:
    """Why a source notebook's stored outputs cannot stand (None: they can)."""
    has_outputs = any(c.cell_type == "code" and (c.outputs or c.execution_count is not None) for c in nb.cells)
    record = nb.metadata.get("skyml", {}).get("published")
    banner = [c for c in nb.cells if _is_banner(c)]
    if not has_outputs and record is None and not banner:
        return None
    if record is None:
        return "has outputs that no clean run published (python -m skyml.publish --strip)"
    commit = str(record.get("commit", ""))
    if not commit or commit.endswith("-dirty"):
        return f"published from a commit that is not clean ({commit or 'none'})"
    if record.get("profile", "full") not in PROFILES:
        return f"published from an unknown profile ({record.get('profile')})"
    if len(banner) != 1:
        return "published outputs without exactly one banner cell"
    why = None if record.get("sources_sha256") == sources_sha256(nb) else _parameters_edit_kept(nb, record)
    if why == "cell changed":
        return (f"a cell changed after its outputs were published: run the {record.get('profile', 'full')} "
                "profile again and publish, or python -m skyml.publish --strip")
    if why:
        return f"{why}: run the {record.get('profile', 'full')} profile again and publish"
    if any(_is_injected(c) for c in nb.cells):
        return "holds papermill's injected parameters cell"
    paths_shown = machine_paths(nb)
    if paths_shown:
        return f"its outputs show machine paths ({paths_shown[0]}, ...): publish it again"
    return None


def _write(nb, path: Path) -> None:
    import nbformat

    nbformat.validate(nb)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            nbformat.write(nb, f)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp creates 0o600; a notebook is as readable as the others
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", help="numbers or stems, e.g. 01 09")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--strip", action="store_true", help="remove published outputs instead")
    mode.add_argument("--check", action="store_true", help="check every numbered notebook; change nothing")
    mode.add_argument("--record-parameters", action="store_true",
                      help="keep the parameters cell in the publication record of notebooks published without it")
    parser.add_argument("--profile", choices=PROFILES, default="full",
                        help="the profile of the run to publish (default: full; quick only where no full run "
                             "is published)")
    parser.add_argument("--executed", type=Path, default=None,
                        help="folder of executed notebooks (default: build/notebooks/<profile>)")
    parser.add_argument("--results", type=Path, default=None,
                        help="folder of their results files (default: data/results/<profile>)")
    args = parser.parse_args(argv)
    executed = args.executed if args.executed is not None else paths.BUILD / "notebooks" / args.profile
    results_dir = args.results if args.results is not None else paths.RESULTS / args.profile
    try:
        if args.check:
            bad = []
            for source in sorted(paths.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
                why = check(_read(source))
                if why:
                    bad.append(f"{source.name}: {why}")
            for line in bad:
                print(f"{PROG}: {line}", file=sys.stderr)
            return 1 if bad else 0
        if not args.notebooks:
            raise PublishError("name the notebooks to publish or strip, e.g. 01 09")
        sources = [find_source(t) for t in args.notebooks]
        if args.strip:
            new = {s: _strip(_read(s)) for s in sources}
        elif args.record_parameters:
            new = {}
            for s in sources:
                try:
                    new[s] = record_parameters(_read(s))
                except PublishError as exc:
                    raise PublishError(f"{s.stem}: {exc}") from None
        else:
            new = {s: published(s, executed / s.name, results_dir / f"{s.stem}.json", args.profile)
                   for s in sources}
        for source, nb in new.items():  # all checked before any is written
            _write(nb, source)
            done = "stripped" if args.strip else "recorded the parameters of" if args.record_parameters else "published"
            print(f"{done} {source.relative_to(paths.ROOT)}")
        return 0
    except PublishError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
