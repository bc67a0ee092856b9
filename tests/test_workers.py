"""`scanner scan --workers N`: the same verdicts, one gate, one probe per address, clean stops."""

from __future__ import annotations

import copyreg
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from scanner.lab import Lab, World, load_world, open_lab
from scanner.models import (
    AddressStatus,
    CertificateCheck,
    CertificateSummary,
    ChainVerdict,
    Interruption,
    InterruptionKind,
    Phase,
    ProbeOutcome,
    TlsSession,
)
from scanner.net.gate import Gate
from scanner.scan import ProbeCache
from scanner.workers import (
    Acquire,
    AdmitName,
    Answer,
    Channel,
    Done,
    EndOfInput,
    Load,
    ParallelRun,
    Probed,
    Release,
    Scan,
    _cgroup_quota,
    _serve_worker,
    _Shared,
    _Worker,
    usable_cpus,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


@pytest.fixture(scope="module")
def bulk_world() -> World:
    return load_world(FIXTURES / "world-bulk.toml")


@pytest.fixture
async def bulk_lab(bulk_world: World, tmp_path: Path) -> AsyncIterator[Lab]:
    async with open_lab(bulk_world, workdir=tmp_path / "lab") as lab:
        yield lab


async def scan(lab: Lab, out: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [sys.executable, "-m", "scanner", "scan", "--out", str(out), "--no-progress",
         "--timeout", "1", "--greeting-timeout", "1", *args, *lab.scanner_args()],
        capture_stdout=True, capture_stderr=True, check=False,
    )  # fmt: skip


def verdicts(path: Path) -> dict[str, Any]:
    lines = [json.loads(text) for text in path.read_text(encoding="utf-8").splitlines()]
    return {
        line["domain"]: (
            line["enforce_ready"],
            sorted({i["code"] for i in line["indicators"]}),
            sorted(
                (a["ip"], a["status"], a["starttls"]) for mx in line["mx"] for a in mx["addresses"]
            ),
        )
        for line in lines
    }


async def test_two_workers_reach_the_verdicts_of_one(
    demo_lab: Lab, demo_world: World, tmp_path: Path
) -> None:
    domains = tmp_path / "domains.txt"
    domains.write_text("\n".join(demo_world.domain_names) + "\n", encoding="utf-8")
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    first = await scan(demo_lab, one, "--input", str(domains), "--workers", "1")
    assert first.returncode == 0, first.stderr.decode()
    second = await scan(demo_lab, two, "--input", str(domains), "--workers", "2")
    assert second.returncode == 0, second.stderr.decode()
    assert "2 processes" in second.stderr.decode()
    assert verdicts(two) == verdicts(one)
    assert len(verdicts(two)) == len(demo_world.domains)


async def test_a_list_gets_every_usable_cpu_and_a_few_names_one_process(
    demo_lab: Lab, demo_world: World, tmp_path: Path
) -> None:
    """Without --workers: a list (file) is scanned by a worker per usable CPU, argument names in one process."""
    names = demo_world.domain_names[:3]
    domains = tmp_path / "domains.txt"
    domains.write_text("\n".join(names) + "\n", encoding="utf-8")
    listed = await scan(demo_lab, tmp_path / "list.jsonl", "--input", str(domains))
    assert listed.returncode == 0, listed.stderr.decode()
    cpus = usable_cpus()
    expected = f"{cpus} processes" if cpus > 1 else "1 process"
    assert expected in listed.stderr.decode()
    named = await scan(demo_lab, tmp_path / "named.jsonl", *names)
    assert named.returncode == 0, named.stderr.decode()
    assert "1 process)" in named.stderr.decode()
    assert verdicts(tmp_path / "list.jsonl") == verdicts(tmp_path / "named.jsonl")


async def test_workers_share_one_probe_per_address(
    bulk_lab: Lab, bulk_world: World, tmp_path: Path
) -> None:
    hosted = [name for name in bulk_world.domain_names if name.startswith("hosted")]
    result = await scan(bulk_lab, tmp_path / "out.jsonl", *hosted, "--workers", "2")
    assert result.returncode == 0, result.stderr.decode()
    # every hosted domain names the same two provider MX hosts: one session each, run-wide
    assert bulk_lab.smtp_connections("127.0.3.1") == 1
    assert bulk_lab.smtp_connections("127.0.3.2") == 1


async def test_workers_share_one_per_ip_limit(
    bulk_lab: Lab, bulk_world: World, tmp_path: Path
) -> None:
    slow = [name for name in bulk_world.domain_names if name.startswith("slow")]
    result = await scan(
        bulk_lab,
        tmp_path / "out.jsonl",
        *slow,
        "--workers",
        "2",
        "--per-ip",
        "1",
        "--concurrency",
        "8",
    )
    assert result.returncode == 0, result.stderr.decode()
    assert bulk_lab.smtp_connections("127.0.3.9") == len(slow), (tmp_path / "out.jsonl").read_text()
    # one slot for the address in the parent's gate, whichever worker probes (the lab may
    # count a closing connection a moment longer: +1)
    assert bulk_lab.smtp_max_concurrent("127.0.3.9") <= 2


async def test_ctrl_c_stops_the_workers_and_leaves_whole_lines(
    bulk_lab: Lab, bulk_world: World, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    domains = [n for n in bulk_world.domain_names if n.startswith(("hosted", "slow"))]
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "scanner", "scan", *domains, "--out", str(out), "--no-progress",
         "--timeout", "5", "--greeting-timeout", "5", "--per-ip", "1", "--workers", "2",
         *bulk_lab.scanner_args()],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    with trio.fail_after(40):
        while not out.exists() or out.read_text(encoding="utf-8").count("\n") < len(domains) - 8:  # noqa: ASYNC110
            await trio.sleep(0.05)
        process.send_signal(signal.SIGINT)
        assert await process.wait() == 130
    lines = [json.loads(text) for text in out.read_text(encoding="utf-8").splitlines()]
    assert len(lines) < len(domains)
    resumed = await scan(bulk_lab, out, *domains, "--resume", "--workers", "2")
    assert resumed.returncode == 0, resumed.stderr.decode()
    assert sorted(
        json.loads(t)["domain"] for t in out.read_text(encoding="utf-8").splitlines()
    ) == sorted(domains)


def _children(pid: int) -> list[int]:
    """Child processes of `pid`, whichever of its threads started them."""
    return [
        int(child)
        for task in Path(f"/proc/{pid}/task").iterdir()
        for child in (task / "children").read_text(encoding="ascii").split()
    ]


async def test_a_worker_that_dies_costs_its_domains_not_the_scan(
    bulk_lab: Lab, bulk_world: World, tmp_path: Path
) -> None:
    """A worker killed while it holds gate slots: the parent frees them and finishes the scan.

    The slow domains' MX host never greets, so each probe holds the address's one slot
    (`--per-ip 1`) for the 5 s greeting deadline; one worker is killed while probes are
    under way. The scan must end, name the lost domains, and write every other line whole.
    """
    out = tmp_path / "out.jsonl"
    domains = [n for n in bulk_world.domain_names if n.startswith(("hosted", "slow"))]
    listed = tmp_path / "domains.txt"
    listed.write_text("\n".join(domains) + "\n", encoding="utf-8")
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "scanner", "scan", "--input", str(listed), "--out", str(out),
         "--no-progress", "--timeout", "5", "--greeting-timeout", "5", "--per-ip", "1",
         "--workers", "2", *bulk_lab.scanner_args()],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    with trio.fail_after(60):
        while bulk_lab.smtp_connections("127.0.3.9") == 0:  # noqa: ASYNC110
            await trio.sleep(0.05)  # until a slow probe holds the address's slot
        workers = _children(process.pid)
        assert len(workers) == 2
        os.kill(workers[0], signal.SIGKILL)
        stderr = b""
        async with process.stderr:
            async for chunk in process.stderr:
                stderr += chunk
        code = await process.wait()
    text = stderr.decode()
    assert code != 0, text
    assert "a worker process ended early" in text, text
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    written = {line["domain"] for line in lines}
    assert written < set(domains)
    lost = len(domains) - len(written)
    assert f"{lost} domains" in text, text
    # the surviving worker's slow domains were probed after the dead one's slots were freed
    assert any(line["domain"].startswith("slow") for line in lines), text


async def test_channel_carries_framed_messages() -> None:
    left, right = trio.testing.memory_stream_pair()
    sender, receiver = Channel(left), Channel(right)
    messages = [("result", "x" * 100_000, {"a": 1}), ("busy", "127.0.0.1"), ("done", 3)]
    async with trio.open_nursery() as nursery:
        for message in messages:
            nursery.start_soon(sender.send, message)
    received = [await receiver.receive() for _ in messages]
    assert sorted(map(repr, received)) == sorted(map(repr, messages))
    await left.aclose()
    assert await receiver.receive() is None


async def test_a_peer_that_died_with_messages_unread_ends_the_channel() -> None:
    """The kernel resets a socket closed with data unread: a worker killed before reading
    what the parent sent. That is its end, not an error of the scan."""
    parent_end, worker_end = socket.socketpair()
    channel = Channel(trio.SocketStream(trio.socket.from_stdlib_socket(parent_end)))
    await channel.send(EndOfInput())  # never read
    worker_end.close()
    assert await channel.receive() is None
    await channel.stream.aclose()


async def test_a_worker_that_cannot_be_answered_is_gone_and_its_domains_lost() -> None:
    """It asked, then died before the answer: the answer's send fails (EPIPE). Its
    domains in flight are lost, as when it ends, and the scan goes on."""
    parent_end, worker_end = socket.socketpair()
    channel = Channel(trio.SocketStream(trio.socket.from_stdlib_socket(parent_end)))
    asking = Channel(trio.SocketStream(trio.socket.from_stdlib_socket(worker_end)))
    await asking.send(AdmitName(1, "127.0.0.1", "mx.example.net"))
    await asking.stream.aclose()
    process = await trio.lowlevel.open_process([sys.executable, "-c", "pass"])
    worker = _Worker(0, channel, process, trio.Semaphore(1), in_flight={"a.example"})
    run = ParallelRun()
    shared = _Shared(Gate(allow_private=True), ProbeCache(16))
    with trio.fail_after(5):
        await _serve_worker(worker, shared, lambda line: None, run, None)
        await process.wait()
    assert worker.gone
    assert run.lost == ["a.example"]
    await channel.stream.aclose()


def test_messages_keep_every_field_through_the_fast_reducers() -> None:
    """A probe outcome with its TLS session, certificates and interruptions survives the trip whole."""
    summary = CertificateSummary(
        "CN=mx.example", ("mx.example",), "CN=CA", datetime(2026, 1, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC), "ab" * 32,
    )  # fmt: skip
    outcome = ProbeOutcome(
        hostname="mx.example",
        ip="127.0.0.1",
        status=AddressStatus.TESTED,
        greeting="220 mx.example ESMTP",
        ehlo_keywords=("STARTTLS", "PIPELINING"),
        starttls_advertised=True,
        starttls_reply=220,
        tls=TlsSession("TLSv1.3", "TLS_AES_128_GCM_SHA256", (summary,)),
        certificate=CertificateCheck(summary, ChainVerdict(False, "X509_V_ERR_CERT_HAS_EXPIRED", 0), True),
        transcript=("S: 220 mx.example ESMTP", "C: EHLO scanner.example"),
        after_tls=Interruption(InterruptionKind.CLOSED, Phase.EHLO_AFTER_TLS, "gone"),
    )  # fmt: skip
    for message in (
        Probed(7, outcome), Answer(7, outcome, run=False), Answer(8, True), Acquire(9, "::1"),
        Release(9), Done(3, Load(tries=5)), Scan("example.com"), EndOfInput(),
    ):  # fmt: skip
        assert pickle.loads(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)) == message
    for cls in (ProbeOutcome, TlsSession, CertificateSummary, Probed, Answer, Acquire):
        assert cls in copyreg.dispatch_table  # the fast path is the one taken


@pytest.mark.parametrize(
    ("text", "cpus"),
    [
        ("max 100000", None),
        ("200000 100000", 2),
        ("150000 100000", 2),
        ("50000 100000", 1),
        ("junk", None),
    ],
)
def test_cgroup_quota(tmp_path: Path, text: str, cpus: int | None) -> None:
    path = tmp_path / "cpu.max"
    path.write_text(text + "\n", encoding="ascii")
    assert _cgroup_quota(path) == cpus


def test_usable_cpus_is_at_least_one_and_at_most_the_affinity() -> None:
    import os

    assert 1 <= usable_cpus() <= len(os.sched_getaffinity(0))
