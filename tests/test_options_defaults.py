"""The network options' defaults: declared once (`network_options`), the same in the
command line's parameters and in the README's table of options."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from scanner.options import network_options, network_parameters

README = Path(__file__).resolve().parent.parent / "README.md"


def declared() -> dict[str, object]:
    return {n: p.default for n, p in inspect.signature(network_options).parameters.items()}


def test_every_option_of_the_command_line_has_the_declared_default() -> None:
    parameters = {p.name: p.default for p in network_parameters()}
    # `concurrency` is the scan command's own option, passed on to `network_options`.
    assert set(parameters) == set(declared()) - {"concurrency"}
    assert parameters == {name: declared()[name] for name in parameters}


def readme_defaults() -> dict[str, str]:
    """Flag name → the README's default text, for rows naming numeric defaults."""
    found: dict[str, str] = {}
    for row in re.findall(
        r"^\| (`--.*?) \| .* \| ([0-9., ]+) \|$", README.read_text("utf-8"), re.M
    ):
        flags = re.findall(r"`(--[a-z-]+)", row[0])
        values = [value.strip() for value in row[1].split(",")]
        assert len(flags) == len(values), row
        found.update(zip(flags, values, strict=True))
    return found


def test_the_readme_states_the_declared_defaults() -> None:
    defaults = readme_defaults()
    assert {"--timeout", "--per-ip", "--max-mx-hosts", "--busy-retries"} <= set(defaults)
    for flag, text in defaults.items():
        value = declared()[flag.removeprefix("--").replace("-", "_")]
        assert isinstance(value, int | float)
        assert float(text) == value, flag
