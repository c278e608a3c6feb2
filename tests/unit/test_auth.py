"""Authentication: password hashes, tokens (issue, show, revoke, expiry), the rule
every registered route follows, and brute-force slowing."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from orchestrator.api import create_app
from orchestrator.api.auth import CALLER_READS, is_exempt
from orchestrator.api.context import TOKEN_COOKIE
from orchestrator.auth import AuthService, hash_password, token_digest, verify_password
from orchestrator.config import AuthSettings, config_from_dict
from orchestrator.errors import ConfigError
from orchestrator.registry.tables_auth import TokenRow

PW = "correct horse battery staple"
PW_BOB = "bob's own password"

# The specification, written out (not imported): GETs of the original API that act.
LEGACY_WRITES = {
    "/vm/create",
    "/vm/destroy",
    "/volume/create",
    "/volume/destroy",
    "/volume/attach",
    "/volume/detach",
    "/vms/api/v1.0/checkout",
}
AUTH_ERRORS = (
    "a token is required",
    "the token is not valid",
    "the token has been revoked",
    "the token has expired",
    "the token's user",
)


@pytest.fixture(scope="module")
def hashes() -> dict[str, str]:
    return {"alice": hash_password(PW), "bob": hash_password(PW_BOB)}


def auth_app(rig, hashes, **cfg):
    conf = AuthSettings(**{"enabled": True, "users": dict(hashes), **cfg})
    app = create_app(replace(rig.services, auth=AuthService(rig.registry.auth, conf)))
    app.testing = True
    return app


@pytest.fixture
def app(rig, hashes):
    return auth_app(rig, hashes)


@pytest.fixture
def c(app):
    return app.test_client()


def get_token(client, user: str = "alice", pw: str = PW) -> str:
    r = client.post("/token", auth=(user, pw))
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["ok"] is True and set(body) == {"ok", "token"}
    return body["token"]


def is_dashboard(path: str) -> bool:
    return path == "/" or path.startswith("/ui/")


def sent_to_login(resp) -> bool:
    """The dashboard turns a refusal into a redirect to its login page."""
    return resp.status_code in (302, 303) and "/ui/login" in resp.headers.get("Location", "")


def is_v3(path: str) -> bool:
    """vmpooler's API v3: refusals are {"ok": false, "message": ...}, a bad token 401."""
    return path.startswith("/api/v3/")


def is_auth_denial(resp) -> bool:
    if sent_to_login(resp):
        return True
    if resp.status_code not in (401, 403):
        return False
    body = resp.get_json(silent=True) or {}
    return str(body.get("error", body.get("message", ""))).startswith(AUTH_ERRORS)


# -- hashes and configuration -------------------------------------------------


def test_hash_password_format_salt_and_verify():
    pw = "my pass!"  # a space and a "!" cannot occur in the hash's base64 by chance
    a, b = hash_password(pw), hash_password(pw)
    assert a != b  # a random salt each time
    parts = a.split("$")
    assert parts[:4] == ["scrypt", "16384", "8", "1"] and len(parts) == 6
    assert pw not in a
    assert verify_password(pw, a) and verify_password(pw, b)
    assert not verify_password("my Pass!", a)
    assert not verify_password("", a)
    for bad in (
        "",
        "pw",
        "scrypt$16384$8$1$x$y",
        "md5$1$2$3$4$5",
        "scrypt$3$8$1$AAAAAAAAAAA=$AA==",
    ):
        assert not verify_password("pw", bad)
    with pytest.raises(ValueError):
        hash_password("")


def auth_config(auth):  # noqa: ANN001, ANN201
    return AuthSettings() if auth is None else config_from_dict({"auth": auth}, "fabric.yaml").auth


def test_config_is_checked(rig, hashes):
    off = AuthService(rig.registry.auth, auth_config(None))
    assert off.enabled is False and off.open_reads is True
    assert AuthService(rig.registry.auth).enabled is False
    on = AuthService(rig.registry.auth, auth_config({"enabled": True, "users": hashes}))
    assert on.enabled and on.users == hashes
    with pytest.raises(
        ConfigError, match=r"^fabric.yaml: auth\.users\.alice: not a password hash"
    ) as e:
        auth_config({"enabled": True, "users": {"alice": "plain-secret"}})
    assert "plain-secret" not in str(e.value)  # a password typed by mistake is never echoed
    with pytest.raises(ConfigError, match=r"auth\.users\.alice: not a password hash") as e:
        auth_config({"enabled": True, "users": {"alice": 12345678}})
    assert "12345678" not in str(e.value)
    with pytest.raises(ConfigError, match=r"auth\.users: must be a mapping") as e:
        auth_config({"users": ["plain-secret"]})
    assert "plain-secret" not in str(e.value)
    with pytest.raises(ConfigError, match=r"auth: must be a mapping") as e:
        auth_config("plain-secret")
    assert "plain-secret" not in str(e.value)
    with pytest.raises(ConfigError, match=r"auth\.users\.'?a:b'?: .* is not a valid user name"):
        auth_config({"users": {"a:b": hashes["alice"]}})
    with pytest.raises(ConfigError, match=r"auth\.colour: unknown setting \(valid: enabled, "):
        auth_config({"colour": "red"})
    with pytest.raises(ConfigError, match=r"auth\.users: auth is enabled but no user"):
        auth_config({"enabled": True})
    with pytest.raises(ConfigError, match=r"auth\.max_failures: must be an integer >= 1, got 0"):
        auth_config({"users": hashes, "max_failures": 0})
    with pytest.raises(ConfigError, match=r"auth\.lockout_seconds: must be an integer >= 0"):
        auth_config({"users": hashes, "lockout_seconds": -1})
    with pytest.raises(ConfigError, match=r"auth\.token_ttl_hours: must be a positive number"):
        auth_config({"users": hashes, "token_ttl_hours": "1"})
    with pytest.raises(ConfigError, match=r"auth\.token_ttl_hours: must be a positive number"):
        auth_config({"users": hashes, "token_ttl_hours": 24 * 3660 + 1})
    with pytest.raises(ConfigError, match=r"auth\.enabled: must be true or false, got 'yes'"):
        auth_config({"enabled": "yes", "users": hashes})


def test_auth_off_by_default_lets_everything_through(client):
    r = client.get("/vm/create?name=a&instance_type=1&image_id=1")
    assert r.status_code == 200
    r = client.post("/token", auth=("alice", PW))
    assert r.status_code == 404 and r.get_json()["ok"] is False


# -- the rule, for every registered route --------------------------------------


def representative_requests(app):
    """One request per (route, method) the app registers, with placeholder arguments."""
    adapter = app.url_map.bind("localhost")
    for rule in app.url_map.iter_rules():
        values = {arg: 1 for arg in rule.arguments}
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            path = adapter.build(rule.endpoint, values, method=method)
            yield rule.rule, method, path


def send(client, method: str, path: str, token: str | None = None):
    headers = {"X-Auth-Token": token} if token is not None else {}
    if is_dashboard(path) and token is not None:
        # a browser carries the token in the dashboard's cookie
        client.set_cookie("fabric_token", token)
    else:  # and only there: a dashboard's cookie must not sign an API call sent after it
        client.delete_cookie("fabric_token")
    return client.open(path, method=method, headers=headers)


@pytest.mark.parametrize("open_reads", [True, False])
def test_every_route_follows_the_rule(rig, hashes, open_reads):
    app = auth_app(rig, hashes, open_reads=open_reads)
    c = app.test_client()
    token = get_token(c)
    checked = []
    for rule, method, path in representative_requests(app):
        if is_exempt(rule):
            continue
        writes = method != "GET" or rule in LEGACY_WRITES
        needs = writes or not open_reads or rule in CALLER_READS
        where = f"{method} {path}"
        anon = send(c, method, path)
        bad = send(c, method, path, "not-a-token")
        good = send(c, method, path, token)
        if is_dashboard(path):
            # HTML pages: with auth on the dashboard wants a signed-in person for every
            # page; the refusal is a redirect to its login page
            assert sent_to_login(anon), where
            assert sent_to_login(bad), where
        elif needs and is_v3(path):
            for resp in (anon, bad):
                assert resp.status_code == 401 and is_auth_denial(resp), where
                assert resp.get_json()["ok"] is False, where
                assert "WWW-Authenticate" in resp.headers, where
            assert anon.get_json()["message"].startswith("a token is required"), where
        elif needs:
            assert anon.status_code == 401, where
            assert anon.get_json()["error"].startswith("a token is required"), where
            assert "WWW-Authenticate" in anon.headers, where
            assert bad.status_code == 403 and is_auth_denial(bad), where
        else:
            assert not is_auth_denial(anon), where
            assert not is_auth_denial(bad), where  # a bad token on an open read is ignored
        assert not is_auth_denial(good), (where, good.status_code, good.get_data()[:200])
        checked.append((rule, method))
    assert ("/vm/create", "GET") in checked and ("/vm/checkout", "POST") in checked
    assert ("/vm/types", "GET") in checked and ("/status", "GET") in checked
    assert ("/api/v3/vm/<template>", "POST") in checked


def test_head_on_a_legacy_write_needs_a_token(c):
    assert c.head("/vm/create?name=a&instance_type=1&image_id=1").status_code == 401
    assert c.options("/vm/create").status_code == 200


def test_exempt_paths_stay_open_without_open_reads(rig, hashes):
    c = auth_app(rig, hashes, open_reads=False).test_client()
    assert c.get("/healthz").status_code == 200
    assert c.get("/metrics").status_code == 200
    assert c.get("/vm/types").status_code == 401
    assert c.get("/status").status_code == 401
    assert c.get("/no/such/thing").status_code == 401
    for path in (
        "/healthz",
        "/token",
        "/openapi.json",
        "/metrics",
        "/ui/login",
        "/ui/static/a.css",
    ):
        assert is_exempt(path)
    assert not is_exempt("/tokenx") and not is_exempt("/ui/loginx")


def test_a_token_lets_a_write_through(c):
    token = get_token(c)
    r = c.get("/vm/create?name=a&instance_type=1&image_id=1", headers={"X-Auth-Token": token})
    assert r.status_code == 200 and r.get_json()["vmid"] > 0
    r = c.get("/vm/create?name=a&instance_type=1&image_id=1")
    assert r.status_code == 401 and r.get_json() == {
        "error": "a token is required: send it in the X-Auth-Token header"
    }


def test_cookie_token_and_cross_site_refusal(c):
    token = get_token(c)
    c.set_cookie(TOKEN_COOKIE, token)
    url = "/vm/create?name=a&instance_type=1&image_id=1"
    assert c.get(url, headers={"Sec-Fetch-Site": "same-origin"}).status_code == 200
    assert c.post("/vm/destroy", data={"vmid": 999}).status_code == 404  # past auth
    cross = c.get(url, headers={"Sec-Fetch-Site": "cross-site"})
    assert cross.status_code == 403 and "cross-site" in cross.get_json()["error"]
    evil = c.post("/vm/destroy", data={"vmid": 1}, headers={"Origin": "https://evil.example"})
    assert evil.status_code == 403
    # A header token is not a browser's ambient credential: no origin check.
    c.delete_cookie(TOKEN_COOKIE)
    r = c.get(url, headers={"Sec-Fetch-Site": "cross-site", "X-Auth-Token": token})
    assert r.status_code == 200


# -- tokens --------------------------------------------------------------------


def test_issue_show_and_revoke_at_once(c):
    token = get_token(c)
    r = c.get(f"/token/{token}", auth=("alice", PW))
    body = r.get_json()
    assert r.status_code == 200 and body["ok"] is True
    info = body[token]
    assert info["user"] == "alice"
    created = datetime.fromisoformat(info["created"].replace("Z", "+00:00"))
    expires = datetime.fromisoformat(info["expires"].replace("Z", "+00:00"))
    assert timedelta(hours=23, minutes=59) <= expires - created <= timedelta(hours=24, seconds=1)
    assert r.headers["Cache-Control"] == "no-store"
    # the token itself may show and revoke itself
    assert c.get(f"/token/{token}", headers={"X-Auth-Token": token}).status_code == 200
    write = "/vm/destroy?vmid=999"
    assert c.get(write, headers={"X-Auth-Token": token}).status_code == 404  # past auth
    r = c.delete(f"/token/{token}", headers={"X-Auth-Token": token})
    assert r.status_code == 200 and r.get_json() == {"ok": True}
    r = c.get(write, headers={"X-Auth-Token": token})
    assert r.status_code == 403 and r.get_json()["error"] == "the token has been revoked"
    assert c.get(f"/token/{token}", auth=("alice", PW)).status_code == 404
    assert c.delete(f"/token/{token}", auth=("alice", PW)).status_code == 404


def test_revoke_with_basic_auth_and_only_ones_own(c):
    token = get_token(c)
    assert c.get(f"/token/{token}").status_code == 401
    assert c.get(f"/token/{token}", auth=("bob", PW_BOB)).status_code == 404
    assert c.delete(f"/token/{token}", auth=("bob", PW_BOB)).status_code == 404
    bobs = get_token(c, "bob", PW_BOB)
    assert c.delete(f"/token/{token}", headers={"X-Auth-Token": bobs}).status_code == 404
    assert c.get("/vm/destroy?vmid=9", headers={"X-Auth-Token": token}).status_code == 404
    assert c.delete(f"/token/{token}", auth=("alice", PW)).status_code == 200
    assert c.get("/vm/destroy?vmid=9", headers={"X-Auth-Token": token}).status_code == 403
    assert c.get(f"/token/{token}", auth=("alice", "wrong")).status_code == 401


def test_revocation_is_seen_by_another_server_at_once(rig, hashes):
    one = auth_app(rig, hashes).test_client()
    two = auth_app(rig, hashes).test_client()  # another process, same registry
    token = get_token(one)
    assert two.get("/vm/destroy?vmid=9", headers={"X-Auth-Token": token}).status_code == 404
    assert one.delete(f"/token/{token}", auth=("alice", PW)).status_code == 200
    assert two.get("/vm/destroy?vmid=9", headers={"X-Auth-Token": token}).status_code == 403


def test_expired_token_and_removed_user(rig, hashes, c):
    token = get_token(c)
    with rig.registry.db.tx() as s:
        s.execute(
            update(TokenRow)
            .where(TokenRow.digest == token_digest(token))
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    r = c.post("/vm/destroy", json={"vmid": 1}, headers={"X-Auth-Token": token})
    assert r.status_code == 403 and r.get_json()["error"] == "the token has expired"
    bobs = get_token(c, "bob", PW_BOB)
    without_bob = auth_app(rig, {"alice": hashes["alice"]}).test_client()
    r = without_bob.post("/vm/destroy", json={"vmid": 1}, headers={"X-Auth-Token": bobs})
    assert r.status_code == 403


def test_token_ttl_from_config(rig, hashes):
    c = auth_app(rig, hashes, token_ttl_hours=2).test_client()
    token = get_token(c)
    info = c.get(f"/token/{token}", auth=("alice", PW)).get_json()[token]
    created = datetime.fromisoformat(info["created"].replace("Z", "+00:00"))
    expires = datetime.fromisoformat(info["expires"].replace("Z", "+00:00"))
    assert abs((expires - created) - timedelta(hours=2)) <= timedelta(seconds=1)


def test_only_digests_are_stored(rig, c, hashes):
    tokens = [get_token(c) for _ in range(2)]
    with rig.registry.db.read() as s:
        rows = list(s.scalars(select(TokenRow)))
    assert {r.digest for r in rows} == {token_digest(t) for t in tokens}
    assert all(len(r.digest) == 64 and r.user == "alice" and not r.revoked for r in rows)
    rig.registry.close()  # flush: the bytes on disk (and in the WAL) are what we read
    blob = b"".join(p.read_bytes() for p in rig.dir.glob("registry.db*"))
    for t in tokens:
        assert t.encode() not in blob
    assert PW.encode() not in blob and hashes["alice"].encode() not in blob


def test_logs_never_hold_passwords_or_tokens(c, caplog):
    caplog.set_level(logging.DEBUG)
    token = get_token(c)
    c.post("/token", auth=("alice", "wrong-" + PW))
    c.post("/token", auth=(PW, PW))  # a password typed into the user field
    c.get("/vm/destroy?vmid=9", headers={"X-Auth-Token": token})
    c.get(f"/token/{token}", auth=("alice", PW))
    c.delete(f"/token/{token}", auth=("alice", PW))
    assert caplog.records  # something was logged
    assert PW not in caplog.text and token not in caplog.text


# -- basic auth failures and lockout ------------------------------------------


def test_wrong_password_and_unknown_user_are_401_alike(c):
    a = c.post("/token", auth=("alice", "nope"))
    b = c.post("/token", auth=("mallory", "nope"))
    assert a.status_code == b.status_code == 401
    assert a.get_json() == b.get_json() == {"ok": False, "error": "wrong user name or password"}
    assert a.headers["WWW-Authenticate"].startswith("Basic ")
    none = c.post("/token")
    assert none.status_code == 401 and none.headers["WWW-Authenticate"].startswith("Basic ")


# The per-account backoff, the per-server rate limit and the client's address behind
# trusted proxies are tested in test_login_limits.py.


def test_failures_below_the_limit_do_not_lock(rig, hashes):
    c = auth_app(rig, hashes, max_failures=3, lockout_seconds=30).test_client()
    for _ in range(2):
        assert c.post("/token", auth=("alice", "bad")).status_code == 401
    assert c.post("/token", auth=("alice", PW)).status_code == 200
    for _ in range(2):  # the success reset the count
        assert c.post("/token", auth=("alice", "bad")).status_code == 401
    assert c.post("/token", auth=("alice", PW)).status_code == 200
