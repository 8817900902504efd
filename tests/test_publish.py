"""Publishing a clean full-profile run's outputs into a source notebook."""

import json

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from skyml import publish


def _source():
    cells = [new_markdown_cell("# 01 A title", id="title"),
             new_markdown_cell("## Before you start\n\ntext", id="learner"),
             new_code_cell("profile = 'quick'\nn = 3", id="params"),
             new_code_cell("print(n)", id="run")]
    cells[2].metadata["tags"] = ["parameters"]
    return new_notebook(cells=cells)


def _executed(source, commit_params=None):
    nb = nbformat.from_dict(json.loads(nbformat.writes(source)))
    injected = new_code_cell("profile = 'full'\nn = 30", id="injected")
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(3, injected)
    nb.cells[4].outputs = [new_output("stream", name="stdout", text="30\n")]
    nb.cells[4].execution_count = 2
    nb.metadata["papermill"] = {"parameters": commit_params or {"profile": "full", "n": 30}}
    return nb


@pytest.fixture
def layout(tmp_path, monkeypatch):
    nbs, build, results = tmp_path / "notebooks", tmp_path / "build", tmp_path / "results"
    for d in (nbs, build, results / "full"):
        d.mkdir(parents=True)
    monkeypatch.setattr(publish.paths, "NOTEBOOKS", nbs)
    monkeypatch.setattr(publish.paths, "RESULTS", results)
    monkeypatch.setattr(publish.paths, "ROOT", tmp_path)
    source = _source()
    nbformat.write(source, nbs / "01_demo.ipynb")
    nbformat.write(_executed(source), build / "01_demo.ipynb")
    (results / "full" / "01_demo.json").write_text(json.dumps({"profile": "full", "git_commit": "abc1234"}))
    return nbs / "01_demo.ipynb", build, results


def test_publish_carries_outputs_keeps_quick_parameters_and_says_so(layout):
    source, build, _ = layout
    assert publish.main(["01", "--executed", str(build)]) == 0
    nb = nbformat.read(source, as_version=4)
    assert nb.cells[2].metadata["tags"] == [publish.BANNER_TAG] and "abc1234" in nb.cells[2].source
    assert "n = 30" in nb.cells[2].source.replace("`n = 30`", "n = 30")
    assert nb.cells[3].source == "profile = 'quick'\nn = 3" and not nb.cells[3].outputs
    assert nb.cells[4].outputs[0]["text"] == "30\n"
    assert not any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells)
    assert publish.check(nb) is None and publish.main(["--check"]) == 0


def test_an_edit_after_publishing_fails_the_check_and_strip_restores_the_source(layout):
    source, build, _ = layout
    publish.main(["01", "--executed", str(build)])
    nb = nbformat.read(source, as_version=4)
    nb.cells[4].source = "print(n + 1)"
    nbformat.write(nb, source)
    assert "changed after" in publish.check(nb)
    assert publish.main(["--check"]) == 1
    assert publish.main(["--strip", "01"]) == 0
    stripped = nbformat.read(source, as_version=4)
    assert publish.check(stripped) is None
    assert [c.source for c in stripped.cells] == [c.source for c in _source().cells[:3]] + ["print(n + 1)"]


@pytest.mark.parametrize("commit", ["abc1234-dirty", "", "unknown"])
def test_a_run_from_no_clean_commit_is_refused_and_nothing_written(layout, commit, capsys):
    source, build, results = layout
    (results / "full" / "01_demo.json").write_text(json.dumps({"profile": "full", "git_commit": commit}))
    before = source.read_bytes()
    assert publish.main(["01", "--executed", str(build)]) == 2
    assert source.read_bytes() == before
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_a_run_of_other_cells_or_profile_is_refused(layout):
    source, build, _ = layout
    nb = nbformat.read(source, as_version=4)
    nb.cells[3].source = "print(n * 2)"
    nbformat.write(nb, source)
    assert publish.main(["01", "--executed", str(build)]) == 2
    nbformat.write(_executed(_source(), {"profile": "quick"}), build / "01_demo.ipynb")
    nbformat.write(_source(), source)
    assert publish.main(["01", "--executed", str(build)]) == 2


def test_outputs_without_a_published_record_fail_the_check():
    nb = _source()
    nb.cells[3].outputs = [new_output("stream", name="stdout", text="3\n")]
    assert "no clean run" in publish.check(nb)


def test_the_site_shows_a_published_notebook_before_a_quick_run(layout, tmp_path):
    from skyml import site

    source, build, _ = layout
    executed = tmp_path / "executed"
    (executed / "quick").mkdir(parents=True)
    nbformat.write(_source(), executed / "quick" / source.name)
    assert site.choose_version(source, executed).kind == "quick"
    publish.main(["01", "--executed", str(build)])
    version = site.choose_version(source, executed)
    assert version.kind == "published" and version.path == source
    text, failed = site._summary(version, nbformat.read(source, as_version=4), tmp_path)
    assert "abc1234" in text and not failed


def test_a_navigation_cell_added_after_the_run_needs_no_new_run(layout):
    source, build, _ = layout
    nb = nbformat.read(source, as_version=4)
    link = new_markdown_cell("## Exercises\n\n[exercises](exercises/01_demo_exercises.ipynb)", id="nav")
    link.metadata["tags"] = ["navigation"]
    nb.cells.append(link)
    nbformat.write(nb, source)
    assert publish.main(["01", "--executed", str(build)]) == 0
    published = nbformat.read(source, as_version=4)
    assert published.cells[-1].source.startswith("## Exercises") and publish.check(published) is None
    assert published.cells[-2].outputs[0]["text"] == "30\n"
    published.cells[-1].source += " (edited)"
    assert publish.check(published) is None  # navigation text may change
    untagged = nbformat.read(source, as_version=4)
    untagged.cells[-1].metadata["tags"] = []
    assert "changed after" in publish.check(untagged)


def _quick_layout(layout):
    source, build, results = layout
    quick = build.parent / "quick"
    quick.mkdir()
    nb = _executed(_source(), {"profile": "quick"})
    nb.cells[3].source = "profile = 'quick'"
    nb.cells[4].outputs = [new_output("stream", name="stdout", text="3\n")]
    nbformat.write(nb, quick / "01_demo.ipynb")
    (results / "quick").mkdir()
    (results / "quick" / "01_demo.json").write_text(json.dumps({"profile": "quick", "git_commit": "def5678"}))
    return source, quick, results


def test_a_quick_run_is_published_as_such(layout):
    source, quick, results = _quick_layout(layout)
    assert publish.main(["--profile", "quick", "01", "--executed", str(quick)]) == 0
    nb = nbformat.read(source, as_version=4)
    assert "quick profile" in nb.cells[2].source and "def5678" in nb.cells[2].source
    assert "full profile**" not in nb.cells[2].source
    assert nb.metadata["skyml"]["published"]["profile"] == "quick" and publish.published_profile(nb) == "quick"
    assert nb.cells[4].outputs[0]["text"] == "3\n"
    assert publish.check(nb) is None and publish.main(["--check"]) == 0


def test_a_quick_run_never_replaces_a_full_one_and_a_full_one_replaces_a_quick_one(layout, capsys):
    source, quick, results = _quick_layout(layout)
    _, build, _ = layout
    assert publish.main(["01", "--executed", str(build)]) == 0
    before = source.read_bytes()
    assert publish.main(["--profile", "quick", "01", "--executed", str(quick)]) == 2
    assert "full-profile run" in capsys.readouterr().err and source.read_bytes() == before
    assert publish.main(["--strip", "01"]) == 0
    assert publish.main(["--profile", "quick", "01", "--executed", str(quick)]) == 0
    assert publish.main(["01", "--executed", str(build)]) == 0
    assert publish.published_profile(nbformat.read(source, as_version=4)) == "full"


def test_a_quick_publication_needs_a_clean_quick_run(layout):
    source, quick, results = _quick_layout(layout)
    (results / "quick" / "01_demo.json").write_text(json.dumps({"profile": "quick", "git_commit": "def5678-dirty"}))
    assert publish.main(["--profile", "quick", "01", "--executed", str(quick)]) == 2
    (results / "quick" / "01_demo.json").write_text(json.dumps({"profile": "full", "git_commit": "def5678"}))
    assert publish.main(["--profile", "quick", "01", "--executed", str(quick)]) == 2
    _, build, _ = layout  # a full-profile run is not a quick one
    (results / "quick" / "01_demo.json").write_text(json.dumps({"profile": "quick", "git_commit": "def5678"}))
    assert publish.main(["--profile", "quick", "01", "--executed", str(build)]) == 2
    assert publish.published_profile(nbformat.read(source, as_version=4)) is None


def test_the_site_prefers_a_reader_s_own_quick_run_to_a_published_quick_one(layout, tmp_path):
    from skyml import site

    source, quick, _ = _quick_layout(layout)
    publish.main(["--profile", "quick", "01", "--executed", str(quick)])
    executed = tmp_path / "executed"
    executed.mkdir()
    version = site.choose_version(source, executed)
    assert version.kind == "published" and version.profile == "quick" and "quick profile" in version.label
    text, _ = site._summary(version, nbformat.read(source, as_version=4), tmp_path)
    assert "quick-profile run" in text and "def5678" in text
    (executed / "quick").mkdir()
    nbformat.write(_source(), executed / "quick" / source.name)
    assert site.choose_version(source, executed).kind == "quick"


def _published(layout):
    source, build, _ = layout
    assert publish.main(["01", "--executed", str(build)]) == 0
    return source, nbformat.read(source, as_version=4)


def test_a_new_quick_value_of_a_parameter_the_full_run_overrode_keeps_the_outputs(layout):
    source, nb = _published(layout)
    assert nb.metadata["skyml"]["published"]["parameters_source"] == "profile = 'quick'\nn = 3"
    nb.cells[3].source = "profile = 'quick'\nn = 2  # fewer for the quick profile"
    assert publish.check(nb) is None


@pytest.mark.parametrize("params, why", [
    ("profile = 'quick'\nn = 3\nm = 1", "changed its names"),  # a new parameter: the run never saw it
    ("profile = 'quick'\nm = 3", "changed its names"),
    ("profile = 'quick'\nn = f(3)\nimport os", "changed its names"),  # not plain assignments
])
def test_other_edits_of_the_parameters_cell_fail_the_check(layout, params, why):
    _, nb = _published(layout)
    nb.cells[3].source = params
    assert why in publish.check(nb)


def test_a_new_value_of_a_parameter_the_run_took_from_the_cell_fails_the_check(tmp_path, monkeypatch, layout):
    source, build, results = layout
    nbformat.write(_executed(_source(), commit_params={"profile": "full"}), build / "01_demo.ipynb")
    _, nb = _published(layout)
    nb.cells[3].source = "profile = 'quick'\nn = 4"
    assert "changed n, whose value the published run used" in publish.check(nb)
    nb.cells[3].source = "profile = 'quick'\nn = 3"  # back as it was: fine
    assert publish.check(nb) is None


def test_a_value_change_with_another_cell_changed_fails_the_check(layout):
    _, nb = _published(layout)
    nb.cells[3].source = "profile = 'quick'\nn = 2"
    nb.cells[4].source = "print(n + 1)"
    assert "changed after" in publish.check(nb)


def test_record_parameters_adds_the_cell_to_an_older_record_only_where_outputs_stand(layout, capsys):
    source, nb = _published(layout)
    del nb.metadata["skyml"]["published"]["parameters_source"]
    nbformat.write(nb, source)
    nb.cells[3].source = "profile = 'quick'\nn = 2"
    assert "changed after" in publish.check(nb)  # without the record, any edit needs a new run
    assert publish.main(["--record-parameters", "01"]) == 0
    kept = nbformat.read(source, as_version=4)
    assert kept.metadata["skyml"]["published"]["parameters_source"] == "profile = 'quick'\nn = 3"
    kept.cells[3].source = "profile = 'quick'\nn = 2"
    assert publish.check(kept) is None
    kept.cells[4].source = "print(n + 1)"
    nbformat.write(kept, source)
    before = source.read_bytes()
    assert publish.main(["--record-parameters", "01"]) == 2  # outputs that do not stand are not re-recorded
    assert source.read_bytes() == before and "changed after" in capsys.readouterr().err


def test_published_outputs_show_no_machine_paths(layout):
    source, build, _ = layout
    run = nbformat.read(build / "01_demo.ipynb", as_version=4)
    root = "/home/someone/clones/skyml"
    run.cells[4].outputs = [
        new_output("stream", name="stdout", text=f"python 3.11.7 (/opt/envs/sky/.venv/bin/python)\n"
                                                  f"profile: full   repository: {root}   fan-outs: in-process\n"
                                                  f"written: {root}/data/results/full/01_demo.json\n"
                                                  "rate 3.2 counts/s, see https://example.org/a/b and 10/20\n"),
        new_output("stream", name="stderr",
                   text="/usr/lib/python3/site-packages/keras/src/x.py:12: UserWarning: w\n"),
        new_output("execute_result", data={"text/plain": "'/tmp/abc/def.fits'"}, execution_count=2)]
    nbformat.write(run, build / "01_demo.ipynb")
    assert publish.main(["01", "--executed", str(build)]) == 0
    nb = nbformat.read(source, as_version=4)
    out = nb.cells[4].outputs
    assert out[0]["text"] == ("python 3.11.7 (.venv/bin/python)\nprofile: full   repository: .   fan-outs: in-process\n"
                              "written: data/results/full/01_demo.json\n"
                              "rate 3.2 counts/s, see https://example.org/a/b and 10/20\n")
    assert out[1]["text"].startswith("site-packages/keras/src/x.py:12:")
    assert out[2]["data"]["text/plain"] == "'…/def.fits'"
    assert publish.machine_paths(nb) == [] and publish.check(nb) is None


def test_a_published_notebook_showing_a_machine_path_fails_the_check(layout):
    source, build, _ = layout
    assert publish.main(["01", "--executed", str(build)]) == 0
    nb = nbformat.read(source, as_version=4)
    nb.cells[4].outputs[0]["text"] = "saved /Users/someone/sky/figures/a.png\n"
    assert "machine paths (/Users/someone/sky/figures/a.png" in publish.check(nb)
