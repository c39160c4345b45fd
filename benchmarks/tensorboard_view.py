"""What TensorBoard shows of a run, checked in a real browser: headless Chromium screenshots.

`check_dashboards` starts TensorBoard on a log directory and Chromium through chromedriver
(the W3C WebDriver protocol over HTTP, so no client library is needed), opens each
dashboard, waits until the texts it must show are on the page (tags, chart titles, the
HParams table's columns), and saves a screenshot of it. Chromium's software WebGL is
refused by TensorBoard, so the pages are opened with ``?forceSVG=true``.

Needs ``chromium`` and ``chromium-driver`` (Debian's packages); CI has neither, so this is
a tool (tools/check_tensorboard.py), not a test. What the event files hold is tested
through TensorBoard's event API in tests/test_train_logger.py.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from segls.io import write_png

__all__ = ["CHROMIUM_FLAGS", "Dashboard", "check_dashboards", "page_text_script"]

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)

# Collects the text of the page, into shadow roots and same-origin frames, where TensorBoard's
# plugin dashboards live.
page_text_script = """
function collect(root) {
  let text = "";
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_ELEMENT | NodeFilter.SHOW_TEXT);
  for (let node = walker.currentNode; node; node = walker.nextNode()) {
    if (node.nodeType === Node.TEXT_NODE) { text += node.textContent + "\\n"; continue; }
    if (node.shadowRoot) text += collect(node.shadowRoot);
    if (node.tagName === "IFRAME" && node.contentDocument) text += collect(node.contentDocument);
  }
  return text;
}
return collect(document);
"""


@dataclass(frozen=True)
class Dashboard:
    """One TensorBoard page, the texts it must show, and the screenshot to save of it.

    `location` follows ``/?forceSVG=true`` in the URL: more query parameters (the time-series
    dashboard reads ``smoothing``, ``tagFilter`` and ``runFilter``) and the ``#dashboard``
    (whose older pages read ``&tagFilter=`` and ``&regexInput=`` after the name). `clicks`
    are CSS selectors of buttons to press once the page is there (e.g. to close a side pane).
    """

    location: str
    expected: tuple[str, ...]
    screenshot: str
    size: tuple[int, int] = (1280, 900)
    clicks: tuple[str, ...] = ()


def _free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for(url: str, seconds: float) -> None:
    """Poll `url` until it answers; TimeoutError after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (urllib.error.URLError, OSError):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer within {seconds:.0f} s") from None
            time.sleep(0.3)


@contextlib.contextmanager
def _process(command: list[str], ready_url: str, seconds: float = 60) -> Iterator[None]:
    """Run `command` until the block ends, once `ready_url` answers."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(ready_url, seconds)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class _Browser:
    """A headless Chromium session driven through chromedriver's WebDriver HTTP interface."""

    def __init__(self, driver_url: str, chromium: str, profile: str):
        self.driver_url = driver_url
        options = {"binary": chromium, "args": [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]}
        capabilities = {"browserName": "chrome", "goog:chromeOptions": options}
        reply = self._call("POST", "/session", {"capabilities": {"alwaysMatch": capabilities}})
        self.session = f"/session/{reply['sessionId']}"

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        """One WebDriver command; returns its ``value``."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.driver_url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())["value"]

    def open(self, url: str) -> None:
        """Navigate to `url`."""
        self._call("POST", f"{self.session}/url", {"url": url})

    def text(self) -> str:
        """All text on the page (`page_text_script`)."""
        return self._call(
            "POST", f"{self.session}/execute/sync", {"script": page_text_script, "args": []}
        )

    def resize(self, size: tuple[int, int]) -> None:
        """Set the window's width and height."""
        self._call("POST", f"{self.session}/window/rect", {"width": size[0], "height": size[1]})

    def click(self, selector: str) -> None:
        """Press every element matching the CSS `selector` (in the page, not in shadow roots)."""
        script = "document.querySelectorAll(arguments[0]).forEach(e => e.click());"
        self._call("POST", f"{self.session}/execute/sync", {"script": script, "args": [selector]})

    def screenshot(self) -> bytes:
        """The visible page as PNG bytes."""
        return base64.b64decode(self._call("GET", f"{self.session}/screenshot"))

    def close(self) -> None:
        """End the session (and Chromium)."""
        self._call("DELETE", self.session)


def _save_small(png: bytes, path: Path) -> None:
    """Write a screenshot as a 256-colour palette PNG, which keeps it to a few hundred KB."""
    image = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=256)
    palette = np.array(image.getpalette()[: 3 * 256], dtype=np.uint8).reshape(-1, 3).tolist()
    write_png(path, np.asarray(image), palette=palette)


def _missing_after(browser: _Browser, expected: Sequence[str], seconds: float) -> list[str]:
    """Poll the page until every expected text is on it; returns those still missing.

    White space is ignored on both sides: pages split a title over several elements.
    """
    deadline = time.monotonic() + seconds
    while True:
        text = "".join(browser.text().split())  # a title may be split over elements
        missing = [item for item in expected if "".join(item.split()) not in text]
        if not missing or time.monotonic() > deadline:
            return missing
        time.sleep(1.0)


def check_dashboards(
    logdir: str | Path,
    dashboards: Sequence[Dashboard],
    out_dir: str | Path,
    settle_seconds: float = 3.0,
    timeout: float = 90.0,
) -> dict[str, list[str]]:
    """Screenshot each dashboard of TensorBoard on `logdir` into `out_dir`.

    Returns, per screenshot name, the expected texts that never appeared (empty lists when
    all is there). `settle_seconds` lets the charts finish drawing after the texts appear.
    """
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        raise FileNotFoundError(
            "needs chromium and chromedriver: apt-get install chromium chromium-driver"
        )
    board_port, driver_port = _free_port(), _free_port()
    board = f"http://127.0.0.1:{board_port}"
    tensorboard = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir)]
    tensorboard += ["--port", str(board_port), "--host", "127.0.0.1", "--reload_interval", "0"]
    results = {}
    with (
        _process(tensorboard, board + "/data/logdir"),
        _process([driver, f"--port={driver_port}"], f"http://127.0.0.1:{driver_port}/status"),
        tempfile.TemporaryDirectory() as profile,
    ):
        browser = _Browser(f"http://127.0.0.1:{driver_port}", chromium, profile)
        try:
            for dashboard in dashboards:
                browser.resize(dashboard.size)
                browser.open(f"{board}/?forceSVG=true{dashboard.location}")
                results[dashboard.screenshot] = _missing_after(browser, dashboard.expected, timeout)
                for selector in dashboard.clicks:
                    browser.click(selector)
                time.sleep(settle_seconds)
                _save_small(browser.screenshot(), Path(out_dir) / dashboard.screenshot)
        finally:
            browser.close()
    return results
