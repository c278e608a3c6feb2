"""A page on another site, in a real browser, tries to change the fabric's state while
authentication is off (the default): a GET that creates a VM (an image tag) and a
form that destroys one. Both are refused; the fabric's own dashboard still works."""

from __future__ import annotations

import time

from tests.browser.test_dashboard_browser import by, wait
from tests.launch import ServedApp

EVIL_PAGE = """<!doctype html>
<html><body>
<h1>cute cats</h1>
<img src="{fabric}/vm/create?name=evil&amp;instance_type=1&amp;image_id=1">
<form id="f" method="post" action="{fabric}/vm/destroy">
  <input type="hidden" name="vmid" value="{vmid}">
</form>
<script>setTimeout(function () {{ document.getElementById('f').submit(); }}, 500);</script>
</body></html>
"""


def evil_site(fabric: str, vmid: int) -> ServedApp:
    page = EVIL_PAGE.format(fabric=fabric, vmid=vmid).encode()

    def app(environ, start_response):  # noqa: ANN001, ANN202
        start_response("200 OK", [("Content-Type", "text/html"), ("Cache-Control", "no-store")])
        return [page]

    return ServedApp(app, threads=4)


def test_another_site_cannot_create_or_destroy_vms(browser, served, rig):
    fabric = served.url  # http://127.0.0.1:PORT
    vm = rig.fabric.create_vm("mine", 1, 1)
    evil = evil_site(fabric, vm.id)
    try:
        # localhost and 127.0.0.1 are different sites to the browser
        browser.get(evil.url.replace("127.0.0.1", "localhost") + "/")
        wait(browser, lambda d: d.current_url.startswith(fabric))  # the form was sent
        body = browser.find_element(by().TAG_NAME, "body").text
        assert "refused: a cross-site request may not change state" in body, body
        time.sleep(0.5)
    finally:
        evil.stop()
    assert [(v.id, v.name) for v in rig.registry.vms.list()] == [(vm.id, "mine")]
    # the fabric's own pages are same-origin: their forms work
    browser.get(fabric + "/")
    button = browser.find_element(
        by().CSS_SELECTOR, '#vm-table tr[data-name="mine"] button[name="destroy"]'
    )
    browser.execute_script("arguments[0].closest('form').submit()", button)
    wait(browser, lambda d: not rig.registry.vms.list())
