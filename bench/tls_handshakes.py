"""Sequential TLS handshake rate of scanner.net.tls against `openssl s_time`.

Starts `openssl s_server` on 127.0.0.1 (another process) with a trustme
certificate, then for `--seconds` each:

1. scanner: open TCP, `start_tls` (full handshake, chain capture), close;
2. scanner + verify: the same plus `check_certificate` against certifi + the test CA;
3. `openssl s_time -connect 127.0.0.1:PORT -new -time SECONDS`.

Usage: python bench/tls_handshakes.py [--seconds 10] [--port 0]
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import trio
import trustme

from scanner.net.tls import TlsFailure, build_client_context, start_tls
from scanner.net.trust import TrustStore, check_certificate

HOST = "127.0.0.1"
NAME = "mx.bench.example"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"s_server did not start on port {port}")


async def scanner_rate(
    port: int, seconds: float, trust: TrustStore | None
) -> tuple[int, float, float]:
    context = build_client_context()
    count = 0
    cpu_start = time.process_time()
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        transport = await trio.open_tcp_stream(HOST, port)
        with trio.fail_after(5):
            result = await start_tls(transport, context, NAME)
        if isinstance(result, TlsFailure):
            await transport.aclose()
            raise RuntimeError(f"handshake failed: {result.reason}")
        if trust is not None:
            check = check_certificate(result.session(), trust, NAME, datetime.now(UTC))
            if not (check.chain.trusted and check.name_matches):
                raise RuntimeError(f"unexpected verdict: {check}")
        await result.aclose()
        count += 1
    return count, time.perf_counter() - start, time.process_time() - cpu_start


def s_time_rate(port: int, seconds: int) -> str:
    completed = subprocess.run(
        ["openssl", "s_time", "-connect", f"{HOST}:{port}", "-new", "-time", str(seconds)],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = [line for line in completed.stdout.splitlines() if "connections" in line]
    return "\n    ".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    port = args.port or free_port()

    ca = trustme.CA()
    leaf = ca.issue_cert(NAME)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        cert_file, key_file, ca_file = (directory / n for n in ("cert.pem", "key.pem", "ca.pem"))
        leaf.cert_chain_pems[0].write_to_path(str(cert_file))
        leaf.private_key_pem.write_to_path(str(key_file))
        ca.cert_pem.write_to_path(str(ca_file))
        server = subprocess.Popen(
            [
                *("openssl", "s_server", "-cert", str(cert_file), "-key", str(key_file)),
                *("-accept", str(port), "-www", "-quiet"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(port)
            trust = TrustStore.from_files([ca_file])
            for label, store in (("start_tls", None), ("start_tls + verify", trust)):
                count, elapsed, cpu = trio.run(scanner_rate, port, args.seconds, store)
                print(
                    f"scanner {label:<19} {count} handshakes in {elapsed:.1f} s real"
                    f" = {count / elapsed:.0f}/s; {count / cpu:.0f}/client CPU s"
                )
            print(f"openssl s_time -new:\n    {s_time_rate(port, args.seconds)}")
        finally:
            server.terminate()
            server.wait(timeout=10)


if __name__ == "__main__":
    main()
