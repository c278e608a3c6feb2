"""The YAML configuration: defaults, one schema for every section, every problem
reported with the file, line and key named; pools checked against the input files."""

from __future__ import annotations

import math

import pytest

from orchestrator import cli
from orchestrator.auth import hash_password
from orchestrator.config import (
    CapacityConfig,
    Config,
    PoolConfig,
    check_pools,
    config_from_dict,
    effective_capacity,
    load_config,
    resolve_pools,
)
from orchestrator.errors import ConfigError
from orchestrator.model import NAME_RULE, ImageSpec, Inventory, VmType
from orchestrator.scheduler import Policy


def write(tmp_path, text: str):  # noqa: ANN201
    p = tmp_path / "fabric.yaml"
    p.write_text(text)
    return p


def problems(p) -> list[str]:  # noqa: ANN001
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    assert exc.value.status == 400
    return exc.value.message.splitlines()


def test_defaults_without_a_file():
    cfg = load_config(None)
    assert cfg == Config() == config_from_dict({}) == config_from_dict(None)
    assert cfg.scheduler == Policy.named("spread")
    assert cfg.capacity.cpu_allocation_ratio == 4.0
    assert cfg.max_vms is None and cfg.state_dir == "/var/lib/fabric"
    assert cfg.pools == [] and cfg.storage.backends == {} and cfg.storage.hosts == {}
    assert cfg.auth.enabled is False and cfg.auth.users == {} and cfg.auth.open_reads
    assert cfg.schedules.interval == 30.0
    assert cfg.create.port_range == range(22000, 23000)


def test_full_file(tmp_path):
    h = hash_password("pw")
    p = write(
        tmp_path,
        "scheduler: {policy: pack, host_subset_size: 2}\n"
        "capacity: {cpu_allocation_ratio: 2, reserved_host_ram: 256}\n"
        "ssh: {key: /k, known_hosts: /kh, connect_timeout: 3}\n"
        "create: {max_attempts: 2, forward_ports: 23000-23010}\n"
        "limits: {max_vms: 7}\n"
        "pools: [{name: x, instance_type: 2, image: debian, size: 2}]\n"
        f"auth: {{enabled: true, users: {{alice: '{h}'}}, token_ttl_hours: 2}}\n"
        "schedules: {interval: 5}\n"
        # an empty section is its defaults
        "guest:\n",
    )
    cfg = load_config(p)
    assert cfg.scheduler.name == "pack" and cfg.scheduler.host_subset_size == 2
    assert cfg.capacity.cpu_allocation_ratio == 2.0
    assert cfg.ssh.key == "/k" and cfg.create.port_range == range(23000, 23011)
    assert cfg.max_vms == 7
    (pool,) = cfg.pools
    assert (pool.name, pool.instance_type, pool.image, pool.size, pool.most) == (
        "x", 2, "debian", 2, 2
    )  # fmt: skip
    assert (pool.lifetime, pool.lifetime_max, pool.cleanup, pool.ready_check) == (
        2.0, 24.0, "tmp", "ssh"
    )  # fmt: skip
    assert cfg.auth.enabled and cfg.auth.token_ttl_hours == 2
    assert {n: (u.password, u.role) for n, u in cfg.auth.users.items()} == {"alice": (h, "user")}
    assert cfg.schedules.interval == 5.0
    assert cfg.guest.user == "root"
    assert not hasattr(cfg, "raw")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("scheduler: {policy: random}\n", ":1: scheduler.policy: unknown policy 'random'"),
        ("capacity: {cpu_ratio: 2}\n", ":1: capacity.cpu_ratio: unknown setting (valid: cpu_"),
        (
            "capacity: {cpu_allocation_ratio: lots}\n",
            ":1: capacity.cpu_allocation_ratio: must be a number >= 0, got 'lots'",
        ),
        (
            "capacity: {reserved_host_ram: -5}\n",
            ":1: capacity.reserved_host_ram: must be an integer >= 0, got -5",
        ),
        ("capacity: {reserved_host_cpus: 1.5}\n", ":1: capacity.reserved_host_cpus: must be an"),
        ("capacity: {reserved_host_cpus: true}\n", ":1: capacity.reserved_host_cpus: must be an"),
        ("capacity: {cpu_allocation_ratio: .inf}\n", ":1: capacity.cpu_allocation_ratio: must"),
        ("ssh: [1, 2]\n", ":1: ssh: must be a mapping"),
        ("ssh: {key: 5}\n", ":1: ssh.key: must be a string, got 5"),
        ("bogus: 1\n", ":1: bogus: unknown section (valid: scheduler, capacity, ssh,"),
        ("create: {forward_ports: lots}\n", ":1: create.forward_ports: must look like 22000-22999"),
        ("create: {forward_ports: 23000-22000}\n", ":1: create.forward_ports: must look like"),
        ("create: {forward_ports: 1-70000}\n", ":1: create.forward_ports: must look like"),
        ("create: {max_attempts: 0}\n", ":1: create.max_attempts: must be an integer >= 1"),
        ("create: {concurrent: 0}\n", ":1: create.concurrent: must be an integer >= 1, got 0"),
        ("create: {stage_wait: -1}\n", ":1: create.stage_wait: must be a number >= 0, got -1"),
        ("create: {image_store_retry: x}\n", ":1: create.image_store_retry: must be a number"),
        ("reconcile: {grace: -5}\n", ":1: reconcile.grace: must be a number >= 0, got -5"),
        ("reconcile: {remove_unknown: 1}\n", ":1: reconcile.remove_unknown: must be"),
        ("scheduler: {policy: pack\n", ":2: not valid YAML"),
        ("state_dir: relative\n", ":1: state_dir: must be an absolute path, got 'relative'"),
        ("limits: {max_vms: -1}\n", ":1: limits.max_vms: must be an integer >= 0, got -1"),
        ("limits: {max_vms: many}\n", ":1: limits.max_vms: must be an integer >= 0, got 'many'"),
        ("limits: {vms: 3}\n", ":1: limits.vms: unknown setting (valid: max_vms)"),
        ("workers: {build_workers: 0}\n", ":1: workers.build_workers: must be an integer >= 1"),
        (
            "workers: {interval: 0}\n",
            ":1: workers.interval: must be a number > 0 and <= 604800, got 0",
        ),
        ("discovery: {interval: -1}\n", ":1: discovery.interval: must be a number > 0"),
        ("libvirt: {call_timeout: -1}\n", ":1: libvirt.call_timeout: must be a number > 0"),
        ("guest: {user: [root]}\n", ":1: guest.user: must be a string"),
        (
            "cluster: {heartbeat: 5, dead_after: 6}\n",
            ":1: cluster.dead_after: must be at least twice cluster.heartbeat (10), got 6",
        ),
        (
            "cluster: {heartbeat: 0}\n",
            ":1: cluster.heartbeat: must be a number > 0 and <= 604800, got 0",
        ),
        ("schedules: {interval: 0}\n", ":1: schedules.interval: must be a positive number"),
        ("schedules: [1]\n", ":1: schedules: must be a mapping"),
        ("storage: {lvm: {}}\n", ":1: storage.lvm: unknown setting (valid: rbd, hosts)"),
        ("pools: {web: 1}\n", ":1: pools: must be a list"),
        ("pools: [7]\n", ":1: pools[0]: must be a mapping, got 7"),
        ("storage: {hosts: {5: dir}}\n", ":1: storage.hosts.5: must be a string, got 5"),
        ("storage: {hosts: {h: lvm}}\n", ":1: storage.hosts.h: must be dir or rbd:NAME"),
        ("storage: {rbd: {ceph1: [1]}}\n", ":1: storage.rbd.ceph1: must be a mapping"),
        ("- 1\n", ": the top level must be a mapping"),
    ],
)
def test_errors_name_the_file_line_and_key(tmp_path, text, words):
    p = write(tmp_path, text)
    (line,) = problems(p)
    assert line.startswith(f"{p}{words}"), line


def test_every_problem_is_reported_each_on_its_line(tmp_path):
    p = write(
        tmp_path,
        "scheduler:\n"  # 1
        "  policy: spread\n"  # 2
        "  weights: {ram: 1}\n"  # 3
        "capacity:\n"  # 4
        "  cpu_ratio: 2\n"  # 5
        "pools:\n"  # 6
        "  - name: web\n"  # 7
        "    instance_type: 1\n"  # 8
        "    image: debian\n"  # 9
        "    size: -1\n"  # 10
        "  - name: web\n"  # 11
        "    image: debian\n"  # 12
        "state_dir: relative\n",  # 13
    )
    assert problems(p) == [
        f"{p}:3: scheduler.weights.ram: unknown weigher "
        "(valid: balance, cpu_free, disk_free, ram_free, vms)",
        f"{p}:5: capacity.cpu_ratio: unknown setting (valid: cpu_allocation_ratio, "
        "ram_allocation_ratio, disk_allocation_ratio, reserved_host_cpus, reserved_host_ram, "
        "reserved_host_disk)",
        f"{p}:10: pools[0].size: must be an integer >= 0, got -1",
        f"{p}:11: pools[1].instance_type: missing (must be an integer tid from the VM types file)",
        f"{p}:11: pools[1].name: 'web' is defined twice (first: pools[0])",
        f"{p}:13: state_dir: must be an absolute path, got 'relative'",
    ]


def test_a_key_given_twice_is_the_last_one_and_is_located_there(tmp_path):
    # YAML keeps the last (a file may be extended by appending overrides)
    p = write(tmp_path, "workers: {interval: 1}\ncapacity: {}\nworkers: {interval: 0}\n")
    assert problems(p) == [f"{p}:3: workers.interval: must be a number > 0 and <= 604800, got 0"]
    p.write_text("workers: {interval: 0}\nworkers: {interval: 1}\n")
    assert load_config(p).workers.interval == 1.0


def test_config_from_dict_names_the_source_without_lines():
    with pytest.raises(ConfigError) as exc:
        config_from_dict({"capacity": {"cpu_ratio": 1}, "limits": {"max_vms": -1}}, "fab.yaml")
    assert exc.value.message.splitlines() == [
        "fab.yaml: capacity.cpu_ratio: unknown setting (valid: cpu_allocation_ratio, "
        "ram_allocation_ratio, disk_allocation_ratio, reserved_host_cpus, reserved_host_ram, "
        "reserved_host_disk)",
        "fab.yaml: limits.max_vms: must be an integer >= 0, got -1",
    ]


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: no such file"):
        load_config(tmp_path / "nope.yaml")


def test_effective_capacity_applies_ratios_and_reserves():
    cap = CapacityConfig(
        cpu_allocation_ratio=2.0,
        ram_allocation_ratio=1.5,
        disk_allocation_ratio=1.0,
        reserved_host_cpus=1,
        reserved_host_ram=512,
        reserved_host_disk=10,
    )
    assert effective_capacity((4, 4096, 100), cap) == (7, 5632, 90)
    assert effective_capacity((0, 100, 5), cap) == (0, 0, 0)


def test_effective_capacity_never_passes_the_registrys_32_bit_columns():
    cap = CapacityConfig(cpu_allocation_ratio=1e308, ram_allocation_ratio=4.0)
    assert effective_capacity((8, 2**31 - 1, 5), cap) == (2**31 - 1, 2**31 - 1, 5)


# -- every bad setting refused before start --------------------------------------


@pytest.mark.parametrize(
    ("text", "words"),
    [
        # a 0 timeout fails every call at once (a paramiko or libvirt call given 0 s)
        ("ssh: {connect_timeout: 0}\n", ":1: ssh.connect_timeout: must be an integer > 0 and"),
        ("libvirt: {connect_timeout: 0}\n", ":1: libvirt.connect_timeout: must be a number > 0"),
        ("libvirt: {call_timeout: 0}\n", ":1: libvirt.call_timeout: must be a number > 0"),
        ("libvirt: {upload_timeout: 0}\n", ":1: libvirt.upload_timeout: must be a number > 0"),
        # a 0 ready_timeout never lets a guest be ready
        ("guest: {ready_timeout: 0}\n", ":1: guest.ready_timeout: must be a number > 0"),
        ("guest: {command_timeout: 0.0}\n", ":1: guest.command_timeout: must be a number > 0"),
        # past the clock's range: an OverflowError in a thread, or at start-up
        ("libvirt: {call_timeout: 1.0e+300}\n", ":1: libvirt.call_timeout: must be a number >"),
        ("workers: {interval: 1.0e+30}\n", ":1: workers.interval: must be a number > 0 and <="),
        ("auth: {lockout_seconds: 10000000000000}\n", ":1: auth.lockout_seconds: must be an"),
        ("schedules: {interval: 1.0e+30}\n", ":1: schedules.interval: must be a positive"),
        ("cluster: {host_cache: 1.0e+30}\n", ":1: cluster.host_cache: must be a number >= 0"),
        (
            "pools: [{name: a, instance_type: 1, image: 1, lifetime_max: 1.0e+300}]\n",
            ":1: pools[0].lifetime_max: must be a positive number of hours (at most 87840)",
        ),
        # what the schema refused already
        ("workers: {build_workers: 0}\n", ":1: workers.build_workers: must be an integer >= 1"),
        ("create: {forward_ports: 0-99999999}\n", ":1: create.forward_ports: must look like"),
        ("auth: {enabled: true}\n", ":1: auth.users: auth is enabled but no user is configured"),
        ("auth: {users: {bob: x}}\n", ":1: auth.users.bob: not a password hash (make one"),
        # past what Python reads as an integer (a ValueError)
        ("workers: {build_workers: 1" + "0" * 5000 + "}\n", ":1: a number of 5001 digits"),
        # nested past any parser's patience (a RecursionError)
        ("a: " + "[" * 50_000 + "\n", ":1: nested deeper than 32 levels"),
        ("a:\n" + "".join(" " * i + "a:\n" for i in range(1, 50)), ":33: nested deeper than"),
        ("a: &a [*a]\n", ":1: an alias refers to a node that holds it"),
    ],
)
def test_settings_that_would_fail_after_start_are_refused(tmp_path, text, words):
    p = write(tmp_path, text)
    (line,) = problems(p)
    assert line.startswith(f"{p}{words}"), line
    assert len(line) < 300


def test_every_timeout_and_interval_keeps_its_default_and_takes_a_week(tmp_path):
    week = 7 * 24 * 3600
    p = write(
        tmp_path,
        f"libvirt: {{connect_timeout: {week}, call_timeout: 0.5, upload_timeout: {week}}}\n"
        f"guest: {{ready_timeout: {week}, command_timeout: 1}}\n"
        f"cluster: {{host_cache: 0, heartbeat: 1, dead_after: {week}}}\n"
        "auth: {lockout_seconds: 0}\nworkers: {retry_after: 0}\n",
    )
    cfg = load_config(p)
    assert cfg.libvirt.call_timeout == 0.5 and cfg.guest.ready_timeout == week
    assert cfg.cluster.host_cache == 0 and cfg.auth.lockout_seconds == 0


def test_a_directory_or_non_utf8_config_is_one_line(tmp_path):
    assert problems(tmp_path) == [f"{tmp_path}: is a directory, not a file"]
    p = tmp_path / "latin1.yaml"
    p.write_bytes(b"state_dir: /var/lib/f\xe9\n")
    assert problems(p) == [f"{p}: not UTF-8 text"]


# -- auth: secrets are never echoed ----------------------------------------------


def test_a_password_in_place_of_its_hash_is_never_echoed(tmp_path):
    p = write(
        tmp_path,
        "auth:\n  enabled: true\n  users:\n    alice: hunter2-secret\n    bob: 31415926\n",
    )
    assert problems(p) == [
        f"{p}:4: auth.users.alice: not a password hash (make one with `./script hash-password`)",
        f"{p}:5: auth.users.bob: not a password hash (make one with `./script hash-password`) "
        "nor a mapping {password: HASH, role: ROLE, quota: {...}}",
    ]
    p = write(tmp_path, "auth: {users: [hunter2-secret]}\n")
    assert problems(p) == [
        f"{p}:1: auth.users: must be a mapping of user name to a password hash or "
        "{password, role, quota}"
    ]


# -- scheduler -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cfg", "fragments"),
    [
        (
            {"policy": "fastest"},
            ["scheduler.policy", "'fastest'", "balanced, first-fit, pack, spread"],
        ),
        ({"policy": 3}, ["scheduler.policy", "balanced, first-fit, pack, spread"]),
        ({"host_subset_size": 0}, ["scheduler.host_subset_size", ">= 1", "got 0"]),
        ({"host_subset_size": "2"}, ["scheduler.host_subset_size", ">= 1", "got '2'"]),
        ({"host_subset_size": True}, ["scheduler.host_subset_size", ">= 1", "got True"]),
        ({"host_subset_size": 1.5}, ["scheduler.host_subset_size", ">= 1", "got 1.5"]),
        (
            {"policy": "spread", "weights": {"ram": 1}},
            [
                "scheduler.weights.ram",
                "unknown weigher",
                "balance, cpu_free, disk_free, ram_free, vms",
            ],
        ),
        (
            {"policy": "spread", "weights": {"ram_free": "high"}},
            ["scheduler.weights.ram_free", "number", "'high'"],
        ),
        (
            {"policy": "spread", "weights": {"ram_free": float("nan")}},
            ["scheduler.weights.ram_free", "finite number"],
        ),
        (
            {"policy": "spread", "weights": {"ram_free": math.inf}},
            ["scheduler.weights.ram_free", "finite number"],
        ),
        (
            {"policy": "spread", "weights": {"ram_free": True}},
            ["scheduler.weights.ram_free", "finite number", "True"],
        ),
        ({"policy": "spread", "weights": [1, 2]}, ["scheduler.weights", "mapping", "ram_free"]),
        (
            {"policy": "first-fit", "weights": {"ram_free": 1.0}},
            ["scheduler.weights", "first-fit", "balanced, pack, spread"],
        ),
        (
            {"polciy": "pack"},
            ["scheduler.polciy", "unknown setting", "policy, host_subset_size, weights"],
        ),
        (["pack"], ["scheduler", "must be a mapping"]),
    ],
)
def test_scheduler_errors(cfg, fragments):
    with pytest.raises(ConfigError) as exc:
        config_from_dict({"scheduler": cfg}, "fabric.yaml")
    assert exc.value.status == 400
    assert exc.value.message.startswith("fabric.yaml: scheduler")
    for fragment in fragments:
        assert fragment in str(exc.value)


def scheduler(section) -> Policy:  # noqa: ANN001
    return config_from_dict({"scheduler": section}).scheduler


def test_scheduler_builds_the_policy():
    assert scheduler(None) == scheduler({}) == Policy.named("spread")
    p = scheduler({"policy": "spread", "weights": {"ram_free": -3.0}})
    assert p == Policy.named("spread", weights={"ram_free": -3.0})
    assert dict(p.weights) == {"ram_free": -3.0, "cpu_free": 1.0, "disk_free": 0.5}
    assert "disk_free" not in dict(
        scheduler({"policy": "pack", "weights": {"disk_free": 0}}).weights
    )
    p = Policy.named("balanced", host_subset_size=3, weights={"vms": 0.5})
    assert scheduler(p.to_config()) == p
    assert scheduler({"policy": "First_Fit"}).name == "first-fit"
    assert scheduler({"policy": " Spread "}).name == "spread"


def test_first_fit_accepts_empty_or_zero_weights():
    assert scheduler({"policy": "first-fit", "weights": {}}).weights == ()
    assert scheduler({"policy": "first-fit", "weights": None}).weights == ()
    assert scheduler({"policy": "first-fit", "weights": {"ram_free": 0}}).weights == ()


# -- pools: their shape ----------------------------------------------------------

POOL = {"name": "web", "instance_type": 1, "image": "debian"}


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"size": -1}, ["pools[0].size: must be an integer >= 0, got -1"]),
        ({"size": "2"}, ["pools[0].size: must be an integer >= 0, got '2'"]),
        ({"size": 3, "max": 2}, ["pools[0].max: must be an integer >= size (3), got 2"]),
        ({"max": -1}, ["pools[0].max: must be an integer >= 0, got -1"]),
        (
            {"lifetime": 0},
            ["pools[0].lifetime: must be a positive number of hours (at most 87840), got 0"],
        ),
        ({"lifetime_max": True}, ["pools[0].lifetime_max: must be a positive number of hours"]),
        ({"lifetime": 30}, ["pools[0].lifetime: 30 h exceeds lifetime_max (24 h)"]),
        (
            {"lifetime": 3, "lifetime_max": 2.5},
            ["pools[0].lifetime: 3 h exceeds lifetime_max (2.5 h)"],
        ),
        ({"lifetime_max": 1}, ["pools[0].lifetime_max: 1 h is less than lifetime (default 2 h)"]),
        ({"cleanup": "wipe"}, ["pools[0].cleanup: must be tmp or reset, got 'wipe'"]),
        ({"ready_check": "ping"}, ["pools[0].ready_check: must be ssh or none, got 'ping'"]),
        ({"name": "a b"}, [f"pools[0].name: must be {NAME_RULE}, got 'a b'"]),
        ({"name": 7}, [f"pools[0].name: must be {NAME_RULE}, got 7"]),
        ({"name": "x" * 65}, [f"pools[0].name: must be {NAME_RULE}"]),
        ({"instance_type": "1"}, ["pools[0].instance_type: must be an integer tid from the VM"]),
        ({"instance_type": 0}, ["pools[0].instance_type: must be an integer tid from the VM"]),
        ({"image": 1.5}, ["pools[0].image: must be an image name or id from the images file"]),
        ({"image": ""}, ["pools[0].image: must be an image name or id from the images file"]),
        ({"image": True}, ["pools[0].image: must be an image name or id from the images file"]),
        (
            {"colour": "red"},
            [
                "pools[0].colour: unknown setting (valid: name, instance_type, image, size, max, "
                "lifetime, lifetime_max, cleanup, ready_check, users)"
            ],
        ),
    ],
)
def test_pool_errors(changes, expected):
    with pytest.raises(ConfigError) as exc:
        config_from_dict({"pools": [{**POOL, **changes}]}, "fabric.yaml")
    lines = exc.value.message.splitlines()
    assert len(lines) == len(expected), lines
    for line, e in zip(lines, expected, strict=True):
        assert line.startswith(f"fabric.yaml: {e}"), line


def test_pool_required_keys_and_unique_names():
    with pytest.raises(ConfigError) as exc:
        config_from_dict({"pools": [{}, POOL, POOL, "web"]}, "fabric.yaml")
    assert exc.value.message.splitlines() == [
        "fabric.yaml: pools[0].name: missing (must be " + NAME_RULE + ")",
        "fabric.yaml: pools[0].instance_type: missing (must be an integer tid from the VM types "
        "file)",
        "fabric.yaml: pools[0].image: missing (must be an image name or id from the images file)",
        "fabric.yaml: pools[3]: must be a mapping, got 'web'",
        "fabric.yaml: pools[2].name: 'web' is defined twice (first: pools[1])",
    ]


def test_pool_defaults():
    (p,) = config_from_dict({"pools": [{**POOL, "size": 3, "image": 2}]}).pools
    assert (p.size, p.max, p.most, p.image) == (3, None, 3, 2)


# -- pools: their references -----------------------------------------------------

INVENTORY = Inventory(
    hosts=(),
    images=(ImageSpec("debian", "/i/debian.qcow2"), ImageSpec("alpine", "/i/alpine.qcow2")),
    types=(VmType(1, 1, 512, 1), VmType(2, 2, 1024, 2)),
)


def test_check_pools_against_the_files(tmp_path):
    p = write(
        tmp_path,
        "pools:\n"
        "  - {name: a, instance_type: 1, image: debian}\n"
        "  - {name: b, instance_type: 2, image: 7}\n"  # an id: checked after the sync
        "  - name: c\n"
        "    instance_type: 9\n"
        "    image: ubuntu\n",
    )
    cfg = load_config(p)
    with pytest.raises(ConfigError) as exc:
        check_pools(cfg, INVENTORY)
    assert exc.value.message.splitlines() == [
        f"{p}:5: pools[2].instance_type: 9 is not a tid of the VM types file (tids: 1, 2)",
        f"{p}:6: pools[2].image: 'ubuntu' is not in the images file (names: debian, alpine)",
    ]
    check_pools(config_from_dict({"pools": [POOL]}), INVENTORY)  # fine
    check_pools(Config(), INVENTORY)


def test_resolve_pools_gives_registry_ids(rig, tmp_path):
    images = {i.name: i.id for i in rig.registry.inventory.images()}
    p = write(
        tmp_path,
        "pools:\n"
        "  - {name: a, instance_type: 1, image: alpine, size: 2, max: 3, cleanup: reset}\n"
        f"  - {{name: b, instance_type: 3, image: {images['debian-12']}, lifetime: 1}}\n",
    )
    a, b = resolve_pools(load_config(p), rig.registry.inventory)
    assert a == PoolConfig("a", 1, images["alpine"], 2, 3, 2.0, 24.0, "reset", "ssh")
    assert b == PoolConfig("b", 3, images["debian-12"], 1, 1, 1.0, 24.0, "tmp", "ssh")
    p.write_text(
        "pools:\n"
        "  - {name: a, instance_type: 1, image: alpine}\n"
        "  - name: b\n"
        "    instance_type: 4\n"
        "    image: 99\n"
        "  - {name: c, instance_type: 1, image: gone}\n"
    )
    with pytest.raises(ConfigError) as exc:
        resolve_pools(load_config(p), rig.registry.inventory)
    ids = ", ".join(str(i) for i in sorted(images.values()))
    assert exc.value.message.splitlines() == [
        f"{p}:4: pools[1].instance_type: 4 is not a tid of the VM types file (tids: 1, 2, 3)",
        f"{p}:5: pools[1].image: 99 is not the id of an image of the images file (ids: {ids})",
        f"{p}:6: pools[2].image: 'gone' is not in the images file (names: debian-12, alpine)",
    ]


# -- the commands ----------------------------------------------------------------


def test_validate_reports_every_problem_of_the_config_and_its_pools(rig, tmp_path, capsys):
    files = [str(rig.pm_file), str(rig.image_file), str(rig.types_file)]
    good = write(tmp_path, "pools: [{name: a, instance_type: 1, image: alpine}]\n")
    assert cli.main(["validate", *files, "--config", str(good)]) == 0
    assert "all files are valid" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "pools:\n"
        "  - {name: a, instance_type: 7, image: alpine}\n"
        "  - {name: b, instance_type: 1, image: ubuntu}\n"
    )
    assert cli.main(["validate", *files, "--config", str(bad)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"{bad}:2: pools[0].instance_type: 7 is not a tid of the VM types file (tids: 1, 2, 3)",
        f"{bad}:3: pools[1].image: 'ubuntu' is not in the images file (names: debian-12, alpine)",
    ]
    bad.write_text("capacity: {cpu_ratio: 2}\nlimits: {max_vms: -1}\n")
    rig.types_file.write_text('{"types": [{"cpu": "two", "ram": 1, "disk": 1}]}')
    assert cli.main(["validate", *files, "--config", str(bad)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"{rig.types_file}:1: ")
    assert err[1].startswith(f"{bad}:1: capacity.cpu_ratio: unknown setting (valid: ")
    assert err[2] == f"{bad}:2: limits.max_vms: must be an integer >= 0, got -1"
    assert len(err) == 3


def test_serve_refuses_a_bad_config_before_anything_starts(rig, tmp_path, capsys):
    files = [str(rig.pm_file), str(rig.image_file), str(rig.types_file)]
    state = tmp_path / "never"
    bad = write(tmp_path, f"state_dir: {state}\nworkers: {{interval: 0}}\nsize: 1\n")
    assert cli.main([*files, "--config", str(bad), "--port", "1"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: {bad}:2: workers.interval: must be a number > 0 and <= 604800, got 0",
        f"error: {bad}:3: size: unknown section (valid: scheduler, capacity, ssh, libvirt, "
        "create, guest, discovery, reconcile, evacuate, workers, cluster, limits, hostnames, "
        "ondemand, state_dir, "
        "pools, storage, auth, schedules, networks, server)",
    ]
    bad.write_text(f"state_dir: {state}\npools: [{{name: a, instance_type: 1, image: nope}}]\n")
    assert cli.main([*files, "--config", str(bad), "--port", "1"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: {bad}:2: pools[0].image: 'nope' is not in the images file "
        "(names: debian-12, alpine)"
    ]
    assert not state.exists()  # refused before the state dir or the registry was made
