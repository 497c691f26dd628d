"""The command-line grammar of ``todo``: subcommands, global options on either side, help text."""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn

__all__ = [
    "DEADLINE_ENV",
    "ID_MAX",
    "PROG",
    "USER_ENV",
    "CommandLine",
    "CommandLineError",
    "VersionRequested",
    "build_parser",
    "parse",
    "parse_seconds",
    "wants_json",
]

PROG = "todo"
USER_ENV = "TODO_USER"
DEADLINE_ENV = "TODO_DEADLINE"
#: Ids are 64-bit signed integers on both backends (PostgreSQL BIGINT, SQLite INTEGER).
ID_MAX = 2**63 - 1

_DESCRIPTION = """\
A small todo list on the taskcore store (PostgreSQL/Neon or an embedded SQLite file).

todo is a single-user tool: every command works on the tasks of the current user,
taken from --user, else the environment variable TODO_USER, else the default user ""
(the empty string). Another user's tasks are invisible to show/update/toggle/done/undone/
delete, exactly as if they did not exist. Only `todo list --all-users` shows everyone's tasks.
Global options (--user, --json, --deadline, -v) go before or after the command."""

_EPILOG = f"""\
output:
  Text for people; tables are cut to the terminal's width only when stdout is a terminal.
  --json prints exactly one JSON document (ASCII, indented) on stdout for every command:
  a task is {{"id", "title", "description", "completed", "user_id", "created_at",
  "updated_at"}} with timestamps in ISO 8601 UTC ("2026-01-31T09:15:00.123456Z");
  list prints an array of tasks, delete {{"id", "deleted"}}. A failure prints
  {{"error": {{"kind", "message"}}}} on stdout instead (same exit status; doctor adds what it
  found before failing); only when stdout itself cannot be written does the error go to stderr.
  Kinds: not_found, usage, validation, configuration, database_unavailable,
  connection_rejected, commit_outcome_unknown, pool_exhausted, conflict, transient, database,
  io, interrupted, internal.

environment:
  TODO_USER             the current user when --user is not given (default: "")
  TODO_DEADLINE         seconds todo waits for the database before giving up (default: 10;
                        --deadline wins); counted from the start of the command, it replaces
                        TASKCORE_DEADLINE for todo
  DATABASE_URL          postgresql://user:password@host/dbname (Neon: as copied from the
                        console) or sqlite:///path/to/file.db; also read from ./.env (or the
                        file TASKCORE_ENV_FILE names); `todo doctor` shows which file was read
  TASKCORE_SQLITE_PATH  the SQLite file used when DATABASE_URL is unset (default:
                        $XDG_DATA_HOME/taskcore/tasks.db, i.e. ~/.local/share/taskcore/tasks.db)
  TASKCORE_*            pool, timeout and retry settings (shown by `todo doctor`)

exit status:
  0    success (done/undone of a task already in that state included)
  1    task not found (or it belongs to another user)
  2    invalid command line, input (title, description, id out of 1..{ID_MAX})
       or configuration (DATABASE_URL, TASKCORE_*, TODO_DEADLINE, .env)
  3    database unreachable, refused or failing, deadline passed, or a write whose outcome
       is unknown; doctor: the connection check failed
  4    local I/O error: stdout could not be written (disk full; a closed pipe, as in
       `todo list | head -1`, ends todo quietly) or a local file could not be read
  70   internal error (a bug: run with -vv for the traceback)
  130  interrupted (Ctrl-C)"""


class CommandLineError(Exception):
    """argparse refused the command line (exit 2); ``usage`` is the usage text of the parser."""

    def __init__(self, message: str, usage: str) -> None:
        super().__init__(message)
        self.message = message
        self.usage = usage


class VersionRequested(Exception):  # noqa: N818 - a request, not a failure
    """``--version`` was given: print the version and stop."""


class _Parser(argparse.ArgumentParser):
    """Raises instead of printing and exiting, so errors follow --json and the exit codes."""

    def error(self, message: str) -> NoReturn:
        raise CommandLineError(message, self.format_usage())


class _Version(argparse.Action):
    def __call__(self, *args: object, **kwargs: object) -> NoReturn:
        raise VersionRequested


def _task_id(text: str) -> int:
    """argparse type of a task id: a whole number in 1..2**63-1."""
    try:
        value = int(text.strip(), 10)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid task id {text!r} (ids are whole numbers from 1 to {ID_MAX})"
        ) from None
    if not 1 <= value <= ID_MAX:
        raise argparse.ArgumentTypeError(f"task id {value} is out of range (ids are 1 to {ID_MAX})")
    return value


def parse_seconds(text: str) -> float:
    """A deadline in seconds: a finite number above 0 (ValueError names what is wrong)."""
    try:
        value = float(text.strip())
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"expected seconds, a number above 0, got {text!r}")
    return value


def _deadline(text: str) -> float:
    try:
        return parse_seconds(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"invalid deadline: {error}") from None


# Global options are declared twice: on the main parser (before the command) and on every
# subcommand (after it). Distinct dests keep argparse from letting one side clobber the other.
_BEFORE, _AFTER = "", "_after"


def _add_global_options(parser: argparse.ArgumentParser, suffix: str) -> None:
    group = parser.add_argument_group("global options (before or after the command)")
    group.add_argument(
        "--user",
        dest=f"user{suffix}",
        metavar="USER",
        default=argparse.SUPPRESS,
        help=f'act as USER (default: ${USER_ENV}, else the default user "")',
    )
    group.add_argument(
        "--json",
        dest=f"json{suffix}",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print one JSON document on stdout (see `todo --help`, output)",
    )
    group.add_argument(
        "--deadline",
        dest=f"deadline{suffix}",
        metavar="SECONDS",
        type=_deadline,
        default=argparse.SUPPRESS,
        help=f"give up on the database after SECONDS (default: ${DEADLINE_ENV}, else 10)",
    )
    group.add_argument(
        "-v",
        "--verbose",
        dest=f"verbose{suffix}",
        action="count",
        default=argparse.SUPPRESS,
        help="log more to stderr: -v for retries and progress (INFO), -vv for debugging",
    )


def build_parser() -> argparse.ArgumentParser:
    """The full command-line grammar of ``todo``."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog=PROG,
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=formatter,
        allow_abbrev=False,
    )
    parser.add_argument(
        "--version", action=_Version, nargs=0, help="print the version of todo and taskcore"
    )
    _add_global_options(parser, _BEFORE)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help_text: str, description: str) -> argparse.ArgumentParser:
        sub_parser: argparse.ArgumentParser = sub.add_parser(
            name,
            help=help_text,
            description=description,
            epilog="Exit status and --json output: see `todo --help`.",
            allow_abbrev=False,
        )
        _add_global_options(sub_parser, _AFTER)
        return sub_parser

    add = command("add", "add a task", "Add a task for the current user.")
    add.add_argument("title", metavar="TITLE", help="1-200 characters, not blank")
    add.add_argument("--description", "-d", metavar="TEXT", help="up to 1000 characters")

    list_ = command(
        "list",
        "list tasks",
        "List the current user's tasks (--all-users: everyone's), oldest first.",
    )
    state = list_.add_mutually_exclusive_group()
    state.add_argument("--done", action="store_true", help="only completed tasks")
    state.add_argument("--pending", action="store_true", help="only tasks not completed yet")
    list_.add_argument(
        "--all-users",
        action="store_true",
        help="every user's tasks, with a USER column (admin; not with --user)",
    )

    show = command("show", "show every field of a task", "Show one task in full.")
    show.add_argument("id", metavar="ID", type=_task_id)

    update = command(
        "update",
        "change a task's title or description",
        "Change a task's title and/or description (at least one).",
    )
    update.add_argument("id", metavar="ID", type=_task_id)
    update.add_argument("--title", "-t", metavar="TITLE", help="new title")
    text = update.add_mutually_exclusive_group()
    text.add_argument("--description", "-d", metavar="TEXT", help="new description")
    text.add_argument("--clear-description", action="store_true", help="remove the description")

    for name, help_text, description in (
        ("done", "mark a task done", "Mark a task done; a task already done stays done."),
        ("undone", "mark a task pending", "Mark a task pending; a pending task stays pending."),
        ("toggle", "flip a task between done and pending", "Flip a task's status."),
        ("delete", "delete a task", "Delete a task."),
    ):
        command(name, help_text, description).add_argument("id", metavar="ID", type=_task_id)

    command(
        "doctor",
        "check the configuration and the database connection",
        "Show which database todo uses (password masked), which .env file was read (never "
        "its contents), the settings that are not defaults and where each came from, then "
        "connect once and report the server version and latencies. Changes nothing.",
    )
    for sub_parser in sub.choices.values():  # for errors found after parsing
        sub_parser.set_defaults(usage=sub_parser.format_usage())
    return parser


@dataclass(frozen=True)
class CommandLine:
    """A parsed command line, global options merged from both sides of the command."""

    command: str
    args: argparse.Namespace
    user: str | None
    json: bool
    deadline: float | None
    verbosity: int


def parse(argv: Sequence[str] | None) -> CommandLine:
    """Parse ``argv``; CommandLineError or VersionRequested instead of printing and exiting."""
    parser = build_parser()
    args = parser.parse_args(argv)

    def merged(name: str) -> object:
        after = getattr(args, name + _AFTER, None)
        return after if after is not None else getattr(args, name + _BEFORE, None)

    user = merged("user")
    if args.command == "list" and args.all_users and user is not None:
        raise CommandLineError("argument --all-users: not allowed with argument --user", args.usage)
    if args.command == "update" and (
        args.title is None and args.description is None and not args.clear_description
    ):
        raise CommandLineError(
            "nothing to change (give --title, --description or --clear-description)", args.usage
        )
    deadline = merged("deadline")
    return CommandLine(
        command=args.command,
        args=args,
        user=user if isinstance(user, str) else None,
        json=bool(merged("json")),
        deadline=deadline if isinstance(deadline, float) else None,
        verbosity=getattr(args, "verbose", 0) + getattr(args, "verbose" + _AFTER, 0),
    )


def wants_json(argv: Sequence[str]) -> bool:
    """Whether ``--json`` is on the command line, before it is parsed (to format its errors)."""
    options = list(argv)
    if "--" in options:
        options = options[: options.index("--")]
    return "--json" in options
