"""World descriptions: a small internet of mail domains, read from TOML.

A world says which DNS records exist, which SMTP servers listen on which
loopback address and how they misbehave, which MTA-STS policy hosts serve
which body, and what verdict a correct scanner must reach for each domain.
The lab (`scanner.lab.open_lab`) serves a world; tests compare the scanner's
output with the `expect` tables.

File format (TOML, read with `tomllib`; unknown keys are errors)::

    [lab]                                   # optional
    description = "free text"

    [dns]                                   # optional: records at absolute names
    "_mta-sts.provider.example" = { txt = ["v=STSv1; id=p1"] }

    [[servers]]                             # optional: SMTP servers shared by domains
    address = "127.0.1.10"                  # loopback only; one listener per address
    hostnames = ["mx1.provider.example"]    # or hostname = "..."; gets an automatic A/AAAA
                                            # (a hostname on several addresses gets one each)
    behaviour = "good"                      # SmtpBehaviour value (default "good")
    certificate = "good"                    # CertificateKind value (default "good")
    greeting = "mx.provider.example ESMTP"  # optional: the greeting's text, see below
    connection_limit = 2                    # optional: at most 2 at once; more get 421
    tlsa = ["3 1 1 leaf", "2 1 1 issuer"]   # optional: TLSA records at _<smtp port>._tcp.<host>
    tlsa_signature = "expired"              # optional: "valid" (default) or "expired" RRSIGs

    [zones."example"]                       # optional: DNS zones, signed by default; with
    signed = true                           # zones, every name must lie in one (docs/lab.md)

    [domains."example.org"]                 # one table per domain to scan, in file order
    description = "free text"

    [domains."example.org".dns]             # owner names: "@" = the domain, "x" = x.<domain>,
    "@" = { mx = ["10 mx.example.org"] }    # "x." = absolute
    "_mta-sts" = { txt = [["v=STSv1; ", "id=abc"]] }   # a list inside txt = one multi-string record
    "_smtp._tls" = { txt = ["v=TLSRPTv1; rua=mailto:tlsrpt@example.org"] }

    [[domains."example.org".servers]]       # SMTP servers, same keys as [[servers]]
    hostname = "mx.example.org"
    address = "127.0.1.1"

    [domains."example.org".policy]          # the policy host mta-sts.<domain>
    address = "127.0.2.1"                   # gets an automatic A record unless dns names it
    behaviour = "good"                      # PolicyBehaviour value (default "good")
    body = "version: STSv1\\nmode: testing\\nmx: mx.example.org\\nmax_age: 86400\\n"
    line_endings = "crlf"                   # optional: "lf" (default, as written) or "crlf"
    location = "https://elsewhere.example/" # optional: Location of the "redirect" behaviour

    [domains."example.org".expect]          # the verdict a correct scanner must reach
    enforce_ready = true                    # required
    policy_type = "sts"                     # "sts" | "no-policy-found"
    policy_error = "sts-policy-fetch-error" # or sts-policy-invalid | sts-webpki-invalid
    indicators = ["starttls-stripped"]      # docs/output.md#indicators that must be present
    result_types = ["certificate-expired"]  # RFC 8460 types that must appear among sessions
    starttls = { "127.0.1.1" = "offered" }  # offered | missing | stripped | garbled | refused
    not_testable = { "127.0.1.2" = "busy:421" }   # reason prefix
    error = "invalid-domain"                # error prefix, for a name that cannot be scanned
    dane = { "127.0.1.1" = "pass" }         # per address: pass | fail | no-tlsa | unusable |
                                            # insecure | bogus | unvalidated

Record keys: `a`, `aaaa` (lists of addresses), `mx` (list of "PREF HOST"; "0 ." is a null
MX), `txt` (list; each item a string, split into 255-byte character-strings when longer,
or a list of character-strings), `cname` (a name; no other data may sit beside it),
`ptr` (list of names, at a reverse owner such as `"1.0.0.127.in-addr.arpa."`),
`servfail = true` (every query at the name gets SERVFAIL), `timeout = true` (queries at
the name are never answered). A domain whose name is not a valid DNS name may only carry
`description` and `expect`.

Server key `greeting`: the text of the server's greeting reply, after the code and a
space, in place of the default (`<host> ESMTP scanner lab`, or the `4.3.2 <host> busy ...`
of "greeting-421" and the `5.3.2 <host> no SMTP service here` of "greeting-554"). The
code stays the behaviour's (220, 421 or 554). A string is one line; an array of strings
is a multi-line reply, one line each (`220-a`, `220 b`). The text is sent verbatim as
UTF-8, so a world can make a server say anything a hostile server might: TOML escapes
such as `"\\u001b[2J"`, `"\\u202e"` or `"\\u0000"` become those very bytes. CR and LF are
refused (they would end the line); so is a greeting on a server that never greets
("silent", "closed"). TXT record strings are likewise sent as the UTF-8 of the TOML
string, any character allowed.

Zones and TLSA (docs/lab.md#dnssec-and-dane): with `[zones]`, the lab plays a DNS tree:
a signed root (the trust anchor), every declared zone delegated from the closest
declared ancestor (or the root) with NS, and with DS when the zone is signed, zones
signed with ECDSA P-256 (algorithm 13) and NSEC. A server's `tlsa` items are
`"USAGE SELECTOR MATCHING-TYPE DATA"`, DATA being hex or one of `leaf` (the certificate
the server presents for the host name), `issuer` (the certificate that issued it: the
intermediate it is sent with, else the lab CA) or `stale` (a key the server does not
use: the record left behind by a key change). They are published at
`_<port>._tcp.<host name>` for each host name of the server, the port being the lab's
SMTP port, known only when the lab starts; `tlsa` needs `[zones]`.
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import TypeVar

from scanner.models import DaneStatus, IndicatorCode, ResultType, StartTlsStatus

MAX_CHARACTER_STRING = 255
MAX_CNAME_TARGET_LENGTH = 253


class WorldError(ValueError):
    """A world file that cannot be served; the message names the offending key."""


class SmtpBehaviour(StrEnum):
    """How one lab SMTP server behaves."""

    GOOD = "good"
    GOOD_MULTILINE_GREETING = "good-multiline-greeting"
    NO_STARTTLS = "no-starttls"  # not advertised, command answered 502
    STARTTLS_HIDDEN = "starttls-hidden"  # not advertised, command accepted: a stripped EHLO
    STARTTLS_MASKED = "starttls-masked"  # XXXXXXXA in place of STARTTLS, command 500
    STARTTLS_454 = "starttls-454"
    STARTTLS_220_NO_TLS = "starttls-220-no-tls"  # 220, then plaintext instead of TLS
    PLAINTEXT_INJECTION = "plaintext-injection"  # bytes after the 220 in the same write
    GREETING_421 = "greeting-421"
    GREETING_554 = "greeting-554"
    HELO_ONLY = "helo-only"
    SILENT = "silent"  # accepts, never greets
    FLOOD = "flood"  # endless 250- lines after EHLO
    CLOSED = "closed"  # no listener: connection refused
    STARTTLS_AFTER_TLS = "starttls-after-tls"  # advertises STARTTLS again after TLS
    WEAK_TLS = "weak-tls"  # good dialogue, but TLS 1.0 and 1.1 only
    STARTTLS_CLOSE = "starttls-close"  # STARTTLS advertised; the command closes the connection
    HANDSHAKE_STALL = "handshake-stall"  # 220 to STARTTLS, then never speaks again
    LATE_INJECTION = "late-injection"  # 220 to STARTTLS, plaintext ~20 ms later, then TLS


class PolicyBehaviour(StrEnum):
    """How one lab MTA-STS policy host answers GET /.well-known/mta-sts.txt."""

    GOOD = "good"
    WRONG_CONTENT_TYPE = "wrong-content-type"
    REDIRECT = "redirect"
    NOT_FOUND = "not-found"
    OVERSIZE = "oversize"
    SLOW = "slow"
    UNTRUSTED_CERT = "untrusted-cert"
    WRONG_NAME_CERT = "wrong-name-cert"


class CertificateKind(StrEnum):
    """Which certificate a lab server presents for a hostname."""

    GOOD = "good"
    WRONG_NAME = "wrong-name"
    EXPIRED = "expired"
    NOT_YET_VALID = "not-yet-valid"
    UNKNOWN_CA = "unknown-ca"
    SELF_SIGNED = "self-signed"
    WILDCARD = "wildcard"
    MISSING_INTERMEDIATE = "missing-intermediate"
    EXPIRED_INTERMEDIATE = "expired-intermediate"  # valid leaf under an expired intermediate
    INTERMEDIATE = "intermediate"  # valid leaf sent with the valid intermediate that issued it
    EXPIRED_WRONG_NAME = "expired-wrong-name"  # expired, and named wrong-name.invalid only


class TlsaSource(StrEnum):
    """What a lab TLSA record's data is computed from, at lab start."""

    LEAF = "leaf"  # the certificate the server presents for the host name
    ISSUER = "issuer"  # the certificate that issued it (the intermediate sent, else the lab CA)
    STALE = "stale"  # a key the server does not use (left behind by a key change)


class TlsaSignature(StrEnum):
    """How the lab signs a server's TLSA RRset."""

    VALID = "valid"
    EXPIRED = "expired"  # RRSIGs whose expiration lies in the past: bogus to a validator


@dataclass(frozen=True, slots=True)
class TlsaSpec:
    """One TLSA record of a lab server: parameters, and the data or where it comes from."""

    usage: int
    selector: int
    matching_type: int
    source: TlsaSource | None = None  # None: `data` is the association data as given
    data: bytes = b""

    @property
    def text(self) -> str:
        what = self.source.value if self.source is not None else self.data.hex()
        return f"{self.usage} {self.selector} {self.matching_type} {what}"


@dataclass(frozen=True, slots=True)
class ZoneSpec:
    """A DNS zone of the lab's tree; `name` is its apex (lower case, no trailing dot)."""

    name: str
    signed: bool = True


POLICY_CERTIFICATES: Mapping[PolicyBehaviour, CertificateKind] = MappingProxyType(
    {
        PolicyBehaviour.UNTRUSTED_CERT: CertificateKind.UNKNOWN_CA,
        PolicyBehaviour.WRONG_NAME_CERT: CertificateKind.WRONG_NAME,
    }
)

E = TypeVar("E", bound=StrEnum)

POLICY_TYPES = ("sts", "no-policy-found")
POLICY_ERRORS = (
    ResultType.STS_POLICY_FETCH_ERROR,
    ResultType.STS_POLICY_INVALID,
    ResultType.STS_WEBPKI_INVALID,
)


@dataclass(frozen=True, slots=True)
class MxSpec:
    """One MX record; `host` is "." for a null MX (RFC 7505)."""

    preference: int
    host: str


@dataclass(frozen=True, slots=True)
class NameRecords:
    """Everything the lab DNS server holds at one absolute name (lower case, no trailing dot)."""

    name: str
    a: tuple[str, ...] = ()
    aaaa: tuple[str, ...] = ()
    mx: tuple[MxSpec, ...] = ()
    txt: tuple[tuple[str, ...], ...] = ()  # each record: its character-strings
    cname: str | None = None
    servfail: bool = False
    timeout: bool = False
    ptr: tuple[str, ...] = ()  # names, for a reverse (in-addr.arpa, ip6.arpa) owner


@dataclass(frozen=True, slots=True)
class SmtpServer:
    """One SMTP listener: every hostname that resolves to `address` shares its behaviour."""

    address: str
    hostnames: tuple[str, ...]
    behaviour: SmtpBehaviour = SmtpBehaviour.GOOD
    certificate: CertificateKind = CertificateKind.GOOD
    greeting: tuple[str, ...] | None = None  # the greeting reply's lines; None: the default
    # Simultaneous connections the address serves; more get a 421 and a close, as a
    # Postfix with smtpd_client_connection_count_limit does. None: no limit.
    connection_limit: int | None = None
    tlsa: tuple[TlsaSpec, ...] = ()  # published at _<smtp port>._tcp.<each host name>
    tlsa_signature: TlsaSignature = TlsaSignature.VALID


@dataclass(frozen=True, slots=True)
class PolicyHost:
    """One MTA-STS policy host; several may share an address (selected by SNI and Host)."""

    hostname: str
    address: str
    behaviour: PolicyBehaviour
    body: str
    location: str

    @property
    def certificate(self) -> CertificateKind:
        return POLICY_CERTIFICATES.get(self.behaviour, CertificateKind.GOOD)


@dataclass(frozen=True, slots=True)
class Expectation:
    """The verdict a correct scanner must reach for one domain.

    `indicators` and `result_types` must be present (others may appear too);
    `starttls` must match exactly per address; `not_testable` values are
    prefixes of the address's reason; None means "not checked".
    """

    enforce_ready: bool
    policy_error: ResultType | None = None
    policy_type: str | None = None
    indicators: tuple[IndicatorCode, ...] = ()
    result_types: tuple[ResultType, ...] = ()
    starttls: Mapping[str, StartTlsStatus] = field(default_factory=lambda: MappingProxyType({}))
    not_testable: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    error: str | None = None
    dane: Mapping[str, DaneStatus] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class Domain:
    name: str
    description: str = ""
    policy: PolicyHost | None = None
    servers: tuple[SmtpServer, ...] = ()  # as declared under the domain
    expect: Expectation | None = None


@dataclass(frozen=True, slots=True)
class World:
    """A loaded world. `records` includes the automatic A/AAAA records of servers and policy hosts."""

    domains: tuple[Domain, ...]
    records: Mapping[str, NameRecords]
    servers: tuple[SmtpServer, ...]  # one per address, merged
    policy_hosts: tuple[PolicyHost, ...]
    description: str = ""
    source: str = "<string>"
    zones: tuple[ZoneSpec, ...] = ()  # empty: the flat, unsigned namespace of older worlds

    @property
    def domain_names(self) -> tuple[str, ...]:
        """The scan input: every domain, in file order."""
        return tuple(domain.name for domain in self.domains)

    def domain(self, name: str) -> Domain:
        """The domain called `name`; KeyError when there is none."""
        for domain in self.domains:
            if domain.name == name:
                return domain
        raise KeyError(name)

    def server(self, address: str) -> SmtpServer | None:
        for server in self.servers:
            if server.address == address:
                return server
        return None


# ---------------------------------------------------------------- loading


def load_world(path: Path | str) -> World:
    """Read and validate a world file; WorldError (with the file name) on any problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise WorldError(f"{path}: cannot read world file: {error.strerror or error}") from error
    except UnicodeDecodeError as error:
        raise WorldError(f"{path}: world file is not UTF-8: {error}") from error
    return parse_world(text, source=str(path))


def parse_world(text: str, *, source: str = "<string>") -> World:
    """Parse a world from TOML text; WorldError (prefixed with `source`) on any problem."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise WorldError(f"{source}: not valid TOML: {error}") from error
    try:
        return _Builder(source).build(document)
    except WorldError as error:
        raise WorldError(f"{source}: {error}") from None


def normalise_name(name: str) -> str:
    """Lower case, no trailing dot ("." stays the root)."""
    name = name.strip().lower()
    if name != "." and name.endswith("."):
        name = name[:-1]
    return name


def is_valid_dns_name(name: str) -> bool:
    """Letters, digits, hyphens and underscores; 1–63 octet labels; 253 octets in all."""
    if not name or len(name) > MAX_CNAME_TARGET_LENGTH or not name.isascii():
        return False
    for label in name.split("."):
        if not 1 <= len(label) <= 63:
            return False
        if label.startswith("-") or label.endswith("-"):
            return False
        if not all(c.isalnum() or c in "-_*" for c in label):
            return False
    return True


def _path(*parts: str) -> str:
    return ".".join(
        f'"{p}"' if ("." in p or not p.replace("_", "").isalnum()) else p for p in parts
    )


@dataclass(slots=True)
class _NodeRecords:
    """The records of one owner name while the world is read; frozen into `NameRecords`."""

    a: list[str] = field(default_factory=list)
    aaaa: list[str] = field(default_factory=list)
    mx: list[MxSpec] = field(default_factory=list)
    txt: list[tuple[str, ...]] = field(default_factory=list)
    cname: str | None = None
    servfail: bool = False
    timeout: bool = False
    ptr: list[str] = field(default_factory=list)


class _Builder:
    """Turns the decoded TOML document into a World, collecting automatic records."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.records: dict[str, _NodeRecords] = {}
        self.explicit_names: set[str] = set()
        self.servers: dict[str, SmtpServer] = {}
        self.policy_hosts: dict[str, PolicyHost] = {}
        self.known_ips: set[str] = set()

    def build(self, document: dict[str, object]) -> World:
        _check_keys(document, {"lab", "dns", "servers", "domains", "zones"}, "top level")
        zones = self._zones(document.get("zones", {}))
        lab = _table(document.get("lab", {}), "lab")
        _check_keys(lab, {"description"}, "lab")
        description = _string(lab.get("description", ""), "lab.description")

        for owner, spec in _table(document.get("dns", {}), "dns").items():
            name = normalise_name(owner)
            self._add_records(name, spec, _path("dns", owner))

        declared: list[SmtpServer] = []
        for index, spec in enumerate(_array(document.get("servers", []), "servers")):
            declared.append(self._server(spec, f"servers[{index}]"))

        domains = [
            self._domain(name, spec)
            for name, spec in _table(document.get("domains", {}), "domains").items()
        ]
        if not domains:
            raise WorldError("no [domains] defined")

        for server in declared:
            self._add_server(server, "servers")
        for domain in domains:
            for server in domain.servers:
                self._add_server(server, _path("domains", domain.name, "servers"))
            if domain.policy is not None:
                self._add_policy(domain.policy, _path("domains", domain.name, "policy"))

        records = {name: self._freeze_records(name, data) for name, data in self.records.items()}
        _check_zones(zones, records, self.servers.values())
        for node in records.values():
            self.known_ips.update(node.a)
            self.known_ips.update(node.aaaa)
        for domain in domains:
            if domain.expect is not None:
                self._check_expected_ips(domain)

        return World(
            domains=tuple(domains),
            records=MappingProxyType(records),
            servers=tuple(self.servers.values()),
            policy_hosts=tuple(self.policy_hosts.values()),
            description=description,
            source=self.source,
            zones=zones,
        )

    # ------------------------------------------------------------ domains

    def _domain(self, raw_name: str, spec: object) -> Domain:
        where = _path("domains", raw_name)
        spec = _table(spec, where)
        _check_keys(spec, {"description", "dns", "servers", "policy", "expect"}, where)
        name = normalise_name(raw_name)
        if not is_valid_dns_name(name):
            name = raw_name.strip()
        description = _string(spec.get("description", ""), f"{where}.description")
        expect = self._expectation(spec["expect"], f"{where}.expect") if "expect" in spec else None
        if not is_valid_dns_name(normalise_name(name)):
            extra = sorted(set(spec) - {"description", "expect"})
            if extra:
                raise WorldError(
                    f"{where}: not a valid DNS name, so it may only carry description and "
                    f"expect (found {', '.join(extra)})"
                )
            return Domain(name=name, description=description, expect=expect)

        for owner, records in _table(spec.get("dns", {}), f"{where}.dns").items():
            self._add_records(_owner_name(owner, name), records, f"{where}.dns.{_path(owner)}")
        servers = tuple(
            self._server(item, f"{where}.servers[{index}]")
            for index, item in enumerate(_array(spec.get("servers", []), f"{where}.servers"))
        )
        policy = self._policy(spec["policy"], name, f"{where}.policy") if "policy" in spec else None
        return Domain(
            name=name, description=description, policy=policy, servers=servers, expect=expect
        )

    def _expectation(self, spec: object, where: str) -> Expectation:
        spec = _table(spec, where)
        _check_keys(
            spec,
            {
                "enforce_ready",
                "policy_error",
                "policy_type",
                "indicators",
                "result_types",
                "starttls",
                "not_testable",
                "error",
                "dane",
            },
            where,
        )
        if "enforce_ready" not in spec:
            raise WorldError(f"{where}: enforce_ready is required")
        ready = spec["enforce_ready"]
        if not isinstance(ready, bool):
            raise WorldError(f"{where}.enforce_ready: expected true or false, got {ready!r}")
        policy_error = None
        if "policy_error" in spec:
            policy_error = _choice(
                spec["policy_error"], POLICY_ERRORS, ResultType, f"{where}.policy_error"
            )
        policy_type = None
        if "policy_type" in spec:
            policy_type = _string(spec["policy_type"], f"{where}.policy_type")
            if policy_type not in POLICY_TYPES:
                raise WorldError(
                    f"{where}.policy_type: {policy_type!r} is not one of {', '.join(POLICY_TYPES)}"
                )
        indicators = tuple(
            _choice(item, tuple(IndicatorCode), IndicatorCode, f"{where}.indicators")
            for item in _array(spec.get("indicators", []), f"{where}.indicators")
        )
        result_types = tuple(
            _choice(item, tuple(ResultType), ResultType, f"{where}.result_types")
            for item in _array(spec.get("result_types", []), f"{where}.result_types")
        )
        starttls: dict[str, StartTlsStatus] = {}
        for ip, status in _table(spec.get("starttls", {}), f"{where}.starttls").items():
            _address(ip, f"{where}.starttls", loopback=False)
            starttls[ip] = _choice(
                status, tuple(StartTlsStatus), StartTlsStatus, f"{where}.starttls.{_path(ip)}"
            )
        not_testable: dict[str, str] = {}
        for ip, reason in _table(spec.get("not_testable", {}), f"{where}.not_testable").items():
            _address(ip, f"{where}.not_testable", loopback=False)
            not_testable[ip] = _string(reason, f"{where}.not_testable.{_path(ip)}")
        error = _string(spec["error"], f"{where}.error") if "error" in spec else None
        dane: dict[str, DaneStatus] = {}
        for ip, status in _table(spec.get("dane", {}), f"{where}.dane").items():
            _address(ip, f"{where}.dane", loopback=False)
            dane[ip] = _choice(status, tuple(DaneStatus), DaneStatus, f"{where}.dane.{_path(ip)}")
        return Expectation(
            enforce_ready=ready,
            policy_error=policy_error,
            policy_type=policy_type,
            indicators=indicators,
            result_types=result_types,
            starttls=MappingProxyType(starttls),
            not_testable=MappingProxyType(not_testable),
            error=error,
            dane=MappingProxyType(dane),
        )

    def _check_expected_ips(self, domain: Domain) -> None:
        assert domain.expect is not None
        where = _path("domains", domain.name, "expect")
        for table, ips in (
            ("starttls", domain.expect.starttls),
            ("not_testable", domain.expect.not_testable),
            ("dane", domain.expect.dane),
        ):
            for ip in ips:
                if ip not in self.known_ips:
                    raise WorldError(
                        f"{where}.{table}: {ip} is not the address of any server or A/AAAA record"
                    )

    # ------------------------------------------------------------ servers and policy hosts

    def _server(self, spec: object, where: str) -> SmtpServer:
        spec = _table(spec, where)
        _check_keys(
            spec,
            {
                "address",
                "hostname",
                "hostnames",
                "behaviour",
                "certificate",
                "greeting",
                "connection_limit",
                "tlsa",
                "tlsa_signature",
            },
            where,
        )
        if "address" not in spec:
            raise WorldError(f"{where}: address is required")
        address = _address(spec["address"], f"{where}.address", loopback=True)
        if ("hostname" in spec) == ("hostnames" in spec):
            raise WorldError(f"{where}: give exactly one of hostname and hostnames")
        raw_hosts = (
            [spec["hostname"]]
            if "hostname" in spec
            else _array(spec["hostnames"], f"{where}.hostnames")
        )
        hostnames = []
        for raw in raw_hosts:
            host = normalise_name(_string(raw, f"{where}.hostname"))
            if not is_valid_dns_name(host) or "*" in host:
                raise WorldError(f"{where}.hostname: {raw!r} is not a valid host name")
            hostnames.append(host)
        if not hostnames:
            raise WorldError(f"{where}.hostnames: at least one host name is required")
        behaviour = _choice(
            spec.get("behaviour", "good"), tuple(SmtpBehaviour), SmtpBehaviour, f"{where}.behaviour"
        )
        certificate = _choice(
            spec.get("certificate", "good"),
            tuple(CertificateKind),
            CertificateKind,
            f"{where}.certificate",
        )
        greeting = (
            _greeting(spec["greeting"], behaviour, f"{where}.greeting")
            if "greeting" in spec
            else None
        )
        limit = spec.get("connection_limit")
        if limit is not None and (
            not isinstance(limit, int) or isinstance(limit, bool) or limit < 1
        ):
            raise WorldError(f"{where}.connection_limit: a positive integer is required")
        tlsa = tuple(
            _tlsa(item, f"{where}.tlsa") for item in _array(spec.get("tlsa", []), f"{where}.tlsa")
        )
        tlsa_signature = _choice(
            spec.get("tlsa_signature", "valid"),
            tuple(TlsaSignature),
            TlsaSignature,
            f"{where}.tlsa_signature",
        )
        return SmtpServer(
            address=address,
            hostnames=tuple(hostnames),
            behaviour=behaviour,
            certificate=certificate,
            greeting=greeting,
            connection_limit=limit,
            tlsa=tlsa,
            tlsa_signature=tlsa_signature,
        )

    def _add_server(self, server: SmtpServer, where: str) -> None:
        existing = self.servers.get(server.address)
        if existing is not None:
            if (existing.behaviour, existing.certificate) != (server.behaviour, server.certificate):
                raise WorldError(
                    f"{where}: address {server.address} is already used by a server with "
                    f"behaviour {existing.behaviour!s} and certificate {existing.certificate!s}; "
                    "servers sharing an address must behave alike"
                )
            if (existing.tlsa, existing.tlsa_signature) != (server.tlsa, server.tlsa_signature):
                raise WorldError(
                    f"{where}: address {server.address} is already used by a server with "
                    "other TLSA records; servers sharing an address publish the same ones"
                )
            if existing.connection_limit != server.connection_limit:
                raise WorldError(
                    f"{where}: address {server.address} is already used by a server with "
                    "another connection_limit; servers sharing an address share one limit"
                )
            if existing.greeting != server.greeting:
                raise WorldError(
                    f"{where}: address {server.address} is already used by a server with "
                    "another greeting; servers sharing an address must greet alike"
                )
            merged = existing.hostnames + tuple(
                h for h in server.hostnames if h not in existing.hostnames
            )
            server = replace(server, hostnames=merged)
        self.servers[server.address] = server
        for host in server.hostnames:
            self._add_automatic_address(host, server.address, where)

    def _policy(self, spec: object, domain: str, where: str) -> PolicyHost:
        spec = _table(spec, where)
        _check_keys(
            spec, {"address", "hostname", "behaviour", "body", "line_endings", "location"}, where
        )
        if "address" not in spec:
            raise WorldError(f"{where}: address is required")
        address = _address(spec["address"], f"{where}.address", loopback=True)
        hostname = normalise_name(
            _string(spec.get("hostname", f"mta-sts.{domain}"), f"{where}.hostname")
        )
        behaviour = _choice(
            spec.get("behaviour", "good"),
            tuple(PolicyBehaviour),
            PolicyBehaviour,
            f"{where}.behaviour",
        )
        if "body" not in spec and behaviour not in (
            PolicyBehaviour.REDIRECT,
            PolicyBehaviour.NOT_FOUND,
        ):
            raise WorldError(f"{where}: body is required for behaviour {behaviour!s}")
        body = _string(spec.get("body", ""), f"{where}.body")
        endings = _string(spec.get("line_endings", "lf"), f"{where}.line_endings")
        if endings == "crlf":
            body = body.replace("\r\n", "\n").replace("\n", "\r\n")
        elif endings != "lf":
            raise WorldError(f"{where}.line_endings: expected 'lf' or 'crlf', got {endings!r}")
        location = _string(
            spec.get("location", f"https://www.{domain}/.well-known/mta-sts.txt"),
            f"{where}.location",
        )
        return PolicyHost(
            hostname=hostname, address=address, behaviour=behaviour, body=body, location=location
        )

    def _add_policy(self, policy: PolicyHost, where: str) -> None:
        if policy.hostname in self.policy_hosts:
            raise WorldError(f"{where}: policy host {policy.hostname} is defined twice")
        self.policy_hosts[policy.hostname] = policy
        if policy.hostname not in self.explicit_names:
            self._add_automatic_address(policy.hostname, policy.address, where)

    # ------------------------------------------------------------ records

    def _add_records(self, name: str, spec: object, where: str) -> None:
        spec = _table(spec, where)
        _check_keys(spec, {"a", "aaaa", "mx", "txt", "cname", "ptr", "servfail", "timeout"}, where)
        if not is_valid_dns_name(name):
            raise WorldError(f"{where}: {name!r} is not a valid owner name")
        if name in self.explicit_names:
            raise WorldError(f"{where}: records for {name} are defined twice")
        self.explicit_names.add(name)
        node = self.records.setdefault(name, _NodeRecords())
        for family, key in ((4, "a"), (6, "aaaa")):
            for item in _array(spec.get(key, []), f"{where}.{key}"):
                ip = _address(item, f"{where}.{key}", loopback=False)
                if ipaddress.ip_address(ip).version != family:
                    raise WorldError(f"{where}.{key}: {ip} is not an IPv{family} address")
                (node.a if family == 4 else node.aaaa).append(ip)
        for item in _array(spec.get("mx", []), f"{where}.mx"):
            node.mx.append(_mx(item, f"{where}.mx"))
        for item in _array(spec.get("txt", []), f"{where}.txt"):
            node.txt.append(_txt(item, f"{where}.txt"))
        node.ptr += [_ptr(item, f"{where}.ptr") for item in _array(spec.get("ptr", []), where)]
        if "cname" in spec:
            target = normalise_name(_string(spec["cname"], f"{where}.cname"))
            if not is_valid_dns_name(target):
                raise WorldError(f"{where}.cname: {target!r} is not a valid name")
            if set(spec) - {"cname", "servfail", "timeout"}:
                raise WorldError(f"{where}: a CNAME cannot sit beside other records")
            node.cname = target
        for flag in ("servfail", "timeout"):
            if flag in spec:
                value = spec[flag]
                if not isinstance(value, bool):
                    raise WorldError(f"{where}.{flag}: expected true or false, got {value!r}")
                setattr(node, flag, value)

    def _add_automatic_address(self, host: str, address: str, where: str) -> None:
        node = self.records.setdefault(host, _NodeRecords())
        if node.cname is not None:
            raise WorldError(f"{where}: host {host} is a CNAME, so it cannot get address {address}")
        addresses = node.a if ipaddress.ip_address(address).version == 4 else node.aaaa
        if address not in addresses:
            addresses.append(address)

    def _zones(self, value: object) -> tuple[ZoneSpec, ...]:
        zones: dict[str, ZoneSpec] = {}
        for raw, spec in _table(value, "zones").items():
            where = _path("zones", raw)
            spec = _table(spec, where)
            _check_keys(spec, {"signed"}, where)
            name = normalise_name(raw)
            if name == "." or not is_valid_dns_name(name) or "*" in name:
                raise WorldError(f"{where}: {raw!r} is not a zone name (the root is implicit)")
            if name in zones:
                raise WorldError(f"{where}: zone {name} is defined twice")
            signed = spec.get("signed", True)
            if not isinstance(signed, bool):
                raise WorldError(f"{where}.signed: expected true or false, got {signed!r}")
            zones[name] = ZoneSpec(name, signed)
        return tuple(zones.values())

    def _freeze_records(self, name: str, data: _NodeRecords) -> NameRecords:
        return NameRecords(
            name=name,
            a=tuple(data.a),
            aaaa=tuple(data.aaaa),
            mx=tuple(data.mx),
            txt=tuple(data.txt),
            cname=data.cname,
            servfail=data.servfail,
            timeout=data.timeout,
            ptr=tuple(data.ptr),
        )


# ---------------------------------------------------------------- value checks


def _check_keys(table: Mapping[str, object], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise WorldError(
            f"{where}: unknown key {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})"
        )


def _table(value: object, where: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise WorldError(f"{where}: expected a table, got {type(value).__name__}")
    return value


def _array(value: object, where: str) -> list[object]:
    if not isinstance(value, list):
        raise WorldError(f"{where}: expected an array, got {type(value).__name__}")
    return value


def _string(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise WorldError(f"{where}: expected a string, got {value!r}")
    return value


def _choice(value: object, allowed: tuple[E, ...], enum: type[E], where: str) -> E:
    text = _string(value, where)
    if text not in {str(item) for item in allowed}:
        raise WorldError(
            f"{where}: unknown value {text!r} (known: {', '.join(str(item) for item in allowed)})"
        )
    return enum(text)


def _ptr(value: object, where: str) -> str:
    target = normalise_name(_string(value, where))
    if not is_valid_dns_name(target):
        raise WorldError(f"{where}: {target!r} is not a valid name")
    return target


def _address(value: object, where: str, *, loopback: bool) -> str:
    text = _string(value, where)
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise WorldError(f"{where}: {text!r} is not an IP address") from None
    if loopback and not ip.is_loopback:
        raise WorldError(
            f"{where}: {text} is not a loopback address (lab servers bind only 127.0.0.0/8 or ::1)"
        )
    return str(ip)


# Behaviours that never send a greeting, so a greeting text would be silently unused.
_NO_GREETING = (SmtpBehaviour.SILENT, SmtpBehaviour.CLOSED)


def _greeting(value: object, behaviour: SmtpBehaviour, where: str) -> tuple[str, ...]:
    """The lines of a custom greeting: any text but CR and LF, verbatim."""
    if behaviour in _NO_GREETING:
        raise WorldError(f"{where}: a server with behaviour {behaviour!s} never greets")
    if not isinstance(value, str | list):
        raise WorldError(f"{where}: expected a string or an array of strings, got {value!r}")
    lines = [value] if isinstance(value, str) else value
    if not lines:
        raise WorldError(f"{where}: a multi-line greeting needs at least one line")
    for line in lines:
        text = _string(line, where)
        if "\r" in text or "\n" in text:
            raise WorldError(
                f"{where}: {text[:40]!r} contains CR or LF; give the lines as an array instead"
            )
    return tuple(lines)


def zone_of(name: str, zones: tuple[ZoneSpec, ...]) -> ZoneSpec | None:
    """The deepest declared zone holding `name`, or None (the root)."""
    best: ZoneSpec | None = None
    for zone in zones:
        inside = name == zone.name or name.endswith("." + zone.name)
        if inside and (best is None or len(zone.name) > len(best.name)):
            best = zone
    return best


def _check_zones(
    zones: tuple[ZoneSpec, ...], records: Mapping[str, NameRecords], servers: Iterable[SmtpServer]
) -> None:
    """With zones, every name lies in one; TLSA records need zones (a signed tree)."""
    if not zones:
        for server in servers:
            if server.tlsa:
                raise WorldError(
                    f"server {server.address}: tlsa needs [zones] (TLSA is served in a DNS tree)"
                )
        return
    for name in records:
        if zone_of(name, zones) is None:
            raise WorldError(f"{name}: the name lies in no zone of [zones]")


_TLSA_FIELD_LIMITS = (255, 255, 255)


def _tlsa(value: object, where: str) -> TlsaSpec:
    """`"USAGE SELECTOR MATCHING-TYPE DATA"`, DATA hex or leaf | issuer | stale."""
    text = _string(value, where)
    parts = text.split()
    if len(parts) != 4 or not all(part.isdigit() for part in parts[:3]):
        raise WorldError(
            f"{where}: {text!r} is not 'USAGE SELECTOR MATCHING-TYPE DATA' (e.g. '3 1 1 leaf')"
        )
    usage, selector, matching = (int(part) for part in parts[:3])
    if any(
        number > limit
        for number, limit in zip((usage, selector, matching), _TLSA_FIELD_LIMITS, strict=True)
    ):
        raise WorldError(f"{where}: {text!r}: each field is one octet (0-255)")
    what = parts[3]
    if what in {str(source) for source in TlsaSource}:
        return TlsaSpec(usage, selector, matching, source=TlsaSource(what))
    try:
        data = bytes.fromhex(what)
    except ValueError:
        raise WorldError(
            f"{where}: {what!r} is neither hex nor one of {', '.join(map(str, TlsaSource))}"
        ) from None
    return TlsaSpec(usage, selector, matching, data=data)


def _mx(value: object, where: str) -> MxSpec:
    text = _string(value, where)
    parts = text.split()
    if len(parts) != 2 or not parts[0].isdigit() or int(parts[0]) > 65535:
        raise WorldError(f"{where}: {text!r} is not 'PREFERENCE HOST' (e.g. '10 mx.example')")
    host = normalise_name(parts[1])
    if host != "." and not is_valid_dns_name(host):
        raise WorldError(f"{where}: {parts[1]!r} is not a valid host name")
    return MxSpec(preference=int(parts[0]), host=host)


def _txt(value: object, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return _split_character_strings(value)
    strings = _array(value, where)
    if not strings:
        raise WorldError(f"{where}: a multi-string record needs at least one string")
    texts = [_string(item, where) for item in strings]
    for text in texts:
        if len(text.encode("utf-8")) > MAX_CHARACTER_STRING:
            raise WorldError(f"{where}: character-string longer than 255 bytes: {text[:20]!r}...")
    return tuple(texts)


def _split_character_strings(text: str) -> tuple[str, ...]:
    """Cut a long TXT value into character-strings of at most 255 octets (RFC 1035 §3.3)."""
    chunks: list[str] = []
    current = ""
    size = 0
    for char in text:
        width = len(char.encode("utf-8"))
        if size + width > MAX_CHARACTER_STRING:
            chunks.append(current)
            current, size = "", 0
        current += char
        size += width
    chunks.append(current)
    return tuple(chunks)


def _owner_name(owner: str, domain: str) -> str:
    if owner == "@":
        return domain
    if owner.endswith("."):
        return normalise_name(owner)
    return f"{owner.lower()}.{domain}"
