"""Scans spread over worker processes, with one writer and one gate in the parent.

Theory of operation
-------------------
`scanner scan --workers N` (N > 1) starts N worker processes (on Linux forked
before the parent's trio loop, `fork_workers`; elsewhere `python -c WORKER_ENTRY
FD`), each a full trio scan loop with its own resolver, caches and TLS context,
connected to the parent by a socket pair. The parent keeps what must be one per run:

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

Messages are typed values (the frozen dataclasses below). Both ends post them and
a flusher writes what was posted over `FLUSH_INTERVAL` as one frame: the list of
messages, pickled, behind a 4-byte length (both ends are this program). A wake-up of
the other process costs more than a message, so this, and answering a free slot or a
kept outcome without a task, is what makes two workers cost about what one process
does (docs/architecture.md#worker-processes).
Workers ignore SIGINT: the parent handles Ctrl-C and SIGTERM, cancels the feed and
stops the workers; the file then holds only complete lines, as with one process.
A worker that dies takes its in-flight domains with it; they are reported on
stderr and a `--resume` scans them again.
"""

from __future__ import annotations

import collections
import copyreg
import dataclasses
import itertools
import math
import operator
import os
import pickle
import signal
import socket
import struct
import sys
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol, TypeAlias, TypeVar

import trio

from scanner import models
from scanner.core.egress import ConnectTally, Decision, Egress
from scanner.core.inputs import InvalidInput, RankedInput, domain_digest
from scanner.core.result import DomainResult, ResultView
from scanner.models import Interruption, ProbeOutcome
from scanner.net.gate import Gate
from scanner.port25 import Port25Watch, disabled_watch
from scanner.scan import (
    DEFAULT_PROBE_CACHE_SIZE,
    ProbeCache,
    Scanner,
    ScanStats,
    outcome_cost,
    without_der,
)

if TYPE_CHECKING:
    from scanner.options import NetworkOptions

_T = TypeVar("_T")

FRAME: Final = struct.Struct(">I")
MAX_MESSAGE: Final = 16 * 1024 * 1024  # one result line is bounded well below this
QUEUE_PER_WORKER: Final = 2  # domains queued per worker beyond its concurrency
# Run as `python -c`, so that pickled classes are this module's, not `__main__`'s.
WORKER_ENTRY: Final = "import sys; from scanner.workers import main; main(sys.argv)"
STOP_GRACE: Final = 2.0  # seconds a worker has to leave after "stop" before it is killed
# How long a posted message may wait for others to share its write. Every write wakes
# the process at the other end, and on a shared core a wake-up (a context switch, the
# event loop's turn) cost more than the message: gathering a few milliseconds' worth of
# messages into one write is what lets workers scale.
FLUSH_INTERVAL: Final = 0.005
KNOWN_OUTCOMES: Final = 1024  # probe outcomes a worker keeps to answer itself ...
KNOWN_OUTCOME_BYTES: Final = 4 * 1024 * 1024  # ... and their bytes, as `outcome_cost` counts
KNOWN_NAMES: Final = 4096  # (address, MX name) pairs a worker knows the parent admitted


# ---------------------------------------------------------------- messages

# parent → worker


@dataclass(frozen=True, slots=True)
class Start:
    options: NetworkOptions


@dataclass(frozen=True, slots=True)
class Scan:
    item: str | InvalidInput | RankedInput


@dataclass(frozen=True, slots=True)
class EndOfInput:
    pass


@dataclass(frozen=True, slots=True)
class Stop:
    pass


@dataclass(frozen=True, slots=True)
class Answer:
    """The parent's answer to the worker's question `ask_id`."""

    ask_id: int
    value: bool | Interruption | ProbeOutcome | None = None
    run: bool = False  # for a probe claim: this worker is to probe


# worker → parent


@dataclass(frozen=True, slots=True)
class Acquire:
    ask_id: int
    ip: str


@dataclass(frozen=True, slots=True)
class Release:
    ask_id: int


@dataclass(frozen=True, slots=True)
class AdmitName:
    ask_id: int
    ip: str
    hostname: str


@dataclass(frozen=True, slots=True)
class Claim:
    """May this worker probe (host, ip), or is there an outcome already?"""

    ask_id: int
    hostname: str
    ip: str


@dataclass(frozen=True, slots=True)
class Probed:
    ask_id: int
    outcome: ProbeOutcome | None  # None: the worker gave the claim up


@dataclass(frozen=True, slots=True)
class Busy:
    ip: str


@dataclass(frozen=True, slots=True)
class Served:
    ip: str


@dataclass(frozen=True, slots=True)
class Summary:
    """What the parent needs of a worker's result: enough for progress and the totals."""

    domain: str
    error: str | None
    enforce_ready: bool
    has_indicators: bool
    connects: ConnectTally = field(
        default_factory=ConnectTally
    )  # port-25 connects by network (scanner.port25)


@dataclass(frozen=True, slots=True)
class Finished:
    line: str
    summary: Summary


@dataclass(frozen=True, slots=True)
class Load:
    """A worker's DNS tries, timeouts and retries, and how often it lowered its concurrency."""

    tries: int = 0
    timeouts: int = 0
    retries: int = 0
    lowered: int = 0
    lowest: int = 0


@dataclass(frozen=True, slots=True)
class Done:
    probes_run: int
    load: Load


Message: TypeAlias = (
    Start
    | Scan
    | EndOfInput
    | Stop
    | Answer
    | Acquire
    | Release
    | AdmitName
    | Claim
    | Probed
    | Busy
    | Served
    | Finished
    | Done
)


# ---------------------------------------------------------------- pickling

# Slotted dataclasses pickle through `dataclasses._dataclass_getstate`, which calls
# `fields()` for every object: for a probe outcome with its TLS session, certificate
# summaries and interruptions, that was a fifth of the parent's CPU. A reducer per
# class, registered with copyreg (which pickle consults before `__reduce_ex__`), gives
# the field values in order; unpickling calls the class with them. It holds for these
# classes: every field is an `__init__` parameter, in order, with no `__post_init__`.


def _register_reducer(cls: type[_T], names: tuple[str, ...]) -> None:
    get = operator.attrgetter(*names)

    def reduce(instance: _T) -> tuple[type[_T], tuple[object, ...]]:
        values = get(instance)
        return cls, (values,) if len(names) == 1 else tuple(values)

    copyreg.pickle(cls, reduce)


def _register_reducers(classes: Iterable[type[object]]) -> None:
    for cls in classes:
        if not dataclasses.is_dataclass(cls) or hasattr(cls, "__post_init__"):
            continue
        fields = dataclasses.fields(cls)
        if fields and all(f.init and not f.kw_only for f in fields):
            _register_reducer(cls, tuple(f.name for f in fields))


_register_reducers(
    value
    for module in (models, sys.modules[__name__])
    for value in vars(module).values()
    if isinstance(value, type) and value.__module__ == module.__name__
)


# ---------------------------------------------------------------- framing


class OversizedMessageError(ValueError):
    """A frame longer than `MAX_MESSAGE`: the other end is not speaking this protocol."""


class Channel:
    """Length-prefixed pickled messages over a trio stream, written in batches.

    `send` queues a message and writes it with every other message queued before the
    write begins. `post` only queues it: the channel's `flusher` task writes what was
    posted at most `interval` seconds later, in one write with everything posted
    meanwhile. Both keep the order messages were queued in. A write (and the
    wake-up it causes at the other end) per message cost a worker more than the gate
    it talks to. A write is one frame: the list of its messages, pickled at once
    (one frame per message if that list would be over `MAX_MESSAGE`).
    """

    def __init__(self, stream: trio.abc.Stream, *, interval: float = FLUSH_INTERVAL) -> None:
        self.stream = stream
        self.interval = interval
        self._buffer = bytearray()
        self._queued: list[Message] = []
        self._received: collections.deque[Message] = collections.deque()
        self._send_lock = trio.Lock()
        self._armed = False  # something was posted and the flusher was told
        self._posted = trio.Event()
        self.writes = 0

    def queue(self, message: Message) -> None:
        """Add `message` to the next write; `flush` (or any `send`) writes it."""
        self._queued.append(message)

    async def flush(self) -> None:
        """Return once everything queued so far is written (perhaps by another task)."""
        async with self._send_lock:
            if self._queued:
                messages, self._queued = self._queued, []
                self.writes += 1
                await self.stream.send_all(_frames(messages))

    async def send(self, message: Message) -> None:
        self.queue(message)
        await self.flush()

    def post(self, message: Message) -> None:
        """Queue `message` for the flusher's next write (within `interval`)."""
        self.queue(message)
        if not self._armed:
            self._armed = True
            self._posted.set()

    async def flusher(self) -> None:
        """Write what is posted, gathered over `interval` seconds, until cancelled."""
        while True:
            await self._posted.wait()
            await trio.sleep(self.interval)
            self._armed = False
            self._posted = trio.Event()
            await self.flush()

    async def receive(self) -> Message | None:
        """The next message, or None when the other end closed or died.

        A process that dies with messages to it unread resets the connection (the kernel
        answers a close with unread data so): that is its end as well.
        """
        while True:
            if self._received:
                return self._received.popleft()
            if len(self._buffer) >= FRAME.size:
                (size,) = FRAME.unpack_from(self._buffer)
                if size > MAX_MESSAGE:
                    raise OversizedMessageError(f"message of {size} bytes from a worker")
                if len(self._buffer) >= FRAME.size + size:
                    data = bytes(self._buffer[FRAME.size : FRAME.size + size])
                    del self._buffer[: FRAME.size + size]
                    messages: list[Message] = pickle.loads(data)
                    self._received.extend(messages)
                    continue
            try:
                chunk = await self.stream.receive_some(1 << 16)
            except trio.BrokenResourceError:
                return None
            if not chunk:
                return None
            self._buffer += chunk


def _frames(messages: list[Message]) -> bytes:
    """`messages` as one frame, or as one frame each when together they are too long."""
    data = pickle.dumps(messages, protocol=pickle.HIGHEST_PROTOCOL)
    if len(data) <= MAX_MESSAGE or len(messages) == 1:
        return FRAME.pack(len(data)) + data
    return b"".join(_frames([message]) for message in messages)


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


# ---------------------------------------------------------------- the worker's side


class _Waiter:
    """A worker's question waiting for the parent's answer."""

    __slots__ = ("answer", "event")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.answer: Answer | None = None


class RemoteGate:
    """A worker's view of the parent's gate, with the same methods as `Gate`.

    `admit` and `name_refusal` are decided here (they need no shared state);
    slots, names per address, busy and served go to the parent. `was_busy` answers
    from what this worker saw and what the parent said when it last granted a slot.
    """

    def __init__(self, local: Gate, channel: Channel, post: Callable[[Message], None]) -> None:
        self._local = local
        self._channel = channel
        self._post = post
        self._ids = itertools.count()
        self._waiting: dict[int, _Waiter] = {}
        self._admitted: collections.OrderedDict[tuple[str, str], None] = collections.OrderedDict()
        self._busy: set[str] = set()
        self.busy_signals = 0

    def admit(self, ip: str) -> Interruption | None:
        return self._local.admit(ip)

    def name_refusal(self, hostname: str) -> Interruption | None:
        return self._local.name_refusal(hostname)

    def new_id(self) -> int:
        return next(self._ids)

    async def ask(self, question: Acquire | AdmitName | Claim) -> Answer:
        """Post `question` and wait for the parent's answer to its id."""
        waiter = self._waiting[question.ask_id] = _Waiter()
        try:
            self._channel.post(question)
            await waiter.event.wait()
        finally:
            del self._waiting[question.ask_id]
        assert waiter.answer is not None
        return waiter.answer

    def answered(self, answer: Answer) -> None:
        waiter = self._waiting.get(answer.ask_id)
        if waiter is not None:
            waiter.answer = answer
            waiter.event.set()

    async def admit_name(self, ip: str, hostname: str) -> Interruption | None:
        """The parent's decision; a name once admitted on an address stays admitted for
        the run, so this worker asks about each (address, name) once (the last
        `KNOWN_NAMES` of them)."""
        key = (ip, hostname)
        if key in self._admitted:
            self._admitted.move_to_end(key)
            return None
        answer = await self.ask(AdmitName(self.new_id(), ip, hostname))
        if isinstance(answer.value, Interruption):
            return answer.value
        self._admitted[key] = None
        if len(self._admitted) > KNOWN_NAMES:
            self._admitted.popitem(last=False)
        return None

    def was_busy(self, ip: str) -> bool:
        return ip in self._busy

    def busy(self, ip: str) -> None:
        self._busy.add(ip)
        self.busy_signals += 1
        self._post(Busy(ip))

    def served(self, ip: str) -> None:
        self._post(Served(ip))

    @asynccontextmanager
    async def slot(self, ip: str) -> AsyncIterator[None]:
        """A slot of the parent's gate, released by id: also when the wait is cancelled,
        since the parent may grant it after the worker stopped waiting."""
        ask_id = self.new_id()
        try:
            answer = await self.ask(Acquire(ask_id, ip))
            if answer.value is True:
                self._busy.add(ip)
            yield
        finally:
            self._channel.post(Release(ask_id))


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
        # The outcomes this worker probed or was given, the last `KNOWN_OUTCOMES`: the
        # run's one session of each (host, address), so asking again would only fetch them.
        self._known: collections.OrderedDict[tuple[str, str], tuple[ProbeOutcome, int]] = (
            collections.OrderedDict()
        )
        self._known_bytes = 0
        self.probes_run = 0
        self.hits = 0

    async def get(
        self, key: tuple[str, str], run: Callable[[], Awaitable[ProbeOutcome]]
    ) -> ProbeOutcome:
        known = self._known.get(key)
        if known is not None:
            self._known.move_to_end(key)
            self.hits += 1
            return known[0]
        ask_id = self._gate.new_id()
        try:
            answer = await self._gate.ask(Claim(ask_id, *key))
            if not answer.run and isinstance(answer.value, ProbeOutcome):
                self.hits += 1
                self._remember(key, answer.value)
                return answer.value
            outcome = await run()
        except BaseException:
            self._channel.post(Probed(ask_id, None))
            raise
        self.probes_run += 1
        kept = without_der(outcome)
        self._channel.post(Probed(ask_id, kept))
        self._remember(key, kept)
        return outcome

    def _remember(self, key: tuple[str, str], outcome: ProbeOutcome) -> None:
        if key in self._known:
            return
        cost = outcome_cost(outcome)
        self._known[key] = (outcome, cost)
        self._known_bytes += cost
        while len(self._known) > KNOWN_OUTCOMES or self._known_bytes > KNOWN_OUTCOME_BYTES:
            _, (_, dropped) = self._known.popitem(last=False)
            self._known_bytes -= dropped


def summarize(result: DomainResult, connects: ConnectTally) -> Summary:
    return Summary(
        domain=result.domain,
        error=str(result.error) if result.error is not None else None,
        enforce_ready=result.enforce_ready,
        has_indicators=result.has_indicators,
        connects=connects,
    )


def load_of(scanner: Scanner) -> Load:
    """The scanner's DNS tries, timeouts, retries and governor changes, for the summary."""
    load = scanner.resolver.load
    governor = scanner.governor
    return Load(
        tries=load.queries,
        timeouts=load.timeouts,
        retries=load.retries,
        lowered=governor.lowered if governor is not None else 0,
        lowest=governor.lowest if governor is not None else 0,
    )


class _Report:
    """Sends each line the scan's writer built (`take`) with the summary of its result
    (`domain_done`, which the writer calls right after it)."""

    def __init__(self, channel: Channel, scanner: Scanner) -> None:
        self._channel = channel
        self._scanner = scanner
        self._line = ""

    def take(self, line: str) -> None:
        self._line = line

    def domain_done(self, result: DomainResult) -> None:
        connects = self._scanner.connects_of(result)
        self._channel.post(Finished(self._line, summarize(result, connects)))


async def _worker(fd: int) -> None:
    sock = socket.socket(fileno=fd)
    await work(Channel(trio.SocketStream(trio.socket.from_stdlib_socket(sock))))


async def work(channel: Channel) -> None:
    """A worker's whole life on `channel`: `Start`, the domains, `Done`; until `Stop` or the end."""
    from scanner.options import build_scanner

    first = await channel.receive()
    if not isinstance(first, Start):
        return
    options = first.options
    scanner = build_scanner(options)
    # The parent decides port 25 from every worker's tallies: a worker holds nothing.
    egress = dataclasses.replace(scanner.settings.egress, enabled=False)
    scanner.settings = dataclasses.replace(scanner.settings, egress=egress)
    local = scanner.gate
    assert isinstance(local, Gate)
    remote = RemoteGate(local, channel, channel.post)
    scanner.gate = remote
    scanner.probe_cache = RemoteProbeCache(remote, channel)
    items_send, items_receive = trio.open_memory_channel[str | InvalidInput | RankedInput](math.inf)

    async def items() -> AsyncIterator[str | InvalidInput | RankedInput]:
        async with items_receive:
            async for item in items_receive:
                yield item

    async with trio.open_nursery() as nursery:

        async def listen() -> None:
            while True:
                message = await channel.receive()
                if message is None or isinstance(message, Stop):
                    nursery.cancel_scope.cancel()
                    return
                if isinstance(message, Scan):
                    items_send.send_nowait(message.item)
                elif isinstance(message, EndOfInput):
                    items_send.close()
                elif isinstance(message, Answer):
                    remote.answered(message)

        nursery.start_soon(listen)
        nursery.start_soon(channel.flusher)
        report = _Report(channel, scanner)
        await scanner.run(items(), report.take, progress=report)
        # Results, busy and served reports in the order they were posted, `Done` last.
        await channel.send(Done(scanner.probe_cache.probes_run, load_of(scanner)))
        nursery.cancel_scope.cancel()


def main(argv: list[str]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    trio.run(_worker, int(argv[1]))


# ---------------------------------------------------------------- the parent's side


class SummarySink(Protocol):
    def domain_done(self, result: ResultView) -> None: ...


class LoadSink(Protocol):
    def add_load(self, load: Load) -> None: ...


class WorkerProcess(Protocol):
    """What the parent uses of a worker's process (`trio.Process` has it)."""

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...

    def kill(self) -> None: ...


# Starts a worker and gives the parent's end of its stream: a process on a socket pair
# (`start_process`) or, in tests, a task of this trio loop on a memory stream.
StartWorker: TypeAlias = Callable[[], Awaitable[tuple[trio.abc.Stream, WorkerProcess]]]


@dataclass(slots=True)
class _Worker:
    index: int
    channel: Channel
    process: WorkerProcess
    room: trio.Semaphore
    in_flight: set[str] = field(default_factory=set)
    probes_run: int = 0
    gone: bool = False  # its process ended before it was done
    waiting: trio.CancelScope | None = None  # the feed, waiting for room in this worker


@dataclass(slots=True)
class ParallelRun:
    """Totals of a parallel scan, as `Scanner.stats` gives them for one process."""

    stats: ScanStats = field(default_factory=ScanStats)
    probes_run: int = 0
    busy_signals: int = 0
    lost: list[str] = field(default_factory=list)  # domains in flight in a worker that died
    stopped: bool = False  # every worker died before the input was read to its end
    load: LoadSink | None = None  # told each worker's DNS load when it is done
    egress: Decision = field(default_factory=lambda: Decision(Egress.PENDING))


class ProbeAbandonedError(Exception):
    """The worker that was to probe gave up (its domain's deadline); another may take over."""


@dataclass(slots=True)
class _Shared:
    """What the parent keeps for all workers: the gate and the probe cache."""

    gate: Gate
    cache: ProbeCache
    # The run's watch on port 25, which writes each line when it may; None: at once.
    watch: Port25Watch[Finished] | None = None
    # probes a worker was told to run: (worker, ask id) → where its outcome goes
    running: dict[tuple[int, int], trio.MemorySendChannel[ProbeOutcome | None]] = field(
        default_factory=dict
    )
    # claims their worker gave up before it was told to run them
    abandoned: set[tuple[int, int]] = field(default_factory=set)
    # probes begun in the cache at once, without a task: (worker, ask id) → the key
    begun: dict[tuple[int, int], tuple[str, str]] = field(default_factory=dict)


def _key(item: str | InvalidInput | RankedInput) -> str:
    inner = item.item if isinstance(item, RankedInput) else item
    return inner.text if isinstance(inner, InvalidInput) else inner


def _route(item: str | InvalidInput | RankedInput, workers: int) -> int:
    return domain_digest(_key(item)) % workers


async def run_parallel(
    options: NetworkOptions,
    workers: int,
    items: AsyncIterator[str | InvalidInput | RankedInput],
    write_line: Callable[[str], None],
    *,
    gate: Gate,
    progress: SummarySink | None = None,
    totals: ParallelRun | None = None,
    start: StartWorker | None = None,
    port25: Callable[
        [Callable[[Finished], None], Callable[[Decision], None]], Port25Watch[Finished]
    ]
    | None = None,
) -> ParallelRun:
    """Scan `items` over `workers` processes; see the module's theory of operation.

    `options` hold the concurrency of the whole run: each worker gets its share.
    Cancelling the caller's scope stops the workers; every line handed to
    `write_line` is complete. `start` starts each worker (default: `start_process`).
    `port25` builds the run's watch on port 25 from the workers' connect tallies
    (`scanner.port25`); without it, every line is written at once.
    """
    run = totals if totals is not None else ParallelRun()
    share = max(1, math.ceil(options.concurrency / workers))
    worker_options = dataclasses.replace(options, concurrency=share)
    pool: list[_Worker] = []

    def release(message: Finished) -> None:
        write_line(message.line)
        _count(run.stats, message.summary)
        if progress is not None:
            progress.domain_done(message.summary)

    try:
        async with trio.open_nursery() as nursery:

            def blocked(decision: Decision) -> None:
                run.egress = decision
                nursery.cancel_scope.cancel()

            watch = port25(release, blocked) if port25 is not None else disabled_watch(release)
            for index in range(workers):
                pool.append(await _start_worker(index, worker_options, share, start))
            shared = _Shared(gate, ProbeCache(DEFAULT_PROBE_CACHE_SIZE), watch)
            async with trio.open_nursery() as serving:
                for worker in pool:
                    serving.start_soon(_serve_worker, worker, shared, write_line, run, progress)
                async for item in items:
                    if not await _hand_over(pool, item):
                        run.stopped = True  # every worker is gone: the rest of the input waits
                        break
                for worker in pool:
                    if not worker.gone:
                        with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                            await worker.channel.send(EndOfInput())
            run.egress = await watch.finish()
    finally:
        with trio.CancelScope(shield=True):
            for worker in pool:
                await _stop(worker)
    run.busy_signals = gate.busy_signals
    return run


async def _hand_over(pool: list[_Worker], item: str | InvalidInput | RankedInput) -> bool:
    """Give `item` to the worker its hash picks among those still running; False if none is."""
    while True:
        live = [worker for worker in pool if not worker.gone]
        if not live:
            return False
        worker = live[_route(item, len(live))]
        try:
            worker.room.acquire_nowait()  # no schedule point while there is room
        except trio.WouldBlock:
            with trio.CancelScope() as waiting:
                worker.waiting = waiting
                await worker.room.acquire()
            worker.waiting = None
        if worker.gone:  # it ended while the feed waited for room: pick again
            continue
        worker.in_flight.add(_key(item))
        worker.channel.post(Scan(item))  # a worker gone meanwhile loses it with the rest
        return True


class ForkedWorker:
    """A worker forked from this process before its trio loop began (`fork_workers`).

    Forking costs a worker none of the imports a new interpreter pays (about 0.45 s of
    CPU each here); the child shares the parent's pages until it writes them.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._pidfd = os.pidfd_open(pid)

    def _reap(self) -> bool:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid == 0:
                return False
            self.returncode = os.waitstatus_to_exitcode(status)
            os.close(self._pidfd)
        return True

    async def wait(self) -> int:
        while not self._reap():
            await trio.lowlevel.wait_readable(self._pidfd)
        assert self.returncode is not None
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            with suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)


def can_fork_workers() -> bool:
    """Workers are forked where a fork is safe and a pidfd can wait for them (Linux)."""
    return sys.platform == "linux" and hasattr(os, "pidfd_open")


def fork_workers(count: int) -> StartWorker:
    """Fork `count` workers now, before this process's trio loop begins (forking inside
    it would copy the loop's state), and start them one by one when asked.

    Each child runs `main` on its end of a socket pair and leaves with `os._exit`, so
    nothing of the parent (its buffered output, its `with` blocks) runs twice.
    """
    forked: list[tuple[socket.socket, ForkedWorker]] = []
    for _ in range(count):
        parent_end, child_end = socket.socketpair()
        pid = os.fork()
        if pid == 0:  # the child
            status = 1
            try:
                parent_end.close()
                for other, _ in forked:
                    other.close()
                main(["worker", str(child_end.detach())])
                status = 0
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stderr.flush()
                os._exit(status)
        child_end.close()
        forked.append((parent_end, ForkedWorker(pid)))
    waiting = iter(forked)

    async def start() -> tuple[trio.abc.Stream, WorkerProcess]:
        sock, process = next(waiting)
        return trio.SocketStream(trio.socket.from_stdlib_socket(sock)), process

    return start


async def start_process() -> tuple[trio.abc.Stream, WorkerProcess]:
    """A worker process, connected by a socket pair."""
    parent_end, child_end = socket.socketpair()
    try:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-c", WORKER_ENTRY, str(child_end.fileno())],
            pass_fds=(child_end.fileno(),),
        )
    finally:
        child_end.close()
    return trio.SocketStream(trio.socket.from_stdlib_socket(parent_end)), process


async def _start_worker(
    index: int, options: NetworkOptions, share: int, start: StartWorker | None
) -> _Worker:
    stream, process = await (start or start_process)()
    channel = Channel(stream)
    await channel.send(Start(options))
    return _Worker(index, channel, process, trio.Semaphore(share * QUEUE_PER_WORKER))


async def _stop(worker: _Worker) -> None:
    """Ask the worker to stop, then make sure it is gone."""
    with trio.move_on_after(STOP_GRACE):
        with suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            await worker.channel.send(Stop())
        await worker.process.wait()
    if worker.process.returncode is None:
        worker.process.kill()
        await worker.process.wait()
    await trio.aclose_forcefully(worker.channel.stream)


async def _claim(shared: _Shared, worker: _Worker, claim: Claim) -> None:
    """One worker asks for (host, address): run it there, or answer with the cached outcome."""
    ran_here = False
    who = (worker.index, claim.ask_id)

    async def run_remote() -> ProbeOutcome:
        nonlocal ran_here
        ran_here = True
        if who in shared.abandoned:
            shared.abandoned.discard(who)
            raise ProbeAbandonedError
        send, receive = trio.open_memory_channel[ProbeOutcome | None](1)
        shared.running[who] = send
        try:
            worker.channel.post(Answer(claim.ask_id, run=True))
            outcome = await receive.receive()
        finally:
            del shared.running[who]
        if outcome is None:
            raise ProbeAbandonedError
        return outcome

    try:
        outcome = await shared.cache.get((claim.hostname, claim.ip), run_remote)
    except ProbeAbandonedError:
        return
    if who in shared.abandoned:  # it stopped waiting for the answer
        shared.abandoned.discard(who)
        return
    if not ran_here:
        worker.channel.post(Answer(claim.ask_id, outcome))


async def _hold_slot(
    channel: Channel, gate: Gate, ask_id: int, ip: str, release: trio.Event
) -> None:
    """Hold one slot of `ip` for a worker until it releases it (or gave up waiting)."""
    async with gate.slot(ip):
        if not release.is_set():
            channel.post(Answer(ask_id, gate.was_busy(ip)))
        await release.wait()


@dataclass(slots=True)
class _Link:
    """The parent's end of one worker: answers its gate and cache requests, writes its lines."""

    worker: _Worker
    shared: _Shared
    write_line: Callable[[str], None]
    run: ParallelRun
    progress: SummarySink | None
    nursery: trio.Nursery
    held: dict[int, trio.Event] = field(default_factory=dict)  # acquire id → its release
    # slots taken at once, without a task: acquire id → its address
    taken: dict[int, str] = field(default_factory=dict)

    async def handle(self, message: Message) -> bool:
        """Act on one message; False once the worker is done."""
        if isinstance(message, Finished):
            await self.finished(message)
        elif isinstance(message, Acquire):
            gate = self.shared.gate
            if gate.acquire_nowait(message.ip):
                self.taken[message.ask_id] = message.ip
                self.worker.channel.post(Answer(message.ask_id, gate.was_busy(message.ip)))
                return True
            self.held[message.ask_id] = trio.Event()
            self.nursery.start_soon(
                _hold_slot,
                self.worker.channel,
                self.shared.gate,
                message.ask_id,
                message.ip,
                self.held[message.ask_id],
            )
        elif isinstance(message, Release):
            ip = self.taken.pop(message.ask_id, None)
            if ip is not None:
                self.shared.gate.release(ip)
                return True
            released = self.held.pop(message.ask_id, None)
            if released is not None:
                released.set()
        elif isinstance(message, AdmitName):
            refusal = await self.shared.gate.admit_name(message.ip, message.hostname)
            self.worker.channel.post(Answer(message.ask_id, refusal))
        elif isinstance(message, Claim):
            self.claim(message)
        elif isinstance(message, Probed):
            self.probed(message)
        elif isinstance(message, Busy):
            self.shared.gate.busy(message.ip)
        elif isinstance(message, Served):
            self.shared.gate.served(message.ip)
        elif isinstance(message, Done):
            self.worker.probes_run = message.probes_run
            self.run.probes_run += message.probes_run
            if self.run.load is not None:
                self.run.load.add_load(message.load)
            return False
        return True

    async def finished(self, message: Finished) -> None:
        self.worker.in_flight.discard(message.summary.domain)
        self.worker.room.release()
        if self.shared.watch is not None:
            await self.shared.watch.add(message, message.summary.connects)
            return
        self.write_line(message.line)
        _count(self.run.stats, message.summary)
        if self.progress is not None:
            self.progress.domain_done(message.summary)

    def claim(self, claim: Claim) -> None:
        """Answer at once with the outcome kept, or "run" when nobody probes it yet;
        otherwise a task waits for the probe under way (`_claim`)."""
        key = (claim.hostname, claim.ip)
        cache = self.shared.cache
        outcome = cache.lookup(key)
        if outcome is not None:
            self.worker.channel.post(Answer(claim.ask_id, outcome))
        elif not cache.probing(key):
            cache.begin(key)
            self.shared.begun[(self.worker.index, claim.ask_id)] = key
            self.worker.channel.post(Answer(claim.ask_id, run=True))
        else:
            self.nursery.start_soon(_claim, self.shared, self.worker, claim)

    def let_go(self) -> None:
        """Give back the slots taken at once (those held by tasks go with the tasks),
        and the probes begun at once, for another worker to take over."""
        for ip in self.taken.values():
            self.shared.gate.release(ip)
        self.taken.clear()
        index = self.worker.index
        for who in [who for who in self.shared.begun if who[0] == index]:
            self.shared.cache.finish(self.shared.begun.pop(who), None)

    def probed(self, message: Probed) -> None:
        who = (self.worker.index, message.ask_id)
        key = self.shared.begun.pop(who, None)
        if key is not None:
            self.shared.cache.finish(key, message.outcome)
            return
        waiting = self.shared.running.get(who)
        if waiting is not None:
            waiting.send_nowait(message.outcome)
        elif message.outcome is None:
            self.shared.abandoned.add(who)


async def _serve_worker(
    worker: _Worker,
    shared: _Shared,
    write_line: Callable[[str], None],
    run: ParallelRun,
    progress: SummarySink | None,
) -> None:
    """Serve one worker until it is done (or gone: its in-flight domains are then lost)."""
    link: _Link | None = None
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker.channel.flusher)
            link = _Link(worker, shared, write_line, run, progress, nursery)
            while True:
                message = await worker.channel.receive()
                if message is None:
                    break
                if not await link.handle(message):
                    link.let_go()
                    nursery.cancel_scope.cancel()
                    return
            # What it held (gate slots, probe claims others wait for) is let go by
            # cancelling its tasks.
            nursery.cancel_scope.cancel()
    except* (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # an answer to it could not be sent: it is gone all the same
    except* OversizedMessageError:
        # A line is cut to 2 MiB before it is sent (`scanner.output.written_line`), so
        # this is a bug: this worker's domains are lost, the other workers go on.
        with suppress(ProcessLookupError):
            worker.process.kill()
    # Gone: its domains in flight are lost.
    if link is not None:
        link.let_go()
    worker.gone = True
    if worker.waiting is not None:
        worker.waiting.cancel()
    run.lost += sorted(worker.in_flight)
    worker.in_flight.clear()


def _count(stats: ScanStats, summary: Summary) -> None:
    stats.domains += 1
    if summary.error is not None:
        stats.errors += 1
    if summary.enforce_ready:
        stats.ready += 1
    if summary.has_indicators:
        stats.with_indicators += 1
