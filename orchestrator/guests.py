"""SSH into guests: readiness checks and the check-in cleanup of ``/tmp``.

A guest's host key is pinned: from ``guest.host_keys`` if configured, else the
key it showed the first time (trust on first use, recorded in the registry).
"""

from __future__ import annotations

import time
from pathlib import Path

from .config import GuestConfig
from .errors import Conflict, FabricError
from .registry import VmRow
from .registry.vms import VmStore
from .remote import Remote, SshSettings
from .sshkeys import MARKER, PublicKey

GUEST_TMP = "/tmp"  # noqa: S108 - the guest's /tmp, emptied on check-in (seed 000)
# A constant command (nothing from input in it): every entry of /tmp, dot-files too.
# Works with busybox, whose find may lack -delete.
EMPTY_TMP = "rm -rf -- /tmp/* /tmp/.[!.]* /tmp/..?*"
# Borrowers' keys: appended to the guest user's authorized_keys, each line ending in
# the marker; the lines themselves are arguments ("$@"), never part of the script.
ADD_KEYS = (
    'umask 077 && mkdir -p "$HOME/.ssh" && f="$HOME/.ssh/authorized_keys" && '
    '{ [ ! -s "$f" ] || [ -z "$(tail -c 1 "$f")" ] || echo >> "$f"; } && '
    'for k in "$@"; do printf "%s\\n" "$k" >> "$f"; done'
)
# Every marked line goes (the file is rewritten whole), then none may be left.
REMOVE_KEYS = (
    f'umask 077; f="$HOME/.ssh/authorized_keys"; [ -f "$f" ] || exit 0; '
    f'grep -v " {MARKER}$" "$f" > "$f.fabric-$$"; '
    f'mv -f "$f.fabric-$$" "$f" && ! grep -q " {MARKER}$" "$f"'
)


def ssh_port(vm: VmRow) -> int:
    """Where the guest's SSH server answers: its forwarded port, else 22 at its address."""
    return vm.ssh_port or 22


class Guests:
    def __init__(self, vms: VmStore, config: GuestConfig, ssh: SshSettings) -> None:
        self.vms = vms
        self.config = config
        self.ssh = ssh  # the key and timeouts for guests (guest.key, else ssh.key)

    def remote(self, vm: VmRow) -> Remote:
        """An SSH session to the VM's guest, its host key pinned."""
        if not vm.ip:
            raise Conflict(f"vmid {vm.id} has no SSH endpoint the fabric can reach")
        port = ssh_port(vm)
        g = self.config
        if g.host_keys:
            pinned = [ln for ln in Path(g.host_keys).read_text().splitlines() if ln.strip()]
            return Remote(g.user, vm.ip, port, self.ssh, pinned_keys=pinned)
        if vm.guest_host_key:
            return Remote(g.user, vm.ip, port, self.ssh, pinned_keys=[vm.guest_host_key])
        return Remote(
            g.user,
            vm.ip,
            port,
            self.ssh,
            on_new_key=lambda key: self.vms.set_guest_host_key(vm.id, key),
        )

    def wait_until_up(self, vm_id: int) -> None:
        """Until the guest answers SSH, for at most ``guest.ready_timeout`` seconds."""
        deadline = time.monotonic() + self.config.ready_timeout
        last: FabricError | None = None
        while time.monotonic() < deadline:
            try:
                res = self.remote(self.vms.get(vm_id)).run(["true"], timeout=15)
                if res.status == 0:
                    return
            except FabricError as e:
                last = e
            time.sleep(1)
        raise last or FabricError("SSH did not answer")

    def empty_tmp(self, vm: VmRow) -> None:
        """Remove everything in the guest's ``/tmp``, and check that it is empty."""
        guest = self.remote(vm)
        res = guest.run(["sh", "-c", EMPTY_TMP])
        if res.status != 0:
            raise FabricError(
                f"emptying {GUEST_TMP} exited {res.status}: {res.stderr.strip()[:200]}"
            )
        left = guest.run(["find", GUEST_TMP, "-mindepth", "1"])
        if left.stdout.strip():
            raise FabricError(f"{GUEST_TMP} still holds: {left.stdout.split()[:5]}")

    def add_keys(self, vm: VmRow, keys: list[PublicKey]) -> None:
        """Let ``keys`` log into the guest (as ``guest.user``) until remove_keys."""
        if not keys:
            return
        res = self.remote(vm).run(["sh", "-c", ADD_KEYS, "sh", *(k.guest_line for k in keys)])
        if res.status != 0:
            raise FabricError(
                f"adding the borrower's keys to vmid {vm.id} exited {res.status}: "
                f"{res.stderr.strip()[:200]}"
            )

    def remove_keys(self, vm: VmRow) -> None:
        """Take every borrower key out of the guest, and check that none is left."""
        res = self.remote(vm).run(["sh", "-c", REMOVE_KEYS])
        if res.status != 0:
            raise FabricError(
                f"removing the borrower's keys from vmid {vm.id} exited {res.status}: "
                f"{res.stderr.strip()[:200]}"
            )
