"""Secrets stay out of cookies and caches: the session cookie never carries a
reservation id, the session key is one for every server on the registry and
survives a restart, cookies are Secure as ``server.secure_cookies`` says, and every
answer that carries a secret is ``Cache-Control: no-store``."""

from __future__ import annotations

import base64
import logging
import time
import zlib
from datetime import timedelta

import pytest
from sqlalchemy import select

from orchestrator.api import create_app
from orchestrator.config import config_from_dict
from orchestrator.errors import ConfigError
from orchestrator.registry.tables import MetaRow
from tests.conftest import make_pool_rig, wait_for
from tests.unit.test_dashboard import POOL_HOSTS, SECRET, Page
from tests.web import PW, auth_app, user_hashes, with_server


@pytest.fixture(scope="module")
def hashes() -> dict[str, str]:
    return user_hashes()


# -- the session cookie: no secret in it, one key for every server ------------------


def session_payload(value: str) -> str:
    """What anyone holding Flask's session cookie reads: it is signed, not encrypted."""
    compressed = value.startswith(".")
    data = value.lstrip(".").split(".")[0]
    raw = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
    return (zlib.decompress(raw) if compressed else raw).decode()


@pytest.fixture
def pool_page(tmp_path):  # noqa: ANN201
    pr = make_pool_rig(
        tmp_path,
        POOL_HOSTS,
        [{"name": "small", "instance_type": 1, "image": "debian-12", "ready_check": "none",
          "size": 2, "max": 3, "cleanup": "reset"}],
    )  # fmt: skip
    wait_for(lambda: pr.pools.status()["small"]["ready"] == 2)
    p = Page(create_app(pr.rig.services))
    p.pr = pr
    yield p
    pr.stop()


def test_a_checked_out_reservation_id_is_never_in_the_session_cookie(pool_page):
    p = pool_page
    r = p.post("/ui/vm/checkout", follow=False, pool="small")
    assert r.status_code == 302
    after_post = p.c.get_cookie("session").value
    once = [row for row in _meta_rows(p.pr.rig) if row.key.startswith("once:")]
    kept = [row.value for row in once]
    assert 595 <= int(once[0].key.split(":")[1]) - time.time() <= 601  # kept 10 minutes
    p.get(r.headers["Location"].split("#")[0])
    secret = SECRET.search(p.html).group(1)
    assert len(secret) == 43
    assert '"_flashes"' in session_payload(after_post)  # the cookie is readable ...
    assert secret not in session_payload(after_post)  # ... and holds no secret
    assert secret not in session_payload(p.c.get_cookie("session").value)
    # the registry kept it only masked, and only until it was shown
    assert len(kept) == 1 and secret.encode() not in base64.b64decode(kept[0])
    assert not any(row.key.startswith("once:") for row in _meta_rows(p.pr.rig))
    # shown once: the page again, or the cookie from before the page, show it no more
    p.get()
    assert secret not in p.html
    again = Page(p.app)
    again.c.set_cookie("session", after_post)
    again.get()
    assert secret not in again.html and "shown already" in again.html


def _meta_rows(rig):  # noqa: ANN001, ANN202
    with rig.registry.db.read() as s:
        return list(s.scalars(select(MetaRow)))


def test_a_one_time_value_expires_and_is_taken_once(rig):
    meta = rig.registry.meta
    handle = meta.put_once("the secret", timedelta(minutes=1))
    assert "the secret" not in handle
    assert meta.take_once(handle) == "the secret"
    assert meta.take_once(handle) is None
    expired = meta.put_once("old", timedelta(seconds=1))
    time.sleep(1.1)
    assert meta.take_once(expired) is None
    for bad in ("", "x", "1.", "99999999999.abc", "1.é" * 10, f"{handle}x"):
        assert meta.take_once(bad) is None
    meta.put_once("new", timedelta(minutes=1))  # a put deletes what has expired
    assert len([r for r in _meta_rows(rig) if r.key.startswith("once:")]) == 1


def test_the_session_key_is_shared_through_the_registry_and_survives_a_restart(rig, caplog):
    caplog.set_level(logging.DEBUG)
    one = Page(create_app(rig.services))
    two = Page(create_app(rig.services))  # another server on the same registry
    one.get()
    cookie = one.c.get_cookie("session").value
    two.c.set_cookie("session", cookie)
    two.html = one.html
    two.post("/ui/vm/create", name="a", instance_type=1, image_id=1)
    assert two.ok().startswith("Created VM a")
    key = one.app.secret_key
    with rig.registry.db.read() as s:
        assert s.get(MetaRow, "session_secret").value == key
    rig.restart()  # the same registry, new services, a new app
    three = Page(create_app(rig.services))
    three.c.set_cookie("session", cookie)
    three.html = one.html
    three.post("/ui/vm/create", name="b", instance_type=1, image_id=1)
    assert three.ok().startswith("Created VM b")
    assert key not in caplog.text


def test_a_configured_session_key_is_used(rig):
    key = "k" * 40
    app = create_app(with_server(rig.services, secret_key=key))
    assert app.secret_key == key
    assert not any(r.key == "session_secret" for r in _meta_rows(rig))
    with pytest.raises(ConfigError) as e:
        config_from_dict({"server": {"secret_key": "too-short-a-secret"}})
    assert "at least 32 characters" in str(e.value) and "too-short-a-secret" not in str(e.value)


# -- Secure cookies -------------------------------------------------------------------


def cookie_line(resp, name: str) -> str:
    lines = [v for v in resp.headers.getlist("Set-Cookie") if v.startswith(f"{name}=")]
    assert lines, resp.headers
    return lines[0]


def sign_in(app, base_url: str, environ: dict | None = None, headers: dict | None = None):  # noqa: ANN201
    c = app.test_client()
    environ, headers = environ or {}, headers or {}
    page = c.get("/ui/login", base_url=base_url, environ_base=environ, headers=headers)
    csrf = page.get_data(as_text=True).split('name="csrf_token" value="')[1].split('"')[0]
    login = c.post(
        "/ui/login",
        data={"csrf_token": csrf, "user": "alice", "password": PW},
        base_url=base_url,
        environ_base=environ,
        headers=headers,
    )
    assert login.status_code == 302, login.get_data(as_text=True)
    return page, login


@pytest.mark.parametrize(
    ("mode", "base_url", "secure"),
    [
        ("auto", "http://localhost", False),
        ("auto", "https://localhost", True),
        (True, "http://localhost", True),  # behind a TLS proxy that the server cannot see
        (False, "https://localhost", False),
    ],
)
def test_secure_cookies(rig, hashes, mode, base_url, secure):
    app = auth_app(rig, hashes, server={"secure_cookies": mode})
    page, login = sign_in(app, base_url)
    assert page.headers["Cache-Control"] == "no-store"  # the login page too
    for resp, name in ((page, "session"), (login, "fabric_token"), (login, "session")):
        assert ("; Secure" in cookie_line(resp, name)) is secure, (name, cookie_line(resp, name))


def test_config_of_secure_cookies():
    assert config_from_dict({}).server.secure_cookies == "auto"
    assert config_from_dict({"server": {"secure_cookies": True}}).server.secure_cookies is True
    with pytest.raises(ConfigError, match=r"server\.secure_cookies: must be auto, true or false"):
        config_from_dict({"server": {"secure_cookies": "yes"}})


# -- no-store on every answer that carries a secret -----------------------------------


def test_answers_that_carry_a_secret_are_not_stored(pool_page, hashes):
    c = pool_page.app.test_client()
    r = c.post("/vm/checkout", data={"pool": "small"})
    assert r.status_code == 200 and r.get_json()["reservation_id"]
    assert r.headers["Cache-Control"] == "no-store"
    wait_for(lambda: pool_page.pr.pools.status()["small"]["ready"] >= 1)
    r = c.get("/vms/api/v1.0/checkout")
    assert r.status_code == 200 and r.get_json()["ReservationID"]
    assert r.headers["Cache-Control"] == "no-store"
    p = pool_page
    wait_for(lambda: pool_page.pr.pools.status()["small"]["ready"] >= 1)
    p.post("/ui/vm/checkout", follow=False, pool="small")
    shown = p.get()
    assert SECRET.search(p.html) and shown.headers["Cache-Control"] == "no-store"
    tokens = auth_app(p.pr.rig, hashes).test_client().post("/token", auth=("alice", PW))
    assert tokens.status_code == 200 and tokens.headers["Cache-Control"] == "no-store"
