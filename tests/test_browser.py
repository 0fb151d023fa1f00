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
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

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


@contextmanager
def _serve(env: dict[str, str] | None = None, log_name: str = "streamlit-server.log") -> Iterator[str]:
    """A `streamlit run` of the dashboard on a free port (its URL), stopped at the end whatever happens."""
    ARTIFACTS.mkdir(exist_ok=True)
    port = _free_port()
    log = (ARTIFACTS / log_name).open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
         # no file watcher: an edit elsewhere in the tree must not reload modules under running sessions
         "--server.fileWatcherType", "none"],
        cwd=ROOT, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT,
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


@pytest.fixture(scope="module")
def server():
    """The dashboard, shared by the tests of this module that need no database of their own."""
    with _serve() as url:
        yield url


@pytest.fixture
def browsers():
    """Make Chromium sessions on demand; all are closed at the end."""
    made = []

    def make(network_log: bool = False):
        opts = webdriver.ChromeOptions()
        opts.binary_location = str(CHROMIUM)
        for flag in FLAGS:
            opts.add_argument(flag)
        if network_log:  # Chrome's performance log lists every request the page makes (Network.requestWillBeSent)
            opts.set_capability("goog:loggingPrefs", {"performance": "ALL"})
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


RESULT = re.compile(r"(Converged after|Oscillating:|Stopped at the iteration limit|Blocked \d+ position)")


def _wait_result(d, timeout: float = MODEL_WORK) -> None:
    _wait(d, lambda d: RESULT.search(_text(d)) and _charts(d) > 0, timeout, "no run result and chart")


def test_a_saved_run_opens_on_a_restarted_server_without_running_again(browsers, tmp_path):
    from tokconv.store import RunStore

    db = tmp_path / "runs.sqlite"
    env = {"TOKCONV_DB": str(db)}
    link = "/solo?length=12&mode=batch&iterations=30"
    d = browsers()
    with _serve(env, "streamlit-server-first.log") as url:
        _open_and_run(d, url + link, "Saved as run #1.")
        _wait(d, lambda d: "run=1" in d.current_url, 30, f"no run id in the URL: {d.current_url}")
    [row] = RunStore(db).list()
    with _serve(env, "streamlit-server-second.log") as url:  # a new server: nothing in memory, only the database
        d.get(url + link)
        _wait_result(d)  # shown without pressing Run
        assert "Saved run #1" in _text(d)
        _shot(d, "browser-restarted-settings")
        d.get(url + "/solo?run=1")  # the link with the run id: the run and its settings
        _wait_result(d)
        assert "Saved run #1" in _text(d)
        box = d.find_element(By.CSS_SELECTOR, "input[aria-label='Length (tokens)']")
        assert box.get_attribute("value") == "12"
        _click_button(d, "Run")  # identical settings: the saved run, not a new one
        time.sleep(3)
        _wait_result(d)
        assert not d.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
    assert [r.id for r in RunStore(db).list()] == [row.id]


EVIL = "![](//evil.example/)"  # 20 characters: run_label keeps the first 20 of a start text


def _requested(d) -> list[str]:
    """Every URL the browser asked for since the last call."""
    import json

    urls = []
    for entry in d.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    return urls


def test_markdown_in_user_text_makes_no_request_leave_the_machine(browsers, tmp_path):
    from tiny import constant_lm, run_tiny

    from tokconv.store import RunStore

    db = tmp_path / "runs.sqlite"
    # an imported run whose model name is a markdown image (History shows it)
    RunStore(db).save(run_tiny("adversarial-single", [constant_lm(1, name=EVIL), constant_lm(2, name="B")], [0, 0, 0]))
    d = browsers(network_log=True)
    q = urllib.parse.quote
    with _serve({"TOKCONV_DB": str(db)}, "streamlit-server-injection.log") as url:
        # a shared link whose start text is a markdown image: the status label, captions and chips carry it
        _open_and_run(d, f"{url}/solo?mode=sequential&iterations=3&start_text={q(EVIL)}", "Saved as run #2.")
        _shot(d, "browser-injection-solo")
        urls = _requested(d)  # collected as it goes: Chrome's log buffer is not unbounded
        # the 'other model' field from the link, holding markdown and then a readable file that is no model
        d.get(f"{url}/solo?model={q('other…')}&model_other={q(EVIL)}")
        _wait(d, lambda d: "Runs this session" in _text(d), 60, "the page never appeared")
        _click_button(d, "Run")
        _wait(d, lambda d: "unknown model" in _text(d), 60, "no error for the markdown model name")
        urls += _requested(d)
        d.get(f"{url}/solo?model={q('other…')}&model_other={q('/etc/passwd')}")
        _wait(d, lambda d: "Runs this session" in _text(d), 60, "the page never appeared")
        _click_button(d, "Run")
        _wait(d, lambda d: "not a GGUF file" in _text(d), 60, "no error for a file that is no model")
        assert "root:" not in _text(d)
        urls += _requested(d)
        d.get(f"{url}/history?run=1")
        _wait(d, lambda d: "Changes by" in _text(d), 60, "History did not open the imported run")
        _shot(d, "browser-injection-history")
        time.sleep(2)  # let any image request go out
        urls += _requested(d)
    assert urls, "the performance log recorded no request at all"
    hosts = {urllib.parse.urlsplit(u).hostname for u in urls if not u.startswith(("data:", "blob:", "about:"))}
    assert hosts == {"127.0.0.1"}, [u for u in urls if urllib.parse.urlsplit(u).hostname != "127.0.0.1"]
