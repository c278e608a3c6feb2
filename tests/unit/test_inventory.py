"""The three input files: original formats, every key, YAML forms and file:line errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from orchestrator.errors import InventoryError
from orchestrator.inventory import (
    load_hosts,
    load_images,
    load_inventory,
    load_types,
    validate_files,
)
from orchestrator.model import HostSpec, ImageSpec, Source, VmType

ROOT = Path(__file__).resolve().parents[2]

# The VM_Type answer of the assignment, verbatim.
ASSIGNMENT_TYPES_JSON = """\
{
    "types": [
        {
            "tid": 1,
            "cpu": 1,
            "ram": 512,
            "disk": 1
        },
        {
            "tid": 2,
            "cpu": 2,
            "ram": 1024,
            "disk": 2
        },
        {
            "tid": 3,
            "cpu": 4,
            "ram": 2048,
            "disk": 3
        }
    ]
}
"""

# The flavor_file example of the assignment: no outer braces, a trailing comma.
ASSIGNMENT_FLAVOR_FILE = """\
"types": [
        {
            "cpu": 1,
            "ram": 512,
            "disk": 1
        },
        {
            "cpu": 2,
            "ram": 1024,
            "disk": 2
        },
    ]
"""


def write(tmp_path: Path, text: str, name: str = "file") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def error_of(load, path: Path) -> str:
    with pytest.raises(InventoryError) as info:
        load(path)
    return str(info.value)


# --------------------------------------------------------------------------- hosts


def test_hosts_original_format(tmp_path):
    path = write(tmp_path, "root@10.1.33.121\nroot@10.1.33.122\n", "pm_file")
    hosts = load_hosts(path)
    assert [h.uri for h in hosts] == [
        "qemu+ssh://root@10.1.33.121/system",
        "qemu+ssh://root@10.1.33.122/system",
    ]
    first = hosts[0]
    assert (first.user, first.address, first.port) == ("root", "10.1.33.121", None)
    assert first.domain_type == "kvm"
    assert first.network is None  # not set: discovery decides (network:default or user)
    assert (first.cpu, first.ram, first.disk, first.arch, first.pool_path) == (None,) * 5
    assert first.source == Source(str(path), 1)
    assert first.label == "root@10.1.33.121"


def test_hosts_accepts_str_path(tmp_path):
    path = write(tmp_path, "root@10.1.33.121\n")
    assert len(load_hosts(str(path))) == 1


def test_hosts_comments_blank_lines_and_trailing_comments(tmp_path):
    path = write(
        tmp_path,
        """\
        # the datacenter

        root@10.0.0.1   # rack A
           root@10.0.0.2\t# rack B
        # root@10.0.0.3
        """,
    )
    hosts = load_hosts(path)
    assert [h.address for h in hosts] == ["10.0.0.1", "10.0.0.2"]
    assert [h.source.line for h in hosts] == [3, 4]


def test_hosts_every_key(tmp_path):
    path = write(
        tmp_path,
        "root@10.0.0.1 port=2222 domain=qemu cpu=8 ram=16384 disk=500 arch=aarch64 "
        "network=bridge:br0 pool=/var/lib/fabric migrate_address=10.0.1.1\n",
    )
    (host,) = load_hosts(path)
    assert host == HostSpec(
        user="root",
        address="10.0.0.1",
        port=2222,
        uri="qemu+ssh://root@10.0.0.1:2222/system",
        domain_type="qemu",
        cpu=8,
        ram=16384,
        disk=500,
        arch="aarch64",
        network="bridge:br0",
        pool_path="/var/lib/fabric",
        migrate_address="10.0.1.1",
    )


@pytest.mark.parametrize("address", ["10.251.252.3", "fd00::3", "mig.pm1.dc.example"])
def test_hosts_migrate_address_values(tmp_path, address):
    path = write(tmp_path, f"root@10.0.0.1 migrate_address={address}\n")
    assert load_hosts(path)[0].migrate_address == address
    assert load_hosts(write(tmp_path, "root@10.0.0.1\n"))[0].migrate_address is None


@pytest.mark.parametrize("network", ["user", "forward", "network:default", "bridge:br0"])
def test_hosts_network_values(tmp_path, network):
    path = write(tmp_path, f"root@10.0.0.1 network={network}\n")
    assert load_hosts(path)[0].network == network


@pytest.mark.parametrize("arch", ["x86_64", "aarch64", "i686"])
def test_hosts_arch_values(tmp_path, arch):
    path = write(tmp_path, f"root@10.0.0.1 arch={arch}\n")
    assert load_hosts(path)[0].arch == arch


def test_hosts_hostname_and_bare_address(tmp_path):
    path = write(tmp_path, "admin@node-1.dc.example.org\n10.0.0.9\nlocalhost\n")
    hosts = load_hosts(path)
    assert hosts[0].uri == "qemu+ssh://admin@node-1.dc.example.org/system"
    assert (hosts[1].user, hosts[1].uri) == (None, "qemu+ssh://10.0.0.9/system")
    assert hosts[1].label == "qemu+ssh://10.0.0.9/system"
    assert hosts[2].address == "localhost"


def test_hosts_uri_with_user_at_ip(tmp_path):
    path = write(tmp_path, "pm1@127.0.0.2 uri=qemu+ssh://pm1@127.0.0.2:2222/session\n")
    (host,) = load_hosts(path)
    assert host.uri == "qemu+ssh://pm1@127.0.0.2:2222/session"
    assert (host.user, host.address, host.port) == ("pm1", "127.0.0.2", 2222)
    assert host.key == host.uri


def test_hosts_port_key_wins_over_uri_port(tmp_path):
    path = write(tmp_path, "pm1@127.0.0.2 port=22 uri=qemu+ssh://pm1@127.0.0.2:2222/session\n")
    (host,) = load_hosts(path)
    assert host.port == 22
    assert host.uri == "qemu+ssh://pm1@127.0.0.2:2222/session"


def test_hosts_uri_only_lines(tmp_path):
    path = write(
        tmp_path,
        """\
        uri=test:///tmp/node.xml cpu=4
        uri=qemu+ssh://pm2@127.0.0.3:2222/session
        uri=qemu:///system
        uri=test:///default
        """,
    )
    test, ssh, local, default = load_hosts(path)
    assert (test.user, test.address, test.port, test.cpu) == (None, None, None, 4)
    assert test.uri == "test:///tmp/node.xml"
    assert test.label == "test:///tmp/node.xml"
    assert (ssh.user, ssh.address, ssh.port) == ("pm2", "127.0.0.3", 2222)
    assert (local.user, local.address) == (None, None)
    assert default.uri == "test:///default"


@pytest.mark.parametrize(
    "uri",
    [
        "qemu+ssh://root@h1/system",
        "qemu+tcp://h1/system",
        "qemu+tls://h1.example.org/system",
        "qemu+unix:///system",
        "qemu:///session",
        "qemu+ssh://root@[::1]:22/system",
        "lxc:///system",
        "test+ssh://root@h1/default",
    ],
)
def test_hosts_uri_schemes_accepted(tmp_path, uri):
    path = write(tmp_path, f"uri={uri}\n")
    assert load_hosts(path)[0].uri == uri


def test_hosts_duplicate_same_uri_names_both_lines(tmp_path):
    path = write(
        tmp_path,
        """\
        root@10.0.0.1
        root@10.0.0.2

        root@10.0.0.1   # again
        """,
    )
    message = error_of(load_hosts, path)
    assert message == f"{path}:4: duplicate host qemu+ssh://root@10.0.0.1/system (first on line 1)"


def test_hosts_same_address_other_port_is_not_duplicate(tmp_path):
    path = write(tmp_path, "root@10.0.0.1\nroot@10.0.0.1 port=2222\n")
    assert len(load_hosts(path)) == 2


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("root@", "'root@' has no host"),
        ("@1.2.3.4", "'@1.2.3.4' has no user"),
        ("root@1.2.3.999", "'root@1.2.3.999': '1.2.3.999' is not a valid IPv4 address"),
        ("root@1.2.3", "'root@1.2.3': '1.2.3' is not a valid IPv4 address"),
        ("root@bad_host!", "'root@bad_host!': 'bad_host!' is not a valid IPv4 address or hostname"),
        ("root@a@b", "'root@a@b' has more than one '@'"),
        ("ro ot@1.2.3.4", "expected key=value, not 'ot@1.2.3.4'"),
        ("r;t@1.2.3.4", "'r;t@1.2.3.4': 'r;t' is not a valid user name"),
        (
            "root@1.2.3.4:2222",
            "'root@1.2.3.4:2222': write the SSH port as port=2222, not after a ':'",
        ),
        ("root@1.2.3.4 port=0", "port must be an integer in 1..65535, not 0"),
        ("root@1.2.3.4 port=65536", "port must be an integer in 1..65535, not 65536"),
        ("root@1.2.3.4 port=ssh", "port must be an integer in 1..65535, not 'ssh'"),
        ("root@1.2.3.4 port=-22", "port must be an integer in 1..65535, not '-22'"),
        ("root@1.2.3.4 cpu=four", "cpu must be a positive integer, not 'four'"),
        ("root@1.2.3.4 cpu=0", "cpu must be a positive integer, not 0"),
        ("root@1.2.3.4 ram=-1", "ram must be a positive integer, not '-1'"),
        ("root@1.2.3.4 disk=1.5", "disk must be a positive integer, not '1.5'"),
        ("root@1.2.3.4 domain=xen", "domain must be one of kvm, qemu, not 'xen'"),
        (
            "root@1.2.3.4 network=nat",
            "network must be user, forward, network:NAME or bridge:NAME, not 'nat'",
        ),
        (
            "root@1.2.3.4 network=bridge:",
            "network must be user, forward, network:NAME or bridge:NAME, not 'bridge:'",
        ),
        ("root@1.2.3.4 arch=X86-64", "arch must look like x86_64, aarch64 or i686, not 'X86-64'"),
        ("root@1.2.3.4 pool=relative/dir", "pool 'relative/dir' is not an absolute path"),
        (
            "root@1.2.3.4 migrate_address=10.251.252.999",
            "migrate_address: '10.251.252.999' is not a valid IPv4 address",
        ),
        (
            "root@1.2.3.4 migrate_address=tcp://10.0.0.1",
            "migrate_address: 'tcp://10.0.0.1' is not a valid IPv6 address",
        ),
        (
            "root@1.2.3.4 migrate_address=bad_host!",
            "migrate_address: 'bad_host!' is not a valid IPv4 address or hostname",
        ),
        ("root@1.2.3.4 cpu=2 cpu=4", "cpu= is given twice"),
        ("root@1.2.3.4 cpu=", "cpu= has no value"),
        ("root@1.2.3.4 cpu", "expected key=value, not 'cpu'"),
        (
            "root@1.2.3.4 colour=blue",
            "unknown key 'colour' (valid keys: port, uri, domain, cpu, "
            "ram, disk, arch, network, pool, migrate_address)",
        ),
        ("cpu=4", "a host needs user@address or uri=..."),
        ("uri=http://10.0.0.1/", "uri 'http://10.0.0.1/' has unsupported scheme 'http'"),
        ("uri=qemu+http://10.0.0.1/system", "has unsupported scheme 'qemu+http'"),
        ("uri=ssh://root@10.0.0.1", "has unsupported scheme 'ssh'"),
        ("uri=10.0.0.1", "uri '10.0.0.1' is not a libvirt URI (e.g. qemu+ssh://user@host/system"),
        (
            "uri=qemu+ssh://root@10.0.0.1/sytem",
            "uri 'qemu+ssh://root@10.0.0.1/sytem' must end in /system or /session or /embed",
        ),
        ("uri=qemu+ssh://root@10.0.0.1:99999/system", "has an invalid port"),
        ("uri=qemu+ssh://root@1.2.3.999/system", "'1.2.3.999' is not a valid IPv4 address"),
        (
            "uri=test://node.xml",
            "uri 'test://node.xml': write test:///default or test:///abs/path/node.xml",
        ),
    ],
)
def test_hosts_bad_lines(tmp_path, line, problem):
    path = write(tmp_path, f"root@10.0.0.1\n# comment\n{line}\n", "pm.txt")
    message = error_of(load_hosts, path)
    assert message.startswith(f"{path}:3: ")
    assert problem in message


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        # libvirt runs the command in place of the fabric's ssh wrapper
        ("qemu+ssh://root@h1/system?command=/bin/ssh-anyway", "?command= replaces the fabric"),
        ("qemu+ssh://root@h1/system?no_tty=1&COMMAND=ssh", "?COMMAND= replaces the fabric's"),
        ("qemu+ssh://root@h1/system?no_verify=1", "?no_verify=1 turns host-key checking off"),
        ("qemu+tls://h1/system?no_verify=yes", "?no_verify=yes turns host-key checking off"),
        ("qemu+ext:///system?command=/opt/tunnel", "transport 'ext' runs a command of its own"),
        ("qemu+libssh://root@h1/system", "transport 'libssh' uses libvirt's own SSH client"),
        ("qemu+libssh2://root@h1/system?known_hosts_verify=ignore", "transport 'libssh2'"),
    ],
)
def test_hosts_uris_that_skip_the_host_key_check_are_refused(tmp_path, uri, problem):
    path = write(tmp_path, f"root@10.0.0.1\nuri={uri}\n", "pm")
    message = error_of(load_hosts, path)
    assert message.startswith(f"{path}:2: uri {uri!r}: "), message
    assert problem in message
    yaml_form = write(tmp_path, f"hosts:\n  - address: h1\n    uri: '{uri}'\n", "pm.yaml")
    assert error_of(load_hosts, yaml_form).startswith(f"{yaml_form}:3: uri ")


@pytest.mark.parametrize(
    "uri",
    [
        "qemu+ssh://root@h1/system?keyfile=/etc/fabric/id_ed25519",
        "qemu+ssh://root@h1/system?no_verify=0&no_tty=1",
        "qemu+ssh://root@h1/session?socket=/run/user/1000/libvirt/virtqemud-sock",
    ],
)
def test_hosts_uri_parameters_that_keep_the_check_are_accepted(tmp_path, uri):
    assert load_hosts(write(tmp_path, f"uri={uri}\n"))[0].uri == uri


def test_hosts_unsupported_scheme_lists_choices(tmp_path):
    path = write(tmp_path, "uri=http://x/\n")
    message = error_of(load_hosts, path)
    assert "driver[+transport]://" in message
    assert "qemu" in message and "ssh" in message and "test:///" in message


@pytest.mark.parametrize("text", ["", "\n\n", "# only comments\n  # more\n"])
def test_hosts_empty_file(tmp_path, text):
    path = write(tmp_path, text, "pm.txt")
    assert error_of(load_hosts, path) == f"{path}: no physical machines"


def test_hosts_missing_file(tmp_path):
    path = tmp_path / "nope"
    assert error_of(load_hosts, path) == f"{path}: no such file"


def test_hosts_not_utf8(tmp_path):
    path = tmp_path / "pm"
    path.write_bytes(b"root@10.0.0.1\nroot@\xff\n")
    assert error_of(load_hosts, path) == f"{path}:2: not UTF-8 text"


def test_hosts_yaml_form(tmp_path):
    path = write(
        tmp_path,
        """\
        # hosts in YAML
        hosts:
          - user: root
            address: 10.1.33.121
          - user: pm1
            address: 127.0.0.2
            port: 2222
            uri: qemu+ssh://pm1@127.0.0.2:2222/session
            domain: qemu
            cpu: 4
            ram: 4096
            disk: 160
            arch: x86_64
            network: network:default
            pool: /home/pm1/pool
          - uri: test:///tmp/node.xml
          - address: node7.example.org
            port: 2200
        """,
    )
    a, b, c, d = load_hosts(path)
    assert a.uri == "qemu+ssh://root@10.1.33.121/system"
    assert a.source == Source(str(path), 3)
    assert b == HostSpec(
        user="pm1",
        address="127.0.0.2",
        port=2222,
        uri="qemu+ssh://pm1@127.0.0.2:2222/session",
        domain_type="qemu",
        cpu=4,
        ram=4096,
        disk=160,
        arch="x86_64",
        network="network:default",
        pool_path="/home/pm1/pool",
    )
    assert b.source.line == 5
    assert (c.uri, c.address) == ("test:///tmp/node.xml", None)
    assert d.uri == "qemu+ssh://node7.example.org:2200/system"


def test_hosts_yaml_top_level_list_and_flow_style(tmp_path):
    path = write(tmp_path, "- {user: root, address: 10.0.0.1}\n- {user: root, address: 10.0.0.2}\n")
    assert [h.address for h in load_hosts(path)] == ["10.0.0.1", "10.0.0.2"]


def test_hosts_yaml_matches_text(tmp_path):
    text = write(tmp_path, "root@10.0.0.1 port=2222 cpu=2 network=forward\n", "pm.txt")
    yml = write(
        tmp_path,
        "hosts:\n  - {user: root, address: 10.0.0.1, port: 2222, cpu: 2, network: forward}\n",
        "pm.yaml",
    )
    assert load_hosts(text) == load_hosts(yml)


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        (
            "hosts:\n  - user: root\n    address: 10.0.0.1\n"
            "  - user: root\n    address: 1.2.3.999\n",
            5,
            "address: '1.2.3.999' is not a valid IPv4 address",
        ),
        (
            "hosts:\n  - {user: root, address: 10.0.0.1}\n"
            "  - {user: root, address: 10.0.0.2, cpu: 1.5}\n",
            3,
            "cpu must be a positive integer, not 1.5",
        ),
        (
            "hosts:\n  - address: 10.0.0.1\n    cpu: true\n",
            3,
            "cpu must be a positive integer, not true",
        ),
        (
            "hosts:\n  - address: 10.0.0.1\n    cpu: '4'\n",
            3,
            "cpu must be a positive integer, not '4' (a quoted string)",
        ),
        (
            "hosts:\n  - address: 10.0.0.1\n    port: 70000\n",
            3,
            "port must be an integer in 1..65535, not 70000",
        ),
        (
            "hosts:\n  - address: 10.0.0.1\n    colour: blue\n",
            3,
            "unknown key 'colour' (valid keys: user, address, port, uri",
        ),
        ("hosts:\n  - user: root\n", 2, "user is given without an address"),
        ("hosts:\n  - address: 10.0.0.1\n    uri: http://x/\n", 3, "unsupported scheme 'http'"),
        (
            "hosts:\n  - address: 10.0.0.1\n  - address: 10.0.0.1\n",
            3,
            "duplicate host qemu+ssh://10.0.0.1/system (first on line 2)",
        ),
        (
            "hosts:\n  - address: 10.0.0.1\n  - just a string\n",
            3,
            "each 'hosts' entry must be a mapping (key: value)",
        ),
        ("hosts:\n  - address: 10.0.0.1\n    address: 10.0.0.2\n", 3, "'address' is given twice"),
        ("hosts:\n  - address: 10.0.0.1\n    cpu: [1\n", 4, "invalid YAML"),
        (
            "hosts:\n  - address: 10.0.0.1\nimages: []\n",
            3,
            "unknown top-level key 'images' (expected 'hosts:')",
        ),
        ("hosts: 5\n", 1, "'hosts' must be a list of mappings"),
    ],
)
def test_hosts_yaml_errors(tmp_path, text, line, problem):
    path = write(tmp_path, text, "pm.yaml")
    message = error_of(load_hosts, path)
    assert message.startswith(f"{path}:{line}: "), message
    assert problem in message


def test_hosts_yaml_empty_list(tmp_path):
    path = write(tmp_path, "hosts: []\n")
    assert error_of(load_hosts, path) == f"{path}: no physical machines"


# --------------------------------------------------------------------------- images


def test_images_original_format(tmp_path):
    path = write(
        tmp_path,
        "root@10.1.33.121:/home/mayank/arch_64.img\n/home/images/Ubuntu-12.04-amd64.qcow2\n",
        "image_file",
    )
    remote, local = load_images(path)
    assert remote == ImageSpec(
        name="arch_64",
        path="/home/mayank/arch_64.img",
        user="root",
        host="10.1.33.121",
        format="raw",
    )
    assert remote.location == "root@10.1.33.121:/home/mayank/arch_64.img"
    assert remote.source == Source(str(path), 1)
    assert local == ImageSpec(
        name="Ubuntu-12.04-amd64", path="/home/images/Ubuntu-12.04-amd64.qcow2"
    )
    assert local.format == "qcow2"
    assert local.location == "/home/images/Ubuntu-12.04-amd64.qcow2"


@pytest.mark.parametrize(
    ("location", "name", "fmt"),
    [
        ("/i/Fedora-17-x86_64.qcow2", "Fedora-17-x86_64", "qcow2"),
        ("/i/disk.QCOW2", "disk", "qcow2"),
        ("/i/linux-0.2.img", "linux-0.2", "raw"),
        ("/i/plain.raw", "plain", "raw"),
        ("/i/noext", "noext", "raw"),
        ("/i/archive.tar.gz", "archive.tar", "raw"),
        ("host.example.org:/i/a.qcow2", "a", "qcow2"),
    ],
)
def test_images_name_and_format_from_path(tmp_path, location, name, fmt):
    path = write(tmp_path, f"{location}\n")
    (image,) = load_images(path)
    assert (image.name, image.format) == (name, fmt)


def test_images_every_key(tmp_path):
    path = write(
        tmp_path,
        "root@10.0.0.1:/srv/debian.img port=2222 name=Debian-12 format=qcow2 arch=aarch64  # arm\n",
    )
    (image,) = load_images(path)
    assert image == ImageSpec(
        name="Debian-12",
        path="/srv/debian.img",
        user="root",
        host="10.0.0.1",
        port=2222,
        format="qcow2",
        arch="aarch64",
    )


def test_images_host_without_user(tmp_path):
    path = write(tmp_path, "imagestore:/srv/a.img\n")
    (image,) = load_images(path)
    assert (image.user, image.host, image.location) == (None, "imagestore", "imagestore:/srv/a.img")


def test_images_yaml_form(tmp_path):
    path = write(
        tmp_path,
        """\
        images:
          - path: root@10.1.33.121:/home/mayank/arch_64.img
          - name: tiny
            path: /srv/images/tiny.raw
            format: raw
            arch: x86_64
            kernel: /srv/images/vmlinuz
            initrd: /srv/images/initrd.gz
            cmdline: console=ttyS0 quiet
          - path: pm1@127.0.0.2:/home/pm1/d.qcow2
            port: 2222
        """,
    )
    a, b, c = load_images(path)
    assert (a.name, a.host, a.format, a.source.line) == ("arch_64", "10.1.33.121", "raw", 2)
    assert b == ImageSpec(
        name="tiny",
        path="/srv/images/tiny.raw",
        format="raw",
        arch="x86_64",
        kernel="/srv/images/vmlinuz",
        initrd="/srv/images/initrd.gz",
        cmdline="console=ttyS0 quiet",
    )
    assert (c.user, c.port, c.format, c.source.line) == ("pm1", 2222, "qcow2", 10)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (
            "images/foo.img",
            "image path 'images/foo.img' is not absolute (write /abs/path or user@host:/abs/path)",
        ),
        ("foo.qcow2", "image path 'foo.qcow2' is not absolute"),
        (
            "root@10.0.0.1:images/a.img",
            "image path 'images/a.img' in 'root@10.0.0.1:images/a.img' is not absolute",
        ),
        ("root@10.0.0.1", "'root@10.0.0.1' has no ':/path' after the host"),
        ("root@:/a.img", "'root@:/a.img' has no host"),
        ("@10.0.0.1:/a.img", "'@10.0.0.1:/a.img' has no user"),
        ("root@10.0.0.256:/a.img", "'10.0.0.256' is not a valid IPv4 address"),
        ("/srv/images/", "names a directory"),
        ("/srv/.img", "image name '.img' taken from the path is not valid; set name=..."),
        ("/srv/a.img name=bad/name", "name 'bad/name' is not valid"),
        ("/srv/a.img format=vmdk", "format must be one of qcow2, raw, not 'vmdk'"),
        ("/srv/a.img port=22", "port only applies to a remote image"),
        ("h:/srv/a.img port=99999", "port must be an integer in 1..65535, not 99999"),
        ("/srv/a.img arch=x86-64", "arch must look like x86_64"),
        ("/srv/a.img size=3", "unknown key 'size' (valid keys: port, name, format, arch)"),
        ("name=x /srv/a.img", "a line must start with the image path"),
        ("/srv/first.img", "duplicate image /srv/first.img (first on line 1)"),
        (
            "/other/dir/first.qcow2",
            "duplicate image name 'first' (first on line 1); give one of them another name",
        ),
    ],
)
def test_images_bad_lines(tmp_path, line, problem):
    path = write(tmp_path, f"/srv/first.img\n\n{line}\n", "images.txt")
    message = error_of(load_images, path)
    assert message.startswith(f"{path}:3: "), message
    assert problem in message


def test_images_a_local_directory_is_no_image(tmp_path):
    (tmp_path / "images.d").mkdir()
    path = write(tmp_path, f"/i.img\n{tmp_path / 'images.d'}\n", "images")
    assert error_of(load_images, path) == (
        f"{path}:2: image path '{tmp_path / 'images.d'}' names a directory, not an image file"
    )
    yaml_form = write(tmp_path, f"images:\n  - path: {tmp_path}\n    name: x\n", "images.yaml")
    assert error_of(load_images, yaml_form).startswith(f"{yaml_form}:2: image path ")
    # a remote path is on another machine: this one's directories say nothing about it
    (remote,) = load_images(write(tmp_path, f"root@10.0.0.1:{tmp_path} name=r\n", "remote"))
    assert remote.path == str(tmp_path)


def test_images_same_file_twice_under_two_names_is_duplicate(tmp_path):
    path = write(tmp_path, "/srv/a.img\n/srv/a.img name=b\n")
    assert error_of(load_images, path) == f"{path}:2: duplicate image /srv/a.img (first on line 1)"


def test_images_duplicate_name_resolved_with_name_key(tmp_path):
    path = write(tmp_path, "root@h1:/srv/a.img\nroot@h2:/srv/a.img name=a-copy\n")
    assert [i.name for i in load_images(path)] == ["a", "a-copy"]


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("images:\n  - name: x\n", 2, "image has no 'path'"),
        ("images:\n  - path: rel/a.img\n", 2, "image path 'rel/a.img' is not absolute"),
        (
            "images:\n  - path: /a.img\n    kernel: vmlinuz\n",
            3,
            "kernel 'vmlinuz' is not an absolute path",
        ),
        ("images:\n  - path: /a.img\n    cmdline: 5\n", 3, "cmdline must be a non-empty string"),
        ("images:\n  - path: /a.img\n  - path: /b/a.qcow2\n", 3, "duplicate image name 'a'"),
        (
            "images:\n  - path: /a.img\n    size: 1\n",
            3,
            "unknown key 'size' (valid keys: name, "
            "path, port, format, arch, kernel, initrd, cmdline)",
        ),
        ("images:\n  - path: /.img\n", 2, "set name: ..."),
    ],
)
def test_images_yaml_errors(tmp_path, text, line, problem):
    path = write(tmp_path, text, "images.yaml")
    message = error_of(load_images, path)
    assert message.startswith(f"{path}:{line}: "), message
    assert problem in message


@pytest.mark.parametrize("text", ["", "# nothing\n", "images: []\n"])
def test_images_empty_file(tmp_path, text):
    path = write(tmp_path, text, "images.txt")
    assert error_of(load_images, path) == f"{path}: no images"


# --------------------------------------------------------------------------- types


def test_types_assignment_json(tmp_path):
    path = write(tmp_path, ASSIGNMENT_TYPES_JSON, "vm_types")
    types = load_types(path)
    assert [t.as_api() for t in types] == [
        {"tid": 1, "cpu": 1, "ram": 512, "disk": 1},
        {"tid": 2, "cpu": 2, "ram": 1024, "disk": 2},
        {"tid": 3, "cpu": 4, "ram": 2048, "disk": 3},
    ]
    assert [t.source.line for t in types] == [3, 9, 15]


def test_types_assignment_flavor_file_without_braces_with_trailing_comma(tmp_path):
    path = write(tmp_path, ASSIGNMENT_FLAVOR_FILE, "flavor_file")
    types = load_types(path)
    assert types == (VmType(1, 1, 512, 1), VmType(2, 2, 1024, 2))
    assert [t.source.line for t in types] == [2, 7]


def test_types_one_line_json_and_names(tmp_path):
    path = write(
        tmp_path,
        '{"types": [{"tid": 7, "name": "standard", "cpu": 1, "ram": 512, "disk": 1}]}',
    )
    assert load_types(path) == (VmType(7, 1, 512, 1, "standard"),)


def test_types_trailing_commas_everywhere(tmp_path):
    path = write(tmp_path, '{"types": [{"name": "small", "cpu": 1, "ram": 512, "disk": 1,},],}\n')
    assert load_types(path) == (VmType(1, 1, 512, 1, "small"),)


def test_types_commas_and_hashes_inside_strings_are_kept(tmp_path):
    path = write(tmp_path, '{"types": [{"name": "a,] #x", "cpu": 1, "ram": 512, "disk": 1}]}\n')
    assert "name 'a,] #x' is not valid" in error_of(load_types, path)


def test_types_comments_allowed(tmp_path):
    path = write(
        tmp_path,
        """\
        # flavors offered
        {"types": [
            {"cpu": 1, "ram": 512, "disk": 1},  # small
        ]}
        """,
    )
    assert load_types(path)[0].source.line == 3


def test_types_missing_tids_take_lowest_unused(tmp_path):
    path = write(
        tmp_path,
        """\
        {"types": [
            {"cpu": 1, "ram": 512, "disk": 1},
            {"tid": 1, "cpu": 2, "ram": 1024, "disk": 2},
            {"cpu": 4, "ram": 2048, "disk": 3},
            {"tid": 3, "cpu": 8, "ram": 4096, "disk": 4},
            {"cpu": 16, "ram": 8192, "disk": 5}
        ]}
        """,
    )
    assert [t.tid for t in load_types(path)] == [2, 1, 4, 3, 5]


def test_types_yaml_form(tmp_path):
    path = write(
        tmp_path,
        """\
        types:
          - {name: standard, cpu: 1, ram: 512, disk: 1}
          - name: large
            tid: 5
            cpu: 2
            ram: 1024
            disk: 2
        """,
    )
    assert load_types(path) == (VmType(1, 1, 512, 1, "standard"), VmType(5, 2, 1024, 2, "large"))
    assert [t.source.line for t in load_types(path)] == [2, 3]


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        (
            '{"types": [\n  {"cpu": 1, "ram": 512, "disk": 1},\n'
            '  {"cpu": "2", "ram": 1, "disk": 1}\n]}',
            3,
            "cpu must be a positive integer, not '2' (a quoted string)",
        ),
        (
            '{"types": [\n  {"cpu": 1, "ram": 512, "disk": 1},\n'
            '  {"cpu": 2, "ram": -1, "disk": 1}\n]}',
            3,
            "ram must be a positive integer, not -1",
        ),
        (
            '{"types": [\n  {"cpu": 1, "ram": 512, "disk": 1.5}\n]}',
            2,
            "disk must be a positive integer, not 1.5",
        ),
        (
            '{"types": [\n  {"cpu": 1, "ram": 512, "disk": 1.0}\n]}',
            2,
            "disk must be a positive integer, not 1.0",
        ),
        (
            '{"types": [\n  {"cpu": true, "ram": 512, "disk": 1}\n]}',
            2,
            "cpu must be a positive integer, not true",
        ),
        (
            '{"types": [\n  {"cpu": 0, "ram": 512, "disk": 1}\n]}',
            2,
            "cpu must be a positive integer, not 0",
        ),
        ('{"types": [\n  {"cpu": null, "ram": 512, "disk": 1}\n]}', 2, "type has no 'cpu'"),
        ('{"types": [\n  {"ram": 512, "disk": 1}\n]}', 2, "type has no 'cpu'"),
        (
            '{"types": [\n  {"cpu": 1, "ram": 512, "disk": 1, "gpu": 1}\n]}',
            2,
            "unknown key 'gpu' (valid keys: tid, name, cpu, ram, disk)",
        ),
        (
            '{"types": [\n  {"cpu": 1, "cpu": 2, "ram": 512, "disk": 1}\n]}',
            2,
            "'cpu' is given twice",
        ),
        (
            '{"types": [\n  {"tid": "1", "cpu": 1, "ram": 512, "disk": 1}\n]}',
            2,
            "tid must be a positive integer",
        ),
        (
            '{"types": [\n  {"name": "", "cpu": 1, "ram": 512, "disk": 1}\n]}',
            2,
            "name '' is not valid",
        ),
        ('{"types": [\n  5\n]}', 1, "each type must be an object, not 5"),
        (
            '{"types": [\n  {"cpu": 1, "ram": 512, "disk": 1}\n'
            '  {"cpu": 2, "ram": 1024, "disk": 2}\n]}',
            3,
            "invalid JSON: Expecting ',' delimiter",
        ),
        ('{"types": [\n  {"cpu": 1, "ram": 512, "disk": 1},\n  {cpu: 2}\n]}', 3, "invalid JSON"),
        ('{\n  "flavors": []\n}', 2, "unknown top-level key 'flavors' (expected 'types')"),
        ("{}", 1, "missing the 'types' list"),
        ('{"types": {"cpu": 1}}', 1, "'types' must be a list of objects"),
    ],
)
def test_types_json_errors(tmp_path, text, line, problem):
    path = write(tmp_path, text, "types.json")
    message = error_of(load_types, path)
    assert message.startswith(f"{path}:{line}: "), message
    assert problem in message


def test_types_bare_list(tmp_path):
    path = write(tmp_path, '[{"cpu": 1, "ram": 512, "disk": 1}]\n')
    assert load_types(path) == (VmType(1, 1, 512, 1),)


def test_types_duplicate_tid_names_both_lines(tmp_path):
    path = write(
        tmp_path,
        """\
        {"types": [
            {"tid": 1, "cpu": 1, "ram": 512, "disk": 1},
            {"tid": 2, "cpu": 2, "ram": 1024, "disk": 2},
            {"tid": 1, "cpu": 4, "ram": 2048, "disk": 3}
        ]}
        """,
    )
    assert error_of(load_types, path) == f"{path}:4: duplicate tid 1 (first on line 2)"


def test_types_duplicate_tid_on_its_own_line(tmp_path):
    text = ASSIGNMENT_TYPES_JSON.replace('"tid": 3', '"tid": 2')
    path = write(tmp_path, text)
    assert error_of(load_types, path) == f"{path}:16: duplicate tid 2 (first on line 9)"


def test_types_duplicate_name(tmp_path):
    path = write(
        tmp_path,
        "types:\n  - {name: a, cpu: 1, ram: 1, disk: 1}\n  - {name: a, cpu: 2, ram: 2, disk: 2}\n",
    )
    assert error_of(load_types, path) == f"{path}:3: duplicate type name 'a' (first on line 2)"


def test_types_error_in_assignment_layout_points_at_the_key(tmp_path):
    text = ASSIGNMENT_FLAVOR_FILE.replace('"ram": 1024', '"ram": 1024.5')
    path = write(tmp_path, text)
    assert error_of(load_types, path) == f"{path}:9: ram must be a positive integer, not 1024.5"


def test_types_invalid_json_line_in_braceless_file(tmp_path):
    text = ASSIGNMENT_FLAVOR_FILE.replace('"disk": 2', '"disk" 2')
    path = write(tmp_path, text)
    message = error_of(load_types, path)
    assert message.startswith(f"{path}:10: invalid JSON"), message


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        (
            "types:\n  - {cpu: 1, ram: 512, disk: 1}\n  - {cpu: 1.5, ram: 512, disk: 1}\n",
            3,
            "cpu must be a positive integer, not 1.5",
        ),
        (
            "types:\n  - cpu: 1\n    ram: no\n    disk: 1\n",
            3,
            "ram must be a positive integer, not false",
        ),
        ("flavors:\n  - {cpu: 1, ram: 1, disk: 1}\n", 1, "unknown top-level key 'flavors'"),
        ("- {cpu: 1, ram: 1, disk: 1}\n- {cpu: 1, ram: 1}\n", 2, "type has no 'disk'"),
        ("just words\n", 1, "expected a 'types:' list"),
    ],
)
def test_types_yaml_errors(tmp_path, text, line, problem):
    path = write(tmp_path, text, "types.yaml")
    message = error_of(load_types, path)
    assert message.startswith(f"{path}:{line}: "), message
    assert problem in message


@pytest.mark.parametrize(
    "text", ["", "# none\n", '{"types": []}', '"types": [ ]', "types: []\n", "types:\n"]
)
def test_types_empty(tmp_path, text):
    path = write(tmp_path, text, "types")
    assert error_of(load_types, path) == f"{path}: no VM types"


def test_types_never_evaluates_python(tmp_path):
    path = write(tmp_path, '{"types": [{"cpu": __import__("os").getpid(), "ram": 1, "disk": 1}]}')
    assert "invalid JSON" in error_of(load_types, path)


# --------------------------------------------------------------------------- together


def test_example_files_load():
    inventory = load_inventory(
        ROOT / "physical_machines.example", ROOT / "images.example", ROOT / "vm_types.example"
    )
    assert len(inventory.hosts) >= 3
    assert any(i.host for i in inventory.images) and any(not i.host for i in inventory.images)
    assert [t.as_api() for t in inventory.types] == [
        {"tid": 1, "cpu": 1, "ram": 512, "disk": 1},
        {"tid": 2, "cpu": 2, "ram": 1024, "disk": 2},
        {"tid": 3, "cpu": 4, "ram": 2048, "disk": 3},
    ]
    assert (
        validate_files(
            ROOT / "physical_machines.example", ROOT / "images.example", ROOT / "vm_types.example"
        )
        == []
    )


def test_load_inventory_reports_first_bad_file(tmp_path):
    pm = write(tmp_path, "root@10.0.0.1\n", "pm")
    images = write(tmp_path, "rel.img\n", "images")
    types = write(tmp_path, ASSIGNMENT_TYPES_JSON, "types")
    with pytest.raises(InventoryError) as info:
        load_inventory(pm, images, types)
    assert info.value.path == str(images)
    assert info.value.line == 1


def test_validate_files_collects_every_problem(tmp_path):
    pm = write(tmp_path, "root@\nroot@10.0.0.1 port=x\nroot@10.0.0.2\n", "pm")
    images = write(tmp_path, "rel.img\n/srv/a.img\n/srv/b/a.img\n", "images")
    types = write(tmp_path, '"types": [\n  {"cpu": 0, "ram": 1, "disk": 1},\n]\n', "types")
    assert validate_files(pm, images, types) == [
        f"{pm}:1: 'root@' has no host",
        f"{pm}:2: port must be an integer in 1..65535, not 'x'",
        f"{images}:1: image path 'rel.img' is not absolute"
        " (write /abs/path or user@host:/abs/path)",
        f"{images}:3: duplicate image name 'a' (first on line 2); give one of them another name",
        f"{types}:2: cpu must be a positive integer, not 0",
    ]


def test_validate_files_reports_missing_and_empty(tmp_path):
    empty = write(tmp_path, "", "empty")
    assert validate_files(tmp_path / "none", empty, empty) == [
        f"{tmp_path / 'none'}: no such file",
        f"{empty}: no images",
        f"{empty}: no VM types",
    ]


def test_types_unclosed_braceless_file_points_inside_the_file(tmp_path):
    text = ASSIGNMENT_FLAVOR_FILE.replace("    ]\n", "")
    path = write(tmp_path, text)
    message = error_of(load_types, path)
    assert message.startswith(f"{path}:11: invalid JSON"), message


def test_hosts_yaml_address_must_be_string(tmp_path):
    path = write(tmp_path, "hosts:\n  - address: 10\n")
    assert error_of(load_hosts, path) == f"{path}:2: address must be a non-empty string, not 10"


# ------------------------------------------------------------------ bounded input


@pytest.mark.parametrize(
    ("name", "text", "line"),
    [
        # the JSON form (its decoder recursed until Python's limit: a RecursionError)
        ("types", '{"types": [\n' + "[" * 50_000, 2),
        ("types", '{"types": [\n' + "[" * 33 + "]" * 33 + "]}", 2),
        # the YAML forms, flow and block
        ("types", "[" * 50_000, 1),
        ("types", "types:\n  - " + "[" * 50_000, 2),
        ("pm", "hosts:\n  - " + "{a: " * 50_000, 2),
        ("images", "- " + "[" * 40 + "]" * 40 + "\n", 1),
        ("images", "x:\n" + "".join(" " * i + "x:\n" for i in range(1, 60)), 33),
    ],
    ids=["json", "json-33", "yaml-flow", "yaml-list", "yaml-mappings", "yaml-40", "yaml-block"],
)
def test_nesting_past_the_limit_is_one_problem_with_its_line(tmp_path, name, text, line):
    path = write(tmp_path, text, name)
    load = {"types": load_types, "pm": load_hosts, "images": load_images}[name]
    message = error_of(load, path)
    assert message == f"{path}:{line}: nested deeper than 32 levels (lists and mappings)"
    assert validate_files(
        path if name == "pm" else write(tmp_path, "root@10.0.0.1\n", "pm.ok"),
        path if name == "images" else write(tmp_path, "/i.img\n", "images.ok"),
        path if name == "types" else write(tmp_path, ASSIGNMENT_TYPES_JSON, "types.ok"),
    ) == [message]


def test_json_nested_32_deep_is_still_read_as_json(tmp_path):
    # the nesting check comes first, but a file within the limit gets the usual messages
    path = write(tmp_path, '{"types": [' + "[" * 30 + "]" * 30 + "]}", "types")
    assert "each type must be an object" in error_of(load_types, path)


def test_yaml_aliases_that_expand_past_the_limit_are_refused(tmp_path):
    # eight lines that stand for 10**8 values; the fifth is past the limit
    lines = ["- &a [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"- &{c} [{', '.join([f'*{p}'] * 10)}]" for p, c in zip("abcdefg", "bcdefgh")]
    path = write(tmp_path, "\n".join(lines) + "\n", "pm")
    message = error_of(load_hosts, path)
    assert message == f"{path}:5: its aliases expand to more than 100000 values"
    path = write(tmp_path, "hosts:\n  - &a {user: [*a]}\n", "pm2")
    assert error_of(load_hosts, path) == f"{path}:2: an alias refers to a node that holds it"


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        # past the registry's 32-bit capacity columns (an OverflowError at start-up)
        ("pm", "root@10.0.0.1 ram=9223372036854775808\n", "ram must be at most 2147483647"),
        ("pm", "root@10.0.0.1 cpu=2147483648\n", "cpu must be at most 2147483647"),
        ("pm", "hosts:\n  - {address: 10.0.0.1, disk: 2147483648}\n", "disk must be at most"),
        (
            "types",
            '{"types": [{"tid": 1, "cpu": 99999999999999999999999, "ram": 1, "disk": 1}]}',
            "cpu must be at most 2147483647, not 99999999999999999999999",
        ),
        ("types", "types:\n  - {cpu: 1, ram: 4294967296, disk: 1}\n", "ram must be at most"),
        # a tid past what the API takes (and past the registry's 64-bit ids)
        (
            "types",
            '{"types": [{"tid": 9223372036854775808, "cpu": 1, "ram": 1, "disk": 1}]}',
            "tid must be at most 9007199254740992, not 9223372036854775808",
        ),
        # more digits than Python converts (a ValueError at start-up)
        ("pm", "root@10.0.0.1 cpu=1" + "0" * 5000 + "\n", "cpu: a number of 5001 digits"),
        ("pm", "- {address: 10.0.0.1, cpu: 1" + "0" * 5000 + "}\n", "a number of 5001 digits"),
        (
            "types",
            '{"types": [{"cpu": 1, "ram": 1' + "0" * 5000 + ', "disk": 1}]}',
            "a number of 5001 digits is too long (at most 64)",
        ),
        ("types", "- {cpu: 1, ram: 1" + "0" * 5000 + ", disk: 1}\n", "a number of 5001"),
    ],
    ids=[
        "pm-ram-2**63",
        "pm-cpu-2**31",
        "pm-yaml-disk",
        "types-cpu-10**23",
        "types-yaml-ram",
        "types-tid-2**63",
        "pm-5001-digits",
        "pm-yaml-5001-digits",
        "types-5001-digits",
        "types-yaml-5001-digits",
    ],  # fmt: skip
)
def test_numbers_past_the_registrys_range_are_refused(tmp_path, name, text, problem):
    path = write(tmp_path, text, name)
    message = error_of(load_types if name == "types" else load_hosts, path)
    assert message.startswith(f"{path}:"), message
    assert problem in message
    assert len(message) < 200


def test_the_largest_numbers_are_accepted(tmp_path):
    pm = write(tmp_path, "root@10.0.0.1 cpu=2147483647 ram=2147483647 disk=2147483647\n")
    (host,) = load_hosts(pm)
    assert (host.cpu, host.ram, host.disk) == (2**31 - 1,) * 3
    types = write(tmp_path, '[{"tid": 9007199254740992, "cpu": 1, "ram": 1, "disk": 1}]', "t")
    assert load_types(types)[0].tid == 2**53


def test_the_tid_bound_is_the_apis():
    from orchestrator.api.params import MAX_ID
    from orchestrator.inventory.checks import MAX_TID

    assert MAX_TID == MAX_ID
