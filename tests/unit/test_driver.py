"""The libvirt driver on libvirt's test:// driver: XML, connections, timeouts, create/destroy."""

from __future__ import annotations

import threading
import xml.dom.minidom
from pathlib import Path

import libvirt
import pytest

from orchestrator.errors import HostTimeout, HostUnreachable, HypervisorError
from orchestrator.hypervisor.connection import HostConnection, SshOptions, transport_uri
from orchestrator.hypervisor.driver import HostTarget, LibvirtDriver, StagedImage, VmPlan
from orchestrator.hypervisor.xml import DomainSpec, domain_xml, read_metadata_id
from tests.conftest import write_node

DATA = Path(__file__).resolve().parents[1] / "data"
# seconds a test waits for something it expects long before; only ends a hang
WAIT = 60


def forward_spec(**kw) -> DomainSpec:
    base = dict(
        name="fabric-vm-7",
        uuid="7b0c3a4e-1d2f-4a5b-8c9d-0e1f2a3b4c5d",
        vm_id=7,
        fabric_name='web <1> & "co"',
        domain_type="qemu",
        vcpus=2,
        ram_mb=256,
        disk_path="/home/pm1/fabric-pool/vm-7.qcow2",
        mac="52:54:00:ab:cd:ef",
        arch="x86_64",
        network="forward",
        forward_address="127.0.0.2",
        forward_port=22007,
        console_path="/home/pm1/fabric-pool/vm-7.console.log",
    )
    base.update(kw)
    return DomainSpec(**base)


def test_domain_xml_matches_the_expected_file():
    got = xml.dom.minidom.parseString(domain_xml(forward_spec())).toprettyxml(indent="  ")
    assert got == (DATA / "domain_forward.xml").read_text()


def test_markup_in_names_is_escaped_not_interpreted():
    text = domain_xml(forward_spec(fabric_name="</name><evil/>"))
    assert "<evil/>" not in text
    assert "&lt;/name&gt;&lt;evil/&gt;" in text


@pytest.mark.parametrize(
    ("network", "needle"),
    [
        ("user", '<interface type="user">'),
        ("network:default", '<source network="default" />'),
        ("bridge:br0", '<source bridge="br0" />'),
    ],
)
def test_network_modes(network, needle):
    text = domain_xml(forward_spec(network=network))
    assert needle.replace(" />", "/>") in text.replace(" />", "/>")
    assert "52:54:00:ab:cd:ef" in text
    assert "commandline" not in text


def test_direct_kernel_boot():
    text = domain_xml(forward_spec(kernel="/p/k", initrd="/p/i", cmdline="console=ttyS0"))
    assert "<kernel>/p/k</kernel>" in text and "<cmdline>console=ttyS0</cmdline>" in text
    assert "<boot" not in text


def test_generated_xml_round_trips_through_libvirt(tmp_path):
    conn = libvirt.open(f"test://{write_node(tmp_path / 'n.xml', 4, 4096)}")
    spec = forward_spec(domain_type="test", network="user")
    dom = conn.defineXML(domain_xml(spec))
    dom.create()
    assert dom.isActive() and dom.UUIDString() == spec.uuid
    meta = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, "urn:x-libvirt-fabric:vm:1", 0)
    assert read_metadata_id(meta) == 7
    dom.destroy()
    dom.undefine()


def test_read_metadata_id_rejects_garbage():
    assert read_metadata_id("<not xml") is None
    assert read_metadata_id("<vm><id>x</id></vm>") is None


def test_ssh_transport_uses_our_wrapper(tmp_path):
    opts = SshOptions(key="/k/id", known_hosts="/k/known", connect_timeout=3)
    wrapper = opts.wrapper(tmp_path)
    text = wrapper.read_text()
    assert "StrictHostKeyChecking=yes" in text and "BatchMode=yes" in text
    assert "UserKnownHostsFile=/k/known" in text and "-i /k/id" in text
    uri = transport_uri("qemu+ssh://pm1@127.0.0.2:2222/session", wrapper)
    assert uri.startswith("qemu+ssh://pm1@127.0.0.2:2222/session?")
    assert f"command={str(wrapper).replace('/', '%2F')}" in uri and "no_tty=1" in uri
    assert transport_uri("test:///default", wrapper) == "test:///default"
    assert transport_uri("qemu:///system", wrapper) == "qemu:///system"


def test_connection_is_reused_and_reopened_when_closed(tmp_path):
    hc = HostConnection("h", f"test://{write_node(tmp_path / 'n.xml', 2, 1024)}")
    first = hc.call(lambda c: c)
    assert hc.call(lambda c: c) is first
    first.close()
    second = hc.call(lambda c: c)
    assert second is not first and second.getInfo()[2] == 2
    hc.close()


def test_a_hung_call_times_out_instead_of_hanging(tmp_path):
    hc = HostConnection("slow", f"test://{write_node(tmp_path / 'n.xml', 2, 1024)}")
    release = threading.Event()
    ended = threading.Event()

    def hung(c) -> None:  # noqa: ANN001
        release.wait(WAIT)  # a hang: released only after the caller has its answer
        ended.set()

    with pytest.raises(HostTimeout, match="no answer within 0.5s"):
        hc.call(hung, timeout=0.5)
    # the caller had its answer while the call still hung (it did not wait for it)
    assert not ended.is_set()
    release.set()
    hc.close()


def test_unreachable_host_raises_host_unreachable():
    hc = HostConnection("ghost", "test:///does/not/exist.xml")
    with pytest.raises(HostUnreachable, match="ghost"):
        hc.call(lambda c: c.getInfo())


def test_ssh_host_that_refuses_is_unreachable_quickly(tmp_path):
    # Nothing listens on this loopback port: the wrapper's ssh fails fast.
    opts = SshOptions(connect_timeout=2)
    hc = HostConnection(
        "refused",
        "qemu+ssh://nobody@127.0.0.1:1/system",
        ssh_command=opts.wrapper(tmp_path),
        connect_timeout=15,
    )
    # the refusal itself is the answer: no waiting out the 15 s connect timeout
    with pytest.raises(HostUnreachable, match="Connection refused") as e:
        hc.call(lambda c: c.getInfo())
    assert "timed out" not in str(e.value) and "no answer" not in str(e.value)


def _driver_and_host(tmp_path) -> tuple[LibvirtDriver, HostTarget]:
    node = write_node(tmp_path / "n.xml", 4, 4096)
    return LibvirtDriver(), HostTarget(id=1, label="h1", uri=f"test://{node}")


def _plan(vm_id: int = 5) -> VmPlan:
    return VmPlan(
        vm_id=vm_id,
        name="v",
        domain_name=f"fabric-vm-{vm_id}",
        uuid=f"00000000-0000-4000-8000-00000000000{vm_id}",
        mac="52:54:00:00:00:05",
        vcpus=1,
        ram_mb=128,
        disk_gb=1,
        arch="x86_64",
    )


def test_driver_create_and_destroy_leave_nothing(tmp_path):
    driver, host = _driver_and_host(tmp_path)
    image = StagedImage(path="/fabric-pool/base", format="qcow2", capacity=10)
    console = driver.create(host, _plan(), image)
    assert console == "/fabric-pool/vm-5.console.log"
    assert [d.vm_id for d in driver.domains(host)] == [5]
    assert "vm-5.qcow2" in driver.volumes(host)
    driver.destroy(host, _plan().uuid, 5)
    assert driver.domains(host) == []
    assert "vm-5.qcow2" not in driver.volumes(host)
    driver.destroy(host, _plan().uuid, 5)  # absent is fine


def test_driver_create_rolls_back_when_start_fails(tmp_path):
    driver, host = _driver_and_host(tmp_path)
    image = StagedImage(path="/fabric-pool/base", format="qcow2", capacity=10)
    driver.create(host, _plan(5), image)
    # A second VM with the same UUID as a running one cannot be defined: the driver
    # must remove the disk it made before failing.
    clash = VmPlan(**{**_plan(6).__dict__, "uuid": _plan(5).uuid})
    with pytest.raises(HypervisorError):
        driver.create(host, clash, image)
    assert "vm-6.qcow2" not in driver.volumes(host)
    assert [d.vm_id for d in driver.domains(host)] == [5]


class _Stream:
    """A libvirt stream that takes at most ``most`` bytes a send and gives ``chunks``."""

    def __init__(self, most: int = 3, chunks: tuple = ()) -> None:
        self.most, self.chunks = most, list(chunks)
        self.got = b""
        self.finished = self.aborted = False

    def send(self, data: bytes) -> int:
        self.got += data[: self.most]
        return min(len(data), self.most)

    def recv(self, _n: int):
        return self.chunks.pop(0) if self.chunks else b""

    def finish(self) -> None:
        self.finished = True

    def abort(self) -> None:
        self.aborted = True


class _Conn:
    def __init__(self, stream: _Stream) -> None:
        self.stream = stream

    def newStream(self, _flags: int) -> _Stream:  # noqa: N802 (libvirt's name)
        return self.stream


class _Vol:
    def upload(self, *_args) -> None:
        pass


def test_image_upload_sends_every_byte_through_short_writes():
    import io

    stream = _Stream(most=3)
    LibvirtDriver._upload(_Conn(stream), _Vol(), io.BytesIO(b"0123456789"), 10)
    assert stream.got == b"0123456789" and stream.finished and not stream.aborted


def test_image_upload_of_the_wrong_size_aborts():
    import io

    stream = _Stream()
    with pytest.raises(HypervisorError, match="sent 4 of 10 bytes"):
        LibvirtDriver._upload(_Conn(stream), _Vol(), io.BytesIO(b"0123"), 10)
    assert stream.aborted and not stream.finished


def test_stream_pump_skips_would_block_and_refuses_a_stream_that_takes_nothing():
    from orchestrator.hypervisor.storage import _pump

    down = _Stream(chunks=(b"abcd", -2, b"efg"))
    up = _Stream(most=2)
    assert _pump(lambda: down.recv(8), up, "volume copy") == 7
    assert up.got == b"abcdefg"
    refusing = _Stream()
    refusing.send = lambda _data: -1
    with pytest.raises(HypervisorError, match="volume copy stream refused data"):
        _pump(lambda: b"x", refusing, "volume copy")


# -- the fabric's storage pool ---------------------------------------------------------

NODE_WITHOUT_POOL = """<node><cpu><mhz>2000</mhz><model>x86_64</model><active>4</active>
<nodes>1</nodes><sockets>1</sockets><cores>4</cores><threads>1</threads></cpu>
<memory>4194304</memory></node>"""


def test_discovery_and_a_create_at_once_make_the_pool_once(tmp_path):
    # Two calls defining the pool at once: the second failed ("pool 'fabric' already
    # exists"), or started it before the first had built its directory ("cannot open
    # directory"): the first /vm/create on a new host failed where the second worked.
    node = tmp_path / "nopool.xml"
    node.write_text(NODE_WITHOUT_POOL)
    for _ in range(30):
        driver = LibvirtDriver()
        host = HostTarget(id=1, label="h1", uri=f"test://{node}", pool_path="/new/pool")
        errors: list[BaseException] = []
        barrier = threading.Barrier(8)

        def discover() -> None:
            barrier.wait()
            try:
                driver.discover(host)  # noqa: B023
            except Exception as e:  # noqa: BLE001
                errors.append(e)  # noqa: B023

        threads = [threading.Thread(target=discover) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        pools = driver.connection(host).call(lambda c: c.listStoragePools())
        driver.close()
        assert errors == [] and pools == ["fabric"]


class FakePool:
    """Records what is asked of it; ``fail`` maps a method to the error it raises."""

    def __init__(self, calls: list[str], active: bool = False, **fail: Exception) -> None:
        self.calls, self.active, self.fail = calls, active, fail

    def _do(self, what: str) -> None:
        self.calls.append(what)
        if what in self.fail:
            raise self.fail[what]

    def isActive(self) -> bool:  # noqa: N802
        return self.active

    def build(self, flags: int) -> None:
        self._do("build")

    def create(self, flags: int) -> None:
        self._do("create")
        self.active = True

    def setAutostart(self, on: int) -> None:  # noqa: N802
        self._do("autostart")


class FakeConn:
    def __init__(self, pool: FakePool | None) -> None:
        self.pool = pool
        self.calls = pool.calls if pool else []

    def storagePoolLookupByName(self, name: str) -> FakePool:  # noqa: N802
        if self.pool is None:
            err = libvirt.libvirtError("no pool")
            err.err = (libvirt.VIR_ERR_NO_STORAGE_POOL, libvirt.VIR_FROM_STORAGE, "no pool")
            raise err
        return self.pool

    def storagePoolDefineXML(self, xml: str, flags: int) -> FakePool:  # noqa: N802
        self.calls.append("define")
        self.pool = FakePool(self.calls)
        return self.pool


def storage_error(message: str) -> libvirt.libvirtError:
    err = libvirt.libvirtError(message)
    err.err = (libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_FROM_STORAGE, message)
    return err


def test_a_pool_not_running_is_built_before_it_is_started():
    # new: defined, built (its directory made), started
    conn = FakeConn(None)
    LibvirtDriver()._ensure_pool(conn, HostTarget(id=1, label="h", uri="qemu:///system"))
    assert conn.calls == ["define", "autostart", "build", "create"]
    # defined earlier, its directory removed since: built again before it starts
    calls: list[str] = []
    conn = FakeConn(FakePool(calls))
    LibvirtDriver()._ensure_pool(conn, HostTarget(id=1, label="h", uri="qemu:///system"))
    assert calls == ["build", "create"]
    # running: left alone
    calls = []
    LibvirtDriver()._ensure_pool(FakeConn(FakePool(calls, active=True)), HostTarget(1, "h", "x"))
    assert calls == []


def test_a_pool_the_host_cannot_make_is_a_502_with_the_reason():
    reason = "cannot create path '/home/pm1': Permission denied"
    pool = FakePool([], build=storage_error(reason))
    host = HostTarget(id=1, label="pm1", uri="qemu+ssh://pm1@10.0.0.1/session")
    with pytest.raises(HypervisorError) as info:
        LibvirtDriver()._ensure_pool(FakeConn(pool), host)
    assert info.value.status == 502
    assert info.value.message == (
        "host pm1: the fabric's storage pool in /home/pm1/.local/share/libvirt/images/fabric "
        f"cannot be started: {reason}; set pool=/abs/dir in the pm file"
    )
    # a pool= of the operator's: no hint to set it
    pool = FakePool([], create=storage_error("cannot open directory '/srv/p'"))
    with pytest.raises(HypervisorError, match=r"in /srv/p cannot be started: cannot open [^;]*$"):
        LibvirtDriver()._ensure_pool(FakeConn(pool), HostTarget(1, "h", "x", pool_path="/srv/p"))


@pytest.mark.parametrize(
    ("uri", "path"),
    [
        ("qemu+ssh://root@10.0.0.1/system", "/var/lib/libvirt/images/fabric"),
        ("qemu:///system", "/var/lib/libvirt/images/fabric"),
        ("qemu+ssh://pm1@10.0.0.1:2222/session", "/home/pm1/.local/share/libvirt/images/fabric"),
        ("qemu+ssh://root@10.0.0.1/session", "/root/.local/share/libvirt/images/fabric"),
        ("qemu:///session", f"{Path.home()}/.local/share/libvirt/images/fabric"),
    ],
)
def test_a_session_host_without_pool_gets_one_in_its_users_home(uri, path):
    # it used to be marked down: "a session URI needs pool=/abs/dir in the pm file"
    assert LibvirtDriver()._pool_path(HostTarget(id=1, label="h", uri=uri)) == path
