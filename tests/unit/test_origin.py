"""Cross-site and foreign-Host state changes are refused in every mode, authentication
on or off (orchestrator/api/origin.py); the launcher tells the app its port, and warns
when it listens on the network with authentication off."""

from __future__ import annotations

import html

import pytest
import requests

from orchestrator import cli
from orchestrator.api import create_app
from orchestrator.api.origin import AllowedNames, machine_names
from orchestrator.auth import hash_password
from orchestrator.config import config_from_dict
from orchestrator.errors import ConfigError
from tests.launch import launch
from tests.unit.test_dashboard import Page
from tests.unit.test_served import Server
from tests.web import PW, auth_app, user_hashes, with_server

CREATE = "/vm/create?name=web1&instance_type=1&image_id=1"


@pytest.fixture(scope="module")
def hashes() -> dict[str, str]:
    return user_hashes()


@pytest.fixture
def app(rig):  # noqa: ANN201
    a = create_app(rig.services)  # auth off: the default
    a.testing = True
    return a


@pytest.fixture
def c(app):  # noqa: ANN201
    return app.test_client()


def refused(resp, *words: str) -> bool:
    body = resp.get_json(silent=True) or {}
    error = str(body.get("error", ""))
    return (
        resp.status_code == 403 and error.startswith("refused: ") and all(w in error for w in words)
    )


def test_a_cross_site_get_that_creates_a_vm_is_refused_with_auth_off(c, rig):
    r = c.get(CREATE, headers={"Sec-Fetch-Site": "cross-site"})
    assert refused(r, "cross-site", "Sec-Fetch-Site: cross-site"), r.get_json()
    assert r.is_json
    r = c.get(CREATE, headers={"Sec-Fetch-Site": "same-site"})  # another page of the site
    assert refused(r, "Sec-Fetch-Site: same-site")
    assert rig.registry.vms.list() == []


def test_a_cross_site_form_post_that_destroys_a_vm_is_refused_with_auth_off(c, rig):
    vmid = c.get(CREATE).get_json()["vmid"]  # curl-like: no browser headers
    form = {"vmid": str(vmid)}
    r = c.post("/vm/destroy", data=form, headers={"Origin": "https://evil.example"})
    assert refused(r, "Origin: https://evil.example")
    r = c.post("/vm/destroy", data=form, headers={"Origin": "null"})  # a sandboxed frame
    assert refused(r, "Origin: null")
    r = c.post("/vm/destroy", data=form, headers={"Origin": "http://localhost:8080"})
    assert refused(r, "Origin")  # another port of this host: another origin
    r = c.post("/vm/destroy", data=form, headers={"Referer": "https://evil.example/page"})
    assert refused(r, "Referer")  # an old browser sends no Origin on some forms
    assert [vm.id for vm in rig.registry.vms.list()] == [vmid]
    r = c.post("/vm/destroy", data=form, headers={"Origin": "http://localhost"})
    assert r.status_code == 200 and r.get_json() == {"status": 1}


def test_a_foreign_host_is_refused_even_when_the_browser_thinks_it_same_origin(rig, hashes):
    # DNS rebinding: evil.example now points at the fabric; to the browser the page and
    # the fabric are one origin, so Sec-Fetch-Site and Origin look fine. Only Host tells.
    for app in (create_app(rig.services), auth_app(rig, hashes)):
        c = app.test_client()
        token = {}
        if app.config["SERVICES"].auth.enabled:
            token = {"X-Auth-Token": c.post("/token", auth=("alice", PW)).get_json()["token"]}
        headers = {
            "Host": "evil.example:5000",
            "Sec-Fetch-Site": "same-origin",
            "Origin": "http://evil.example:5000",
            **token,
        }
        r = c.get(CREATE, headers=headers)
        assert refused(r, "'evil.example:5000'", "Host"), r.get_json()
        assert c.post("/vm/destroy", data={"vmid": "1"}, headers=headers).status_code == 403
        assert c.get(CREATE, headers={"Host": "evil.example"}).status_code == 403  # curl too
        assert c.get(CREATE, headers={"Host": "bad host!"}).status_code == 403
    assert rig.registry.vms.list() == []


def test_requests_without_browser_headers_and_same_origin_ones_pass(c, rig):
    assert c.get(CREATE).status_code == 200  # curl, the python client, scripts
    for headers in (
        {"Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "none"},  # typed into the address bar
        {"Origin": "http://localhost"},
        {"Host": "127.0.0.1:5000", "Origin": "http://127.0.0.1:5000"},
        {"Host": "10.1.2.3:5000", "Origin": "http://10.1.2.3:5000"},  # an address: ours
        {"Host": "[::1]:5000", "Referer": "http://[::1]:5000/"},
        {"Host": f"{machine_names()[0]}:8000"},
    ):
        r = c.get(CREATE, headers=headers)
        assert r.status_code == 200, (headers, r.get_json())
    # reads are not checked: nothing changes, and a page cannot read the answer
    assert c.get("/vm/types", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 200
    assert c.get("/vm/types", headers={"Host": "evil.example"}).status_code == 200
    assert len(rig.registry.vms.list()) == 8


def test_a_header_token_is_no_browser_request_but_the_host_is_still_checked(rig, hashes):
    c = auth_app(rig, hashes).test_client()
    token = c.post("/token", auth=("alice", PW)).get_json()["token"]
    cross = {"Sec-Fetch-Site": "cross-site", "X-Auth-Token": token}
    assert c.get(CREATE, headers=cross).status_code == 200
    assert c.get(CREATE, headers={**cross, "Host": "evil.example"}).status_code == 403
    # a cross-site login is refused too (it would sign a person in as someone else)
    r = c.post("/token", auth=("alice", PW), headers={"Origin": "https://evil.example"})
    assert refused(r, "Origin")


def test_dashboard_forms_from_another_site_get_the_message_page(rig):
    page = Page(create_app(rig.services))
    page.get()
    form = {"csrf_token": page.token, "name": "x", "instance_type": "1", "image_id": "1"}
    r = page.c.post("/ui/vm/create", data=form, headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403 and r.headers["Content-Type"].startswith("text/html")
    text = html.unescape(r.get_data(as_text=True))
    assert "Refused: a cross-site request may not change state" in text
    assert r.headers["Cache-Control"] == "no-store"
    r = page.c.post("/ui/vm/create", data=form, headers={"Host": "evil.example"})
    assert r.status_code == 403 and "does not answer to the name" in r.get_data(as_text=True)
    assert rig.registry.vms.list() == []
    r = page.c.post("/ui/vm/create", data=form, headers={"Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 302 and len(rig.registry.vms.list()) == 1


def test_the_names_a_server_answers_to(rig):
    names = AllowedNames.of(["fabric.example.com", "ops.example.com:8443"])
    names.listening("0.0.0.0", 5000)  # noqa: S104 - only a name here
    allows = names.host_ok
    assert allows(("fabric.example.com", None))  # through a proxy on 80/443
    assert not allows(("fabric.example.com", 5000))  # only on the standard port
    assert allows(("ops.example.com", 8443)) and not allows(("ops.example.com", None))
    for host in ("localhost", "127.0.0.1", "::1", *machine_names()):
        assert names.allows((host, 5000)) and not names.allows((host, 5001)), host
        assert not names.allows((host, None))
    assert allows(("localhost", 5000)) and not allows(("localhost", 5001))
    assert not allows(("evil.example", 5000))
    assert allows(("192.0.2.7", 80))  # an address: a browser connected to it itself
    assert not names.allows(("192.0.2.7", 5000))  # ... but it is no origin of ours
    names.listening("10.0.0.5", 80)
    assert allows(("10.0.0.5", None)) and names.allows(("10.0.0.5", None))
    assert names.allows(("localhost", None)) and not names.allows(("localhost", 5000))
    fresh = AllowedNames.of([])  # the app does not know its port: any port, as a Host
    assert fresh.host_ok(("localhost", 5001)) and fresh.host_ok(("localhost", None))
    assert not fresh.allows(("localhost", 5001), any_port=False)  # but not as an Origin

    app = create_app(with_server(rig.services, names=["fabric.example.com"]), ("127.0.0.1", 5000))
    c = app.test_client()
    assert c.get(CREATE, headers={"Host": "fabric.example.com"}).status_code == 200
    assert c.get(CREATE, headers={"Host": "localhost:5000"}).status_code == 200
    assert c.get(CREATE, headers={"Host": "localhost:5001"}).status_code == 403
    assert c.get(CREATE, headers={"Host": "fabric.example.com:5000"}).status_code == 403
    r = c.get(CREATE, headers={"Host": "127.0.0.1:5000", "Origin": "https://fabric.example.com"})
    assert r.status_code == 200  # a TLS proxy that passes the browser's Origin, not its Host
    with pytest.raises(ConfigError, match=r"server\.names\[0\]: must be a host name"):
        config_from_dict({"server": {"names": ["http://x/"]}})


def test_the_launcher_knows_its_port_and_warns_when_open_without_auth(tmp_path):
    srv = Server(tmp_path, [(4, 4096)])
    args = [str(srv.pm), str(srv.images), str(srv.types), "--config", str(srv.config)]
    proc, url = launch([*args, "--db", srv.db, "--host", "0.0.0.0"], tmp_path / "server.log")  # noqa: S104
    srv.proc = proc
    try:
        port = int(url.rsplit(":", 1)[1])
        params = {"name": "w", "instance_type": 1, "image_id": 1}

        def create(host: str) -> int:
            r = requests.get(f"{url}/vm/create", params=params, headers={"Host": host}, timeout=30)
            return r.status_code

        assert create(f"127.0.0.1:{port}") == 200
        assert create(f"localhost:{port}") == 200
        assert create(f"{machine_names()[0]}:{port}") == 200
        assert create(f"localhost:{port + 1}") == 403  # the port is known: only that one
        assert create(f"evil.example:{port}") == 403
        r = requests.post(
            f"{url}/vm/destroy", data={"vmid": 1}, headers={"Origin": "https://evil.example"}
        )
        assert r.status_code == 403 and "cross-site" in r.json()["error"]
    finally:
        assert srv.stop() == 0
    log = (tmp_path / "server.log").read_text()
    assert (
        "warning: listening on 0.0.0.0 (reachable from other machines) with authentication off"
        in log
    )


def test_validate_warns_about_a_server_open_to_the_network_without_auth(rig, tmp_path, capsys):
    files = [str(rig.pm_file), str(rig.image_file), str(rig.types_file)]
    assert cli.main(["validate", *files, "--host", "0.0.0.0"]) == 0  # noqa: S104
    out = capsys.readouterr()
    assert (
        "warning: listening on 0.0.0.0 (reachable from other machines) with authentication off"
        in out.err
    )
    assert "(1 warning(s))" in out.out
    for host in ("127.0.0.1", "::1", "localhost"):
        assert cli.main(["validate", *files, "--host", host]) == 0
        assert "warning" not in capsys.readouterr().err
    conf = tmp_path / "fabric.yaml"
    conf.write_text(f"auth: {{enabled: true, users: {{ops: '{hash_password('pw')}'}}}}\n")
    assert cli.main(["validate", *files, "--config", str(conf), "--host", "10.0.0.5"]) == 0
    assert "warning" not in capsys.readouterr().err
    conf.write_text("auth: {enabled: false}\n")
    assert cli.main(["validate", *files, "--config", str(conf), "--host", "10.0.0.5"]) == 0
    assert "warning: listening on 10.0.0.5" in capsys.readouterr().err
