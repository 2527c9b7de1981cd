"""The ``conductor`` command: ``serve``, ``declare-queues``, ``db upgrade``, ``demo``.

Configuration is read here, once: flags first, then ``CONDUCTOR_TRANSPORT_URL`` /
``CONDUCTOR_DATABASE_URL`` / ``CONDUCTOR_QUORUM_QUEUES``. Nothing else in the package reads
the environment.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.metadata
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from urllib.parse import unquote, urlsplit

from sqlalchemy.engine import make_url

import transport
from conductor import db, namespaces
from conductor.service import DEFAULT_WORKERS, Conductor
from conductor.unit_of_work import current_request

LOG = logging.getLogger("conductor")

EXIT_USAGE = 2
EXIT_FAILURE = 1

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

#: Net allocations of container objects between two young-generation collections in a
#: serving conductor (the interpreter's default is 700).
GC_YOUNG_THRESHOLD = 10_000


def _version() -> str:
    try:
        return importlib.metadata.version("conductor-objects")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "unknown"


class _RequestIdFilter(logging.Filter):
    """Puts the id of the request in scope on every record (``-`` outside any request).

    A record may bring its own (``extra={"request_id": ...}``, as the RPC server's lines
    about a request do); otherwise the conductor's request, then the transport's.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            request_id = current_request.get()
            if request_id == "-":
                request_id = transport.current_request_id() or "-"
            record.request_id = request_id
        return True


class _RedactingFormatter(logging.Formatter):
    """Replaces the passwords of the configured URLs in every formatted line.

    NOTE: the service masks URLs itself; this is the net under errors raised by libraries
    that quote a URL back (a driver's "unsupported URL 'amqps://user:secret@...'").
    """

    def __init__(self, fmt: str, secrets: Sequence[str]) -> None:
        super().__init__(fmt)
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def _passwords(*urls: str | None) -> list[str]:
    """The passwords in ``urls``, as written and percent-decoded."""
    found: list[str] = []
    for url in urls:
        if not url:
            continue
        try:
            password = urlsplit(url).password
        except ValueError:
            continue
        if password:
            found += [password, unquote(password)]
    return found


def _setup_logging(level: str, secrets: Sequence[str] = ()) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter())
    handler.setFormatter(
        _RedactingFormatter(
            "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s", secrets
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def _database_problem(url: str, exc: BaseException) -> str:
    """One line saying why ``url`` cannot be used and what to do about it."""
    masked = db.mask_url(url)
    if isinstance(exc, db.SchemaNotAtHead):
        return str(exc)
    cause: BaseException | None = exc
    while cause is not None and getattr(cause, "orig", None) is None and cause.__cause__:
        cause = cause.__cause__
    orig = getattr(cause, "orig", None) or exc
    sqlstate = getattr(orig, "sqlstate", None)
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    try:
        parts = make_url(url)
    except Exception:  # noqa: BLE001 - an unparseable URL: say so
        return "the database URL cannot be parsed; fix --database-url or CONDUCTOR_DATABASE_URL"
    where = f"{parts.host or 'localhost'}:{parts.port or 5432}"
    if sqlstate == "3D000" or ("database" in text and "does not exist" in text):
        return (
            f"the database {parts.database!r} does not exist on {where} ({masked}); create it "
            f"(createdb -h {parts.host or 'localhost'} -U {parts.username or 'postgres'} "
            f"{parts.database}) or fix --database-url / CONDUCTOR_DATABASE_URL"
        )
    if (
        sqlstate in {"28P01", "28000"}
        or "authentication failed" in text
        or ("role" in text and "does not exist" in text)
    ):
        return (
            f"the database at {where} refused user {parts.username!r} ({masked}): {text}; "
            "fix the user or password in --database-url / CONDUCTOR_DATABASE_URL"
        )
    if "Connection refused" in text or "could not connect" in text or "timeout" in text.lower():
        return (
            f"no database answers at {where} ({masked}): {text}; start PostgreSQL there or fix "
            "the host and port in --database-url / CONDUCTOR_DATABASE_URL"
        )
    if "unable to open database file" in text:
        return (
            f"cannot open the SQLite file {parts.database!r} ({masked}): its folder must exist "
            "and be writable; fix --database-url / CONDUCTOR_DATABASE_URL"
        )
    return f"cannot use the database {masked}: {text}"


def _broker_problem(url: str, exc: BaseException) -> str:
    """One line saying why the broker at ``url`` cannot be used, naming what to fix."""
    text = " ".join(str(exc).split())
    try:
        parts = urlsplit(url.split(";", 1)[0])
        where = f"{parts.hostname or 'localhost'}:{parts.port or 5672}"
        user = unquote(parts.username or "guest")
    except ValueError:
        return f"{text}; fix --transport-url / CONDUCTOR_TRANSPORT_URL"
    fix = "--transport-url / CONDUCTOR_TRANSPORT_URL"
    if "ACCESS_REFUSED" in text or "403" in text and "Login" in text:
        return (
            f"the broker at {where} refused user {user!r} (wrong user or password); "
            f"fix the credentials in {fix}"
        )
    if "NOT_ALLOWED" in text or "vhost" in text.lower() and "not" in text.lower():
        return f"the broker at {where} refused the virtual host: {text}; fix it in {fix}"
    if "cannot reach the broker" in text or "Connection refused" in text:
        return f"no broker answers at {where}: {text}; start RabbitMQ there or fix {fix}"
    return text


def _int_env(name: str) -> int | None:
    value = os.environ.get(name)
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"conductor: {name}={value!r} is not a port number") from None


def _require(value: str | None, flag: str, env: str) -> str:
    if not value:
        raise SystemExit(
            f"conductor: no {flag.lstrip('-').replace('-', ' ')} given; pass {flag} or set {env}"
        )
    return value


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _raise_young_threshold() -> None:
    """Collect the young generation less often (unless collection is off or rarer).

    NOTE: one message of 256 gets builds its decoded requests, rows, results and replies
    (tens of thousands of containers, alive until its replies are sent): at the default
    threshold of 700 that was a collection every ~35 requests, each walking that live
    message and promoting it, about 2-3 us of CPU per get (10%) in a whole-message
    micro-benchmark; with 10,000 collections nearly stop (what a message allocates is
    mostly freed by the time the next one starts). Cycles are still collected.
    """
    young, middle, old = gc.get_threshold()
    if 0 < young < GC_YOUNG_THRESHOLD:
        gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


_QUORUM_HELP = (
    "declare the topic's queues as RabbitMQ quorum queues, replicated across a "
    "cluster's nodes (env CONDUCTOR_QUORUM_QUEUES=true; same as "
    "?quorum_queues=true in the URL). Every conductor of a topic must agree"
)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="conductor",
        description="Serve versioned-object persistence over RPC (nova-conductor style).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run a conductor on a topic until SIGTERM")
    serve.add_argument(
        "--transport-url",
        default=os.environ.get("CONDUCTOR_TRANSPORT_URL"),
        help="broker URL, e.g. amqp://guest:guest@127.0.0.1:5672// (env CONDUCTOR_TRANSPORT_URL)",
    )
    serve.add_argument(
        "--database-url",
        default=os.environ.get("CONDUCTOR_DATABASE_URL"),
        help="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db (env CONDUCTOR_DATABASE_URL)",
    )
    serve.add_argument("--topic", default="conductor", help="RPC topic (default: conductor)")
    serve.add_argument("--server", default=None, help="this conductor's name (default: host name)")
    serve.add_argument(
        "--quorum-queues",
        action="store_true",
        default=_env_flag("CONDUCTOR_QUORUM_QUEUES"),
        help=_QUORUM_HELP,
    )
    serve.add_argument(
        "--objects",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE for its own objects and models (repeatable)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=DEFAULT_WORKERS,
        help=f"requests served at once (default: {DEFAULT_WORKERS})",
    )
    serve.add_argument(
        "--metrics-port",
        type=int,
        default=_int_env("CONDUCTOR_METRICS_PORT"),
        help="serve Prometheus /metrics and /healthz on this port "
        "(env CONDUCTOR_METRICS_PORT; off when absent)",
    )
    serve.add_argument(
        "--metrics-host",
        default=os.environ.get("CONDUCTOR_METRICS_HOST", "127.0.0.1"),
        help="address of the metrics port (env CONDUCTOR_METRICS_HOST; default: 127.0.0.1)",
    )
    serve.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=LOG_LEVELS,
        help="one of " + ", ".join(LOG_LEVELS) + " (default: INFO)",
    )
    serve.add_argument(
        "--allow-admin-context",
        action="store_true",
        help="accept request contexts that claim admin (is_admin); refused "
        "by default because any caller can set the flag",
    )
    serve.add_argument(
        "--object-namespace",
        action="append",
        default=[],
        metavar="NAMESPACE[:PREFIX]",
        help="also read and answer objects of this oslo.versionedobjects namespace as ours, "
        "e.g. nova (keys nova_object.*); nova-style 3.x requests carrying no object are "
        "answered in it when it is the only one given",
    )
    serve.add_argument(
        "--project-scoping",
        action="store_true",
        default=os.environ.get("CONDUCTOR_PROJECT_SCOPING", "").lower()
        in {"1", "true", "yes", "on"},
        help="a request context reads and changes only its own project's "
        "instances (admin contexts: all); env CONDUCTOR_PROJECT_SCOPING=1",
    )

    declare = sub.add_parser(
        "declare-queues",
        help="declare a topic's queues ahead of its first conductor, so requests and casts "
        "sent before it starts wait for it",
    )
    declare.add_argument(
        "--transport-url",
        default=os.environ.get("CONDUCTOR_TRANSPORT_URL"),
        help="broker URL (env CONDUCTOR_TRANSPORT_URL); queue options such "
        "as ?topic_queue_message_ttl=S go in its query",
    )
    declare.add_argument(
        "--topic", action="append", required=True, help="topic whose queue to declare (repeatable)"
    )
    declare.add_argument(
        "--server",
        action="append",
        default=[],
        help="also declare <topic>.<server> for this server name (repeatable)",
    )
    declare.add_argument(
        "--quorum-queues",
        action="store_true",
        default=_env_flag("CONDUCTOR_QUORUM_QUEUES"),
        help=_QUORUM_HELP,
    )

    dbp = sub.add_parser("db", help="database schema commands")
    dbsub = dbp.add_subparsers(dest="db_command", required=True)
    up = dbsub.add_parser(
        "upgrade", help="migrate the database to the newest schema (alembic head)"
    )
    up.add_argument(
        "--database-url",
        default=os.environ.get("CONDUCTOR_DATABASE_URL"),
        help="SQLAlchemy URL (env CONDUCTOR_DATABASE_URL)",
    )

    demo = sub.add_parser(
        "demo", help="an embedded conductor and a compute workload; no servers needed"
    )
    demo.add_argument(
        "--instances", type=int, default=500, help="instances to create (default: 500)"
    )
    demo.add_argument(
        "--in-flight",
        type=int,
        default=100,
        help="operations kept in flight at once (default: 100)",
    )
    return parser


def _serve(args: argparse.Namespace) -> int:
    _setup_logging(args.log_level, _passwords(args.transport_url, args.database_url))
    transport_url = _require(args.transport_url, "--transport-url", "CONDUCTOR_TRANSPORT_URL")
    database_url = _require(args.database_url, "--database-url", "CONDUCTOR_DATABASE_URL")
    import objects

    objects.register_all()
    # Like `python -m`, find the user's --objects modules in the working directory.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for module in args.objects:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            LOG.error("cannot import --objects %s: %s", module, exc)
            return EXIT_USAGE
    try:
        db.check_at_head(database_url)
    except Exception as exc:  # noqa: BLE001 - unusable database: one clear line, no traceback
        LOG.error("%s", _database_problem(database_url, exc))
        return EXIT_FAILURE

    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        LOG.info("received %s: stopping", signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    try:
        object_namespaces = dict(namespaces.parse(spec) for spec in args.object_namespace)
    except ValueError as exc:
        LOG.error("%s", exc)
        return EXIT_FAILURE
    service = Conductor(
        transport_url,
        database_url,
        args.topic,
        server=args.server,
        workers=args.workers,
        auto_upgrade=False,
        quorum_queues=args.quorum_queues,
        allow_admin_context=args.allow_admin_context,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        project_scoping=args.project_scoping,
        object_namespaces=object_namespaces,
    )
    try:
        service.start()
    except Exception as exc:  # noqa: BLE001 - report and exit non-zero
        LOG.error("conductor could not start: %s", _broker_problem(transport_url, exc))
        return EXIT_FAILURE
    # NOTE: the modules, engine and connections loaded so far live as long as the process.
    # Freezing them out of the collector's view makes each full collection walk only what
    # requests allocate: about 1.4x more gets per second through one conductor.
    gc.freeze()
    _raise_young_threshold()
    print(f"conductor: serving topic {args.topic!r}", flush=True)
    try:
        while not stopping.wait(1.0):
            pass
    finally:
        # NOTE: stop() stops consuming first, then lets in-flight requests finish and
        # be acknowledged; unacknowledged ones go back to the queue for the next conductor.
        service.stop()
    return 0


def _declare_queues(args: argparse.Namespace) -> int:
    _setup_logging("WARNING", _passwords(args.transport_url))
    url = _require(args.transport_url, "--transport-url", "CONDUCTOR_TRANSPORT_URL")
    import transport

    try:
        rpc_transport = transport.get_transport(
            url, transport.TransportConfig(quorum_queues=args.quorum_queues)
        )
    except ValueError as exc:
        LOG.error("%s", exc)
        return EXIT_USAGE
    try:
        for topic in args.topic:
            for server in [None, *args.server]:
                transport.declare_topic(rpc_transport, topic, server=server)
                name = f"{topic}.{server}" if server else topic
                kind = "quorum" if rpc_transport.config.quorum_queues else "classic"
                print(f"declared {kind} queue {name!r}", flush=True)
    except transport.exceptions.MessagingException as exc:
        LOG.error("%s", exc)
        return EXIT_FAILURE
    finally:
        rpc_transport.cleanup()
    return 0


def _db_upgrade(args: argparse.Namespace) -> int:
    logging.basicConfig(level="WARNING", format="%(levelname)s %(message)s")
    url = _require(args.database_url, "--database-url", "CONDUCTOR_DATABASE_URL")
    try:
        before = db.current_revision(url)
        db.upgrade(url)
        after = db.current_revision(url)
    except Exception as exc:  # noqa: BLE001 - one line naming the fix, no traceback
        print(f"conductor db upgrade: {_database_problem(url, exc)}", file=sys.stderr)
        return EXIT_FAILURE
    if before == after:
        print(f"database {db.mask_url(url)} already at head ({after})")
    else:
        print(f"database {db.mask_url(url)} upgraded from {before or 'empty'} to {after}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``conductor`` console script."""
    args = _build_parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "db":
        return _db_upgrade(args)
    if args.command == "declare-queues":
        return _declare_queues(args)
    if args.command == "demo":
        from conductor import demo

        return demo.run(instances=args.instances, in_flight=args.in_flight)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
