"""The report database: one SQLite file, versioned schema, one transaction per report.

Theory of operation: `ReportStore.open` migrates the file to `SCHEMA_VERSION`
(each step in its own transaction, recorded in `schema_version`), refusing a
file written by a newer scanner or one that is not ours. `add` writes a report,
its policies, failure details and destinations inside one `BEGIN IMMEDIATE`
transaction: a crash, a kill or Ctrl-C in the middle leaves the database as it
was before the report (SQLite's rollback journal), never half a report.

Identity: (voucher, report-id), where the voucher is who vouches for the copy
(`records.voucher_of`: the verified DKIM signer, else our HTTPS receiver's
source, else the email's claimed submitter, else a file), never the
sender-controlled `organization-name`. So a copy from another voucher is
another report: it never replaces a stored one, and a forger who sends first
under a predictable report-id only stores a report of its own.

A copy whose content hash (of the validated form) is already stored is a
duplicate (under another voucher only while its own voucher holds no report of
that report-id; a conflicting copy only under its own voucher): its destinations
are added, and the stored copy keeps the better authenticity
(`authenticity_rank`, then the voucher's text) and a submitter, whatever the
order of import. A copy with new content under the same
voucher and report-id is a conflict: the copy with more failed sessions (then
the higher failure rate, then the smaller hash) is the stored report, the other
is kept in `conflicts` and counted.

The stored JSON is the report as validated (`ParsedReport.canonical_json`: its
RFC 8460 fields, never a sender's unknown keys); reading back parses it again,
so what the summaries see is exactly what the parser accepted. A row that no
longer parses (the file was changed by something else) is skipped and named
(`StoredReports.unreadable`), never the end of every view. Times are stored as
`YYYY-MM-DDTHH:MM:SS.ffffffZ` with four-digit years, so that text order is time
order (retention compares them as text). The tables `policies` and
`failure_details` are there for selection and for anyone's SQL.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from types import TracebackType
from typing import Final

from scanner.received.authenticity import (
    Authenticity,
    AuthMethod,
    AuthStatus,
    authenticity_rank,
)
from scanner.received.intake import source_key
from scanner.received.limits import STORED_LIMITS
from scanner.received.records import (
    AddOutcome,
    AddResult,
    Provenance,
    ReceivedReports,
    StoredReport,
    StoredReports,
    UnreadableReport,
    voucher_label,
    voucher_of,
)
from scanner.received.report import (
    ParsedReport,
    TlsReport,
    content_hash,
    normalise_domain,
    parse_report_json,
)

DEFAULT_DATABASE: Final = Path("results/tlsrpt.sqlite")
BUSY_TIMEOUT_SECONDS: Final = 30.0

_REPORTS_TABLE: Final = """CREATE TABLE {name} (
    id INTEGER PRIMARY KEY,
    voucher TEXT NOT NULL,
    organization_name TEXT NOT NULL,
    report_id TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    start_datetime TEXT NOT NULL,
    end_datetime TEXT NOT NULL,
    start_day TEXT NOT NULL,
    contact_info TEXT,
    report_json TEXT NOT NULL,
    notes_json TEXT NOT NULL,
    auth_status TEXT NOT NULL CHECK (auth_status IN
        ('pass', 'fail', 'none', 'temperror', 'key-unavailable')),
    auth_method TEXT NOT NULL,
    auth_detail TEXT NOT NULL,
    auth_signer TEXT,
    submitter TEXT,
    origin TEXT NOT NULL,
    message_id TEXT,
    imported_at TEXT NOT NULL,
    UNIQUE (voucher, report_id)
)"""
_POLICIES_TABLE: Final = """CREATE TABLE {name} (
    id INTEGER PRIMARY KEY,
    report_ref INTEGER NOT NULL REFERENCES reports (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    policy_type TEXT NOT NULL,
    policy_domain TEXT,
    successful_sessions INTEGER NOT NULL,
    failed_sessions INTEGER NOT NULL,
    UNIQUE (report_ref, position)
)"""


def _old_voucher(status: str, method: str, signer: object, submitter: object, origin: str) -> str:
    """The voucher of a row stored before vouchers (schema 2)."""
    source = None
    if method == AuthMethod.HTTPS_RECEIVER.value:
        # "https POST from ADDRESS[ via PEER]"
        address = origin.removeprefix("https POST from ").partition(" via ")[0].strip()
        source = source_key(address) if address else None
    authenticity = Authenticity(
        AuthStatus(status),
        AuthMethod(method),
        "",
        str(signer) if signer is not None else None,
    )
    return voucher_of(authenticity, str(submitter) if submitter is not None else None, source)


def _failures_of(report_json: str) -> tuple[int, float, str]:
    """How a stored copy ranks among conflicting copies: failed sessions, failure rate."""
    parsed = parse_report_json(report_json.encode("utf-8", "replace"), STORED_LIMITS)
    if not isinstance(parsed, ParsedReport):
        return (-1, 0.0, "")
    return _failure_rank(parsed.report, parsed.content_hash)


def _failure_rank(report: TlsReport, hash_text: str) -> tuple[int, float, str]:
    """Conflicting copies count as the one with more failed sessions, then the higher
    failure rate; then the smaller hash, so that the order of arrival does not matter
    (the hash is inverted: greater ranks first)."""
    failed = sum(entry.failed_sessions for entry in report.policies)
    total = sum(entry.sessions for entry in report.policies)
    inverted = "".join(format(15 - int(char, 16), "x") for char in hash_text)
    return (failed, failed / total if total else 0.0, inverted)


def migrate_to_vouchers(connection: sqlite3.Connection) -> None:
    """Schema 2 to 3: rebuild `reports` keyed by (voucher, report-id), with 'key-unavailable'
    allowed, `policies` with a nullable policy_domain, and every content_hash (of reports
    and conflicts) recomputed over the validated form. Rows of schema 2 that now share a
    key (two organizations' same report-id under one voucher) become conflicts of the one
    that ranks first (`_failure_rank`)."""
    connection.execute(_REPORTS_TABLE.format(name="reports_v3"))
    connection.execute(_POLICIES_TABLE.format(name="policies_v3"))
    kept: dict[tuple[str, str], tuple[int, tuple[int, float, str]]] = {}
    rows = connection.execute(
        "SELECT id, organization_name, report_id, start_datetime, end_datetime, start_day, "
        "contact_info, report_json, notes_json, auth_status, auth_method, auth_detail, "
        "auth_signer, submitter, origin, message_id, imported_at FROM reports ORDER BY id"
    ).fetchall()
    for row in rows:
        ref, report_id, report_json = row[0], str(row[2]), str(row[7])
        status, method, signer, submitter, origin = row[9], row[10], row[12], row[13], row[14]
        voucher = _old_voucher(str(status), str(method), signer, submitter, str(origin))
        new_hash = content_hash(report_json)
        rank = _failures_of(report_json)
        key = (voucher, report_id)
        if key in kept:
            holder, holder_rank = kept[key]
            loser = ref
            if rank > holder_rank:  # this row is the stored report; the other a conflict
                connection.execute("DELETE FROM reports_v3 WHERE id = ?", (holder,))
                _copy_report(connection, row, voucher, new_hash)
                holder, loser = ref, holder
                kept[key] = (ref, rank)
            _absorb(connection, holder, loser)
            continue
        _copy_report(connection, row, voucher, new_hash)
        kept[key] = (ref, rank)
    kept_refs = {ref for ref, _ in kept.values()}
    connection.execute(
        "INSERT INTO policies_v3 (id, report_ref, position, policy_type, policy_domain, "
        "successful_sessions, failed_sessions) SELECT id, report_ref, position, policy_type, "
        "NULLIF(policy_domain, ''), successful_sessions, failed_sessions FROM policies"
    )
    dropped = [
        ref for (ref,) in connection.execute("SELECT id FROM reports") if ref not in kept_refs
    ]
    for ref in dropped:
        connection.execute("DELETE FROM destinations WHERE report_ref = ?", (ref,))
        connection.execute(
            "DELETE FROM failure_details WHERE policy_ref IN "
            "(SELECT id FROM policies_v3 WHERE report_ref = ?)",
            (ref,),
        )
        connection.execute("DELETE FROM policies_v3 WHERE report_ref = ?", (ref,))
    for conflict_ref, conflict_json in connection.execute(
        "SELECT id, report_json FROM conflicts"
    ).fetchall():
        connection.execute(
            "UPDATE OR IGNORE conflicts SET content_hash = ? WHERE id = ?",
            (content_hash(str(conflict_json)), conflict_ref),
        )
    # Copies that differed only in what is not read are one report now.
    connection.execute(
        "DELETE FROM conflicts WHERE content_hash = "
        "(SELECT content_hash FROM reports_v3 WHERE reports_v3.id = conflicts.report_ref)"
    )
    connection.execute("DROP TABLE policies")
    connection.execute("DROP TABLE reports")
    connection.execute("ALTER TABLE reports_v3 RENAME TO reports")
    connection.execute("ALTER TABLE policies_v3 RENAME TO policies")
    connection.execute("CREATE INDEX policies_by_domain ON policies (policy_domain)")
    connection.execute("CREATE INDEX reports_by_report_id ON reports (report_id)")


def _absorb(connection: sqlite3.Connection, holder: int, loser: int) -> None:
    """The row `loser` (schema 2) becomes a conflicting copy of `holder`, with its
    conflicts and destinations."""
    old = connection.execute(
        "SELECT report_json, auth_status, origin, imported_at FROM reports WHERE id = ?",
        (loser,),
    ).fetchone()
    connection.execute(
        "INSERT OR IGNORE INTO conflicts (report_ref, content_hash, report_json, "
        "auth_status, origin, seen_at) VALUES (?, ?, ?, ?, ?, ?)",
        (holder, content_hash(str(old[0])), old[0], old[1], old[2], old[3]),
    )
    connection.execute(
        "UPDATE OR IGNORE conflicts SET report_ref = ? WHERE report_ref = ?", (holder, loser)
    )
    connection.execute("DELETE FROM conflicts WHERE report_ref = ?", (loser,))
    connection.execute(
        "INSERT OR IGNORE INTO destinations (report_ref, uri) "
        "SELECT ?, uri FROM destinations WHERE report_ref = ?",
        (holder, loser),
    )


def _copy_report(
    connection: sqlite3.Connection, row: Sequence[object], voucher: str, new_hash: str
) -> None:
    connection.execute(
        "INSERT INTO reports_v3 (id, voucher, organization_name, report_id, content_hash, "
        "start_datetime, end_datetime, start_day, contact_info, report_json, notes_json, "
        "auth_status, auth_method, auth_detail, auth_signer, submitter, origin, message_id, "
        "imported_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (row[0], voucher, row[1], row[2], new_hash, *row[3:]),
    )


_VOUCHER_MIGRATION: Final = migrate_to_vouchers

# A step is SQL statements, or a function of the connection for what SQL alone cannot do.
MigrationStep = str | Callable[[sqlite3.Connection], None]
# Each entry takes the schema from version N-1 to N; never edit a released one, append.
MIGRATIONS: Final[tuple[tuple[MigrationStep, ...], ...]] = (
    (
        """CREATE TABLE reports (
            id INTEGER PRIMARY KEY,
            organization_name TEXT NOT NULL,
            report_id TEXT NOT NULL,
            content_hash TEXT NOT NULL,
            start_datetime TEXT NOT NULL,
            end_datetime TEXT NOT NULL,
            start_day TEXT NOT NULL,
            contact_info TEXT,
            report_json TEXT NOT NULL,
            notes_json TEXT NOT NULL,
            auth_status TEXT NOT NULL CHECK (auth_status IN ('pass', 'fail', 'none', 'temperror')),
            auth_method TEXT NOT NULL,
            auth_detail TEXT NOT NULL,
            auth_signer TEXT,
            submitter TEXT,
            origin TEXT NOT NULL,
            message_id TEXT,
            imported_at TEXT NOT NULL,
            UNIQUE (organization_name, report_id)
        )""",
        """CREATE TABLE policies (
            id INTEGER PRIMARY KEY,
            report_ref INTEGER NOT NULL REFERENCES reports (id) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            policy_type TEXT NOT NULL,
            policy_domain TEXT NOT NULL,
            successful_sessions INTEGER NOT NULL,
            failed_sessions INTEGER NOT NULL,
            UNIQUE (report_ref, position)
        )""",
        "CREATE INDEX policies_by_domain ON policies (policy_domain)",
        """CREATE TABLE failure_details (
            id INTEGER PRIMARY KEY,
            policy_ref INTEGER NOT NULL REFERENCES policies (id) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            result_type TEXT NOT NULL,
            sending_mta_ip TEXT,
            receiving_mx_hostname TEXT,
            receiving_ip TEXT,
            failure_reason_code TEXT,
            failed_session_count INTEGER NOT NULL,
            UNIQUE (policy_ref, position)
        )""",
        """CREATE TABLE destinations (
            report_ref INTEGER NOT NULL REFERENCES reports (id) ON DELETE CASCADE,
            uri TEXT NOT NULL,
            PRIMARY KEY (report_ref, uri)
        )""",
        """CREATE TABLE conflicts (
            id INTEGER PRIMARY KEY,
            report_ref INTEGER NOT NULL REFERENCES reports (id) ON DELETE CASCADE,
            content_hash TEXT NOT NULL,
            report_json TEXT NOT NULL,
            auth_status TEXT NOT NULL,
            origin TEXT NOT NULL,
            seen_at TEXT NOT NULL,
            UNIQUE (report_ref, content_hash)
        )""",
    ),
    # Times written with a year below 1000 had fewer than four digits and sorted wrong.
    tuple(
        f"UPDATE reports SET {column} = printf('%04d', CAST(substr({column}, 1, "
        f"instr({column}, '-') - 1) AS INTEGER)) || substr({column}, instr({column}, '-')) "
        f"WHERE instr({column}, '-') BETWEEN 2 AND 4"
        for column in ("start_datetime", "end_datetime")
    ),
    # Reports keyed by (voucher, report-id); 'key-unavailable'; policies without a domain;
    # content_hash of the validated form (`migrate_to_vouchers`).
    (_VOUCHER_MIGRATION,),
)
SCHEMA_VERSION: Final = len(MIGRATIONS)


class DatabaseError(Exception):
    """A database this scanner cannot use; the message says why and what to do."""


def _timestamp(moment: datetime) -> str:
    """Four-digit years whatever the platform's `strftime("%Y")` does below 1000."""
    moment = moment.astimezone(UTC)
    return f"{moment.year:04d}-" + moment.strftime("%m-%dT%H:%M:%S.%fZ")


def _read_timestamp(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def _schema_version(connection: sqlite3.Connection) -> int:
    tables = {
        row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    }
    if "schema_version" not in tables:
        if tables:
            raise DatabaseError(
                "it is an SQLite database of something else (no schema_version table); "
                "give another --db"
            )
        return 0
    row = connection.execute("SELECT version FROM schema_version").fetchone()
    if row is None or not isinstance(row[0], int):
        raise DatabaseError("its schema_version table holds no version")
    return int(row[0])


def migrate(
    connection: sqlite3.Connection, migrations: Sequence[Sequence[MigrationStep]] = MIGRATIONS
) -> int:
    """Bring the schema to `len(migrations)`, one transaction per step; the version reached.

    Foreign keys are off while it runs (a table rebuilt must not cascade), as before.
    """
    enforced = connection.execute("PRAGMA foreign_keys").fetchone()[0]
    connection.execute("PRAGMA foreign_keys = OFF")
    try:
        return _migrate(connection, migrations)
    finally:
        connection.execute(f"PRAGMA foreign_keys = {'ON' if enforced else 'OFF'}")


def _migrate(connection: sqlite3.Connection, migrations: Sequence[Sequence[MigrationStep]]) -> int:
    target = len(migrations)
    while True:
        connection.execute("BEGIN IMMEDIATE")
        try:
            current = _schema_version(connection)
            if current > target:
                raise DatabaseError(
                    f"it has schema version {current}; this scanner knows versions up to "
                    f"{target}: use a newer scanner"
                )
            if current == target:
                connection.execute("COMMIT")
                return current
            if current == 0:
                connection.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
                connection.execute("INSERT INTO schema_version (version) VALUES (0)")
            for statement in migrations[current]:
                if callable(statement):
                    statement(connection)
                else:
                    connection.execute(statement)
            connection.execute("UPDATE schema_version SET version = ?", (current + 1,))
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise


_AUTH_COLUMNS = "auth_status, auth_method, auth_detail, auth_signer"


class ReportStore:
    """The open database. Use as a context manager, or call `close`."""

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._connection = connection
        self.path = path

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        create: bool = True,
        migrations: Sequence[Sequence[MigrationStep]] = MIGRATIONS,
    ) -> ReportStore:
        """Open (creating it and its folder when `create`) and migrate; DatabaseError if unusable."""
        if not create and not path.is_file():
            raise DatabaseError(
                f"no database at {path}; import reports first (scanner tlsrpt import)"
            )
        try:
            if create:
                path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise DatabaseError(f"cannot open {path}: {exc}") from None
        try:
            connection.execute("PRAGMA foreign_keys = ON")
            migrate(connection, migrations)
        except DatabaseError as exc:
            connection.close()
            raise DatabaseError(f"cannot use {path}: {exc}") from None
        except sqlite3.Error as exc:
            connection.close()
            raise DatabaseError(f"cannot use {path}: {exc}") from None
        return cls(connection, path)

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> ReportStore:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------ writing

    def add(self, parsed: ParsedReport, provenance: Provenance, now: datetime) -> AddOutcome:
        """Store one report in one transaction (see the module doc for duplicates and conflicts)."""
        connection = self._connection
        connection.execute("BEGIN IMMEDIATE")
        try:
            outcome = self._add(parsed, provenance, now)
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        return outcome

    def _add(self, parsed: ParsedReport, provenance: Provenance, now: datetime) -> AddOutcome:
        report = parsed.report
        voucher = provenance.voucher
        rows: list[_KeyRow] = [
            _KeyRow(*row)
            for row in self._connection.execute(
                "SELECT id, voucher, content_hash, auth_status, auth_method, auth_signer, "
                "submitter FROM reports WHERE report_id = ? ORDER BY id",
                (report.report_id,),
            )
        ]
        mine = [row for row in rows if row.voucher == voucher]
        same = [row for row in rows if row.content_hash == parsed.content_hash]
        if same and (not mine or mine[0] in same):
            # (with a report of its own voucher holding other content, the newcomer is
            # weighed against that one below: another voucher's row never swallows it)
            return self._duplicate(same[0] if not mine else mine[0], rows, parsed, provenance)
        for row in mine:
            known = self._connection.execute(
                "SELECT 1 FROM conflicts WHERE report_ref = ? AND content_hash = ?",
                (row.ref, parsed.content_hash),
            ).fetchone()
            if known is not None:
                self._insert_destinations(row.ref, provenance.destinations)
                return AddOutcome(AddResult.DUPLICATE, "already stored as a conflicting copy")
        if not mine:
            report_ref = self._insert_report(parsed, provenance, now)
            self._insert_destinations(report_ref, provenance.destinations)
            others = sorted({voucher_label(row.voucher) for row in rows})
            if others:
                return AddOutcome(
                    AddResult.IMPORTED,
                    f"another copy of report-id {report.report_id} is stored, vouched for by "
                    f"{', '.join(others)}: each is kept under its own voucher",
                )
            return AddOutcome(AddResult.IMPORTED)
        return self._conflict(mine[0], parsed, provenance, now)

    def _duplicate(
        self, row: _KeyRow, rows: list[_KeyRow], parsed: ParsedReport, provenance: Provenance
    ) -> AddOutcome:
        """The same content again: the stored copy keeps the better authenticity and a
        submitter, whatever the order of import."""
        self._insert_destinations(row.ref, provenance.destinations)
        stored = Authenticity(AuthStatus(row.status), AuthMethod(row.method), "", row.signer)
        newcomer = provenance.authenticity
        better = (authenticity_rank(newcomer), provenance.voucher) > (
            authenticity_rank(stored),
            row.voucher,
        )
        taken = any(other.voucher == provenance.voucher for other in rows if other is not row)
        if better and not taken:
            submitter = provenance.submitter or row.submitter
            self._set_provenance(row.ref, provenance, submitter)
            return AddOutcome(
                AddResult.DUPLICATE,
                f"already stored; now vouched for by {voucher_label(provenance.voucher)} "
                f"({newcomer.status.value})",
            )
        if row.submitter is None and provenance.submitter is not None:
            self._connection.execute(
                "UPDATE reports SET submitter = ? WHERE id = ?", (provenance.submitter, row.ref)
            )
        return AddOutcome(AddResult.DUPLICATE, "already stored")

    def _conflict(
        self, row: _KeyRow, parsed: ParsedReport, provenance: Provenance, now: datetime
    ) -> AddOutcome:
        """New content under a stored (voucher, report-id): the copy with more failures is
        the stored report (`_failure_rank`), the other a conflicting copy."""
        self._insert_destinations(row.ref, provenance.destinations)
        old_json, old_status, old_origin = self._connection.execute(
            "SELECT report_json, auth_status, origin FROM reports WHERE id = ?", (row.ref,)
        ).fetchone()
        stored_rank = _failures_of(str(old_json))
        new_rank = _failure_rank(parsed.report, parsed.content_hash)
        if new_rank > stored_rank:
            self._insert_conflict(
                row.ref, row.content_hash, str(old_json), str(old_status), str(old_origin), now
            )
            self._replace_report(row.ref, parsed, provenance, now)
            return AddOutcome(
                AddResult.CONFLICT,
                "same voucher and report-id, different content: this copy has more failures "
                "and is counted; the other is kept as a conflicting copy",
            )
        self._insert_conflict(
            row.ref,
            parsed.content_hash,
            parsed.canonical_json,
            provenance.authenticity.status.value,
            provenance.origin,
            now,
        )
        return AddOutcome(
            AddResult.CONFLICT,
            "same voucher and report-id, different content: the stored copy has more failures "
            "and is counted; this one is kept as a conflicting copy",
        )

    def _insert_conflict(
        self,
        report_ref: int,
        content_hash: str,
        report_json: str,
        status: str,
        origin: str,
        now: datetime,
    ) -> None:
        self._connection.execute(
            "INSERT INTO conflicts (report_ref, content_hash, report_json, auth_status, origin, seen_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (report_ref, content_hash, report_json, status, origin, _timestamp(now)),
        )

    def _report_columns(
        self, parsed: ParsedReport, provenance: Provenance, now: datetime
    ) -> tuple[object, ...]:
        report = parsed.report
        auth = provenance.authenticity
        return (
            provenance.voucher,
            report.organization_name,
            report.report_id,
            parsed.content_hash,
            _timestamp(report.date_range.start),
            _timestamp(report.date_range.end),
            report.date_range.day.isoformat(),
            report.contact_info,
            parsed.canonical_json,
            json.dumps(list(parsed.notes), ensure_ascii=True),
            auth.status.value,
            auth.method.value,
            auth.detail,
            auth.signer,
            provenance.submitter,
            provenance.origin,
            provenance.message_id,
            _timestamp(now),
        )

    def _insert_report(self, parsed: ParsedReport, provenance: Provenance, now: datetime) -> int:
        cursor = self._connection.execute(
            "INSERT INTO reports (voucher, organization_name, report_id, content_hash, "
            "start_datetime, end_datetime, start_day, contact_info, report_json, notes_json, "
            "auth_status, auth_method, auth_detail, auth_signer, submitter, origin, message_id, "
            "imported_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            self._report_columns(parsed, provenance, now),
        )
        report_ref = cursor.lastrowid
        assert report_ref is not None
        self._insert_policies(report_ref, parsed.report)
        return report_ref

    def _replace_report(
        self, report_ref: int, parsed: ParsedReport, provenance: Provenance, now: datetime
    ) -> None:
        self._connection.execute("DELETE FROM policies WHERE report_ref = ?", (report_ref,))
        self._connection.execute(
            "UPDATE reports SET voucher = ?, organization_name = ?, report_id = ?, content_hash = ?, "
            "start_datetime = ?, end_datetime = ?, start_day = ?, contact_info = ?, "
            "report_json = ?, notes_json = ?, auth_status = ?, auth_method = ?, auth_detail = ?, "
            "auth_signer = ?, submitter = ?, origin = ?, message_id = ?, imported_at = ? "
            "WHERE id = ?",
            (*self._report_columns(parsed, provenance, now), report_ref),
        )
        self._insert_policies(report_ref, parsed.report)

    def _set_provenance(
        self, report_ref: int, provenance: Provenance, submitter: str | None
    ) -> None:
        auth = provenance.authenticity
        self._connection.execute(
            "UPDATE reports SET voucher = ?, auth_status = ?, auth_method = ?, auth_detail = ?, "
            "auth_signer = ?, submitter = ?, origin = ?, message_id = ? WHERE id = ?",
            (
                provenance.voucher,
                auth.status.value,
                auth.method.value,
                auth.detail,
                auth.signer,
                submitter,
                provenance.origin,
                provenance.message_id,
                report_ref,
            ),
        )

    def _insert_policies(self, report_ref: int, report: TlsReport) -> None:
        for position, entry in enumerate(report.policies):
            cursor = self._connection.execute(
                "INSERT INTO policies (report_ref, position, policy_type, policy_domain, "
                "successful_sessions, failed_sessions) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    report_ref,
                    position,
                    entry.policy.policy_type,
                    entry.policy.policy_domain or None,  # UNKNOWN_POLICY_DOMAIN is NULL
                    entry.successful_sessions,
                    entry.failed_sessions,
                ),
            )
            policy_ref = cursor.lastrowid
            self._connection.executemany(
                "INSERT INTO failure_details (policy_ref, position, result_type, sending_mta_ip, "
                "receiving_mx_hostname, receiving_ip, failure_reason_code, failed_session_count) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        policy_ref,
                        index,
                        detail.result_type,
                        detail.sending_mta_ip,
                        detail.receiving_mx_hostname,
                        detail.receiving_ip,
                        detail.failure_reason_code,
                        detail.failed_session_count,
                    )
                    for index, detail in enumerate(entry.failure_details)
                ],
            )

    def _insert_destinations(self, report_ref: int, destinations: Iterable[str]) -> None:
        self._connection.executemany(
            "INSERT OR IGNORE INTO destinations (report_ref, uri) VALUES (?, ?)",
            [(report_ref, uri) for uri in sorted(destinations)],
        )

    def delete_ended_before(self, cutoff: datetime) -> int:
        """Delete the reports whose date-range ended before `cutoff` (retention); how many.

        One transaction; their policies, details, destinations and conflicts go with them.
        """
        connection = self._connection
        connection.execute("BEGIN IMMEDIATE")
        try:
            cursor = connection.execute(
                "DELETE FROM reports WHERE end_datetime < ?", (_timestamp(cutoff),)
            )
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        return cursor.rowcount

    # ------------------------------------------------------------ reading

    def reports(
        self,
        *,
        domain: str | None = None,
        since: date | None = None,
        until: date | None = None,
    ) -> tuple[StoredReport, ...]:
        """The reports of `read` that read back (the rows that do not are skipped)."""
        return self.read(domain=domain, since=since, until=until).reports

    def read(
        self,
        *,
        domain: str | None = None,
        since: date | None = None,
        until: date | None = None,
    ) -> StoredReports:
        """Stored reports, oldest first; `domain` keeps those with a policy for it, and
        `since`/`until` those whose UTC start day lies within (both inclusive). A row
        that does not read back is skipped and listed in `unreadable`."""
        clauses: list[str] = []
        parameters: list[object] = []
        if domain is not None:
            clauses.append("id IN (SELECT report_ref FROM policies WHERE policy_domain = ?)")
            parameters.append(normalise_domain(domain))
        if since is not None:
            clauses.append("start_day >= ?")
            parameters.append(since.isoformat())
        if until is not None:
            clauses.append("start_day <= ?")
            parameters.append(until.isoformat())
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._connection.execute(
            "SELECT id, report_json, content_hash, notes_json, auth_status, auth_method, "
            "auth_detail, auth_signer, submitter, origin, imported_at, "
            "(SELECT COUNT(*) FROM conflicts WHERE report_ref = reports.id), voucher, "
            "organization_name, report_id "
            f"FROM reports {where} ORDER BY start_datetime, id",
            parameters,
        ).fetchall()
        destinations: dict[int, set[str]] = {}
        for report_ref, uri in self._connection.execute("SELECT report_ref, uri FROM destinations"):
            destinations.setdefault(report_ref, set()).add(uri)
        copies: dict[int, list[TlsReport]] = {}
        for report_ref, copy_json in self._connection.execute(
            f"SELECT report_ref, report_json FROM conflicts WHERE report_ref IN "
            f"(SELECT id FROM reports {where}) ORDER BY id",
            parameters,
        ):
            copy = parse_report_json(str(copy_json).encode("utf-8", "replace"), STORED_LIMITS)
            if isinstance(copy, ParsedReport):
                copies.setdefault(int(report_ref), []).append(copy.report)
        reports: list[StoredReport] = []
        unreadable: list[UnreadableReport] = []
        for row in rows:
            try:
                stored = self._stored(row[:13], frozenset(destinations.get(row[0], ())))
                reports.append(
                    dataclasses.replace(stored, conflict_copies=tuple(copies.get(row[0], ())))
                )
            except _ROW_ERRORS as exc:
                unreadable.append(
                    UnreadableReport(
                        int(row[0]), str(row[13]), str(row[14]), _row_reason(exc), str(row[12])
                    )
                )
        return StoredReports(tuple(reports), tuple(unreadable))

    def _stored(self, row: tuple[object, ...], destinations: frozenset[str]) -> StoredReport:
        (
            _ref,
            report_json,
            content_hash,
            notes_json,
            status,
            method,
            detail,
            signer,
            submitter,
            origin,
            imported_at,
            conflicts,
            voucher,
        ) = row
        parsed = parse_report_json(str(report_json).encode("utf-8", "replace"), STORED_LIMITS)
        if not isinstance(parsed, ParsedReport):
            raise _RowUnreadable(f"its JSON no longer parses ({parsed.summary})")
        return StoredReport(
            report=parsed.report,
            content_hash=str(content_hash),
            authenticity=Authenticity(
                AuthStatus(str(status)),
                AuthMethod(str(method)),
                str(detail),
                str(signer) if signer is not None else None,
            ),
            submitter=str(submitter) if submitter is not None else None,
            origin=str(origin),
            imported_at=_read_timestamp(str(imported_at)),
            destinations=destinations,
            notes=tuple(str(note) for note in json.loads(str(notes_json))),
            conflicting_copies=int(str(conflicts)),
            voucher=str(voucher),
        )

    def destinations(self) -> frozenset[str]:
        """Every rua destination (`mailto:` or `https:`) a stored report was delivered to."""
        return frozenset(
            str(row[0]) for row in self._connection.execute("SELECT DISTINCT uri FROM destinations")
        )


@dataclass(frozen=True, slots=True)
class _KeyRow:
    """A stored row as `add` weighs it against a newcomer."""

    ref: int
    voucher: str
    content_hash: str
    status: str
    method: str
    signer: str | None
    submitter: str | None


class _RowUnreadable(Exception):
    pass


# What a row changed by something else can raise while it is read back: mapped once, here.
_ROW_ERRORS: Final = (_RowUnreadable, ValueError, TypeError)


def _row_reason(exc: Exception) -> str:
    if isinstance(exc, _RowUnreadable):
        return str(exc)
    return f"a column no longer reads ({type(exc).__name__}: {exc})"


def load_domain_reports(database: Path | ReportStore, domain: str) -> ReceivedReports:
    """The stored reports with a policy for `domain`, for `received_evidence`.

    `database` is a path (opened read-only in spirit: it must exist; it is
    migrated if older) or an open store.
    """
    if isinstance(database, ReportStore):
        read = database.read(domain=domain)
        return ReceivedReports(
            normalise_domain(domain), read.reports, database.destinations(), read.unreadable
        )
    with ReportStore.open(database, create=False) as store:
        return load_domain_reports(store, domain)
