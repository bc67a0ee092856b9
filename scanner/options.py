"""The network options of every command that probes, declared once.

`with_network_options` adds the options below to a typer command and hands the
command one `NetworkOptions` (keyword `network`), checked and built by keyword.
`build_scanner` turns it into real dependencies; the deadlines derived from
`--timeout` are named here (docs/output.md#deadlines).
"""

from __future__ import annotations

import functools
import inspect
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import dns.exception
import typer

from scanner.core.addresses import Exclusions, parse_exclusions
from scanner.core.names import is_valid_hostname
from scanner.models import ReportOptions
from scanner.net.policy_fetch import FetchSettings
from scanner.net.probe import ProbeSettings
from scanner.net.resolver import Nameserver, Resolver, parse_nameserver
from scanner.net.tls import TlsClient, TrustStore
from scanner.scan import Scanner, ScanSettings

# One SMTP session may take this many phase deadlines in all (connect, greeting, EHLO,
# STARTTLS, handshake, EHLO again, QUIT, and one to spare).
SESSION_DEADLINE_STEPS = 8
# One domain (DNS, policy fetch, every MX host and address, retries) may take this many
# phase deadlines, and never less than DOMAIN_DEADLINE_MIN seconds.
DOMAIN_DEADLINE_STEPS = 30
DOMAIN_DEADLINE_MIN = 60.0

DEFAULT_EHLO_NAME = "scanner.invalid"


@dataclass(frozen=True, slots=True)
class NetworkOptions:
    """What the network options say, validated."""

    resolvers: tuple[Nameserver, ...] = ()
    ca_files: tuple[Path, ...] = ()
    allow_private: bool = False
    timeout: float = 10.0
    concurrency: int = 100
    per_ip: int = 4
    ehlo_name: str = DEFAULT_EHLO_NAME
    smtp_port: int = 25
    https_port: int = 443
    exclusions: Exclusions | None = None
    report: ReportOptions = field(default_factory=ReportOptions)

    @property
    def session_deadline(self) -> float:
        return self.timeout * SESSION_DEADLINE_STEPS

    @property
    def domain_deadline(self) -> float:
        return max(DOMAIN_DEADLINE_MIN, self.timeout * DOMAIN_DEADLINE_STEPS)


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


def _nameservers(texts: list[str] | None) -> tuple[Nameserver, ...]:
    try:
        return tuple(parse_nameserver(text) for text in texts or [])
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--resolver") from None


def _exclusions(path: Path | None) -> Exclusions | None:
    if path is None:
        return None
    try:
        return parse_exclusions(path.read_text(encoding="utf-8").splitlines())
    except (ValueError, OSError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--exclude") from None


def network_options(
    *,
    resolver: list[str] | None = None,
    ca_file: list[Path] | None = None,
    allow_private: bool = False,
    timeout: float = 10.0,
    concurrency: int = 100,
    per_ip: int = 4,
    ehlo_name: str = DEFAULT_EHLO_NAME,
    smtp_port: int = 25,
    https_port: int = 443,
    exclude: Path | None = None,
    org: str = "scanner",
    contact: str = "postmaster@scanner.invalid",
) -> NetworkOptions:
    """Check the options' values and build `NetworkOptions` (usage errors exit 2)."""
    if not valid_ehlo_name(ehlo_name):
        raise typer.BadParameter(
            f"{ehlo_name!r} is not a hostname or an address literal such as [192.0.2.1]",
            param_hint="--ehlo-name",
        )
    submitter = contact.rpartition("@")[2] or "scanner.invalid"
    return NetworkOptions(
        resolvers=_nameservers(resolver),
        ca_files=tuple(ca_file or []),
        allow_private=allow_private,
        timeout=timeout,
        concurrency=concurrency,
        per_ip=per_ip,
        ehlo_name=ehlo_name,
        smtp_port=smtp_port,
        https_port=https_port,
        exclusions=_exclusions(exclude),
        report=ReportOptions(organization_name=org, contact_info=contact, submitter=submitter),
    )


def _option(annotation: object, default: object, name: str) -> inspect.Parameter:
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
    )


# The options themselves: typer reads these parameters as if the command declared them.
NETWORK_PARAMETERS: tuple[inspect.Parameter, ...] = (
    _option(
        Annotated[
            list[str] | None,
            typer.Option("--resolver", help="Nameserver IP[:PORT] (repeatable); default: resolv.conf."),
        ],
        None,
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
        None,
        "ca_file",
    ),
    _option(
        Annotated[
            bool,
            typer.Option("--allow-private", help="Permit loopback, private and link-local targets."),
        ],
        False,
        "allow_private",
    ),
    _option(
        Annotated[
            float, typer.Option("--timeout", min=0.1, help="Deadline in seconds for each network step.")
        ],
        10.0,
        "timeout",
    ),
    _option(
        Annotated[int, typer.Option("--per-ip", min=1, help="Connections to one address at once.")],
        4,
        "per_ip",
    ),
    _option(
        Annotated[str, typer.Option("--ehlo-name", help="Name sent in EHLO; identify your scanner.")],
        DEFAULT_EHLO_NAME,
        "ehlo_name",
    ),
    _option(
        Annotated[int, typer.Option("--smtp-port", min=1, max=65535, help="SMTP port (labs).")],
        25,
        "smtp_port",
    ),
    _option(
        Annotated[int, typer.Option("--https-port", min=1, max=65535, help="HTTPS port (labs).")],
        443,
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
        None,
        "exclude",
    ),
    _option(
        Annotated[str, typer.Option("--org", help="organization-name of the RFC 8460 reports.")],
        "scanner",
        "org",
    ),
    _option(
        Annotated[str, typer.Option("--contact", help="contact-info of the RFC 8460 reports.")],
        "postmaster@scanner.invalid",
        "contact",
    ),
)
_NETWORK_NAMES = frozenset(parameter.name for parameter in NETWORK_PARAMETERS)

P = ParamSpec("P")
R = TypeVar("R")


def with_network_options(command: Callable[P, R]) -> Callable[..., R]:
    """Declare the network options on `command`, which receives them as `network=`.

    The command's own `concurrency` parameter, when it has one, is passed on too, so
    that commands that scan one domain need not offer it.
    """
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != "network"]
    parameters = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]

    @functools.wraps(command)
    def wrapper(**kwargs: object) -> R:
        chosen = {name: kwargs.pop(name) for name in list(kwargs) if name in _NETWORK_NAMES}
        if "concurrency" in kwargs:
            chosen["concurrency"] = kwargs["concurrency"]
        network = network_options(**chosen)  # type: ignore[arg-type]
        run: Callable[..., R] = command
        return run(network=network, **kwargs)

    wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*parameters, *NETWORK_PARAMETERS]
    )
    wrapper.__annotations__ = {}
    return wrapper


def build_scanner(options: NetworkOptions) -> Scanner:
    """Real dependencies for one run: resolver, TLS client, settings."""
    try:
        trust = TrustStore.from_files(list(options.ca_files))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--ca-file") from None
    settings = ScanSettings(
        concurrency=options.concurrency,
        per_ip=options.per_ip,
        domain_timeout=options.domain_deadline,
        allow_private=options.allow_private,
        exclusions=options.exclusions,
        report=options.report,
        probe=ProbeSettings(
            smtp_port=options.smtp_port,
            ehlo_name=options.ehlo_name,
            step_timeout=options.timeout,
            total_timeout=options.session_deadline,
        ),
        fetch=FetchSettings(https_port=options.https_port, timeout=options.timeout),
    )
    try:
        resolver = Resolver.create(options.resolvers or None, timeout=options.timeout)
    except dns.exception.DNSException as exc:
        raise typer.BadParameter(
            f"no usable system resolver ({exc}); name one with --resolver IP[:PORT]",
            param_hint="--resolver",
        ) from None
    return Scanner(resolver=resolver, tls=TlsClient.create(trust), settings=settings)
