"""The integration rig: the fabric as its own process, over the local datacenter
(`bin/local-datacenter up`): real libvirt session daemons reached over real SSH,
real QEMU (TCG) guests. Without the rig these tests fail in CI and are skipped,
saying why, on a developer's machine that never brought it up."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest
import requests
import yaml

from orchestrator.remote import Remote, SshSettings
from tests.launch import launch

ROOT = Path(__file__).resolve().parents[2]
RIG = Path(os.environ.get("FABRIC_RIG_DIR", "/var/lib/fabric-demo"))
# The rig's two sets of files: guests on the LAN (bridge:br0; their addresses from
# its DHCP server, see test_lan_rig.py), and guests reached through a port forwarded
# on their host's address (network=forward: the session-only labs' way, which most of
# this suite uses).
PM_FILE = "physical_machines-forward"
CONFIG_FILE = "fabric-forward.yaml"
LAN_PM_FILE = "physical_machines"
LAN_CONFIG_FILE = "fabric.yaml"
NEEDED = [
    PM_FILE,
    "images",
    "vm_types",
    CONFIG_FILE,
    LAN_PM_FILE,
    LAN_CONFIG_FILE,
    "keys/id_ed25519",
    "keys/guest_ed25519",
]
HOST_KEY = "keys/id_ed25519"  # the fabric's key for the hosts
GUEST_KEY = "keys/guest_ed25519"  # the fabric's key for the guests
BOOT_MARKER = "FABRIC-GUEST-READY"


def _rig_hosts() -> dict[int, tuple[str, str]]:
    """pmid -> (user, SSH address) of the rig's hosts, in the order of its hosts file."""
    try:
        text = (RIG / PM_FILE).read_text()
    except OSError:
        return {}
    hosts: dict[int, tuple[str, str]] = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            user, addr = line.split()[0].split("@", 1)
            hosts[len(hosts) + 1] = (user, addr)
    return hosts


HOSTS = _rig_hosts()


def _require_rig() -> None:
    missing = [n for n in NEEDED if not (RIG / n).exists()]
    problem = None
    if missing:
        problem = f"the local datacenter is not up in {RIG} (missing {', '.join(missing)})"
    else:
        st = subprocess.run(
            [str(ROOT / "bin" / "local-datacenter"), "status", "--state-dir", str(RIG)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if st.returncode != 0:
            problem = f"bin/local-datacenter status failed:\n{st.stdout}\n{st.stderr}"
    if problem is None:
        return
    if os.environ.get("CI") or os.environ.get("FABRIC_REQUIRE_RIG"):
        pytest.fail(f"integration rig required but unusable: {problem}", pytrace=False)
    pytest.skip(f"{problem}; run bin/test (or bin/local-datacenter up) to get it")


def host_shell(pmid: int) -> Remote:
    user, addr = HOSTS[pmid]
    return Remote(
        user,
        addr,
        2222,
        SshSettings(key=str(RIG / HOST_KEY), known_hosts=str(RIG / "known_hosts")),
    )


def on_host(pmid: int, argv: list[str], timeout: float = 30) -> str:
    res = host_shell(pmid).run(argv, timeout=timeout)
    assert res.status == 0, f"{argv} on pm{pmid}: {res.stderr}"
    return res.stdout


def hold_port_on_host(pmid: int, port: int) -> subprocess.Popen:
    """A program on host pmid (over its SSH, so in the host's own network stack) listens
    on the host's address and `port` until the returned process's stdin is closed."""
    user, addr = HOSTS[pmid]
    code = (
        "import socket, sys; s = socket.socket(); "
        "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
        f"s.bind(({addr!r}, {port})); s.listen(); print('listening', flush=True); "
        "sys.stdin.read()"
    )
    proc = subprocess.Popen(
        [
            str(RIG / "ssh-wrapper"),
            "-p",
            "2222",
            f"{user}@{addr}",
            "python3",
            "-c",
            shlex.quote(code),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "listening"
    return proc


def release_port(proc: subprocess.Popen) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def host_domains(pmid: int) -> dict[str, str]:
    """name -> state of every domain (defined or running) on the host's session daemon."""
    out = on_host(pmid, ["virsh", "-c", "qemu:///session", "list", "--all"])
    doms = {}
    for line in out.splitlines()[2:]:
        parts = line.split(None, 2)
        if len(parts) == 3:
            doms[parts[1]] = parts[2].strip()
    return doms


def fabric_domains() -> set[str]:
    """Every domain on the three hosts that a fabric made."""
    return {d for p in HOSTS for d in host_domains(p) if d.startswith("fabric-")}


def host_pool_files(pmid: int) -> set[str]:
    user, _ = HOSTS[pmid]
    return set(on_host(pmid, ["ls", "-1", f"/home/{user}/fabric-pool"]).split())


class Guest:
    """SSH into a guest (at its address, or through its forwarded port), its host key
    checked."""

    def __init__(self, tmp: Path, ip: str, port: int, key_file: Path | None = None) -> None:
        key = (RIG / "guest" / "guest-host-key.pub").read_text().split()
        self.remote = Remote(
            "root",
            ip,
            port,
            SshSettings(key=str(key_file or RIG / GUEST_KEY)),
            pinned_keys=[f"{key[0]} {key[1]}"],  # the image's host key, and no other
        )

    def run(self, command: list[str]) -> str:
        res = self.remote.run(command, timeout=30)
        assert res.status == 0, res.stderr
        return res.stdout


def _merged(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


class FabricProcess:
    """`./script` on the rig's files, as a separate process we can SIGTERM or SIGKILL."""

    def __init__(self, tmp: Path, extra_config: str = "", *, lan: bool = False) -> None:
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        # Equal, small hosts, so `spread` has one obvious answer for each create.
        pm = (RIG / (LAN_PM_FILE if lan else PM_FILE)).read_text()
        self.pm = tmp / "physical_machines"
        for key, value in (("cpu", 2), ("ram", 384), ("disk", 6)):
            pm = re.sub(rf"\b{key}=\d+", f"{key}={value}", pm)
        self.pm.write_text(pm)
        self.images = tmp / "images"
        rig_images = [ln for ln in (RIG / "images").read_text().splitlines() if ln.strip()]
        store = rig_images[0].split(":", 1)[0]  # the image store's user@host
        # an image listed here but missing on the image store
        self.missing_image_id = len(rig_images) + 1
        self.images.write_text(
            "".join(f"{ln}\n" for ln in rig_images)
            + f"{store}:/home/pmimg/images/missing.qcow2 port=2222\n"
        )
        self.types = RIG / "vm_types"
        self.config = tmp / "fabric.yaml"
        self._base = yaml.safe_load(
            (RIG / (LAN_CONFIG_FILE if lan else CONFIG_FILE)).read_text()
            + f"\nstate_dir: {tmp / 'state'}\n"
            + "discovery: {interval: 3}\n"
            + "libvirt: {connect_timeout: 10, call_timeout: 30}\n"
            # not the default range, which a demo fabric on the same hosts may use
            + "create: {forward_ports: 23000-23999}\n"
        )
        self.set_config(extra_config)
        self.db = f"sqlite:///{tmp / 'registry.db'}"
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> None:
        self.proc, self.url = launch(
            [
                str(self.pm),
                str(self.images),
                str(self.types),
                "--config",
                str(self.config),
                "--db",
                self.db,
            ],
            self.tmp / "fabric.log",
        )

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)

    def log(self) -> str:
        return (self.tmp / "fabric.log").read_text(errors="replace")

    def get(self, path: str, timeout: float = 120, **params: Any) -> requests.Response:
        return requests.get(self.url + path, params=params, timeout=timeout)

    def post(self, path: str, timeout: float = 60, **data: Any) -> requests.Response:
        return requests.post(self.url + path, json=data, timeout=timeout)

    def set_config(self, extra_config: str) -> None:
        """The rig's configuration with ``extra_config`` (YAML) merged in, section by
        section (``guest: {address_timeout: 9}`` keeps the rig's guest key)."""
        extra = yaml.safe_load(extra_config) or {}
        self.config.write_text(yaml.safe_dump(_merged(self._base, extra), sort_keys=False))

    def destroy_everything(self) -> None:
        """Stop, restart without pools (so nothing refills), destroy every VM, stop."""
        self.stop()
        self.set_config("")
        self.start()
        for vmid in self.get("/vm/list").json()["vmids"]:
            self.get("/vm/destroy", vmid=vmid, force=1)
        self.stop()

    def wait_pool(self, pool: str, ready: int, timeout: float = 240) -> dict:
        deadline = time.monotonic() + timeout
        st: dict = {}
        while time.monotonic() < deadline:
            st = self.get("/pool/query", pool=pool).json()
            if st.get("ready") == ready and st.get("building") == 0 and st.get("cleaning") == 0:
                return st
            time.sleep(1)
        raise AssertionError(f"pool {pool} did not reach {ready} ready: {st}\n{self.log()[-3000:]}")

    def create(self, name: str, tid: int = 1, image_id: int = 1) -> dict:
        r = self.get("/vm/create", name=name, instance_type=tid, image_id=image_id)
        assert r.status_code == 200, r.text
        return self.get("/vm/query", vmid=r.json()["vmid"]).json()

    def wait_booted(self, vm: dict, timeout: float = 180) -> str:
        """Wait for the guest's boot marker on its serial console, read on its host."""
        user, _ = HOSTS[vm["pmid"]]
        path = f"/home/{user}/fabric-pool/{vm['domain']}.console.log"  # named as its domain
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            res = host_shell(vm["pmid"]).run(["cat", path])
            text = res.stdout
            if BOOT_MARKER in text:
                return text
            time.sleep(1)
        raise AssertionError(f"vm {vm['vmid']} did not boot; console:\n{text[-2000:]}")

    def ssh(self, vm: dict, attempts: int = 20) -> Guest:
        guest = Guest(self.tmp, vm["ssh"]["host"], vm["ssh"]["port"])
        for _ in range(attempts):
            try:
                guest.run(["true"])
                return guest
            except (AssertionError, paramiko.SSHException, Exception):  # noqa: B014
                time.sleep(1)
        guest.run(["true"])
        return guest


@pytest.fixture(scope="session")
def fabric(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FabricProcess]:
    _require_rig()
    fp = FabricProcess(tmp_path_factory.mktemp("rig-fabric"))
    fp.start()
    yield fp
    try:
        if fp.proc is not None and fp.proc.poll() is None:
            for vmid in fp.get("/vm/list").json()["vmids"]:
                fp.get("/vm/destroy", vmid=vmid, force=1)
            for vid in fp.get("/volume/list").json()["volumeids"]:
                fp.get("/volume/destroy", volumeid=vid)
    finally:
        fp.stop()


def wait_vm(fp: FabricProcess, vmid: int, status: str, timeout: float = 150) -> dict:
    """Poll /vm/query until the VM has ``status``; fail with the fabric's log."""
    deadline = time.monotonic() + timeout
    vm: dict = {}
    while time.monotonic() < deadline:
        vm = fp.get("/vm/query", vmid=vmid).json()
        if vm.get("status") == status:
            return vm
        time.sleep(1)
    raise AssertionError(f"vmid {vmid} is not {status}: {vm}\n{fp.log()[-3000:]}")
