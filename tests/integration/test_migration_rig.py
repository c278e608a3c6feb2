"""Live migration of a real running guest between two of the local datacenter's hosts
(orchestrator.hypervisor.migration.live_migrate), over the rig's migration LAN.

One TCG guest on the LAN (a DHCP reservation gives it a fixed address), made by the
fabric's own driver on pm1: a migration to an address where the target cannot listen
fails and leaves it running on pm1 with pm2 clean; then it moves live to pm2, where it
answers SSH at the same address with its uptime and its tmpfs intact (a reboot would
restart the one and empty the other), on exactly one host.
"""

from __future__ import annotations

import contextlib
import secrets
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from orchestrator.errors import HypervisorError
from orchestrator.hypervisor.connection import SshOptions, transport_uri
from orchestrator.hypervisor.driver import HostTarget, LibvirtDriver, StagedImage, VmPlan
from orchestrator.hypervisor.migration import live_migrate
from orchestrator.inventory import load_hosts
from tests.integration.conftest import (
    BOOT_MARKER,
    HOST_KEY,
    LAN_PM_FILE,
    RIG,
    Guest,
    _require_rig,
    host_domains,
    host_pool_files,
    host_shell,
)

pytestmark = pytest.mark.integration

VM_ID = 9701  # far from the ids a fabric hands out; its files are vm-9701.*
DOMAIN = "migtest-9701"  # not fabric-*: no fabric's reconcile takes it for its own
MAC = "52:54:00:97:01:01"
ADDRESS = "10.251.1.97"  # in the LAN's plan; a reservation file gives it to MAC
IMAGE_KEY = "migtest"  # staged as image-migtest.qcow2 in each host's pool
SOURCE, TARGET = 1, 2  # pmids, in the order of the pm file


def _targets() -> dict[int, HostTarget]:
    specs = load_hosts(str(RIG / LAN_PM_FILE))
    return {
        i: HostTarget(
            id=i,
            label=s.label,
            uri=s.uri,
            domain_type=s.domain_type,
            network=s.network or "user",
            address=s.address,
            pool_path=s.pool_path,
            migrate_address=s.migrate_address,
        )
        for i, s in enumerate(specs, start=1)
    }


class Rig:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.hosts = _targets()
        self.src, self.dst = self.hosts[SOURCE], self.hosts[TARGET]
        for h in (self.src, self.dst):
            assert h.migrate_address, (
                f"{RIG / LAN_PM_FILE} has no migrate_address= for {h.label}: "
                "run bin/local-datacenter up (it adds the migration LAN)"
            )
        ssh = SshOptions(key=str(RIG / HOST_KEY), known_hosts=str(RIG / "known_hosts"))
        self.driver = LibvirtDriver(ssh=ssh, state_dir=tmp, call_timeout=120)
        self.wrapper = ssh.wrapper(tmp)
        self.uuid = str(uuid.uuid4())
        self.reservation = RIG / "lan" / "hosts.d" / f"migtest-{VM_ID}"

    def conn(self, host: HostTarget) -> libvirt.virConnect:
        return libvirt.open(transport_uri(host.uri, self.wrapper))

    def stage(self, host: HostTarget) -> StagedImage:
        image = RIG / "guest" / "guest.qcow2"

        @contextlib.contextmanager
        def opener(path: str) -> Iterator[tuple[object, int]]:
            with open(path, "rb") as f:
                yield f, Path(path).stat().st_size

        return self.driver.stage(host, IMAGE_KEY, "qcow2", {"disk": str(image)}, opener, True)

    def pool_dir(self, host: HostTarget) -> str:
        assert host.pool_path
        return host.pool_path.rstrip("/")

    def cleanup(self) -> None:
        for host in (self.src, self.dst):
            with contextlib.suppress(Exception):
                self.driver.destroy(host, self.uuid, VM_ID)
            with contextlib.suppress(Exception):
                self.driver.delete_volume(host, f"image-{IMAGE_KEY}.qcow2")
        self.reservation.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    _require_rig()
    r = Rig(tmp_path_factory.mktemp("migration"))
    try:
        yield r
    finally:
        r.cleanup()


def _wait_booted(host: HostTarget, console: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = host_shell(host.id).run(["cat", console]).stdout
        if BOOT_MARKER in text:
            return
        time.sleep(1)
    raise AssertionError(f"the guest did not boot on {host.label}; console:\n{text[-2000:]}")


def _guest(tmp: Path, attempts: int = 60) -> Guest:
    guest = Guest(tmp, ADDRESS, 22)
    for _ in range(attempts):
        try:
            guest.run(["true"])
            return guest
        except Exception:  # not up yet: the address, sshd, the key
            time.sleep(1)
    guest.run(["true"])
    return guest


def _uptime(guest: Guest) -> float:
    return float(guest.run(["cat", "/proc/uptime"]).split()[0])


def _state(conn: libvirt.virConnect, uid: str) -> str:
    try:
        dom = conn.lookupByUUIDString(uid)
    except libvirt.libvirtError:
        return "absent"
    running = "running" if dom.isActive() else "shut off"
    return f"{running}, {'persistent' if dom.isPersistent() else 'transient'}"


def test_a_running_guest_moves_live_between_hosts_and_a_failed_move_leaves_it_running(rig):
    src, dst = rig.src, rig.dst
    # the same base image on both hosts (the caller's part of the contract)
    staged = rig.stage(src)
    staged_dst = rig.stage(dst)
    rig.reservation.write_text(f"{MAC},{ADDRESS}\n")
    rig.reservation.chmod(0o644)
    plan = VmPlan(
        vm_id=VM_ID,
        name="migtest",
        domain_name=DOMAIN,
        uuid=rig.uuid,
        mac=MAC,
        vcpus=1,
        ram_mb=128,
        disk_gb=1,
        arch="x86_64",
    )
    console = rig.driver.create(src, plan, staged)
    assert console
    _wait_booted(src, console)
    guest = _guest(rig.tmp)
    token = secrets.token_hex(8)
    guest.run(["sh", "-c", f"echo {token} > /tmp/migtest"])  # /tmp is a tmpfs: gone on reboot
    before = _uptime(guest)

    src_overlay = f"{rig.pool_dir(src)}/vm-{VM_ID}.qcow2"
    dst_overlay = f"{rig.pool_dir(dst)}/vm-{VM_ID}.qcow2"
    paths = {src_overlay: dst_overlay, staged.path: staged_dst.path}
    sconn, dconn = rig.conn(src), rig.conn(dst)
    try:
        # 1. The target's QEMU cannot listen on another host's migration address: the
        #    job fails; the guest runs on the source only, the target has nothing left.
        other = next(h for h in rig.hosts.values() if h.id not in (src.id, dst.id))
        assert other.migrate_address
        with pytest.raises(HypervisorError) as failed:
            live_migrate(
                sconn,
                dconn,
                rig.uuid,
                target_disk_paths=paths,
                migrate_address=other.migrate_address,
                timeout=300,
            )
        assert rig.uuid in str(failed.value), failed.value
        print(f"refused as expected: {failed.value}")
        assert _state(sconn, rig.uuid) == "running, persistent"
        assert _state(dconn, rig.uuid) == "absent"
        assert f"vm-{VM_ID}.qcow2" not in host_pool_files(dst.id)
        assert _uptime(guest) > before
        assert guest.run(["cat", "/tmp/migtest"]).strip() == token

        # 2. The real move, over the migration LAN.
        before = _uptime(guest)
        t0 = time.monotonic()
        live_migrate(
            sconn,
            dconn,
            rig.uuid,
            target_disk_paths=paths,
            migrate_address=dst.migrate_address,
            timeout=300,
        )
        took = time.monotonic() - t0
        assert _state(dconn, rig.uuid) == "running, persistent"
        assert _state(sconn, rig.uuid) == "absent"  # undefined on the source too
        assert DOMAIN in host_domains(dst.id) and DOMAIN not in host_domains(src.id)
        # the source keeps no stale copy of its disk or console log; its base stays
        left = host_pool_files(src.id)
        assert not {f"vm-{VM_ID}.qcow2", f"vm-{VM_ID}.console.log"} & left, left
        assert Path(staged.path).name in left
        # the disk now lives on the target, backed by the target's staged base image
        info = host_shell(dst.id).run(["qemu-img", "info", "-U", dst_overlay]).stdout
        assert staged_dst.path in info, info
        # the same guest, never restarted, at the same LAN address
        after = _uptime(_guest(rig.tmp, attempts=30))
        assert after > before, (before, after)
        assert guest.run(["cat", "/tmp/migtest"]).strip() == token
        print(f"live migration took {took:.1f}s; guest uptime {before:.1f}s -> {after:.1f}s")
    finally:
        sconn.close()
        dconn.close()
