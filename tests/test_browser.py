"""End to end in a real browser: Debian's Chromium, driven by Selenium, against `streamlit run`.

Skips when /usr/bin/chromium (or selenium) is missing, unless TOKCONV_REQUIRE_BROWSER is set
(CI sets it after scripts/install_browser.sh), in which case it fails. Screenshots and the
server log go to artifacts/.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
REQUIRED = bool(os.environ.get("TOKCONV_REQUIRE_BROWSER"))
FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
    "--window-size=1400,1100",
]
MODEL_WORK = 300  # seconds to wait for a run on a busy 2-core machine

pytestmark = pytest.mark.slow


def _missing() -> str | None:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        return f"{CHROMIUM} or {CHROMEDRIVER} is missing (install them with scripts/install_browser.sh)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -r requirements-dev.txt)"
    return None


if (why := _missing()) is not None:
    if REQUIRED:
        pytest.fail(f"TOKCONV_REQUIRE_BROWSER is set but {why}", pytrace=False)
    pytest.skip(f"browser test skipped: {why}; set TOKCONV_REQUIRE_BROWSER=1 to make this an error", allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    """A `streamlit run` of the dashboard on a free port, killed at the end whatever happens."""
    ARTIFACTS.mkdir(exist_ok=True)
    port = _free_port()
    log = (ARTIFACTS / "streamlit-server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
         # no file watcher: an edit elsewhere in the tree must not reload modules under running sessions
         "--server.fileWatcherType", "none"],
        cwd=ROOT, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read().decode().strip() == "ok":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"streamlit did not start (exit code {proc.poll()}); see {log.name}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def browsers():
    """Make Chromium sessions on demand; all are closed at the end."""
    made = []

    def make():
        opts = webdriver.ChromeOptions()
        opts.binary_location = str(CHROMIUM)
        for flag in FLAGS:
            opts.add_argument(flag)
        driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=opts)
        made.append(driver)
        return driver

    yield make
    for d in made:
        d.quit()


def _wait(driver, what, timeout: float = MODEL_WORK, message: str = ""):
    return WebDriverWait(driver, timeout, poll_frequency=0.5).until(lambda d: what(d), message)


def _text(driver) -> str:
    return driver.find_element(By.TAG_NAME, "body").text


def _click_button(driver, label: str) -> None:
    xpath = f"//button[normalize-space(.)='{label}']"
    _wait(driver, lambda d: d.find_elements(By.XPATH, xpath), 60, f"no '{label}' button")
    driver.find_element(By.XPATH, xpath).click()


def _shot(driver, name: str) -> None:
    """A tall screenshot, so the charts below the fold are in it too."""
    driver.set_window_size(1400, 3200)
    time.sleep(1.0)  # let the charts re-layout
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))
    driver.set_window_size(1400, 1100)


def _charts(driver) -> int:
    return len(driver.find_elements(By.CSS_SELECTOR, ".vega-embed svg, .vega-embed canvas"))


def _open_and_run(driver, url: str, done_text: str) -> None:
    driver.get(url)
    _wait(driver, lambda d: "Runs this session" in _text(d), 60, "the sidebar of the frame never appeared")
    _click_button(driver, "Run")
    _wait(driver, lambda d: done_text in _text(d) and _charts(d) > 0, message=f"no '{done_text}' and chart")
    assert not driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')


def test_solo_then_battle_in_a_real_browser(server, browsers):
    d = browsers()
    # a shared link: the settings come from the URL (and this is the fresh server's first page request)
    _open_and_run(d, f"{server}/solo?length=6&iterations=5", "Converged after 2 iterations.")
    _shot(d, "browser-solo")
    assert d.find_elements(By.CSS_SELECTOR, "span[title^='position 1:']")  # token chips
    assert "length=6" in d.current_url
    # changing a setting puts it in the URL
    box = d.find_element(By.CSS_SELECTOR, "input[aria-label='Max iterations']")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys("7", Keys.ENTER)
    _wait(d, lambda d: "iterations=7" in d.current_url, 30, f"URL not updated: {d.current_url}")

    # Cancel stops a long run between two steps and keeps what it did so far
    # (long enough that a fast engine is still busy when Cancel arrives: ~2.5n single-mode iterations)
    d.get(f"{server}/solo?mode=single&length=160&iterations=1000&seed=3")
    _wait(d, lambda d: "Runs this session" in _text(d), 60, "the page never appeared")
    _click_button(d, "Run")
    progress = re.compile(r"Iteration \d+ of at most 1000")
    _wait(d, lambda d: progress.search(_text(d)), message="the run never reported progress")
    _click_button(d, "Cancel")
    _wait(d, lambda d: "Interrupted after" in _text(d), 60, "Cancel did not stop the run")
    _shot(d, "browser-cancelled")

    _open_and_run(d, f"{server}/battle?model_b=gemma3-270m&battle_mode=adversarial&length=6&iterations=4", "Oscillation period")
    _shot(d, "browser-battle")
    assert "gemma3-270m" in _text(d)


def test_two_browser_sessions_run_at_once(server, browsers):
    a, b = browsers(), browsers()
    urls = [f"{server}/solo?length=5&iterations=5&seed={seed}" for seed in (11, 12)]
    for d, url in zip((a, b), urls):
        d.get(url)
        _wait(d, lambda d: "Runs this session" in _text(d), 60, "the page never appeared")
    for d in (a, b):  # start both before waiting for either
        _click_button(d, "Run")
    for i, d in enumerate((a, b)):
        _wait(d, lambda d: "Converged after" in _text(d) and _charts(d) > 0, message=f"session {i} did not finish")
        _shot(d, f"browser-concurrent-{i}")
        assert not d.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
