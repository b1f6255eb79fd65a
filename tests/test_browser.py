"""The widgets work in real JupyterLab: notebooks 00 and 06 run at smoke in headless Chromium.

papermill and nbval run kernels without a widget front end, so there the explorers draw static figures
(sslkit.viz.has_widget_frontend). This test is what a learner does instead: it starts JupyterLab (token on,
localhost only, a temporary root folder), opens each notebook in Chromium, runs every cell, and checks that
every cell ran without an error output, that the explorer widgets render (no "Error displaying widget"), and
that moving a slider redraws the picture (the image's bytes change).

It needs Debian's Chromium (`apt-get install -y chromium`, as root) and Python's playwright (`pip install
playwright`, in the `dev` extra); without them it is skipped, except in CI (CI=true), where .ci/run installs
Chromium and a missing one is a failure.
"""
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import psutil
import pytest

from sslkit.nbtools import KERNEL, notebook_parameters

try:
    from playwright.sync_api import Error as PlaywrightError, expect, sync_playwright
except ImportError:  # the test is skipped (or fails in CI) with how to install it
    sync_playwright = None

NOTEBOOKS = Path(__file__).parents[1] / "notebooks"
START_S = 180  # the server answering, a kernel starting: seconds on a busy 2-core machine
RUN_S = {"00_welcome": 300, "06_gradcam": 900}  # whole notebook at smoke (06 trains five small models)
REDRAW_S = 120  # one widget redraw (06 computes a map per redraw)


def _missing_tools() -> list[str]:
    missing = []
    if shutil.which("chromium") is None:
        missing.append("Chromium: as root, `apt-get update && apt-get install -y chromium` (Debian's package)")
    if sync_playwright is None:
        missing.append(f"playwright: `{sys.executable} -m pip install -c constraints.txt playwright` "
                       f"(or `make install`)")
    return missing


class Lab:
    """A JupyterLab server of this environment on a temporary root folder; shut down by `stop()`."""

    def __init__(self, root: Path, home: Path):
        self.root, self.token, self.url = root, secrets.token_hex(16), None
        # settings of this server only: every cell in the page (no windowing, so the DOM holds all outputs), no
        # update check (no network); the user's own Jupyter config and workspaces stay untouched
        settings = home / "config" / "lab" / "user-settings" / "@jupyterlab"
        plugins = {"notebook-extension/tracker": {"windowingMode": "none"},
                   "apputils-extension/notification": {"checkForUpdates": False, "fetchNews": "false"}}
        for plugin, values in plugins.items():
            (settings / plugin).parent.mkdir(parents=True, exist_ok=True)
            (settings / f"{plugin}.jupyterlab-settings").write_text(json.dumps(values))
        self.runtime = home / "runtime"  # where the server writes jpserver-<pid>.json, with the port it got
        env = {**os.environ, "JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_RUNTIME_DIR": str(self.runtime)}
        self.log_path = home / "lab.log"
        command = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--ServerApp.root_dir={root}",
                   "--ServerApp.ip=127.0.0.1", "--ServerApp.port=0",  # 0: a free port, from the OS
                   f"--IdentityProvider.token={self.token}", "--LabApp.expose_app_in_browser=True",
                   "--LabApp.news_url=None"]
        if os.geteuid() == 0:
            command.append("--allow-root")  # Jupyter refuses root unless told (CI runs as root)
        with open(self.log_path, "wb") as log:  # its own process group: stop() can end its kernels too
            self.process = subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        self._wait_until_up()

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def _api(self, path: str, method: str = "GET"):
        request = urllib.request.Request(f"{self.url}{path}", method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response) if method == "GET" else None

    def _wait_until_up(self):
        info = self.runtime / f"jpserver-{self.process.pid}.json"
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with code {self.process.returncode}:\n{self.log_tail()}")
            try:
                if self.url is None and info.exists():
                    self.url = f"http://127.0.0.1:{json.loads(info.read_text())['port']}"
                if self.url is not None:
                    self._api("/api/status")
                    return
            except (urllib.error.URLError, OSError, ValueError, KeyError):
                pass  # not listening yet, or its info file half written
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"JupyterLab did not answer within {START_S} s:\n{self.log_tail()}")

    def stop(self):
        """Shut the server down and make sure its kernels are gone, even when it does not answer."""
        if self.process.poll() is None and self.url is not None:
            try:
                self._api("/api/shutdown", method="POST")  # the server ends its kernels, then itself
                self.process.wait(timeout=30)
            except (urllib.error.URLError, OSError, subprocess.TimeoutExpired):
                pass
        if self.process.poll() is None:
            self.process.terminate()  # SIGTERM: the server still ends its kernels
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)  # the group start_new_session made for the server
                self.process.wait()
        # kernels run in sessions of their own; any left behind read their connection file from this runtime folder
        left = [proc for proc in psutil.process_iter(["cmdline"])
                if any(str(self.runtime) in arg for arg in proc.info["cmdline"] or ())]
        for proc in left:
            try:
                proc.kill()
            except psutil.Error:  # ended meanwhile
                pass
        psutil.wait_procs(left, timeout=10)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    missing = _missing_tools()
    if missing:
        message = "browser test needs " + "; ".join(missing)
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)  # .ci/run installs both: in CI the browser test never silently disappears
        pytest.skip(message)
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    try:
        KernelSpecManager().get_kernel_spec(KERNEL)
    except NoSuchKernel:
        pytest.fail(f"no Jupyter kernel named {KERNEL!r}; `make install` registers it")
    server = Lab(tmp_path_factory.mktemp("lab-root"), tmp_path_factory.mktemp("lab-home"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser(lab):
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=shutil.which("chromium"),
                                     args=["--disable-dev-shm-usage"])  # containers have a small /dev/shm
        try:
            yield chromium
        finally:
            chromium.close()


# The state of the open notebook, read from JupyterLab's own models (window.jupyterapp, exposed by the server
# option above): the kernel, each code cell's prompt ("[3]:", "[*]:" while queued or running) and error outputs.
NOTEBOOK_STATE = """name => {
  const app = window.jupyterapp;
  if (!app) return null;
  const panel = Array.from(app.shell.widgets('main')).find(w => w.context && w.context.path === name);
  if (!panel || !panel.content || !panel.sessionContext) return null;
  const kernel = panel.sessionContext.session ? panel.sessionContext.session.kernel : null;
  const cells = panel.content.widgets.filter(c => c.model.type === 'code').map((c, i) => {
    const errors = [];
    for (let k = 0; k < c.model.outputs.length; k++) {
      const out = c.model.outputs.get(k).toJSON();
      if (out.output_type === 'error') errors.push(`${out.ename}: ${out.evalue}`);
    }
    const prompt = c.node.querySelector('.jp-InputPrompt');
    return {index: i, count: c.model.executionCount, prompt: prompt ? prompt.textContent.trim() : '', errors,
            source: c.model.sharedModel.getSource().slice(0, 200)};
  });
  return {kernel: kernel ? kernel.name : null, status: kernel ? kernel.status : null, cells};
}"""


class Notebook:
    """One notebook copied into the Lab's root at the smoke profile, opened in its own browser page."""

    def __init__(self, lab: Lab, browser, name: str, artifacts: Path):
        self.lab, self.name, self.artifacts = lab, f"{name}.ipynb", artifacts
        self.results_path = artifacts / f"{name}.smoke.json"
        nb = nbformat.read(NOTEBOOKS / self.name, as_version=4)
        parameters = {"PROFILE": "smoke", "RESULTS_PATH": str(self.results_path)}
        assert set(parameters) <= set(notebook_parameters(NOTEBOOKS / self.name))
        # as papermill does: a cell after the one tagged `parameters` sets the values
        at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])) + 1
        nb.cells.insert(at, nbformat.v4.new_code_cell(
            "\n".join(f"{k} = {v!r}" for k, v in parameters.items()), metadata={"tags": ["injected-parameters"]}))
        nbformat.write(nb, lab.root / self.name)
        self.page = browser.new_page(viewport={"width": 1600, "height": 1000})
        self.page.set_default_timeout(60_000)

    def close(self):
        self.page.close()

    def state(self):
        return self.page.evaluate(NOTEBOOK_STATE, self.name)

    def fail(self, message: str):
        """Fail with a screenshot of the page and the server's log (the page as a learner would have seen it)."""
        shot = self.artifacts / f"{Path(self.name).stem}-failure.png"
        try:
            self.page.screenshot(path=str(shot), full_page=True)
        except PlaywrightError:
            shot = "(none: the page did not answer)"
        pytest.fail(f"{self.name}: {message}\nscreenshot: {shot}\nJupyterLab log (end):\n{self.lab.log_tail()}")

    def wait_for(self, condition: str, arg, timeout_s: float, what: str, detail=lambda: ""):
        """Wait until the JavaScript `condition(arg)` is truthy; fail saying `what` did not happen (and `detail()`)."""
        try:
            return self.page.wait_for_function(condition, arg=arg, timeout=timeout_s * 1000, polling=500).json_value()
        except PlaywrightError as e:
            self.fail(f"{what} within {timeout_s:g} s ({str(e).splitlines()[0]}){detail()}")

    def run_all(self):
        """Open the notebook, wait for its kernel, run every cell, and wait until all ran (or one failed)."""
        self.page.goto(f"{self.lab.url}/lab/tree/{self.name}?token={self.lab.token}")
        self.wait_for(f"name => {{ const s = ({NOTEBOOK_STATE})(name); return s && s.status === 'idle'; }}",
                      self.name, START_S, "the notebook did not open with an idle kernel")
        state = self.state()
        assert state["kernel"] == KERNEL, f"{self.name} opened with kernel {state['kernel']!r}, not {KERNEL!r}"
        self.page.evaluate("""name => {
          const app = window.jupyterapp;
          const panel = Array.from(app.shell.widgets('main')).find(w => w.context && w.context.path === name);
          app.shell.activateById(panel.id);
          return app.commands.execute('notebook:run-all-cells');
        }""", self.name)
        # done: nothing queued or running, and every cell has its execution count, or a cell failed (JupyterLab
        # then leaves the cells after it unrun)
        self.wait_for(f"""name => {{
          const s = ({NOTEBOOK_STATE})(name);
          if (!s || s.status !== 'idle' || s.cells.some(c => c.prompt.includes('*'))) return false;
          return s.cells.every(c => c.count !== null) || s.cells.some(c => c.errors.length);
        }}""", self.name, RUN_S[Path(self.name).stem], "the cells did not all finish running",
                      lambda: "; still running or queued: " + "; ".join(
                          f"cell {c['index']} ({c['source'][:60]!r}...)" for c in (self.state() or {}).get("cells", [])
                          if "*" in c["prompt"]))
        state = self.state()
        failed = [f"cell {c['index']} ({c['source'].splitlines()[0] if c['source'] else ''}...): {e}"
                  for c in state["cells"] for e in c["errors"]]
        if failed:
            self.fail("error outputs:\n" + "\n".join(failed))
        unrun = [c["index"] for c in state["cells"] if c["count"] is None]
        if unrun:
            self.fail(f"code cells {unrun} did not run")
        results = json.loads(self.results_path.read_text())  # the last cell saves them: the run reached the end
        assert results["profile"] == "smoke", results["profile"]

    def check_widgets_rendered(self):
        """No widget output shows ipywidgets' error view or JupyterLab's "Error displaying widget"."""
        error_view = self.page.locator(".jupyter-widgets-error-widget").or_(
            self.page.get_by_text("Error displaying widget"))
        broken = self.page.locator(".jp-CodeCell").filter(has=error_view)
        if broken.count():
            sources = [s.splitlines()[0] for s in broken.locator(".jp-InputArea .cm-content").all_inner_texts()]
            self.fail(f"a widget did not render (ipywidgets' error view / 'Error displaying widget') in the cells "
                      f"starting {sources}; is jupyterlab_widgets installed?")

    def widget_box(self, labels: list[str]):
        """The rendered widget boxes (VBox) holding controls with all of these descriptions (labels)."""
        box = self.page.locator(".jp-OutputArea-output .widget-vbox")
        for label in labels:
            box = box.filter(has=self.page.locator(".widget-label", has_text=re.compile(f"^{re.escape(label)}$")))
        try:
            box.first.wait_for(state="visible", timeout=START_S * 1000)
        except PlaywrightError:
            self.fail(f"no widget box with the controls {labels} rendered")
        return box

    def picture(self, box) -> str:
        """The src of the figure in the widget's output (a data: URL holding the PNG's bytes)."""
        image = box.locator(".widget-output img")
        image.first.wait_for(state="visible", timeout=REDRAW_S * 1000)
        return image.first.get_attribute("src")

    def wait_for_new_picture(self, box, before: str, what: str) -> str:
        handle = box.element_handle()
        self.wait_for("""([box, before]) => {
          const img = box.querySelector('.widget-output img');
          return img && img.complete && img.naturalWidth > 0 && img.src !== before;
        }""", [handle, before], REDRAW_S, f"the picture did not change after {what}",
                      lambda: f"; the widget's output reads: {box.locator('.widget-output').inner_text()[:2000]!r}")
        return self.picture(box)


def control(box, label: str, kind: str):
    """The control of `kind` (a CSS class: widget-hslider, widget-dropdown) whose description is `label`."""
    label = box.page.locator(".widget-label", has_text=re.compile(f"^{re.escape(label)}$"))
    return box.locator(f".{kind}").filter(has=label)


def move_slider(slider, steps: int = 1):
    """Move a slider as a learner can with the keyboard: focus its handle and press the right arrow."""
    handle = slider.locator(".noUi-handle")
    handle.focus()
    for _ in range(steps):
        handle.press("ArrowRight")


@pytest.fixture
def notebook(lab, browser, tmp_path):
    opened = []

    def open_(name):
        opened.append(Notebook(lab, browser, name, tmp_path))
        return opened[-1]

    yield open_
    for nb in opened:
        nb.close()


def test_welcome_augmentation_explorer(notebook):
    nb = notebook("00_welcome")
    nb.run_all()
    labels = ["crop scale", "colour jitter", "blur prob.", "grayscale prob.", "seed"]
    box = nb.widget_box(labels)
    assert box.count() == 1, f"the augmentation explorer is shown {box.count()} times"
    for label in labels:
        assert control(box, label, "widget-hslider").count() == 1, f"no slider {label!r}"
    nb.check_widgets_rendered()
    before = nb.picture(box)
    seed = control(box, "seed", "widget-hslider")
    value = int(seed.locator(".widget-readout").inner_text())
    move_slider(seed)
    expect(seed.locator(".widget-readout")).to_have_text(str(value + 1))  # the slider moved one step
    after = nb.wait_for_new_picture(box, before, f"moving the seed slider from {value} to {value + 1}")
    move_slider(control(box, "crop scale", "widget-hslider"))  # 0.25 -> 0.30: other crops
    nb.wait_for_new_picture(box, after, "moving the crop scale slider")
    nb.check_widgets_rendered()


def test_gradcam_cam_explorer(notebook):
    nb = notebook("06_gradcam")
    nb.run_all()
    box = nb.widget_box(["image", "method", "layer", "target"])
    assert box.count() == 1, f"the CAM explorer is shown {box.count()} times"
    assert control(box, "image", "widget-hslider").count() == 1, "no slider 'image'"
    method = control(box, "method", "widget-dropdown").locator("select")
    options = method.locator("option").all_inner_texts()
    assert {"gradcam", "eigencam"} <= set(options), options
    nb.check_widgets_rendered()
    before = nb.picture(box)
    move_slider(control(box, "image", "widget-hslider"))  # the next test image and its map
    after = nb.wait_for_new_picture(box, before, "moving the image slider")
    method.select_option("eigencam")
    nb.wait_for_new_picture(box, after, "choosing the method eigencam")
    nb.check_widgets_rendered()
