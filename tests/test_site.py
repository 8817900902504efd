"""The static site of the notebooks (skyml.site): pages, order, links, offline
rendering, and (slow) every page opened in headless Chromium."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import struct
import subprocess
import time
import zlib
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from skyml import paths, site



def tiny_png(width: int = 4, height: int = 3) -> bytes:
    """A valid red RGB PNG."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


PNG = base64.b64encode(tiny_png()).decode()


class Links(HTMLParser):
    """``<a href>`` and ``<img src>`` of a page."""

    def __init__(self):
        super().__init__()
        self.hrefs, self.images = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a" and attrs.get("href"):
            self.hrefs.append(attrs["href"])
        if tag == "img":
            self.images.append(attrs.get("src", ""))


def links(page: Path) -> Links:
    parser = Links()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def local_target(page: Path, url: str) -> Path | None:
    """The file a relative link of ``page`` points to; None for other schemes and fragments."""
    parts = urlsplit(url)
    if parts.scheme or parts.netloc or not parts.path:
        return None
    return page.parent / unquote(parts.path)


def notebook(title: str, *, executed: bool = False, widget: bool = False, failed: bool = False):
    nb = new_notebook(cells=[
        new_markdown_cell("Some text before the heading.\n\n" + f"# {title}\n\nIntro."),
        new_code_cell("1 + 1"),
        new_markdown_cell("## Second heading"),
    ])
    if executed:
        nb.cells[1].outputs = [new_output("display_data", data={"image/png": PNG, "text/plain": "<Figure>"})]
        nb.metadata["papermill"] = {"end_time": "2026-01-02T03:04:05+00:00", "duration": 125.0,
                                    "parameters": {"profile": "quick"}, "exception": failed}
    if widget:
        view = {"model_id": "box", "version_major": 2, "version_minor": 0}
        nb.cells[1].outputs.append(new_output("display_data", data={
            "application/vnd.jupyter.widget-view+json": view, "text/plain": "work:   0%|  | 0/7"}))
        nb.cells[1].outputs.append(new_output("display_data", data={
            "application/vnd.jupyter.widget-view+json": {**view, "model_id": "lost"}, "text/plain": "lost bar"}))
        nb.metadata["widgets"] = {site.WIDGET_STATE: {"version_major": 2, "version_minor": 0, "state": {
            "box": {"model_name": "HBoxModel", "state": {"children": ["IPY_MODEL_d", "IPY_MODEL_p", "IPY_MODEL_t"]}},
            "d": {"model_name": "HTMLModel", "state": {"value": "work: 100%"}},
            "p": {"model_name": "FloatProgressModel", "state": {"value": 7.0, "max": 7.0}},
            "t": {"model_name": "HTMLModel", "state": {"value": "7/7 [00:01&lt;00:00]"}},
        }}}
    return nb


@pytest.fixture
def repo(tmp_path):
    """Fake inputs: 03 source only, 01 quick, 02 quick and full (full shown),
    10 full with a failed execution; a scratch notebook that is not numbered."""
    root = tmp_path / "repo"
    nbs, executed, figures = root / "notebooks", root / "build" / "notebooks", root / "figures"
    for folder in (nbs, executed / "quick", executed / "full", figures / "quick"):
        folder.mkdir(parents=True)
    titles = {"01_alpha": "01 — Alpha *maps*", "02_beta": "02 — Beta", "03_gamma": "03 — Gamma",
              "10_delta": "10 — Delta"}
    for stem, title in titles.items():
        nbformat.write(notebook(title), nbs / f"{stem}.ipynb")
    nbformat.write(notebook("Scratch"), nbs / "scratch.ipynb")
    nbformat.write(notebook("01 — Alpha *maps*", executed=True, widget=True), executed / "quick" / "01_alpha.ipynb")
    nbformat.write(notebook("02 — Beta (quick)", executed=True), executed / "quick" / "02_beta.ipynb")
    nbformat.write(notebook("02 — Beta", executed=True), executed / "full" / "02_beta.ipynb")
    nbformat.write(notebook("10 — Delta", executed=True, failed=True), executed / "full" / "10_delta.ipynb")
    png = base64.b64decode(PNG)
    for name in ("b_fig.png", "a_fig.png"):
        (figures / name).write_bytes(png)
    (figures / "quick" / "q_fig.png").write_bytes(png)
    results = root / "docs" / "results.md"
    results.parent.mkdir()
    results.write_text("# Results: every metric\n\n| Metric | Value |\n|---|---|\n"
                       "| purity, \\|b\\|>20° | 0.794 |\n| recall | 0.9 |\n")
    return dict(notebooks_dir=nbs, executed_dir=executed, figures_dir=figures, results_md=results, root=root)


def test_exercise_notebooks_are_copied_where_the_notebooks_link_them(repo, tmp_path):
    exercises = repo["notebooks_dir"] / "exercises"
    exercises.mkdir()
    nbformat.write(notebook("Exercises for notebook 01"), exercises / "01_alpha_exercises.ipynb")
    out = site.build_site(tmp_path / "site", **repo)
    copied = out / "notebooks" / "exercises" / "01_alpha_exercises.ipynb"
    assert copied.read_bytes() == (exercises / "01_alpha_exercises.ipynb").read_bytes()
    assert "Exercises for notebook 01" not in (out / "index.html").read_text()  # not a numbered notebook
    assert not list(out.rglob("*exercises.html"))


def test_index_lists_numbered_notebooks_in_order_and_links_resolve(repo, tmp_path):
    out = site.build_site(tmp_path / "site", **repo)
    index = out / "index.html"
    text = index.read_text()
    hrefs = links(index).hrefs
    notebook_links = [h for h in hrefs if h.startswith("notebooks/")]
    assert notebook_links == ["notebooks/01_alpha.html", "notebooks/02_beta.html",
                              "notebooks/03_gamma.html", "notebooks/10_delta.html"]
    assert "Scratch" not in text and "Some text" not in text
    # titles from the first markdown heading, inline markdown rendered, in order
    positions = [text.index(t) for t in ("01 — Alpha <em>maps</em>", "02 — Beta<", "03 — Gamma", "10 — Delta")]
    assert positions == sorted(positions)
    assert "results.html" in hrefs and "figures.html" in hrefs
    pages = sorted(out.rglob("*.html"))
    assert [p.relative_to(out).as_posix() for p in pages] == [
        "figures.html", "index.html", "notebooks/01_alpha.html", "notebooks/02_beta.html",
        "notebooks/03_gamma.html", "notebooks/10_delta.html", "results.html"]
    checked = 0
    for page in pages:
        found = links(page)
        for url in found.hrefs + found.images:
            target = local_target(page, url)
            if target is not None:
                assert target.is_file(), f"{page.name}: {url} -> {target} does not exist"
                checked += 1
    assert checked >= 7 * 3 + 2  # every page links index, results, figures; the gallery its images


def test_pages_say_which_version_they_show(repo, tmp_path):
    out = site.build_site(tmp_path / "site", **repo)
    page = {p.stem: p.read_text() for p in (out / "notebooks").glob("*.html")}
    assert "executed with the quick profile" in page["01_alpha"]
    assert "build/notebooks/quick/01_alpha.ipynb" in page["01_alpha"]
    assert "run 2026-01-02 03:04 UTC in 2 min 5 s" in page["01_alpha"]
    assert "executed with the full profile" in page["02_beta"] and "Beta (quick)" not in page["02_beta"]
    assert "source notebook" in page["03_gamma"] and "not executed" in page["03_gamma"]
    assert "notebooks/03_gamma.ipynb" in page["03_gamma"]
    assert "execution stopped with an error" in page["10_delta"]
    index = (out / "index.html").read_text()
    for label in ("executed, quick profile", "executed, full profile", "source notebook, not executed",
                  "execution failed"):
        assert label in index
    # image outputs are embedded, not linked
    assert f'src="data:image/png;base64,{PNG}' in page["02_beta"]
    # previous / next links follow the order
    assert 'href="01_alpha.html"' in page["02_beta"] and 'href="03_gamma.html"' in page["02_beta"]


def test_widgets_drawn_from_saved_state(repo, tmp_path):
    out = site.build_site(tmp_path / "site", **repo)
    page = (out / "notebooks" / "01_alpha.html").read_text()
    bars = re.findall(r"<progress[^>]*>", page)
    assert len(bars) == 1 and 'value="7"' in bars[0] and 'max="7"' in bars[0], bars
    assert "work: 100%" in page and "7/7 [00:01&lt;00:00]" in page
    assert "lost bar" in page  # no saved state: its text fallback
    assert "widget-state+json" not in page and "widget-view+json" not in page
    assert "work:   0%" not in page


def test_no_network_resources(repo, tmp_path):
    out = site.build_site(tmp_path / "site", **repo)
    for page in out.rglob("*.html"):
        text = page.read_text()
        assert site.external_references(text) == [], page
        assert "require.js" not in text and "mathjax@" not in text.lower() and "cdnjs" not in text


def test_external_references_detects_fetches_not_links():
    page = """<html><head>
    <script src="https://cdn.example/require.js"></script>
    <link rel="stylesheet" href="//fonts.example/a.css">
    <style>/* see https://example.org */ @import "https://x.example/b.css"; .a { background: url('http://x/y.png') }</style>
    <script type="module">import mermaid from "https://cdn.example/mermaid.mjs";</script>
    </head><body>
    <a href="https://example.org/paper">a paper</a>
    <img src="data:image/png;base64,AAAA"><img srcset="local.png 1x, https://x/y.png 2x">
    <div style="background-image: url(https://x/z.png)"></div>
    </body></html>"""
    found = site.external_references(page)
    assert len(found) == 7, found
    assert not any("example.org" in f for f in found)
    assert site.external_references('<a href="https://x">x</a><img src="figures/a.png">') == []


def test_results_page_renders_the_markdown_table(repo, tmp_path):
    out = site.build_site(tmp_path / "site", **repo)
    page = (out / "results.html").read_text()
    assert "<h1>Results: every metric</h1>" in page
    assert "<td>purity, |b|&gt;20°</td>" in page and "<td>0.794</td>" in page
    assert page.count("<tr>") == 3


def test_gallery_prefers_full_figures_then_quick(repo, tmp_path):
    out = site.build_site(tmp_path / "site", **repo)
    assert links(out / "figures.html").images == ["figures/a_fig.png", "figures/b_fig.png"]
    assert "full profile" in (out / "figures.html").read_text()
    for png in repo["figures_dir"].glob("*.png"):
        png.unlink()
    out = site.build_site(tmp_path / "site", **repo)
    assert links(out / "figures.html").images == ["figures/q_fig.png"]
    assert "quick profile" in (out / "figures.html").read_text()
    assert sorted(p.name for p in (out / "figures").iterdir()) == ["q_fig.png"]


def test_first_heading():
    assert site.first_heading(new_notebook(cells=[new_code_cell("# not markdown"),
                                                  new_markdown_cell("Title\n=====\n\n# later")])) == "Title"
    assert site.first_heading(new_notebook(cells=[new_markdown_cell("no heading")])) is None
    assert site.first_heading(new_notebook(cells=[new_markdown_cell("## 05 — Five ##")])) == "05 — Five"


def run_main(capsys, argv, **inputs):
    code = site.main(argv, **inputs)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_rebuilds_its_own_site(repo, tmp_path, capsys):
    out = tmp_path / "site"
    assert run_main(capsys, ["--out", str(out)], **repo)[0] == 0
    (out / "notebooks" / "stale.html").write_text("old")
    code, stdout, _ = run_main(capsys, ["--out", str(out)], **repo)
    assert code == 0 and str(out / "index.html") in stdout
    assert not (out / "notebooks" / "stale.html").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary folder left


@pytest.mark.parametrize("case", ["foreign_dir", "file", "figures", "inside_notebooks", "no_results",
                                  "broken_notebook", "no_notebooks"])
def test_cli_errors_leave_no_output(repo, tmp_path, capsys, case):
    out = tmp_path / "site"
    fragment = {"foreign_dir": "holds no site", "file": "not a folder", "figures": "would overwrite",
                "inside_notebooks": "would overwrite", "no_results": "python -m skyml.report",
                "broken_notebook": "cannot read", "no_notebooks": "no numbered notebooks"}[case]
    if case == "foreign_dir":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    elif case == "file":
        out.write_text("mine")
    elif case == "figures":
        out = repo["figures_dir"]
    elif case == "inside_notebooks":
        out = repo["notebooks_dir"] / "site"
    elif case == "no_results":
        repo["results_md"].unlink()
    elif case == "broken_notebook":
        (repo["executed_dir"] / "full" / "02_beta.ipynb").write_text("{not json")
    elif case == "no_notebooks":
        repo["notebooks_dir"] = tmp_path / "empty"
        repo["notebooks_dir"].mkdir()
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code, stdout, err = run_main(capsys, ["--out", str(out)], **repo)
    assert code == 2 and stdout == ""
    assert err.startswith("python -m skyml.site: error: ") and err.count("\n") == 1 and fragment in err, err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


# --------------------------------------------------------------------------- headless Chromium

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--remote-debugging-port=0",
                  "--window-size=1280,900", "--hide-scrollbars", "--mute-audio"]
LOCAL_SCHEMES = ("file", "data", "about", "blob")
IMAGES_JS = """(async () => {
  const images = Array.from(document.images);
  await Promise.all(images.map(i => i.decode().catch(() => null)));
  return images.map(i => ({src: i.currentSrc.slice(0, 80), width: i.naturalWidth, complete: i.complete}));
})()"""


def chromium_binary() -> str | None:
    for name in (os.environ.get("SKYML_CHROMIUM"), "chromium", "chromium-browser", "google-chrome",
                 "google-chrome-stable"):
        found = name and shutil.which(name)
        if found:
            return found
    return None


class Browser:
    """Headless Chromium driven over the DevTools protocol (websocket-client)."""

    def __init__(self, binary: str, workdir: Path, timeout: float = 90.0):
        import websocket

        self.timeout, self.ws = timeout, None
        profile = workdir / "profile"
        profile.mkdir()
        self.log = open(workdir / "chromium.log", "wb")
        self.proc = subprocess.Popen([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        try:
            port_file = profile / "DevToolsActivePort"
            deadline = time.monotonic() + timeout
            while not (port_file.is_file() and len(port_file.read_text().split()) == 2):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"chromium did not start; see {workdir / 'chromium.log'}")
                time.sleep(0.2)
            port, path = port_file.read_text().split()
            self.ws = websocket.create_connection(f"ws://127.0.0.1:{port}{path}", timeout=timeout,
                                                  suppress_origin=True)
            self.next_id, self.events = 0, []
            target = self.send("Target.createTarget", url="about:blank")["targetId"]
            self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                self.send(f"{domain}.enable", session=True)
            self.send("Emulation.setDeviceMetricsOverride", width=1280, height=900, deviceScaleFactor=1,
                      mobile=False, session=True)
        except BaseException:
            self.close()
            raise

    def send(self, method: str, session: bool = False, **params):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        self.ws.send(json.dumps(message))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str):
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if any(e.get("method") == method for e in self.events):
                return
            self.events.append(json.loads(self.ws.recv()))
        raise TimeoutError(method)

    def open(self, url: str) -> dict:
        """Load ``url``; its console errors, exceptions, failed or network
        requests, and every image's natural width once decoded."""
        self.events = []
        self.send("Page.navigate", url=url, session=True)
        self.wait_for("Page.loadEventFired")
        images = self.send("Runtime.evaluate", expression=IMAGES_JS, awaitPromise=True, returnByValue=True,
                           session=True)["result"]["value"]
        self.send("Runtime.evaluate", expression="1", session=True)  # flush pending events
        errors, remote = [], []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                errors.append(details.get("exception", {}).get("description") or details.get("text", "exception"))
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                errors.append(" ".join(str(a.get("value", a.get("description"))) for a in params.get("args", [])))
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                errors.append(f"{params['entry'].get('text')} {params['entry'].get('url', '')}")
            elif method == "Network.loadingFailed":
                errors.append(f"request failed: {params.get('errorText')}")
            elif method == "Network.requestWillBeSent":
                if urlsplit(params["request"]["url"]).scheme not in LOCAL_SCHEMES:
                    remote.append(params["request"]["url"])
        return {"errors": errors, "remote": remote, "images": images}

    def screenshot(self, path: Path, max_height: int = 3000) -> None:
        size = self.send("Page.getLayoutMetrics", session=True)["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": 1280, "height": min(max(size["height"], 900), max_height), "scale": 1}
        data = self.send("Page.captureScreenshot", format="png", clip=clip, captureBeyondViewport=True,
                         session=True)["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            if self.ws is not None:
                try:
                    self.ws.send(json.dumps({"id": 0, "method": "Browser.close"}))
                except Exception:
                    pass
                self.ws.close()
            elif self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        finally:
            self.log.close()


@pytest.mark.slow
def test_every_page_loads_in_headless_chromium(tmp_path):
    """The site built from what the repository holds now (executed notebooks
    where present, the committed figures and docs/results.md): every page loads
    offline without console errors or network requests, every image decodes."""
    binary = chromium_binary()
    if binary is None:
        pytest.skip("no Chromium binary (chromium, chromium-browser, google-chrome or $SKYML_CHROMIUM) "
                    "found; on Debian: apt-get install -y chromium")
    pytest.importorskip("websocket", reason="websocket-client (a dependency of jupyter_server) is missing")
    out = site.build_site(tmp_path / "site")
    pages = [out / "index.html", *sorted(p for p in out.rglob("*.html") if p.name != "index.html")]
    shots = paths.BUILD / "site-check"
    shots.mkdir(parents=True, exist_ok=True)
    browser = Browser(binary, tmp_path)
    try:
        n_images = 0
        for page in pages:
            report = browser.open(page.as_uri())
            name = page.relative_to(out).as_posix()
            assert report["errors"] == [], f"{name}: {report['errors']}"
            assert report["remote"] == [], f"{name} requested {report['remote']}"
            broken = [i["src"] for i in report["images"] if not (i["complete"] and i["width"] > 0)]
            assert broken == [], f"{name}: images not decoded: {broken}"
            n_images += len(report["images"])
            if page == pages[0]:
                browser.screenshot(shots / "index.png")
        assert n_images >= len(list((out / "figures").glob("*.png")))
        first = sorted((out / "notebooks").glob("*.html"))[0]
        assert browser.open(first.as_uri())["errors"] == []
        browser.screenshot(shots / "notebook.png")
    finally:
        browser.close()
    import matplotlib.image

    for shot in ("index.png", "notebook.png"):
        pixels = matplotlib.image.imread(shots / shot)
        assert pixels.shape[1] == 1280 and pixels.shape[0] >= 900
        assert len({tuple(p) for p in pixels[::7, ::7].reshape(-1, pixels.shape[2])}) > 10  # not blank
