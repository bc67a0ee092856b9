"""The report database: one SQLite file, versioned schema, one transaction per report.

Theory of operation: `ReportStore.open` migrates the file to `SCHEMA_VERSION`
(each step in its own transaction, recorded in `schema_version`), refusing a
file written by a newer scanner or one that is not ours. `add` writes a report,
its policies, failure details and destinations inside one `BEGIN IMMEDIATE`
transaction: a crash, a kill or Ctrl-C in the middle leaves the database as it
was before the report (SQLite's rollback journal), never half a report.

Identity: (organization-name, report-id). A second copy with the same content
hash is a duplicate (its destinations are added; a verified copy upgrades an
unverified one's authenticity). A copy with different content is a conflict:
the stored report stays (unless it is unverified and the newcomer is verified,
then they swap), and the other content is kept in `conflicts` and counted.

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

import json
import sqlite3
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from types import TracebackType
from typing import Final

from scanner.received.authenticity import Authenticity, AuthMethod, AuthStatus
from scanner.received.limits import STORED_LIMITS
from scanner.received.records import (
    AddOutcome,
    AddResult,
    Provenance,
    ReceivedReports,
    StoredReport,
    StoredReports,
    UnreadableReport,
)
from scanner.received.report import ParsedReport, TlsReport, normalise_domain, parse_report_json

DEFAULT_DATABASE: Final = Path("results/tlsrpt.sqlite")
BUSY_TIMEOUT_SECONDS: Final = 30.0

# Each entry takes the schema from version N-1 to N; never edit a released one, append.
MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
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
    connection: sqlite3.Connection, migrations: Sequence[Sequence[str]] = MIGRATIONS
) -> int:
    """Bring the schema to `len(migrations)`, one transaction per step; the version reached."""
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
        migrations: Sequence[Sequence[str]] = MIGRATIONS,
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
        report = parsed.report
        connection.execute("BEGIN IMMEDIATE")
        try:
            row = connection.execute(
                "SELECT id, content_hash, auth_status FROM reports "
                "WHERE organization_name = ? AND report_id = ?",
                report.key,
            ).fetchone()
            if row is None:
                report_ref = self._insert_report(parsed, provenance, now)
                self._insert_destinations(report_ref, provenance.destinations)
                outcome = AddOutcome(AddResult.IMPORTED)
            else:
                outcome = self._merge(row, parsed, provenance, now)
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        return outcome

    def _merge(
        self, row: tuple[int, str, str], parsed: ParsedReport, provenance: Provenance, now: datetime
    ) -> AddOutcome:
        report_ref, stored_hash, stored_status = row
        newcomer_verified = provenance.authenticity.status is AuthStatus.PASS
        stored_verified = stored_status == AuthStatus.PASS.value
        self._insert_destinations(report_ref, provenance.destinations)
        if stored_hash == parsed.content_hash:
            if newcomer_verified and not stored_verified:
                self._set_provenance(report_ref, provenance)
                return AddOutcome(AddResult.DUPLICATE, "already stored; now verified by this copy")
            return AddOutcome(AddResult.DUPLICATE, "already stored")
        known = self._connection.execute(
            "SELECT 1 FROM conflicts WHERE report_ref = ? AND content_hash = ?",
            (report_ref, parsed.content_hash),
        ).fetchone()
        if known is not None:
            return AddOutcome(AddResult.DUPLICATE, "already stored as a conflicting copy")
        if newcomer_verified and not stored_verified:
            old_json, old_origin = self._connection.execute(
                "SELECT report_json, origin FROM reports WHERE id = ?", (report_ref,)
            ).fetchone()
            self._insert_conflict(report_ref, stored_hash, old_json, stored_status, old_origin, now)
            self._replace_report(report_ref, parsed, provenance, now)
            return AddOutcome(
                AddResult.CONFLICT,
                "same organization and report-id, different content: this verified copy "
                "replaces the unverified one, which is kept as a conflict",
            )
        self._insert_conflict(
            report_ref,
            parsed.content_hash,
            parsed.canonical_json,
            provenance.authenticity.status.value,
            provenance.origin,
            now,
        )
        return AddOutcome(
            AddResult.CONFLICT,
            "same organization and report-id, different content: the first copy is kept, "
            "this one is recorded as a conflict",
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
            "INSERT INTO reports (organization_name, report_id, content_hash, start_datetime, "
            "end_datetime, start_day, contact_info, report_json, notes_json, auth_status, "
            "auth_method, auth_detail, auth_signer, submitter, origin, message_id, imported_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
            "UPDATE reports SET organization_name = ?, report_id = ?, content_hash = ?, "
            "start_datetime = ?, end_datetime = ?, start_day = ?, contact_info = ?, "
            "report_json = ?, notes_json = ?, auth_status = ?, auth_method = ?, auth_detail = ?, "
            "auth_signer = ?, submitter = ?, origin = ?, message_id = ?, imported_at = ? "
            "WHERE id = ?",
            (*self._report_columns(parsed, provenance, now), report_ref),
        )
        self._insert_policies(report_ref, parsed.report)

    def _set_provenance(self, report_ref: int, provenance: Provenance) -> None:
        auth = provenance.authenticity
        self._connection.execute(
            "UPDATE reports SET auth_status = ?, auth_method = ?, auth_detail = ?, auth_signer = ?, "
            "submitter = ?, origin = ?, message_id = ? WHERE id = ?",
            (
                auth.status.value,
                auth.method.value,
                auth.detail,
                auth.signer,
                provenance.submitter,
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
                    entry.policy.policy_domain,
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
            "(SELECT COUNT(*) FROM conflicts WHERE report_ref = reports.id), "
            "organization_name, report_id "
            f"FROM reports {where} ORDER BY start_datetime, id",
            parameters,
        ).fetchall()
        destinations: dict[int, set[str]] = {}
        for report_ref, uri in self._connection.execute("SELECT report_ref, uri FROM destinations"):
            destinations.setdefault(report_ref, set()).add(uri)
        reports: list[StoredReport] = []
        unreadable: list[UnreadableReport] = []
        for row in rows:
            try:
                reports.append(self._stored(row[:12], frozenset(destinations.get(row[0], ()))))
            except _ROW_ERRORS as exc:
                unreadable.append(
                    UnreadableReport(int(row[0]), str(row[12]), str(row[13]), _row_reason(exc))
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
        )

    def destinations(self) -> frozenset[str]:
        """Every rua destination (`mailto:` or `https:`) a stored report was delivered to."""
        return frozenset(
            str(row[0]) for row in self._connection.execute("SELECT DISTINCT uri FROM destinations")
        )


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
