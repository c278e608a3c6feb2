"""Domain, volume and pool XML from builders (ElementTree escapes every value)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from defusedxml.ElementTree import fromstring as safe_fromstring

METADATA_NS = "urn:x-libvirt-fabric:vm:1"
METADATA_PREFIX = "fabric"
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"

ET.register_namespace("qemu", QEMU_NS)
ET.register_namespace(METADATA_PREFIX, METADATA_NS)


@dataclass(frozen=True)
class DomainSpec:
    """Everything that goes into one domain's XML."""

    name: str
    uuid: str
    vm_id: int
    domain_type: str  # kvm, qemu or test
    vcpus: int
    ram_mb: int
    disk_path: str
    disk_format: str = "qcow2"
    mac: str = "52:54:00:00:00:01"
    arch: str | None = "x86_64"
    network: str = "user"  # user | forward | network:NAME | bridge:NAME
    forward_address: str | None = None  # forward: where the guest's port 22 appears
    forward_port: int | None = None
    console_path: str | None = None
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None
    fabric_name: str | None = None  # the VM's user-facing name, kept in metadata
    installation: str | None = None  # which fabric's registry the VM belongs to


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, {k.rstrip("_"): v for k, v in attrs.items()})
    if text is not None:
        el.text = text
    return el


def metadata_element(vm_id: int, name: str | None, installation: str | None = None) -> ET.Element:
    """Our ``<metadata>`` child: it names the fabric's VM id (and installation), so a
    domain can be traced back to its registry row."""
    el = ET.Element(f"{{{METADATA_NS}}}vm")
    if installation is not None:
        el.set("installation", installation)
    _sub(el, f"{{{METADATA_NS}}}id", str(vm_id))
    if name is not None:
        _sub(el, f"{{{METADATA_NS}}}name", name)
    return el


def domain_xml(spec: DomainSpec) -> str:
    dom = ET.Element("domain", {"type": spec.domain_type})
    _sub(dom, "name", spec.name)
    _sub(dom, "uuid", spec.uuid)
    meta = _sub(dom, "metadata")
    meta.append(metadata_element(spec.vm_id, spec.fabric_name, spec.installation))
    _sub(dom, "memory", str(spec.ram_mb), unit="MiB")
    _sub(dom, "vcpu", str(spec.vcpus))

    os_el = _sub(dom, "os")
    type_attrs = {}
    if spec.arch:
        type_attrs["arch"] = spec.arch
        if spec.arch in ("x86_64", "i686") and spec.domain_type in ("kvm", "qemu"):
            type_attrs["machine"] = "pc"
    _sub(os_el, "type", "hvm", **type_attrs)
    if spec.kernel:
        _sub(os_el, "kernel", spec.kernel)
        if spec.initrd:
            _sub(os_el, "initrd", spec.initrd)
        if spec.cmdline:
            _sub(os_el, "cmdline", spec.cmdline)
    else:
        _sub(os_el, "boot", dev="hd")

    if spec.domain_type in ("kvm", "qemu"):
        # Without ACPI, QEMU's PCI bus cannot hot-plug disks and guests ignore shutdown.
        features = _sub(dom, "features")
        _sub(features, "acpi")

    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "destroy")

    devices = _sub(dom, "devices")
    disk = _sub(devices, "disk", type="file", device="disk")
    _sub(disk, "driver", name="qemu", type=spec.disk_format)
    _sub(disk, "source", file=spec.disk_path)
    _sub(disk, "target", dev="vda", bus="virtio")

    _add_network(dom, devices, spec)

    if spec.console_path:
        serial = _sub(devices, "serial", type="file")
        # append: a VM stopped and started again (or rebooted by the fabric) keeps
        # its earlier output, so the console shows the shutdown and the next boot
        _sub(serial, "source", path=spec.console_path, append="on")
        _sub(serial, "target", port="0")
        console = _sub(devices, "console", type="file")
        _sub(console, "source", path=spec.console_path, append="on")
        _sub(console, "target", type="serial", port="0")
    else:
        serial = _sub(devices, "serial", type="pty")
        _sub(serial, "target", port="0")
    return ET.tostring(dom, encoding="unicode")


def _add_network(dom: ET.Element, devices: ET.Element, spec: DomainSpec) -> None:
    mode, _, arg = spec.network.partition(":")
    if mode == "forward":
        if not spec.forward_address or not spec.forward_port:
            raise ValueError("network=forward needs an address and a port")
        # QEMU's user network with a host forward: the guest's port 22 appears on
        # the host's address, which is how a session-mode guest is reached here.
        cmd = ET.SubElement(dom, f"{{{QEMU_NS}}}commandline")
        fwd = f"tcp:{spec.forward_address}:{spec.forward_port}-:22"
        args = [
            "-netdev",
            f"user,id=fabn0,hostfwd={fwd}",
            "-device",
            f"virtio-net-pci,netdev=fabn0,addr=0x9,mac={spec.mac}",
        ]
        for a in args:
            ET.SubElement(cmd, f"{{{QEMU_NS}}}arg", {"value": a})
        return
    if mode == "user":
        iface = _sub(devices, "interface", type="user")
    elif mode == "network":
        iface = _sub(devices, "interface", type="network")
        _sub(iface, "source", network=arg)
    elif mode == "bridge":
        iface = _sub(devices, "interface", type="bridge")
        _sub(iface, "source", bridge=arg)
    else:
        raise ValueError(f"unknown network mode {spec.network!r}")
    _sub(iface, "mac", address=spec.mac)
    _sub(iface, "model", type="virtio")
    if mode in ("network", "bridge") and spec.domain_type in ("kvm", "qemu"):
        # The QEMU guest agent's channel: a guest that runs the agent tells its
        # address (one of the fabric's address sources); one that does not, nothing.
        channel = _sub(devices, "channel", type="unix")
        _sub(channel, "target", type="virtio", name="org.qemu.guest_agent.0")


def pool_xml(name: str, path: str) -> str:
    pool = ET.Element("pool", {"type": "dir"})
    _sub(pool, "name", name)
    target = _sub(pool, "target")
    _sub(target, "path", path)
    return ET.tostring(pool, encoding="unicode")


def volume_xml(
    name: str,
    capacity_bytes: int,
    fmt: str = "qcow2",
    backing_path: str | None = None,
    backing_format: str | None = None,
) -> str:
    vol = ET.Element("volume")
    _sub(vol, "name", name)
    _sub(vol, "capacity", str(capacity_bytes), unit="bytes")
    target = _sub(vol, "target")
    _sub(target, "format", type=fmt)
    if backing_path:
        backing = _sub(vol, "backingStore")
        _sub(backing, "path", backing_path)
        _sub(backing, "format", type=backing_format or "qcow2")
    return ET.tostring(vol, encoding="unicode")


def read_metadata(metadata_xml: str) -> tuple[int | None, str | None]:
    """(fabric VM id, installation id) from a domain's metadata element."""
    try:
        el = safe_fromstring(metadata_xml)
    except ET.ParseError:
        return None, None
    installation = el.get("installation")
    for child in el.iter():
        if child.tag.endswith("id") and child.text and child.text.strip().isdigit():
            return int(child.text.strip()), installation
    return None, installation


def read_metadata_id(metadata_xml: str) -> int | None:
    """The fabric VM id in a domain's metadata element, or None if it is not ours."""
    return read_metadata(metadata_xml)[0]


@dataclass(frozen=True)
class RbdBackend:
    """A Ceph RBD pool as libvirt sees it; the cephx key lives in a libvirt secret."""

    name: str  # our name for it (storage.rbd.NAME)
    pool: str  # the RBD pool in Ceph
    monitors: tuple[str, ...]  # host:port
    user: str
    secret_uuid: str

    @property
    def libvirt_pool(self) -> str:
        return f"fabric-rbd-{self.name}"


def disk_xml(
    target: str,
    *,
    path: str | None = None,
    rbd: RbdBackend | None = None,
    rbd_image: str | None = None,
    fmt: str = "raw",
) -> str:
    """A virtio data disk: a file on the host, or an RBD image over the network."""
    if rbd is not None:
        disk = ET.Element("disk", {"type": "network", "device": "disk"})
        _sub(disk, "driver", name="qemu", type="raw")
        src = _sub(disk, "source", protocol="rbd", name=f"{rbd.pool}/{rbd_image}")
        for mon in rbd.monitors:
            host, _, port = mon.partition(":")
            _sub(src, "host", name=host, port=port or "6789")
        auth = _sub(disk, "auth", username=rbd.user)
        _sub(auth, "secret", type="ceph", uuid=rbd.secret_uuid)
    else:
        if path is None:
            raise ValueError("a file disk needs a path")
        disk = ET.Element("disk", {"type": "file", "device": "disk"})
        _sub(disk, "driver", name="qemu", type=fmt)
        _sub(disk, "source", file=path)
    _sub(disk, "target", dev=target, bus="virtio")
    return ET.tostring(disk, encoding="unicode")


def rbd_pool_xml(rbd: RbdBackend) -> str:
    pool = ET.Element("pool", {"type": "rbd"})
    _sub(pool, "name", rbd.libvirt_pool)
    source = _sub(pool, "source")
    _sub(source, "name", rbd.pool)
    for mon in rbd.monitors:
        host, _, port = mon.partition(":")
        _sub(source, "host", name=host, port=port or "6789")
    auth = _sub(source, "auth", type="ceph", username=rbd.user)
    _sub(auth, "secret", uuid=rbd.secret_uuid)
    return ET.tostring(pool, encoding="unicode")


def ceph_secret_xml(rbd: RbdBackend) -> str:
    """The secret object's definition; its value (the key) is set apart, never in XML."""
    secret = ET.Element("secret", {"ephemeral": "no", "private": "yes"})
    _sub(secret, "uuid", rbd.secret_uuid)
    usage = _sub(secret, "usage", type="ceph")
    _sub(usage, "name", f"client.{rbd.user} fabric {rbd.name}")
    return ET.tostring(secret, encoding="unicode")


def disk_targets(domain_xml_text: str) -> dict[str, str | None]:
    """Target dev -> source (file path or rbd name) of every disk in a domain's XML."""
    root = safe_fromstring(domain_xml_text)
    out: dict[str, str | None] = {}
    for disk in root.iter("disk"):
        target = disk.find("target")
        if target is None or target.get("dev") is None:
            continue
        src = disk.find("source")
        source = None
        if src is not None:
            source = src.get("file") or src.get("name") or src.get("dev")
        out[target.get("dev")] = source
    return out


# The names volumes attach as: vda is the root disk, so a VM takes at most 25 volumes.
VOLUME_TARGETS = tuple(f"vd{letter}" for letter in "bcdefghijklmnopqrstuvwxyz")
NO_TARGET_LEFT = f"no free disk name left: vdb..vdz ({len(VOLUME_TARGETS)} volumes) are all in use"


def next_free_target(used: set[str]) -> str | None:
    """The first of VOLUME_TARGETS not in ``used``; None when all are."""
    return next((dev for dev in VOLUME_TARGETS if dev not in used), None)
