"""A static HTML site of the executed notebooks, the results and the figures.

    python -m skyml.site                    # -> build/site/index.html
    python -m skyml.site --out /tmp/site

Pages, all offline (no script, style sheet, font or image from the network;
images are embedded or copied next to the pages):

* ``index.html``: the numbered notebooks ``notebooks/NN_*.ipynb`` in order,
  each with the title of its first markdown heading and the version shown;
* ``notebooks/<stem>.html``: each notebook rendered by nbconvert's
  ``HTMLExporter`` (JupyterLab template without require.js, MathJax, Mermaid
  or the widget manager, which load from CDNs). The executed copy of the full
  profile ``build/notebooks/full/<stem>.ipynb`` is shown when present, else
  the quick profile's ``build/notebooks/quick/<stem>.ipynb``, else the source
  notebook (no outputs); a banner on the page says which. Progress-bar
  widgets are drawn from their saved state;
* ``results.html``: ``docs/results.md`` (written by ``python -m skyml.report``);
* ``figures.html``: ``figures/*.png`` (full profile), or ``figures/quick/*.png``
  when there are no full-profile figures, copied to ``figures/``;
* ``notebooks/exercises/*.ipynb``: the exercise notebooks, copied as they are
  (not rendered), so that the links at the end of the notebooks that have
  exercises resolve.

The site is built in a temporary folder next to ``--out`` and moved into place
at the end, so a failed build leaves no partial site. ``--out`` may be a new
folder, an empty one, or a site written before by this command (marked by a
``.skyml-site`` file), which is replaced.
"""

from __future__ import annotations

import argparse
import copy
import html
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path

from . import paths

NOTEBOOK_NAME = re.compile(r"^\d\d_\w+\.ipynb$")
MARKER = ".skyml-site"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
PROG = "python -m skyml.site"


class SiteError(Exception):
    """Bad input or output location; the message is one line for the user."""


# --------------------------------------------------------------------------- inputs


@dataclass
class Version:
    """The copy of one numbered notebook that the site shows."""

    stem: str
    path: Path
    kind: str  # "full", "published", "quick" or "source"
    profile: str = "full"  # of a published notebook: the profile of the run it carries

    @property
    def label(self) -> str:
        return {"full": "executed, full profile",
                "published": f"{self.profile} profile, as published in the repository",
                "quick": "executed, quick profile", "source": "source notebook, not executed"}[self.kind]


def find_notebooks(notebooks_dir: Path) -> list[Path]:
    """The numbered notebooks ``NN_*.ipynb`` in the order of the talks (by number)."""
    return sorted(p for p in Path(notebooks_dir).glob("*.ipynb") if NOTEBOOK_NAME.match(p.name))


def choose_version(source: Path, executed_dir: Path) -> Version:
    """``<executed_dir>/full/<stem>.ipynb``, else the source notebook when it
    holds a published full-profile run (``python -m skyml.publish``), else
    ``.../quick/<stem>.ipynb``, else the source notebook with a published
    quick-profile run, else ``source``."""
    import nbformat

    from .publish import published_profile

    candidate = Path(executed_dir) / "full" / source.name
    if candidate.is_file():
        return Version(source.stem, candidate, "full")
    profile = published_profile(nbformat.read(str(source), as_version=4))
    if profile == "full":
        return Version(source.stem, Path(source), "published")
    candidate = Path(executed_dir) / "quick" / source.name
    if candidate.is_file():
        return Version(source.stem, candidate, "quick")
    if profile is not None:
        return Version(source.stem, Path(source), "published", profile)
    return Version(source.stem, Path(source), "source")


def choose_figures(figures_dir: Path) -> tuple[list[Path], str | None]:
    """Full-profile figures ``figures/*.png``, else the quick ones ``figures/quick/*.png``."""
    full = sorted(p for p in Path(figures_dir).glob("*.png") if p.is_file())
    if full:
        return full, "full"
    quick = sorted(p for p in (Path(figures_dir) / "quick").glob("*.png") if p.is_file())
    return (quick, "quick") if quick else ([], None)


def first_heading(nb) -> str | None:
    """Text of the first markdown heading (ATX ``#`` or setext) of a notebook."""
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        lines = cell.source.splitlines()
        for i, line in enumerate(lines):
            match = re.match(r"^ {0,3}#{1,6}\s+(.*?)(?:\s+#+)?\s*$", line)
            if match and match.group(1):
                return match.group(1)
            if i + 1 < len(lines) and line.strip() and re.match(r"^ {0,3}(=+|-+)\s*$", lines[i + 1]):
                return line.strip()
    return None


def _markdown():
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark").enable(["table", "strikethrough"])


def _strip_tags(text: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", text))


def _display(path: Path, root: Path) -> str:
    """``path`` relative to the repository root when it lies inside it."""
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- widgets


def _widget_html(model_id: str | None, state: dict, depth: int = 0) -> str | None:
    """Static HTML of a saved widget (boxes, HTML/label text, progress bars), or
    ``None`` when its state is missing or of another kind."""
    model = state.get(model_id) if model_id else None
    if model is None or depth > 20:
        return None
    name, values = model.get("model_name"), model.get("state", {})
    if name in ("HBoxModel", "VBoxModel", "BoxModel"):
        parts = []
        for child in values.get("children", []):
            child_id = child[len("IPY_MODEL_"):] if str(child).startswith("IPY_MODEL_") else None
            part = _widget_html(child_id, state, depth + 1)
            if part is None:
                return None
            parts.append(part)
        kind = "hbox" if name == "HBoxModel" else "vbox"
        return f'<div class="skyml-widget skyml-{kind}">{"".join(parts)}</div>'
    if name in ("HTMLModel", "HTMLMathModel"):
        return f"<span>{values.get('value', '')}</span>"
    if name == "LabelModel":
        return f"<span>{html.escape(str(values.get('value', '')))}</span>"
    if name in ("FloatProgressModel", "IntProgressModel"):
        try:
            value, top = float(values.get("value", 0)), float(values.get("max", 100))
        except (TypeError, ValueError):
            return None
        return f'<progress value="{value:g}" max="{top:g}"></progress>'
    return None


def render_widgets(nb):
    """A copy of ``nb`` whose widget outputs are static HTML drawn from the
    widget state saved in the notebook (their text fallback when that state is
    missing), without the widget metadata that would load the widget manager."""
    nb = copy.deepcopy(nb)
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    for cell in nb.cells:
        outputs = []
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if WIDGET_VIEW in data:
                drawn = _widget_html(data[WIDGET_VIEW].get("model_id"), state)
                if drawn is not None:
                    output["data"] = {"text/html": drawn}
                elif "text/plain" in data:
                    output["data"] = {"text/plain": data["text/plain"]}
                else:
                    continue
            outputs.append(output)
        if "outputs" in cell:
            cell.outputs = outputs
    nb.metadata.pop("widgets", None)
    return nb


# --------------------------------------------------------------------------- offline check


class _ExternalFinder(HTMLParser):
    """Collects what a browser would fetch from the network when it opens a page."""

    FETCHING = {"src", "srcset", "poster", "data", "background", "manifest", "imagesrcset"}
    CSS_URL = re.compile(r"""(?:url\(\s*['"]?|@import\s+['"])\s*((?:https?:)?//[^'")\s]+)""", re.I)
    JS_IMPORT = re.compile(r"""(?:\bimport\b[^'"]*?|\bimport\s*\(\s*|\bfetch\s*\(\s*)['"]((?:https?:)?//[^'"]+)""")

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []
        self._in: str | None = None

    @staticmethod
    def _remote(url: str) -> bool:
        return bool(re.match(r"^\s*(https?:)?//", url or "", re.I))

    def _css(self, text: str) -> None:
        self.found += self.CSS_URL.findall(re.sub(r"/\*.*?\*/", "", text, flags=re.S))

    def handle_starttag(self, tag, attrs):
        attrs = {k.lower(): v or "" for k, v in attrs}
        for key in self.FETCHING & attrs.keys():
            urls = [u.strip().split(" ")[0] for u in attrs[key].split(",")] if "srcset" in key else [attrs[key]]
            self.found += [f"<{tag} {key}={u}>" for u in urls if self._remote(u)]
        if tag == "link" and self._remote(attrs.get("href", "")):
            self.found.append(f"<link href={attrs['href']}>")
        if tag == "meta" and attrs.get("http-equiv", "").lower() == "refresh" and "http" in attrs.get("content", ""):
            self.found.append(f"<meta refresh {attrs['content']}>")
        if "style" in attrs:
            self._css(attrs["style"])
        self._in = tag if tag in ("style", "script") else None

    def handle_endtag(self, tag):
        self._in = None

    def handle_data(self, data):
        if self._in == "style":
            self._css(data)
        elif self._in == "script":
            self.found += self.JS_IMPORT.findall(re.sub(r"/\*.*?\*/", "", data, flags=re.S))


def external_references(page: str) -> list[str]:
    """Network resources (``http(s)://`` or ``//``) that opening ``page`` would
    load: scripts, style sheets, images, CSS ``url()``/``@import``, JS imports.
    Plain links (``<a href>``) are not fetched and not listed."""
    finder = _ExternalFinder()
    finder.feed(page)
    finder.close()
    return finder.found


# --------------------------------------------------------------------------- pages

NAV_CSS = """
nav.skyml-nav { background: #24313f; color: #fff; padding: 0.5rem 2rem; font-size: 0.95rem; line-height: 1.5;
                font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
                display: flex; flex-wrap: wrap; gap: 0.4rem 1.4rem; align-items: baseline; }
nav.skyml-nav a { color: #fff; text-decoration: none; }
nav.skyml-nav a:hover { text-decoration: underline; }
nav.skyml-nav .skyml-home { font-weight: 600; }
nav.skyml-nav .skyml-step { margin-left: auto; display: flex; flex-wrap: wrap; gap: 0.4rem 1.2rem; }
.skyml-banner { background: #eef4fb; border-left: 4px solid #3d7cc9; padding: 0.6rem 2rem; margin-bottom: 1rem;
                font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
                font-size: 0.92rem; line-height: 1.5; }
.skyml-banner.skyml-source { background: #fff6e0; border-left-color: #d59b1c; }
.skyml-banner.skyml-failed { background: #fdecec; border-left-color: #c0392b; }
.skyml-widget { display: flex; gap: 0.6rem; align-items: center; font-family: monospace; font-size: 0.85rem; }
.skyml-widget.skyml-vbox { flex-direction: column; align-items: flex-start; }
"""

PAGE_CSS = NAV_CSS + """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       margin: 0; color: #1b1f24; background: #fff; line-height: 1.5; }
main.skyml-page { max-width: 80rem; margin: 0 auto; padding: 1rem 2rem 3rem; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #d0d7de; padding: 0.3rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f3f5f7; }
.skyml-scroll { overflow-x: auto; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.9em;
       background: #f3f5f7; padding: 0 0.2em; border-radius: 3px; }
.skyml-muted { color: #57606a; font-size: 0.9rem; }
.skyml-gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(22rem, 1fr)); gap: 1.5rem; }
.skyml-gallery figure { margin: 0; border: 1px solid #d0d7de; border-radius: 6px; padding: 0.6rem; }
.skyml-gallery img { width: 100%; height: auto; display: block; }
.skyml-gallery figcaption { font-size: 0.85rem; margin-top: 0.4rem; }
"""


def _nav(prefix: str, step: str = "") -> str:
    return (f'<nav class="skyml-nav"><a class="skyml-home" href="{prefix}index.html">skyml notebooks</a>'
            f'<a href="{prefix}results.html">Results</a><a href="{prefix}figures.html">Figures</a>{step}</nav>')


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1.0">\n'
            f"<title>{html.escape(title)}</title>\n<style>{PAGE_CSS}</style>\n</head>\n<body>\n"
            f'{_nav("")}\n<main class="skyml-page">\n{body}\n</main>\n</body>\n</html>\n')


def _papermill(nb) -> tuple[str, bool]:
    """``(", run ... in ...; parameters ...", failed)`` from papermill's metadata."""
    meta = nb.metadata.get("papermill", {})
    text = ""
    if meta.get("end_time"):
        try:
            end = datetime.fromisoformat(str(meta["end_time"]))
            text += f", run {end:%Y-%m-%d %H:%M} {end.tzname() or ''}".rstrip()
        except ValueError:
            text += f", run {html.escape(str(meta['end_time']))}"
    if isinstance(meta.get("duration"), (int, float)):
        minutes, seconds = divmod(round(meta["duration"]), 60)
        text += f" in {minutes} min {seconds} s" if minutes else f" in {seconds} s"
    if meta.get("parameters"):
        text += "; parameters " + ", ".join(
            f"<code>{html.escape(str(k))}={html.escape(repr(v))}</code>" for k, v in meta["parameters"].items())
    return text, bool(meta.get("exception"))


@dataclass
class Entry:
    version: Version
    title: str  # inline HTML
    summary: str  # HTML: what the page shows
    failed: bool

    @property
    def href(self) -> str:
        return f"notebooks/{self.version.stem}.html"

    @property
    def title_text(self) -> str:
        return _strip_tags(self.title)


NOTEBOOK_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block extra_css -%}<style type="text/css">{{ resources.skyml_css }}</style>{%- endblock extra_css -%}
{%- block body_header -%}{{ super() }}{{ resources.skyml_header }}{%- endblock body_header -%}
"""


def _exporter():
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab", theme="light", embed_images=True)
    exporter.raw_template = NOTEBOOK_TEMPLATE
    return exporter


def render_notebook(exporter, nb, entry: Entry, previous: Entry | None, following: Entry | None) -> str:
    step = ""
    if previous or following:
        step = '<span class="skyml-step">'
        if previous:
            step += (f'<a href="{previous.version.stem}.html" title="{html.escape(previous.title_text)}">'
                     f"← previous: {html.escape(previous.version.stem[:2])}</a>")
        if following:
            step += (f'<a href="{following.version.stem}.html" title="{html.escape(following.title_text)}">'
                     f"next: {html.escape(following.version.stem[:2])} →</a>")
        step += "</span>"
    kind = "skyml-failed" if entry.failed else ("skyml-source" if entry.version.kind == "source" else "")
    header = f'{_nav("../", step)}\n<div class="skyml-banner {kind}">This page shows {entry.summary}</div>'
    resources = {"metadata": {"name": entry.title_text, "path": str(entry.version.path.parent)},
                 "skyml_css": NAV_CSS, "skyml_header": header}
    body, _ = exporter.from_notebook_node(render_widgets(nb), resources=resources)
    return body


def _summary(version: Version, nb, root: Path) -> tuple[str, bool]:
    where = f"<code>{html.escape(_display(version.path, root))}</code>"
    if version.kind == "source":
        return (f"the <strong>source notebook</strong> {where}, <strong>not executed</strong>: "
                f"<code>make reproduce</code> (quick profile) or <code>make full</code> adds its outputs.", False)
    if version.kind == "published":
        commit = nb.metadata["skyml"]["published"].get("commit", "?")
        return (f"the notebook {where} with the outputs of its <strong>{version.profile}-profile run on commit "
                f"<code>{html.escape(str(commit))}</code></strong>, as published in the repository.", False)
    run, failed = _papermill(nb)
    text = f"the notebook <strong>executed with the {version.kind} profile</strong>, {where}{run}."
    if failed:
        text += " <strong>Its execution stopped with an error</strong> (see the last executed cell)."
    return text, failed


def index_page(entries: list[Entry], figures_kind: str | None, n_figures: int, commit: str) -> str:
    rows = "\n".join(
        f'<tr><td><a href="{e.href}">{e.title}</a></td><td>{html.escape(e.version.label)}'
        f'{" — <strong>execution failed</strong>" if e.failed else ""}</td></tr>' for e in entries)
    figures = (f"{n_figures} figures of the {figures_kind} profile" if figures_kind else "no figures yet")
    return _page("skyml notebooks", f"""<h1>skyml: the notebooks</h1>
<p>The numbered notebooks in the order of the talks, each as executed by <code>make full</code> (full profile)
when that copy exists, else by <code>make reproduce</code> (quick profile), else as the source notebook
without outputs. Each page says which.</p>
<div class="skyml-scroll"><table class="skyml-index">
<thead><tr><th>Notebook</th><th>Shows</th></tr></thead>
<tbody>
{rows}
</tbody></table></div>
<ul>
<li><a href="results.html">Results</a>: every metric of both profiles with the published numbers (<code>docs/results.md</code>).</li>
<li><a href="figures.html">Figures</a>: {figures}.</li>
</ul>
<p class="skyml-muted">Built by <code>{PROG}</code> from commit <code>{html.escape(commit)}</code>.</p>""")


def results_page(markdown_text: str, source: str) -> str:
    body = _markdown().render(markdown_text)
    body = body.replace("<table>", '<div class="skyml-scroll"><table>').replace("</table>", "</table></div>")
    return _page("skyml results", f'{body}\n<p class="skyml-muted">Rendered from <code>{html.escape(source)}</code>.</p>')


def figures_page(names: list[str], kind: str | None, source: str) -> str:
    if not names:
        return _page("skyml figures", "<h1>Figures</h1>\n<p>No figures yet: <code>make reproduce</code> draws "
                     "the quick-profile figures into <code>figures/quick/</code>, <code>make full</code> the "
                     "paper's into <code>figures/</code>.</p>")
    items = "\n".join(
        f'<figure id="{html.escape(Path(n).stem)}"><a href="figures/{html.escape(n)}">'
        f'<img src="figures/{html.escape(n)}" alt="{html.escape(Path(n).stem)}"></a>'
        f"<figcaption><code>{html.escape(n)}</code></figcaption></figure>" for n in names)
    note = "" if kind == "full" else " The full profile has drawn no figures yet, so these are the quick profile's."
    return _page("skyml figures", f"""<h1>Figures</h1>
<p>{len(names)} figures of the <strong>{kind} profile</strong>, from <code>{html.escape(source)}</code>
(a PDF of each lies next to it).{note}</p>
<div class="skyml-gallery">
{items}
</div>""")


# --------------------------------------------------------------------------- build


def check_out(out: Path, inputs: list[Path]) -> Path:
    """The output folder, after checking that it may be (re)written; raises :class:`SiteError`."""
    out = Path(out)
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise SiteError(f"{out} exists and is not a folder")
    resolved = out.resolve()
    for item in inputs:
        item = Path(item).resolve()
        if resolved == item or resolved in item.parents or item in resolved.parents:
            raise SiteError(f"{out} would overwrite or lie inside the input {item}")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise SiteError(f"{out} is not empty and holds no site built by {PROG}; choose another --out")
    return out


def build_site(out: Path = paths.BUILD / "site", *, notebooks_dir: Path = paths.NOTEBOOKS,
               executed_dir: Path = paths.BUILD / "notebooks", figures_dir: Path = paths.FIGURES,
               results_md: Path = paths.ROOT / "docs" / "results.md", root: Path = paths.ROOT) -> Path:
    """Write the site to ``out`` (replacing a site built before) and return ``out``."""
    import nbformat

    notebooks = find_notebooks(notebooks_dir)
    if not notebooks:
        raise SiteError(f"no numbered notebooks NN_*.ipynb in {notebooks_dir}")
    if not Path(results_md).is_file():
        raise SiteError(f"{results_md} not found; write it with: python -m skyml.report")
    out = check_out(out, [notebooks_dir, executed_dir, figures_dir, results_md])

    loaded, entries = [], []
    for source in notebooks:
        version = choose_version(source, executed_dir)
        try:
            nb = nbformat.read(version.path, as_version=4)
        except Exception as error:  # nbformat raises several kinds for unreadable JSON
            raise SiteError(f"cannot read {version.path}: {str(error).splitlines()[0]}") from None
        heading = first_heading(nb) or version.stem
        summary, failed = _summary(version, nb, root)
        loaded.append(nb)
        entries.append(Entry(version, _markdown().renderInline(heading), summary, failed))

    figures, figures_kind = choose_figures(figures_dir)
    from .results import git_commit

    pages: dict[str, str] = {
        "index.html": index_page(entries, figures_kind, len(figures), git_commit(root)),
        "results.html": results_page(Path(results_md).read_text(encoding="utf-8"), _display(results_md, root)),
        "figures.html": figures_page([p.name for p in figures], figures_kind,
                                     _display(figures[0].parent, root) + "/" if figures else ""),
    }
    exporter = _exporter()
    for i, (entry, nb) in enumerate(zip(entries, loaded)):
        previous = entries[i - 1] if i else None
        following = entries[i + 1] if i + 1 < len(entries) else None
        pages[entry.href] = render_notebook(exporter, nb, entry, previous, following)

    for name, text in pages.items():
        remote = external_references(text)
        if remote:
            raise SiteError(f"{name} would load {len(remote)} network resource(s), e.g. {remote[0]}")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    old = None
    try:
        tmp.chmod(0o755)
        (tmp / "notebooks").mkdir()
        (tmp / "figures").mkdir()
        for name, text in pages.items():
            (tmp / name).write_text(text, encoding="utf-8")
        for figure in figures:
            shutil.copyfile(figure, tmp / "figures" / figure.name)
        exercises = sorted(p for p in (Path(notebooks_dir) / "exercises").glob("*.ipynb") if p.is_file())
        if exercises:
            (tmp / "notebooks" / "exercises").mkdir()
            for exercise in exercises:
                shutil.copyfile(exercise, tmp / "notebooks" / "exercises" / exercise.name)
        (tmp / MARKER).write_text(f"built by {PROG}; the whole folder is replaced by the next build\n")
        if out.exists():
            old = out.rename(tmp.with_name(tmp.name + ".old"))
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not out.exists():
            old.rename(out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return out


def main(argv: list[str] | None = None, **inputs) -> int:
    """Command line; ``inputs`` are passed on to :func:`build_site` (tests)."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=paths.BUILD / "site",
                        help="output folder (default: build/site); a site built before there is replaced")
    args = parser.parse_args(argv)
    try:
        out = build_site(args.out, **inputs)
    except SiteError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    print(f"site written: {out / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
