"""The pure modules of scanner.received import no I/O (docs/received-reports.md#layout)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "scanner" / "received"
PURE = (
    "limits",
    "report",
    "mail",
    "authenticity",
    "items",
    "records",
    "summary",
    "evidence",
    "output",
    "intake",
    "charts",
    "tables",
    "page",
)
FORBIDDEN = (
    "trio",
    "socket",
    "ssl",
    "asyncio",
    "imaplib",
    "sqlite3",
    "OpenSSL",
    "dns.resolver",
    "urllib.request",
    "http",
    "scanner.net",
    "scanner.lab",
    "scanner.received.store",
    "scanner.received.imap",
    "scanner.received.mailboxes",
    "scanner.received.key_lookup",
    "scanner.received.importer",
    "scanner.received.cli",
    "scanner.received.render",
)


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("module", PURE)
def test_pure_module_imports_no_io(module: str) -> None:
    imported = imported_modules(PACKAGE / f"{module}.py")
    bad = sorted(m for m in imported if any(m == f or m.startswith(f + ".") for f in FORBIDDEN))
    assert bad == [], f"scanner/received/{module}.py imports {bad}"


def test_every_module_is_classified() -> None:
    io_modules = {
        "mailboxes",
        "imap",
        "key_lookup",
        "store",
        "importer",
        "render",
        "cli",
        "serve",
        "__init__",
    }
    assert {path.stem for path in PACKAGE.glob("*.py")} == set(PURE) | io_modules
