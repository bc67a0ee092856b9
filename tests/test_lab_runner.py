"""Starting, sharing, stopping and scaling labs."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import dns.asyncquery
import dns.message
import dns.rcode
import pytest
import trio

from scanner.lab import Lab, SmtpBehaviour, demo_world_path, open_lab, parse_world, serve_forever

STEP = 5.0


def ipv6_loopback_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


async def smtp_greeting(address: str, port: int) -> bytes:
    with trio.fail_after(STEP):
        stream = await trio.open_tcp_stream(address, port)
        async with stream:
            data = b""
            while not data.endswith(b"\r\n"):
                data += await stream.receive_some(1024)
            await stream.send_all(b"QUIT\r\n")
            return data


async def test_ports_and_files(demo_lab: Lab, tmp_path: Path) -> None:
    host, port = demo_lab.resolver
    assert host == "127.0.0.1"
    assert port != 53
    assert len({port, demo_lab.smtp_port, demo_lab.https_port}) == 3
    assert demo_lab.ca_file == tmp_path / "lab" / "lab-ca.pem"
    assert demo_lab.ca_file.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")


async def test_scanner_args(demo_lab: Lab) -> None:
    args = demo_lab.scanner_args()
    assert args == [
        "--resolver",
        f"127.0.0.1:{demo_lab.resolver[1]}",
        "--smtp-port",
        str(demo_lab.smtp_port),
        "--https-port",
        str(demo_lab.https_port),
        "--ca-file",
        str(demo_lab.ca_file),
        "--allow-private",
    ]


async def test_every_open_smtp_address_listens_on_the_shared_port(demo_lab: Lab) -> None:
    greeting_servers = [
        s
        for s in demo_lab.world.servers
        if s.behaviour
        not in (SmtpBehaviour.CLOSED, SmtpBehaviour.SILENT, SmtpBehaviour.GREETING_554)
    ]
    for server in greeting_servers:
        greeting = await smtp_greeting(server.address, demo_lab.smtp_port)
        assert greeting[:3] in (b"220", b"421"), server


async def test_lab_stops_on_exit(tmp_path: Path) -> None:
    world = parse_world(demo_world_path().read_text(encoding="utf-8"))
    async with open_lab(world, tmp_path) as lab:
        port = lab.smtp_port
        assert (await smtp_greeting("127.0.1.1", port)).startswith(b"220")
    with trio.fail_after(STEP), pytest.raises(OSError, match="connect"):
        await trio.open_tcp_stream("127.0.1.1", port)


async def test_errors_in_the_block_propagate_unwrapped(tmp_path: Path) -> None:
    world = parse_world(demo_world_path().read_text(encoding="utf-8"))
    with pytest.raises(ZeroDivisionError):
        async with open_lab(world, tmp_path):
            _ = 1 / 0


async def test_two_labs_of_one_world_side_by_side(demo_lab: Lab, tmp_path: Path) -> None:
    async with open_lab(demo_lab.world, tmp_path / "second") as second:
        assert second.smtp_port != demo_lab.smtp_port
        assert second.https_port != demo_lab.https_port
        assert (await smtp_greeting("127.0.1.1", second.smtp_port)).startswith(b"220")
        assert (await smtp_greeting("127.0.1.1", demo_lab.smtp_port)).startswith(b"220")
    assert second.smtp_connections("127.0.1.1") == 1
    assert demo_lab.smtp_connections("127.0.1.1") == 1


async def test_serve_forever_reports_readiness(tmp_path: Path) -> None:
    ready: list[Lab] = []
    with trio.move_on_after(STEP):
        async with trio.open_nursery() as nursery:

            def on_ready(lab: Lab) -> None:
                ready.append(lab)
                nursery.cancel_scope.cancel()

            nursery.start_soon(
                lambda: serve_forever(demo_world_path(), tmp_path, on_ready=on_ready)
            )
    assert len(ready) == 1
    assert ready[0].world.domain("testing-ready.example").expect is not None


@pytest.mark.skipif(not ipv6_loopback_available(), reason="no IPv6 loopback")
async def test_ipv6_loopback_server(tmp_path: Path) -> None:
    world = parse_world(
        """
[domains."six.example"]
dns."@" = { mx = ["10 mx.six.example"] }
servers = [
    { hostname = "mx.six.example", address = "127.0.1.1" },
    { hostname = "mx.six.example", address = "::1" },
]
"""
    )
    assert world.records["mx.six.example"].aaaa == ("::1",)
    async with open_lab(world, tmp_path) as lab:
        assert (await smtp_greeting("::1", lab.smtp_port)).startswith(b"220 mx.six.example")
        assert lab.smtp_connections("::1") == 1
        assert lab.smtp_connections("0:0:0:0:0:0:0:1") == 1


def big_world_text(count: int) -> str:
    parts = [
        '[[servers]]\nhostname = "mx.shared.example"\naddress = "127.0.5.1"\n',
    ]
    for index in range(count):
        address = f"127.1.{index // 250}.{index % 250 + 1}"
        parts.append(
            f'[domains."d{index}.example"]\n'
            f'dns."@" = {{ mx = ["10 mx.d{index}.example", "20 mx.shared.example"] }}\n'
            f'dns."_mta-sts" = {{ txt = ["v=STSv1; id=a{index}"] }}\n'
            f'servers = [{{ hostname = "mx.d{index}.example", address = "{address}" }}]\n'
            f'policy = {{ address = "127.2.0.1", body = "version: STSv1\\nmode: testing\\n'
            f'mx: mx.d{index}.example\\nmax_age: 86400\\n" }}\n'
        )
    return "".join(parts)


async def test_big_world_starts_in_seconds(tmp_path: Path) -> None:
    count = 2000
    started = time.monotonic()
    world = parse_world(big_world_text(count))
    async with open_lab(world, tmp_path) as lab:
        elapsed = time.monotonic() - started
        # Generous for a loaded 2-core machine (a linear start takes about a
        # second), yet a start quadratic in the domain count would exceed it.
        assert elapsed < 60, f"{count} domains took {elapsed:.1f} s"
        last = f"127.1.{(count - 1) // 250}.{(count - 1) % 250 + 1}"
        assert (await smtp_greeting(last, lab.smtp_port)).startswith(b"220 mx.d1999.example")
        host, port = lab.resolver
        with trio.fail_after(STEP):
            response = await dns.asyncquery.udp(
                dns.message.make_query("mx.d1999.example", "A"), host, port=port
            )
        assert response.rcode() == dns.rcode.NOERROR
        assert response.answer[0][0].to_text() == last
