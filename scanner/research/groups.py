"""What a domain is grouped by: its MX provider, its TLD, its rank bucket.

The MX provider is the registrable domain of the domain's most preferred MX host:
the public suffix plus one label, under the ICANN section of the Public Suffix List
only (`mx1.example.co.uk` → `example.co.uk`; a private-section suffix such as
`github.io` does not split providers). The list is the snapshot shipped inside the
`publicsuffixlist` package, read from the package's own file; nothing is fetched at
run time, so a result is the same offline and online, and a newer list comes with a
package upgrade. A name under an unknown TLD (the lab's `.example`) takes its last
label as the suffix.
"""

from __future__ import annotations

import functools
from typing import Final

from publicsuffixlist import PublicSuffixList

from scanner.research.lines import ScanLine

NO_MX: Final = "(no MX)"
NULL_MX: Final = "(null MX)"
NO_NAME: Final = "(none)"
# Cumulative buckets: a domain of rank 500 is in the top 1k, 10k, 100k and 1M. The
# views show those the ranks present make different (`shown_buckets`).
RANK_BUCKETS: Final = (
    (10, "top 10"),
    (100, "top 100"),
    (1_000, "top 1k"),
    (10_000, "top 10k"),
    (100_000, "top 100k"),
    (1_000_000, "top 1M"),
)
BEYOND_BUCKETS: Final = "beyond 1M"


@functools.cache
def _suffix_list() -> PublicSuffixList:
    # only_icann: the private section (github.io, blogspot.com ...) is not a provider boundary.
    return PublicSuffixList(only_icann=True)


@functools.lru_cache(maxsize=1 << 16)
def registrable_domain(hostname: str) -> str:
    """The registrable domain of `hostname`, or the name itself when it is a suffix."""
    name = hostname.strip().rstrip(".").lower()
    if not name:
        return NO_NAME
    found = _suffix_list().privatesuffix(name)
    return found if isinstance(found, str) else name


def mx_provider(line: ScanLine) -> str:
    """The registrable domain of the most preferred MX host from DNS (or of the implicit MX)."""
    if line.null_mx:
        return NULL_MX
    hosts = sorted(
        line.dns_hosts,
        key=lambda host: (
            host.preference if host.preference is not None else 1 << 16,
            host.hostname,
        ),
    )
    if hosts:
        return registrable_domain(hosts[0].hostname)
    return registrable_domain(line.domain) if line.implicit_mx else NO_MX


def tld(domain: str) -> str:
    """The last label of the domain (an A-label for an IDN TLD)."""
    label = domain.strip().rstrip(".").rpartition(".")[2].lower()
    return label or NO_NAME


def rank_buckets(rank: int | None) -> tuple[str, ...]:
    """Every cumulative bucket the rank falls in; () for an unranked domain."""
    if rank is None:
        return ()
    inside = tuple(name for limit, name in RANK_BUCKETS if rank <= limit)
    return inside or (BEYOND_BUCKETS,)


def shown_buckets(highest_rank: int) -> tuple[str, ...]:
    """The buckets worth a row for ranks up to `highest_rank`: those below it, and the first
    that holds every rank (a list of 402 ranks: top 10, top 100, top 1k; not four rows of
    the same 402 domains)."""
    shown: list[str] = []
    for limit, name in RANK_BUCKETS:
        shown.append(name)
        if limit >= highest_rank:
            return tuple(shown)
    return (*shown, BEYOND_BUCKETS)
