"""Same answers: the part of a results line two scans of one world must agree on.

A staged scan (`scanner stage`) and a one-process scan of the same domains are held
to give the same answers (docs/output.md#staged-scans). `answers` keeps of a line what
a scan concludes and drops what depends on when and how fast it ran:

- kept: the domain and its rank, the error's kind, `enforce_ready`, the blocker and
  warning codes (with the host, address and cause each concerns), the indicators
  (code, MX host, address), the `_mta-sts` and `_smtp._tls` records, the policy and
  the codes of their errors, the MX lookup's status, and for every MX host (name,
  preference, source, `in_policy`, DANE `applies`) each address's status, reason code,
  STARTTLS status, TLS version, result types, certificate digest and checks, and
  DANE status;
- dropped: times (`scanned_at`, the report's window, certificate validity dates and
  expiry-window words), timings, attempt counts and transcripts (a busy server's
  retries), the words of blockers, warnings and indicators (which quote times and
  counts), and the report's identifiers.

`differences` compares two files' lines domain by domain.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

Line = Mapping[str, object]


def _object(value: object) -> Line:
    return value if isinstance(value, dict) else {}


def _items(value: object) -> list[object]:
    return value if isinstance(value, list) else []


def _problems(items: object) -> list[tuple[str, ...]]:
    return sorted(
        (str(p.get("code")), str(p.get("host")), str(p.get("address")), str(p.get("cause")))
        for p in _items(items)
        if isinstance(p, dict)
    )


def _address(address: Line) -> tuple[object, ...]:
    tls = _object(address.get("tls"))
    certificate = _object(address.get("certificate"))
    dane = _object(address.get("dane"))
    return (
        address.get("ip"),
        address.get("status"),
        address.get("reason_code"),
        address.get("starttls"),
        tls.get("version"),
        tuple(_items(address.get("result_types"))),
        certificate.get("sha256"),
        certificate.get("chain_valid"),
        certificate.get("verify_error"),
        certificate.get("name_matches"),
        address.get("after_tls_error") is not None,
        dane.get("status"),
    )


def _host(host: Line) -> tuple[object, ...]:
    dane = _object(host.get("dane"))
    return (
        host.get("hostname"),
        host.get("preference"),
        host.get("source"),
        host.get("in_policy"),
        dane.get("applies"),
        tuple(_address(_object(address)) for address in _items(host.get("addresses"))),
    )


def answers(line: Line) -> dict[str, object]:
    """What two scans of one world must agree on in the line of one domain."""
    sts = _object(line.get("mta_sts"))
    sts_error = _object(sts.get("error"))
    tlsrpt = _object(line.get("tlsrpt"))
    lookup = _object(line.get("mx_lookup"))
    error = line.get("error")
    return {
        "domain": line.get("domain"),
        "rank": line.get("rank"),
        "error": error.partition(":")[0] if isinstance(error, str) else None,
        "enforce_ready": line.get("enforce_ready"),
        "blockers": _problems(line.get("blockers")),
        "warnings": _problems(line.get("warnings")),
        "indicators": sorted(
            (str(i.get("code")), str(i.get("mx")), str(i.get("ip")))
            for i in _items(line.get("indicators"))
            if isinstance(i, dict)
        ),
        "mta_sts": (
            sts.get("record"),
            sts.get("id"),
            sts.get("policy"),
            sts_error.get("result_type"),
            sts_error.get("code"),
        ),
        "tlsrpt": (
            tlsrpt.get("record"),
            tuple(_items(tlsrpt.get("rua"))),
            tlsrpt.get("error_code"),
        ),
        "mx_lookup": (lookup.get("status"), lookup.get("null_mx"), lookup.get("implicit")),
        "mx": [_host(_object(host)) for host in _items(line.get("mx"))],
    }


def differences(expected: Iterable[Line], actual: Iterable[Line], *, limit: int = 20) -> list[str]:
    """Where two sets of lines disagree on `answers`, domain by domain (order does not
    matter); at most `limit` differences are described. Empty when they agree."""
    left = {str(line.get("domain")): answers(line) for line in expected}
    right = {str(line.get("domain")): answers(line) for line in actual}
    found: list[str] = []
    for domain in sorted(left.keys() - right.keys()):
        found.append(f"{domain}: only in the first")
    for domain in sorted(right.keys() - left.keys()):
        found.append(f"{domain}: only in the second")
    for domain in sorted(left.keys() & right.keys()):
        one, two = left[domain], right[domain]
        for key in one:
            if one[key] != two[key]:
                found.append(f"{domain}: {key}: {one[key]!r} != {two[key]!r}")
    if len(found) > limit:
        return [*found[:limit], f"... {len(found) - limit} more"]
    return found
