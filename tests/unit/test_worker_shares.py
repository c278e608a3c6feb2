"""What each of ``--workers N`` processes takes of a server-wide limit."""

from __future__ import annotations

from orchestrator.auth import AuthService
from orchestrator.config import config_from_dict


def _service(rate: float) -> AuthService:
    config = config_from_dict({"auth": {"login_rate": rate}})
    return AuthService(None, config.auth)  # type: ignore[arg-type] - no store needed here


def test_each_of_n_workers_takes_one_nth_of_the_login_rate():
    alone, shared = _service(30), _service(30)
    shared.share_login_rate(3)
    assert alone.limit.rate == 30 and alone.limit.burst == 60
    assert shared.limit.rate == 10 and shared.limit.burst == 20  # x3 workers: 30/s, 60 at once
