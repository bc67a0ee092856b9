"""Human-readable views: `scanner check` (a typed result) and `scanner stats` (result files).

`render_check` reads the typed `DomainResult`; `adoption_statistics` reads result
lines from files, the same contract other tools read, tolerating foreign shapes.
Text from records, servers and certificates is added as plain `Text`, never as markup.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from scanner.core.assess import AddressVerdict, MxVerdict
from scanner.core.reasons import reason_text
from scanner.core.result import DomainResult
from scanner.core.tlsrpt import rfc3339_utc
from scanner.models import MxSource


def output_console(*, stderr: bool = False) -> Console:
    """A console for a view: styled on a terminal; plain and never wrapped otherwise.

    Piped or redirected output is read by programs and by `grep`: no colour codes,
    and no word cut at 80 columns.
    """
    console = Console(stderr=stderr)
    if console.is_terminal:
        return console
    return Console(stderr=stderr, width=UNWRAPPED_WIDTH, no_color=True, highlight=False)


UNWRAPPED_WIDTH = 100_000


def _styled(text: str, style: str) -> Text:
    return Text(text, style=style)


def _certificate_cell(address: AddressVerdict) -> Text:
    probe = address.probe
    if probe is None or probe.certificate is None:
        return Text()
    check = probe.certificate
    problems: list[str] = []
    if not check.chain.trusted:
        problems.append(check.chain.verify_error or "untrusted")
    if not check.name_matches:
        problems.append("name mismatch")
    cell = _styled("valid", "green") if not problems else _styled(", ".join(problems), "red")
    cell.append(f" until {rfc3339_utc(check.leaf.not_after)[:10]}")
    return cell


def _address_rows(host: MxVerdict) -> Iterator[tuple[Text | str, ...]]:
    label = host.hostname + (" (policy)" if host.source is MxSource.POLICY else "")
    preference = str(host.preference) if host.preference is not None else ""
    in_policy: Text | str = ""
    if host.in_policy is not None:
        in_policy = "yes" if host.in_policy else _styled("no", "red")
    if not host.addresses:
        yield (label, preference, in_policy, "", "", "", "", "", "")
    for address in host.addresses:
        status = address.status.value
        if address.interruption is not None:
            status = f"{status}: {reason_text(address.interruption)}"
        probe = address.probe
        version = probe.tls.version if probe is not None and probe.tls is not None else ""
        yield (
            label,
            preference,
            in_policy,
            address.ip,
            status,
            address.starttls.value if address.starttls is not None else "",
            version,
            _certificate_cell(address),
            ", ".join(t.value for t in address.result_types),
        )


def render_check(console: Console, result: DomainResult) -> None:
    """The human verdict of one domain: records, policy, every address, readiness."""
    if result.error is not None or result.facts is None or result.verdict is None:
        console.print(
            Text.assemble(_styled(f"{result.domain}: could not scan", "bold red"), f": {result.error}")
        )
        return
    facts, verdict = result.facts, result.verdict
    console.print(Text.assemble(_styled(facts.domain, "bold"), f"  scanned {rfc3339_utc(facts.scanned_at)}"))
    record = facts.sts_record.raw if facts.sts_record is not None else None
    console.print(Text.assemble("  _mta-sts record: ", record or _styled("none", "red")))
    fetch = facts.policy_fetch
    policy = fetch.policy if fetch is not None else None
    if policy is not None:
        console.print(
            Text.assemble(
                "  policy: mode ",
                _styled(policy.mode.value, "bold"),
                f", max_age {policy.max_age}, mx {', '.join(policy.mx)}",
            )
        )
    if fetch is not None and fetch.failure is not None:
        console.print(
            Text.assemble(
                "  policy problem: ",
                _styled(fetch.failure.result_type.value, "red"),
                f" {fetch.failure.detail}",
            )
        )
    tlsrpt = facts.tlsrpt_record.raw if facts.tlsrpt_record is not None else None
    console.print(Text.assemble("  _smtp._tls record: ", tlsrpt or _styled("none", "yellow")))

    table = Table(title="MX hosts and addresses", show_lines=False)
    for column in CHECK_COLUMNS:
        table.add_column(column)
    for host in verdict.mx:
        for row in _address_rows(host):
            table.add_row(*row)
    console.print(table)
    if verdict.indicators:
        console.print(_styled("Downgrade indicators", "bold"))
        for indicator in verdict.indicators:
            where = " ".join(x for x in (indicator.mx, indicator.ip) if x)
            console.print(
                Text.assemble("  ", _styled(indicator.code.value, "red"), f" {where}: {indicator.detail}")
            )
    if verdict.enforce_ready:
        console.print(_styled("Ready for mode: enforce", "bold green"))
    else:
        console.print(_styled("Not ready for mode: enforce", "bold red"))
    for blocker in verdict.blockers:
        console.print(Text.assemble("  ", _styled("blocker", "red"), f": {blocker}"))
    for warning in verdict.warnings:
        console.print(Text.assemble("  ", _styled("warning", "yellow"), f": {warning}"))


CHECK_COLUMNS = (
    "MX",
    "pref",
    "in policy",
    "address",
    "status",
    "STARTTLS",
    "TLS",
    "certificate",
    "result types",
)


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def adoption_statistics(lines: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Counts over result lines: records, policy modes, readiness, indicators, result types.

    Fields of an unexpected shape (a hand-edited or foreign file) count as absent.
    """
    total = errors = with_record = with_policy = with_tlsrpt = ready = 0
    modes: Counter[str] = Counter()
    policy_errors: Counter[str] = Counter()
    indicators: Counter[str] = Counter()
    result_types: Counter[str] = Counter()
    starttls: Counter[str] = Counter()
    sessions = tested = 0
    for line in lines:
        total += 1
        if line.get("error"):
            errors += 1
            continue
        sts = _dict(line.get("mta_sts"))
        if sts.get("record"):
            with_record += 1
        policy = _dict(sts.get("policy"))
        if policy:
            with_policy += 1
            modes[str(policy.get("mode"))] += 1
        sts_error = _dict(sts.get("error"))
        if sts_error.get("result_type"):
            policy_errors[str(sts_error["result_type"])] += 1
        if _dict(line.get("tlsrpt")).get("record"):
            with_tlsrpt += 1
        if line.get("enforce_ready") is True:
            ready += 1
        for code in {str(_dict(i).get("code")) for i in _list(line.get("indicators"))}:
            indicators[code] += 1
        for mx in _list(line.get("mx")):
            for address in _list(_dict(mx).get("addresses")):
                address = _dict(address)
                sessions += 1
                if address.get("status") == "tested":
                    tested += 1
                    starttls[str(address.get("starttls"))] += 1
                for result_type in _list(address.get("result_types")):
                    result_types[str(result_type)] += 1
    return {
        "domains": total,
        "errors": errors,
        "with_mta_sts_record": with_record,
        "with_valid_policy": with_policy,
        "with_tlsrpt_record": with_tlsrpt,
        "enforce_ready": ready,
        "policy_modes": dict(modes.most_common()),
        "policy_errors": dict(policy_errors.most_common()),
        "domains_with_indicator": dict(indicators.most_common()),
        "addresses": sessions,
        "addresses_tested": tested,
        "starttls": dict(starttls.most_common()),
        "session_result_types": dict(result_types.most_common()),
    }


def render_statistics(console: Console, numbers: dict[str, Any]) -> None:
    total = max(int(numbers["domains"]), 1)
    table = Table(title="Adoption")
    table.add_column("measure")
    table.add_column("count", justify="right")
    table.add_column("share", justify="right")
    for key in ("domains", "errors", "with_mta_sts_record", "with_valid_policy", "with_tlsrpt_record", "enforce_ready"):
        value = int(numbers[key])
        table.add_row(key.replace("_", " "), str(value), f"{100 * value / total:.1f} %")
    console.print(table)
    for key in ("policy_modes", "policy_errors", "domains_with_indicator", "starttls", "session_result_types"):
        counts = numbers[key]
        if not counts:
            continue
        sub = Table(title=key.replace("_", " "))
        sub.add_column("value")
        sub.add_column("count", justify="right")
        for name, value in counts.items():
            sub.add_row(name, str(value))
        console.print(sub)
