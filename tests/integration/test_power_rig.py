"""Real guests: stop, start, reboot and resize through the API, seen on the guest's
serial console as the API returns it (the guest prints FABRIC-GUEST-POWEROFF when the
ACPI power button is pressed, FABRIC-GUEST-READY when it has booted; see guest/init).

One guest (CI has two cores); it is destroyed at the end, whatever happens.
"""

from __future__ import annotations

import time

import pytest
import requests

from tests.integration.conftest import BOOT_MARKER, host_domains

pytestmark = pytest.mark.integration

POWEROFF = "FABRIC-GUEST-POWEROFF"


def console(fabric, vmid: int, kb: int = 256) -> str:
    r = fabric.get("/vm/console", vmid=vmid, kb=kb)
    assert r.status_code == 200, r.text
    body = r.json()
    assert "note" not in body, body  # a real host keeps the log
    return body["console"]


def wait_console(fabric, vmid: int, marker: str, count: int, timeout: float = 180) -> str:
    """Wait until ``marker`` is on the console (as the API shows it) ``count`` times."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = console(fabric, vmid)
        if text.count(marker) >= count:
            return text
        time.sleep(1)
    raise AssertionError(f"{marker} x{count} not on vm {vmid}'s console:\n{text[-3000:]}")


def power(fabric, path: str, **data) -> requests.Response:
    """A power call; ``timeout`` in ``data`` is the API's (the guest's grace)."""
    return requests.post(fabric.url + path, json=data, timeout=300)


def free(fabric, pmid: int) -> dict:
    return fabric.get("/pm/query", pmid=pmid).json()["free"]


def test_stop_start_reboot_and_resize_seen_on_the_console(fabric):
    vm = fabric.create("power-1")
    vmid, pmid = vm["vmid"], vm["pmid"]
    try:
        text = wait_console(fabric, vmid, BOOT_MARKER, 1)
        assert "Linux version" in text  # the kernel's boot log, through the API
        assert POWEROFF not in text
        tail = fabric.get("/vm/console", vmid=vmid, kb=1).json()
        assert len(tail["console"].encode()) <= 1024 and tail["truncated"] is True
        assert tail["size"] > 1024
        before = free(fabric, pmid)

        # stop: the guest sees the power button and powers off by itself
        r = power(fabric, "/vm/stop", vmid=vmid, timeout=90)
        assert r.status_code == 200, r.text
        assert r.json()["how"] == "graceful"
        assert fabric.get("/vm/query", vmid=vmid).json()["status"] == "stopped"
        assert host_domains(pmid)[vm["domain"]] == "shut off"
        assert POWEROFF in console(fabric, vmid)
        assert free(fabric, pmid) == before  # the claim is kept while stopped

        # start: it boots again; the log keeps the earlier output (append)
        r = power(fabric, "/vm/start", vmid=vmid)
        assert r.status_code == 200, r.text
        assert host_domains(pmid)[vm["domain"]] == "running"
        text = wait_console(fabric, vmid, BOOT_MARKER, 2)
        assert text.count(POWEROFF) == 1

        # reboot: a graceful power cycle; the state stays active
        r = power(fabric, "/vm/reboot", vmid=vmid, timeout=90)
        assert r.status_code == 200, r.text
        assert r.json()["how"] == "graceful"
        text = wait_console(fabric, vmid, BOOT_MARKER, 3)
        assert text.count(POWEROFF) == 2
        assert fabric.get("/vm/query", vmid=vmid).json()["status"] == "active"

        # resize that does not fit: refused, nothing changed, the guest untouched
        r = power(fabric, "/vm/resize", vmid=vmid, instance_type=3)
        assert r.status_code == 409, r.text
        assert "RAM: needs 384 MB more, 256 MB free" in r.json()["error"]
        assert fabric.get("/vm/query", vmid=vmid).json()["instance_type"] == 1
        assert console(fabric, vmid).count(POWEROFF) == 2

        # resize that fits: stopped (gracefully), 256 MB, started; the guest has it
        r = power(fabric, "/vm/resize", vmid=vmid, instance_type=2, timeout=90)
        assert r.status_code == 200, r.text
        assert (r.json()["ram"], r.json()["disk"]) == (256, 2)
        assert free(fabric, pmid)["ram"] == before["ram"] - 128
        text = wait_console(fabric, vmid, BOOT_MARKER, 4)
        assert text.count(POWEROFF) == 3
        assert "(2.15 GB/2.00 GiB)" in text.rsplit(BOOT_MARKER, 2)[1]  # its disk grew
        assert "(2.15 GB/2.00 GiB)" not in text.split(BOOT_MARKER, 1)[0]  # from 1 GB
        guest = fabric.ssh(fabric.get("/vm/query", vmid=vmid).json())
        mem_kb = int(guest.run(["sed", "-n", "s/MemTotal: *\\([0-9]*\\).*/\\1/p", "/proc/meminfo"]))
        assert 131_072 < mem_kb <= 262_144
    finally:
        fabric.get("/vm/destroy", vmid=vmid, force=1)
    assert vm["domain"] not in host_domains(pmid)
