"""The launcher: ``./script pm_file image_file vm_types [options]`` and its sub-commands."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from types import FrameType

from .config import (
    Config,
    check_pools,
    exposure_warnings,
    load_config,
    reach_warnings,
    sharing_warnings,
)
from .errors import ConfigError, FabricError
from .heap import keep_freed_memory
from .supervisor import WorkerLink

log = logging.getLogger("orchestrator")

# The largest request body waitress spools (to memory, then disk) before the app sees
# it; the app itself answers 413 with JSON past api/params.py MAX_BODY (1 MB).
MAX_SPOOLED = 16 * 2**20

USAGE = """\
./script PM_FILE IMAGE_FILE VM_TYPES [--config FILE] [--db URL] [--host ADDR] [--port N]
         [--threads N] [--workers N]
./script validate PM_FILE IMAGE_FILE VM_TYPES [--config FILE] [--host ADDR]
./script client [--url URL] [--json] COMMAND ...   (./script client --help)
./script hash-password                             (a hash for auth.users)
./script db upgrade|current [--db URL]             (the registry's schema)"""


def _serve_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="script", usage=USAGE, description="Run the fabric.")
    p.add_argument("pm_file")
    p.add_argument("image_file")
    p.add_argument("vm_types")
    p.add_argument("--config", help="YAML configuration (policy, ratios, SSH, pools)")
    p.add_argument("--db", help="SQLAlchemy URL of the registry (default: SQLite in state_dir)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--threads", type=int, default=16, help="request threads (of each worker)")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="serving processes sharing the listening socket (default 1: this process)",
    )
    p.add_argument("--log-level", default=os.environ.get("FABRIC_LOG_LEVEL", "INFO"))
    return p


def _validate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="script validate", usage=USAGE)
    p.add_argument("pm_file")
    p.add_argument("image_file")
    p.add_argument("vm_types")
    p.add_argument("--config")
    p.add_argument(
        "--host", default="127.0.0.1", help="the address the server will listen on (warnings)"
    )
    return p


def default_db_url(config: Config) -> str:
    return f"sqlite:///{Path(config.state_dir) / 'registry.db'}"


DB_EXAMPLES = "e.g. sqlite:////var/lib/fabric/registry.db or postgresql+psycopg://user@host/db"


def check_db_url(url: str, flag: str = "--db") -> None:
    """Refuse (ConfigError, one line) a registry URL SQLAlchemy cannot use, before
    anything is built: unparsable, an unknown database or a driver not installed, a
    SQLite database in memory (each connection would get its own), or a SQLite file
    whose directory is missing. Passwords are never shown."""
    from sqlalchemy import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    from .registry.database import sqlite_file

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"{flag} {url[:80]!r}: not a SQLAlchemy URL ({DB_EXAMPLES})") from None
    shown = f"{flag} {parsed.render_as_string(hide_password=True)!r}"
    try:
        dialect = parsed.get_dialect()
    except NoSuchModuleError:
        raise ConfigError(
            f"{shown}: SQLAlchemy knows no database {parsed.drivername!r} ({DB_EXAMPLES})"
        ) from None
    try:
        dialect.import_dbapi()
    except ImportError as e:
        raise ConfigError(f"{shown}: its driver is not installed ({e})") from None
    if parsed.get_backend_name() == "sqlite":
        path = sqlite_file(url)
        if path is None:
            raise ConfigError(
                f"{shown}: the registry needs a file (sqlite:////abs/path.db), not memory"
            )
        if path.is_dir():
            raise ConfigError(f"{shown}: {path} is a directory")
        if not path.parent.is_dir():
            raise ConfigError(f"{shown}: directory {path.parent} does not exist")


def prepare_state_dir(config: Config) -> None:
    """Create ``state_dir`` if it is missing and check that files can be written in it
    (ConfigError, one line, naming the config's key)."""
    import tempfile

    path = Path(config.state_dir)
    where = config.locate("state_dir")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ConfigError(f"{where}: {path} exists and is not a directory") from None
    except OSError as e:
        raise ConfigError(f"{where}: {path} cannot be created ({e.strerror})") from None
    try:
        fd, probe = tempfile.mkstemp(dir=path, prefix=".fabric-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ConfigError(f"{where}: cannot write in {path} ({e.strerror})") from None


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (waitress listens on it): a port in use or an
    address not of this machine is refused (ConfigError) before anything is built."""
    where = f"--host {host} --port {port}"
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port {port}: must be 0..65535 (0: any free port)")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (socket.gaierror, UnicodeError) as e:
        raise ConfigError(f"--host {host[:80]!r}: not an address of this machine ({e})") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise ConfigError(f"{where}: cannot listen there ({e.strerror})") from None
    return sock


def cmd_validate(argv: list[str]) -> int:
    from .inventory import load_hosts, load_images, load_types, validate_files
    from .model import Inventory

    args = _validate_parser().parse_args(argv)
    problems = list(validate_files(args.pm_file, args.image_file, args.vm_types))
    warnings: list[str] = []
    if args.config is None:
        warnings = exposure_warnings(False, args.host)
    if args.config:
        try:
            config = load_config(args.config)
            warnings.extend(exposure_warnings(config.auth.enabled, args.host))
            warnings.extend(sharing_warnings(config))
            with contextlib.suppress(FabricError):  # a bad pm file is reported above
                hosts = load_hosts(args.pm_file)
                warnings += reach_warnings(config, ((h.label, h.network, h.uri) for h in hosts))
            if config.pools:
                try:
                    images, types = load_images(args.image_file), load_types(args.vm_types)
                except FabricError:
                    pass  # reported above; the pools cannot be checked against them
                else:
                    check_pools(config, Inventory(hosts=(), images=images, types=types))
        except ConfigError as e:
            problems.extend(str(e).splitlines())
    for line in [*problems, *warnings]:
        print(line, file=sys.stderr)
    if problems:
        return 1
    print("all files are valid" + (f" ({len(warnings)} warning(s))" if warnings else ""))
    return 0


def _first_line(e: Exception) -> str:
    """The first line of a database error, without SQLAlchemy's statement and link."""
    text = str(getattr(e, "orig", None) or e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _refuse(e: FabricError) -> int:
    """Print every line of ``e`` (a config error may name several problems); exit 2."""
    for line in str(e).splitlines():
        print(f"error: {line}", file=sys.stderr)
    return 2


def _read_password(prompt: str) -> str:
    """A password from the terminal (not echoed), or one line of standard input when
    it is not a terminal (a script's pipe). EOFError when the input has ended."""
    import getpass

    if sys.stdin.isatty():
        return getpass.getpass(prompt)
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line.removesuffix("\n").removesuffix("\r")


def cmd_hash_password(argv: list[str]) -> int:
    """Print a password hash for the config's ``auth.users`` (the password is read twice)."""
    argparse.ArgumentParser(
        prog="script hash-password",
        description="Print a password hash for the config's auth.users. The password is "
        "read twice: from the terminal, not echoed, or as two lines of standard input "
        "when it is not a terminal.",
    ).parse_args(argv)
    from .auth import hash_password

    try:
        first = _read_password("password: ")
        if len(first) < 8:
            print("error: use at least 8 characters", file=sys.stderr)
            return 2
        again = _read_password("again: ")
    except (EOFError, KeyboardInterrupt):
        print("error: no password given (the input ended)", file=sys.stderr)
        return 2
    if again != first:
        print("error: the two passwords differ", file=sys.stderr)
        return 2
    print(hash_password(first))
    return 0


def cmd_db(argv: list[str]) -> int:
    """``./script db upgrade|current [--db URL] [--config FILE]``: the registry's schema."""
    p = argparse.ArgumentParser(prog="script db")
    p.add_argument("action", choices=["upgrade", "current"])
    p.add_argument("--db", help="SQLAlchemy URL (default: SQLite in state_dir)")
    p.add_argument("--config")
    args = p.parse_args(argv)
    from .registry import make_engine, migrate

    try:
        config = load_config(args.config)
    except FabricError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from sqlalchemy.exc import SQLAlchemyError

    url = args.db or default_db_url(config)
    try:
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        check_db_url(url)
    except OSError as e:
        print(f"error: {url}: its directory cannot be created ({e.strerror})", file=sys.stderr)
        return 2
    except FabricError as e:
        return _refuse(e)
    engine = make_engine(url)
    try:
        if args.action == "upgrade":
            migrate.upgrade(engine)
        have, want = migrate.current(engine), migrate.head(engine)
        print(f"schema revision: {have or 'none'} (this fabric needs {want})")
        return 0 if have == want else 1
    except SQLAlchemyError as e:
        print(f"error: the registry cannot be opened: {_first_line(e)}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()


MAX_WORKERS = 64


def cmd_serve(argv: list[str]) -> int:
    args = _serve_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # paramiko logs a guest still booting as an ERROR with a traceback; our own
    # messages say what failed and why.
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)
    keep_freed_memory()  # placement's arrays reuse the heap (orchestrator/heap.py)
    from .inventory import load_inventory

    # Every setting is checked before anything is built: no state dir, registry
    # file, thread or heartbeat for a setting that cannot work.
    try:
        if not 1 <= args.threads <= 1024:
            raise ConfigError(f"--threads {args.threads}: must be 1..1024")
        if not 1 <= args.workers <= MAX_WORKERS:
            raise ConfigError(f"--workers {args.workers}: must be 1..{MAX_WORKERS}")
        config = load_config(args.config)
        inventory = load_inventory(args.pm_file, args.image_file, args.vm_types)
        check_pools(config, inventory)
        if args.db:
            check_db_url(args.db)
        sock = listen(args.host, args.port)
    except FabricError as e:
        return _refuse(e)
    for warning in exposure_warnings(config.auth.enabled, args.host):
        log.warning("%s", warning)
    try:
        prepare_state_dir(config)
    except FabricError as e:
        sock.close()
        return _refuse(e)
    url = args.db or default_db_url(config)
    if args.workers == 1:
        return _serve(args, config, inventory, sock, url)
    import shutil
    import tempfile

    # not from .api.status: prometheus_client must be imported after the variable
    # is set (it picks its way of keeping values at import), so in the workers only
    from .supervisor import CURSOR_FILE, SHARED_METRICS, Supervisor

    # /metrics summed over the workers: prometheus_client's files per worker, here
    metrics = tempfile.mkdtemp(prefix=".metrics-", dir=config.state_dir)
    try:
        last_event = _prepare_registry(config, inventory, url)
        Path(metrics, CURSOR_FILE).write_text(str(last_event))
        os.environ[SHARED_METRICS] = metrics  # inherited by the workers
        return Supervisor(
            args.workers,
            lambda worker: _serve(args, config, inventory, sock, url, worker=worker),
            url=f"http://{args.host}:{sock.getsockname()[1]}",
            after_fork=sock.close,  # the workers accept on it; the parent never does
        ).run()
    except FabricError as e:
        sock.close()
        return _refuse(e)
    finally:
        shutil.rmtree(metrics, ignore_errors=True)


def _opening_error(url: str, e: Exception) -> ConfigError:
    from sqlalchemy import make_url

    shown = make_url(url).render_as_string(hide_password=True)
    return ConfigError(f"the registry {shown} cannot be opened: {_first_line(e)}")


def _prepare_registry(config: Config, inventory: object, url: str) -> int:
    """Before the workers start (--workers N): the schema brought up and the three
    files synced once, by the parent; each worker then finds them done. Nothing of
    it (engine, connections, lock file) is left open to be inherited. Returns the
    last event's id (/metrics observes the events after it)."""
    from sqlalchemy.exc import SQLAlchemyError

    from .registry import Registry

    registry: Registry | None = None
    try:
        registry = Registry(url, dead_after=config.cluster.dead_after)
        with registry.startup_lock():
            registry.create_schema()
            registry.inventory.sync(inventory)  # type: ignore[arg-type]
        return registry.events.last_id()
    except SQLAlchemyError as e:  # e.g. a database server that is down
        raise _opening_error(url, e) from None
    finally:
        if registry is not None:
            registry.close()


def _serve(
    args: argparse.Namespace,
    config: Config,
    inventory: object,
    sock: socket.socket,
    url: str,
    worker: WorkerLink | None = None,
) -> int:
    """Serve on ``sock`` until SIGTERM/SIGINT: this process alone, or one of the
    workers of ``--workers N`` (``worker``: its link to the parent)."""
    from sqlalchemy.exc import SQLAlchemyError
    from waitress import create_server, wasyncore

    from .api import create_app
    from .model import Lease
    from .registry import Registry
    from .services import build_services

    registry: Registry | None = None
    try:
        registry = Registry(url, dead_after=config.cluster.dead_after)
        services = build_services(config, registry, inventory, pm_file=args.pm_file)  # type: ignore[arg-type]
    except (FabricError, SQLAlchemyError) as e:
        sock.close()
        if registry is not None:
            registry.close()
        if isinstance(e, SQLAlchemyError):  # e.g. a database server that is down
            e = _opening_error(url, e)
        return _refuse(e)
    if worker is not None and worker.count > 1:
        # The login rate is the server's: each of N workers takes 1/N of it.
        services.auth.share_login_rate(worker.count)
    cluster = services.cluster
    cluster.join()
    cluster.start()  # heartbeats from now on: a long start-up must not lose the leases
    if cluster.holds(Lease.DISCOVERY):
        services.start_up()
    else:
        log.info("another live server runs discovery; this one starts without it")
    if worker is None or worker.index == 0:
        for h in registry.hosts.list():
            log.info("pmid %d %s: %s %s", h.id, h.label, h.status, h.reason or "")
    services.start_background()

    from .api import origin

    # A worker listens only once every worker is ready: until then a client is
    # refused (as by a single server still starting), not left waiting in the queue.
    if worker is not None and not worker.ready_and_wait():
        worker.stopping.set()  # stopping before it served (a signal, another worker failed)
    app = create_app(services, listen=(args.host, args.port or None))
    sockets: dict = {}  # waitress's socket map: the loop below polls it
    server = create_server(
        app,
        map=sockets,
        sockets=[sock],
        threads=args.threads,
        # waitress's own refusal of a body this large is plain text; up to here the
        # app answers 413 with JSON (params.MAX_BODY), and the spool to disk stays small
        max_request_body_size=MAX_SPOOLED,
    )
    origin.listening(app, args.host, int(sock.getsockname()[1]))  # the names it answers to
    stopping = threading.Event() if worker is None else worker.stopping

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        stopping.set()

    reload_wanted = threading.Event()

    def on_hangup(_signum: int, _frame: FrameType | None) -> None:
        reload_wanted.set()  # done by the loop below, not inside the signal handler

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_hangup)
    if worker is None:
        log.info("serving on http://%s:%s", args.host, server.effective_port)
        print(f"fabric listening on http://{args.host}:{server.effective_port}", flush=True)
    elif not stopping.is_set():
        log.info("worker %d (pid %d) serving", worker.index, os.getpid())
    try:
        # waitress's own loop, a slice at a time in this thread, so that a signal
        # ends it between two polls and nothing is closed under its feet.
        while not stopping.is_set():
            wasyncore.loop(timeout=0.5, map=sockets, count=1)
            if reload_wanted.is_set():
                reload_wanted.clear()
                log.info("SIGHUP: reading %s again", args.pm_file)
                # in a thread of its own: discovering a new host must not stall the loop
                threading.Thread(
                    target=services.reloader.reload_logged, name="pm-reload", daemon=True
                ).start()
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second signal must not cut this short
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        # The loop no longer accepts; let requests in flight finish (bounded) while
        # their sockets are still open, then close everything and stop the rest.
        server.task_dispatcher.shutdown(cancel_pending=True, timeout=10)
        server.close()
        services.stop()  # the cluster last: leases go once this server's work has stopped
        registry.close()
        log.info("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] == "validate":
        return cmd_validate(argv[1:])
    if argv[0] == "db":
        return cmd_db(argv[1:])
    if argv[0] == "hash-password":
        return cmd_hash_password(argv[1:])
    if argv[0] == "client":
        from .client import main as client_main

        return client_main(argv[1:])
    if argv[0] == "serve":
        argv = argv[1:]
    return cmd_serve(argv)


if __name__ == "__main__":
    sys.exit(main())
