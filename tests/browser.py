"""Headless Chromium driven over the DevTools protocol, for tests that look at rendered pages.

Start it with `Browser.launch(tmp_path)`; `page.goto(url)`, `page.evaluate(js)`,
`page.screenshot(path)`; `page.problems` collects console errors, uncaught exceptions and any
request that left the machine (everything but file:, data:, about: and 127.0.0.1).
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import shutil
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
LOCAL_PREFIXES = ("file:", "data:", "about:", "http://127.0.0.1", "blob:")


def chromium_path() -> str | None:
    """The Chromium executable on PATH, if any."""
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


@dataclass
class Page:
    """One tab: send commands, read their results, remember what went wrong."""

    ws: ClientConnection
    ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    problems: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    loaded: bool = False

    def send(
        self, method: str, params: dict[str, Any] | None = None, timeout: float = 60.0
    ) -> dict[str, Any]:
        """Run one protocol command and return its result (events seen meanwhile are recorded)."""
        ident = next(self.ids)
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self._event(message)

    def _event(self, message: dict[str, Any]) -> None:
        method, params = message.get("method"), message.get("params", {})
        if method == "Runtime.exceptionThrown":
            self.problems.append(f"exception: {params['exceptionDetails'].get('text')}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self.problems.append(f"console.{params['type']}: {params.get('args')}")
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            self.problems.append(
                f"log: {params['entry'].get('text')} {params['entry'].get('url', '')}"
            )
        elif method == "Network.requestWillBeSent":
            url = params["request"]["url"]
            self.requests.append(url)
            if not url.startswith(LOCAL_PREFIXES):
                self.problems.append(f"network request off the machine: {url}")
        elif method == "Page.loadEventFired":
            self.loaded = True

    def pump(self, seconds: float) -> None:
        """Read events for a while (console messages arrive asynchronously)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                self._event(
                    json.loads(self.ws.recv(timeout=max(0.05, deadline - time.monotonic())))
                )
            except TimeoutError:
                return

    def goto(self, url: str, timeout: float = 60.0) -> None:
        """Navigate and wait for the load event."""
        self.loaded = False
        self.send("Page.navigate", {"url": url})
        deadline = time.monotonic() + timeout
        while not self.loaded:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not load in {timeout} s")
            self.pump(0.2)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60.0) -> Any:
        """Poll a JavaScript expression until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            self.pump(0.25)
        raise TimeoutError(f"still false after {timeout} s: {expression}")

    def screenshot(self, path: Path) -> Path:
        """Save a full-page PNG."""
        data = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        path.write_bytes(base64.b64decode(data["data"]))
        return path


class Browser:
    """A headless Chromium process with its own profile directory."""

    def __init__(self, process: subprocess.Popen, port: int) -> None:
        self.process = process
        self.port = port
        self._open = contextlib.ExitStack()  # the DevTools connections, closed with the browser

    @classmethod
    def launch(cls, workdir: Path, executable: str) -> Browser:
        """Start Chromium with no network services and a DevTools port on 127.0.0.1."""
        profile = workdir / "chromium-profile"
        profile.mkdir(parents=True, exist_ok=True)
        active = profile / "DevToolsActivePort"
        active.unlink(missing_ok=True)  # left by an earlier browser on this profile: a stale port
        process = subprocess.Popen(
            [
                executable,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--disable-sync",
                "--disable-extensions",
                f"--user-data-dir={profile}",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--window-size=1280,1600",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while not (active.exists() and active.read_text().strip()):
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("Chromium did not start its DevTools endpoint")
            time.sleep(0.1)
        return cls(process, int(active.read_text().split()[0]))

    def page(self) -> Page:
        """The first tab, with console, log, network and page events switched on."""
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.port}/json/list", timeout=30
        ) as response:
            targets = json.load(response)
        target = next(t for t in targets if t["type"] == "page")
        socket = self._open.enter_context(
            connect(target["webSocketDebuggerUrl"], max_size=None, open_timeout=30)
        )
        page = Page(socket)
        for domain in ("Page", "Runtime", "Log", "Network"):
            page.send(f"{domain}.enable")
        return page

    def close(self) -> None:
        """Close the connections and stop Chromium."""
        self._open.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
