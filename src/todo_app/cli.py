"""The ``todo`` command: argument parsing, logging set-up, dispatch and error reporting."""

from __future__ import annotations

import argparse
import io
import logging
import os
import sys
from collections.abc import Sequence
from typing import TextIO

from taskcore import (
    ConfigurationError,
    NotFoundError,
    TaskcoreError,
    UsageError,
    ValidationError,
)
from todo_app import commands

__all__ = ["build_parser", "error_line", "exit_code", "main"]

PROG = "todo"
USER_ENV = "TODO_USER"

EXIT_NOT_FOUND = 1
EXIT_USAGE = 2  # also argparse's code for a bad command line
EXIT_DATABASE = 3
EXIT_INTERNAL = 70  # BSD EX_SOFTWARE: a bug in todo or taskcore
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE

# Larger than any id either backend can hold (PostgreSQL BIGINT, SQLite INTEGER).
_ID_MAX = 2**63 - 1

_DESCRIPTION = """\
A small todo list on the taskcore store (PostgreSQL/Neon or an embedded SQLite file).

todo is a single-user tool: every command works on the tasks of the current user,
taken from --user, else the environment variable TODO_USER, else the default user ""
(the empty string). Another user's tasks are invisible to show/update/toggle/delete,
exactly as if they did not exist. Only `todo list --all-users` shows everyone's tasks."""

_EPILOG = """\
environment:
  TODO_USER             the current user when --user is not given (default: "")
  DATABASE_URL          postgresql://user:password@host/dbname (Neon: as copied from the
                        console) or sqlite:///path/to/file.db; also read from a .env file
                        in the current directory or a parent
  TASKCORE_SQLITE_PATH  the SQLite file used when DATABASE_URL is unset (default:
                        $XDG_DATA_HOME/taskcore/tasks.db, i.e. ~/.local/share/taskcore/tasks.db)
  TASKCORE_*            pool, timeout and retry settings (shown by `todo doctor`)

exit status:
  0 success, 1 task not found, 2 invalid command line, input or configuration,
  3 database unreachable, refused or failing (doctor: the connection check failed),
  130 interrupted"""


def _task_id(text: str) -> int:
    """argparse type of a task id: a positive whole number."""
    try:
        value = int(text, 10)
    except ValueError:
        value = 0
    if not 1 <= value <= _ID_MAX:
        raise argparse.ArgumentTypeError(f"invalid task id {text!r} (expected a positive number)")
    return value


def _add_user_option(parser: argparse.ArgumentParser | argparse._MutuallyExclusiveGroup) -> None:
    parser.add_argument(
        "--user",
        metavar="USER",
        help=f'act as USER (default: ${USER_ENV}, else the default user "")',
    )


def build_parser() -> argparse.ArgumentParser:
    """The full command-line grammar of ``todo``."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog=PROG, description=_DESCRIPTION, epilog=_EPILOG, formatter_class=formatter
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log more to stderr: -v for progress (INFO), -vv for debugging",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    add = sub.add_parser("add", help="add a task", description="Add a task for the current user.")
    add.add_argument("title", metavar="TITLE", help="1-200 characters, not blank")
    add.add_argument("--description", "-d", metavar="TEXT", help="up to 1000 characters")
    _add_user_option(add)

    list_ = sub.add_parser(
        "list",
        help="list tasks",
        description="List the current user's tasks (--all-users: everyone's), oldest first.",
    )
    state = list_.add_mutually_exclusive_group()
    state.add_argument("--done", action="store_true", help="only completed tasks")
    state.add_argument("--pending", action="store_true", help="only tasks not completed yet")
    who = list_.add_mutually_exclusive_group()
    _add_user_option(who)
    who.add_argument(
        "--all-users", action="store_true", help="every user's tasks, with a USER column (admin)"
    )

    show = sub.add_parser(
        "show", help="show every field of a task", description="Show one task in full."
    )
    show.add_argument("id", metavar="ID", type=_task_id)
    _add_user_option(show)

    update = sub.add_parser(
        "update",
        help="change a task's title or description",
        description="Change a task's title and/or description (at least one).",
    )
    update.add_argument("id", metavar="ID", type=_task_id)
    update.add_argument("--title", "-t", metavar="TITLE", help="new title")
    text = update.add_mutually_exclusive_group()
    text.add_argument("--description", "-d", metavar="TEXT", help="new description")
    text.add_argument("--clear-description", action="store_true", help="remove the description")
    _add_user_option(update)
    update.set_defaults(subparser=update)  # to report "nothing to change" with its usage

    toggle = sub.add_parser(
        "toggle", help="mark a task done, or pending again", description="Flip a task's status."
    )
    toggle.add_argument("id", metavar="ID", type=_task_id)
    _add_user_option(toggle)

    delete = sub.add_parser("delete", help="delete a task", description="Delete a task.")
    delete.add_argument("id", metavar="ID", type=_task_id)
    _add_user_option(delete)

    sub.add_parser(
        "doctor",
        help="check the database connection",
        description=(
            "Show which database todo uses (password masked) and its pool/retry settings, "
            "then connect once and report the server version and latencies. "
            "Changes nothing."
        ),
    )
    return parser


def _current_user(args: argparse.Namespace) -> str:
    user: str | None = args.user
    return user if user is not None else os.environ.get(USER_ENV, "")


def _dispatch(args: argparse.Namespace, out: TextIO) -> int:
    command: str = args.command
    if command == "doctor":
        return commands.doctor(out)
    if command == "add":
        return commands.add(
            out, title=args.title, description=args.description, user=_current_user(args)
        )
    if command == "list":
        completed = True if args.done else False if args.pending else None
        user = None if args.all_users else _current_user(args)
        return commands.list_tasks(out, user=user, completed=completed)
    if command == "update":
        if args.title is None and args.description is None and not args.clear_description:
            args.subparser.error(
                "nothing to change (give --title, --description or --clear-description)"
            )
        return commands.update(
            out,
            task_id=args.id,
            user=_current_user(args),
            title=args.title,
            description=args.description,
            clear_description=args.clear_description,
        )
    one_task = {"show": commands.show, "toggle": commands.toggle, "delete": commands.delete}
    return one_task[command](out, task_id=args.id, user=_current_user(args))


def exit_code(error: TaskcoreError) -> int:
    """The exit status for a taskcore error (see the epilog of ``todo --help``)."""
    if isinstance(error, NotFoundError):
        return EXIT_NOT_FOUND
    if isinstance(error, ConfigurationError | ValidationError | UsageError):
        return EXIT_USAGE
    return EXIT_DATABASE


def error_line(error: TaskcoreError, *, with_type: bool = False) -> str:
    """The one stderr line for ``error``; taskcore messages hold no secrets, only reasons."""
    message = " ".join(str(error).split())  # always a single line
    if with_type:
        message += f" ({type(error).__name__})"
    return f"{PROG}: error: {message}"


class _Formatter(logging.Formatter):
    """``todo: warning: <message>``, like the error lines."""

    def format(self, record: logging.LogRecord) -> str:
        text = f"{PROG}: {record.levelname.lower()}: {record.getMessage()}"
        return " ".join(text.split())


def configure_logging(verbosity: int) -> None:
    """Log to stderr: WARNING by default, INFO with -v, DEBUG with -vv (the library sets none)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(
        logging.DEBUG if verbosity >= 2 else logging.INFO if verbosity else logging.WARNING
    )
    logging.captureWarnings(True)


def _tolerant_streams() -> None:
    """Never crash printing a character the terminal's encoding lacks: escape it instead."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``todo`` with ``argv`` (default: the process's arguments); return the exit status."""
    verbosity, command = 0, ""
    try:
        _tolerant_streams()
        parser = build_parser()
        args = parser.parse_args(argv)
        verbosity, command = args.verbose, args.command
        configure_logging(verbosity)
        return _dispatch(args, sys.stdout)
    except TaskcoreError as error:
        sys.stdout.flush()
        # doctor names the error class too: it tells an operator which kind of failure it was
        print(error_line(error, with_type=command == "doctor"), file=sys.stderr)
        return exit_code(error)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`todo list | head`): stop quietly, and keep Python's final
        # flush of stdout from failing again at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except OSError as error:
        # e.g. the SQLite file's directory cannot be created; names a path, never a password
        print(
            f"{PROG}: error: {error.strerror or type(error).__name__}"
            + (f": {error.filename}" if error.filename else ""),
            file=sys.stderr,
        )
        return EXIT_DATABASE
    except Exception as error:
        # A bug (an error taskcore did not translate): its text may hold a URL or SQL, so
        # show only its type unless asked for the full traceback.
        if verbosity >= 2:
            raise
        kind = type(error).__name__
        print(f"{PROG}: internal error: {kind} (run with -vv for a traceback)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
