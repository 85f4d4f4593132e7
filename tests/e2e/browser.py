"""Headless Chromium (Debian's, /usr/bin/chromium) driven by Playwright, as a user drives
JupyterLab. Each step of a test is a `with browser.step("name"):` block that ends with a
screenshot, numbered in order, under the test's output directory; a step that fails leaves
`NN-name-FAILED.png`, and the failure names it."""
import contextlib
import os
import re
import shutil
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("JSK8S_CHROMIUM", "/usr/bin/chromium")
# Headless, and nothing of Chromium's own traffic: the machine's network is closed but for the
# cluster, and background connections would only fail (and slow every start).
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions"]


class StepFailed(AssertionError):
    pass


class Browser:
    def __init__(self, shots: Path):
        self.shots = Path(shots)
        self.shots.mkdir(parents=True, exist_ok=True)
        self.count = 0
        self._playwright = self._browser = self.context = self.page = None

    def __enter__(self) -> "Browser":
        if not shutil.which(CHROMIUM):
            why = f"no Chromium at {CHROMIUM} (apt-get install chromium; ci/deps does)"
            if os.environ.get("CI"):
                pytest.fail(why)
            pytest.skip(why)
        from playwright.sync_api import sync_playwright
        self._playwright = sync_playwright().start()
        self._browser = self._playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        self.context = self._browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        self.context.set_default_timeout(30_000)
        self.page = self.context.new_page()
        return self

    def __exit__(self, *exc):
        for closing in (self.context, self._browser):
            with contextlib.suppress(Exception):
                closing.close()
        if self._playwright:
            self._playwright.stop()

    def screenshot(self, name: str) -> Path:
        path = self.shots / f"{self.count:02d}-{re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')}.png"
        with contextlib.suppress(Exception):  # a dead page must not hide the step's own error
            self.page.screenshot(path=str(path), full_page=True)
        return path

    @contextlib.contextmanager
    def step(self, name: str):
        self.count += 1
        try:
            yield self.page
        except Exception as e:
            shot = self.screenshot(f"{name}-FAILED")
            raise StepFailed(f"step {self.count} '{name}' failed (screenshot: {shot}): {e}") from e
        self.screenshot(name)
