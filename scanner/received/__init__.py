"""Received TLS-RPT reports (RFC 8460): import, store, summarise, judge readiness.

Operators running MTA-STS in `testing` mode receive daily aggregate reports
from the senders that deliver to them. This package reads those reports from
files, folders, mailboxes and IMAP, checks them (RFC 8460 §4) and their senders
(DKIM), keeps them in one SQLite file, and says what they add up to.

Pure modules (no sockets, trio, files or databases): `limits`, `report`,
`mail`, `authenticity`, `items`, `records`, `summary`, `evidence`, `output`.
I/O: `mailboxes` (files and folders), `imap`, `key_lookup` (DNS), `store`
(SQLite), `importer` (the loop), `render` (rich views) and `cli` (the commands).
See docs/received-reports.md.

For readiness checks:

    reports = load_domain_reports(Path("results/tlsrpt.sqlite"), "example.com")
    evidence = received_evidence(reports, "example.com", datetime.now(UTC), rua=record.rua)
    evidence.blockers, evidence.warnings
"""

from scanner.received.evidence import OrganizationEvidence, ReceivedEvidence, received_evidence
from scanner.received.records import ReceivedReports, StoredReport
from scanner.received.store import DEFAULT_DATABASE, DatabaseError, load_domain_reports

__all__ = [
    "DEFAULT_DATABASE",
    "DatabaseError",
    "OrganizationEvidence",
    "ReceivedEvidence",
    "ReceivedReports",
    "StoredReport",
    "load_domain_reports",
    "received_evidence",
]
