"""The client's HTTP calls to the fabric, and ClientError: a message and an exit status."""

from __future__ import annotations

import re
from typing import Any

import requests

DEFAULT_URL = "http://127.0.0.1:5000"
TOKEN_HEADER = "X-Auth-Token"  # noqa: S105 - a header name, not a secret


class ClientError(Exception):
    """A failed call: ``message`` for stderr, ``code`` for the exit status."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class Api:
    def __init__(self, url: str, token: str | None, timeout: float) -> None:
        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.session.headers["Accept"] = "application/json"
        if token:
            self.session.headers[TOKEN_HEADER] = token
        self.timeout = timeout

    def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
        auth: tuple[str, str] | None = None,
    ) -> Any:
        params = {k: v for k, v in (params or {}).items() if v is not None}
        body = None if data is None else {k: v for k, v in data.items() if v is not None}
        try:
            resp = self.session.request(
                method,
                self.url + path,
                params=params or None,
                json=body,
                auth=auth,
                timeout=self.timeout,
            )
        except requests.Timeout:
            raise ClientError(f"{self.url} did not answer within {self.timeout:g} s", 2) from None
        except requests.RequestException as e:
            raise ClientError(f"cannot reach the fabric at {self.url}: {_reason(e)}", 2) from None
        try:
            payload = resp.json()
        except ValueError:
            payload = None
        if resp.status_code >= 400:
            message = payload.get("error") if isinstance(payload, dict) else None
            if not message:
                message = f"HTTP {resp.status_code} {resp.reason or ''}".strip()
            retry = resp.headers.get("Retry-After")
            if retry:
                message += f" (retry after {retry} s)"
            raise ClientError(message, 2 if resp.status_code >= 500 else 1)
        if payload is None:
            if resp.headers.get("Content-Type", "").startswith("text/"):
                return resp.text
            raise ClientError(f"{method} {path}: the answer is not JSON", 2)
        return payload

    def get(self, path: str, **params: Any) -> Any:
        return self.call("GET", path, params=params)

    def post(self, path: str, **data: Any) -> Any:
        return self.call("POST", path, data=data)


def _reason(e: Exception) -> str:
    """The useful part of a connection error ("Connection refused"), without urllib3's noise."""
    text = str(e)
    found = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    if found:
        return found.group(1).strip()
    return text or type(e).__name__
