"""Scan metadata: the `<results>.meta.json` sidecar, and when it makes a comparison unsound.

`scanner scan` records how a results file was made (`recorded_scan`): the scanner
version, when the scan started and ended, its options, the resolver, the EHLO name,
the vantage (`--vantage NAME` and the public source addresses when the host has
them), and the input list (file name, date, digest, format). The sidecar is written
when the scan starts (`finished_at` null: a scan that died keeps a record) and again
when it ends; `--resume` appends a run to the sidecar it finds.

`stats` and `diff` read it when present (`read_metadata`) and check the files they are
given against `RULES` (`comparison_problems`): a time diff across vantages, stats over
time across input lists, ... are refused unless `--force`; smaller differences are
warnings. Files without a sidecar are compared unchecked, with a warning.

The JSON edge of the sidecar is here: `ScanMetadata` is a typed value everywhere else.
Format: docs/research.md#scan-metadata.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from scanner import __version__
from scanner.core.addresses import AddressClass, classify_address
from scanner.core.inputs import InputFormat, Shard
from scanner.core.tlsrpt import rfc3339_utc
from scanner.research.lines import parse_time
from scanner.untrusted import visible

if TYPE_CHECKING:
    from scanner.options import NetworkOptions

METADATA_SUFFIX: Final = ".meta.json"
METADATA_FORMAT: Final = "scanner-scan-metadata"
METADATA_VERSION: Final = 1
MAX_METADATA_BYTES: Final = 1 << 20  # a sidecar is small; a larger file is not one
# --vantage NAME: a short plain word, safe in file names, terminals and tables.
VANTAGE_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# Route lookups towards documentation addresses (RFC 5737, RFC 3849): a UDP connect
# sends no packet, it only asks the kernel which source address it would use.
ROUTE_PROBES: Final = ((socket.AF_INET, "192.0.2.1"), (socket.AF_INET6, "2001:db8::1"))

JsonValue = str | int | float | bool | None | list[str]


def metadata_path(results: Path) -> Path:
    """`scan-x.jsonl` → `scan-x.jsonl.meta.json`, beside it."""
    return results.with_name(results.name + METADATA_SUFFIX)


def vantage_problem(name: str) -> str | None:
    """Why `name` is no vantage name, or None."""
    if VANTAGE_NAME.fullmatch(name) is None:
        return (
            f"{visible(name, 80)!r} is not a vantage name: 1 to 64 of A-Z a-z 0-9 . _ -, "
            "starting with a letter or digit"
        )
    return None


@dataclass(frozen=True, slots=True)
class InputList:
    name: str | None  # the file name; "-" for standard input
    date: str | None  # the file's modification date (UTC), YYYY-MM-DD
    sha256: str | None
    format: str


@dataclass(frozen=True, slots=True)
class ScanRun:
    """One invocation of `scanner scan` that wrote to the file (several with --resume)."""

    started_at: datetime
    finished_at: datetime | None
    vantage: str | None
    scanner_version: str


@dataclass(frozen=True, slots=True)
class VantageSight:
    """What the scanning host could see (docs/research.md#scan-metadata), None when unknown.

    `port25`: the run's blocked-port-25 decision (`open`, `throttled`, `blocked`);
    `port25_rates`: the domains' and canaries' port-25 connects when they were
    compared (a dict as written); `ipv6_route`:
    whether the routing table had an IPv6 route; `validating_resolver`: whether the
    resolver validated DNSSEC, when the run asked; `doctor`: the findings of
    `scanner doctor --results`, kept as written.
    """

    port25: str | None = None
    port25_rates: object = None  # as decoded from JSON
    ipv6_route: bool | None = None
    validating_resolver: bool | None = None
    doctor: object = None  # as decoded from JSON


@dataclass(frozen=True, slots=True)
class ScanMetadata:
    scanner_version: str
    started_at: datetime
    finished_at: datetime | None
    vantage: str | None
    public_addresses: tuple[str, ...]
    resolver: str  # "system" (resolv.conf) or "option" (--resolver)
    nameservers: tuple[str, ...]
    ehlo_name: str | None
    input: InputList | None
    options: Mapping[str, JsonValue]
    runs: tuple[ScanRun, ...]
    sight: VantageSight = VantageSight()

    @property
    def scan_date(self) -> date:
        return self.started_at.astimezone(UTC).date()


# ---------------------------------------------------------------- writing


def public_source_addresses() -> tuple[str, ...]:
    """This host's source addresses towards the internet, when they are public.

    Behind NAT the source address is private and the public one is not known here:
    nothing is returned for that family.
    """
    found: list[str] = []
    for family, target in ROUTE_PROBES:
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.connect((target, 25))
                address = str(probe.getsockname()[0])
        except OSError:
            continue
        if classify_address(address) is AddressClass.PUBLIC:
            found.append(address)
    return tuple(found)


def _system_nameservers() -> tuple[str, ...]:
    """The nameservers of resolv.conf, as a scan without --resolver uses them; () if none."""
    import dns.exception
    import dns.resolver

    try:
        return tuple(str(ns) for ns in dns.resolver.Resolver(configure=True).nameservers)
    except (dns.exception.DNSException, OSError):
        return ()


def input_list(files: Sequence[Path | None], input_format: InputFormat) -> InputList | None:
    """The input list of a scan: its file name, modification date and digest."""
    if not files:
        return None
    path = files[0]
    if path is None:
        return InputList(name="-", date=None, sha256=None, format=input_format.value)
    digest = hashlib.sha256()
    try:
        modified = datetime.fromtimestamp(path.stat().st_mtime, UTC).date().isoformat()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except OSError:
        return InputList(name=path.name, date=None, sha256=None, format=input_format.value)
    return InputList(path.name, modified, digest.hexdigest(), input_format.value)


def _options(network: NetworkOptions, shard: Shard | None, resume: bool) -> dict[str, JsonValue]:
    caps = network.caps
    return {
        "timeout": network.timeout,
        "greeting_timeout": network.greeting_timeout,
        "concurrency": network.concurrency,
        "per_ip": network.per_ip,
        "smtp_port": network.smtp_port,
        "https_port": network.https_port,
        "allow_private": network.allow_private,
        "ca_files": [path.name for path in network.ca_files],
        "exclude": network.exclusions is not None,
        "busy_retries": network.busy_retries,
        "max_mx_hosts": caps.max_mx_hosts,
        "max_addresses_per_host": caps.max_addresses_per_host,
        "max_addresses": caps.max_addresses,
        "max_standby_hosts": caps.max_standby_hosts,
        "max_connections_per_domain": caps.max_connections,
        "max_probes_per_address": caps.max_names_per_address,
        "org": network.report.organization_name,
        "contact": network.report.contact_info,
        "shard": f"{shard.index}/{shard.count}" if shard is not None else None,
        "resume": resume,
    }


def metadata_json(metadata: ScanMetadata) -> dict[str, object]:
    """The sidecar's JSON object, keys in a fixed order."""
    listed = metadata.input
    return {
        "format": METADATA_FORMAT,
        "format_version": METADATA_VERSION,
        "scanner_version": metadata.scanner_version,
        "started_at": rfc3339_utc(metadata.started_at),
        "finished_at": rfc3339_utc(metadata.finished_at) if metadata.finished_at else None,
        "vantage": {
            "name": metadata.vantage,
            "public_addresses": list(metadata.public_addresses),
            "port25": metadata.sight.port25,
            **(
                {"port25_rates": metadata.sight.port25_rates}
                if metadata.sight.port25_rates is not None
                else {}
            ),
            "ipv6_route": metadata.sight.ipv6_route,
            "validating_resolver": metadata.sight.validating_resolver,
            **({"doctor": metadata.sight.doctor} if metadata.sight.doctor is not None else {}),
        },
        "resolver": {"source": metadata.resolver, "nameservers": list(metadata.nameservers)},
        "ehlo_name": metadata.ehlo_name,
        "input": (
            {
                "name": listed.name,
                "date": listed.date,
                "sha256": listed.sha256,
                "format": listed.format,
            }
            if listed is not None
            else None
        ),
        "options": dict(metadata.options),
        "runs": [
            {
                "started_at": rfc3339_utc(run.started_at),
                "finished_at": rfc3339_utc(run.finished_at) if run.finished_at else None,
                "vantage": run.vantage,
                "scanner_version": run.scanner_version,
            }
            for run in metadata.runs
        ],
    }


def write_metadata(results: Path, metadata: ScanMetadata) -> Path:
    """Write the sidecar of `results` whole (a temporary file renamed over it)."""
    target = metadata_path(results)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    temporary.write_text(
        json.dumps(metadata_json(metadata), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    os.replace(temporary, target)
    return target


def _utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@contextlib.contextmanager
def recorded_scan(
    results: Path,
    network: NetworkOptions,
    *,
    vantage: str | None,
    inputs: Sequence[Path | None],
    input_format: InputFormat,
    shard: Shard | None,
    resume: bool,
    clock: Callable[[], datetime] = _utc_now,
    addresses: Callable[[], tuple[str, ...]] = public_source_addresses,
    sight: Callable[[], VantageSight] = VantageSight,
) -> Iterator[ScanMetadata]:
    """Record the scan writing `results` in its sidecar, before and after the block.

    A sidecar that cannot be written costs a warning on stderr, never the scan.
    """
    started = clock()
    previous: ScanMetadata | None = None
    if resume:
        with contextlib.suppress(MetadataError):
            previous = read_metadata(results)
    run = ScanRun(started, None, vantage, __version__)
    metadata = ScanMetadata(
        scanner_version=__version__,
        started_at=previous.started_at if previous is not None else started,
        finished_at=None,
        vantage=vantage,
        public_addresses=addresses(),
        resolver="option" if network.resolvers else "system",
        nameservers=(
            tuple(f"{ns.ip}:{ns.port}" for ns in network.resolvers)
            if network.resolvers
            else _system_nameservers()
        ),
        ehlo_name=network.ehlo_name,
        input=input_list(inputs, input_format),
        options=MappingProxyType(_options(network, shard, resume)),
        runs=(*(previous.runs if previous is not None else ()), run),
        sight=_kept_doctor(sight(), previous),
    )
    _write_or_warn(results, metadata)
    try:
        yield metadata
    finally:
        finished = clock()
        ended = replace(run, finished_at=finished)
        _write_or_warn(
            results,
            replace(
                metadata,
                finished_at=finished,
                runs=(*metadata.runs[:-1], ended),
                sight=_kept_doctor(sight(), previous),
            ),
        )


def _kept_doctor(sight: VantageSight, previous: ScanMetadata | None) -> VantageSight:
    """A resumed scan keeps the doctor's findings of its sidecar."""
    if previous is None or previous.sight.doctor is None or sight.doctor is not None:
        return sight
    return replace(sight, doctor=previous.sight.doctor)


def record_doctor(results: Path, findings: list[dict[str, str]]) -> str | None:
    """Put `scanner doctor`'s findings in the sidecar's `vantage` object; why not, or None."""
    target = metadata_path(results)
    try:
        document = json.loads(target.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        return f"warning: {visible(str(target), 200)} not updated: {visible(str(error), 200)}"
    if not isinstance(document, dict) or not isinstance(document.get("vantage"), dict):
        return f"warning: {visible(str(target), 200)} is no scan metadata: not updated"
    document["vantage"]["doctor"] = {
        "at": rfc3339_utc(_utc_now()),
        "findings": findings,
    }
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    temporary.write_text(
        json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    os.replace(temporary, target)
    return None


def _write_or_warn(results: Path, metadata: ScanMetadata) -> None:
    import typer

    try:
        write_metadata(results, metadata)
    except OSError as error:
        typer.echo(
            f"warning: scan metadata {visible(str(metadata_path(results)), 200)} not written: "
            f"{visible(error.strerror or str(error), 200)}",
            err=True,
        )


# ---------------------------------------------------------------- reading


class MetadataError(Exception):
    """A sidecar that exists but is no scan metadata this scanner reads."""


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _flag(value: object) -> bool | None:
    return value if isinstance(value, bool) else None


def _strings(value: object) -> tuple[str, ...]:
    return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()


def _object(value: object) -> Mapping[str, object]:
    return value if isinstance(value, dict) else {}


def _json_value(value: object) -> JsonValue:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list):
        return [visible(str(item), 200) for item in value]
    return visible(json.dumps(value, ensure_ascii=False), 200)


def parse_metadata(document: object) -> ScanMetadata:
    """The typed metadata of a decoded sidecar; MetadataError when it is none."""
    data = _object(document)
    if data.get("format") != METADATA_FORMAT or data.get("format_version") != METADATA_VERSION:
        raise MetadataError(f"not {METADATA_FORMAT} version {METADATA_VERSION}")
    started = parse_time(data.get("started_at"))
    if started is None:
        raise MetadataError("started_at is no RFC 3339 time")
    vantage = _object(data.get("vantage"))
    vantage_name = _text(vantage.get("name"))
    if vantage_name is not None and vantage_problem(vantage_name) is not None:
        raise MetadataError("vantage.name is no vantage name")
    resolver = _object(data.get("resolver"))
    listed = data.get("input")
    runs: list[ScanRun] = []
    listed_runs = data.get("runs")
    for item in listed_runs if isinstance(listed_runs, list) else []:
        run = _object(item)
        run_start = parse_time(run.get("started_at"))
        if run_start is None:
            continue
        runs.append(
            ScanRun(
                started_at=run_start,
                finished_at=parse_time(run.get("finished_at")),
                vantage=_text(run.get("vantage")),
                scanner_version=_text(run.get("scanner_version")) or "",
            )
        )
    return ScanMetadata(
        scanner_version=_text(data.get("scanner_version")) or "",
        started_at=started,
        finished_at=parse_time(data.get("finished_at")),
        vantage=vantage_name,
        public_addresses=_strings(vantage.get("public_addresses")),
        sight=VantageSight(
            port25=_text(vantage.get("port25")),
            port25_rates=vantage.get("port25_rates"),
            ipv6_route=_flag(vantage.get("ipv6_route")),
            validating_resolver=_flag(vantage.get("validating_resolver")),
            doctor=vantage.get("doctor"),
        ),
        resolver=_text(resolver.get("source")) or "",
        nameservers=_strings(resolver.get("nameservers")),
        ehlo_name=_text(data.get("ehlo_name")),
        input=(
            InputList(
                name=_text(listed.get("name")),
                date=_text(listed.get("date")),
                sha256=_text(listed.get("sha256")),
                format=_text(listed.get("format")) or "",
            )
            if isinstance(listed, dict)
            else None
        ),
        options=MappingProxyType(
            {str(k): _json_value(v) for k, v in _object(data.get("options")).items()}
        ),
        runs=tuple(runs),
    )


def read_metadata(results: Path) -> ScanMetadata | None:
    """The sidecar of `results`, None when there is none; MetadataError when it is unusable."""
    path = metadata_path(results)
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_METADATA_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise MetadataError(f"cannot read it: {error.strerror or error}") from None
    if len(raw) > MAX_METADATA_BYTES:
        raise MetadataError(f"larger than {MAX_METADATA_BYTES} bytes")
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise MetadataError(f"not JSON ({error})") from None
    return parse_metadata(document)


# ---------------------------------------------------------------- soundness


class Comparison(StrEnum):
    """What a command does with several results files."""

    TIME_DIFF = "diff"  # the same domains at two times
    VANTAGE_DIFF = "diff --vantage"  # the same MX addresses seen from several vantages
    STATS_COMBINED = "stats"  # files of one scan date counted together (shards)
    STATS_OVER_TIME = "stats over time"  # the same measures per scan date


class Severity(StrEnum):
    REFUSE = "refuse"
    WARN = "warn"


@dataclass(frozen=True, slots=True)
class SoundnessRule:
    """Files compared by one of `refuse` (or `warn`) must agree on `value`."""

    what: str
    value: Callable[[ScanMetadata], object]
    refuse: frozenset[Comparison]
    warn: frozenset[Comparison]
    why: str
    known_only: bool = False  # compare only the files that record a value


_ALL: Final = frozenset(Comparison)

RULES: Final[tuple[SoundnessRule, ...]] = (
    SoundnessRule(
        "vantage",
        lambda m: m.vantage,
        refuse=frozenset({Comparison.TIME_DIFF, Comparison.STATS_OVER_TIME}),
        warn=frozenset({Comparison.STATS_COMBINED}),
        why="what a network path does to STARTTLS would read as a change of the domains",
    ),
    SoundnessRule(
        "input list",
        lambda m: m.input.name if m.input is not None else None,
        refuse=frozenset({Comparison.STATS_OVER_TIME, Comparison.STATS_COMBINED}),
        warn=frozenset(),
        why="shares of different populations are no trend and do not add up",
    ),
    SoundnessRule(
        "input list date",
        lambda m: m.input.date if m.input is not None else None,
        refuse=frozenset(),
        warn=frozenset({Comparison.STATS_COMBINED}),
        why="the files of one scan come from one version of the list",
    ),
    SoundnessRule(
        "EHLO name",
        lambda m: m.ehlo_name,
        refuse=frozenset({Comparison.TIME_DIFF, Comparison.VANTAGE_DIFF}),
        warn=frozenset({Comparison.STATS_OVER_TIME, Comparison.STATS_COMBINED}),
        why="servers that check the EHLO name answer another name differently",
    ),
    SoundnessRule(
        "scanner version",
        lambda m: m.scanner_version,
        refuse=frozenset(),
        warn=_ALL,
        why="checks may differ between versions",
    ),
    SoundnessRule(
        "resolver",
        lambda m: m.nameservers,
        refuse=frozenset(),
        warn=frozenset({Comparison.TIME_DIFF}),
        why="resolvers may answer differently (geographic DNS, stale caches)",
    ),
    # What the scanning host could see (docs/output.md#blocked-port-25,
    # docs/output.md#not-testable-reasons): a file without the fact is not compared.
    SoundnessRule(
        "outbound port 25 of the scanning host",
        lambda m: m.sight.port25,
        refuse=frozenset(),
        warn=_ALL,
        why="from a host that cannot reach port 25 every MX looks unreachable",
        known_only=True,
    ),
    SoundnessRule(
        "IPv6 route of the scanning host",
        lambda m: m.sight.ipv6_route,
        refuse=frozenset(),
        warn=_ALL,
        why="without one, IPv6 MX addresses are not testable (scanner-network:no-ipv6-route)",
        known_only=True,
    ),
    SoundnessRule(
        "validating resolver",
        lambda m: m.sight.validating_resolver,
        refuse=frozenset(),
        warn=_ALL,
        why="DANE verdicts need a validating resolver; without one they are unvalidated",
        known_only=True,
    ),
)


@dataclass(frozen=True, slots=True)
class Problem:
    severity: Severity
    text: str


@dataclass(frozen=True, slots=True)
class FileMetadata:
    """A results file as a comparison sees it: its label, its sidecar or why there is none."""

    label: str
    metadata: ScanMetadata | None
    unreadable: str | None = None


def load_file_metadata(results: Path) -> FileMetadata:
    try:
        return FileMetadata(str(results), read_metadata(results))
    except MetadataError as error:
        return FileMetadata(str(results), None, str(error))


def _shown(value: object) -> str:
    if isinstance(value, tuple):
        value = ", ".join(str(v) for v in value) or "none"
    return visible("none" if value is None else str(value), 80)


def missing_metadata(files: Sequence[FileMetadata]) -> list[Problem]:
    """A warning for each file whose sidecar is missing or unusable: it is compared unchecked."""
    problems: list[Problem] = []
    for entry in files:
        label = visible(entry.label, 200)
        if entry.unreadable is not None:
            why = visible(entry.unreadable, 200)
            text = f"{label}{METADATA_SUFFIX} is unusable ({why}): comparison not checked for it"
            problems.append(Problem(Severity.WARN, text))
        elif entry.metadata is None:
            text = f"{label} has no {METADATA_SUFFIX} sidecar: comparison not checked for it"
            problems.append(Problem(Severity.WARN, text))
    return problems


def rule_problems(comparison: Comparison, files: Sequence[FileMetadata]) -> list[Problem]:
    """The `RULES` that files with a sidecar break when compared this way."""
    problems: list[Problem] = []
    known = [(entry.label, entry.metadata) for entry in files if entry.metadata is not None]
    for rule in RULES:
        if comparison in rule.refuse:
            severity = Severity.REFUSE
        elif comparison in rule.warn:
            severity = Severity.WARN
        else:
            continue
        values = [(label, rule.value(metadata)) for label, metadata in known]
        if rule.known_only:
            values = [(label, value) for label, value in values if value is not None]
        if len({repr(value) for _, value in values}) > 1:
            listed = "; ".join(f"{visible(label, 200)}: {_shown(value)}" for label, value in values)
            problems.append(Problem(severity, f"{rule.what} differs ({listed}): {rule.why}"))
    return problems


def comparison_problems(comparison: Comparison, files: Sequence[FileMetadata]) -> list[Problem]:
    """What makes comparing `files` this way unsound (REFUSE) or doubtful (WARN)."""
    return missing_metadata(files) + rule_problems(comparison, files)
