"""`scanner scan --workers N`: the same verdicts, one gate, one probe per address, clean stops.

Most tests run the parent (`run_parallel`) and its workers (`work`) in the test's trio
loop, each worker a task on one end of a memory stream: the messages are pickled and
framed as between processes, and the lab's deadlines run on virtual time
(`loopback_clock`). A worker "killed" there is cancelled and its end closed, which is
what its parent sees of a killed process. Three smoke tests start real worker processes
through the command: the verdicts of a list, Ctrl-C, and a worker killed.
"""

from __future__ import annotations

import copyreg
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from commands import invoke, items_of, lab_options, line_count, process_of
from trio.testing import MockClock

from scanner.lab import Lab, World
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
from scanner.options import NetworkOptions, build_scanner, scan_settings
from scanner.scan import ProbeCache, Scanner
from scanner.workers import (
    MAX_MESSAGE,
    Acquire,
    AdmitName,
    Answer,
    Channel,
    Claim,
    Done,
    EndOfInput,
    Load,
    ParallelRun,
    Probed,
    Release,
    Scan,
    StartWorker,
    Stop,
    WorkerProcess,
    _cgroup_quota,
    _Link,
    _serve_worker,
    _Shared,
    _Worker,
    can_fork_workers,
    fork_workers,
    run_parallel,
    start_process,
    usable_cpus,
    work,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


async def scan(lab: Lab, out: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [sys.executable, "-m", "scanner", "scan", "--out", str(out), "--no-progress",
         "--timeout", "1", "--greeting-timeout", "1", *args, *lab.scanner_args()],
        capture_stdout=True, capture_stderr=True, check=False,
    )  # fmt: skip


class TaskWorker:
    """A worker as a task of this trio loop, on one end of a memory stream pair.

    `kill` cancels it and closes its end, as the kernel closes the socket of a
    killed process: the parent reads the end of the stream.
    """

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._scope = trio.CancelScope()
        self._done = trio.Event()
        self.killed = False
        self.returncode: int | None = None

    async def run(self) -> None:
        with self._scope:
            try:
                await work(Channel(self._stream))
            except* (trio.BrokenResourceError, trio.ClosedResourceError):
                if not self.killed:
                    raise
        await trio.aclose_forcefully(self._stream)  # the process exits
        self.returncode = -signal.SIGKILL if self.killed else 0
        self._done.set()

    def kill(self) -> None:
        """Gone at once: nothing more is sent (no release, no answer), nothing read."""
        self.killed = True
        assert isinstance(self._stream, trio.StapledStream)
        self._stream.send_stream.close()
        self._stream.receive_stream.close()
        self._scope.cancel()

    async def wait(self) -> int:
        await self._done.wait()
        assert self.returncode is not None
        return self.returncode


def task_workers(nursery: trio.Nursery, started: list[TaskWorker]) -> StartWorker:
    """Start each worker as a `TaskWorker` in `nursery`; `started` lists them."""

    async def start() -> tuple[trio.abc.Stream, WorkerProcess]:
        parent_end, worker_end = trio.testing.memory_stream_pair()
        worker = TaskWorker(worker_end)
        started.append(worker)
        nursery.start_soon(worker.run)
        return parent_end, worker

    return start


async def scan_in_tasks(
    options: NetworkOptions, names: list[str], workers: int = 2
) -> tuple[ParallelRun, list[str], list[TaskWorker]]:
    """`scanner scan --workers N` in this loop: the run's totals, the lines written, the workers."""
    lines: list[str] = []
    started: list[TaskWorker] = []
    async with trio.open_nursery() as nursery:
        run = await run_parallel(
            options,
            workers,
            items_of(names),
            lines.append,
            gate=Scanner.local_gate(scan_settings(options)),
            start=task_workers(nursery, started),
        )
    return run, lines, started


def verdicts(path: Path) -> dict[str, Any]:
    return verdicts_of(path.read_text(encoding="utf-8").splitlines())


def verdicts_of(texts: list[str]) -> dict[str, Any]:
    lines = [json.loads(text) for text in texts]
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
    demo_lab: Lab, demo_world: World, loopback_clock: MockClock
) -> None:
    options = lab_options(demo_lab)
    one: list[str] = []
    await build_scanner(options).run(items_of(demo_world.domain_names), one.append)
    run, two, _ = await scan_in_tasks(options, demo_world.domain_names, workers=2)
    assert (run.lost, run.stopped) == ([], False)
    assert run.stats.domains == len(two)
    assert verdicts_of(two) == verdicts_of(one)
    assert len(verdicts_of(two)) == len(demo_world.domains)


def test_a_list_gets_every_usable_cpu_and_a_few_names_one_process(
    demo_lab_thread: Lab, demo_world: World, tmp_path: Path
) -> None:
    """Without --workers: a list (file) is scanned by a worker per usable CPU, argument names in one process.

    A smoke test of real worker processes, started by the command (run in-process)."""
    names = demo_world.domain_names[:3]
    domains = tmp_path / "domains.txt"
    domains.write_text("\n".join(names) + "\n", encoding="utf-8")
    lab_args = ("--timeout", "1", "--greeting-timeout", "1", *demo_lab_thread.scanner_args())
    listed = invoke(
        "scan", "--input", str(domains), "--out", str(tmp_path / "list.jsonl"), "--no-progress",
        *lab_args,
    )  # fmt: skip
    assert listed.exit_code == 0, listed.stderr
    cpus = usable_cpus()
    expected = f"{cpus} processes" if cpus > 1 else "1 process"
    assert expected in listed.stderr
    named = invoke(
        "scan", *names, "--out", str(tmp_path / "named.jsonl"), "--no-progress", *lab_args
    )  # fmt: skip
    assert named.exit_code == 0, named.stderr
    assert "1 process)" in named.stderr
    assert verdicts(tmp_path / "list.jsonl") == verdicts(tmp_path / "named.jsonl")


async def test_workers_share_one_probe_per_address(
    bulk_lab: Lab, bulk_world: World, loopback_clock: MockClock
) -> None:
    hosted = [name for name in bulk_world.domain_names if name.startswith("hosted")]
    run, lines, _ = await scan_in_tasks(lab_options(bulk_lab), hosted)
    assert (run.lost, run.stopped) == ([], False)
    assert sorted(verdicts_of(lines)) == sorted(hosted)
    # every hosted domain names the same two provider MX hosts: one session each, run-wide
    assert bulk_lab.smtp_connections("127.0.3.1") == 1
    assert bulk_lab.smtp_connections("127.0.3.2") == 1


async def test_workers_share_one_per_ip_limit(
    bulk_lab: Lab, bulk_world: World, loopback_clock: MockClock
) -> None:
    slow = [name for name in bulk_world.domain_names if name.startswith("slow")]
    run, lines, _ = await scan_in_tasks(lab_options(bulk_lab, per_ip=1, concurrency=8), slow)
    assert (run.lost, run.stopped) == ([], False)
    assert sorted(verdicts_of(lines)) == sorted(slow)
    assert bulk_lab.smtp_connections("127.0.3.9") == len(slow), lines
    # one slot for the address in the parent's gate, whichever worker probes (the lab may
    # count a closing connection a moment longer: +1)
    assert bulk_lab.smtp_max_concurrent("127.0.3.9") <= 2


async def test_ctrl_c_stops_the_workers_and_leaves_whole_lines(
    bulk_lab: Lab, bulk_world: World, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    domains = [n for n in bulk_world.domain_names if n.startswith(("hosted", "slow"))]
    async with process_of(
        [sys.executable, "-m", "scanner", "scan", *domains, "--out", str(out), "--no-progress",
         "--timeout", "5", "--greeting-timeout", "5", "--per-ip", "1", "--workers", "2",
         *bulk_lab.scanner_args()],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    ) as process:  # fmt: skip
        with trio.fail_after(40):
            while line_count(out) < len(domains) - 8:  # noqa: ASYNC110
                await trio.sleep(0.05)
            process.send_signal(signal.SIGINT)
            assert await process.wait() == 130
    lines = [json.loads(text) for text in out.read_text(encoding="utf-8").splitlines()]
    assert len(lines) < len(domains)
    # the silent hosts' domains left: a short greeting deadline ends each at once
    resumed = await scan(
        bulk_lab, out, *domains, "--resume", "--workers", "2", "--greeting-timeout", "0.2"
    )
    assert resumed.returncode == 0, resumed.stderr.decode()
    assert sorted(
        json.loads(t)["domain"] for t in out.read_text(encoding="utf-8").splitlines()
    ) == sorted(domains)


async def test_a_worker_that_dies_costs_its_domains_not_the_scan(
    bulk_lab: Lab, bulk_world: World, loopback_clock: MockClock
) -> None:
    """A worker killed while it holds gate slots: the parent frees them and finishes the scan.

    The slow domains' MX host never greets, so each probe holds the address's one slot
    (`--per-ip 1`) for the 5 s greeting deadline; one worker is killed while probes are
    under way. The scan must end, name the lost domains, and write every other line whole.
    """
    domains = [n for n in bulk_world.domain_names if n.startswith(("hosted", "slow"))]
    options = lab_options(bulk_lab, timeout=5.0, greeting_timeout=5.0, per_ip=1)
    lines: list[str] = []
    started: list[TaskWorker] = []

    async def kill_one() -> None:
        while bulk_lab.smtp_connections("127.0.3.9") == 0:  # noqa: ASYNC110
            await trio.sleep(0.05)  # until a slow probe holds the address's slot
        assert len(started) == 2
        started[0].kill()

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(kill_one)
            run = await run_parallel(
                options,
                2,
                items_of(domains),
                lines.append,
                gate=Scanner.local_gate(scan_settings(options)),
                start=task_workers(nursery, started),
            )
    assert [worker.returncode for worker in started] == [-signal.SIGKILL, 0]
    written = {json.loads(line)["domain"] for line in lines}
    assert written < set(domains)
    # the scan ends with an error naming how many domains have no line: these
    assert run.lost, lines
    assert sorted(run.lost) == sorted(set(domains) - written)
    assert not run.stopped  # the other worker scanned the rest of the input
    # the surviving worker's slow domains were probed after the dead one's slots were freed
    assert any(name.startswith("slow") for name in written), lines


def _children(pid: int) -> list[int]:
    """Child processes of `pid`, whichever of its threads started them."""
    return [
        int(child)
        for task in Path(f"/proc/{pid}/task").iterdir()
        for child in (task / "children").read_text(encoding="ascii").split()
    ]


async def test_a_killed_worker_process_is_reported_by_the_command(
    bulk_lab: Lab, bulk_world: World, tmp_path: Path
) -> None:
    """A smoke test of the above with real processes: a worker killed (SIGKILL) mid-scan.

    The command must end with an error, say that a worker ended early and how many
    domains have no line, and write every other line whole. A short greeting deadline:
    the silent host's probes only keep the scan going until the kill. The other
    deadlines are long: on a busy machine this loop, which serves the lab, may be slow
    to answer, and a scan whose lookups all time out never reaches the silent host.
    """
    out = tmp_path / "out.jsonl"
    domains = [n for n in bulk_world.domain_names if n.startswith(("hosted", "slow"))]
    listed = tmp_path / "domains.txt"
    listed.write_text("\n".join(domains) + "\n", encoding="utf-8")
    async with process_of(
        [sys.executable, "-m", "scanner", "scan", "--input", str(listed), "--out", str(out),
         "--no-progress", "--timeout", "10", "--greeting-timeout", "0.5", "--per-ip", "1",
         "--workers", "2", *bulk_lab.scanner_args()],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    ) as process:  # fmt: skip
        assert process.stderr is not None
        with trio.fail_after(60):
            while bulk_lab.smtp_connections("127.0.3.9") == 0:
                assert process.poll() is None, "the scan ended before its slow probes"
                await trio.sleep(0.05)  # until the slow probes are under way
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

    assert 1 <= usable_cpus() <= len(os.sched_getaffinity(0))


async def test_posted_messages_go_out_together_in_order(loopback_clock: MockClock) -> None:
    """What is posted within the flush interval is one write (one wake-up of the reader)."""
    left, right = trio.testing.memory_stream_pair()
    sender, receiver = Channel(left), Channel(right)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender.flusher)
        for index in range(50):
            sender.post(Release(index))
        received = [await receiver.receive() for _ in range(50)]
        assert received == [Release(index) for index in range(50)]
        assert sender.writes == 1
        sender.post(Release(50))  # a later post: the next write
        assert await receiver.receive() == Release(50)
        assert sender.writes == 2
        nursery.cancel_scope.cancel()


async def test_a_batch_too_long_for_one_frame_goes_one_message_a_frame() -> None:
    left, right = trio.testing.memory_stream_pair()
    sender, receiver = Channel(left), Channel(right)
    big = "x" * (MAX_MESSAGE // 2 + 1)
    sender.queue(Scan(big))
    sender.queue(Scan(big + "y"))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender.flush)
        first = await receiver.receive()
        second = await receiver.receive()
    assert (first, second) == (Scan(big), Scan(big + "y"))


def test_a_free_slot_is_taken_at_once_and_never_ahead_of_a_waiter() -> None:
    gate = Gate(allow_private=True, per_ip=2)

    async def main() -> None:
        assert gate.acquire_nowait("192.0.2.1")
        assert gate.acquire_nowait("192.0.2.1")
        assert not gate.acquire_nowait("192.0.2.1")  # the limit
        entered = trio.Event()

        async def waiter() -> None:
            async with gate.slot("192.0.2.1"):
                entered.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            gate.release("192.0.2.1")  # one free, but the waiter is first in line
            assert not gate.acquire_nowait("192.0.2.1")
            await entered.wait()
        gate.release("192.0.2.1")
        assert gate.acquire_nowait("192.0.2.1")
        gate.release("192.0.2.1")
        assert gate.limit("192.0.2.1") == 2

    trio.run(main)


async def test_a_claim_given_up_is_taken_over_by_the_next_worker() -> None:
    """The parent answers a claim at once ("run" or the kept outcome); a claim given up
    by the worker that was to probe goes to the next worker that asked."""
    shared = _Shared(Gate(allow_private=True), ProbeCache(16))
    first = trio.testing.memory_stream_pair()
    second = trio.testing.memory_stream_pair()
    links = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for index, (parent_end, _) in enumerate((first, second)):
                worker = _Worker(
                    index, Channel(parent_end), TaskWorker(parent_end), trio.Semaphore(1)
                )
                links.append(_Link(worker, shared, lambda line: None, ParallelRun(), None, nursery))
            asking = [Channel(first[1]), Channel(second[1])]
            await links[0].handle(Claim(1, "mx.example", "192.0.2.1"))
            await links[0].worker.channel.flush()
            assert await asking[0].receive() == Answer(1, run=True)
            await links[1].handle(Claim(1, "mx.example", "192.0.2.1"))  # waits for the first
            await trio.testing.wait_all_tasks_blocked()
            await links[0].handle(Probed(1, None))  # given up
            await trio.testing.wait_all_tasks_blocked()
            await links[1].worker.channel.flush()
            assert await asking[1].receive() == Answer(1, run=True)
            outcome = ProbeOutcome("mx.example", "192.0.2.1", AddressStatus.TESTED)
            await links[1].handle(Probed(1, outcome))
            await trio.testing.wait_all_tasks_blocked()
            await links[0].handle(Claim(2, "mx.example", "192.0.2.1"))  # kept now
            await links[0].worker.channel.flush()
            assert await asking[0].receive() == Answer(2, outcome)
            assert shared.cache.probes_run == 1
            nursery.cancel_scope.cancel()


@pytest.mark.skipif(not can_fork_workers(), reason="workers are forked on Linux only")
def test_forked_workers_start_stop_and_can_be_killed() -> None:
    """Forked before the loop, as `scanner scan` does: one stops when asked, one is killed."""
    start = fork_workers(2)

    async def main() -> tuple[int, int]:
        (stopping, first), (killed, second) = await start(), await start()
        async with stopping, killed:
            await Channel(stopping).send(Stop())
            second.kill()
            with trio.fail_after(10):
                return await first.wait(), await second.wait()

    assert trio.run(main) == (0, -signal.SIGKILL)


async def test_a_worker_started_as_a_new_interpreter_stops_when_asked() -> None:
    """Where workers are not forked (not Linux), each is `python -c WORKER_ENTRY FD`."""
    stream, process = await start_process()
    async with stream:
        await Channel(stream).send(Stop())
        with trio.fail_after(30):
            assert await process.wait() == 0
