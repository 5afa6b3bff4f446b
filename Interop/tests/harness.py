"""Real processes for the interop tests: the Swift executables (built by Scripts/interop), the Python peer,
and helpers to wait for their output with a time limit (never a bare sleep)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PEER_DIR = ROOT / "Interop" / "python-peer"


def must_run_all() -> bool:
    """PARLEY_TEST_ALL=1 (Scripts/test, CI): a missing environment fails instead of skipping."""
    return os.environ.get("PARLEY_TEST_ALL") == "1"


def require(condition: bool, what: str) -> None:
    if condition:
        return
    if must_run_all():
        pytest.fail(f"PARLEY_TEST_ALL=1 but {what}")
    pytest.skip(what)


def swift_bin() -> Path:
    configured = os.environ.get("PARLEY_BIN")
    if configured:
        return Path(configured)
    return ROOT / ".build" / "debug"


def executable(name: str) -> Path:
    path = swift_bin() / name
    require(path.exists(), f"{path} is not built (Scripts/interop builds it)")
    return path


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    """Poll state that has no event to await, with a time limit; returns the predicate's truthy value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class Process:
    """A child process whose stdout/stderr go to files, stopped (SIGTERM, then SIGKILL) at the end."""

    def __init__(self, args: list[str], directory: Path, name: str, env: dict | None = None,
                 prefix: list | None = None):
        self.name = name
        self.stdout_path = directory / f"{name}.out"
        self.stderr_path = directory / f"{name}.err"
        self.args = [str(a) for a in (prefix or []) + args]
        self.process = subprocess.Popen(self.args, stdout=open(self.stdout_path, "w"),
                                        stderr=open(self.stderr_path, "w"), env=env, start_new_session=True)

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_for_line(self, pattern: str, timeout: float = 30.0, stream: str = "stdout") -> re.Match:
        def found():
            text = self.stdout() if stream == "stdout" else self.stderr()
            if self.process.poll() is not None and not re.search(pattern, text):
                raise AssertionError(f"{self.name} exited ({self.process.returncode}) before printing "
                                     f"{pattern!r}:\n{self.stdout()}\n{self.stderr()[-4000:]}")
            return re.search(pattern, text)

        return wait_until(found, timeout, f"{self.name} to print {pattern!r}")

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"{self.name} did not finish within {timeout} s:\n{self.stderr()[-4000:]}")

    def stop(self, sig=signal.SIGTERM, grace: float = 5.0) -> int | None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, sig)
                self.process.wait(grace)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.process.wait()
        return self.process.returncode

    def diagnostics(self) -> str:
        return f"--- {self.name} stdout\n{self.stdout()[-3000:]}\n--- {self.name} stderr\n{self.stderr()[-6000:]}"


@dataclass
class Rendezvous:
    process: Process
    url: str
    port: int
    stun: tuple[str, int] | None


def start_rendezvous(directory: Path, *extra: str, prefix: list | None = None, listen: str = "127.0.0.1",
                     name: str = "rendezvous") -> Rendezvous:
    process = Process([executable("parley-rendezvous"), "--listen", f"{listen}:0", "--log-level", "info", *extra],
                      directory, name, prefix=prefix)
    match = process.wait_for_line(r"listening on (wss?://[^ ]+?:(\d+)/)")
    stun = None
    if "--stun-listen" in extra:
        found = process.wait_for_line(r"STUN on udp ([0-9.]+):(\d+)")
        stun = (found.group(1), int(found.group(2)))
    return Rendezvous(process, match.group(1), int(match.group(2)), stun)


def python_peer(directory: Path, name: str, invite: str, *args: str, prefix: list | None = None) -> Process:
    env = dict(os.environ, PARLEY_INVITE=invite, PYTHONPATH=str(PEER_DIR))
    return Process([sys.executable, "-m", "parley_peer", "join", "--name", name, "--status",
                    str(directory / f"{name}.json"), *args], directory, name, env=env, prefix=prefix)


def new_invite(url: str, *turn: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(PEER_DIR))
    args = [sys.executable, "-m", "parley_peer", "invite", "--rendezvous", url]
    for hint in turn:
        args += ["--turn", hint]
    return subprocess.run(args, check=True, capture_output=True, text=True, env=env).stdout.strip()


def read_status(directory: Path, name: str) -> dict:
    return json.loads((directory / f"{name}.json").read_text())


def free_udp_port() -> int:
    """A UDP (and TCP) port free right now, for servers that cannot bind port 0 and report it (coturn)."""
    import socket

    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            try:
                tcp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def stun_answers(address: tuple[str, int], timeout: float = 0.2) -> bool:
    """Whether a STUN Binding request to address gets an answer (coturn being up)."""
    import socket

    import aioice.stun

    request = aioice.stun.Message(message_method=aioice.stun.Method.BINDING, message_class=aioice.stun.Class.REQUEST,
                                  transaction_id=os.urandom(12))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(bytes(request), address)
        try:
            return bool(sock.recvfrom(2048))
        except OSError:
            return False


@dataclass
class Coturn:
    process: Process
    port: int
    secret: str
    realm: str


def start_coturn(directory: Path, secret: str) -> Coturn:
    """coturn (Debian) on 127.0.0.1 with the TURN REST API secret (use-auth-secret), loopback peers allowed."""
    import shutil

    require(shutil.which("turnserver") is not None, "coturn is not installed (Scripts/bootstrap)")
    port = free_udp_port()
    realm = "parley.test"
    process = Process(["turnserver", "-n", "--no-cli", "--no-tls", "--no-dtls", "--listening-ip", "127.0.0.1",
                       "--relay-ip", "127.0.0.1", "--listening-port", str(port), "--use-auth-secret",
                       "--static-auth-secret", secret, "--realm", realm, "--allow-loopback-peers",
                       "--no-multicast-peers", "--pidfile", str(directory / "turnserver.pid"),
                       "--log-file", str(directory / "turnserver.log"), "--simple-log", "--no-stdout-log", "--verbose",
                       "--userdb", str(directory / "turndb")], directory, "coturn")
    wait_until(lambda: stun_answers(("127.0.0.1", port)) or process.process.poll() is not None, 10, "coturn")
    assert process.process.poll() is None, f"coturn exited: {(directory / 'turnserver.log').read_text()[-2000:]}"
    return Coturn(process, port, secret, realm)


class SwiftNode:
    """A real `parleyd` (the Swift node) with its own state directory, control socket and WAV output."""

    def __init__(self, directory: Path, name: str, invite: str, audio_in: str, *extra: str,
                 audio_out: str | None = None, prefix: list | None = None):
        self.name = name
        self.directory = directory
        self.socket = directory / f"{name}.sock"
        self.wav = directory / f"{name}-out.wav" if audio_out is None else None
        self.process = Process([executable("parleyd"), "--socket", self.socket, "--state-dir",
                                directory / f"{name}-state", "--name", name, "--audio-in", audio_in,
                                "--audio-out", audio_out or f"wav:{self.wav}", "--log-level", "info",
                                "--join", invite, *extra], directory, name, prefix=prefix)
        self.prefix = prefix or []

    def status(self) -> dict | None:
        """`parley status --json` (the CLI we ship), or None while the daemon is not answering yet."""
        if self.process.process.poll() is not None:
            raise AssertionError(f"{self.name} exited ({self.process.process.returncode}):\n"
                                 f"{self.process.stderr()[-4000:]}")
        result = subprocess.run([str(a) for a in self.prefix] + [str(executable("parley")), "--socket",
                                 str(self.socket), "status", "--json"], capture_output=True, text=True, timeout=10)
        return json.loads(result.stdout) if result.returncode == 0 else None

    def wait_for_peers_up(self, count: int, timeout: float = 30.0) -> dict:
        def ready():
            status = self.status()
            if status and sum(1 for p in status["peers"] if p["state"] == "up") >= count:
                return status
            return None

        return wait_until(ready, timeout, f"{self.name} to have {count} peers up", interval=0.1)

    def wait_for_security_code(self, members: int, timeout: float = 30.0) -> str:
        """The agreed code (§11.1, digits only) once this node's view holds `members` members, itself
        included; until then `status` shows "settling (…)"."""
        def agreed():
            status = self.status()
            if not status or sum(1 for p in status["peers"] if p["state"] == "up") != members - 1:
                return None
            code = status["self"]["security_code"].replace(" ", "")
            return code if code.isdigit() and len(code) == 12 else None

        return wait_until(agreed, timeout, f"{self.name} to agree on a code for {members} members", interval=0.1)

    def stop(self) -> None:
        """SIGTERM: the node leaves gracefully and finishes its WAV file."""
        code = self.process.stop(grace=15.0)
        assert self.wav is None or self.wav.exists(), f"{self.name} wrote no WAV:\n{self.process.stderr()[-3000:]}"
        return code


class ControlClient:
    """The node's control API (newline-delimited JSON on its Unix socket), spoken directly: what `parley`
    does, without a process per request, so benchmarks can timestamp events as they happen."""

    def __init__(self, path: Path):
        self.path = str(path)

    def request(self, method: str, **fields) -> dict:
        import socket

        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(self.path)
            sock.sendall((json.dumps({"version": 1, "method": method, **fields}) + "\n").encode())
            reply = sock.makefile("rb").readline()
        answer = json.loads(reply)
        if not answer.get("ok", False):
            raise AssertionError(f"control {method} failed: {answer.get('error')}")
        return answer

    def answers(self) -> bool:
        try:
            self.request("status")
            return True
        except (OSError, AssertionError, ValueError):
            return False

    def watch(self, on_event) -> threading.Thread:
        """Calls on_event(monotonic time, event dict) for every event, on a background thread."""
        import socket

        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(self.path)
        sock.sendall((json.dumps({"version": 1, "method": "watch"}) + "\n").encode())
        reader = sock.makefile("rb")

        def run():
            with sock:
                for line in reader:
                    try:
                        event = json.loads(line)
                    except ValueError:
                        continue
                    on_event(time.monotonic(), event)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread
