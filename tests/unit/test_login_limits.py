"""Logins: a short backoff per account (never a long lockout of the right password),
a password-check rate per server (scrypt floods), and the client's address and
scheme behind trusted proxies (``server.trusted_proxies``)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from orchestrator import auth as auth_module
from orchestrator.api.proxies import client_address
from orchestrator.config import ServerSettings, config_from_dict
from orchestrator.errors import ConfigError
from orchestrator.registry import auth as registry_auth
from orchestrator.registry.auth import backoff
from orchestrator.registry.tables_auth import LoginFailureRow
from tests.unit.test_session import cookie_line, sign_in
from tests.web import PW, PW_BOB, auth_app, user_hashes


@pytest.fixture(scope="module")
def hashes() -> dict[str, str]:
    return user_hashes()


# -- logins: backoff per account, a rate per server, the client's address ------------


def test_backoff_doubles_from_one_second_up_to_the_cap():
    cap = timedelta(seconds=8)
    waits = [backoff(n, 3, cap).total_seconds() for n in range(9)]
    assert waits == [0, 0, 0, 1, 2, 4, 8, 8, 8]
    assert backoff(10**6, 3, cap) == cap
    assert backoff(5, 3, timedelta(0)) == timedelta(0)  # lockout_seconds: 0, no wait


def test_the_right_password_works_again_soon_after_many_wrong_ones(rig, hashes, monkeypatch):
    app = auth_app(rig, hashes, max_failures=3, lockout_seconds=2)
    # The account's waits on a clock the test moves: exact, however slow the machine.
    now = [datetime.now(UTC)]
    monkeypatch.setattr(auth_module, "_now", lambda: now[0])
    monkeypatch.setattr(registry_auth, "utcnow", lambda: now[0])
    c = app.test_client()
    guesser = {"REMOTE_ADDR": "198.51.100.66"}
    owner = {"REMOTE_ADDR": "192.0.2.10"}  # another address, or the same proxy's

    def guess(n: int) -> list[int]:
        return [
            c.post("/token", auth=("alice", "guess"), environ_base=guesser).status_code
            for _ in range(n)
        ]

    token = c.post("/token", auth=("alice", PW), environ_base=owner).get_json()["token"]
    # a guesser hammers the account: 3 free, then one after 1 s and one after 2 s
    assert guess(6) == [401] * 3 + [429] * 3
    now[0] += timedelta(seconds=1)
    assert guess(3) == [401] + [429] * 2
    now[0] += timedelta(seconds=1.5)
    assert guess(3) == [429] * 3  # the second wait is 2 s
    now[0] += timedelta(seconds=0.5)
    assert guess(3) == [401] + [429] * 2
    r = c.post("/token", auth=("alice", PW), environ_base=owner)
    assert r.status_code == 429 and r.get_json()["ok"] is False  # the account waits ...
    wait = int(r.headers["Retry-After"])
    assert wait == 2  # ... never longer than lockout_seconds (4 s, capped)
    assert "too many failed logins for 'alice'" in r.get_json()["error"]
    assert c.get("/token/x", auth=("alice", PW), environ_base=owner).status_code == 429
    # a token issued before keeps working: only password checks wait
    r = c.get("/vm/destroy?vmid=999", headers={"X-Auth-Token": token}, environ_base=owner)
    assert r.status_code == 404  # past the token rule
    # another account is not slowed down
    assert c.post("/token", auth=("bob", PW_BOB), environ_base=guesser).status_code == 200
    now[0] += timedelta(seconds=wait)
    assert c.post("/token", auth=("alice", PW), environ_base=owner).status_code == 200
    with rig.registry.db.read() as s:  # a success clears the account's count
        assert s.scalars(select(LoginFailureRow).where(LoginFailureRow.user == "alice")).all() == []


def test_the_wait_is_per_account_whatever_the_address_and_server(rig, hashes):
    one = auth_app(rig, hashes, max_failures=2, lockout_seconds=30).test_client()
    two = auth_app(rig, hashes, max_failures=2, lockout_seconds=30).test_client()
    for i in range(2):  # two addresses, two servers: one count
        env = {"REMOTE_ADDR": f"203.0.113.{i}"}
        assert (one if i else two).post(
            "/token", auth=("alice", "x"), environ_base=env
        ).status_code == 401
    r = one.post("/token", auth=("alice", PW), environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert r.status_code == 429 and r.headers["Retry-After"] == "1"
    # the wait has passed (as if 1 s went by): the next failure waits 2 s, then 4 ...
    with rig.registry.db.tx() as s:
        s.execute(
            update(LoginFailureRow).values(locked_until=datetime.now(UTC) - timedelta(seconds=1))
        )
    assert two.post("/token", auth=("alice", "x")).status_code == 401
    assert two.post("/token", auth=("alice", PW)).headers["Retry-After"] == "2"
    # unknown names wait alike (a 429 tells nothing about whether a user exists)
    for _ in range(2):
        assert one.post("/token", auth=("mallory", "x")).status_code == 401
    assert one.post("/token", auth=("mallory", "x")).status_code == 429


def test_a_flood_of_logins_is_limited_and_unknown_names_cost_no_more(rig, hashes, monkeypatch):
    app = auth_app(rig, hashes, login_rate=2, max_failures=1000)  # a burst of 4
    service = app.config["SERVICES"].auth
    assert service._dummy_hash  # made once, before counting
    assert (service.limit.rate, service.limit.burst) == (2, 4)
    # The same bucket on a clock the test moves: the counts below are exact, however
    # slow the machine (on the wall clock, a slow run would refill it as it went).
    now = [0.0]
    service.limit = auth_module.RateLimit(2, 4, clock=lambda: now[0])
    checks = []
    real = auth_module._scrypt
    monkeypatch.setattr(auth_module, "_scrypt", lambda *a, **k: checks.append(1) or real(*a, **k))
    c = app.test_client()
    # one password check per attempt, known user or not: the same time for both
    assert c.post("/token", auth=("alice", "nope")).status_code == 401 and len(checks) == 1
    assert c.post("/token", auth=("nobody", "nope")).status_code == 401 and len(checks) == 2
    answers = [c.post("/token", auth=(f"user{i}", "x")) for i in range(40)]
    # the burst's last 2 are checked (401); the other 38 are refused unchecked
    assert [r.status_code for r in answers] == [401] * 2 + [429] * 38
    assert len(checks) == 4
    limited = answers[2:]
    assert limited[0].get_json()["error"].startswith("too many login attempts on this server")
    assert int(limited[0].headers["Retry-After"]) >= 1
    # the limit counts every password check: the right password waits its turn too
    assert c.post("/token", auth=("alice", PW)).status_code == 429
    now[0] += 0.5  # one check's worth at 2 a second
    assert c.post("/token", auth=("alice", PW)).status_code == 200
    assert c.post("/token", auth=("alice", PW)).status_code == 429  # and only one
    assert len(checks) == 5


def test_the_client_address_behind_trusted_proxies(rig, hashes, caplog):
    caplog.set_level(logging.INFO, logger="orchestrator.auth")
    app = auth_app(rig, hashes, server={"trusted_proxies": ["10.0.0.0/8", "fd00::/8"]})
    c = app.test_client()
    chain = {"X-Forwarded-For": "192.0.2.99, 203.0.113.9, 10.9.9.9"}  # 192.0.2.99: made up

    def failed_from(peer: str) -> str:
        caplog.clear()
        c.post("/token", auth=("alice", "x"), environ_base={"REMOTE_ADDR": peer}, headers=chain)
        return caplog.text.rsplit(" from ", 1)[1].strip()

    assert failed_from("10.1.2.3") == "203.0.113.9"  # right-most address not a proxy of ours
    assert failed_from("fd00::7") == "203.0.113.9"
    assert failed_from("198.51.100.1") == "198.51.100.1"  # an untrusted peer's header: ignored
    nets = ServerSettings(trusted_proxies=["10.0.0.0/8"]).proxy_networks
    assert client_address("10.0.0.1", "203.0.113.9", nets) == "203.0.113.9"
    assert client_address("10.0.0.1", "203.0.113.9:4711, 10.0.0.2", nets) == "203.0.113.9"
    assert client_address("10.0.0.1", "[2001:db8::1]:443", nets) == "2001:db8::1"
    assert client_address("10.0.0.1", "10.0.0.3, 10.0.0.2", nets) == "10.0.0.3"  # all ours
    assert client_address("10.0.0.1", "203.0.113.9, garbage", nets) == "10.0.0.1"
    assert client_address("10.0.0.1", None, nets) == "10.0.0.1"
    assert client_address("::ffff:10.0.0.1", "203.0.113.9", nets) == "203.0.113.9"
    assert client_address("203.0.113.1", "198.51.100.2", nets) == "203.0.113.1"
    assert client_address("10.0.0.1", "198.51.100.2", ()) == "10.0.0.1"  # default: none


def test_config_of_the_login_limits(hashes):
    def auth(**kw):  # noqa: ANN003, ANN202
        return config_from_dict({"auth": {"users": hashes, **kw}}, "fabric.yaml").auth

    assert (auth().max_failures, auth().lockout_seconds, auth().login_rate) == (5, 30, 5.0)
    with pytest.raises(
        ConfigError, match=r"auth\.lockout_seconds: must be an integer >= 0 and <= 300"
    ):
        auth(lockout_seconds=3600)  # a wait, never a long lockout
    with pytest.raises(ConfigError, match=r"auth\.login_rate: must be a number > 0"):
        auth(login_rate=0)
    with pytest.raises(ConfigError, match=r"server\.trusted_proxies\[0\]: must be an address"):
        config_from_dict({"server": {"trusted_proxies": ["proxy.example"]}})


def test_a_trusted_proxy_says_the_request_was_https(rig, hashes):
    proxied = {"REMOTE_ADDR": "10.0.0.2"}
    https = {"X-Forwarded-Proto": "https"}
    app = auth_app(rig, hashes, server={"trusted_proxies": ["10.0.0.0/24"]})
    _, login = sign_in(app, "http://localhost", proxied, https)
    assert "; Secure" in cookie_line(login, "fabric_token")
    _, login = sign_in(app, "http://localhost", {"REMOTE_ADDR": "192.0.2.9"}, https)
    assert "; Secure" not in cookie_line(login, "fabric_token")  # anyone may send the header
