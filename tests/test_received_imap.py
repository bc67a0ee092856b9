"""`tlsrpt import --imap` against a real Dovecot IMAPS server on loopback.

The test starts Dovecot (Debian's `dovecot-imapd`, installed by `.ci/run`) in the
foreground with its own configuration: one 127.0.0.x address and a free high
port, TLS only with a trustme certificate, a passwd-file passdb, Maildir storage
in a temporary folder. Messages are put in with IMAP APPEND, as delivery would.
Skipped, saying why, where the dovecot binary is not installed.
"""

from __future__ import annotations

import grp
import imaplib
import os
import pwd
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trustme
from test_received_builders import plain_email, report_dict, report_email, reporter_lookup, sign
from typer.testing import CliRunner

from scanner.cli import app
from scanner.received.authenticity import build_verifier
from scanner.received.imap import ImapSettings, ImapTarget, imap_items
from scanner.received.importer import EventKind, Importer
from scanner.received.items import MessageItem
from scanner.received.store import ReportStore

DOVECOT = shutil.which("dovecot") or (
    "/usr/sbin/dovecot" if Path("/usr/sbin/dovecot").exists() else None
)
ADDRESS = "127.0.0.93"
USER, PASSWORD = "reports", "correct horse battery staple"

pytestmark = [
    pytest.mark.imap,
    pytest.mark.skipif(
        DOVECOT is None,
        reason="Dovecot is not installed (Debian: apt-get install dovecot-imapd; .ci/run installs it)",
    ),
]


@dataclass
class ImapServer:
    port: int
    ca_file: Path
    context: ssl.SSLContext

    def url(self, folder: str = "INBOX") -> str:
        return f"imaps://{USER}@{ADDRESS}:{self.port}/{folder}"

    def target(self) -> ImapTarget:
        return ImapTarget(ADDRESS, self.port, USER, "INBOX")

    def append(
        self, message: bytes, *, seen: bool = False, arrived: datetime | None = None
    ) -> None:
        client = imaplib.IMAP4_SSL(ADDRESS, self.port, ssl_context=self.context, timeout=10)
        try:
            client.login(USER, PASSWORD)
            flags = "(\\Seen)" if seen else None
            when = imaplib.Time2Internaldate(arrived) if arrived is not None else None
            status, _ = client.append(
                "INBOX", flags, when, message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            )
            assert status == "OK"
        finally:
            client.logout()

    def unseen(self) -> int:
        client = imaplib.IMAP4_SSL(ADDRESS, self.port, ssl_context=self.context, timeout=10)
        try:
            client.login(USER, PASSWORD)
            client.select("INBOX")
            _, data = client.uid("SEARCH", "UNSEEN")
            return len(data[0].split()) if data and data[0] else 0
        finally:
            client.logout()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((ADDRESS, 0))
        return int(probe.getsockname()[1])


def _wait_until_listening(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            stderr = log.with_name("dovecot.stderr").read_text()
            pytest.fail(f"dovecot exited: {stderr} {log.read_text() if log.exists() else ''}")
        try:
            with socket.create_connection((ADDRESS, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail(
        f"dovecot did not listen on {ADDRESS}:{port}: {log.read_text() if log.exists() else ''}"
    )


@pytest.fixture
def imap_server(tmp_path: Path) -> Iterator[ImapServer]:
    assert DOVECOT is not None
    ca = trustme.CA()
    leaf = ca.issue_cert(ADDRESS, "imap.test")
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    for folder in ("run", "state"):
        (tmp_path / folder).mkdir()
    me = pwd.getpwuid(os.getuid()).pw_name
    if os.getuid() == 0:
        # Dovecot never gives mail to uid 0: the mail user is nobody, in a folder it owns
        # (tmp_path's parents are private to root).
        mail_user, mail_group = "nobody", grp.getgrgid(pwd.getpwnam("nobody").pw_gid).gr_name
        mail_home = Path(tempfile.mkdtemp(prefix="scanner-imap-"))
        shutil.chown(mail_home, mail_user, mail_group)
        # The auth worker runs as the dovecot user: the passdb must be where it can read it.
        auth_folder = Path(tempfile.mkdtemp(prefix="scanner-imap-auth-"))
        auth_folder.chmod(0o755)
        run_as = ""
    else:
        mail_user, mail_group = me, grp.getgrgid(os.getgid()).gr_name
        mail_home = tmp_path / "mail"
        mail_home.mkdir()
        auth_folder = tmp_path
        run_as = f"default_internal_user = {me}\ndefault_login_user = {me}\ndefault_internal_group = {mail_group}\n"
    passdb = auth_folder / "passwd"
    passdb.write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
    passdb.chmod(0o644)
    port = _free_port()
    log = tmp_path / "dovecot.log"
    config = tmp_path / "dovecot.conf"
    config.write_text(
        f"""base_dir = {tmp_path}/run
state_dir = {tmp_path}/state
log_path = {log}
protocols = imap
listen = {ADDRESS}
ssl = required
ssl_cert = <{tmp_path}/cert.pem
ssl_key = <{tmp_path}/key.pem
auth_mechanisms = plain
{run_as}passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {passdb}
}}
userdb {{
  driver = static
  args = uid={mail_user} gid={mail_group} home={mail_home}/%u
}}
mail_location = maildir:~/Maildir
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    address = {ADDRESS}
    port = {port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
"""
    )
    with (tmp_path / "dovecot.stderr").open("wb") as stderr:
        process = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(config)], stdout=subprocess.DEVNULL, stderr=stderr
        )
    try:
        _wait_until_listening(port, process, log)
        context = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        yield ImapServer(port, tmp_path / "ca.pem", context)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if os.getuid() == 0:
            shutil.rmtree(mail_home, ignore_errors=True)
            shutil.rmtree(auth_folder, ignore_errors=True)


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.output


def test_unseen_then_all(imap_server: ImapServer, tmp_path: Path) -> None:
    imap_server.append(report_email(report_dict(report_id="a")))
    imap_server.append(report_email(b'{"report-id": "broken", "policies": ['))
    imap_server.append(plain_email())
    imap_server.append(report_email(report_dict(report_id="d")), seen=True)
    db = tmp_path / "db.sqlite"
    env = {"TLSRPT_IMAP_PASSWORD": PASSWORD}
    common = [
        "--imap-password-env",
        "TLSRPT_IMAP_PASSWORD",
        "--imap-ca-file",
        str(imap_server.ca_file),
        "--db",
        str(db),
    ]
    code, output = invoke("tlsrpt", "import", "--imap", imap_server.url(), *common, env=env)
    assert code == 0, output
    assert output.startswith(
        "1 imported (authenticity: none 1), 0 duplicate, 0 conflicting, 1 rejected, 1 skipped"
    )
    assert f"imaps://{USER}@{ADDRESS}:{imap_server.port}/INBOX uid 2" in output
    assert imap_server.unseen() == 0  # handled messages are marked seen
    code, output = invoke("tlsrpt", "import", "--imap", imap_server.url(), *common, env=env)
    assert code == 0
    assert output.startswith("0 imported, 0 duplicate")
    code, output = invoke(
        "tlsrpt", "import", "--imap", imap_server.url(), "--imap-all", *common, env=env
    )
    assert code == 0
    assert output.startswith(
        "1 imported (authenticity: none 1), 1 duplicate, 0 conflicting, 1 rejected, 1 skipped"
    )
    with ReportStore.open(db) as store:
        assert sorted(r.report.report_id for r in store.reports()) == ["a", "d"]
        assert all(r.destinations == {"mailto:tlsrpt@company-y.example"} for r in store.reports())


def test_password_file_and_a_folder_name(imap_server: ImapServer, tmp_path: Path) -> None:
    imap_server.append(report_email(report_dict()))
    secret = tmp_path / "secret"
    secret.write_text(PASSWORD + "\n")
    code, output = invoke(
        "tlsrpt",
        "import",
        "--imap",
        imap_server.url("INBOX"),
        "--imap-password-file",
        str(secret),
        "--imap-ca-file",
        str(imap_server.ca_file),
        "--db",
        str(tmp_path / "db.sqlite"),
    )
    assert code == 0, output
    assert output.startswith("1 imported"), output
    code, output = invoke(
        "tlsrpt",
        "import",
        "--imap",
        imap_server.url("No Such Folder"),
        "--imap-password-file",
        str(secret),
        "--imap-ca-file",
        str(imap_server.ca_file),
        "--db",
        str(tmp_path / "db.sqlite"),
    )
    assert code == 1
    assert "unreadable: " in output
    assert "select No Such Folder" in output


def test_wrong_password_costs_only_that_source(imap_server: ImapServer, tmp_path: Path) -> None:
    report_file = tmp_path / "r.json"
    report_file.write_text(__import__("json").dumps(report_dict()))
    code, output = invoke(
        "tlsrpt",
        "import",
        str(report_file),
        "--imap",
        imap_server.url(),
        "--imap-password-env",
        "P",
        "--imap-ca-file",
        str(imap_server.ca_file),
        "--db",
        str(tmp_path / "db.sqlite"),
        env={"P": "wrong"},
    )
    assert code == 1
    assert output.startswith("1 imported")
    assert "1 unreadable" in output
    assert "login" in output


def test_an_untrusted_certificate_is_refused(imap_server: ImapServer, tmp_path: Path) -> None:
    code, output = invoke(
        "tlsrpt",
        "import",
        "--imap",
        imap_server.url(),
        "--imap-password-env",
        "P",
        "--db",
        str(tmp_path / "db.sqlite"),
        env={"P": PASSWORD},
    )
    assert code == 1
    assert "connect: TLS certificate not valid" in output


def test_signed_report_over_imap_is_verified(imap_server: ImapServer, tmp_path: Path) -> None:
    imap_server.append(sign(report_email(report_dict())))
    settings = ImapSettings(password=PASSWORD, ssl_context=imap_server.context, timeout=10)
    with ReportStore.open(tmp_path / "db.sqlite") as store:
        importer = Importer(
            store, verify=build_verifier(reporter_lookup()), now=lambda: datetime.now(UTC)
        )
        tally = importer.run(imap_items(imap_server.target(), settings))
        assert tally.count(EventKind.IMPORTED) == 1
        assert tally.authenticity == {"pass": 1}
        (stored,) = store.reports()
        assert stored.verified
        assert stored.origin.startswith(f"imaps://{USER}@{ADDRESS}")


def test_an_expired_signature_passes_when_it_was_valid_at_internaldate(
    imap_server: ImapServer, tmp_path: Path
) -> None:
    sent = datetime(2026, 4, 2, 3, 4, 5, tzinfo=UTC)
    message = sign(
        report_email(report_dict()),
        signed_at=int(sent.timestamp()),
        expires=int((sent + timedelta(days=7)).timestamp()),
    )
    imap_server.append(message, arrived=sent + timedelta(minutes=1))
    imap_server.append(message)  # the same message again, arriving now: expired by then
    settings = ImapSettings(password=PASSWORD, ssl_context=imap_server.context, timeout=10)
    later = sent + timedelta(days=60)
    with ReportStore.open(tmp_path / "db.sqlite") as store:
        importer = Importer(
            store, verify=build_verifier(reporter_lookup(), now=lambda: later), now=lambda: later
        )
        items = list(imap_items(imap_server.target(), settings))
        arrivals = [item.arrived for item in items if isinstance(item, MessageItem)]
        assert arrivals[0] == sent + timedelta(minutes=1)
        assert arrivals[1] is not None
        assert arrivals[1] > later  # appended now: after the signature expired
        importer.run(items)
        (stored,) = store.reports()
    assert stored.verified
    assert "valid when the message arrived" in stored.authenticity.detail
    # the late copy fails (expired when it arrived) and is a harmless duplicate
    assert importer.tally.count(EventKind.IMPORTED) == 1
    assert importer.tally.count(EventKind.DUPLICATE) == 1


def test_oversize_message_is_rejected_without_fetching(
    imap_server: ImapServer, tmp_path: Path
) -> None:
    from scanner.received.limits import ReceivedLimits

    imap_server.append(report_email(report_dict()))
    settings = ImapSettings(password=PASSWORD, ssl_context=imap_server.context, timeout=10)
    items = list(imap_items(imap_server.target(), settings, ReceivedLimits(max_message_bytes=100)))
    assert [type(item).__name__ for item in items] == ["SourceBegins", "RejectedItem"]


def test_a_message_that_cannot_be_read_is_marked_and_the_run_goes_on(
    imap_server: ImapServer, tmp_path: Path
) -> None:
    from test_received_builders import nested_email

    imap_server.append(nested_email(1000))
    imap_server.append(report_email(report_dict(report_id="after")))
    settings = ImapSettings(password=PASSWORD, ssl_context=imap_server.context, timeout=10)
    with ReportStore.open(tmp_path / "db.sqlite") as store:
        importer = Importer(
            store, verify=build_verifier(reporter_lookup()), now=lambda: datetime.now(UTC)
        )
        tally = importer.run(imap_items(imap_server.target(), settings))
        assert [stored.report.report_id for stored in store.reports()] == ["after"]
    (rejected,) = tally.notable
    assert rejected.origin.endswith("uid 1")
    assert "1000 multipart or message parts" in rejected.detail
    assert imap_server.unseen() == 0  # marked: the next run does not stop at it
