"""The functional-core rule (docs/architecture.md#layers): modules under scanner/core import no I/O.

And the start-up rule: `scanner scan` and its worker processes import nothing a scan
does not use.
"""

import ast
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import typer
from typer.main import get_group
from typer.testing import CliRunner

from scanner.cli import COMMANDS_ON_DEMAND, LISTED_ORDER, app

CORE = Path(__file__).resolve().parent.parent / "scanner" / "core"
FORBIDDEN = ("trio", "socket", "OpenSSL.SSL", "ssl", "asyncio", "scanner.net", "scanner.lab")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def is_forbidden(module: str) -> bool:
    return any(module == bad or module.startswith(bad + ".") for bad in FORBIDDEN)


CORE_MODULES = sorted(CORE.glob("*.py"))


@pytest.mark.parametrize("path", CORE_MODULES, ids=[p.name for p in CORE_MODULES])
def test_core_module_imports_no_io(path: Path) -> None:
    bad = sorted(m for m in imported_modules(path) if is_forbidden(m))
    assert bad == [], f"{path.name} imports I/O modules: {bad}"


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("trio", True),
        ("trio.lowlevel", True),
        ("OpenSSL.SSL", True),
        ("OpenSSL.crypto", False),
        ("socket", True),
        ("socketserver", False),
        ("scanner.models", False),
        ("scanner.net.tls", True),
    ],
)
def test_forbidden_rule_itself(module: str, forbidden: bool) -> None:
    assert is_forbidden(module) is forbidden


# ---------------------------------------------------------------- start-up imports

# Modules a scan never uses: received reports (SQLite, DKIM, email parsing, IMAP), the
# research commands (statistics, diff, pages, jinja2), policy suggestions, and the
# progress bar (imported only when stderr is a terminal). `scanner scan` and every
# worker process start without them (docs/architecture.md#worker-processes).
NOT_ON_SCAN_PATH = (
    "scanner.received",
    "scanner.research",
    "scanner.suggest",
    "scanner.progress",
    "scanner.lab",
    "jinja2",
    "sqlite3",
    "dkim",
    "imaplib",
    "email.policy",
    "email.headerregistry",
    "matplotlib",
    "publicsuffixlist",
    "rich.progress",
)
# What a worker process imports before it scans (scanner.workers.WORKER_ENTRY and
# `_worker`): it parses no command line, so typer stays out too.
WORKER_IMPORTS = (
    "from scanner.workers import main; "
    "from scanner.options import build_scanner; "
    "from scanner.output import dumps_line, result_line"
)


def modules_imported_by(code: str, prefixes: tuple[str, ...]) -> list[str]:
    """The modules under `prefixes` that a fresh interpreter holds after running `code`."""
    report = (
        "import sys; "
        f"print('\\n'.join(sorted(m for m in sys.modules if m in {prefixes!r} "
        f"or m.startswith(tuple(p + '.' for p in {prefixes!r})))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", f"{code}\n{report}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return done.stdout.split()


@pytest.mark.parametrize(
    ("code", "prefixes", "expected"),
    [
        ("import scanner.cli, scanner.scan", NOT_ON_SCAN_PATH, []),
        (WORKER_IMPORTS, (*NOT_ON_SCAN_PATH, "typer"), []),
        # The failing twins: the check sees these modules when something imports them.
        (
            "import scanner.cli, scanner.received.cli",
            ("scanner.received.store", "_sqlite3", "email.policy"),
            ["_sqlite3", "email.policy", "scanner.received.store"],
        ),
        (
            "import scanner.workers, scanner.cli",
            ("scanner.research.cli", "typer.main"),
            ["typer.main"],
        ),
    ],
    ids=["scan", "worker", "with-tlsrpt", "worker-with-cli"],
)
def test_scan_start_up_imports_only_what_it_uses(
    code: str, prefixes: tuple[str, ...], expected: list[str]
) -> None:
    assert modules_imported_by(code, prefixes) == expected


def test_commands_on_demand_add_exactly_the_names_they_are_listed_under() -> None:
    for add in set(COMMANDS_ON_DEMAND.values()):
        part = typer.Typer()
        add(part)
        listed = {name for name, adder in COMMANDS_ON_DEMAND.items() if adder is add}
        assert set(get_group(part).commands) == listed


def test_root_help_lists_every_command_in_order() -> None:
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    commands = result.output.split("Commands")[1]
    listed = re.findall(r"^│ (\S+) ", commands, flags=re.MULTILINE)
    assert listed == list(LISTED_ORDER)


@pytest.mark.parametrize(
    ("name", "message"),
    [("stat", "Did you mean 'stats', 'stage'?"), ("tlsrp", "Did you mean 'tlsrpt'?")],
)
def test_a_mistyped_command_is_matched_against_commands_on_demand(name: str, message: str) -> None:
    result = CliRunner().invoke(app, [name], env={"COLUMNS": "120"})
    assert result.exit_code == 2
    assert message in result.output


@cache
def command_paths() -> list[tuple[str, ...]]:
    """Every command and command group of `scanner`, on-demand ones included (built once:
    it imports every command's module)."""
    from typer._click.core import Context
    from typer.core import TyperGroup as Group

    root = get_group(app)
    context = Context(root)
    paths: list[tuple[str, ...]] = []

    def walk(group: Group, prefix: tuple[str, ...]) -> None:
        for name in group.list_commands(context):
            command = group.get_command(context, name)
            assert command is not None, name
            paths.append((*prefix, name))
            if isinstance(command, Group):
                walk(command, (*prefix, name))

    walk(root, ())
    return paths


@pytest.mark.parametrize("path", command_paths(), ids=" ".join)
def test_every_command_has_a_help_page(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


@pytest.mark.parametrize("path", [(), *command_paths()], ids=lambda p: " ".join(p) or "scanner")
def test_help_pages_show_values_as_words(path: tuple[str, ...]) -> None:
    """No typer braces around an argument (`{DOMAIN}`), no `<bool>` on a flag, and no
    type in angle brackets (`<str>`, `<path>`) anywhere."""
    from commands import invoke

    shown = invoke(*path, "--help")
    assert shown.exit_code == 0, shown.output
    assert "Usage:" in shown.output
    for mark in ("{", "}", "<bool>"):
        assert mark not in shown.output, (path, mark)
    assert not re.search(r"<[a-z\[\]]+>", shown.output), (path, shown.output)
