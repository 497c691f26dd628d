"""The ``todo`` command: logging and deadline set-up, dispatch, and one exit code per outcome."""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import TextIO

import taskcore
from taskcore import (
    ConfigurationError,
    NotFoundError,
    Settings,
    TaskcoreError,
    UsageError,
    ValidationError,
)
from todo_app import STARTED, commands, doctor
from todo_app.output import Output, OutputError, error_document, error_kind, json_line
from todo_app.parser import (
    DEADLINE_ENV,
    PROG,
    USER_ENV,
    CommandLine,
    CommandLineError,
    VersionRequested,
    parse,
    parse_seconds,
    wants_json,
)

__all__ = ["exit_code", "main", "version"]

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_USAGE = 2  # also argparse's code for a bad command line
EXIT_DATABASE = 3
EXIT_LOCAL_IO = 4
EXIT_INTERNAL = 70  # BSD EX_SOFTWARE: a bug in todo or taskcore
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it

DEFAULT_DEADLINE = 10.0
# The least time taskcore is given when start-up already used up the deadline: one quick try.
_MIN_CALL_DEADLINE = 0.5
# Commands that leave the same state however often they run: after "may or may not have been
# applied", running them again settles it.
_IDEMPOTENT = {"done", "undone", "update"}
# taskcore records still shown without -v: they say the configuration is wrong, not progress.
_ALWAYS_SHOWN = {"unknown_setting", "deprecated_setting"}


def version() -> str:
    """taskcore's version (todo is released with it)."""
    found = getattr(taskcore, "__version__", None)
    if isinstance(found, str):
        return found
    try:
        return importlib.metadata.version("taskcore")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def exit_code(error: TaskcoreError) -> int:
    """The exit status for a taskcore error (see the epilog of ``todo --help``)."""
    if isinstance(error, NotFoundError):
        return EXIT_NOT_FOUND
    if isinstance(error, ConfigurationError | ValidationError | UsageError):
        return EXIT_USAGE
    return EXIT_DATABASE


def _one_line(text: str) -> str:
    return " ".join(text.split())


class _Formatter(logging.Formatter):
    """``todo: warning: <message>``, like the error lines."""

    def format(self, record: logging.LogRecord) -> str:
        return _one_line(f"{PROG}: {record.levelname.lower()}: {record.getMessage()}")


class _QuietLibrary(logging.Filter):
    """Without -v, taskcore's progress (retries, reconnects) stays quiet: one error line is it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != "taskcore" and not record.name.startswith("taskcore."):
            return True
        return getattr(record, "taskcore_event", None) in _ALWAYS_SHOWN


def configure_logging(verbosity: int) -> None:
    """Log to stderr: WARNING by default, INFO with -v, DEBUG with -vv (the library sets none)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    if verbosity == 0:
        handler.addFilter(_QuietLibrary())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(
        logging.DEBUG if verbosity >= 2 else logging.INFO if verbosity else logging.WARNING
    )
    logging.captureWarnings(True)


def _deadline(line: CommandLine) -> doctor.Deadline:
    if line.deadline is not None:
        return doctor.Deadline(line.deadline, "--deadline")
    text = os.environ.get(DEADLINE_ENV, "")
    if not text.strip():
        return doctor.Deadline(DEFAULT_DEADLINE, "todo's default")
    try:
        seconds = parse_seconds(text)
    except ValueError as error:
        raise ConfigurationError(f"{DEADLINE_ENV} (environment variable): {error}") from None
    return doctor.Deadline(seconds, f"{DEADLINE_ENV} (environment variable)")


def _configure(deadline: doctor.Deadline) -> Settings:
    """Give taskcore what is left of the deadline (start-up counts); return the settings."""
    started = time.monotonic() - STARTED
    remaining = max(_MIN_CALL_DEADLINE, deadline.seconds - started)
    logging.getLogger(PROG).debug(
        "start-up took %.2f s; taskcore gets %.2f s of the %g s deadline",
        started,
        remaining,
        deadline.seconds,
    )
    return taskcore.configure(deadline=remaining)


def _dispatch(line: CommandLine, out: Output, deadline: doctor.Deadline) -> int:
    args = line.args
    settings = _configure(deadline)
    if line.command == "doctor":
        return doctor.run(out, settings, deadline)
    user = line.user if line.user is not None else os.environ.get(USER_ENV, "")
    if line.command == "add":
        return commands.add(out, title=args.title, description=args.description, user=user)
    if line.command == "list":
        completed = True if args.done else False if args.pending else None
        return commands.list_tasks(out, user=None if args.all_users else user, completed=completed)
    if line.command == "update":
        return commands.update(
            out,
            task_id=args.id,
            user=user,
            title=args.title,
            description=args.description,
            clear_description=args.clear_description,
        )
    if line.command in ("done", "undone"):
        return commands.set_completed(
            out, task_id=args.id, user=user, completed=line.command == "done"
        )
    one_task = {"show": commands.show, "toggle": commands.toggle, "delete": commands.delete}
    return one_task[line.command](out, task_id=args.id, user=user)


def _tolerant_streams() -> None:
    """Never crash printing a character the terminal's encoding lacks: escape it instead."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")


def _silence(stream: TextIO) -> None:
    """Point a broken stdout at /dev/null so Python's flush at exit cannot fail a second time."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError, io.UnsupportedOperation):
        pass


class _Failure:
    """Reports one failure: a line on stderr, or the JSON error document on stdout."""

    def __init__(self, out: Output) -> None:
        self.out = out

    def report(self, kind: str, message: str, code: int) -> int:
        message = _one_line(message)
        if self.out.json_mode:
            try:
                self.out.document(error_document(kind, message))
            except OutputError:  # stdout is broken too: stderr is all there is
                print(json_line(error_document(kind, message)), file=sys.stderr)
        else:
            with contextlib.suppress(OSError):  # what was printed comes before the error
                self.out.stream.flush()
            print(f"{PROG}: error: {message}", file=sys.stderr)
        return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``todo`` with ``argv`` (default: the process's arguments); return the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    out = Output(sys.stdout, json_mode=wants_json(argv))
    failure = _Failure(out)
    verbosity, command, deadline = 0, "", None
    try:
        _tolerant_streams()
        try:
            line = parse(argv)
        except VersionRequested:
            text = f"{PROG} (taskcore {version()})"
            out.emit([text], {"program": PROG, "taskcore": version()})
            return EXIT_OK
        verbosity, command = line.verbosity, line.command
        configure_logging(verbosity)
        deadline = _deadline(line)
        return _dispatch(line, out, deadline)
    except CommandLineError as error:
        if not out.json_mode:
            sys.stderr.write(error.usage)
        return failure.report("usage", error.message, EXIT_USAGE)
    except doctor.Reported as reported:  # already in doctor's JSON document
        return exit_code(reported.error)
    except TaskcoreError as error:
        # doctor names the error class too: it tells an operator which kind of failure it was
        message = str(error) + (f" ({type(error).__name__})" if command == "doctor" else "")
        if not error.outcome_known and command in _IDEMPOTENT:
            message += f"; `{PROG} {command}` is safe to run again"
        if deadline is not None and getattr(error, "reason", None) == "deadline":
            message += (
                f"; todo waits {deadline.seconds:g} s for the database"
                " (--deadline or TODO_DEADLINE changes it)"
            )
        return failure.report(error_kind(error), message, exit_code(error))
    except OutputError as error:
        _silence(out.stream)
        if isinstance(error.error, BrokenPipeError):
            return EXIT_LOCAL_IO  # the reader went away (`todo list | head`): stop quietly
        message = f"cannot write the output: {error}"
        if out.json_mode:
            print(json_line(error_document("io", message)), file=sys.stderr)
        else:
            print(f"{PROG}: error: {message}", file=sys.stderr)
        return EXIT_LOCAL_IO
    except KeyboardInterrupt:
        if not out.json_mode:  # Ctrl-C: the person knows, no message needed
            return EXIT_INTERRUPTED
        return failure.report("interrupted", "interrupted", EXIT_INTERRUPTED)
    except OSError as error:
        # A local file (a .env, the SQLite file's folder...) could not be read or written.
        reason = error.strerror or type(error).__name__
        where = f": {error.filename}" if error.filename else ""
        return failure.report("io", f"local I/O error: {reason}{where}", EXIT_LOCAL_IO)
    except Exception as error:
        # A bug (an error taskcore did not translate): its text may hold a URL or SQL, so
        # show only its type unless asked for the full traceback.
        if verbosity >= 2:
            raise
        kind = type(error).__name__
        message = f"internal error: {kind} (run with -vv for a traceback)"
        return failure.report("internal", message, EXIT_INTERNAL)


if __name__ == "__main__":
    sys.exit(main())
