"""`scanner demo`: serve the bundled world with the lab, scan it, compare with expectations."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from scanner.core.inputs import InvalidInput, parse_input_line
from scanner.core.result import DomainResult
from scanner.files import InputReader
from scanner.lab.expectations import mismatches
from scanner.lab.runner import open_lab
from scanner.lab.world import World
from scanner.options import build_scanner, network_options
from scanner.untrusted import terminal

DEMO_CONCURRENCY = 20
DETAIL_WIDTH = 90


async def scan_world(
    world: World, domains: tuple[str, ...], write_line: Callable[[str], None], step_timeout: float
) -> list[DomainResult]:
    """Serve `world` with the lab in this process, scan `domains` against it, return the results."""
    collected: list[DomainResult] = []

    class Collect:
        def domain_done(self, result: DomainResult) -> None:
            collected.append(result)

    with tempfile.TemporaryDirectory(prefix="scanner-lab-") as workdir:
        async with open_lab(world, Path(workdir)) as lab:
            options = network_options(
                resolver=[f"{lab.resolver[0]}:{lab.resolver[1]}"],
                ca_file=[lab.ca_file],
                allow_private=True,
                timeout=step_timeout,
                greeting_timeout=step_timeout,  # the lab greets at once or never
                concurrency=DEMO_CONCURRENCY,
                smtp_port=lab.smtp_port,
                https_port=lab.https_port,
                org="scanner demo",
            )
            scanner = build_scanner(options)

            async def items() -> AsyncIterator[str]:
                for name in domains:
                    yield name

            await scanner.run(InputReader().stream(items()), write_line, progress=Collect())
    return collected


def _lookup(by_domain: dict[str, DomainResult], name: str) -> DomainResult | None:
    found = by_domain.get(name)
    if found is not None:
        return found
    item = parse_input_line(name)
    key = item.text if isinstance(item, InvalidInput) else item
    return by_domain.get(str(key))


def render_demo_summary(console: Console, world: World, results: list[DomainResult]) -> bool:
    """One row per domain: the scanner's verdict and whether it is the expected one."""
    by_domain = {result.domain: result for result in results}
    table = Table(title="Demo world: verdicts")
    table.add_column("domain", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    table.add_column("indicators, or the first blocker", overflow="fold", ratio=3)
    table.add_column("as expected?", overflow="fold", ratio=1)
    all_ok = True
    for domain in world.domains:
        result = _lookup(by_domain, domain.name)
        if result is None:
            table.add_row(
                terminal(domain.name), Text("missing", "red"), Text(), Text("no line", "red")
            )
            all_ok = False
            continue
        if result.error is not None or result.verdict is None:
            verdict = Text("error", "yellow")
            detail = str(result.error)
        else:
            ready = result.verdict.enforce_ready
            verdict = Text("ready", "green") if ready else Text("not ready", "red")
            detail = ", ".join(sorted({i.code.value for i in result.verdict.indicators}))
            if not detail and not ready:
                # The blockers' codes, with what is behind each: short, whole at any width.
                detail = ", ".join(
                    dict.fromkeys(
                        f"{b.code} ({b.cause})" if b.cause else b.code
                        for b in result.verdict.blockers
                    )
                )
        problems = mismatches(result, domain.expect) if domain.expect is not None else []
        all_ok = all_ok and not problems
        table.add_row(
            terminal(domain.name),
            verdict,
            terminal(detail, limit=DETAIL_WIDTH),
            Text("yes", "green") if not problems else terminal("; ".join(problems), style="red"),
        )
    console.print(table)
    expected = sum(1 for d in world.domains if d.expect is not None)
    if all_ok:
        console.print(Text("Every verdict is the expected one.", "bold green"))
    else:
        console.print(Text(f"Some verdicts differ from the {expected} expected ones.", "bold red"))
    return all_ok
