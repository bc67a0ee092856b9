"""`certificate_outline`: the tbsCertificate's fields exactly as the certificate encodes them."""

from __future__ import annotations

import pytest
from test_dane_match import INTERMEDIATE, LEAF, ROOT, Issued

from scanner.core.der import DerError, certificate_outline


@pytest.mark.parametrize("issued", [LEAF, INTERMEDIATE, ROOT], ids=["leaf", "intermediate", "root"])
def test_outline_fields_are_the_certificate_s_own_encodings(issued: Issued) -> None:
    outline = certificate_outline(issued.der)
    certificate = issued.certificate
    assert outline.issuer == certificate.issuer.public_bytes()
    assert outline.subject == certificate.subject.public_bytes()
    assert outline.spki == issued.spki


def test_a_self_issued_certificate_names_itself_twice() -> None:
    outline = certificate_outline(ROOT.der)
    assert outline.issuer == outline.subject
    assert certificate_outline(LEAF.der).issuer != certificate_outline(LEAF.der).subject


@pytest.mark.parametrize(
    "data",
    [b"", b"\x30", b"\x02\x01\x00", LEAF.der[:40], LEAF.der[:-300], b"\x30\x80" + LEAF.der[2:]],
    ids=["empty", "tag-only", "no-sequence", "cut-in-tbs", "cut-short", "indefinite"],
)
def test_bytes_that_are_no_certificate_are_refused(data: bytes) -> None:
    with pytest.raises(DerError):
        certificate_outline(data)
