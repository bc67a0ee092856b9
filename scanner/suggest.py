"""`scanner policy suggest DOMAIN`: the MTA-STS policy and record for the MX set seen today.

A fresh scan (the network options and `Scanner.scan_domain`, as `scanner check`)
gives the MX hosts, the live record and policy, and the readiness verdict;
`scanner.core.policy_suggestion` decides; this module prints. The policy text
goes to stdout, the notes and warnings to stderr. Exit status: 0 with a
suggestion, 2 when none can be made (the scan failed, no MX, null MX),
130 when interrupted.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.text import Text

from scanner.core.policy_suggestion import Suggestion, SuggestionError, suggest_policy
from scanner.core.result import DomainResult
from scanner.core.sts import MAX_AGE_LIMIT
from scanner.options import NetworkOptions, build_scanner, with_probe_options
from scanner.render import output_console
from scanner.untrusted import line, terminal

EXIT_NO_SUGGESTION = 2
EXIT_INTERRUPTED = 130

policy_app = typer.Typer(
    help="MTA-STS policy helpers.",
    no_args_is_help=True,
    add_completion=False,
)


def suggestion_for(
    result: DomainResult, now: datetime, max_age: int | None, rua: Sequence[str] = ()
) -> Suggestion | SuggestionError:
    """The suggestion from one scan's result (pure)."""
    facts = result.facts
    if facts is None:
        reason = str(result.error) if result.error is not None else "no facts"
        return SuggestionError(f"the scan of {result.domain} failed: {reason}")
    if facts.mx.null_mx:
        return SuggestionError(
            f"{result.domain} publishes a null MX (RFC 7505): it accepts no mail, so it needs no MTA-STS policy"
        )
    live_policy = facts.policy_fetch.policy if facts.policy_fetch is not None else None
    live_id = facts.sts_record.id if facts.sts_record is not None else None
    return suggest_policy(
        result.domain,
        [record.host for record in facts.mx.records],
        ready=result.enforce_ready,
        now=now,
        live_policy=live_policy,
        live_id=live_id,
        max_age=max_age,
        tlsrpt_missing=facts.tlsrpt_record is None,
        rua=rua,
    )


@policy_app.command("suggest")
@with_probe_options
def suggest(
    domain: Annotated[str, typer.Argument(help="The policy domain.")],
    max_age: Annotated[
        int | None,
        typer.Option(
            "--max-age",
            min=1,
            max=MAX_AGE_LIMIT,
            metavar="SECONDS",
            help="max_age in seconds; default: the live policy's, else 1209600 (two weeks).",
        ),
    ] = None,
    rua: Annotated[
        list[str] | None,
        typer.Option(
            "--rua",
            metavar="URI",
            help="Where reports go, for a _smtp._tls record when the domain has none "
            "(mailto: or https:, repeatable); default: mailto:tlsrpt@DOMAIN.",
        ),
    ] = None,
    *,
    network: NetworkOptions,
) -> None:
    """Print the policy and _mta-sts record that would be valid for the MX hosts seen today."""
    from scanner.core.inputs import InvalidInput, parse_input_line
    from scanner.run import scan_talking

    stderr = output_console(stderr=True)
    item = parse_input_line(domain)
    if item is None or isinstance(item, InvalidInput):
        stderr.print(terminal(f"error: {domain}: {item.reason if item else 'empty'}", None, "red"))
        raise typer.Exit(EXIT_NO_SUGGESTION)
    scanner = build_scanner(network)
    result = scan_talking(scanner, item)
    if result is None:
        stderr.print(terminal("interrupted", None, "yellow"))
        raise typer.Exit(EXIT_INTERRUPTED)
    suggestion = suggestion_for(result, datetime.now(UTC), max_age, rua or ())
    if isinstance(suggestion, SuggestionError):
        stderr.print(terminal(f"error: {suggestion.reason}", None, "red"))
        raise typer.Exit(EXIT_NO_SUGGESTION)
    out = output_console()
    out.print(
        line(
            Text("# https://mta-sts.", style="dim"),
            (suggestion.domain, "dim"),
            Text("/.well-known/mta-sts.txt", style="dim"),
        )
    )
    for text in suggestion.policy_text.splitlines():
        out.print(terminal(text, None))
    out.print(Text("# DNS", style="dim"))
    out.print(
        line(Text("_mta-sts."), suggestion.domain, Text(". IN TXT "), f'"{suggestion.record}"')
    )
    if suggestion.tlsrpt_record is not None:
        out.print(
            line(
                Text("_smtp._tls."),
                suggestion.domain,
                Text(". IN TXT "),
                f'"{suggestion.tlsrpt_record}"',
            )
        )
    for warning in suggestion.warnings:
        stderr.print(line(Text("warning: ", style="yellow"), warning, limit=None))
