"""A real firewall rule drops outbound SMTP in a network namespace: `scan` stops, `check` says why.

The test makes its own namespace (`ip netns add`): loopback up, and the MX hosts'
addresses 10.225.N.1 on it (five distinct /24s, nothing listening: without the
rule they refuse). The lab runs inside it (DNS on 127.0.0.1, the canary SMTP
server, the policy host's HTTPS). One iptables rule in the namespace drops TCP to
the lab's SMTP port, which stands in for port 25 (the lab binds a free port);
DNS and HTTPS are untouched. Nothing leaves the namespace. Needs root, iproute2
and iptables (`.ci/run` installs it); skipped, saying why, otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.netns

DEAD = 5
CANARY = "127.0.41.1"
POLICY_HOST = "127.0.39.1"


def _world() -> str:
    parts = [
        f'[[servers]]\nhostnames = ["canary.example"]\naddress = "{CANARY}"\n',
    ]
    for n in range(DEAD):
        parts.append(
            f'[domains."dead{n}.example"]\n'
            f'dns."@" = {{ mx = ["10 mx.dead{n}.example"] }}\n'
            f'dns."mx" = {{ a = ["10.225.{n}.1"] }}\n'
            'dns."_mta-sts" = { txt = ["v=STSv1; id=1"] }\n'
            f'policy.address = "{POLICY_HOST}"\n'
            f'policy.body = "version: STSv1\\nmode: testing\\nmx: mx.dead{n}.example\\n'
            'max_age: 86400\\n"\n'
            "expect = { enforce_ready = false }\n"
        )
    parts.append(
        '[domains."dual.example"]\n'
        'dns."@" = { mx = ["10 mx.dual.example"] }\n'
        f'dns."mx" = {{ a = ["{CANARY}"], aaaa = ["2606:4700:4700::25"] }}\n'
        "expect = { enforce_ready = false }\n"
    )
    return "\n".join(parts)


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create a network namespace and a firewall rule"
    if shutil.which("ip") is None:
        return "needs iproute2 (`ip`)"
    if shutil.which("iptables") is None:
        return "needs iptables (Debian package `iptables`; .ci/run installs it)"
    return None


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=check, timeout=120)


@pytest.fixture
def namespace() -> Iterator[str]:
    why = _why_not()
    if why is not None:
        pytest.skip(why)
    name = f"scanp25-{os.getpid()}"
    made = _run("ip", "netns", "add", name, check=False)
    if made.returncode != 0:
        pytest.skip(f"cannot create a network namespace: {made.stderr.strip()}")
    try:
        _run("ip", "-n", name, "link", "set", "lo", "up")
        for n in range(DEAD):
            _run("ip", "-n", name, "addr", "add", f"10.225.{n}.1/32", "dev", "lo")
        probe = _run("ip", "netns", "exec", name, "iptables", "-L", "OUTPUT", check=False)
        if probe.returncode != 0:
            pytest.skip(f"iptables does not work here: {probe.stderr.strip()}")
        yield name
    finally:
        _run("ip", "netns", "del", name, check=False)


@pytest.fixture
def lab_in(namespace: str, tmp_path: Path) -> Iterator[list[str]]:
    """The lab served inside the namespace; the scanner options that point at it."""
    world = tmp_path / "world.toml"
    world.write_text(_world(), encoding="utf-8")
    with subprocess.Popen(
        ["ip", "netns", "exec", namespace, sys.executable, "-m", "scanner", "lab", "serve",
         str(world), "--workdir", str(tmp_path / "lab")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as process:  # fmt: skip
        try:
            assert process.stdout is not None
            args: list[str] = []
            for line in process.stdout:
                if line.startswith("scan with: "):
                    args = line.split()[5:]  # after "scan with: scanner scan DOMAIN"
                    break
            assert args, process.stderr.read() if process.stderr else "lab did not start"
            yield args
        finally:
            process.terminate()
            process.wait(timeout=10)


def _scanner(namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
    return _run("ip", "netns", "exec", namespace, sys.executable, "-m", "scanner", *args,
                check=False)  # fmt: skip


def _port(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def test_a_dropped_smtp_port_stops_the_scan_with_the_message(
    namespace: str, lab_in: list[str], tmp_path: Path
) -> None:
    smtp_port = _port(lab_in, "--smtp-port")
    https_port = _port(lab_in, "--https-port")
    domains = [f"dead{n}.example" for n in range(DEAD)]
    controls = ["--canary", f"{CANARY}:{smtp_port}", "--control", f"{POLICY_HOST}:{https_port}",
                "--timeout", "1"]  # fmt: skip
    rule = ["OUTPUT", "-p", "tcp", "--dport", smtp_port, "-j", "DROP"]
    _run("ip", "netns", "exec", namespace, "iptables", "-A", *rule)

    for workers in ("1", "2"):
        out = tmp_path / f"blocked-{workers}.jsonl"
        scan = _scanner(namespace, "scan", *domains, "--out", str(out), "--workers", workers,
                        "--no-progress", *controls, *lab_in)  # fmt: skip
        assert scan.returncode == 3, scan.stderr
        assert "appears to block outbound TCP port 25" in scan.stderr
        assert f"{CANARY} port {smtp_port}: no TCP handshake (timeout)" in scan.stderr
        assert "What to do" in scan.stderr
        assert out.read_text(encoding="utf-8") == ""  # no "not ready" line

    check = _scanner(namespace, "check", "dead0.example", *controls, *lab_in)
    assert check.returncode == 2, check.stderr
    assert "appears to block outbound TCP port 25" in check.stderr, check.stderr

    # The twin: without the rule the same dead hosts refuse, the canary answers, and
    # every domain is written (not ready: its MX refuses).
    _run("ip", "netns", "exec", namespace, "iptables", "-D", *rule)
    out = tmp_path / "open.jsonl"
    scan = _scanner(namespace, "scan", *domains, "--out", str(out), "--no-progress", *controls,
                    *lab_in)  # fmt: skip
    assert scan.returncode == 0, scan.stderr
    lines = [json.loads(text) for text in out.read_text(encoding="utf-8").splitlines()]
    assert sorted(line["domain"] for line in lines) == domains
    assert all(line["enforce_ready"] is False for line in lines)
    assert (
        json.loads((tmp_path / "open.jsonl.meta.json").read_text())["vantage"]["port25"] == "open"
    )


def test_without_an_ipv6_route_v6_addresses_carry_the_code(
    namespace: str, lab_in: list[str], tmp_path: Path
) -> None:
    """The namespace's routing table has no IPv6 route: decided from it, nothing is sent."""
    out = tmp_path / "dual.jsonl"
    scan = _scanner(namespace, "scan", "dual.example", "--out", str(out), "--no-progress",
                    "--timeout", "1", *lab_in)  # fmt: skip
    assert scan.returncode == 0, scan.stderr
    (line,) = [json.loads(text) for text in out.read_text(encoding="utf-8").splitlines()]
    by_ip = {a["ip"]: a for host in line["mx"] for a in host["addresses"]}
    assert by_ip["2606:4700:4700::25"]["reason_code"] == "scanner-network:no-ipv6-route"
    assert by_ip[CANARY]["status"] == "tested"
    assert "not-testable" not in [b["code"] for b in line["blockers"]]
    assert "not-testable-from-here" in [w["code"] for w in line["warnings"]]
    vantage = json.loads((tmp_path / "dual.jsonl.meta.json").read_text())["vantage"]
    assert vantage["ipv6_route"] is False
