"""`scanner demo` and `scanner lab serve`: the fixture lab on loopback, as commands.

Built when a command line names them (`scanner.cli.COMMANDS_ON_DEMAND`), so a scan
never imports the lab.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import trio
import typer

from scanner.render import output_console
from scanner.untrusted import terminal

EXIT_INTERRUPTED = 130


def register(app: typer.Typer) -> None:
    """Add `demo` and `lab serve` to `app`."""
    app.command()(demo)
    lab_app = typer.Typer(help="The fixture lab: real DNS, SMTP and HTTPS servers on loopback.")
    lab_app.command("serve")(lab_serve)
    app.add_typer(lab_app, name="lab")


def demo(
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output JSON lines file.")] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="Deadline in seconds for each network step.")
    ] = 2.0,
) -> None:
    """Start the bundled lab on loopback, scan its demo world, compare with the expected verdicts."""
    from scanner.lab import demo_world_path, load_world
    from scanner.lab.demo import render_demo_summary, scan_world

    out_path = out or Path("results") / f"demo-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.jsonl"
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        handle = out_path.open("w", encoding="utf-8")
    except OSError as exc:
        raise typer.BadParameter(
            f"cannot write {out_path}: {exc.strerror or exc}", param_hint="--out"
        ) from None
    world = load_world(demo_world_path())
    console = output_console()
    console.print(
        terminal(
            f"Serving the demo world ({len(world.domains)} domains) on loopback and scanning it ...",
            None,
        )
    )
    with handle:

        def write_line(text: str) -> None:
            handle.write(text + "\n")
            handle.flush()

        results = trio.run(scan_world, world, world.domain_names, write_line, timeout)
    ok = render_demo_summary(console, world, results)
    console.print(
        terminal(
            f"Results: {out_path}  (RFC 8460 reports: scanner report {out_path} --out-dir results/reports)",
            None,
        )
    )
    raise typer.Exit(0 if ok else 1)


def lab_serve(
    world: Annotated[
        Path | None, typer.Argument(help="World description (TOML); default: the demo world.")
    ] = None,
    workdir: Annotated[
        Path, typer.Option("--workdir", help="Where the lab CA file is written.")
    ] = Path("results/lab"),
    latency_ms: Annotated[
        float,
        typer.Option(
            "--latency-ms", min=0, help="Delay in ms added to every DNS, SMTP, HTTPS and TLS reply."
        ),
    ] = 0.0,
) -> None:
    """Serve a world on loopback until Ctrl-C, printing how to point the scanner at it."""
    from scanner.lab import Lab, WorldError, demo_world_path, load_world, serve_forever

    world_path = world or demo_world_path()
    try:
        load_world(world_path)  # a usage error before anything is bound
    except WorldError as exc:
        raise typer.BadParameter(str(exc), param_hint="WORLD") from None
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise typer.BadParameter(
            f"cannot use {workdir}: {exc.strerror or exc}", param_hint="--workdir"
        ) from None
    if not os.access(workdir, os.W_OK | os.X_OK):
        raise typer.BadParameter(f"cannot write into {workdir}", param_hint="--workdir")

    def on_ready(lab: Lab) -> None:
        typer.echo(f"world:     {world_path}")
        typer.echo(f"resolver:  {lab.resolver[0]}:{lab.resolver[1]}")
        typer.echo(f"smtp port: {lab.smtp_port}")
        typer.echo(f"https port: {lab.https_port}")
        typer.echo(f"CA file:   {lab.ca_file}")
        typer.echo("scan with: scanner scan DOMAIN " + " ".join(lab.scanner_args()))
        typer.echo("serving until Ctrl-C")

    stopped = False
    try:
        trio.run(
            lambda: serve_forever(world_path, workdir, on_ready=on_ready, latency=latency_ms / 1000)
        )
    except* KeyboardInterrupt:  # alone, or inside a group when it lands in a server task
        stopped = True
    if stopped:
        typer.echo("stopped")
        raise typer.Exit(EXIT_INTERRUPTED)
