"""The web dashboard through Flask's test client: pages, forms, CSRF, auth, schedules."""

from __future__ import annotations

import html
import re
from dataclasses import replace

import pytest

from orchestrator.access import ANONYMOUS, Principal, Role
from orchestrator.api import create_app
from orchestrator.auth import AuthService, hash_password
from orchestrator.config import AuthSettings
from orchestrator.errors import Forbidden, NotFound, Unauthorized
from orchestrator.model import VmState
from tests.conftest import THREE_HOSTS, make_pool_rig, make_rig, wait_for
from tests.lan import BRIDGE, FORWARD_HOST, LAN, LAN_HOST, make_lan_pool_rig

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
FLASH = re.compile(r'<div class="flash flash-(ok|error)"[^>]*>([^<]*)</div>')
SECRET = re.compile(r'id="reservation-secret"[^>]*value="([^"]+)"')


class Page:
    """A test client that keeps its session and reads the page like a user would."""

    def __init__(self, app) -> None:
        app.testing = True
        self.app = app
        self.c = app.test_client()
        self.html = ""

    def get(self, path: str = "/", status: int = 200):
        r = self.c.get(path)
        assert r.status_code == status, r.get_data(as_text=True)[:2000]
        self.html = r.get_data(as_text=True)
        return r

    @property
    def token(self) -> str:
        if not CSRF.search(self.html):
            self.get()
        return CSRF.search(self.html).group(1)

    def post(self, path: str, follow: bool = True, **data):
        """Post a form with the page's CSRF token; follow the redirect back to ``/``."""
        data.setdefault("csrf_token", self.token)
        r = self.c.post(path, data={k: str(v) for k, v in data.items()})
        assert r.status_code != 500, r.get_data(as_text=True)
        if follow and r.status_code == 302:
            assert r.headers["Location"].startswith("/")
            self.get(r.headers["Location"].split("#")[0])
        return r

    def flashes(self) -> list[tuple[str, str]]:
        return [(k, html.unescape(m).strip()) for k, m in FLASH.findall(self.html)]

    def ok(self) -> str:
        got = self.flashes()
        assert got and got[0][0] == "ok", got
        return got[0][1]

    def error(self) -> str:
        got = self.flashes()
        assert got and got[0][0] == "error", got
        return got[0][1]

    def vm_rows(self) -> dict[int, str]:
        return {
            int(i): html.unescape(n)
            for i, n in re.findall(r'<tr data-vmid="(\d+)" data-name="([^"]*)"', self.html)
        }


@pytest.fixture
def page(rig) -> Page:
    return Page(create_app(rig.services))


# -- pages -------------------------------------------------------------------


def test_overview_renders_hosts_and_sections(page, rig):
    r = page.get()
    assert r.headers["Content-Type"].startswith("text/html")
    assert r.headers["Cache-Control"] == "no-store"
    assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
    for h in rig.registry.hosts.list():
        assert html.escape(h.label) in page.html
    assert page.html.count('class="host host-up"') == 3
    assert "free of" in page.html and "vCPU" in page.html
    for section in ("hosts", "vms", "pools", "reservations", "volumes", "schedules", "charts"):
        assert f'id="{section}"' in page.html
    assert "No VMs yet." in page.html
    assert "No pools are configured" in page.html
    assert "No schedules." in page.html
    assert "No VM created yet" in page.html  # the empty chart says so
    assert "authentication off" in page.html
    # type and image selects come from the registry
    assert "small (1 vCPU, 512 MB, 1 GB)" in page.html and "debian-12" in page.html


def test_overview_shows_the_fabric_servers_and_what_each_runs(page, rig):
    from orchestrator.cluster import Cluster
    from orchestrator.config import ClusterConfig

    page.get()
    assert "has not joined a cluster" in page.html
    c = Cluster(rig.registry.cluster, ClusterConfig(heartbeat=0.5, dead_after=5))
    c.join()
    page.get()
    row = re.search(
        f'<tr data-server="{rig.registry.cluster.server_id}">(.*?)</tr>', page.html, re.S
    )
    assert row is not None
    assert "(this one)" in row.group(1) and "alive" in row.group(1)
    assert "discovery, pool-worker, schedules" in row.group(1)
    c.stop()


def test_static_files_are_served_and_nothing_is_fetched_from_elsewhere(page):
    page.get()
    for asset in ("dashboard.css", "dashboard.js"):
        assert f"/ui/static/{asset}" in page.html
        r = page.c.get(f"/ui/static/{asset}")
        assert r.status_code == 200 and len(r.data) > 100
        r.close()
    assert not re.search(r'(src|href)="(https?:)?//', page.html)


def test_a_secret_key_is_made_once_when_none_is_configured(rig):
    # made by the first app and kept in the registry: the next app (another server,
    # or this one restarted) signs sessions with the same (tests/unit/test_session.py)
    a, b = create_app(rig.services), create_app(rig.services)
    assert a.secret_key and len(a.secret_key) == 64 and a.secret_key == b.secret_key
    assert a.config["SESSION_COOKIE_SAMESITE"] == "Lax"


def test_a_down_host_shows_its_reason(page, rig):
    h = rig.registry.hosts.list()[0]
    rig.registry.hosts.record_discovery(h.id, up=False, reason="connection refused <by firewall>")
    page.get()
    assert 'class="host host-down"' in page.html
    assert "down: connection refused &lt;by firewall&gt;" in page.html


# -- VMs ---------------------------------------------------------------------


def test_create_and_destroy_a_vm_with_the_forms(page, rig):
    r = page.post("/ui/vm/create", name="web1", instance_type=1, image_id=1, back="vms")
    assert r.status_code == 302 and r.headers["Location"].endswith("/#vms")
    assert page.ok().startswith("Created VM web1 (vmid 1) on ")
    assert page.vm_rows() == {1: "web1"}
    assert rig.registry.vms.get(1).state == VmState.ACTIVE
    assert '<rect class="dbar"' in page.html  # its create duration is charted
    page.get()
    assert page.flashes() == []  # a message is shown once

    page.post("/ui/vm/destroy", vmid=1)
    assert page.ok() == "Destroyed VM web1 (vmid 1)."
    assert page.vm_rows() == {}
    assert rig.registry.vms.list() == []


def row_cells(html_text: str, table: str, vmid: int) -> list[str]:
    """The text of each cell of a VM's row in one of the page's tables."""
    body = html_text.split(f'id="{table}"')[1].split("</table>")[0]
    row = re.search(rf'<tr data-vmid="{vmid}"[^>]*>(.*?)</tr>', body, re.S)
    assert row is not None, (table, vmid)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(1), re.S)
    return [html.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in cells]


def test_vm_rows_show_the_hostname_with_its_fqdn_and_the_tags(tmp_path):
    rig = make_rig(tmp_path, THREE_HOSTS, config={"hostnames": {"domain": "vm.example.test"}})
    try:
        vm = rig.fabric.create_vm("web", 1, 1)
        rig.registry.vms.set_tags(vm.id, {"team": "infra", "note": "<b>x</b>", "a": "1"})
        page = Page(create_app(rig.services))
        page.get()
        header = page.html.split('id="vm-table"')[1].split("</thead>")[0]
        assert "<th>Owner</th><th>Hostname</th><th>Tags</th><th></th>" in header
        cells = row_cells(page.html, "vm-table", vm.id)
        assert vm.hostname and cells[11] == vm.hostname
        assert f'title="{vm.hostname}.vm.example.test">{vm.hostname}</td>' in page.html
        assert cells[12] == "a=1 note=<b>x</b> team=infra"  # sorted by key, as text
        assert "note=&lt;b&gt;x&lt;/b&gt;" in page.html  # escaped, never markup
        assert "<b>x</b>" not in page.html
    finally:
        rig.stop()


def test_vms_show_their_address_with_its_source_mac_and_network(tmp_path):
    rig = make_rig(tmp_path, [LAN_HOST, FORWARD_HOST], config={"networks": LAN})
    try:
        page = Page(create_app(rig.services))
        page.post("/ui/vm/create", name="onlan", instance_type=1, image_id=1)
        lan_vm = rig.registry.vms.get(1)
        assert lan_vm.network == BRIDGE
        header = page.html.split('id="vm-table"')[1].split("</thead>")[0]
        assert "<th>Address</th><th>MAC</th><th>Network</th>" in header
        cells = row_cells(page.html, "vm-table", 1)
        assert cells[6:9] == ["-", lan_vm.mac, BRIDGE]  # building: its address not seen yet

        rig.registry.vms.record_address(1, "10.251.1.23", "lease")
        rig.registry.hosts.set_enabled(1, False)  # the next one on the forwarding host
        page.post("/ui/vm/create", name="fwd", instance_type=1, image_id=1)
        fwd = rig.registry.vms.get(2)
        page.get()
        assert row_cells(page.html, "vm-table", 1)[6:9] == [
            "10.251.1.23 (lease)",
            lan_vm.mac,
            BRIDGE,
        ]
        assert 'title="ssh root@10.251.1.23"' in page.html
        assert row_cells(page.html, "vm-table", 2)[6:9] == [
            f"127.0.0.5 (forward) port {fwd.ssh_port}",
            fwd.mac,
            "forward",
        ]
        # the host cards say what network each gives its VMs
        cards = re.findall(
            r'<article class="host[^"]*" data-pmid="(\d+)">(.*?)</article>', page.html, re.S
        )
        shown = {int(pmid): card for pmid, card in cards}
        assert "network bridge:br0" in shown[1] and "network forward" in shown[2]
    finally:
        rig.stop()


def test_vm_names_are_escaped(page):
    page.post("/ui/vm/create", name="a<b", instance_type=1, image_id=1)
    assert "letters, digits" in page.error()
    assert "a<b" not in page.html


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"name": "", "instance_type": 1, "image_id": 1}, "name is required"),
        ({"name": "x", "instance_type": "abc", "image_id": 1}, "VM type must be a positive"),
        ({"name": "x", "instance_type": 1, "image_id": ""}, "image is required"),
        ({"name": "x", "instance_type": 9, "image_id": 1}, "instance_type 9"),
        ({"name": "x", "instance_type": 1, "image_id": 99}, "image_id 99"),
        ({"name": "-x", "instance_type": 1, "image_id": 1}, "starting with a letter or digit"),
    ],
)
def test_bad_create_input_is_a_readable_message(page, rig, form, message):
    page.post("/ui/vm/create", **form)
    assert message in page.error()
    assert "Traceback" not in page.html
    assert rig.registry.vms.list() == []


def test_no_capacity_is_a_readable_message(page):
    for i in range(20):
        page.post("/ui/vm/create", name=f"big{i}", instance_type=3, image_id=1)
        if page.flashes()[0][0] == "error":
            break
    assert "no host can fit instance_type 3" in page.error()


def test_destroy_errors_are_messages(page, rig):
    page.post("/ui/vm/destroy", vmid=42)
    assert "vmid 42" in page.error()
    page.post("/ui/vm/destroy", vmid="x")
    assert "vmid must be a positive integer" in page.error()


def test_an_unexpected_error_is_reported_without_a_traceback(page, rig, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(rig.fabric, "create_vm", boom)
    page.post("/ui/vm/create", name="x", instance_type=1, image_id=1)
    assert page.error() == "Internal error; the operator's log has details."
    assert "secret internals" not in page.html


def test_a_broken_section_does_not_take_the_page_down(page, rig, monkeypatch):
    monkeypatch.setattr(rig.registry, "volumes", lambda **k: 1 / 0)
    page.get()
    assert "Could not read volumes: internal error" in page.html
    assert 'id="hosts"' in page.html


# -- CSRF --------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "", "forged-token-forged-token-forged-token-xx"])
def test_forms_without_the_csrf_token_are_refused(page, rig, token):
    page.get()
    data = {"name": "evil", "instance_type": "1", "image_id": "1"}
    if token is not None:
        data["csrf_token"] = token
    r = page.c.post("/ui/vm/create", data=data)
    assert r.status_code == 400
    assert "CSRF" in r.get_data(as_text=True)
    assert rig.registry.vms.list() == []


def test_a_token_from_another_session_is_refused(rig):
    a, b = Page(create_app(rig.services)), Page(create_app(rig.services))
    a.get()
    b.get()
    r = b.c.post(
        "/ui/vm/create",
        data={"csrf_token": a.token, "name": "x", "instance_type": "1", "image_id": "1"},
    )
    assert r.status_code == 400
    assert rig.registry.vms.list() == []


# -- volumes -----------------------------------------------------------------


def test_volume_forms(page, rig):
    page.post("/ui/vm/create", name="app", instance_type=1, image_id=1)
    page.post("/ui/volume/create", name="data", size=1, back="volumes")
    assert page.ok() == "Created volume data (volumeid 1, 1 GB)."
    assert '<tr data-volumeid="1">' in page.html

    page.post("/ui/volume/attach", volumeid=1, vmid=1)
    assert page.ok() == "Attached volumeid 1 to vmid 1 as /dev/vdb."
    assert "/dev/vdb" in page.html
    page.post("/ui/volume/destroy", volumeid=1)
    assert "detach it first" in page.error()

    page.post("/ui/volume/detach", volumeid=1)
    assert page.ok() == "Detached volumeid 1; its data is kept."
    page.post("/ui/volume/destroy", volumeid=1)
    assert page.ok() == "Destroyed volumeid 1."
    assert rig.registry.volumes.list() == []


@pytest.mark.parametrize(
    ("path", "form", "message"),
    [
        ("/ui/volume/create", {"name": "", "size": 1}, "needs a name"),
        ("/ui/volume/create", {"name": "d", "size": 0}, "size (GB) must be a positive integer"),
        ("/ui/volume/create", {"name": "d", "size": 99999}, "too large"),
        ("/ui/volume/create", {"name": "d/x", "size": 1}, "letters, digits"),
        ("/ui/volume/attach", {"volumeid": 5, "vmid": ""}, "VM is required"),
        ("/ui/volume/attach", {"volumeid": 5, "vmid": 1}, "vmid 1"),
        ("/ui/volume/detach", {"volumeid": 5}, "5 does not exist"),
    ],
)
def test_bad_volume_input_is_a_message(page, path, form, message):
    page.post(path, **form)
    assert message in page.error()


# -- pools and reservations ----------------------------------------------------

POOL_HOSTS = [
    {"cpus": 4, "ram": 4096, "target": "root@127.0.0.5", "extra": {"network": "forward"}},
    {"cpus": 4, "ram": 4096, "target": "root@127.0.0.6", "extra": {"network": "forward"}},
]


@pytest.fixture
def pool_page(tmp_path):
    pr = make_pool_rig(
        tmp_path,
        POOL_HOSTS,
        [
            {
                "name": "small",
                "instance_type": 1,
                "image": "debian-12",
                "ready_check": "none",
                "size": 2,
                "max": 3,
                "cleanup": "reset",
                "lifetime": 1,
                "lifetime_max": 3,
            }
        ],
    )
    wait_for(lambda: pr.pools.status()["small"]["ready"] == 2)
    p = Page(create_app(pr.rig.services))
    p.pr = pr
    yield p
    pr.stop()


def test_pools_show_their_levels(pool_page):
    pool_page.get()
    assert '<tr data-pool="small">' in pool_page.html
    assert 'class="seg seg-ready"' in pool_page.html
    assert "small (2 ready)" in pool_page.html  # the check-out select
    assert "No VM is checked out." in pool_page.html
    assert "No check-outs yet" in pool_page.html


def test_checkout_shows_the_reservation_id_once_and_checkin_takes_it(pool_page):
    p, pr = pool_page, pool_page.pr
    p.post("/ui/vm/checkout", pool="small", back="reservations")
    msg = p.ok()
    assert msg.startswith("Checked out vmid ") and "from pool small until " in msg
    assert "ssh -p 22" in msg
    token = SECRET.search(p.html).group(1)
    assert len(token) == 43
    vmid = int(re.search(r"vmid (\d+)", msg).group(1))
    assert pr.rig.registry.vms.get(vmid).state == VmState.IN_USE
    assert f'<tr data-vmid="{vmid}">' in p.html.split('id="reservation-table"')[1]
    # the secret is not in the page again, nor in the session cookie
    p.get()
    assert token not in p.html
    assert token not in p.c.get_cookie("session").value
    assert '<polyline class="series s-inuse"' in p.html  # charted

    p.post("/ui/vm/checkin", vmid=vmid, reservation_id="A" * 43)
    assert "does not hold" in p.error()
    p.post("/ui/vm/checkin", vmid=vmid, reservation_id="short")
    assert "malformed" in p.error()
    p.post("/ui/vm/checkin", vmid=vmid, reservation_id="")
    assert "reservation id is required" in p.error()
    p.post("/ui/vm/checkin", vmid=vmid, reservation_id=token)
    assert p.ok().startswith(f"Checked in vmid {vmid}")
    assert pr.rig.registry.vms.get(vmid).state in (VmState.CLEANING, VmState.READY)


def test_requests_are_listed_with_their_progress_and_cancelled_from_the_page(pool_page):
    p, pr = pool_page, pool_page.pr
    p.get()
    assert "No requests." in p.html
    row = pr.rig.services.ondemand.create({"small": 3}, request_id="big-one", by=ANONYMOUS)
    wait_for(lambda: pr.rig.services.ondemand.progress(row)["small"]["ready"] == 3)
    mid = pr.rig.services.ondemand.create({"small": 1}, request_id="next-one", by=ANONYMOUS)
    p.get()
    table = p.html.split('id="request-table"')[1].split("</table>")[0]
    assert '<tr data-request="big-one">' in table and '<tr data-request="next-one">' in table
    assert "small: 3/3" in table and "small: 0/1" in table  # the pool is at its max (3)
    assert '<span class="pill st-ready">ready</span>' in table
    assert '<span class="pill st-pending">pending</span>' in table
    p.post("/ui/request/cancel", id="next-one", back="requests")
    assert p.ok() == "Request next-one is cancelled."
    assert pr.rig.registry.requests.get(mid.request_id).state == "cancelled"
    p.post("/ui/request/cancel", id="nope", back="requests")
    assert p.error() == "no request 'nope'"


def test_a_failed_vm_shows_why_in_its_row(tmp_path):
    rig = make_rig(tmp_path, [LAN_HOST], config={"networks": LAN})
    try:
        page = Page(create_app(rig.services))
        page.post("/ui/vm/create", name="silent", instance_type=1, image_id=1)
        reason = "no address seen for MAC 52:54:00:00:00:01 on bridge:br0 within 120 s"
        rig.registry.vms.transition(1, VmState.FAILED, expect=[VmState.BUILDING], error=reason)
        page.get()
        row = page.html.split('data-vmid="1"')[1].split("</tr>")[0]
        assert f'<div class="muted vm-error">{reason}</div>' in row
    finally:
        rig.stop()


def test_a_lan_vm_checked_out_shows_the_address_to_ssh_to(tmp_path):
    pr = make_lan_pool_rig(tmp_path)
    try:
        p = Page(create_app(pr.rig.services))
        p.post("/ui/vm/checkout", pool="lan", back="reservations")
        msg = p.ok()
        vmid = int(re.search(r"vmid (\d+)", msg).group(1))
        ip = pr.rig.registry.vms.get(vmid).ip
        assert ip and ip.startswith("10.251.1.")
        assert f"; ssh root@{ip}." in msg  # port 22: no -p
        cells = row_cells(p.html, "reservation-table", vmid)
        assert cells[4] == f"ssh root@{ip}"
    finally:
        pr.stop()


def test_destroying_a_checked_out_vm_needs_force(pool_page):
    p = pool_page
    p.post("/ui/vm/checkout", pool="small")
    vmid = int(re.search(r"vmid (\d+)", p.ok()).group(1))
    p.post("/ui/vm/destroy", vmid=vmid)
    assert "is checked out" in p.error()
    assert "Destroy (force)" in p.html
    p.post("/ui/vm/destroy", vmid=vmid, force=1)
    assert p.ok().startswith("Destroyed VM")


def test_checkout_errors_are_messages(pool_page, page):
    pool_page.post("/ui/vm/checkout", pool="nope")
    assert "nope" in pool_page.error()
    pool_page.post("/ui/vm/checkout", pool="")
    assert pool_page.error() == "choose a pool"
    for _ in range(10):  # max 3: the refill cannot keep up for ever
        pool_page.post("/ui/vm/checkout", pool="small")
        if pool_page.flashes()[0][0] == "error":
            break
    assert "No VM is available right now" in pool_page.error()
    # without pools the forms answer with a message
    page.post("/ui/vm/checkout", pool="small")
    assert "no pools are configured" in page.error()
    page.post("/ui/vm/checkin", vmid=1, reservation_id="A" * 43)
    assert "no pools are configured" in page.error()


# -- auth ----------------------------------------------------------------------


class FakeAuth:
    """The AuthService interface, with one user and tokens in memory."""

    enabled = True
    open_reads = True

    def __init__(self) -> None:
        self.tokens: dict[str, str] = {}
        self.revoked: list[str] = []

    def login(self, user, password, remote=None):
        if (user, password) != ("ops", "s3cret"):
            raise Unauthorized("wrong user or password")
        tok = f"tok-{len(self.tokens)}"
        self.tokens[tok] = user
        return tok

    def check(self, token):
        if token is None:
            raise Unauthorized("a token is required")
        if token not in self.tokens:
            raise Forbidden("that token is not valid")
        return self.tokens[token]

    def revoke(self, token):
        self.tokens.pop(token, None)
        self.revoked.append(token)

    def principal(self, user):
        return Principal(user, Role.ADMIN) if user else Principal(None, Role.READER, False)


@pytest.fixture
def auth_page(rig):
    p = Page(create_app(replace(rig.services, auth=FakeAuth())))
    p.auth = p.app.config["SERVICES"].auth
    return p


def test_with_auth_the_dashboard_asks_to_sign_in(auth_page, rig):
    p = auth_page
    r = p.get("/", status=302)
    assert r.headers["Location"] == "/ui/login"
    p.get("/ui/login")
    assert 'id="login-form"' in p.html
    # a form post without signing in does nothing (the API's token rule may answer first)
    r = p.c.post(
        "/ui/vm/create",
        data={"csrf_token": p.token, "name": "x", "instance_type": "1", "image_id": "1"},
    )
    assert (r.status_code, r.headers["Location"]) == (302, "/ui/login")
    assert rig.registry.vms.list() == []
    # a forged cookie is not a login
    p.c.set_cookie("fabric_token", "forged")
    p.get("/", status=302)


def test_login_sets_the_cookie_and_logout_revokes_it(auth_page, rig):
    p = auth_page
    p.get("/ui/login")
    r = p.post("/ui/login", follow=False, user="ops", password="nope")
    assert r.status_code == 401
    p.html = r.get_data(as_text=True)
    assert p.error() == "wrong user or password"
    r = p.post("/ui/login", follow=False, user="", password="")
    assert r.status_code == 400

    r = p.post("/ui/login", follow=False, user="ops", password="s3cret")
    assert r.status_code == 302 and r.headers["Location"] == "/"
    cookie = r.headers["Set-Cookie"]
    assert cookie.startswith("fabric_token=tok-0;")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    p.get("/")
    assert "signed in as <b>ops</b>" in p.html
    assert p.ok() == "Signed in as ops."
    p.post("/ui/vm/create", name="web1", instance_type=1, image_id=1)
    assert p.ok().startswith("Created VM web1")

    r = p.post("/ui/logout", follow=False)
    assert r.headers["Location"] == "/ui/login"
    assert p.auth.revoked == ["tok-0"]
    p.get("/", status=302)


def test_login_without_auth_goes_to_the_overview(page):
    r = page.get("/ui/login", status=302)
    assert r.headers["Location"] == "/"


def test_with_the_real_auth_service(rig):
    auth = AuthService(
        rig.registry.auth, AuthSettings(enabled=True, users={"ops": hash_password("pw")})
    )
    p = Page(create_app(replace(rig.services, auth=auth)))
    p.get("/", status=302)
    p.get("/ui/login")
    r = p.post("/ui/login", follow=False, user="ops", password="wrong")
    assert r.status_code == 401
    r = p.post("/ui/login", follow=False, user="ops", password="pw")
    assert r.status_code == 302
    p.get("/")
    assert "signed in as <b>ops</b>" in p.html
    p.post("/ui/vm/create", name="web1", instance_type=1, image_id=1)
    assert p.ok().startswith("Created VM web1")
    assert p.vm_rows() == {1: "web1"}
    p.post("/ui/logout", follow=False)
    p.get("/", status=302)


def test_the_dashboard_acts_as_the_signed_in_user(tmp_path):
    """The forms go through the same ownership rules as the API: bob cannot destroy
    alice's VM from the dashboard; the owner is shown."""
    users = {"alice": hash_password("a"), "bob": hash_password("b")}
    rig = make_rig(tmp_path, THREE_HOSTS, config={"auth": {"enabled": True, "users": users}})
    try:
        app = create_app(rig.services)
        alice, bob = Page(app), Page(app)
        for p, (user, pw) in ((alice, ("alice", "a")), (bob, ("bob", "b"))):
            p.get("/ui/login")
            assert p.post("/ui/login", follow=False, user=user, password=pw).status_code == 302
            p.get("/")  # a new session: its CSRF token
        alice.post("/ui/vm/create", name="hers", instance_type=1, image_id=1)
        assert alice.ok().startswith("Created VM hers")
        bob.get("/")
        assert row_cells(bob.html, "vm-table", 1)[10] == "alice"
        bob.post("/ui/vm/destroy", vmid=1)
        assert bob.error() == "bob may not destroy vmid 1: it is alice's"
        assert [vm.id for vm in rig.registry.vms.list()] == [1]
        alice.post("/ui/vm/destroy", vmid=1)
        assert alice.ok().startswith("Destroyed VM hers")
    finally:
        rig.stop()


def test_with_closed_reads_the_api_rule_sends_people_to_the_login_page(rig):
    users = {"ops": hash_password("pw")}
    auth = AuthService(rig.registry.auth, AuthSettings(enabled=True, open_reads=False, users=users))
    p = Page(create_app(replace(rig.services, auth=auth)))
    r = p.get("/", status=302)
    assert r.headers["Location"] == "/ui/login"
    p.get("/ui/login")
    assert "Sign in first (a token is required" in p.error()
    r = p.c.post("/ui/vm/create", data={"csrf_token": p.token, "name": "x"})
    assert (r.status_code, r.headers["Location"]) == (302, "/ui/login")
    p.c.set_cookie("fabric_token", "forged")
    p.get("/", status=302)
    assert p.c.get("/vm/list").status_code == 403  # the API itself still answers JSON
    p.get("/ui/login")
    p.post("/ui/login", follow=False, user="ops", password="pw")
    p.get("/")
    assert "signed in as <b>ops</b>" in p.html
    assert rig.registry.vms.list() == []


# -- schedules -------------------------------------------------------------------


def test_schedule_forms(rig):

    svc = rig.services.schedules  # not started: nothing runs, the forms only store
    p = Page(create_app(rig.services))
    p.get()
    assert "No schedules." in p.html and 'id="schedule-create-form"' in p.html
    p.post(
        "/ui/schedule/create",
        name="peak",
        instance_type=2,
        image_id=1,
        pool="",
        count=3,
        start="2999-01-01T08:00:00Z",
        end="2999-01-01T18:00:00Z",
        cron="",
        duration_minutes="",
        back="schedules",
    )
    assert p.ok() == "Created schedule 1."
    assert (svc.get(1).row.tid, svc.get(1).row.count) == (2, 3)
    table = p.html.split('id="schedule-table"')[1]
    assert "peak" in table and "type 2, image 1" in table
    assert "2999-01-01T08:00:00Z to 2999-01-01T18:00:00Z" in table and "pending" in table

    p.post("/ui/schedule/create", instance_type=1, image_id=1, count=2, cron="0 8 * * 1-5",
           duration_minutes=90, start="", end="")  # fmt: skip
    assert p.ok() == "Created schedule 2."
    assert "cron &#39;0 8 * * 1-5&#39; for 90 min" in p.html

    p.post("/ui/schedule/create", instance_type=1, image_id=1, count=1, start="2999-01-02",
           end="2999-01-01")  # fmt: skip
    assert "must be after start" in p.error()
    p.post("/ui/schedule/create", instance_type=1, image_id=1, count=1, start="tomorrow", end="x")
    assert "not an ISO 8601 time" in p.error()
    p.post("/ui/schedule/create", instance_type=1, image_id=1, count="", start="", end="")
    assert "count is required" in p.error()
    p.post("/ui/schedule/create", pool="nope", count=1, cron="0 8 * * *", duration_minutes=5)
    assert "pool" in p.error()

    p.post("/ui/schedule/delete", id=7)
    assert "schedule 7 does not exist" in p.error()
    p.post("/ui/schedule/delete", id=1, force=1)
    assert p.ok() == "Deleted schedule 1."
    assert [s.row.id for s in svc.list()] == [2]


def test_schedules_that_cannot_be_listed_are_reported_not_raised(page, rig, monkeypatch):
    def broken() -> list:
        raise NotFound("the schedules table is missing")

    monkeypatch.setattr(rig.services.schedules, "list", broken)
    page.get()
    assert "Could not list the schedules: the schedules table is missing" in page.html
    assert 'id="schedule-create-form"' in page.html  # the rest of the section still works


def test_stop_start_reboot_resize_and_console_from_the_dashboard(page, rig):
    page.post("/ui/vm/create", name="web1", instance_type=1, image_id=1)
    assert 'name="stop">Stop' in page.html and 'name="start">Start' not in page.html
    page.post("/ui/vm/stop", vmid=1, force=1, back="vms")
    assert page.ok() == "Stopped vmid 1 (forced); it keeps its place on its host until destroyed."
    assert rig.registry.vms.get(1).state == VmState.STOPPED
    assert 'name="start">Start' in page.html and 'name="reboot">Reboot' not in page.html
    page.post("/ui/vm/stop", vmid=1)
    assert page.error() == "vmid 1 is already stopped"
    page.post("/ui/vm/resize", vmid=1, instance_type=2)
    assert page.ok() == "Resized vmid 1 to type 2: 2 vCPUs, 1024 MB RAM, 2 GB disk."
    page.post("/ui/vm/start", vmid=1)
    assert page.ok() == "Started vmid 1."
    page.post("/ui/vm/reboot", vmid=1, force=1)
    assert page.ok() == "Rebooted vmid 1 (it went off: forced)."
    page.post("/ui/vm/resize", vmid=1, instance_type=99)
    assert "instance_type 99" in page.error()
    page.get("/ui/vm/console?vmid=1")
    assert 'id="console-text"' in page.html and "a test:// host keeps no console log" in page.html
    page.get("/ui/vm/console?vmid=42", status=404)
    assert "vmid 42 does not exist" in page.html
    page.get("/ui/vm/console?vmid=1&kb=0", status=400)
