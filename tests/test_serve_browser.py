"""End to end in headless Chromium: open the studio page served by uvicorn, pick a prompt, upload a beginning,
generate, and see the score image load and the audio player appear; then a piece with no music must be shown as
invalid. Chromium is driven through chromedriver's WebDriver HTTP protocol with httpx (no extra Python package).

Skips with the reason when chromium or chromedriver is missing (`bash scripts/setup.sh --test` installs them).
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from test_serve_api import BEGINNING_ABC, REGISTRY, free_port, running_server, stopping_model  # noqa: E402

from notagen.checkpoint import save_checkpoint  # noqa: E402
from notagen.serve.app import create_app  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMEDRIVER = shutil.which("chromedriver")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--window-size=1200,1600"]

pytestmark = pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                                reason="needs chromium and chromedriver (apt-get install chromium chromium-driver)")


class Browser:
    """The few WebDriver commands the test needs, over HTTP."""

    def __init__(self, driver_url: str, user_data_dir: Path) -> None:
        self.http = httpx.Client(base_url=driver_url, timeout=60)
        options = {"binary": CHROMIUM, "args": [*CHROMIUM_FLAGS, f"--user-data-dir={user_data_dir}"]}
        reply = self.command("POST", "/session", {"capabilities": {"alwaysMatch": {
            "browserName": "chrome", "goog:chromeOptions": options}}})
        self.session = f"/session/{reply['sessionId']}"

    def command(self, method: str, path: str, body: dict | None = None):
        response = self.http.request(method, path, json=body)
        value = response.json().get("value")
        if response.status_code != 200:
            raise AssertionError(f"WebDriver {method} {path}: {value}")
        return value

    def open(self, url: str) -> None:
        self.command("POST", f"{self.session}/url", {"url": url})

    def find(self, selector: str) -> str:
        value = self.command("POST", f"{self.session}/element", {"using": "css selector", "value": selector})
        return next(iter(value.values()))

    def click(self, selector: str) -> None:
        self.command("POST", f"{self.session}/element/{self.find(selector)}/click", {})

    def type_into(self, selector: str, text: str) -> None:
        self.command("POST", f"{self.session}/element/{self.find(selector)}/value", {"text": text})

    def script(self, source: str, *args):
        return self.command("POST", f"{self.session}/execute/sync", {"script": source, "args": list(args)})

    def wait_until(self, source: str, timeout: float = 30.0, what: str = ""):
        deadline = time.monotonic() + timeout
        while True:
            value = self.script(source)
            if value:
                return value
            if time.monotonic() > deadline:
                page = self.script("return document.body.innerText")
                raise AssertionError(f"timed out waiting for {what or source}; page text:\n{page}")
            time.sleep(0.1)

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.command("GET", f"{self.session}/screenshot")))

    def close(self) -> None:
        try:
            self.command("DELETE", self.session)
        finally:
            self.http.close()


@pytest.fixture
def stopping_checkpoint(tmp_path) -> Path:
    return save_checkpoint(tmp_path / "stopping", stopping_model(), prompts=REGISTRY)


@pytest.fixture
def browser(tmp_path):
    port = free_port()
    driver = subprocess.Popen([CHROMEDRIVER, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/status", timeout=2).json()["value"]["ready"]:
                    break
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            assert time.monotonic() < deadline, "chromedriver did not start"
            time.sleep(0.1)
        profile = tmp_path / "chromium-profile"
        profile.mkdir()
        session = Browser(f"http://127.0.0.1:{port}", profile)
        try:
            yield session
        finally:
            session.close()
    finally:
        driver.terminate()
        driver.wait(10)


def test_pick_generate_see_and_hear_in_chromium(stopping_checkpoint, browser, tmp_path):
    beginning = tmp_path / "beginning.abc"
    beginning.write_text(BEGINNING_ABC)
    app = create_app(stopping_checkpoint, tmp_path / "out", device="cpu")
    with running_server(app) as base:
        browser.open(base + "/")
        browser.wait_until("return document.body.dataset.ready === 'true'", what="the page to load the prompts")
        # the sampling fields show the server's defaults (the page holds none of its own)
        assert browser.script("return ['temperature', 'top_k', 'top_p'].map(id => document.getElementById(id).value)"
                              ) == ["1.2", "9", "0.9"]
        # Only valid combinations are offered: Romantic → two composers, then their instrumentation.
        browser.click("#period option[value='Romantic']")
        composers = browser.script("return [...document.querySelectorAll('#composer option')].map(o => o.value)")
        assert composers == ["Chopin, Frederic", "Schumann, Robert"]
        browser.click("#composer option[value='Schumann, Robert']")
        assert browser.script("return [...document.querySelectorAll('#instrumentation option')].map(o => o.value)"
                              ) == ["Keyboard"]
        browser.script("document.getElementById('seed').value = '11'; document.getElementById('retries').value = '0'")
        browser.type_into("#beginning", str(beginning))
        browser.click("#generate")

        browser.wait_until("const img = document.querySelector('img.score-page');"
                           "return img !== null && img.complete && img.naturalWidth > 0", what="the score image")
        assert browser.script("return document.querySelector('audio.player').src").endswith(".wav")
        assert browser.script("return document.querySelector('.badge').textContent") == "valid"
        links = browser.script("return [...document.querySelectorAll('.downloads a')].map(a => a.textContent)")
        assert {"ABC", "MusicXML", "MIDI", "WAV"} <= set(links)
        wav_url = browser.script("return document.querySelector('audio.player').src")
        assert httpx.get(wav_url).content[:4] == b"RIFF"
        job = httpx.get(base + "/api/jobs").json()["jobs"][0]
        assert job["request"]["prompt"]["composer"] == "Schumann, Robert" and job["request"]["seed"] == 11
        assert job["request"]["continue_from"] == "beginning.abc"
        browser.screenshot(tmp_path / "valid.png")

        # Without a beginning and without strict decoding this model (which only wants to end) writes no music:
        # the page must say that the piece is invalid, not pretend.
        assert browser.script("return document.getElementById('strict').checked") is True  # the server's default
        browser.click("#clear-beginning")
        browser.click("#strict")
        browser.click("#generate")
        problem = browser.wait_until("const p = document.querySelector('.piece .problem'); return p && p.textContent",
                                     what="the invalid piece")
        assert "not valid music" in problem
        assert browser.script("return document.querySelector('.badge').textContent") == "invalid"
        browser.wait_until("return document.querySelectorAll('#history li[data-job]').length === 2",
                           what="two jobs in the history")
        shots = os.environ.get("NOTAGEN_SCREENSHOTS")
        browser.screenshot(Path(shots) / "studio-invalid.png" if shots else tmp_path / "invalid.png")
        if shots:
            shutil.copy(tmp_path / "valid.png", Path(shots) / "studio-valid.png")
