#!/usr/bin/env python
"""Run the numbered notebooks ``notebooks/NN_*.ipynb`` in order with papermill.

Profiles: ``quick`` runs each notebook with the defaults of its ``parameters``
cell; ``full`` applies the overrides of ``notebooks/profiles/full.yml``, a YAML
mapping ``{notebook stem: {parameter: value}}``. Every notebook also receives
``profile: <profile>``. Executed copies go to ``build/notebooks/<profile>/``;
the source notebooks are never written.

Examples::

    python run_all.py                      # quick profile, every notebook
    python run_all.py --profile full --backend jax
    python run_all.py --only 02 03         # by number prefix
    python run_all.py --from 03            # resume after a failure
    python run_all.py --list               # parameters and full-profile overrides
    python run_all.py --jobs 2             # two notebooks at a time (09 still last)

With ``--jobs N`` (N > 1) up to N notebooks run at once, each in its own
process and kernel, with its cell output in ``build/notebooks/<profile>/<stem>.log``;
``09_results_figures`` starts after all others have finished. The notebooks
share the data cache, whose entries are built once under a lock, and take their
seeds from their parameters, so every array and metric is the same as in a
one-at-a-time run.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import functools
import io
import multiprocessing
import json
import logging
import math
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import papermill
import yaml
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from papermill.exceptions import PapermillExecutionError

from skyml import paths, results

PROFILES_DIR = paths.NOTEBOOKS / "profiles"
BUILD_NOTEBOOKS = paths.BUILD / "notebooks"
NOTEBOOK_NAME = re.compile(r"^\d\d_\w+\.ipynb$")
LAST = "09_results_figures"

# Headline metric(s) of each notebook for the summary table: the first key
# present in data/results/<profile>/<stem>.json is shown.
HEADLINE = {
    "01_cta_simulate": ("n_maps_total",),
    "02_cta_cnn_cleaner": ("excess_relerr68_cnn",),
    "03_cta_cnn_regressor": ("loc_err68_deg_improved_cnn",),
    "04_fermi_unet_kmeans": ("completeness_hilat_asid_bin_2.34e-10_unet_kmeans",),
    "05_fermi_characterisation": ("accuracy_3class_cnn",),
    "06_ctao_survey_detection": ("source_recall", "f1_score"),
    "07_radio_counts": ("counts_rel_residual",),
    "08_lhaaso_deconvolution": ("psnr_cnn",),
    "09_results_figures": ("n_figures",),
}


@dataclass
class Outcome:
    stem: str
    status: str = "skipped"  # ok / FAILED / skipped
    seconds: float | None = None
    headline: str = "-"


def find_notebooks(notebooks_dir: Path = paths.NOTEBOOKS) -> list[Path]:
    """Numbered notebooks in run order; ``09_results_figures`` always last."""
    found = [p for p in Path(notebooks_dir).glob("*.ipynb") if NOTEBOOK_NAME.match(p.name)]
    return sorted(found, key=lambda p: (p.stem == LAST, p.name))


def select(notebooks: list[Path], only: list[str] | None = None, start: str | None = None) -> list[Path]:
    """Notebooks named by whole number (``--only 2`` or ``--only 02``), or
    from one on (``--from``); an empty selection is refused."""
    def number(path: Path) -> int:
        return int(path.stem.split("_", 1)[0])

    def matching(token: str) -> list[Path]:
        names = ", ".join(p.stem for p in notebooks) or "none"
        if not token.isdigit():
            raise SystemExit(f"error: {token!r} is not a notebook number (found: {names})")
        hits = [p for p in notebooks if number(p) == int(token)]
        if not hits:
            raise SystemExit(f"error: no notebook matches {token!r} (found: {names})")
        return hits

    selected = notebooks
    if only:
        wanted = {p for token in only for p in matching(token)}
        selected = [p for p in selected if p in wanted]
    if start:
        first = notebooks.index(matching(start)[0])
        selected = [p for p in selected if notebooks.index(p) >= first]
    if not selected:
        given = " ".join(part for part in (f"--only {' '.join(only)}" if only else "",
                                           f"--from {start}" if start else "") if part)
        raise SystemExit(f"error: {given} selects no notebook; nothing to run")
    return selected


def load_overrides(profile: str, profiles_dir: Path = PROFILES_DIR) -> dict[str, dict]:
    """``{stem: {parameter: value}}`` of a profile; quick has none."""
    if profile == "quick":
        return {}
    source = Path(profiles_dir) / f"{profile}.yml"
    if not source.is_file():
        raise SystemExit(f"error: profile file {source} not found")
    try:
        overrides = yaml.safe_load(source.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = " ".join(str(getattr(err, "problem", None) or err).split())
        raise SystemExit(f"error: {source}: invalid YAML{where}: {problem}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SystemExit(f"error: {source}: cannot read ({err})") from None
    if not isinstance(overrides, dict) or not all(
        isinstance(v, dict) or v is None for v in overrides.values()
    ):
        raise SystemExit(f"error: {source} must be a mapping {{notebook stem: {{parameter: value}}}}")
    return {stem: dict(params or {}) for stem, params in overrides.items()}


def parameters_for(notebook: Path, profile: str, overrides: dict[str, dict]) -> dict:
    return {**overrides.get(notebook.stem, {}), "profile": profile}


def check_parameters(notebooks: list[Path], profile: str, overrides: dict[str, dict]) -> list[str]:
    """Problems with the parameters about to be injected, one message each."""
    problems = []
    known = {p.stem for p in notebooks} | set(HEADLINE)
    for stem in sorted(set(overrides) - known):
        problems.append(f"profile {profile!r} names an unknown notebook {stem!r}")
    for nb in notebooks:
        if "profile" in overrides.get(nb.stem, {}):
            problems.append(f"{nb.stem}: 'profile' is set by --profile, not by the profile file")
        declared = papermill.inspect_notebook(str(nb))
        unknown = sorted(set(parameters_for(nb, profile, overrides)) - set(declared))
        if unknown:
            problems.append(
                f"{nb.stem}: unknown parameter(s) {', '.join(unknown)}; "
                f"declared: {', '.join(declared) or 'none (no cell tagged parameters)'}"
            )
        for name, value in overrides.get(nb.stem, {}).items():
            if name in declared and name != "profile":
                problem = check_value(name, value, declared[name]["default"])
                if problem:
                    problems.append(f"{nb.stem}: {name} = {value!r}: {problem}")
    return problems


#: Integer parameters that must be at least 1 (any other integer parameter with
#: a non-negative default must be non-negative: sizes, counts, seeds).
POSITIVE_INTS = re.compile(r"^(.*epochs|batch_size|patience)$")


def _kind(value) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, dict):
        return "dict"
    return "None" if value is None else type(value).__name__


_ACCEPTS = {"int": {"int"}, "float": {"int", "float"}, "bool": {"bool"}, "str": {"str"}, "list": {"list"},
            "dict": {"dict"}}


def check_value(name: str, value, default_source: str) -> str | None:
    """A problem with a profile value against the notebook's default (its
    literal in the parameters cell), or None. Types follow the default; a
    default that is not a Python literal, or None, accepts anything."""
    import ast

    try:
        default = ast.literal_eval(default_source)
    except (ValueError, SyntaxError, TypeError):
        return None
    want, got = _kind(default), _kind(value)
    if want not in _ACCEPTS:
        return None
    if got not in _ACCEPTS[want]:
        return f"expected {want} like the notebook default {default_source}, got {got}"
    if want == "int":
        if POSITIVE_INTS.match(name) and value < 1:
            return "must be at least 1"
        if default >= 0 and value < 0:
            return "must not be negative"
    if want == "float" and not math.isfinite(value):
        return "must be finite"
    if want in ("list", "dict"):
        items = list(default.values()) if want == "dict" else list(default)
        given = list(value.values()) if want == "dict" else list(value)
        kinds = {_kind(v) for v in items}
        if len(kinds) == 1 and kinds <= set(_ACCEPTS):
            (kind,) = kinds
            bad = [v for v in given if _kind(v) not in _ACCEPTS[kind]]
            if bad:
                return f"items must be {kind} like the notebook default {default_source}, got {bad[0]!r}"
    return None


def describe(notebooks: list[Path], full_overrides: dict[str, dict]) -> str:
    """The ``--list`` text: each notebook, its parameters, defaults and full-profile values."""
    lines = []
    for nb in notebooks:
        lines.append(nb.stem)
        declared = papermill.inspect_notebook(str(nb))
        if not declared:
            lines.append("    (no cell tagged parameters)")
        width = max((len(name) for name in declared), default=0)
        for name, info in declared.items():
            line = f"    {name:<{width}} = {info['default']}"
            if name in full_overrides.get(nb.stem, {}):
                line += f"    [full: {full_overrides[nb.stem][name]!r}]"
            lines.append(line)
    return "\n".join(lines)


def headline(stem: str, profile: str, results_root: Path = paths.RESULTS) -> str:
    """``key=value`` of the notebook's headline metric, ``-`` when absent."""
    source = Path(results_root) / profile / f"{stem}.json"
    if not source.is_file():
        return "-"
    metrics = json.loads(source.read_text())
    for key in HEADLINE.get(stem, ()):
        if key in metrics:
            return f"{key}={metrics[key]:.3g}"
    return "-"


@contextlib.contextmanager
def kernel_environment(**variables: str):
    """Environment variables inherited by the kernels started inside the block."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def check_kernel(kernel: str) -> str | None:
    """A warning when the kernel would not run this interpreter, else None."""
    try:
        argv = KernelSpecManager().get_kernel_spec(kernel).argv
    except NoSuchKernel:
        return f"error: no Jupyter kernel named {kernel!r} (see: jupyter kernelspec list)"
    python = Path(argv[0])
    # jupyter_client replaces a bare "python" by the interpreter running papermill
    if argv[0] in {"python", "python3", f"python3.{sys.version_info.minor}"}:
        return None
    if python.is_file() and python.resolve() == Path(sys.executable).resolve():
        return None
    return f"warning: kernel {kernel!r} runs {argv[0]}, not this interpreter {sys.executable}"


def ipc_kernel_manager(folder: Path):
    """A kernel manager class whose kernels talk over Unix sockets in
    ``folder`` (POSIX only; None elsewhere): no TCP ports open on the machine,
    and ipykernel has no unencrypted TCP channel to warn about on every start."""
    if os.name != "posix":
        return None
    from jupyter_client.manager import AsyncKernelManager

    class IPCKernelManager(AsyncKernelManager):
        transport = "ipc"
        ip = str(Path(folder) / "kernel")

    return IPCKernelManager


def execute(notebook: Path, output: Path, parameters: dict, kernel: str, timeout: float) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.resolve() == notebook.resolve():
        raise SystemExit(f"error: refusing to write the executed copy over its source {notebook}")
    with tempfile.TemporaryDirectory(prefix="skyml-kernel-") as sockets:
        manager = ipc_kernel_manager(Path(sockets))
        papermill.execute_notebook(
            str(notebook), str(output),
            parameters=parameters,
            kernel_name=kernel,
            cwd=str(notebook.parent),
            log_output=True,
            progress_bar=False,
            request_save_on_cell_execute=True,
            execution_timeout=timeout,
            **({"kernel_manager_class": manager} if manager is not None else {}),
        )


def failure_text(stem: str, error: Exception, output: Path) -> str:
    """What went wrong, in which cell, and where the executed copy is."""
    out = io.StringIO()
    print(f"\n!! {stem} FAILED", file=out)
    if isinstance(error, PapermillExecutionError):
        lines = (error.source or "").splitlines()
        excerpt = lines[:15] + (["    ..."] if len(lines) > 15 else [])
        print(f"   in cell {error.cell_index} of the executed copy (In [{error.exec_count}]):", file=out)
        for line in excerpt:
            print(f"   | {line}", file=out)
        print(f"   {error.ename}: {error.evalue}", file=out)
    else:
        print(f"   {type(error).__name__}: {error}", file=out)
    print(f"   executed copy with the traceback: {output}\n", file=out)
    return out.getvalue()


def run_one(notebook: Path, output: Path, parameters: dict, kernel: str, timeout: float,
            log: Path | None = None) -> tuple[float, str | None]:
    """Execute one notebook; ``(seconds, None)`` or ``(seconds, failure text)``.
    With ``log``, the kernel's cell output goes to that file instead of stdout
    (the form used in the worker processes of ``--jobs``)."""
    handler = None
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log, mode="w", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(message)s"))
        papermill_log = logging.getLogger("papermill")
        papermill_log.addHandler(handler)
        papermill_log.setLevel(logging.INFO)
        papermill_log.propagate = False
    t0 = time.perf_counter()
    try:
        execute(notebook, output, parameters, kernel, timeout)
        problem = None
    except Exception as error:  # a failing notebook must not stop the summary
        problem = failure_text(notebook.stem, error, output)
    finally:
        if handler is not None:
            logging.getLogger("papermill").removeHandler(handler)
            handler.close()
    return time.perf_counter() - t0, problem


def summary(outcomes: list[Outcome]) -> str:
    width = max([len("notebook")] + [len(o.stem) for o in outcomes])
    rows = [f"{'notebook':<{width}}  {'status':<7}  {'seconds':>8}  headline"]
    rows.append("-" * len(rows[0]) + "-" * 20)
    for o in outcomes:
        seconds = "-" if o.seconds is None else f"{o.seconds:.1f}"
        rows.append(f"{o.stem:<{width}}  {o.status:<7}  {seconds:>8}  {o.headline}")
    return "\n".join(rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--profile", choices=paths.PROFILES, default="quick",
                        help="parameter profile (default: quick)")
    parser.add_argument("--only", nargs="+", metavar="NN",
                        help="run only these notebooks, by number prefix (e.g. --only 02 03)")
    parser.add_argument("--from", dest="start", metavar="NN",
                        help="resume: run this notebook and every later one")
    parser.add_argument("--list", action="store_true",
                        help="list notebooks with parameters, defaults and full-profile overrides; run nothing")
    parser.add_argument("--backend", choices=("tensorflow", "jax"),
                        default=os.environ.get("KERAS_BACKEND", "tensorflow"),
                        help="Keras backend of the kernels, KERAS_BACKEND (default: $KERAS_BACKEND or tensorflow)")
    parser.add_argument("--timeout", type=float, default=7200, metavar="SECONDS",
                        help="time limit per cell (default: 7200)")
    parser.add_argument("--kernel", default="python3",
                        help="Jupyter kernel name (default: python3, the interpreter running this script)")
    parser.add_argument("--allow-dirty", action="store_true",
                        help="let the full profile write results and models from a work tree with "
                             "uncommitted changes (sets SKYML_ALLOW_DIRTY=1; the commit is recorded as -dirty)")
    parser.add_argument("--keep-going", action="store_true",
                        help="after a failing notebook, run the remaining ones anyway")
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="notebooks run at once, each in its own kernel; cell output then goes to "
                             "build/notebooks/<profile>/<stem>.log (default: 1)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    return args


def run_serial(selected, outcomes, run, keep_going: bool) -> bool:
    """One notebook after the other; True when one failed."""
    failed = False
    for nb, outcome in zip(selected, outcomes):
        if failed and not keep_going:
            break
        print(f"[{time.strftime('%H:%M:%S')}] start {nb.stem}", flush=True)
        outcome.seconds, problem = run(nb, None)
        failed = finish(outcome, problem) or failed
    return failed


def finish(outcome: Outcome, problem: str | None) -> bool:
    """Record a finished notebook and print its line; True when it failed."""
    outcome.status = "ok" if problem is None else "FAILED"
    if problem is not None:
        print(problem, end="", flush=True)
    print(f"[{time.strftime('%H:%M:%S')}] {'done' if problem is None else 'FAILED'} "
          f"{outcome.stem} in {outcome.seconds:.1f} s", flush=True)
    return problem is not None


def run_parallel(selected, outcomes, run, keep_going: bool, jobs: int, logs: Path) -> bool:
    """Up to ``jobs`` notebooks at once in spawned processes; the results-figures
    notebook after all others. True when one failed."""
    by_stem = dict(zip((nb.stem for nb in selected), outcomes))
    first = [nb for nb in selected if nb.stem != LAST]
    last = [nb for nb in selected if nb.stem == LAST]
    failed = False
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        waiting, running = list(first), {}
        while waiting or running:
            while waiting and len(running) < jobs and not (failed and not keep_going):
                nb = waiting.pop(0)
                print(f"[{time.strftime('%H:%M:%S')}] start {nb.stem} (output: {logs / (nb.stem + '.log')})",
                      flush=True)
                running[pool.submit(run, nb, logs / f"{nb.stem}.log")] = nb
            if not running:
                break
            done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                nb = running.pop(future)
                outcome = by_stem[nb.stem]
                outcome.seconds, problem = future.result()
                failed = finish(outcome, problem) or failed
    if last and (keep_going or not failed):
        failed = run_serial(last, [by_stem[nb.stem] for nb in last], run, keep_going) or failed
    return failed


def main(
    argv: list[str] | None = None,
    *,
    notebooks_dir: Path = paths.NOTEBOOKS,
    profiles_dir: Path | None = None,
    results_root: Path = paths.RESULTS,
    build_root: Path = BUILD_NOTEBOOKS,
) -> int:
    args = parse_args(argv)
    notebooks_dir = Path(notebooks_dir)
    profiles_dir = Path(profiles_dir) if profiles_dir else notebooks_dir / "profiles"
    notebooks = find_notebooks(notebooks_dir)
    if not notebooks:
        print(f"error: no numbered notebooks (NN_*.ipynb) in {notebooks_dir}", file=sys.stderr)
        return 2
    if args.list:
        full = load_overrides("full", profiles_dir) if (profiles_dir / "full.yml").is_file() else {}
        print(describe(notebooks, full))
        return 0

    selected = select(notebooks, args.only, args.start)
    overrides = load_overrides(args.profile, profiles_dir)
    problems = check_parameters(selected, args.profile, overrides)
    if problems:
        print("error: refusing to run, parameters do not match the notebooks:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 2

    kernel_problem = check_kernel(args.kernel)
    if kernel_problem:
        print(kernel_problem, file=sys.stderr)
        if kernel_problem.startswith("error"):
            return 2

    environment = {"KERAS_BACKEND": args.backend}
    if args.allow_dirty:
        environment[results.ALLOW_DIRTY_ENV] = "1"
    try:  # refuse a dirty full run before hours of computing, not at its first write
        with kernel_environment(**environment):
            results.require_clean_tree(args.profile, "results and models")
    except results.DirtyTreeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    build = Path(build_root) / args.profile
    print(f"profile {args.profile}, backend {args.backend}, kernel {args.kernel}, "
          f"{len(selected)} notebook(s) -> {build}", flush=True)
    outcomes = [Outcome(nb.stem) for nb in selected]
    run = functools.partial(_run_selected, build=build, profile=args.profile, overrides=overrides,
                            kernel=args.kernel, timeout=args.timeout)
    with kernel_environment(**environment):
        if args.jobs > 1 and len(selected) > 1:
            failed = run_parallel(selected, outcomes, run, args.keep_going, args.jobs, build)
        else:
            failed = run_serial(selected, outcomes, run, args.keep_going)
    for outcome in outcomes:
        if outcome.status != "skipped":
            outcome.headline = headline(outcome.stem, args.profile, results_root)

    print("\n" + summary(outcomes))
    if failed:
        first = next(o.stem for o in outcomes if o.status == "FAILED")
        print(f"\nFAILED; after fixing, resume with: python run_all.py --profile {args.profile} "
              f"--from {first[:2]}", file=sys.stderr)
        return 1
    return 0


def _run_selected(nb: Path, log: Path | None, *, build: Path, profile: str, overrides: dict,
                  kernel: str, timeout: float) -> tuple[float, str | None]:
    return run_one(nb, build / nb.name, parameters_for(nb, profile, overrides), kernel, timeout, log)


def show_cell_output() -> None:
    """Print the kernels' output (papermill ``log_output``) and which cell runs."""
    quiet = ("Input Notebook", "Output Notebook", "Working directory", "Ending Cell")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(lambda record: not str(record.msg).startswith(quiet))
    log = logging.getLogger("papermill")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


if __name__ == "__main__":
    show_cell_output()
    sys.exit(main())
