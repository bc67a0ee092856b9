"""DKIM key records from DNS with dnspython: the production `KeyLookup`.

Blocking lookups (the import is a sequential batch job), one answer per name per
run (`CachedKeyLookup`). dnspython's exceptions become `KeyAnswer` values here,
once, through `_ANSWER_OF`: a name or record that does not exist is a permanent
"no key"; a timeout or a server failure is temporary (`temperror`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

from scanner.received.authenticity import KeyAnswer

DEFAULT_DNS_TIMEOUT = 5.0


def build_resolver(
    nameservers: Sequence[tuple[str, int]] = (), timeout: float = DEFAULT_DNS_TIMEOUT
) -> dns.resolver.Resolver:
    """The system's resolver, or one asking exactly `nameservers` (IP, port)."""
    if nameservers:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [address for address, _ in nameservers]
        resolver.nameserver_ports = {address: port for address, port in nameservers}
    else:
        resolver = dns.resolver.Resolver()
    resolver.lifetime = timeout
    return resolver


# How each dnspython failure reads as a key answer (permanent: no key; temporary: try later).
_ANSWER_OF: dict[type[BaseException], KeyAnswer] = {
    dns.resolver.NXDOMAIN: KeyAnswer(None, temporary=False, detail="no such key record (NXDOMAIN)"),
    dns.resolver.NoAnswer: KeyAnswer(None, temporary=False, detail="no TXT key record"),
    dns.resolver.NoNameservers: KeyAnswer(
        None, temporary=True, detail="no nameserver answered (SERVFAIL)"
    ),
    dns.exception.Timeout: KeyAnswer(None, temporary=True, detail="DNS timeout"),
    dns.resolver.NoResolverConfiguration: KeyAnswer(
        None, temporary=True, detail="no DNS resolver configured"
    ),
    dns.name.EmptyLabel: KeyAnswer(None, temporary=False, detail="invalid key record name"),
    dns.name.LabelTooLong: KeyAnswer(None, temporary=False, detail="invalid key record name"),
    dns.name.NameTooLong: KeyAnswer(None, temporary=False, detail="invalid key record name"),
}


@dataclass(slots=True)
class CachedKeyLookup:
    """A `KeyLookup` over a dnspython resolver, remembering each name's answer for the run."""

    resolver: dns.resolver.Resolver
    answers: dict[str, KeyAnswer] = field(default_factory=dict)

    def __call__(self, name: str) -> KeyAnswer:
        key = name.lower()
        if key not in self.answers:
            self.answers[key] = self._lookup(name)
        return self.answers[key]

    def _lookup(self, name: str) -> KeyAnswer:
        try:
            answer = self.resolver.resolve(name + ".", dns.rdatatype.TXT, search=False)
        except tuple(_ANSWER_OF) as exc:
            for kind, mapped in _ANSWER_OF.items():
                if isinstance(exc, kind):
                    return mapped
            raise  # pragma: no cover (every listed kind maps)
        except dns.exception.DNSException as exc:
            return KeyAnswer(None, temporary=True, detail=f"DNS error: {type(exc).__name__}")
        for record in answer:
            strings = getattr(record, "strings", None)
            if strings:
                return KeyAnswer(b"".join(strings))
        return KeyAnswer(None, detail="no TXT key record")
