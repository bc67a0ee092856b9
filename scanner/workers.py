"""Scans spread over worker processes, with one writer and one gate in the parent.

Theory of operation
-------------------
`scanner scan --workers N` (N > 1) starts N worker processes (`python -c
WORKER_ENTRY FD`), each a full trio scan loop with its own resolver, caches and
TLS context, connected to the parent by a socket pair. The parent keeps what must
be one per run:

* the input: it reads, filters (`--resume`, `--shard`, duplicates) and hands each
  domain to the worker chosen by the domain's stable hash, so a domain's scan is
  never split and a rerun sends it to the same worker;
* the output: workers send each finished line, whole; the parent's one writer
  writes it (`--resume` and the "only complete lines" rule hold as with one
  process) and feeds progress and the summary;
* the gate (`scanner.net.gate.Gate`): every connection slot, every 421 and every
  completed session of every worker goes through it, so `--per-ip`, the adaptive
  per-address limit and `--max-probes-per-address` mean the same with 1 or 16
  workers. Workers decide locally only what needs no shared state (`--exclude`,
  the address guard).

Messages are pickled tuples behind a 4-byte length (both ends are this program).
Workers ignore SIGINT: the parent handles Ctrl-C and SIGTERM, cancels the feed and
stops the workers; the file then holds only complete lines, as with one process.
A worker that dies takes its in-flight domains with it; they are reported on
stderr and a `--resume` scans them again.
"""

from __future__ import annotations

import itertools
import math
import os
import pickle
import signal
import socket
import struct
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

import trio

from scanner.core.inputs import InvalidInput, RankedInput, domain_digest
from scanner.core.result import DomainResult, ResultView
from scanner.models import Interruption, ProbeOutcome
from scanner.net.gate import Gate
from scanner.scan import DEFAULT_PROBE_CACHE_SIZE, ProbeCache, ScanStats, without_der

FRAME: Final = struct.Struct(">I")
MAX_MESSAGE: Final = 16 * 1024 * 1024  # one result line is bounded well below this
QUEUE_PER_WORKER: Final = 2  # domains queued per worker beyond its concurrency
# Run as `python -c`, so that pickled classes are this module's, not `__main__`'s.
WORKER_ENTRY: Final = "import sys; from scanner.workers import main; main(sys.argv)"


# ---------------------------------------------------------------- framing


class Channel:
    """Length-prefixed pickled messages over a trio stream; one sender at a time."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._buffer = bytearray()
        self._send_lock = trio.Lock()

    async def send(self, message: tuple[Any, ...]) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        async with self._send_lock:
            await self._stream.send_all(FRAME.pack(len(data)) + data)

    async def receive(self) -> tuple[Any, ...] | None:
        """The next message, or None when the other end closed."""
        while True:
            if len(self._buffer) >= FRAME.size:
                (size,) = FRAME.unpack_from(self._buffer)
                if size > MAX_MESSAGE:
                    raise ValueError(f"message of {size} bytes from a worker")
                if len(self._buffer) >= FRAME.size + size:
                    data = bytes(self._buffer[FRAME.size : FRAME.size + size])
                    del self._buffer[: FRAME.size + size]
                    message: tuple[Any, ...] = pickle.loads(data)
                    return message
            chunk = await self._stream.receive_some(1 << 16)
            if not chunk:
                return None
            self._buffer += chunk

    async def aclose(self) -> None:
        await self._stream.aclose()


# ---------------------------------------------------------------- how many workers


def usable_cpus() -> int:
    """CPUs this process may use: its affinity mask, bounded by a cgroup v2 CPU quota."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    quota = _cgroup_quota(Path("/sys/fs/cgroup/cpu.max"))
    if quota is not None:
        count = min(count, quota)
    return max(1, count)


def _cgroup_quota(path: Path) -> int | None:
    """`quota period` in cgroup v2's cpu.max → whole CPUs (rounded up); None without a quota."""
    try:
        quota, period = path.read_text(encoding="ascii").split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return max(1, math.ceil(int(quota) / int(period)))
    except (ValueError, ZeroDivisionError):
        return None


# ---------------------------------------------------------------- the worker's gate


class RemoteGate:
    """A worker's view of the parent's gate, with the same methods as `Gate`.

    `admit` and `name_refusal` are decided here (they need no shared state);
    slots, names per address, busy and served go to the parent. `was_busy` answers
    from what this worker saw and what the parent said when it last granted a slot.
    """

    def __init__(self, local: Gate, channel: Channel, post: Callable[[tuple[Any, ...]], None]) -> None:
        self._local = local
        self._channel = channel
        self._post = post
        self._ids = itertools.count()
        self._waiting: dict[int, trio.MemorySendChannel[Any]] = {}
        self._busy: set[str] = set()
        self.busy_signals = 0

    def admit(self, ip: str) -> Interruption | None:
        return self._local.admit(ip)

    def name_refusal(self, hostname: str) -> Interruption | None:
        return self._local.name_refusal(hostname)

    async def _ask(self, message: tuple[Any, ...]) -> Any:
        answer, _ = await self.ask(message)
        return answer

    async def ask(self, message: tuple[Any, ...]) -> tuple[Any, int]:
        """Send `message` with a new id; the parent's answer and the id."""
        ask_id = self.new_id()
        return await self.ask_as(ask_id, message), ask_id

    def new_id(self) -> int:
        return next(self._ids)

    async def ask_as(self, ask_id: int, message: tuple[Any, ...]) -> Any:
        """Send `message` under `ask_id` and wait for the parent's answer to it."""
        send, receive = trio.open_memory_channel[Any](1)
        self._waiting[ask_id] = send
        try:
            await self._channel.send((message[0], ask_id, *message[1:]))
            return await receive.receive()
        finally:
            del self._waiting[ask_id]

    def answered(self, ask_id: int, answer: Any) -> None:
        waiting = self._waiting.get(ask_id)
        if waiting is not None:
            waiting.send_nowait(answer)

    async def admit_name(self, ip: str, hostname: str) -> Interruption | None:
        answer: Interruption | None = await self._ask(("admit_name", ip, hostname))
        return answer

    def was_busy(self, ip: str) -> bool:
        return ip in self._busy

    def busy(self, ip: str) -> None:
        self._busy.add(ip)
        self.busy_signals += 1
        self._post(("busy", ip))

    def served(self, ip: str) -> None:
        self._post(("served", ip))

    @asynccontextmanager
    async def slot(self, ip: str) -> AsyncIterator[None]:
        """A slot of the parent's gate, released by id: also when the wait is cancelled,
        since the parent may grant it after the worker stopped waiting."""
        ask_id = next(self._ids)
        send, receive = trio.open_memory_channel[Any](1)
        self._waiting[ask_id] = send
        try:
            await self._channel.send(("acquire", ask_id, ip))
            was_busy: bool = await receive.receive()
            if was_busy:
                self._busy.add(ip)
            yield
        finally:
            del self._waiting[ask_id]
            with trio.CancelScope(shield=True):
                await self._channel.send(("release", ask_id))


class RemoteProbeCache:
    """A worker's view of the parent's probe cache: one session per (host, address) per run.

    The parent answers a claim with "run" (this worker probes, then reports the
    outcome) or with the outcome another worker's probe gave. A claim given up (the
    domain's deadline) is reported too, so the parent never waits for it and a
    waiting worker takes the probe over.
    """

    def __init__(self, gate: RemoteGate, channel: Channel) -> None:
        self._gate = gate
        self._channel = channel
        self.probes_run = 0
        self.hits = 0

    async def get(
        self, key: tuple[str, str], run: Callable[[], Awaitable[ProbeOutcome]]
    ) -> ProbeOutcome:
        ask_id = self._gate.new_id()
        try:
            reply = await self._gate.ask_as(ask_id, ("probe", *key))
            if reply[0] == "cached":
                self.hits += 1
                cached: ProbeOutcome = reply[1]
                return cached
            outcome = await run()
        except BaseException:
            with trio.CancelScope(shield=True):
                await self._channel.send(("probe_failed", ask_id))
            raise
        self.probes_run += 1
        await self._channel.send(("probe_done", ask_id, without_der(outcome)))
        return outcome


# ---------------------------------------------------------------- the parent


class SummarySink(Protocol):
    def domain_done(self, result: ResultView) -> None: ...


@dataclass(frozen=True, slots=True)
class Summary:
    """What the parent needs of a worker's result: enough for progress and the totals."""

    domain: str
    error: str | None
    enforce_ready: bool
    has_indicators: bool


def summarize(result: DomainResult) -> Summary:
    return Summary(
        domain=result.domain,
        error=str(result.error) if result.error is not None else None,
        enforce_ready=result.enforce_ready,
        has_indicators=result.has_indicators,
    )


@dataclass(slots=True)
class _Worker:
    index: int
    channel: Channel
    process: trio.Process
    room: trio.Semaphore
    in_flight: set[str] = field(default_factory=set)
    probes_run: int = 0


@dataclass(slots=True)
class ParallelRun:
    """Totals of a parallel scan, as `Scanner.stats` gives them for one process."""

    stats: ScanStats = field(default_factory=ScanStats)
    probes_run: int = 0
    busy_signals: int = 0
    lost: list[str] = field(default_factory=list)  # domains in flight in a worker that died
    load: Any = None  # scanner.cli.LoadNote, summed from the workers' reports


def _key(item: str | InvalidInput | RankedInput) -> str:
    inner = item.item if isinstance(item, RankedInput) else item
    return inner.text if isinstance(inner, InvalidInput) else inner


def _route(item: str | InvalidInput | RankedInput, workers: int) -> int:
    return domain_digest(_key(item)) % workers


async def run_parallel(
    options: Any,
    workers: int,
    items: AsyncIterator[str | InvalidInput | RankedInput],
    write_line: Callable[[str], None],
    *,
    gate: Gate,
    progress: SummarySink | None = None,
    totals: ParallelRun | None = None,
) -> ParallelRun:
    """Scan `items` over `workers` processes; see the module's theory of operation.

    `options` is the run's `scanner.options.NetworkOptions`, with the concurrency of the
    whole run: each worker gets its share. Cancelling the caller's scope stops the
    workers; every line handed to `write_line` is complete.
    """
    run = totals if totals is not None else ParallelRun()
    share = max(1, math.ceil(options.concurrency / workers))
    worker_options = _with_concurrency(options, share)
    pool: list[_Worker] = []
    try:
        async with trio.open_nursery() as nursery:
            for index in range(workers):
                pool.append(await _start_worker(index, worker_options, share))
            shared = _Shared(gate, ProbeCache(DEFAULT_PROBE_CACHE_SIZE))
            for worker in pool:
                nursery.start_soon(_serve_worker, worker, shared, write_line, run, progress)
            async for item in items:
                worker = pool[_route(item, workers)]
                await worker.room.acquire()
                if isinstance(item, InvalidInput):
                    worker.in_flight.add(item.text)
                    await worker.channel.send(("invalid", item.text, item.reason))
                else:  # a domain, or a ranked item (the worker's Scanner.run unwraps it)
                    worker.in_flight.add(_key(item))
                    await worker.channel.send(("domain", item))
            for worker in pool:
                await worker.channel.send(("end",))
    finally:
        with trio.CancelScope(shield=True):
            for worker in pool:
                await _stop(worker)
    run.busy_signals = gate.busy_signals
    return run


def _with_concurrency(options: Any, share: int) -> Any:
    import dataclasses

    return dataclasses.replace(options, concurrency=share)


async def _start_worker(index: int, options: Any, share: int) -> _Worker:
    parent_end, child_end = socket.socketpair()
    try:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-c", WORKER_ENTRY, str(child_end.fileno())],
            pass_fds=(child_end.fileno(),),
        )
    finally:
        child_end.close()
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(parent_end))
    channel = Channel(stream)
    await channel.send(("options", options))
    return _Worker(index, channel, process, trio.Semaphore(share * QUEUE_PER_WORKER))


async def _stop(worker: _Worker) -> None:
    """Ask the worker to stop, then make sure it is gone."""
    with trio.move_on_after(2.0):
        with suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            await worker.channel.send(("stop",))
        await worker.process.wait()
    if worker.process.returncode is None:
        worker.process.kill()
        await worker.process.wait()
    await trio.aclose_forcefully(worker.channel._stream)


class ProbeAbandonedError(Exception):
    """The worker that was to probe gave up (its domain's deadline); another may take over."""


@dataclass(slots=True)
class _Shared:
    """What the parent keeps for all workers: the gate and the probe cache."""

    gate: Gate
    cache: ProbeCache
    # probes a worker was told to run: ask id (per worker) → where its outcome goes
    running: dict[tuple[int, int], trio.MemorySendChannel[ProbeOutcome | None]] = field(
        default_factory=dict
    )
    # claims their worker gave up before it was told to run them
    abandoned: set[tuple[int, int]] = field(default_factory=set)


async def _claim(shared: _Shared, worker: _Worker, ask_id: int, key: tuple[str, str]) -> None:
    """One worker asks for (host, address): run it there, or answer with the cached outcome."""
    ran_here = False

    async def run_remote() -> ProbeOutcome:
        nonlocal ran_here
        ran_here = True
        if (worker.index, ask_id) in shared.abandoned:
            shared.abandoned.discard((worker.index, ask_id))
            raise ProbeAbandonedError
        send, receive = trio.open_memory_channel[ProbeOutcome | None](1)
        shared.running[(worker.index, ask_id)] = send
        try:
            await worker.channel.send(("answer", ask_id, ("run",)))
            outcome = await receive.receive()
        finally:
            del shared.running[(worker.index, ask_id)]
        if outcome is None:
            raise ProbeAbandonedError
        return outcome

    try:
        outcome = await shared.cache.get(key, run_remote)
    except ProbeAbandonedError:
        return
    if (worker.index, ask_id) in shared.abandoned:  # it stopped waiting for the answer
        shared.abandoned.discard((worker.index, ask_id))
        return
    if not ran_here:
        await worker.channel.send(("answer", ask_id, ("cached", outcome)))


async def _serve_worker(
    worker: _Worker,
    shared: _Shared,
    write_line: Callable[[str], None],
    run: ParallelRun,
    progress: SummarySink | None,
) -> None:
    """Answer one worker's gate and cache requests and write its results, until it says done."""
    gate = shared.gate
    async with trio.open_nursery() as nursery:
        held: dict[int, trio.Event] = {}  # acquire id → set when the worker releases it
        while True:
            message = await worker.channel.receive()
            if message is None:
                run.lost += sorted(worker.in_flight)
                worker.in_flight.clear()
                return
            kind = message[0]
            if kind == "result":
                _, line, summary = message
                write_line(line)
                _count(run.stats, summary)
                worker.in_flight.discard(summary.domain)
                worker.room.release()
                if progress is not None:
                    progress.domain_done(summary)
            elif kind == "acquire":
                _, ask_id, ip = message
                held[ask_id] = trio.Event()
                nursery.start_soon(_hold_slot, worker.channel, gate, ask_id, ip, held[ask_id])
            elif kind == "release":
                released = held.pop(message[1], None)
                if released is not None:
                    released.set()
            elif kind == "admit_name":
                _, ask_id, ip, hostname = message
                await worker.channel.send(("answer", ask_id, await gate.admit_name(ip, hostname)))
            elif kind == "probe":
                _, ask_id, host, ip = message
                nursery.start_soon(_claim, shared, worker, ask_id, (host, ip))
            elif kind in ("probe_done", "probe_failed"):
                waiting = shared.running.get((worker.index, message[1]))
                if waiting is not None:
                    waiting.send_nowait(message[2] if kind == "probe_done" else None)
                elif kind == "probe_failed":
                    shared.abandoned.add((worker.index, message[1]))
            elif kind == "busy":
                gate.busy(message[1])
            elif kind == "served":
                gate.served(message[1])
            elif kind == "done":
                worker.probes_run = int(message[1])
                run.probes_run += worker.probes_run
                if run.load is not None and len(message) > 2:
                    tries, timeouts, retries, lowered, lowest = message[2]
                    run.load.tries += tries
                    run.load.timeouts += timeouts
                    run.load.retries += retries
                    run.load.lowered += lowered
                    if lowered:
                        run.load.lowest = min(lowest, run.load.lowest or lowest)
                nursery.cancel_scope.cancel()
                return


async def _hold_slot(
    channel: Channel, gate: Gate, ask_id: int, ip: str, release: trio.Event
) -> None:
    """Hold one slot of `ip` for a worker until it releases it (or gave up waiting)."""
    async with gate.slot(ip):
        if not release.is_set():
            await channel.send(("answer", ask_id, gate.was_busy(ip)))
        await release.wait()


def _count(stats: ScanStats, summary: Summary) -> None:
    stats.domains += 1
    if summary.error is not None:
        stats.errors += 1
    if summary.enforce_ready:
        stats.ready += 1
    if summary.has_indicators:
        stats.with_indicators += 1


# ---------------------------------------------------------------- the worker


async def _worker(fd: int) -> None:
    from scanner.options import build_scanner
    from scanner.output import dumps_line, result_line

    sock = socket.socket(fileno=fd)
    channel = Channel(trio.SocketStream(trio.socket.from_stdlib_socket(sock)))
    first = await channel.receive()
    if first is None or first[0] != "options":
        return
    options = first[1]
    scanner = build_scanner(options)
    outbox_send, outbox_receive = trio.open_memory_channel[tuple[Any, ...]](math.inf)
    local = scanner.gate
    assert isinstance(local, Gate)
    remote = RemoteGate(local, channel, outbox_send.send_nowait)
    scanner.gate = remote
    scanner.probe_cache = RemoteProbeCache(remote, channel)
    items_send, items_receive = trio.open_memory_channel[str | InvalidInput](math.inf)

    async def items() -> AsyncIterator[str | InvalidInput]:
        async with items_receive:
            async for item in items_receive:
                yield item

    class Report:
        def domain_done(self, result: DomainResult) -> None:
            line = dumps_line(result_line(result, options.report))
            outbox_send.send_nowait(("result", line, summarize(result)))

    async def send_outbox() -> None:
        """Results, busy and served reports in order, `done` last."""
        async with outbox_receive:
            async for message in outbox_receive:
                await channel.send(message)

    async with trio.open_nursery() as nursery:

        async def listen() -> None:
            while True:
                message = await channel.receive()
                if message is None or message[0] == "stop":
                    nursery.cancel_scope.cancel()
                    return
                kind = message[0]
                if kind == "domain":
                    items_send.send_nowait(message[1])
                elif kind == "invalid":
                    items_send.send_nowait(InvalidInput(message[1], message[2]))
                elif kind == "end":
                    items_send.close()
                elif kind == "answer":
                    remote.answered(message[1], message[2])

        async def scan() -> None:
            async with outbox_send:
                await scanner.run(items(), lambda _: None, progress=Report())
                outbox_send.send_nowait(("done", scanner.probe_cache.probes_run, _load(scanner)))

        nursery.start_soon(listen)
        async with trio.open_nursery() as inner:
            inner.start_soon(send_outbox)
            inner.start_soon(scan)
        nursery.cancel_scope.cancel()


def _load(scanner: Any) -> tuple[int, int, int, int, int]:
    """The worker's DNS tries, timeouts, retries and governor changes, for the parent."""
    stats = getattr(scanner.resolver, "stats", None)
    governor = scanner.governor
    tries = stats.udp_queries + stats.tcp_queries if stats is not None else 0
    return (
        tries,
        stats.timeouts if stats is not None else 0,
        stats.retries if stats is not None else 0,
        governor.lowered if governor is not None else 0,
        governor.lowest if governor is not None else 0,
    )


def main(argv: list[str]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    trio.run(_worker, int(argv[1]))


