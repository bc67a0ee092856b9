"""A private Postfix instance on loopback, for the realmta tests.

Theory of operation
-------------------
Each test starts its own Postfix (`postfix -c DIR start`, as root) with a
configuration directory, queue, data directory and log file (`maillog_file`) of its
own under a temporary directory, listening on one loopback address at
`POSTFIX_PORT`. The machine's own Postfix, if any, is never touched.

Hermetic DNS: Postfix resolves names (the EHLO name, for
`reject_unknown_helo_hostname`) with the system resolver's DNS code, which reads
`/etc/resolv.conf` and ignores `/etc/hosts`. The instance is therefore started in a
private mount namespace (`unshare --mount`) whose `/etc/resolv.conf` is a bind mount
of a file naming `POSTFIX_DNS_ADDRESS`, where the test serves the lab's zone on port
53. Nothing Postfix asks leaves 127.0.0.0/8, and the rest of the machine keeps its
resolver.

Postscreen and the anvil limits exempt `mynetworks`, which by default holds all of
127.0.0.0/8. The instance's `mynetworks` is `MYNETWORKS`, a /32 the scanner never
connects from: the scanner binds no source address, so the kernel gives it the
loopback route's source, 127.0.0.1 (`scanner_source_address` asks the kernel).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import trio

POSTFIX_PORT = 2525  # unprivileged, and not the lab's
MYNETWORKS = "127.0.77.254/32"  # an address no test connects from
POSTFIX_DNS_ADDRESS = "127.0.77.53"  # the lab's zone for Postfix: resolv.conf has no port
SBIN = ("/usr/sbin", "/usr/local/sbin", "/sbin")
START_DEADLINE = 30.0  # seconds for `postfix start`: it runs `postfix check` first
STOP_DEADLINE = 10.0

# The daemons a minimal instance needs (chroot off: the paths are the test's own).
BASE_SERVICES = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

POSTSCREEN_SERVICES = """\
smtpd     pass  -       -       n       -       -       smtpd
dnsblog   unix  -       -       n       -       0       dnsblog
tlsproxy  unix  -       -       n       -       0       tlsproxy
"""


def find_tool(name: str) -> str | None:
    """A Postfix or util-linux program, looked up in PATH and the sbin directories."""
    path = os.pathsep.join([os.environ.get("PATH", ""), *SBIN])
    return shutil.which(name, path=path)


def _run(command: list[str], *, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    env["PATH"] = os.pathsep.join([env.get("PATH", ""), *SBIN])
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, check=False, env=env
    )


def ensure_postfix() -> str | None:
    """Postfix ready to run private instances: None, or why not (a skip message).

    Installs Debian's `postfix` package when it is missing (as root, with apt-get),
    then stops the system instance the package may have started, so that it stays
    stopped; a Postfix that was installed before is left as it is.
    """
    if os.geteuid() != 0:
        return "realmta tests run Postfix as root: run them as root"
    if find_tool("unshare") is None or find_tool("mount") is None:
        return "realmta tests need unshare and mount (util-linux) for Postfix's private resolv.conf"
    if find_tool("postfix") is None:
        if find_tool("apt-get") is None:
            return "postfix is not installed and there is no apt-get to install it"
        install = ["apt-get", "install", "-y", "postfix"]
        try:
            done = _run(install, timeout=600)
            if done.returncode != 0:
                _run(["apt-get", "update"], timeout=600)
                done = _run(install, timeout=600)
        except subprocess.TimeoutExpired:
            return "installing postfix with apt-get timed out"
        if done.returncode != 0 or find_tool("postfix") is None:
            return f"postfix could not be installed: {done.stderr.strip()[-300:]}"
        if _run(["postfix", "status"], timeout=30).returncode == 0:
            _run(["postfix", "stop"], timeout=60)  # keep the system service stopped
    probe = _run(["unshare", "--mount", "true"], timeout=30)
    if probe.returncode != 0:
        return f"unshare --mount does not work here: {probe.stderr.strip()}"
    return None


def scanner_source_address(server: str) -> str:
    """The source address the kernel picks for a connection to `server` (no bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((server, POSTFIX_PORT))
        address: str = sock.getsockname()[0]
    return address


def in_mynetworks(address: str) -> bool:
    return ipaddress.ip_address(address) in ipaddress.ip_network(MYNETWORKS)


@dataclass
class Postfix:
    """One private instance; `start` and `stop` it, read its `log`."""

    root: Path
    address: str
    settings: Mapping[str, str]
    postscreen: bool = False
    cert_pem: bytes = b""
    key_pem: bytes = b""
    master_pid: int | None = field(default=None, init=False)

    @property
    def config_dir(self) -> Path:
        return self.root / "etc"

    @property
    def log_file(self) -> Path:
        return self.root / "maillog"

    def log(self) -> str:
        try:
            return self.log_file.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def _main_cf(self) -> str:
        root = self.root
        lines = {
            "compatibility_level": "3.6",
            "queue_directory": str(root / "queue"),
            "data_directory": str(root / "data"),
            "maillog_file": str(self.log_file),
            "maillog_file_prefixes": str(root),
            "myhostname": "mx.realmta.example",
            "mydestination": "",
            "mynetworks": MYNETWORKS,
            # The listener's address is in master.cf; this only passes Postfix's check
            # that inet_interfaces are local (lo holds only 127.0.0.1 on some kernels).
            "inet_interfaces": "loopback-only",
            "inet_protocols": "ipv4",
            "alias_maps": "",
            "alias_database": "",
            "smtpd_banner": "$myhostname ESMTP",
            "smtpd_peername_lookup": "no",
            "smtpd_tls_security_level": "may",
            "smtpd_tls_cert_file": str(root / "cert.pem"),
            "smtpd_tls_key_file": str(root / "key.pem"),
        }
        return "".join(f"{key} = {value}\n" for key, value in lines.items())

    def _master_cf(self) -> str:
        listener = f"{self.address}:{POSTFIX_PORT}"
        if self.postscreen:
            front = f"{listener} inet n - n - 1 postscreen\n{POSTSCREEN_SERVICES}"
        else:
            front = f"{listener} inet n - n - - smtpd\n"
        return front + BASE_SERVICES

    def prepare(self, resolver: str) -> None:
        """Write the configuration (`postconf -c DIR -e` for the test's settings)."""
        self.config_dir.mkdir(parents=True)
        (self.root / "queue").mkdir()
        data = self.root / "data"
        data.mkdir()
        shutil.chown(data, user="postfix")  # master's lock file and postscreen's cache
        (self.root / "cert.pem").write_bytes(self.cert_pem)
        key = self.root / "key.pem"
        key.write_bytes(self.key_pem)
        key.chmod(0o600)
        (self.root / "resolv.conf").write_text(
            f"nameserver {resolver}\noptions timeout:1 attempts:1\n"
        )
        (self.config_dir / "main.cf").write_text(self._main_cf())
        (self.config_dir / "master.cf").write_text(self._master_cf())
        if self.settings:
            pairs = [f"{key}={value}" for key, value in self.settings.items()]
            done = _run(["postconf", "-c", str(self.config_dir), "-e", *pairs], timeout=30)
            if done.returncode != 0:
                raise RuntimeError(f"postconf -e failed: {done.stderr}")

    async def start(self) -> None:
        """`postfix start` in a mount namespace whose /etc/resolv.conf is the test's."""
        script = 'mount --bind "$1" /etc/resolv.conf && exec postfix -c "$2" start'
        command = [
            "unshare", "--mount", "--propagation", "private",
            "sh", "-c", script, "sh", str(self.root / "resolv.conf"), str(self.config_dir),
        ]  # fmt: skip
        env = {**os.environ, "PATH": os.pathsep.join([os.environ.get("PATH", ""), *SBIN])}
        with trio.fail_after(START_DEADLINE):
            done = await trio.run_process(
                command, capture_stdout=True, capture_stderr=True, check=False, env=env
            )
        pid_file = self.root / "queue" / "pid" / "master.pid"
        if done.returncode != 0 or not pid_file.exists():
            raise RuntimeError(
                f"postfix start failed ({done.returncode}): {done.stderr.decode(errors='replace')}"
                f"\n--- maillog ---\n{self.log()}"
            )
        self.master_pid = int(pid_file.read_text().split()[0])

    async def stop(self) -> None:
        """`postfix stop`, then wait for the master (the process this test started) to end."""
        if self.master_pid is None:
            return
        pid, self.master_pid = self.master_pid, None
        env = {**os.environ, "PATH": os.pathsep.join([os.environ.get("PATH", ""), *SBIN])}
        await trio.run_process(
            ["postfix", "-c", str(self.config_dir), "stop"],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=env,
        )
        if not await _eventually(lambda: not _alive(pid), STOP_DEADLINE):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    async def wait_for_log(self, text: str, *, count: int = 1, deadline: float = 5.0) -> str:
        """The log once it holds `text` `count` times (postlogd writes a little after the fact).

        After `deadline` seconds, the log as it is: the test's assertions then say what is missing.
        """
        await _eventually(lambda: self.log().count(text) >= count, deadline)
        return self.log()


POLL_INTERVAL = 0.05  # seconds between looks at another process's state


async def _eventually(condition: Callable[[], bool], deadline: float) -> bool:
    """Whether `condition` holds within `deadline` seconds (another process decides it)."""
    with trio.move_on_after(deadline):
        while True:
            if condition():
                return True
            await trio.sleep(POLL_INTERVAL)
    return condition()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@contextlib.contextmanager
def instance_root() -> Iterator[Path]:
    """A fresh directory the postfix user may traverse (pytest's tmp_path is 0700)."""
    root = Path(tempfile.mkdtemp(prefix="scanner-realmta-", dir="/tmp"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)
