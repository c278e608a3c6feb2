"""A real headless browser (Debian's chromium and chromium-driver, driven by Selenium).

Without them the browser tests skip, with the reason; with ``CI`` or
``FABRIC_REQUIRE_RIG`` set they fail instead, so CI cannot pass without them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",  # chromium refuses to run as root otherwise
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--no-first-run",
    "--no-default-browser-check",
    "--window-size=1400,1000",
]


def _missing(why: str) -> None:
    if os.environ.get("CI") or os.environ.get("FABRIC_REQUIRE_RIG"):
        pytest.fail(f"the browser test needs {why} (install: bin/install-deps)")
    pytest.skip(f"no browser: {why} (install with bin/install-deps)")


def _find(*names: str) -> str | None:
    for n in names:
        found = shutil.which(n) or (n if os.path.isabs(n) and os.access(n, os.X_OK) else None)
        if found:
            return found
    return None


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("the selenium Python package (.venv/bin/pip install -e '.[test]')")
    chromium = _find("chromium", "/usr/bin/chromium", "chromium-browser")
    driver_bin = _find("chromedriver", "/usr/bin/chromedriver")
    if chromium is None:
        _missing("Debian's chromium package")
    if driver_bin is None:
        _missing("Debian's chromium-driver package")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        opts.add_argument(flag)
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    opts.add_argument(f"--user-data-dir={profile}")
    # An explicit driver path: Selenium Manager never downloads anything.
    service = Service(executable_path=driver_bin, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=opts, service=service)
    driver.set_page_load_timeout(120)  # a give-up on a page that never loads
    try:
        yield driver
    finally:
        driver.quit()


def screenshot_dir(tmp_path: Path) -> Path:
    """Where screenshots go: ``FABRIC_SCREENSHOT_DIR`` if set (to look at them), else tmp."""
    d = Path(os.environ.get("FABRIC_SCREENSHOT_DIR") or tmp_path)
    d.mkdir(parents=True, exist_ok=True)
    return d
