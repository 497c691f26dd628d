"""The documentation runs: every Python snippet in README.md and docs/*.md, as written.

Each document's ```python blocks run in order in one subprocess, each block as a script of its
own (a fresh namespace, so every block must carry its imports), in a scratch directory with a
fresh database in DATABASE_URL (TASKCORE_ENV_FILE=none, HOME in the scratch directory): a SQLite
file, or the suite's PostgreSQL for a document that says so. A block's line numbers in a
traceback are the document's. Shell blocks are not run, but every command in them must exist.

Directives are HTML comments (invisible on GitHub). On the line right before a block:

    <!-- docs-test: skip (why) -->        not run; the reason is required, use it sparingly
    <!-- docs-test: file NAME.py -->      written to NAME.py for later blocks to import, not run
    <!-- docs-test: requires MODULE -->   run only when MODULE is installed (your app's package)

On a line of its own anywhere in a document:

    <!-- docs-test: postgres -->          the document's blocks run against PostgreSQL
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest

from _pgserver import PgTarget

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
VENV_BIN = Path(sys.executable).parent
README_MAX_LINES = 250
_SNIPPET_TIMEOUT_S = 300

_DIRECTIVE = re.compile(r"^\s*<!--\s*docs-test:\s*(.*?)\s*-->\s*$")
_FENCE = re.compile(r"^(\s*)```\s*([\w+-]*)\s*$")
_SHELL_LANGS = {"sh", "shell", "bash", "console", "shell-session"}
_PYTHON_LANGS = {"python", "py"}
# Shell builtins and coreutils a command line may use around the commands that matter.
_BUILTINS = {"cd", "echo", "export", "set", "unset", "source", ".", "true", "false", "exit"}


@dataclass(frozen=True)
class Block:
    """One fenced code block of a document."""

    doc: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    directive: str | None  # the docs-test comment right before it, if any

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(REPO)}:{self.line}"


def blocks(doc: Path) -> list[Block]:
    """The fenced blocks of ``doc`` with the directive on the line right before each."""
    found: list[Block] = []
    lines = doc.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent, lang = opening.group(1), opening.group(2).lower()
        end = index + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        body = [line.removeprefix(indent) for line in lines[index + 1 : end]]
        directive = _DIRECTIVE.match(lines[index - 1]) if index > 0 else None
        code = "\n".join(body) + "\n"
        found.append(Block(doc, index + 1, lang, code, directive.group(1) if directive else None))
        index = end + 1
    return found


def wants_postgres(doc: Path) -> bool:
    """Whether the document asks for PostgreSQL (a ``docs-test: postgres`` line of its own)."""
    return any(
        (m := _DIRECTIVE.match(line)) is not None and m.group(1) == "postgres"
        for line in doc.read_text(encoding="utf-8").splitlines()
    )


def _doc_params() -> Iterator[object]:
    for doc in DOCS:
        if not any(b.lang in _PYTHON_LANGS for b in blocks(doc)):
            continue
        mark = pytest.mark.postgres if wants_postgres(doc) else pytest.mark.sqlite
        yield pytest.param(doc, marks=mark, id=str(doc.relative_to(REPO)))


_RUNNER = """\
import importlib.util, json, runpy, sys
sys.path.insert(0, ".")  # as `python snippet.py` would: later blocks import `file` blocks
for label, path, requires in json.load(open(sys.argv[1])):
    if requires and importlib.util.find_spec(requires) is None:
        print(f"docs-test: {label}: skipped, {requires} is not installed", file=sys.stderr)
        continue
    print(f"docs-test: running {label}", file=sys.stderr, flush=True)
    runpy.run_path(path, run_name="__main__")
"""


def run_snippets(doc: Path, scratch: Path, database_url: str) -> subprocess.CompletedProcess[str]:
    """Run ``doc``'s Python blocks in order in one subprocess; return its result."""
    plan: list[tuple[str, str, str | None]] = []
    for block in blocks(doc):
        if block.lang not in _PYTHON_LANGS:
            continue
        verb, _, argument = (block.directive or "").partition(" ")
        if verb == "skip":
            continue
        # Blank lines first, so a traceback's line numbers are the document's.
        text = "\n" * block.line + block.code
        if verb == "file":
            (scratch / argument.strip()).write_text(text, encoding="utf-8")
            continue
        script = scratch / f"{doc.name}@L{block.line}.py"
        script.write_text(text, encoding="utf-8")
        plan.append((block.where, str(script), argument.strip() if verb == "requires" else None))
    (scratch / "_plan.json").write_text(json.dumps(plan), encoding="utf-8")
    (scratch / "_runner.py").write_text(_RUNNER, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TASKCORE_", "DATABASE_URL"))}
    env.update(
        DATABASE_URL=database_url,
        TASKCORE_ENV_FILE="none",
        HOME=str(scratch),
        XDG_DATA_HOME=str(scratch / "data"),
    )
    return subprocess.run(
        [sys.executable, "_runner.py", "_plan.json"],
        cwd=scratch,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=_SNIPPET_TIMEOUT_S,
    )


def _empty_taskcore_tables(pg: PgTarget) -> None:
    """Empty taskcore's tables (if present) through an independent admin connection."""
    with closing(pg.admin_connect()) as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass('public.tasks') IS NOT NULL")
        row = cur.fetchone()
        if row is not None and row[0]:
            cur.execute("TRUNCATE tasks, task_operations RESTART IDENTITY")


@pytest.mark.parametrize("doc", list(_doc_params()))
def test_python_snippets_run_as_written(
    doc: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Every Python block of the document runs as written, in order, on a fresh database."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    if wants_postgres(doc):
        pg: PgTarget = request.getfixturevalue("pg")
        _empty_taskcore_tables(pg)
        try:
            result = run_snippets(doc, scratch, pg.url)
        finally:
            _empty_taskcore_tables(pg)
    else:
        result = run_snippets(doc, scratch, f"sqlite:///{scratch / 'tasks.db'}")
    code = result.returncode
    assert code == 0, f"a snippet of {doc.name} failed:\n{result.stderr[-6000:]}"


def test_directives_are_known_and_skips_say_why() -> None:
    """Every docs-test directive is one the runner understands, and every skip gives a reason."""
    problems = []
    for doc in DOCS:
        for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
            match = _DIRECTIVE.match(line)
            if match is None:
                continue
            verb, _, argument = match.group(1).partition(" ")
            ok = (
                (verb == "skip" and re.fullmatch(r"\(.*\S.*\)", argument.strip()) is not None)
                or (verb == "file" and re.fullmatch(r"[\w.-]+\.py", argument.strip()) is not None)
                or (verb == "requires" and re.fullmatch(r"[\w.]+", argument.strip()) is not None)
                or match.group(1) == "postgres"
            )
            if not ok:
                problems.append(f"{doc.relative_to(REPO)}:{number}: {line.strip()}")
    assert problems == [], "unknown or incomplete docs-test directives:\n" + "\n".join(problems)


def test_readme_stays_a_door() -> None:
    """README.md stays short (at most 250 lines): the guides live in docs/."""
    count = len((REPO / "README.md").read_text(encoding="utf-8").splitlines())
    assert count <= README_MAX_LINES


# -- shell blocks: the commands exist ----------------------------------------------------------


def commands(block: Block) -> list[str]:
    """The command lines of a shell block (a console block's ``$`` lines when it has any)."""
    lines = block.code.splitlines()
    prompted = [line[2:] for line in lines if line.startswith("$ ")]
    candidates = prompted if prompted else lines
    joined: list[str] = []
    heredoc: str | None = None
    for raw in candidates:
        if heredoc is not None:
            heredoc = None if raw.strip() == heredoc else heredoc
            continue
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if joined and joined[-1].endswith("\\"):
            joined[-1] = joined[-1][:-1] + " " + line
        else:
            joined.append(line)
        marker = re.search(r"<<-?\s*'?\"?(\w+)", line)
        if marker:
            heredoc = marker.group(1)
    return joined


def command_problems(line: str, cwd: Path) -> tuple[list[str], Path]:
    """What is wrong with one command line (programs, scripts, modules, todo arguments), and
    the directory the next line runs in (a block is one shell script: ``cd`` carries over)."""
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError as exc:
        return [f"cannot parse ({exc})"], cwd
    problems: list[str] = []
    segment: list[str] = []
    for token in [*tokens, ";"]:
        if token not in ("|", "||", "&&", ";"):
            segment.append(token)
            continue
        while segment and re.fullmatch(r"[A-Za-z_]\w*=.*", segment[0]):
            segment.pop(0)  # VAR=value before the command
        if segment and segment[0] == "cd" and len(segment) > 1:
            cwd = cwd / segment[1]
            if not cwd.is_dir():
                problems.append(f"cd {segment[1]}: no such directory")
        elif segment:
            problems.extend(_program_problems(segment, cwd))
        segment = []
    return problems, cwd


def _program_problems(argv: list[str], cwd: Path) -> list[str]:
    program, args = argv[0], argv[1:]
    if program in _BUILTINS:
        return []
    name = Path(program).name
    if program.startswith(".venv/bin/"):
        if not (VENV_BIN / name).exists():
            return [f"{program} is not in the virtualenv"]
    elif shutil.which(program, path=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}") is None:
        return [f"{program}: no such command"]
    if name == "todo":
        return _todo_problems(args)
    if not name.startswith("python"):
        return []
    if not args or args[0] in ("-", "-c"):
        return []
    if args[0] == "-m":
        module = args[1] if len(args) > 1 else ""
        if importlib.util.find_spec(module.partition(".")[0]) is None:
            return [f"python -m {module}: no such module"]
        return _todo_problems(args[2:]) if module == "todo_app" else []
    script = (cwd / args[0]).resolve()
    if not script.is_file():
        return [f"{args[0]}: no such script"]
    return _todo_problems(args[1:]) if script == REPO / "src" / "run.py" else []


def _todo_problems(args: list[str]) -> list[str]:
    from todo_app.parser import CommandLineError, VersionRequested, parse

    try:
        parse(args)
    except VersionRequested:
        return []
    except (CommandLineError, SystemExit) as exc:
        return [f"todo {shlex.join(args)}: refused by todo's parser ({exc})"]
    return []


def test_commands_in_shell_blocks_exist(capsys: pytest.CaptureFixture[str]) -> None:
    """Every command shown in a shell block names an existing program, script or module, and
    every todo command line is one todo accepts."""
    problems = []
    for block in (b for doc in DOCS for b in blocks(doc) if b.lang in _SHELL_LANGS):
        cwd = REPO  # every block starts at the repository's root
        for line in commands(block):
            found, cwd = command_problems(line, cwd)
            problems += [f"{block.where}: {line}: {problem}" for problem in found]
    capsys.readouterr()  # argparse's own messages for refused lines
    assert problems == [], "commands that do not exist:\n" + "\n".join(problems)


# -- links ---------------------------------------------------------------------------------------

_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_CODE_SPAN = re.compile(r"(`+).*?\1")


def prose_lines(doc: Path) -> Iterator[str]:
    """The lines of ``doc`` outside fenced blocks, with inline code spans removed."""
    in_block = False
    for line in doc.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line):
            in_block = not in_block
            continue
        if not in_block:
            yield _CODE_SPAN.sub("", line)


def _anchors(doc: Path) -> set[str]:
    """GitHub's anchors for the headings of a Markdown file."""
    titles = (line.lstrip("#").strip().lower() for line in prose_lines(doc) if line[:1] == "#")
    return {re.sub(r"[^\w\- ]", "", title).replace(" ", "-") for title in titles}


def test_relative_links_resolve() -> None:
    """Every relative link in README.md and docs/*.md points to an existing file and heading."""
    broken = []
    for doc in DOCS:
        for target in (t for line in prose_lines(doc) for t in _LINK.findall(line)):
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto:
            path, _, anchor = target.partition("#")
            file = (doc.parent / path).resolve() if path else doc
            if not file.exists():
                broken.append(f"{doc.relative_to(REPO)}: {target} (no such file)")
            elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
                broken.append(f"{doc.relative_to(REPO)}: {target} (no such heading)")
    assert broken == [], "broken links:\n" + "\n".join(broken)
