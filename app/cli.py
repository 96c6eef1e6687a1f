"""`herald`: migrate, users, tokens, demo data, emit, tail, and the outbox's operator commands."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from app.errors import HeraldError
from app.settings import Settings, get_settings, parse_duration


class UsageError(Exception):
    """Bad command-line usage (exit 2)."""


class Failure(Exception):
    """The command could not do its job (exit 1)."""


def _factory(settings: Settings) -> Any:
    from app.db import make_engine, make_session_factory

    return make_session_factory(make_engine(settings.database_url))


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from app.migrate import upgrade

    upgrade(settings.database_url)
    print("database at head", file=sys.stderr)
    return 0


def cmd_user_add(args: argparse.Namespace, settings: Settings) -> int:
    from app import portal

    if args.role not in {"client", "technician", "admin"}:
        raise UsageError("--role must be client, technician or admin")
    with _factory(settings).begin() as session:
        user = portal.create_user(session, email=args.email, role=args.role, name=args.name or "")
        print(user.id)
    return 0


def cmd_token(args: argparse.Namespace, settings: Settings) -> int:
    from app.auth import mint
    from app.models import User

    try:
        ttl = parse_duration(args.ttl)
    except ValueError as exc:
        raise UsageError(f"--ttl: {exc}") from None
    if args.service:
        print(mint(secret=settings.secret, sub=args.service, email=f"{args.service}@services",
                   role="service", ttl=ttl))
        return 0
    if args.user is None:
        raise UsageError("give --user ID or --service NAME")
    with _factory(settings)() as session:
        user = session.get(User, args.user)
        if user is None:
            raise Failure(f"no user with id {args.user}")
        print(mint(secret=settings.secret, sub=str(user.id), email=user.email, role=user.role,
                   ttl=ttl))
    return 0


def cmd_seed(args: argparse.Namespace, settings: Settings) -> int:
    from app.seed import seed

    summary = seed(_factory(settings))
    print(json.dumps(summary) if args.json else "\n".join(f"{k}: {v}" for k, v in summary.items()))
    return 0


def cmd_emit(args: argparse.Namespace, settings: Settings) -> int:
    from app.outbox.writer import append

    try:
        data = json.loads(args.data)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--data is not JSON: {exc.msg}") from None
    with _factory(settings).begin() as session:
        record = append(session, args.stream, args.type, data)
    print(json.dumps({"id": record.id, "stream": record.stream, "offset": record.offset}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="herald", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("migrate", help="apply database migrations").set_defaults(fn=cmd_migrate)

    user = sub.add_parser("user", help="manage users").add_subparsers(dest="user_cmd",
                                                                      required=True)
    add = user.add_parser("add", help="create a user; prints its id")
    add.add_argument("--email", required=True)
    add.add_argument("--role", required=True)
    add.add_argument("--name", default="")
    add.set_defaults(fn=cmd_user_add)

    token = sub.add_parser("token", help="mint an access token; prints it")
    token.add_argument("--user", type=int)
    token.add_argument("--service")
    token.add_argument("--ttl", default="1h")
    token.set_defaults(fn=cmd_token)

    seed = sub.add_parser("seed", help="create demo users, projects and tickets")
    seed.add_argument("--json", action="store_true")
    seed.set_defaults(fn=cmd_seed)

    emit = sub.add_parser("emit", help="append one event to a stream")
    emit.add_argument("--stream", required=True)
    emit.add_argument("--type", required=True)
    emit.add_argument("--data", default="{}")
    emit.set_defaults(fn=cmd_emit)

    from app import cli_outbox, tail  # noqa: F401  (they append to EXTENSIONS)

    for register in EXTENSIONS:
        register(sub)
    return parser


# Other modules (outbox operations, tail) add their subcommands here.
EXTENSIONS: list[Callable[[Any], None]] = []


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    settings = get_settings()
    from app import logs

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


if __name__ == "__main__":
    sys.exit(main())
