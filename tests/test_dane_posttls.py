"""Side by side with Postfix: every DANE domain of the lab, scanner and posttls-finger agree.

posttls-finger reads /etc/resolv.conf (port 53) and glibc needs `options trust-ad`, so
the comparison runs in a network namespace this test makes, whose resolv.conf
`ip netns exec` bind-mounts (scanner.lab.posttls). Needs root, iproute2, unbound and
Debian's postfix package (posttls-finger); skipped otherwise. The pure mapping of
posttls-finger's words is tested without any of that.
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
from hypothesis import given
from hypothesis import strategies as st

from scanner.lab.posttls import postfix_status, posttls_finger_path
from scanner.lab.unbound import unbound_path
from scanner.models import DaneStatus

DANE_WORLD = Path(__file__).resolve().parent.parent / "fixtures" / "world-dane.toml"


@pytest.mark.parametrize(
    ("output", "status"),
    [
        (
            "posttls-finger: h[127.0.0.1]:25: Matched DANE EE certificate at depth 0: 3 1 1 AB\n"
            "posttls-finger: Verified TLS connection established to h",
            DaneStatus.PASS,
        ),
        (
            "posttls-finger: server certificate verification failed for h: num=65:no matching DANE TLSA records",
            DaneStatus.FAIL,
        ),
        (
            "posttls-finger: Failed to establish session to d:25 via h: TLSA lookup error for h:25",
            DaneStatus.BOGUS,
        ),
        (
            "posttls-finger: MX RRset insecure: log verified as trusted\n"
            "posttls-finger: h: Matched DANE EE certificate at depth 0: 3 1 1 AB",
            DaneStatus.INSECURE,
        ),
        (
            'posttls-finger: no usable TLSA records found, resorting to "secure"',
            DaneStatus.UNUSABLE,
        ),
        (
            "posttls-finger: dns_query: _25._tcp.h (TLSA): Host not found\n"
            'posttls-finger: no TLSA records found, resorting to "secure"',
            DaneStatus.NO_TLSA,
        ),
        ('posttls-finger: no TLSA records found, resorting to "secure"', DaneStatus.INSECURE),
        ("posttls-finger: Untrusted TLS connection established", None),
    ],
    ids=[
        "verified",
        "no-match",
        "lookup-error",
        "insecure-mx",
        "unusable",
        "denial",
        "no-tlsa-query",
        "silent",
    ],
)
def test_postfix_words_map_to_dane_statuses(output: str, status: DaneStatus | None) -> None:
    found, line = postfix_status(output)
    assert found is status
    assert line


@given(st.text(max_size=400))
def test_any_postfix_output_maps_without_raising(output: str) -> None:
    status, line = postfix_status(output)
    assert status is None or isinstance(status, DaneStatus)
    assert isinstance(line, str)


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool, path in (
        ("ip", shutil.which("ip")),
        ("unbound", unbound_path()),
        ("posttls-finger", posttls_finger_path()),
    ):
        if path is None:
            return f"{tool} is not installed"
    return None


@pytest.fixture
def namespace() -> Iterator[str]:
    """A network namespace of this test's own, loopback up, resolv.conf for posttls-finger."""
    name = f"scanner-dane-{os.getpid()}"
    resolv = Path("/etc/netns") / name
    try:
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    except subprocess.CalledProcessError as error:
        pytest.skip(f"cannot make a network namespace: {error.stderr.decode().strip()}")
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        resolv.mkdir(parents=True, exist_ok=True)
        (resolv / "resolv.conf").write_text(
            "nameserver 127.0.0.1\noptions trust-ad\n", encoding="ascii"
        )
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)
        shutil.rmtree(resolv, ignore_errors=True)


@pytest.mark.dnssec
@pytest.mark.skipif(_missing() is not None, reason=_missing() or "")
def test_scanner_and_posttls_finger_agree_on_every_dane_domain(
    namespace: str, tmp_path: Path
) -> None:
    out = tmp_path / "comparison.json"
    finished = subprocess.run(
        ["ip", "netns", "exec", namespace, sys.executable, "-m", "scanner.lab.posttls",
         str(DANE_WORLD), "--workdir", str(tmp_path / "work"), "--json", str(out)],
        capture_output=True,
        timeout=600,
        check=False,
    )  # fmt: skip
    text = finished.stdout.decode() + finished.stderr.decode()
    assert out.exists(), text
    comparisons = json.loads(out.read_text())
    assert len(comparisons) >= 9, text
    disagreements = [c for c in comparisons if not c["agree"]]
    assert disagreements == [], text
    assert finished.returncode == 0, text
