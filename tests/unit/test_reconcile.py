"""Reconciliation removes the domains of this installation that the registry does not
know, once passes ``reconcile.grace`` seconds apart have seen them so; it never
touches another installation's domains, or domains without our metadata."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from orchestrator.hosts import host_target
from orchestrator.hypervisor.xml import metadata_element
from tests.conftest import make_rig


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def lv(rig, pmid: int = 1):  # noqa: ANN201
    host = rig.registry.hosts.get(pmid)
    return rig.driver.connection(host_target(host)).call(lambda c: c)


def define(conn, name: str, meta: ET.Element | None, run: bool = False) -> None:  # noqa: ANN001
    metadata = f"<metadata>{ET.tostring(meta, encoding='unicode')}</metadata>" if meta else ""
    dom = conn.defineXML(
        f"<domain type='test'><name>{name}</name><memory>1024</memory>{metadata}"
        "<os><type>hvm</type></os></domain>"
    )
    if run:
        dom.create()


def domains(conn) -> set[str]:  # noqa: ANN001
    return {d.name() for d in conn.listAllDomains(0)}


def volumes(conn) -> set[str]:  # noqa: ANN001
    pool = conn.storagePoolLookupByName("fabric")
    pool.refresh(0)
    return set(pool.listVolumes())


def test_an_unknown_domain_of_this_installation_is_removed_after_the_grace(tmp_path):
    rig = make_rig(tmp_path, [{"cpus": 4, "ram": 4096}])  # reconcile.grace: 300 by default
    try:
        clock = Clock()
        reconciler = rig.services.reconciler
        reconciler.clock = clock
        keep = rig.fabric.create_vm("keep", 1, 1)  # a VM the registry knows
        conn = lv(rig)
        mine = rig.registry.installation_id
        # What a create's late call could leave: our metadata, a VM id nobody knows.
        define(conn, "stray", metadata_element(4242, "stray", mine), run=True)
        pool = conn.storagePoolLookupByName("fabric")
        disk = f"fabric-{mine}-vm-4242.qcow2"  # this installation's name for vm 4242's disk
        pool.createXML(f"<volume><name>{disk}</name><capacity>1024</capacity></volume>", 0)
        define(conn, "theirs", metadata_element(4243, "theirs", "0ther0ne"), run=True)
        define(conn, "unmarked", metadata_element(4244, "unmarked"))  # no installation id
        define(conn, "plain", None, run=True)  # no fabric metadata at all
        others = {"theirs", "unmarked", "plain", keep.domain_name}

        first = reconciler.reconcile()
        assert sorted(d["domain"] for d in first.unknown_domains) == ["stray", "unmarked"]
        clock.now += 299
        reconciler.reconcile()
        assert "stray" in domains(conn)  # not yet: seen unknown for 299 s only

        clock.now += 1
        report = reconciler.reconcile()
        assert "stray" not in domains(conn)
        assert disk not in volumes(conn)
        assert domains(conn) == others  # nothing else was touched
        assert sorted(d["domain"] for d in report.unknown_domains) == ["stray", "unmarked"]
        assert [(d["domain"], d["vmid"]) for d in report.removed_unknown] == [("stray", 4242)]
        events = rig.registry.events.list(kind="reconcile.removed_unknown")
        assert [(e.host_id, e.detail["domain"]) for e in events] == [(1, "stray")]

        clock.now += 1000
        later = reconciler.reconcile()
        assert [d["domain"] for d in later.unknown_domains] == ["unmarked"]
        assert later.removed_unknown == []
        assert domains(conn) == others
        assert rig.registry.vms.get(keep.id).state == "active"
    finally:
        rig.stop()


def test_an_unknown_domain_needs_two_passes_and_may_be_only_reported(tmp_path):
    rig = make_rig(
        tmp_path,
        [{"cpus": 4, "ram": 4096}],
        config={"reconcile": {"grace": 0}},
    )
    try:
        conn = lv(rig)
        mine = rig.registry.installation_id
        reconciler = rig.services.reconciler
        # start-up's pass ran before it existed; the first pass to see it only reports it
        define(conn, "stray", metadata_element(4242, "stray", mine))
        assert reconciler.reconcile().removed_unknown == []
        assert "stray" in domains(conn)
        assert [d["domain"] for d in reconciler.reconcile().removed_unknown] == ["stray"]
        assert "stray" not in domains(conn)

        # remove_unknown: false: reported every pass, never removed
        rig.restart(
            {
                "state_dir": str(tmp_path / "state"),
                "reconcile": {"grace": 0, "remove_unknown": False},
            }
        )
        define(conn, "stray2", metadata_element(4245, "stray2", mine))
        for _ in range(3):
            report = rig.services.reconciler.reconcile()
            assert [d["domain"] for d in report.unknown_domains] == ["stray2"]
            assert report.removed_unknown == []
        assert "stray2" in domains(conn)
    finally:
        rig.stop()
