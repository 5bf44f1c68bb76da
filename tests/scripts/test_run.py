"""scripts/run.sh (`make run`): the worker and the web server stop together, children included.

The script runs for real; only the two Django commands are stand-ins (FAKE_MANAGE below) that record
their pids, so a test can check afterwards that every one of them is gone.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "run.sh"

# Stands in for `.venv/bin/python`. `manage.py qcluster` behaves like the real one where it matters:
# SIGINT stops it cleanly with its child, SIGTERM to the parent does nothing (the hang we saw).
# `manage.py runserver HOST:PORT` answers /login/, from a child process like the autoreloader's.
FAKE_MANAGE = """\
import os, signal, subprocess, sys, time
args = sys.argv[1:]
if args[0] == "-c":
    os.execv(sys.executable, [sys.executable, *args])
out = os.environ["FAKE_DIR"]
command = args[1]
if command == "seed_demo":
    if os.environ.get("FAKE_SERVER_DIES_AT_LOGINS") == "1":
        [leader] = [f for f in os.listdir(out) if f.startswith("leader-")]
        os.kill(int(leader[7:-4]), signal.SIGKILL)
        time.sleep(0.5)
    print("Demo logins: oscar", flush=True)
    sys.exit(0)

def record(name, pid):
    with open(os.path.join(out, f"{name}-{pid}.pid"), "w"):
        pass

if command == "qcluster":
    deaf = os.environ.get("FAKE_DEAF") == "1"
    child = subprocess.Popen([sys.executable, "-c", "import signal, time; "
                              f"signal.signal(signal.SIGINT, signal.SIG_IGN); "
                              f"{'signal.signal(signal.SIGTERM, signal.SIG_IGN); ' if deaf else ''}time.sleep(300)"])
    def stop(*_):
        child.terminate()
        child.wait()
        sys.exit(0)
    signal.signal(signal.SIGINT, signal.SIG_IGN if deaf else stop)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    record("worker", os.getpid())
    record("worker", child.pid)
    while True:
        time.sleep(0.1)

host, port = args[2].split(":")
server = (
    "import http.server as h\\n"
    "class Login(h.BaseHTTPRequestHandler):\\n"
    "    def do_GET(self):\\n"
    "        self.send_response(200); self.end_headers()\\n"
    "    def log_message(self, *a): pass\\n"
    f"h.HTTPServer(({host!r}, {port}), Login).serve_forever()\\n"
)
child = subprocess.Popen([sys.executable, "-c", server])
with open(os.path.join(out, "site-url"), "w") as f:
    f.write(os.environ.get("DEFAULT_SITE_URL", ""))
record("server", os.getpid())
record("server", child.pid)
record("leader", os.getpid())
child.wait()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:  # a zombie waiting for init to reap it is gone for our purposes
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def pids(tmp_path: Path, name: str) -> list[int]:
    return [int(p.name.split("-")[1].removesuffix(".pid")) for p in tmp_path.glob(f"{name}-*.pid")]


class Run:
    def __init__(self, tmp_path: Path, **env: str) -> None:
        fake = tmp_path / "python"
        fake.write_text(f"#!{sys.executable}\n{FAKE_MANAGE}")
        fake.chmod(0o755)
        self.dir = tmp_path
        self.port = free_port()
        self.log = tmp_path / "run.log"
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(
                ["bash", str(SCRIPT)], cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, "PY": str(fake), "PORT": str(self.port), "STOP_TIMEOUT": "1",
                     "FAKE_DIR": str(tmp_path), **env},
                start_new_session=True,  # its own process group, like `make run` in a terminal
            )
        self._wait_for(lambda: "Demo logins" in self.output, "the logins")
        self._wait_for(lambda: len(pids(tmp_path, "worker")) == 2, "the worker")

    @property
    def output(self) -> str:
        return self.log.read_text()

    def _wait_for(self, condition, what: str, seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        while not condition():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop_leftovers()
                pytest.fail(f"no {what}; run.sh said:\n{self.output}")
            time.sleep(0.05)

    def pids(self, name: str) -> list[int]:
        return pids(self.dir, name)

    def finish(self) -> int:
        try:
            return self.proc.wait(timeout=20)
        finally:
            self.stop_leftovers()

    def stop_leftovers(self) -> None:
        for pid in [*self.pids("worker"), *self.pids("server")]:
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)


@pytest.fixture
def run(tmp_path):
    runs: list[Run] = []

    def start(**env: str) -> Run:
        runs.append(Run(tmp_path, **env))
        return runs[-1]

    yield start
    for r in runs:
        r.stop_leftovers()


def test_sigterm_stops_the_worker_and_the_server_with_their_children(run):
    r = run()

    os.kill(r.proc.pid, signal.SIGTERM)

    assert r.finish() == 143
    leftovers = [pid for pid in [*r.pids("worker"), *r.pids("server")] if not gone(pid)]
    assert leftovers == []
    assert "still running" not in r.output  # the worker stopped on its SIGINT, without waiting out a timeout


def test_links_in_notifications_point_at_the_port_it_serves_on(run, tmp_path, monkeypatch):
    monkeypatch.delenv("SITE_URL", raising=False)
    r = run()
    r._wait_for(lambda: len(r.pids("server")) == 2, "the server")

    assert (tmp_path / "site-url").read_text() == f"http://127.0.0.1:{r.port}"
    os.kill(r.proc.pid, signal.SIGTERM)
    assert r.finish() == 143


def test_ctrl_c_stops_both(run):
    r = run()

    os.killpg(r.proc.pid, signal.SIGINT)  # what the terminal does: the whole foreground group

    assert r.finish() == 130
    assert [pid for pid in [*r.pids("worker"), *r.pids("server")] if not gone(pid)] == []


def test_when_the_server_exits_the_worker_is_stopped_too(run):
    r = run()
    [leader] = r.pids("leader")  # its child keeps serving unless someone stops it

    os.kill(leader, signal.SIGKILL)

    r.finish()
    assert [pid for pid in [*r.pids("worker"), *r.pids("server")] if not gone(pid)] == []


def test_a_server_that_exits_while_the_logins_print_still_takes_the_worker_down(run):
    r = run(FAKE_SERVER_DIES_AT_LOGINS="1")

    r.finish()
    assert [pid for pid in [*r.pids("worker"), *r.pids("server")] if not gone(pid)] == []


def test_a_worker_deaf_to_sigint_and_sigterm_is_killed_after_the_timeout(run):
    r = run(FAKE_DEAF="1")

    os.kill(r.proc.pid, signal.SIGTERM)

    assert r.finish() == 143
    assert [pid for pid in r.pids("worker") if not gone(pid)] == []
    assert "sending SIGKILL" in r.output


def test_without_ps_on_the_machine_the_signals_still_go_out(run, tmp_path):
    """A slim image without procps: the script must still stop both (it used to skip every signal,
    believing nothing was running, and then wait forever)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "sleep", "awk"):
        (bin_dir / tool).symlink_to(subprocess.run(["which", tool], capture_output=True, text=True,
                                                   check=True).stdout.strip())
    r = run(PATH=str(bin_dir))

    os.kill(r.proc.pid, signal.SIGTERM)

    assert r.finish() == 143
    assert [pid for pid in [*r.pids("worker"), *r.pids("server")] if not gone(pid)] == []
