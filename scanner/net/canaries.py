"""The positive controls of a blocked port 25: TCP connects to canaries and controls.

A canary is an SMTP host known to accept port 25; a control is a host whose other
port (HTTPS) answers. Only the TCP handshake is made, then the connection is
closed: no byte of SMTP or TLS is sent. What they showed is a `ControlEvidence`
for `scanner.core.egress.decide`.
"""

from __future__ import annotations

import errno
import ipaddress
from collections.abc import Sequence

import trio

from scanner.core.egress import ControlEvidence, ProbeResult, TargetResult
from scanner.models import DnsStatus
from scanner.net.connect import connect_tcp
from scanner.net.resolver import Resolver


def parse_target(text: str, default_port: int) -> tuple[str, int]:
    """`HOST`, `HOST:PORT`, `[V6]:PORT` or a bare IPv6 literal → (host, port)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":")
        return host, int(port) if port else default_port
    if text.count(":") == 1:
        host, port = text.split(":")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"not a port: {port!r}")
        return host.lower().rstrip("."), int(port)
    return text.lower().rstrip("."), default_port


async def host_addresses(resolver: Resolver, host: str) -> tuple[str, ...]:
    """`host`'s IPv4 then IPv6 addresses (none when a lookup fails), or `host` if a literal."""
    try:
        ipaddress.ip_address(host)
        return (host,)
    except ValueError:
        pass
    a, aaaa = await resolver.addresses(host)
    found = [*a.addresses] if a.status is DnsStatus.ANSWER else []
    found += [*aaaa.addresses] if aaaa.status is DnsStatus.ANSWER else []
    return tuple(found)


async def _try(resolver: Resolver, host: str, port: int, step_timeout: float) -> TargetResult:
    addresses = await host_addresses(resolver, host)
    if not addresses:
        return TargetResult(host, port, ProbeResult.UNRESOLVED)
    detail = ""
    for ip in addresses[:2]:
        with trio.move_on_after(step_timeout):
            try:
                stream = await connect_tcp(ip, port)
            except OSError as exc:
                code = exc.errno or 0
                detail = errno.errorcode.get(code, str(code))
                continue
            await stream.aclose()
            return TargetResult(host, port, ProbeResult.CONNECTED)
        detail = "timeout"
    return TargetResult(host, port, ProbeResult.NO_HANDSHAKE, detail)


async def gather_evidence(
    resolver: Resolver,
    canaries: Sequence[tuple[str, int]],
    controls: Sequence[tuple[str, int]],
    step_timeout: float,
) -> ControlEvidence:
    """Connect to every canary and control at once; each within `step_timeout` per address."""
    canary_results: list[TargetResult | None] = [None] * len(canaries)
    control_results: list[TargetResult | None] = [None] * len(controls)

    async def one(into: list[TargetResult | None], index: int, host: str, port: int) -> None:
        into[index] = await _try(resolver, host, port, step_timeout)

    async with trio.open_nursery() as nursery:
        for index, (host, port) in enumerate(canaries):
            nursery.start_soon(one, canary_results, index, host, port)
        for index, (host, port) in enumerate(controls):
            nursery.start_soon(one, control_results, index, host, port)
    return ControlEvidence(
        canaries=tuple(r for r in canary_results if r is not None),
        controls=tuple(r for r in control_results if r is not None),
    )
