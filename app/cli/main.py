"""`herald`: migrate, users, tokens, demo data, emit, tail, and the outbox's operator commands."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from app.cli import outbox, tail
from app.cli.common import (
    Failure,
    UsageError,
    database_label,
    open_database,
    sqlite_path,
    stream_name,
)
from app.core.errors import HeraldError, InvalidInput, TooLarge

if TYPE_CHECKING:  # settings (pydantic) load when a command runs: `herald --help` is quick
    from app.core.settings import Settings

ROLES = ("client", "technician", "admin")


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from app.core.migrate import upgrade

    path = sqlite_path(settings.database_url)
    if path is not None:  # the one command that may create the file (and its directory)
        path.parent.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)
    print(f"database at head: {database_label(settings.database_url)}", file=sys.stderr)
    return 0


def cmd_user_add(args: argparse.Namespace, settings: Settings) -> int:
    from app.portal import projects

    with open_database(settings).begin() as session:
        user = projects.create_user(session, email=args.email, role=args.role,
                                    name=args.name or "")
        print(user.id)
    return 0


def cmd_token(args: argparse.Namespace, settings: Settings) -> int:
    from app.core.settings import parse_duration
    from app.portal.auth import mint
    from app.portal.models import User

    try:
        ttl = parse_duration(args.ttl)
    except ValueError as exc:
        raise UsageError(f"--ttl: {exc}") from None
    if args.service is not None:
        print(mint(secret=settings.secret, sub=args.service, email=f"{args.service}@services",
                   role="service", ttl=ttl))
        return 0
    with open_database(settings)() as session:
        user = session.get(User, args.user)
        if user is None:
            raise Failure(f"no user with id {args.user}")
        print(mint(secret=settings.secret, sub=str(user.id), email=user.email, role=user.role,
                   ttl=ttl))
    return 0


def cmd_seed(args: argparse.Namespace, settings: Settings) -> int:
    from app.portal.seed import seed

    summary = seed(open_database(settings, nudge=True))
    print(json.dumps(summary) if args.json else "\n".join(f"{k}: {v}" for k, v in summary.items()))
    return 0


def _refuse_constant(name: str) -> float:
    raise UsageError(f"--data holds {name}, which JSON has not")


def cmd_emit(args: argparse.Namespace, settings: Settings) -> int:
    """Append one event as `POST /api/events` does: the same checks, the same errors."""
    from app.outbox import publish

    try:
        data = json.loads(args.data, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--data is not JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise UsageError("--data must be a JSON object")
    spec = publish.EventSpec(args.stream, args.type, data)
    try:
        publish.validate(spec)
    except (InvalidInput, TooLarge) as exc:
        raise UsageError(f"{exc.code}: {exc.message}") from None
    with open_database(settings, nudge=True).begin() as session:
        [published] = publish.publish_many(session, [spec])
    record = published.event
    print(json.dumps({"id": record.id, "stream": record.stream, "offset": record.offset}))
    return 0


def _core_commands(sub: Any) -> None:
    sub.add_parser("migrate", help="create or upgrade the database's tables (prints which "
                                   "database)").set_defaults(fn=cmd_migrate)

    user = sub.add_parser("user", help="manage users").add_subparsers(dest="user_cmd",
                                                                      required=True)
    add = user.add_parser("add", help="create a user; prints its id")
    add.add_argument("--email", required=True, help="the user's email (unique)")
    add.add_argument("--role", required=True, choices=ROLES, help="the user's role")
    add.add_argument("--name", default="", help="a display name")
    add.set_defaults(fn=cmd_user_add)

    token = sub.add_parser("token", help="mint an access token; prints it")
    who = token.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", type=int, metavar="ID", help="a token for this user")
    who.add_argument("--service", metavar="NAME",
                     help="a service token (publishes with POST /api/events)")
    token.add_argument("--ttl", default="1h", help="lifetime, e.g. 15m, 1h, 7d (default 1h)")
    token.set_defaults(fn=cmd_token)

    seed = sub.add_parser("seed", help="create demo users, projects and tickets")
    seed.add_argument("--json", action="store_true", help="one JSON object on stdout")
    seed.set_defaults(fn=cmd_seed)

    emit = sub.add_parser("emit", help="append one event to a stream (as POST /api/events)")
    emit.add_argument("--stream", required=True, type=stream_name,
                      help="user-ID, project-ID, ticket-ID, clients, technicians or admins")
    emit.add_argument("--type", required=True, help="the event type, e.g. invoice-issued")
    emit.add_argument("--data", default="{}", help="the payload, a JSON object (default {})")
    emit.set_defaults(fn=cmd_emit)


# Every command group, in the order `herald --help` lists them.
COMMANDS: tuple[Callable[[Any], None], ...] = (_core_commands, tail.register, outbox.register)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="herald", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for register in COMMANDS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    from app.core.settings import get_settings

    settings = get_settings()
    from app.core import logs

    logs.setup("WARNING")
    try:
        return int(args.fn(args, settings))
    except UsageError as exc:
        print(f"herald: {exc}", file=sys.stderr)
        return 2
    except (Failure, HeraldError) as exc:
        print(f"herald: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one line, not a traceback
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(f"herald: failed: {type(exc).__name__}: {first}", file=sys.stderr)
        return 1


__all__ = ["COMMANDS", "build_parser", "main"]
