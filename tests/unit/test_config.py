"""The YAML configuration: defaults, validation with the file and key named."""

from __future__ import annotations

import pytest

from orchestrator.config import CapacityConfig, effective_capacity, load_config
from orchestrator.errors import ConfigError


def test_defaults_without_a_file():
    cfg = load_config(None)
    assert cfg.scheduler.name == "spread"
    assert cfg.capacity.cpu_allocation_ratio == 4.0


def test_full_file(tmp_path):
    p = tmp_path / "fabric.yaml"
    p.write_text(
        "scheduler: {policy: pack, host_subset_size: 2}\n"
        "capacity: {cpu_allocation_ratio: 2, reserved_host_ram: 256}\n"
        "ssh: {key: /k, known_hosts: /kh, connect_timeout: 3}\n"
        "create: {max_attempts: 2, forward_ports: 23000-23010}\n"
        "pools: [{name: x}]\n"
    )
    cfg = load_config(p)
    assert cfg.scheduler.name == "pack" and cfg.scheduler.host_subset_size == 2
    assert cfg.capacity.cpu_allocation_ratio == 2.0
    assert cfg.ssh.key == "/k" and cfg.create.port_range == range(23000, 23011)
    assert cfg.raw["pools"] == [{"name": "x"}]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("scheduler: {policy: random}\n", "unknown policy 'random'"),
        ("capacity: {cpu_ratio: 2}\n", "capacity.cpu_ratio: unknown setting"),
        ("capacity: {cpu_allocation_ratio: lots}\n", "expected float"),
        ("capacity: {reserved_host_ram: -5}\n", "must not be negative"),
        ("ssh: [1, 2]\n", "ssh: must be a mapping"),
        ("bogus: 1\n", "unknown section 'bogus'"),
        ("create: {forward_ports: lots}\n", "forward_ports"),
        ("scheduler: {policy: pack\n", ":2: not valid YAML"),
        ("state_dir: relative\n", "absolute"),
    ],
)
def test_errors_name_the_file_and_key(tmp_path, text, words):
    p = tmp_path / "fabric.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    assert str(p) in exc.value.message
    assert words in exc.value.message


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
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
