"""Words for typed interruptions: the `reason` and `after_tls_error` strings.

The probe records an `Interruption` (kind, phase, detail); these functions are the
one place that turns it into the strings of the JSON line and of the blockers
(docs/output.md#not-testable-reasons), so no code reads a reason back from text.
"""

from __future__ import annotations

from scanner.models import Interruption, InterruptionKind, Phase

# Kinds whose word is the whole reason.
_BARE = frozenset(
    {
        InterruptionKind.CONNECT_REFUSED,
        InterruptionKind.ADDRESS_NOT_ALLOWED,
        InterruptionKind.EXCLUDED,
        InterruptionKind.NOT_PROBED,
    }
)


_REFUSALS = frozenset(
    {InterruptionKind.BUSY, InterruptionKind.REJECTED, InterruptionKind.EHLO_REJECTED}
)


def _phase(interruption: Interruption) -> str:
    return interruption.phase.value if interruption.phase is not None else "session"


def reason_text(interruption: Interruption) -> str:
    """The not-testable `reason` of an address.

    `connect-refused`, `connect-failed: ECONNRESET`, `timeout:greeting`,
    `closed:ehlo`, `protocol-error: <why>`, `busy:421 <text>`, `rejected:554 <text>`,
    `ehlo-rejected:450 <text>`, `scanner-network: no-ipv6-route`, `address-not-allowed`, `excluded`,
    `invalid-mx-name: <why>`, `not-probed`, `over-limit: <cap> ...`. A timeout or close may carry a note in
    parentheses (`timeout:greeting (partial 220- received)`).
    """
    kind = interruption.kind
    detail = interruption.detail
    if kind in _BARE:
        return kind.value
    if kind in (InterruptionKind.TIMEOUT, InterruptionKind.CLOSED):
        note = f" ({detail})" if detail else ""
        return f"{kind.value}:{_phase(interruption)}{note}"
    if kind in _REFUSALS:
        return f"{kind.value}:{detail}".rstrip()
    return f"{kind.value}: {detail}".rstrip(": ") if detail else kind.value


def reason_code(interruption: Interruption) -> str:
    """The code of a not-testable `reason` (docs/output.md#not-testable-reasons).

    The kind, with what tells its cases apart and never free text: the phase of a
    timeout or close (`timeout:greeting`), the reply code of a refusal (`busy:421`),
    the errno name of a connect failure (`connect-failed:EHOSTUNREACH`), what the
    scanning host's network lacks (`scanner-network:no-ipv6-route`).
    """
    kind = interruption.kind
    if kind in (InterruptionKind.TIMEOUT, InterruptionKind.CLOSED):
        return f"{kind.value}:{_phase(interruption)}"
    if interruption.reply_code is not None and kind in _REFUSALS:
        return f"{kind.value}:{interruption.reply_code}"
    if kind is InterruptionKind.CONNECT_FAILED and interruption.errno is not None:
        return f"{kind.value}:{interruption.errno}"
    if kind is InterruptionKind.SCANNER_NETWORK:
        return f"{kind.value}:{interruption.detail}"  # a fixed word: `no-ipv6-route`
    return kind.value


def after_tls_text(interruption: Interruption) -> str:
    """The `after_tls_error` of a session whose handshake completed.

    `timeout:ehlo-after-tls`, `closed:quit`, `protocol-error:ehlo-after-tls: <why>`,
    `ehlo-after-tls rejected: 554 <text>`: the phase is always named.
    """
    kind = interruption.kind
    phase = _phase(interruption)
    if kind is InterruptionKind.PROTOCOL_ERROR:
        return f"{kind.value}:{phase}: {interruption.detail}".rstrip(": ")
    if kind is InterruptionKind.REJECTED:
        return f"{phase} rejected: {interruption.detail}".rstrip(": ")
    return reason_text(interruption)


def blocks_delivery(interruption: Interruption) -> bool:
    """Post-TLS trouble that leaves no way to send mail: anything before QUIT."""
    return interruption.phase is not Phase.QUIT
