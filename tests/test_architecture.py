"""The functional-core rule (docs/architecture.md#layers): modules under scanner/core import no I/O."""

import ast
from pathlib import Path

import pytest

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
