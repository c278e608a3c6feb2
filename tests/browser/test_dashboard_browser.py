"""The dashboard in a real headless chromium, against the app served on waitress.

Load it, create a VM with the form, see it in the VM table, destroy it with its
button, see it gone; check a VM out of a pool and back in. Full-page
screenshots are saved (``FABRIC_SCREENSHOT_DIR`` keeps them) to be looked at.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from tests.browser.conftest import screenshot_dir
from tests.conftest import make_pool_rig, wait_for
from tests.launch import ServedApp


def by():  # noqa: ANN201 - selenium's By, imported late (the fixture explains a missing one)
    from selenium.webdriver.common.by import By

    return By


def full_page_screenshot(driver, path: Path) -> Path:
    """Grow the window until the whole page fits in the viewport, then capture it."""
    driver.execute_script("window.scrollTo(0, 0)")
    for _ in range(3):
        page_h, view_h = driver.execute_script(
            "return [document.documentElement.scrollHeight, window.innerHeight]"
        )
        if page_h <= view_h:
            break
        size = driver.get_window_size()
        driver.set_window_size(1400, min(size["height"] + page_h - view_h + 10, 8000))
    driver.execute_script("window.scrollTo(0, 0)")
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 10_000, "the screenshot is blank"
    return path


def wait(driver, predicate, timeout: float = 120.0):  # noqa: ANN001, ANN201
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: predicate(d))


def vm_names(driver) -> list[str]:
    return [
        row.get_attribute("data-name")
        for row in driver.find_elements(by().CSS_SELECTOR, "#vm-table tbody tr")
    ]


def flash_texts(driver) -> list[str]:
    return [e.text for e in driver.find_elements(by().CSS_SELECTOR, ".flash")]


def submit_and_wait(driver, button) -> None:  # noqa: ANN001
    """Click a form's button and wait for the next page (the redirect back to /)."""
    old = driver.find_element(by().TAG_NAME, "html")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", button)
    button.click()
    wait(driver, lambda d: _stale(old))


def _stale(element) -> bool:  # noqa: ANN001
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException

    try:
        element.tag_name  # noqa: B018 - touching it raises once the page has changed
    except StaleElementReferenceException:
        return True
    except WebDriverException as e:
        # ChromeDriver's other way of saying so, when it asks in the middle of the
        # navigation: the node is in the old document, not the new one.
        if "does not belong to the document" in str(e):
            return True
        raise
    return False


def test_create_and_destroy_a_vm_in_the_browser(browser, served, rig, tmp_path):
    By = by()
    d = browser
    d.get(served.url + "/")
    assert d.title == "libvirt fabric"
    hosts = d.find_elements(By.CSS_SELECTOR, ".host .host-name")
    assert [h.text for h in hosts] == [h.label for h in rig.registry.hosts.list()]
    assert len(d.find_elements(By.CSS_SELECTOR, ".host .bar .fill")) == 9
    # the stylesheet loaded (the header is dark, not the browser's default)
    bg = d.find_element(By.CSS_SELECTOR, "header.top").value_of_css_property("background-color")
    assert bg in ("rgba(21, 32, 46, 1)", "rgb(21, 32, 46)")
    assert vm_names(d) == []

    form = d.find_element(By.ID, "vm-create-form")
    form.find_element(By.NAME, "name").send_keys("browser-vm")
    from selenium.webdriver.support.ui import Select

    Select(form.find_element(By.NAME, "instance_type")).select_by_value("2")
    Select(form.find_element(By.NAME, "image_id")).select_by_visible_text("2: alpine")
    submit_and_wait(d, form.find_element(By.CSS_SELECTOR, "button[type=submit]"))

    assert d.current_url.endswith("/#vms")
    assert any(t.startswith("Created VM browser-vm (vmid 1)") for t in flash_texts(d))
    assert vm_names(d) == ["browser-vm"]
    row = d.find_element(By.CSS_SELECTOR, '#vm-table tr[data-name="browser-vm"]')
    cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
    assert cells[2] == "active" and cells[4] == "standard" and cells[5] == "alpine"
    vm = rig.registry.vms.get(1)
    assert vm.state == "active" and vm.tid == 2 and vm.image_id == 2
    shot = full_page_screenshot(d, screenshot_dir(tmp_path) / "dashboard-with-vm.png")
    print(f"screenshot: {shot}")

    # a bad name: the browser's own check stops it; sent anyway, the server explains
    d.execute_script(
        "document.querySelector('#vm-create-form input[name=name]').removeAttribute('pattern')"
    )
    form = d.find_element(By.ID, "vm-create-form")
    form.find_element(By.NAME, "name").send_keys("bad name!")
    submit_and_wait(d, form.find_element(By.CSS_SELECTOR, "button[type=submit]"))
    assert any("letters, digits" in t for t in flash_texts(d))

    d.set_window_size(1400, 1000)
    button = d.find_element(
        By.CSS_SELECTOR, '#vm-table tr[data-name="browser-vm"] button[name="destroy"]'
    )
    old = d.find_element(By.TAG_NAME, "html")
    d.execute_script("arguments[0].scrollIntoView({block: 'center'})", button)
    button.click()
    alert = wait(d, lambda dr: _alert(dr))
    assert "Destroy VM browser-vm" in alert.text
    alert.accept()
    wait(d, lambda dr: _stale(old))
    assert "Destroyed VM browser-vm (vmid 1)." in flash_texts(d)
    assert vm_names(d) == []
    assert d.find_element(By.ID, "no-vms").text == "No VMs yet."
    assert rig.registry.vms.list() == []
    full_page_screenshot(d, screenshot_dir(tmp_path) / "dashboard-after-destroy.png")


def _alert(driver):  # noqa: ANN001, ANN202
    from selenium.common.exceptions import NoAlertPresentException

    try:
        return driver.switch_to.alert
    except NoAlertPresentException:
        return None


def serve_app(app):  # noqa: ANN001, ANN201
    """An app of our own on waitress; returns (server, url); stop it with ``server.stop()``."""
    served = ServedApp(app, threads=8)
    return served, served.url


@pytest.fixture
def pool_rig(tmp_path):
    pr = make_pool_rig(
        tmp_path,
        [
            {"cpus": 4, "ram": 4096, "target": "root@127.0.0.5", "extra": {"network": "forward"}},
            {"cpus": 8, "ram": 8192, "target": "root@127.0.0.6", "extra": {"network": "forward"}},
        ],
        [
            {
                "name": "small",
                "instance_type": 1,
                "image": "debian-12",
                "ready_check": "none",
                "size": 2,
                "max": 4,
                "cleanup": "reset",
                "lifetime": 2,
                "lifetime_max": 24,
            }
        ],
    )
    wait_for(lambda: pr.pools.status()["small"]["ready"] == 2)
    yield pr
    pr.stop()


def test_check_out_and_in_with_the_forms(browser, pool_rig, tmp_path):
    from orchestrator.api import create_app

    d = browser
    schedules = pool_rig.rig.services.schedules  # not started
    schedules.create(
        {"name": "peak", "pool": "small", "count": 2, "cron": "0 8 * * 1-5",
         "duration_minutes": 600}
    )  # fmt: skip
    server, url = serve_app(create_app(pool_rig.rig.services))
    try:
        _check_out_and_in(d, url, pool_rig, tmp_path)
    finally:
        server.stop()


def _check_out_and_in(d, url, pool_rig, tmp_path) -> None:  # noqa: ANN001
    By = by()
    d.get(url + "/")
    assert "pool small" in d.find_element(By.ID, "schedule-table").text
    form = d.find_element(By.ID, "volume-create-form")
    form.find_element(By.NAME, "name").send_keys("scratch")
    submit_and_wait(d, form.find_element(By.CSS_SELECTOR, "button[type=submit]"))
    assert "Created volume scratch (volumeid 1, 1 GB)." in flash_texts(d)
    row = d.find_element(By.CSS_SELECTOR, '#pool-table tr[data-pool="small"]')
    assert [c.text for c in row.find_elements(By.CSS_SELECTOR, "td.num")][:2] == ["2", "0"]

    form = d.find_element(By.ID, "checkout-form")
    submit_and_wait(d, form.find_element(By.CSS_SELECTOR, "button[type=submit]"))
    msg = next(t for t in flash_texts(d) if t.startswith("Checked out"))
    vmid = int(re.search(r"vmid (\d+)", msg).group(1))
    secret = d.find_element(By.ID, "reservation-secret").get_attribute("value")
    assert len(secret) == 43
    assert d.find_elements(By.CSS_SELECTOR, f'#reservation-table tr[data-vmid="{vmid}"]')
    assert d.find_elements(By.CSS_SELECTOR, "#charts polyline.s-inuse")
    shot = full_page_screenshot(d, screenshot_dir(tmp_path) / "dashboard-checked-out.png")
    print(f"screenshot: {shot}")

    d.set_window_size(1400, 1000)
    form = d.find_element(By.ID, "checkin-form")
    from selenium.webdriver.support.ui import Select

    Select(form.find_element(By.NAME, "vmid")).select_by_value(str(vmid))
    form.find_element(By.NAME, "reservation_id").send_keys(secret)
    submit_and_wait(d, form.find_element(By.CSS_SELECTOR, "button[type=submit]"))
    assert any(t.startswith(f"Checked in vmid {vmid}") for t in flash_texts(d))
    assert not d.find_elements(By.ID, "reservation-secret")  # shown once only
    assert secret not in d.page_source
    wait_for(lambda: pool_rig.rig.registry.vms.get(vmid).state == "ready")


def test_sign_in_then_create_a_vm(browser, rig, tmp_path):
    """With auth on: the login page, the fabric_token cookie, and a form that uses it
    (the API's token rule lets the cookie through from our own pages)."""
    from orchestrator.api import create_app
    from orchestrator.auth import AuthService, hash_password
    from orchestrator.config import AuthSettings

    By = by()
    d = browser
    auth = AuthService(
        rig.registry.auth, AuthSettings(enabled=True, users={"ops": hash_password("pw")})
    )
    server, url = serve_app(create_app(replace(rig.services, auth=auth)))
    try:
        d.get(url + "/")
        assert d.current_url == url + "/ui/login"
        full_page_screenshot(d, screenshot_dir(tmp_path) / "dashboard-login.png")
        form = d.find_element(By.ID, "login-form")
        form.find_element(By.NAME, "user").send_keys("ops")
        form.find_element(By.NAME, "password").send_keys("wrong")
        submit_and_wait(d, form.find_element(By.CSS_SELECTOR, "button[type=submit]"))
        assert any("password" in t for t in flash_texts(d))

        form = d.find_element(By.ID, "login-form")
        form.find_element(By.NAME, "user").send_keys("ops")
        form.find_element(By.NAME, "password").send_keys("pw")
        submit_and_wait(d, form.find_element(By.CSS_SELECTOR, "button[type=submit]"))
        assert d.current_url == url + "/"
        assert "signed in as ops" in d.find_element(By.CSS_SELECTOR, "header.top").text
        cookie = d.get_cookie("fabric_token")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

        form = d.find_element(By.ID, "vm-create-form")
        form.find_element(By.NAME, "name").send_keys("authed-vm")
        submit_and_wait(d, form.find_element(By.CSS_SELECTOR, "button[type=submit]"))
        assert vm_names(d) == ["authed-vm"], d.page_source[:500]

        submit_and_wait(d, d.find_element(By.CSS_SELECTOR, "header.top button.link"))
        assert d.current_url == url + "/ui/login"
        assert d.get_cookie("fabric_token") is None
    finally:
        server.stop()
