"""JupyterLab as a workshop room uses it: ``jupyter lab`` on the notebooks
folder starts, serves the lab page, opens a kernel of the kernelspec the
notebooks ask for, and that kernel imports skyml and shows a matplotlib figure
inline (an ``image/png`` display) even when the lab was started from a batch
environment with ``MPLBACKEND=Agg``. The server and its kernel are shut down
within a bounded time, and killed if they do not stop."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
import warnings
from pathlib import Path

import nbformat
import pytest

import skyml
from skyml import paths

pytestmark = pytest.mark.slow  # starts a server and a kernel: about 10-20 s

START_TIMEOUT_S = 90
EXECUTE_TIMEOUT_S = 120
STOP_TIMEOUT_S = 20

CELL = """\
import matplotlib
import matplotlib.pyplot as plt
import skyml
from skyml import plotting

plotting.use_style()
print("skyml:", skyml.__file__)
print("backend:", matplotlib.get_backend())
fig, ax = plt.subplots(figsize=plotting.figsize("single"))
ax.plot([0, 1, 2], [0, 1, 4], marker="o")
ax.set(xlabel="x", ylabel="y")
"""


def notebook_kernelspec() -> str:
    """The kernelspec name that the numbered notebooks ask for (all the same)."""
    names = {nbformat.read(p, as_version=4).metadata["kernelspec"]["name"]
             for p in sorted(paths.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))}
    assert len(names) == 1, f"the notebooks ask for several kernels: {names}"
    return names.pop()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A ``jupyter lab`` subprocess on a loopback port with a token."""

    def __init__(self, root_dir: Path, tmp: Path):
        self.port, self.token = free_port(), secrets.token_hex(16)
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = tmp / "lab.log"
        env = {**os.environ,
               # a batch environment: plotting.use_style() must still show figures inline
               "MPLBACKEND": "Agg",
               # nothing written into the user's Jupyter or IPython folders
               "JUPYTER_CONFIG_DIR": str(tmp / "config"), "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
               "JUPYTERLAB_SETTINGS_DIR": str(tmp / "lab-settings"),
               "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "lab-workspaces"), "IPYTHONDIR": str(tmp / "ipython")}
        argv = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
                "--port-retries=0", f"--IdentityProvider.token={self.token}",
                f"--ServerApp.root_dir={root_dir}", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            argv.append("--allow-root")
        with open(self.log, "wb") as log:
            # own process group: the kernels it starts are ended with it
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp,
                                         start_new_session=True)

    def log_tail(self, n: int = 40) -> str:
        lines = self.log.read_text(errors="replace").splitlines() if self.log.is_file() else []
        return "\n".join(lines[-n:])

    def request(self, method: str, path: str, body: dict | None = None, timeout: float = 30):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Authorization": f"token {self.token}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as response:
            text = response.read().decode()
            return response.status, text

    def wait_ready(self) -> dict:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"jupyter lab exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                status, text = self.request("GET", "/api/status", timeout=5)
                if status == 200:
                    return json.loads(text)
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.25)
        pytest.fail(f"jupyter lab did not answer /api/status within {START_TIMEOUT_S} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """``POST /api/shutdown``, then terminate, then kill the process group."""
        if self.proc.poll() is None:
            try:
                self.request("POST", "/api/shutdown", timeout=5)
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
        try:  # whatever is left of the group (a kernel that outlived the server)
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.proc.poll() is None:
            self.proc.wait(timeout=5)


def execute(server: Server, kernel_id: str, code: str) -> list[dict]:
    """Run ``code`` in the kernel over the server's websocket (Jupyter messaging
    protocol, JSON frames) and return the iopub messages of that request until
    the kernel is idle again."""
    import websocket  # websocket-client, a dependency of jupyter_server

    session = uuid.uuid4().hex
    ws = websocket.create_connection(
        f"ws://127.0.0.1:{server.port}/api/kernels/{kernel_id}/channels?session_id={session}",
        header=[f"Authorization: token {server.token}"], timeout=EXECUTE_TIMEOUT_S)
    try:
        msg_id = uuid.uuid4().hex
        ws.send(json.dumps({
            "header": {"msg_id": msg_id, "username": "test", "session": session, "msg_type": "execute_request",
                       "version": "5.3", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True},
        }))
        replies, deadline = [], time.monotonic() + EXECUTE_TIMEOUT_S
        while time.monotonic() < deadline:
            msg = json.loads(ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id or msg.get("channel") != "iopub":
                continue
            replies.append(msg)
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                return replies
        pytest.fail(f"the cell did not finish within {EXECUTE_TIMEOUT_S} s; got {[m['msg_type'] for m in replies]}")
    finally:
        ws.close()


def test_lab_kernel_shows_an_inline_figure(tmp_path):
    from jupyter_client.kernelspec import KernelSpecManager

    wanted = notebook_kernelspec()
    installed = KernelSpecManager().find_kernel_specs()
    if wanted in installed:
        kernel_name = wanted
    else:  # a venv made without `make venv`: the notebooks' kernel is not registered
        kernel_name = "python3"
        warnings.warn(f"kernelspec {wanted!r} of the notebooks is not installed (make venv registers it); "
                      f"the lab test uses the environment's {kernel_name!r} kernel", stacklevel=1)
    assert kernel_name in installed, f"no kernelspec {kernel_name!r}: {sorted(installed)}"

    t0 = time.monotonic()
    server = Server(paths.NOTEBOOKS, tmp_path)
    try:
        status = server.wait_ready()
        assert "started" in status, status
        started_s = time.monotonic() - t0

        code, page = server.request("GET", "/lab")
        assert code == 200 and "<title>JupyterLab</title>" in page, page[:300]
        code, text = server.request("GET", "/api/kernelspecs")
        assert kernel_name in json.loads(text)["kernelspecs"]
        code, text = server.request("GET", "/api/contents/")
        listed = {item["name"] for item in json.loads(text)["content"]}
        assert "01_cta_simulate.ipynb" in listed and "exercises" in listed, sorted(listed)

        code, text = server.request("POST", "/api/kernels", {"name": kernel_name})
        assert code == 201, text
        kernel_id = json.loads(text)["id"]
        replies = execute(server, kernel_id, CELL)

        errors = [m["content"] for m in replies if m["msg_type"] == "error"]
        assert not errors, "\n".join("\n".join(e["traceback"]) for e in errors)
        stdout = "".join(m["content"]["text"] for m in replies
                         if m["msg_type"] == "stream" and m["content"]["name"] == "stdout")
        # the kernel imports this repository's library, not another copy
        assert f"skyml: {skyml.__file__}" in stdout, stdout
        assert "inline" in stdout, stdout
        images = [m for m in replies if m["msg_type"] == "display_data" and "image/png" in m["content"]["data"]]
        assert len(images) == 1, [m["msg_type"] for m in replies]
        png = images[0]["content"]["data"]["image/png"]
        assert png.startswith("iVBORw0KGgo"), png[:20]  # base64 of the PNG signature

        code, _ = server.request("DELETE", f"/api/kernels/{kernel_id}")
        assert code == 204
        code, text = server.request("GET", "/api/kernels")
        assert json.loads(text) == []
        print(f"lab answered /api/status after {started_s:.1f} s; kernel {kernel_name!r}; "
              f"{time.monotonic() - t0:.1f} s in all")
    finally:
        t_stop = time.monotonic()
        server.stop()
        assert server.proc.returncode is not None
    assert time.monotonic() - t_stop < STOP_TIMEOUT_S + 15
