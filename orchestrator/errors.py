"""The fabric's exception tree. Each class carries the HTTP status the API answers with."""

from __future__ import annotations


class FabricError(Exception):
    """Base of every error the fabric reports to a user; ``status`` is its HTTP code."""

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class BadRequest(FabricError):
    """A parameter is missing, malformed or out of range."""

    status = 400


class NotFound(FabricError):
    """An id names nothing the fabric knows."""

    status = 404


class Forbidden(FabricError):
    """The caller does not hold what the call needs (e.g. the reservation)."""

    status = 403


class Conflict(FabricError):
    """The call does not fit the object's current state."""

    status = 409


class NoValidHost(FabricError):
    """No host can take the request right now; the caller may retry."""

    status = 503
    retry_after = 5

    def __init__(self, message: str, report: list[dict] | None = None) -> None:
        super().__init__(message)
        self.report = report or []


class Unavailable(FabricError):
    """Nothing is free right now (e.g. an empty pool); the caller should retry."""

    status = 503
    retry_after = 5


class HostUnreachable(FabricError):
    """A physical machine could not be reached or refused the call."""

    status = 502

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"host {host}: {reason}")
        self.host = host
        self.reason = reason


class HostTimeout(HostUnreachable):
    """A physical machine did not answer within the time limit."""

    status = 504


class GuestError(FabricError):
    """A guest did not do what the fabric asked of it over SSH."""

    status = 502


class HypervisorError(FabricError):
    """libvirt on a host refused an operation (the host itself answered)."""

    status = 502


class InventoryError(FabricError):
    """An input file is malformed. The message names the file and line."""

    status = 400

    def __init__(self, path: str, line: int | None, problem: str) -> None:
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: {problem}")
        self.path = str(path)
        self.line = line
        self.problem = problem


class ConfigError(FabricError):
    """The configuration file is malformed. The message names the file and key."""

    status = 400


class ImageUnavailable(FabricError):
    """An image's file could not be read from where the images file says it is."""

    status = 502


class Unauthorized(FabricError):
    """No credentials, or credentials that are not valid (a missing token, a bad password)."""

    status = 401


class TooManyRequests(FabricError):
    """Too many failed attempts; the caller must wait ``retry_after`` seconds."""

    status = 429
    retry_after = 60
