"""Structural rules of the repository: notebooks, pins, environment."""

from __future__ import annotations

import ast
import json
import re
import sys
import tomllib

import nbformat
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from skyml import paths

sys.path.insert(0, str(paths.ROOT))
import run_all  # noqa: E402

NOTEBOOKS = run_all.find_notebooks(paths.NOTEBOOKS)
#: notebooks/exercises/: run by nbval after the numbered notebooks, not by run_all.py or the site
EXERCISES = sorted((paths.NOTEBOOKS / "exercises").glob("*.ipynb"))
PYPROJECT = tomllib.loads((paths.ROOT / "pyproject.toml").read_text())


def parameters_cells(nb):
    return [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]


@pytest.fixture(params=NOTEBOOKS, ids=lambda p: p.stem)
def notebook(request):
    return request.param, nbformat.read(request.param, as_version=4)


def test_one_parameters_cell_with_quick_profile(notebook):
    path, nb = notebook
    cells = parameters_cells(nb)
    assert len(cells) == 1, f"{path.name}: {len(cells)} cells tagged 'parameters', expected 1"
    assigned = {
        target.id: node.value
        for node in ast.parse(cells[0].source).body if isinstance(node, ast.Assign)
        for target in node.targets if isinstance(target, ast.Name)
    }
    value = assigned.get("profile")
    assert isinstance(value, ast.Constant) and value.value == "quick", \
        f'{path.name}: the parameters cell must define profile = "quick"'


def test_kernelspec_is_skyml(notebook):
    # the kernel that `make venv` registers; run_all.py and nbval choose their kernel themselves
    path, nb = notebook
    assert nb.metadata.get("kernelspec") == {
        "name": "skyml", "display_name": "Python 3 (skyml)", "language": "python"}, path.name


def test_cells_have_ids(notebook):
    path, nb = notebook
    assert (nb.nbformat, nb.nbformat_minor) >= (4, 5), path.name
    # from the file itself: nbformat.read fills in missing ids (with a warning)
    ids = [c.get("id") for c in json.loads(path.read_text(encoding="utf-8"))["cells"]]
    assert all(ids) and len(set(ids)) == len(ids), f"{path.name}: missing or repeated cell ids"
    nbformat.validate(nb)


@pytest.mark.parametrize("path", EXERCISES, ids=lambda p: p.stem)
def test_exercise_notebooks_ids_kernelspec_and_no_outputs(path):
    nb = nbformat.read(path, as_version=4)
    assert (nb.nbformat, nb.nbformat_minor) >= (4, 5), path.name
    nbformat.validate(nb)
    ids = [c.get("id") for c in nb.cells]
    assert all(ids) and len(set(ids)) == len(ids), f"{path.name}: missing or repeated cell ids"
    assert nb.metadata.get("kernelspec") == {
        "name": "skyml", "display_name": "Python 3 (skyml)", "language": "python"}, path.name
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code), f"{path.name}: outputs not stripped"


def test_exercise_notebooks_are_not_numbered_notebooks():
    from skyml import publish, site

    assert EXERCISES, "notebooks/exercises/ holds no notebook"
    for found in (NOTEBOOKS, site.find_notebooks(paths.NOTEBOOKS),
                  [publish.find_source(p.stem[:2]) for p in NOTEBOOKS]):
        assert not set(found) & set(EXERCISES)


def test_learner_cell_first(notebook):
    path, nb = notebook
    if path.stem.startswith("09"):
        return
    text = nb.cells[1].source
    assert nb.cells[1].cell_type == "markdown" and text.startswith("## Before you start"), path.name
    assert "**You will learn to**" in text and "**Prerequisites:**" in text and "**Run time:**" in text, path.name


def test_outputs_stripped_or_published_from_a_clean_full_run(notebook):
    """A source notebook holds no outputs, or those of a clean full-profile run
    of exactly its present cells (``python -m skyml.publish``)."""
    from skyml import publish

    path, nb = notebook
    assert publish.check(nb) is None, f"{path.name}: {publish.check(nb)}"


def test_listed_in_driver_headlines(notebook):
    path, _ = notebook
    assert path.stem in run_all.HEADLINE, f"add {path.stem} to run_all.HEADLINE"


def test_full_profile_overrides_are_declared(notebook):
    path, _ = notebook
    full_yml = paths.NOTEBOOKS / "profiles" / "full.yml"
    overrides = run_all.load_overrides("full", full_yml.parent) if full_yml.is_file() else {}
    problems = [p for p in run_all.check_parameters([path], "full", overrides) if path.stem in p]
    assert not problems


def test_every_dependency_pinned_exactly():
    project = PYPROJECT["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    assert requirements
    loose = [r for r in requirements
             if [s.operator for s in Requirement(r).specifier] != ["=="]]
    assert not loose, f"not pinned with ==: {loose}"


def test_environment_yml_has_no_pins_of_its_own():
    env = yaml.safe_load((paths.ROOT / "environment.yml").read_text())
    conda, pip = [], []
    for dep in env["dependencies"]:
        (pip.extend(dep["pip"]) if isinstance(dep, dict) else conda.append(dep))
    for dep in conda:
        name = re.split(r"[=<>!~ ]", dep, maxsplit=1)[0]
        if name == "python":
            version = dep[len(name):].lstrip("=")
            assert SpecifierSet(PYPROJECT["project"]["requires-python"]).contains(version + ".0"), \
                f"environment.yml {dep} disagrees with requires-python"
        else:
            assert dep == name, f"environment.yml pins {dep}; pins belong in pyproject.toml"
    assert pip and all(re.fullmatch(r"-r requirements(-jax)?\.txt", p) for p in pip), \
        f"environment.yml pip section must only install a lock file (-r requirements.txt): {pip}"
    assert all((paths.ROOT / p.split()[1]).is_file() for p in pip)


def test_full_profile_names_known_notebooks():
    full_yml = paths.NOTEBOOKS / "profiles" / "full.yml"
    assert full_yml.is_file(), "the full profile overrides notebooks/profiles/full.yml are missing"
    assert not run_all.check_parameters([], "full", run_all.load_overrides("full", full_yml.parent))


# ---------------------------------------------------------------------------
# The repository stands alone: citations, licence, no internal references
# ---------------------------------------------------------------------------

#: Text that only makes sense inside the project that wrote this repository.
INTERNAL_REFERENCE = re.compile(r"shared/|ANCHORS|issue [0-9]|seed 00[0-9]")
STANDALONE_TEXT = ("notebooks", "lib", "docs", "README.md", "data/published.yml", "CITATION.cff",
                   "references.bib", "Makefile", "run_all.py", "pyproject.toml")
#: the CITATION.cff schema 1.2.0 of citation-file-format/citation-file-format (CC-BY-4.0), as
#: shipped by cffconvert 2.0.0, so that the check needs no network
CFF_SCHEMA = paths.ROOT / "tests" / "data" / "citation-file-format-1.2.0.schema.json"
PACKAGES_CITED = ("astropy", "gammapy", "healpy", "keras", "tensorflow", "photutils", "scikit-image",
                  "scikit-learn", "fermipy")


def standalone_files():
    for name in STANDALONE_TEXT:
        path = paths.ROOT / name
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in files:
            if "__pycache__" in file.parts or file.suffix in (".pyc", ".keras", ".fits", ".npz"):
                continue
            yield file


def test_no_references_to_the_project_behind_the_repository():
    found = []
    for file in standalone_files():
        try:
            text = file.read_text()
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if INTERNAL_REFERENCE.search(line):
                found.append(f"{file.relative_to(paths.ROOT)}:{number}: {line.strip()[:100]}")
    assert not found, "cite talks, papers and data/published.yml instead:\n" + "\n".join(found)


def parse_bib(text: str) -> dict[str, dict[str, str]]:
    """``{key: {field: value}}`` of a BibTeX file: ``@type{key, field = {..} or "..", ...}``
    entries with balanced braces; refuses anything else outside comments."""
    entries, i = {}, 0
    while True:
        at = text.find("@", i)
        if at < 0:
            stray = [line for line in text[i:].splitlines() if line.strip() and not line.lstrip().startswith("%")]
            assert not stray, f"text outside entries: {stray[:3]}"
            return entries
        between = [line for line in text[i:at].splitlines() if line.strip() and not line.lstrip().startswith("%")]
        assert not between, f"text outside entries: {between[:3]}"
        head = re.match(r"@(\w+)\s*\{\s*([^,\s]+)\s*,", text[at:])
        assert head, f"bad entry start: {text[at:at + 60]!r}"
        depth, j = 0, at + text[at:].index("{")
        for j in range(j, len(text)):
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            if depth == 0:
                break
        assert depth == 0, f"unbalanced braces in {head.group(2)}"
        body, fields, k = text[at + head.end():j], {}, 0
        while body[k:].strip():
            match = re.match(r"\s*(\w+)\s*=\s*", body[k:])
            assert match, f"{head.group(2)}: bad field near {body[k:k + 40]!r}"
            start = k + match.end()
            if body[start] == "{":
                depth = 0
                for end in range(start, len(body)):
                    depth += {"{": 1, "}": -1}.get(body[end], 0)
                    if depth == 0:
                        break
                value, k = body[start + 1:end], end + 1
            else:
                token = re.match(r'"[^"]*"|[\w.-]+', body[start:])
                assert token, f"{head.group(2)}: bad value near {body[start:start + 40]!r}"
                value, k = token.group(0).strip('"'), start + token.end()
            fields[match.group(1).lower()] = value
            comma = re.match(r"\s*,?", body[k:])
            k += comma.end()
        key = head.group(2)
        assert key not in entries, f"duplicate key {key}"
        assert fields.get("title"), f"{key}: no title"
        entries[key] = {"type": head.group(1).lower(), **fields}
        i = j + 1


def test_references_bib_parses_and_holds_every_cited_key():
    from skyml import published

    entries = parse_bib((paths.ROOT / "references.bib").read_text())
    missing = published.cite_keys() - set(entries)
    assert not missing, f"data/published.yml cites keys absent from references.bib: {sorted(missing)}"
    for package in PACKAGES_CITED:
        assert any(package in key.lower() for key in entries), f"references.bib does not cite {package}"
    for key, fields in entries.items():
        assert fields["type"] in ("article", "misc", "inproceedings"), key
        assert fields.get("year") or fields["type"] == "misc", f"{key}: no year"
    assert entries["todarello2023"]["eprint"] == "2306.15720"
    assert entries["perezromero2025"]["eprint"] == "2509.25128"


def test_bib_parser_refuses_broken_files():
    with pytest.raises(AssertionError, match="unbalanced"):
        parse_bib("@misc{a,\n title = {x}\n")
    with pytest.raises(AssertionError, match="duplicate"):
        parse_bib("@misc{a, title = {x}}\n@misc{a, title = {y}}\n")
    with pytest.raises(AssertionError, match="outside"):
        parse_bib("@misc{a, title = {x}}\nstray words\n")
    assert parse_bib('% c\n@article{k, title = {A {B} c}, year = 2020, note = "n"}\n') == {
        "k": {"type": "article", "title": "A {B} c", "year": "2020", "note": "n"}}


def test_citation_cff_is_valid_and_agrees_with_pyproject():
    import json

    import jsonschema

    cff = yaml.safe_load((paths.ROOT / "CITATION.cff").read_text())
    jsonschema.Draft7Validator(json.loads(CFF_SCHEMA.read_text())).validate(cff)
    assert cff["cff-version"] == "1.2.0"
    assert cff["version"] == PYPROJECT["project"]["version"]
    assert cff["license"] == PYPROJECT["project"]["license"]["text"]
    with pytest.raises(jsonschema.ValidationError):  # the check can fail
        jsonschema.Draft7Validator(json.loads(CFF_SCHEMA.read_text())).validate({**cff, "license": "BSD 3"})


def test_licence_file_matches_pyproject():
    assert PYPROJECT["project"]["license"]["text"] == "BSD-3-Clause"
    text = (paths.ROOT / "LICENSE").read_text()
    assert text.startswith("BSD 3-Clause License\n")
    assert "Neither the name of the copyright holder nor the names of its" in text
