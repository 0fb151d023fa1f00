"""End to end in a real browser: a chart's PNG and SVG buttons download real image files (made offline)."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET

import pytest

from test_browser import CHROMEDRIVER, CHROMIUM, FLAGS, _click_button, _open_and_run, server  # noqa: F401  (server: fixture)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture
def downloading_browser(tmp_path):
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        opts.add_argument(flag)
    opts.add_experimental_option("prefs", {"download.default_directory": str(tmp_path), "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=opts)
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(tmp_path)})
    yield driver, tmp_path
    driver.quit()


def _downloaded(folder, suffix: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = [p for p in folder.iterdir() if p.suffix == suffix]
        if done:
            return done[0].read_bytes()
        time.sleep(0.3)
    raise AssertionError(f"no {suffix} file downloaded into {folder}: {sorted(p.name for p in folder.iterdir())}")


def test_chart_png_and_svg_buttons_download_real_images(server, downloading_browser):  # noqa: F811
    d, folder = downloading_browser
    _open_and_run(d, f"{server}/solo?length=6&iterations=5", "Converged after 2 iterations.")
    _click_button(d, "Chart (PNG)")
    png = _downloaded(folder, ".png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    _click_button(d, "Chart (SVG)")
    svg = _downloaded(folder, ".svg")
    assert ET.fromstring(svg).tag.endswith("svg")
