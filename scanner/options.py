"""The network options of every command that probes, declared once.

`with_network_options` adds the options below to a typer command and hands the
command one `NetworkOptions` (keyword `network`), checked and built by keyword.
`build_scanner` turns it into real dependencies; the deadlines derived from
`--timeout` and `--greeting-timeout` are named here (docs/output.md#deadlines), and
so is the default EHLO name, chosen once at start (`default_ehlo_name`).
"""

from __future__ import annotations

import functools
import inspect
import ipaddress
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Final, ParamSpec, Protocol, TypeVar, cast

import dns.exception

from scanner.core.addresses import Exclusions, parse_exclusions
from scanner.core.caps import Caps
from scanner.core.egress import (
    DEFAULT_BLOCK_NETWORKS,
    DEFAULT_CANARIES,
    DEFAULT_CONTROLS,
    EgressSettings,
    Thresholds,
)
from scanner.core.names import is_valid_hostname
from scanner.evidence import ReceivedSettings
from scanner.models import ReportOptions
from scanner.net.policy_fetch import FetchSettings
from scanner.net.probe import ProbeSettings
from scanner.net.resolver import Nameserver, Resolver, parse_nameserver
from scanner.net.tls import TlsClient
from scanner.net.trust import TrustStore
from scanner.scan import Scanner, ScanSettings

if TYPE_CHECKING:
    import typer

# typer is imported where a command line is parsed or refused, not at start: worker
# processes unpickle `NetworkOptions` and call `build_scanner`, and never need it.

# One SMTP session may take this many phase deadlines in all (connect, greeting, EHLO,
# STARTTLS, handshake, EHLO again, QUIT, and one to spare).
SESSION_DEADLINE_STEPS = 8
# One domain (DNS, policy fetch, every MX host and address, retries) may take this many
# phase deadlines, and never less than DOMAIN_DEADLINE_MIN seconds.
DOMAIN_DEADLINE_STEPS = 30
DOMAIN_DEADLINE_MIN = 60.0
# The first pause before trying a busy (421) address again, as a share of --timeout;
# each further pause doubles (10 s steps: 2, 4, 8 s for the default 3 retries).
RETRY_BACKOFF_SHARE = 0.2
# The longest --timeout and --greeting-timeout: an hour per step (more, or `inf`, is a
# typo that would leave a scan waiting for ever).
MAX_TIMEOUT = 3600.0

# The greeting's own deadline: above postscreen's default greet pause (6 s), well
# below the 5 minutes RFC 5321 §4.5.3.2.1 lets a client wait for it.
DEFAULT_GREETING_TIMEOUT = 30.0

# EHLO without --ehlo-name: the host's fully qualified name when it resolves, else
# this name, which never resolves (RFC 6761 §6.4).
DEFAULT_EHLO_NAME = "scanner.invalid"
EHLO_NAME_LOOKUP_DEADLINE = 2.0  # seconds for getfqdn and its lookup, at start
# Names no other host can resolve (RFC 6761 special-use names, RFC 6762 .local, the
# conventional .localdomain): never a default EHLO name, whatever /etc/hosts says.
LOCAL_ONLY_SUFFIXES = ("localhost", "localdomain", "local", "invalid", "test", "example")
DEFAULT_CAPS = Caps()


@dataclass(frozen=True, slots=True)
class NetworkOptions:
    """What the network options say, validated."""

    resolvers: tuple[Nameserver, ...] = ()
    ca_files: tuple[Path, ...] = ()
    allow_private: bool = False
    timeout: float = 10.0
    greeting_timeout: float = DEFAULT_GREETING_TIMEOUT
    concurrency: int = 100
    per_ip: int = 4
    ehlo_name: str = DEFAULT_EHLO_NAME
    smtp_port: int = 25
    https_port: int = 443
    exclusions: Exclusions | None = None
    report: ReportOptions = field(default_factory=ReportOptions)
    caps: Caps = field(default_factory=Caps)
    busy_retries: int = 3
    received: ReceivedSettings | None = None  # --reports DB: join received TLS-RPT evidence
    egress: EgressSettings = field(default_factory=EgressSettings)  # the blocked-port-25 check

    @property
    def session_deadline(self) -> float:
        """The phase deadlines of one session, with room for a greeting held back to the end."""
        return self.timeout * SESSION_DEADLINE_STEPS + self.greeting_timeout

    @property
    def domain_deadline(self) -> float:
        """A domain's steps, with room for a greet pause that holds its sessions back."""
        return max(
            DOMAIN_DEADLINE_MIN, self.timeout * DOMAIN_DEADLINE_STEPS + self.greeting_timeout
        )


def valid_ehlo_name(name: str) -> bool:
    """RFC 5321 §4.1.1.1: EHLO takes a domain or an address literal."""
    if name.startswith("[") and name.endswith("]"):
        literal = name[1:-1].removeprefix("IPv6:")
        try:
            ipaddress.ip_address(literal)
        except ValueError:
            return False
        return True
    return is_valid_hostname(name)


def usable_host_name(name: str) -> bool:
    """A name other hosts might resolve: a hostname with a dot, outside local-only names."""
    name = name.rstrip(".").lower()
    if "." not in name or not is_valid_hostname(name):
        return False
    return name.rpartition(".")[2] not in LOCAL_ONLY_SUFFIXES


def host_ehlo_name(deadline: float = EHLO_NAME_LOOKUP_DEADLINE) -> str | None:
    """The host's fully qualified name if it is usable and resolves within `deadline`, else None.

    `socket.getfqdn` and the address lookup go through the system resolver and may
    block, so they run in a daemon thread that is left behind if it is too slow.
    """
    found: list[str] = []

    def look_up() -> None:
        name = socket.getfqdn().rstrip(".").lower()
        if not usable_host_name(name):
            return
        try:
            socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            return
        found.append(name)

    worker = threading.Thread(target=look_up, name="ehlo-name-lookup", daemon=True)
    worker.start()
    worker.join(deadline)
    return found[0] if found else None


@functools.cache
def default_ehlo_name() -> str:
    """The EHLO name when --ehlo-name is not given: chosen once per process.

    The host's fully qualified name when it resolves (`host_ehlo_name`); otherwise
    `scanner.invalid`, with one warning on stderr, since servers that check the EHLO
    name (Postfix `reject_unknown_helo_hostname`) refuse a name that does not resolve.
    """
    name = host_ehlo_name()
    if name is not None:
        return name
    from scanner.render import output_console

    output_console(stderr=True).print(  # wrapped to a terminal, or to COLUMNS when piped
        f"warning: this host has no fully qualified name that resolves; EHLO will say "
        f"{DEFAULT_EHLO_NAME}, which servers checking the EHLO name "
        "(reject_unknown_helo_hostname) refuse: set --ehlo-name to a name that resolves "
        "to this host",
        markup=False,
        highlight=False,
    )
    return DEFAULT_EHLO_NAME


def bad_parameter(message: str, option: str) -> typer.BadParameter:
    """The usage error (exit 2) of `option`."""
    import typer

    return typer.BadParameter(message, param_hint=option)


def _nameservers(texts: list[str] | None) -> tuple[Nameserver, ...]:
    try:
        return tuple(parse_nameserver(text) for text in texts or [])
    except ValueError as exc:
        raise bad_parameter(str(exc), "--resolver") from None


def _exclusions(path: Path | None) -> Exclusions | None:
    if path is None:
        return None
    try:
        return parse_exclusions(path.read_text(encoding="utf-8").splitlines())
    except (ValueError, OSError) as exc:
        raise bad_parameter(str(exc), "--exclude") from None


def network_options(
    *,
    resolver: list[str] | None = None,
    ca_file: list[Path] | None = None,
    allow_private: bool = False,
    timeout: float = 10.0,
    greeting_timeout: float = DEFAULT_GREETING_TIMEOUT,
    concurrency: int = 100,
    per_ip: int = 4,
    ehlo_name: str | None = None,
    smtp_port: int = 25,
    https_port: int = 443,
    exclude: Path | None = None,
    org: str = "scanner",
    contact: str = "postmaster@scanner.invalid",
    max_mx_hosts: int = DEFAULT_CAPS.max_mx_hosts,
    max_addresses_per_host: int = DEFAULT_CAPS.max_addresses_per_host,
    max_addresses: int = DEFAULT_CAPS.max_addresses,
    max_standby_hosts: int = DEFAULT_CAPS.max_standby_hosts,
    max_connections_per_domain: int = DEFAULT_CAPS.max_connections,
    max_probes_per_address: int = DEFAULT_CAPS.max_names_per_address,
    busy_retries: int = 3,
    reports: Path | None = None,
    report_days: int = 14,
    min_sessions: int = 100,
    max_failure_rate: float = 0.001,
    include_unverified: bool = False,
    canary: list[str] | None = None,
    control: list[str] | None = None,
    port25_networks: int = DEFAULT_BLOCK_NETWORKS,
    port25_check: bool = True,
) -> NetworkOptions:
    """Check the options' values and build `NetworkOptions` (usage errors exit 2).

    Without `ehlo_name`, the EHLO name is chosen (`default_ehlo_name`).
    """
    if ehlo_name is None:
        ehlo_name = default_ehlo_name()
    elif not valid_ehlo_name(ehlo_name):
        raise bad_parameter(
            f"{ehlo_name!r} is not a hostname or an address literal such as [192.0.2.1]",
            "--ehlo-name",
        )
    submitter = contact.rpartition("@")[2] or "scanner.invalid"
    return NetworkOptions(
        resolvers=_nameservers(resolver),
        ca_files=tuple(ca_file or []),
        allow_private=allow_private,
        timeout=timeout,
        greeting_timeout=greeting_timeout,
        concurrency=concurrency,
        per_ip=per_ip,
        ehlo_name=ehlo_name,
        smtp_port=smtp_port,
        https_port=https_port,
        exclusions=_exclusions(exclude),
        report=ReportOptions(organization_name=org, contact_info=contact, submitter=submitter),
        caps=Caps(
            max_mx_hosts=max_mx_hosts,
            max_addresses_per_host=max_addresses_per_host,
            max_addresses=max_addresses,
            max_standby_hosts=max_standby_hosts,
            max_connections=max_connections_per_domain,
            max_names_per_address=max_probes_per_address,
        ),
        busy_retries=busy_retries,
        egress=_egress(canary, control, port25_networks, port25_check),
        received=(
            ReceivedSettings(
                database=reports,
                report_days=report_days,
                min_sessions=min_sessions,
                max_failure_rate=max_failure_rate,
                include_unverified=include_unverified,
            )
            if reports is not None
            else None
        ),
    )


def _option(annotation: object, name: str) -> inspect.Parameter:
    """The typer parameter `name` with its default from `network_options`, where it is declared."""
    default = inspect.signature(network_options).parameters[name].default
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
    )


@functools.cache
def network_parameters() -> tuple[inspect.Parameter, ...]:
    """The options themselves: typer reads these parameters as if the command declared them."""
    import typer

    return (
        _option(
            Annotated[
                list[str] | None,
                typer.Option(
                    "--resolver", help="Nameserver IP[:PORT] (repeatable); default: resolv.conf."
                ),
            ],
            "resolver",
        ),
        _option(
            Annotated[
                list[Path] | None,
                typer.Option(
                    "--ca-file",
                    help="Extra trust anchors (PEM), added to certifi's roots.",
                    exists=True,
                    dir_okay=False,
                ),
            ],
            "ca_file",
        ),
        _option(
            Annotated[
                bool,
                typer.Option(
                    "--allow-private", help="Permit loopback, private and link-local targets."
                ),
            ],
            "allow_private",
        ),
        _option(
            Annotated[
                float,
                typer.Option(
                    "--timeout",
                    min=0.1,
                    max=MAX_TIMEOUT,
                    help="Deadline in seconds for each network step.",
                ),
            ],
            "timeout",
        ),
        _option(
            Annotated[
                float,
                typer.Option(
                    "--greeting-timeout",
                    min=0.1,
                    max=MAX_TIMEOUT,
                    help="Deadline in seconds for the server's greeting (above greet pauses such as postscreen's 6 s).",
                ),
            ],
            "greeting_timeout",
        ),
        _option(
            Annotated[
                int, typer.Option("--per-ip", min=1, help="Connections to one address at once.")
            ],
            "per_ip",
        ),
        _option(
            Annotated[
                str | None,
                typer.Option(
                    "--ehlo-name",
                    help="Name sent in EHLO; identify your scanner. Default: this host's fully qualified name if it resolves, else scanner.invalid.",
                ),
            ],
            "ehlo_name",
        ),
        _option(
            Annotated[int, typer.Option("--smtp-port", min=1, max=65535, help="SMTP port (labs).")],
            "smtp_port",
        ),
        _option(
            Annotated[
                int, typer.Option("--https-port", min=1, max=65535, help="HTTPS port (labs).")
            ],
            "https_port",
        ),
        _option(
            Annotated[
                Path | None,
                typer.Option(
                    "--exclude",
                    help="File of domains and CIDRs never contacted.",
                    exists=True,
                    dir_okay=False,
                ),
            ],
            "exclude",
        ),
        *(
            _option(
                Annotated[int, typer.Option(flag, min=1, help=text)],
                flag.removeprefix("--").replace("-", "_"),
            )
            for flag, text in (
                (
                    "--max-mx-hosts",
                    "MX hosts tested per domain (docs/output.md#caps).",
                ),
                (
                    "--max-addresses-per-host",
                    "Addresses tested per MX host.",
                ),
                (
                    "--max-addresses",
                    "Addresses tested per domain, all hosts together.",
                ),
                (
                    "--max-standby-hosts",
                    "Hosts named only by the policy tested per domain.",
                ),
                (
                    "--max-connections-per-domain",
                    "Connection attempts per domain, retries and policy fetch included.",
                ),
                (
                    "--max-probes-per-address",
                    "Distinct MX names probed on one address in a scan.",
                ),
            )
        ),
        _option(
            Annotated[
                int,
                typer.Option(
                    "--busy-retries",
                    min=0,
                    max=10,
                    help="Further tries of an address that answers 421.",
                ),
            ],
            "busy_retries",
        ),
        _option(
            Annotated[
                Path | None,
                typer.Option(
                    "--reports",
                    help="TLS-RPT database (scanner tlsrpt import): join what senders reported to the verdict.",
                    exists=True,
                    dir_okay=False,
                ),
            ],
            "reports",
        ),
        _option(
            Annotated[
                int,
                typer.Option(
                    "--report-days", min=1, help="Received reports of the last N days count."
                ),
            ],
            "report_days",
        ),
        _option(
            Annotated[
                int,
                typer.Option(
                    "--min-sessions",
                    min=1,
                    help="Sessions a reporter's reports above the failure rate must hold to block.",
                ),
            ],
            "min_sessions",
        ),
        _option(
            Annotated[
                float,
                typer.Option(
                    "--max-failure-rate",
                    min=0.0,
                    max=1.0,
                    help="Highest failure rate that does not block (0.001 = 0.1%).",
                ),
            ],
            "max_failure_rate",
        ),
        _option(
            Annotated[
                bool,
                typer.Option(
                    "--include-unverified", help="Count received reports whose DKIM did not verify."
                ),
            ],
            "include_unverified",
        ),
        _option(
            Annotated[
                str, typer.Option("--org", help="organization-name of the RFC 8460 reports.")
            ],
            "org",
        ),
        _option(
            Annotated[
                list[str] | None,
                typer.Option(
                    "--canary",
                    help="HOST[:PORT] known to accept SMTP (port 25 by default), asked when every "
                    "MX fails at connect; repeat for several. Default: large providers' MX hosts.",
                ),
            ],
            "canary",
        ),
        _option(
            Annotated[
                list[str] | None,
                typer.Option(
                    "--control",
                    help="HOST[:PORT] (443 by default) whose TCP port shows the network works "
                    "apart from port 25. Default: large providers' web hosts.",
                ),
            ],
            "control",
        ),
        _option(
            Annotated[
                int,
                typer.Option(
                    "--port25-networks",
                    min=1,
                    help="Distinct /24 or /48 networks whose MX all fail at connect before the "
                    "canaries are asked (docs/output.md#blocked-port-25).",
                ),
            ],
            "port25_networks",
        ),
        _option(
            Annotated[
                bool,
                typer.Option(
                    "--port25-check/--no-port25-check",
                    help="Stop when the network blocks outbound port 25 (docs/output.md#blocked-port-25).",
                ),
            ],
            "port25_check",
        ),
        _option(
            Annotated[str, typer.Option("--contact", help="contact-info of the RFC 8460 reports.")],
            "contact",
        ),
    )


P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


class KeywordCommand(Protocol[R_co]):
    """A typer command as the decorator leaves it: called with keyword arguments only."""

    def __call__(self, **kwargs: object) -> R_co: ...


def with_network_options(command: Callable[P, R]) -> KeywordCommand[R]:
    """Declare the network options on `command`, which receives them as `network=`.

    The command's own `concurrency` parameter, when it has one, is passed on too, so
    that commands that scan one domain need not offer it.
    """
    return _with_options(command, frozenset())


# The options that only act on a report or on received reports: a command that writes
# neither (`policy suggest`) does not offer them.
REPORT_OPTIONS: Final = frozenset(
    {
        "org",
        "contact",
        "reports",
        "report_days",
        "min_sessions",
        "max_failure_rate",
        "include_unverified",
    }
)


def with_probe_options(command: Callable[P, R]) -> KeywordCommand[R]:
    """`with_network_options` without `REPORT_OPTIONS`: their defaults apply."""
    return _with_options(command, REPORT_OPTIONS)


def _with_options(command: Callable[P, R], leave_out: frozenset[str]) -> KeywordCommand[R]:
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != "network"]
    parameters = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]
    declared = tuple(p for p in network_parameters() if p.name not in leave_out)
    declared_names = frozenset(parameter.name for parameter in declared)

    @functools.wraps(command)
    def wrapper(**kwargs: object) -> R:
        chosen = {name: kwargs.pop(name) for name in list(kwargs) if name in declared_names}
        if "concurrency" in kwargs:
            chosen["concurrency"] = kwargs["concurrency"]
        network = network_options(**chosen)  # type: ignore[arg-type]
        run = cast("KeywordCommand[R]", command)
        return run(network=network, **kwargs)

    wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*parameters, *declared]
    )
    wrapper.__annotations__ = {}
    return wrapper


def _targets(texts: list[str] | None, default_port: int, flag: str) -> tuple[tuple[str, int], ...]:
    from scanner.net.canaries import parse_target

    targets = []
    for text in texts or []:
        try:
            targets.append(parse_target(text, default_port))
        except ValueError as exc:
            raise bad_parameter(f"{text!r} is no HOST[:PORT]: {exc}", flag) from None
    return tuple(targets)


def _egress(
    canary: list[str] | None, control: list[str] | None, networks: int, enabled: bool
) -> EgressSettings:
    """The blocked-port-25 check: the canaries and controls named, else the defaults."""
    return EgressSettings(
        thresholds=Thresholds(networks=networks),
        canaries=_targets(canary, 25, "--canary") or DEFAULT_CANARIES,
        controls=_targets(control, 443, "--control") or DEFAULT_CONTROLS,
        enabled=enabled,
    )


def build_scanner(options: NetworkOptions) -> Scanner:
    """Real dependencies for one run: resolver, TLS client, settings."""
    try:
        trust = TrustStore.from_files(list(options.ca_files))
    except ValueError as exc:
        raise bad_parameter(str(exc), "--ca-file") from None
    settings = scan_settings(options)
    try:
        resolver = Resolver.create(options.resolvers or None, timeout=options.timeout)
    except dns.exception.DNSException as exc:
        raise bad_parameter(
            f"no usable system resolver ({exc}); name one with --resolver IP[:PORT]",
            "--resolver",
        ) from None
    return Scanner(resolver=resolver, tls=TlsClient.create(trust), settings=settings)


def scan_settings(options: NetworkOptions) -> ScanSettings:
    """The settings of a run, every derived deadline included."""
    return ScanSettings(
        concurrency=options.concurrency,
        per_ip=options.per_ip,
        domain_timeout=options.domain_deadline,
        allow_private=options.allow_private,
        exclusions=options.exclusions,
        report=options.report,
        caps=options.caps,
        busy_retries=options.busy_retries,
        received=options.received,
        egress=options.egress,
        retry_backoff=options.timeout * RETRY_BACKOFF_SHARE,
        probe=ProbeSettings(
            smtp_port=options.smtp_port,
            ehlo_name=options.ehlo_name,
            step_timeout=options.timeout,
            greeting_timeout=options.greeting_timeout,
            total_timeout=options.session_deadline,
        ),
        fetch=FetchSettings(https_port=options.https_port, timeout=options.timeout),
    )
