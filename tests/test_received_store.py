"""The report database: schema versions, one transaction per report, duplicates and conflicts."""

from __future__ import annotations

import sqlite3
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from test_received_builders import report_dict

from scanner.received.authenticity import NOT_EMAIL, Authenticity, AuthMethod, AuthStatus
from scanner.received.records import AddResult, Provenance
from scanner.received.report import ParsedReport, TlsReport, parse_report_value
from scanner.received.store import (
    MIGRATIONS,
    SCHEMA_VERSION,
    DatabaseError,
    ReportStore,
    _timestamp,
    load_domain_reports,
    migrate,
)

NOW = datetime(2026, 4, 3, 12, 0, tzinfo=UTC)
PASS = Authenticity(
    AuthStatus.PASS, AuthMethod.DKIM, "d=reporter.example: signature verified", "reporter.example"
)


def parsed(**kwargs: object) -> ParsedReport:
    outcome = parse_report_value(report_dict(**kwargs))  # type: ignore[arg-type]
    assert isinstance(outcome, ParsedReport)
    return outcome


def provenance(
    auth: Authenticity = NOT_EMAIL, origin: str = "test", destinations: frozenset[str] = frozenset()
) -> Provenance:
    return Provenance(
        auth, origin, submitter="reporter.example", message_id="<m@x>", destinations=destinations
    )


@pytest.fixture
def store(tmp_path: Path) -> ReportStore:
    with ReportStore.open(tmp_path / "deep" / "reports.sqlite") as opened:
        yield opened  # type: ignore[misc]


def table_counts(path: Path) -> dict[str, int]:
    connection = sqlite3.connect(path)
    try:
        return {
            table: connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            for table in ("reports", "policies", "failure_details", "destinations", "conflicts")
        }
    finally:
        connection.close()


# ---------------------------------------------------------------- schema


def test_a_new_file_gets_the_current_schema(tmp_path: Path) -> None:
    path = tmp_path / "new" / "db.sqlite"
    ReportStore.open(path).close()
    connection = sqlite3.connect(path)
    assert connection.execute("SELECT version FROM schema_version").fetchall() == [
        (SCHEMA_VERSION,)
    ]
    connection.close()
    ReportStore.open(path).close()  # opening again changes nothing
    assert table_counts(path)["reports"] == 0


def test_reading_commands_do_not_create_a_database(tmp_path: Path) -> None:
    with pytest.raises(DatabaseError, match="no database at"):
        ReportStore.open(tmp_path / "missing.sqlite", create=False)
    assert not (tmp_path / "missing.sqlite").exists()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    ReportStore.open(path).close()
    connection = sqlite3.connect(path)
    connection.execute("UPDATE schema_version SET version = 99")
    connection.commit()
    connection.close()
    with pytest.raises(
        DatabaseError,
        match=f"schema version 99; this scanner knows versions up to {SCHEMA_VERSION}",
    ):
        ReportStore.open(path)


def test_someone_elses_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE customers (name TEXT)")
    connection.commit()
    connection.close()
    with pytest.raises(DatabaseError, match="SQLite database of something else"):
        ReportStore.open(path)


def test_a_file_that_is_no_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.sqlite"
    path.write_text("not a database at all, just some text that is long enough " * 20)
    with pytest.raises(DatabaseError, match="cannot use"):
        ReportStore.open(path)


def test_migrations_run_in_order_once_each(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    with ReportStore.open(path) as store:
        store.add(parsed(), provenance(), NOW)
    later = (
        *MIGRATIONS,
        ("ALTER TABLE reports ADD COLUMN comment TEXT", "CREATE TABLE extra (x INTEGER)"),
    )
    with ReportStore.open(path, migrations=later) as store:
        assert len(store.reports()) == 1
    with ReportStore.open(path, migrations=later):
        pass  # already there: nothing runs twice (CREATE TABLE extra would fail)
    connection = sqlite3.connect(path)
    assert connection.execute("SELECT version FROM schema_version").fetchall() == [
        (SCHEMA_VERSION + 1,)
    ]
    connection.close()


def test_a_failing_migration_leaves_the_previous_version(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    ReportStore.open(path).close()
    broken = (*MIGRATIONS, ("CREATE TABLE extra (x INTEGER)", "THIS IS NOT SQL"))
    with pytest.raises(DatabaseError):
        ReportStore.open(path, migrations=broken)
    connection = sqlite3.connect(path)
    assert connection.execute("SELECT version FROM schema_version").fetchall() == [
        (SCHEMA_VERSION,)
    ]
    assert (
        connection.execute("SELECT name FROM sqlite_master WHERE name = 'extra'").fetchall() == []
    )
    connection.close()


def test_migrate_on_a_bare_connection() -> None:
    connection = sqlite3.connect(":memory:", isolation_level=None)
    assert migrate(connection) == SCHEMA_VERSION
    assert migrate(connection) == SCHEMA_VERSION


# ---------------------------------------------------------------- writing and reading


def test_a_report_is_stored_whole_and_read_back(store: ReportStore) -> None:
    report = parsed()
    outcome = store.add(
        report, provenance(PASS, destinations=frozenset({"mailto:tlsrpt@company-y.example"})), NOW
    )
    assert outcome.result is AddResult.IMPORTED
    assert table_counts(store.path) == {
        "reports": 1,
        "policies": 1,
        "failure_details": 3,
        "destinations": 1,
        "conflicts": 0,
    }
    (stored,) = store.reports()
    assert stored.report == report.report
    assert stored.content_hash == report.content_hash
    assert stored.authenticity == PASS
    assert stored.verified
    assert stored.imported_at == NOW
    assert stored.destinations == frozenset({"mailto:tlsrpt@company-y.example"})
    assert stored.conflicting_copies == 0


def test_selection_by_domain_and_day(store: ReportStore) -> None:
    store.add(parsed(report_id="1", day="2026-04-01"), provenance(), NOW)
    store.add(parsed(report_id="2", day="2026-04-02"), provenance(), NOW)
    store.add(parsed(report_id="3", day="2026-04-02", domain="other.example"), provenance(), NOW)
    ids = lambda reports: [r.report.report_id for r in reports]  # noqa: E731
    assert ids(store.reports()) == ["1", "2", "3"]
    assert ids(store.reports(domain="Company-Y.example.")) == ["1", "2"]
    assert ids(store.reports(since=date(2026, 4, 2))) == ["2", "3"]
    assert ids(store.reports(until=date(2026, 4, 1))) == ["1"]
    assert ids(store.reports(domain="nobody.example")) == []
    loaded = load_domain_reports(store.path, "other.example")
    assert ids(loaded.reports) == ["3"]
    assert loaded.domain == "other.example"


def test_same_report_twice_is_a_duplicate(store: ReportStore) -> None:
    store.add(parsed(), provenance(destinations=frozenset({"mailto:a@x.example"})), NOW)
    outcome = store.add(parsed(), provenance(destinations=frozenset({"mailto:b@x.example"})), NOW)
    assert outcome.result is AddResult.DUPLICATE
    (stored,) = store.reports()
    assert stored.destinations == {"mailto:a@x.example", "mailto:b@x.example"}
    assert table_counts(store.path)["failure_details"] == 3


def test_a_verified_copy_upgrades_an_unverified_duplicate(store: ReportStore) -> None:
    store.add(parsed(), provenance(NOT_EMAIL), NOW)
    outcome = store.add(parsed(), provenance(PASS, origin="mail"), NOW)
    assert outcome.result is AddResult.DUPLICATE
    assert "now vouched for by reporter.example (pass)" in outcome.detail
    (stored,) = store.reports()
    assert stored.verified
    assert stored.origin == "mail"
    assert (
        store.add(parsed(), provenance(NOT_EMAIL), NOW).result is AddResult.DUPLICATE
    )  # never downgraded
    assert store.reports()[0].verified


@pytest.mark.parametrize("order", ["more-failures-first", "more-failures-second"])
def test_same_key_other_content_counts_the_copy_with_more_failures(
    store: ReportStore, order: str
) -> None:
    more = parsed(failed=304)
    fewer = parsed(successful=1)  # 303 failures, a higher rate: failures decide first
    first, second = (more, fewer) if order == "more-failures-first" else (fewer, more)
    store.add(first, provenance(), NOW)
    outcome = store.add(second, provenance(origin="second"), NOW)
    assert outcome.result is AddResult.CONFLICT
    assert "more failures" in outcome.detail
    (stored,) = store.reports()
    assert stored.content_hash == more.content_hash
    assert stored.conflicting_copies == 1
    for copy in (first, second):  # the same contents again
        assert store.add(copy, provenance(), NOW).result is AddResult.DUPLICATE
    assert table_counts(store.path)["conflicts"] == 1


def test_a_copy_from_another_voucher_is_another_report(store: ReportStore) -> None:
    forged = parsed(failed=0, details=[])
    real = parsed()
    store.add(forged, provenance(NOT_EMAIL), NOW)
    outcome = store.add(real, provenance(PASS), NOW)
    assert outcome.result is AddResult.IMPORTED
    assert "vouched for by file" in outcome.detail
    stored = {report.voucher: report for report in store.reports()}
    assert set(stored) == {"file:", "dkim:reporter.example"}
    assert stored["dkim:reporter.example"].content_hash == real.content_hash
    assert stored["dkim:reporter.example"].conflicting_copies == 0
    assert stored["file:"].content_hash == forged.content_hash


class FailingStore(ReportStore):
    """A store whose second policy insert fails, as a full disk would."""

    def _insert_policies(self, report_ref: int, report: TlsReport) -> None:
        super()._insert_policies(report_ref, report)
        raise sqlite3.OperationalError("database or disk is full")


def test_a_failure_midway_leaves_no_half_report(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    ReportStore.open(path).close()
    connection = sqlite3.connect(path, isolation_level=None)
    failing = FailingStore(connection, path)
    with pytest.raises(sqlite3.OperationalError):
        failing.add(parsed(), provenance(), NOW)
    assert table_counts(path) == {
        "reports": 0,
        "policies": 0,
        "failure_details": 0,
        "destinations": 0,
        "conflicts": 0,
    }
    with ReportStore.open(path) as store:  # and the file is fine for the next writer
        assert store.add(parsed(), provenance(), NOW).result is AddResult.IMPORTED
    connection.close()


def test_odd_text_is_stored_and_read_back(store: ReportStore) -> None:
    odd = "\x1b[2J\u202e[bold]Org[/]\x00"
    report = parsed(organization=odd, report_id="\ud83d\ude00 id")
    store.add(report, provenance(), NOW)
    (stored,) = store.reports()
    assert stored.report.organization_name == odd


# ---------------------------------------------------------------- rows changed by others, old rows


def _year_999() -> ParsedReport:
    """A report ending in the year 999, as an earlier scanner accepted (no range check then)."""
    from scanner.received.limits import ReceivedLimits

    value = report_dict(report_id="ancient")
    value["date-range"] = {
        "start-datetime": "0999-12-31T00:00:00Z",
        "end-datetime": "0999-12-31T23:59:59Z",
    }
    outcome = parse_report_value(value, ReceivedLimits(earliest_year=1))
    assert isinstance(outcome, ParsedReport)
    return outcome


def test_times_have_four_digit_years_and_old_reports_expire(store: ReportStore) -> None:
    store.add(_year_999(), provenance(), NOW)
    store.add(parsed(report_id="recent"), provenance(), NOW)
    connection = sqlite3.connect(store.path)
    (end,) = connection.execute(
        "SELECT end_datetime FROM reports WHERE report_id = 'ancient'"
    ).fetchone()
    connection.close()
    assert end == "0999-12-31T23:59:59.000000Z"
    assert store.delete_ended_before(datetime(2026, 1, 1, tzinfo=UTC)) == 1
    assert [stored.report.report_id for stored in store.reports()] == ["recent"]


def old_row(
    connection: sqlite3.Connection,
    report: ParsedReport,
    *,
    status: str = "none",
    method: str = "not-email",
    signer: str | None = None,
    submitter: str | None = None,
    origin: str = "old",
    stored_hash: str = "received-form-hash",
) -> int:
    """A row as schema 1 and 2 wrote it (keyed by organization-name and report-id, the
    hash of the received JSON), with its policies; its id."""
    value = report.report
    cursor = connection.execute(
        "INSERT INTO reports (organization_name, report_id, content_hash, start_datetime, "
        "end_datetime, start_day, contact_info, report_json, notes_json, auth_status, "
        "auth_method, auth_detail, auth_signer, submitter, origin, message_id, imported_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, '[]', ?, ?, '', ?, ?, ?, NULL, ?)",
        (
            value.organization_name,
            value.report_id,
            stored_hash,
            _timestamp(value.date_range.start),
            _timestamp(value.date_range.end),
            value.date_range.day.isoformat(),
            value.contact_info,
            report.canonical_json,
            status,
            method,
            signer,
            submitter,
            origin,
            _timestamp(NOW),
        ),
    )
    ref = cursor.lastrowid
    assert ref is not None
    for position, entry in enumerate(value.policies):
        connection.execute(
            "INSERT INTO policies (report_ref, position, policy_type, policy_domain, "
            "successful_sessions, failed_sessions) VALUES (?, ?, ?, ?, ?, ?)",
            (
                ref,
                position,
                entry.policy.policy_type,
                entry.policy.policy_domain,
                entry.successful_sessions,
                entry.failed_sessions,
            ),
        )
    connection.commit()
    return ref


def old_database(path: Path, version: int) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None)
    migrate(connection, MIGRATIONS[:version])
    connection.isolation_level = ""
    return connection


def test_the_migration_gives_short_years_four_digits(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    old = old_database(path, 1)
    old_row(old, _year_999())
    old_row(old, parsed(report_id="recent"))
    old.close()
    connection = sqlite3.connect(path)
    connection.execute(
        "UPDATE reports SET end_datetime = '999-12-31T23:59:59.000000Z', "
        "start_datetime = '999-12-31T00:00:00.000000Z' WHERE report_id = 'ancient'"
    )
    connection.commit()
    connection.close()
    with ReportStore.open(path) as store:
        assert [stored.report.report_id for stored in store.reports()] == ["ancient", "recent"]
        assert store.delete_ended_before(datetime(2026, 1, 1, tzinfo=UTC)) == 1
    connection = sqlite3.connect(path)
    assert connection.execute("SELECT start_datetime FROM reports").fetchall() == [
        ("2026-04-01T00:00:00.000000Z",)
    ]
    connection.close()


def test_a_row_that_no_longer_reads_is_skipped_and_named(store: ReportStore) -> None:
    for number in range(3):
        store.add(parsed(report_id=f"r{number}"), provenance(), NOW)
    connection = sqlite3.connect(store.path)
    connection.execute(
        "UPDATE reports SET report_json = ? WHERE report_id = 'r1'",
        ('{"organization-name": "Company-X", "x": Infinity}',),
    )
    connection.execute("UPDATE reports SET imported_at = 'yesterday' WHERE report_id = 'r2'")
    connection.commit()
    connection.close()
    read = store.read()
    assert [stored.report.report_id for stored in read.reports] == ["r0"]
    assert [(row.report_id, row.organization_name) for row in read.unreadable] == [
        ("r1", "Company-X"),
        ("r2", "Company-X"),
    ]
    assert "no longer parses" in read.unreadable[0].reason
    assert "ValueError" in read.unreadable[1].reason
    loaded = load_domain_reports(store, "company-y.example")
    assert len(loaded.reports) == 1
    assert len(loaded.unreadable) == 2


# ---------------------------------------------------------------- schema 3: vouchers


def test_schema_2_databases_migrate_to_vouchers(tmp_path: Path) -> None:
    path = tmp_path / "v2.sqlite"
    old = old_database(path, 2)
    verified = old_row(
        old, parsed(report_id="google-1"), status="pass", method="dkim", signer="google.example"
    )
    emailed = old_row(
        old, parsed(report_id="mailru-1"), status="fail", method="dkim", submitter="mail.example"
    )
    posted = old_row(
        old,
        parsed(report_id="https-1"),
        method="https-receiver",
        origin="https POST from 2001:db8:1:2::7 via 127.0.0.1",
    )
    old.execute(
        "INSERT INTO destinations (report_ref, uri) VALUES (?, 'mailto:tlsrpt@company-y.example')",
        (verified,),
    )
    old.commit()
    old.close()
    with ReportStore.open(path) as store:
        stored = {report.report.report_id: report for report in store.reports()}
        assert {key: report.voucher for key, report in stored.items()} == {
            "google-1": "dkim:google.example",
            "mailru-1": "submitter:mail.example",
            "https-1": "https:2001:db8:1:2::/64",
        }
        # content_hash is now of the validated form: the same report again is a duplicate
        again = store.add(parsed(report_id="mailru-1"), provenance(NOT_EMAIL), NOW)
        assert again.result is AddResult.DUPLICATE
        assert stored["google-1"].destinations == {"mailto:tlsrpt@company-y.example"}
        key_unavailable = Authenticity(AuthStatus.KEY_UNAVAILABLE, AuthMethod.DKIM, "retired")
        assert store.add(parsed(report_id="x"), provenance(key_unavailable), NOW).result is (
            AddResult.IMPORTED
        )
    connection = sqlite3.connect(path)
    assert connection.execute("PRAGMA foreign_key_check").fetchall() == []
    assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert connection.execute("SELECT version FROM schema_version").fetchone() == (3,)
    schema = connection.execute("SELECT sql FROM sqlite_master WHERE name = 'reports'").fetchone()
    assert "key-unavailable" in schema[0]
    assert "UNIQUE (voucher, report_id)" in schema[0]
    assert connection.execute(
        "SELECT COUNT(*) FROM reports WHERE id IN (?, ?)", (emailed, posted)
    ).fetchone() == (2,)
    connection.close()


def test_schema_2_rows_that_now_share_a_key_become_conflicts(tmp_path: Path) -> None:
    path = tmp_path / "v2.sqlite"
    old = old_database(path, 2)
    # two organization names, one report-id, one voucher (files): schema 2 kept both
    old_row(old, parsed(report_id="same", organization="Org A", failed=0, details=[]))
    old_row(old, parsed(report_id="same", organization="Org B"))
    old.close()
    with ReportStore.open(path) as store:
        (kept,) = store.reports()
        assert kept.report.organization_name == "Org B"  # the copy with more failures
        assert kept.conflicting_copies == 1
        assert [copy.organization_name for copy in kept.conflict_copies] == ["Org A"]
    assert table_counts(path)["policies"] == 1
    with ReportStore.open(path) as store:  # the references hold after the rebuild: cascades
        assert store.delete_ended_before(datetime(2027, 1, 1, tzinfo=UTC)) == 1
    assert table_counts(path) == {
        "reports": 0,
        "policies": 0,
        "failure_details": 0,
        "destinations": 0,
        "conflicts": 0,
    }


def test_a_policy_without_domain_is_stored_as_null(store: ReportStore) -> None:
    report = report_dict()
    del report["policies"][0]["policy"]["policy-domain"]
    outcome = parse_report_value(report)
    assert isinstance(outcome, ParsedReport)
    store.add(outcome, provenance(), NOW)
    connection = sqlite3.connect(store.path)
    assert connection.execute("SELECT policy_domain FROM policies").fetchall() == [(None,)]
    connection.close()
    (stored,) = store.reports()
    assert stored.report.policies[0].policy.policy_domain == ""


def test_another_vouchers_copies_never_swallow_a_report(store: ReportStore) -> None:
    genuine = parsed()  # 303 failures
    worse = parsed(failed=400)
    # a forger's file holds the genuine content, as a conflicting copy of a worse one
    store.add(genuine, provenance(NOT_EMAIL), NOW)
    store.add(worse, provenance(NOT_EMAIL), NOW)
    outcome = store.add(genuine, provenance(PASS), NOW)
    assert outcome.result is AddResult.IMPORTED  # its twin before: "already stored"
    stored = {report.voucher: report for report in store.reports()}
    assert stored["dkim:reporter.example"].content_hash == genuine.content_hash


def test_content_of_another_voucher_is_weighed_against_ones_own(store: ReportStore) -> None:
    first, second = parsed(failed=10, details=[]), parsed(failed=20, details=[])
    store.add(first, provenance(PASS), NOW)
    store.add(second, provenance(NOT_EMAIL), NOW)  # another voucher: another report
    outcome = store.add(second, provenance(PASS), NOW)  # the signer's own other content
    assert outcome.result is AddResult.CONFLICT
    stored = {report.voucher: report for report in store.reports()}
    assert stored["dkim:reporter.example"].content_hash == second.content_hash  # more failures
    assert stored["dkim:reporter.example"].conflicting_copies == 1
    assert stored["file:"].content_hash == second.content_hash
