"""Human-readable views of result lines: `scanner check` and `scanner stats`.

These read the JSON line (DESIGN §4), the same contract other tools read, so
what a person sees is exactly what the file says.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.table import Table


def could_not_scan(line: dict[str, Any]) -> bool:
    """Exit 2 of `scanner check`: an error, or no MX address could be tested at all."""
    if line.get("error"):
        return True
    lookup = line.get("mx_lookup") or {}
    if lookup.get("status") in ("servfail", "refused", "timeout", "error"):
        return True
    addresses = [
        address
        for mx in line.get("mx") or []
        if mx.get("source") == "dns"
        for address in mx.get("addresses") or []
    ]
    return bool(addresses) and all(a.get("status") != "tested" for a in addresses)


def render_check(console: Console, line: dict[str, Any]) -> None:
    domain = line.get("domain", "?")
    if line.get("error"):
        console.print(f"[bold red]{domain}: could not scan[/]: {line['error']}")
        return
    sts = line.get("mta_sts") or {}
    policy = sts.get("policy")
    console.print(f"[bold]{domain}[/]  scanned {line.get('scanned_at')}")
    console.print(f"  _mta-sts record: {sts.get('record') or '[red]none[/]'}")
    if policy:
        console.print(
            f"  policy: mode [bold]{policy.get('mode')}[/], max_age {policy.get('max_age')}, "
            f"mx {', '.join(policy.get('mx') or [])}"
        )
    error = sts.get("error")
    if error:
        console.print(f"  policy problem: [red]{error.get('result_type') or 'none'}[/] {error.get('detail')}")
    tlsrpt = line.get("tlsrpt") or {}
    console.print(f"  _smtp._tls record: {tlsrpt.get('record') or '[yellow]none[/]'}")

    table = Table(title="MX hosts and addresses", show_lines=False)
    for column in ("MX", "pref", "in policy", "address", "status", "STARTTLS", "TLS", "certificate", "result types"):
        table.add_column(column)
    for mx in line.get("mx") or []:
        addresses = mx.get("addresses") or [{}]
        for address in addresses:
            cert = address.get("certificate") or {}
            cert_text = ""
            if cert:
                problems = []
                if not cert.get("chain_valid"):
                    problems.append(cert.get("verify_error") or "untrusted")
                if not cert.get("name_matches"):
                    problems.append("name mismatch")
                cert_text = ("[green]valid[/]" if not problems else "[red]" + ", ".join(problems) + "[/]")
                cert_text += f" until {str(cert.get('not_after', ''))[:10]}"
            tls = address.get("tls") or {}
            status = address.get("status", "")
            if address.get("reason"):
                status = f"{status}: {address['reason']}"
            in_policy = mx.get("in_policy")
            table.add_row(
                f"{mx.get('hostname')}" + (" (policy)" if mx.get("source") == "policy" else ""),
                str(mx.get("preference") if mx.get("preference") is not None else ""),
                "" if in_policy is None else ("yes" if in_policy else "[red]no[/]"),
                str(address.get("ip", "")),
                status,
                str(address.get("starttls") or ""),
                str(tls.get("version") or ""),
                cert_text,
                ", ".join(address.get("result_types") or []),
            )
    console.print(table)
    indicators = line.get("indicators") or []
    if indicators:
        console.print("[bold]Downgrade indicators[/]")
        for indicator in indicators:
            where = " ".join(str(x) for x in (indicator.get("mx"), indicator.get("ip")) if x)
            console.print(f"  [red]{indicator.get('code')}[/] {where}: {indicator.get('detail')}")
    if line.get("enforce_ready"):
        console.print("[bold green]Ready for mode: enforce[/]")
    else:
        console.print("[bold red]Not ready for mode: enforce[/]")
    for blocker in line.get("blockers") or []:
        console.print(f"  [red]blocker[/]: {blocker}")
    for warning in line.get("warnings") or []:
        console.print(f"  [yellow]warning[/]: {warning}")


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
