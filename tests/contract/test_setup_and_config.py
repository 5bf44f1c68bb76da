"""CONTRACT §1: configuration comes from environment variables (django-environ), with the documented defaults."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROBE = (
    "import json; from django.conf import settings as s; "
    "d = s.DATABASES['default']; "
    "print(json.dumps({'engine': d['ENGINE'], 'name': str(d['NAME']), 'host': d.get('HOST', ''), "
    "'tz': s.TIME_ZONE, 'email_backend': s.EMAIL_BACKEND, 'email_host': getattr(s, 'EMAIL_HOST', ''), "
    "'q': s.Q_CLUSTER, 'debug': s.DEBUG, 'hosts': s.ALLOWED_HOSTS, 'key': s.SECRET_KEY}))"
)
CONFIG_VARS = ("DATABASE_URL", "REDIS_URL", "EMAIL_URL", "TIME_ZONE", "SECRET_KEY", "DEBUG", "ALLOWED_HOSTS")


def settings_with(tmp_path: Path, **env: str) -> dict:
    """Start a fresh `manage.py shell` with exactly these variables, from a directory without `.env`."""
    clean = {k: v for k, v in os.environ.items() if k not in CONFIG_VARS and not k.startswith("PYTEST")}
    clean.update({"SECRET_KEY": "contract-test-key", **env})
    proc = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "shell", "-c", PROBE],
        env=clean, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def defaults(tmp_path_factory):
    return settings_with(tmp_path_factory.mktemp("defaults"))


def test_it_defaults_to_a_sqlite_file_the_database_queue_and_utc(defaults):
    if (ROOT / ".env").exists():
        pytest.skip("a local .env overrides the defaults")
    assert defaults["engine"] == "django.db.backends.sqlite3"
    assert defaults["name"].endswith("db.sqlite3")
    assert defaults["tz"] == "UTC"
    assert "redis" not in defaults["q"] and defaults["q"]["orm"] == "default"


def test_it_reads_database_url(tmp_path):
    got = settings_with(tmp_path, DATABASE_URL="postgres://someone@db.example:5432/leads")
    assert got["engine"] == "django.db.backends.postgresql"
    assert (got["host"], got["name"]) == ("db.example", "leads")


def test_redis_url_switches_the_task_broker_to_redis(tmp_path):
    got = settings_with(tmp_path, REDIS_URL="redis://cache.example:6379/0")
    assert got["q"]["redis"] == "redis://cache.example:6379/0"
    assert "orm" not in got["q"]


def test_it_reads_email_url(tmp_path):
    got = settings_with(tmp_path, EMAIL_URL="smtp://mailer.example:2525")
    assert got["email_backend"] == "django.core.mail.backends.smtp.EmailBackend"
    assert got["email_host"] == "mailer.example"


def test_it_reads_time_zone(tmp_path):
    assert settings_with(tmp_path, TIME_ZONE="Europe/Berlin")["tz"] == "Europe/Berlin"


def test_it_reads_secret_key_debug_and_allowed_hosts(tmp_path):
    got = settings_with(tmp_path, SECRET_KEY="s3cret", DEBUG="true", ALLOWED_HOSTS="leads.example,127.0.0.1")
    assert (got["key"], got["debug"], got["hosts"]) == ("s3cret", True, ["leads.example", "127.0.0.1"])


def test_a_missing_secret_key_stops_start_up_naming_it(tmp_path):
    clean = {k: v for k, v in os.environ.items() if k not in CONFIG_VARS and not k.startswith("PYTEST")}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "shell", "-c", "from django.conf import settings; settings.DEBUG"],
        env=clean, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )
    if (ROOT / ".env").exists():
        pytest.skip("a local .env may set SECRET_KEY")
    assert proc.returncode != 0 and "SECRET_KEY" in proc.stderr


def test_a_dotenv_file_is_honoured(tmp_path):
    # settings.py reads BASE_DIR/.env; a copy of it in a scratch project reads that project's .env,
    # so the real repository never gets a .env that would change other runs.
    package = tmp_path / "envprobe"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "settings.py").write_text((ROOT / "leadops/settings.py").read_text())
    (tmp_path / ".env").write_text("TIME_ZONE=Asia/Tokyo\nREDIS_URL=redis://from-dotenv:6379/1\nSECRET_KEY=k\n")
    clean = {k: v for k, v in os.environ.items() if k not in CONFIG_VARS and not k.startswith("PYTEST")}
    clean.update({"PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])})
    code = "import envprobe.settings as s; print(s.TIME_ZONE, s.Q_CLUSTER.get('redis'))"
    proc = subprocess.run([sys.executable, "-c", code], env=clean, cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, check=False)

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["Asia/Tokyo", "redis://from-dotenv:6379/1"]


def make_dry_run(target: str) -> str:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    proc = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_make_run_migrates_loads_the_demo_starts_server_and_worker_and_prints_logins():
    # The servers are started (and stopped) by scripts/run.sh; tests/scripts/test_run.py runs it.
    plan = make_dry_run("run") + (ROOT / "scripts" / "run.sh").read_text()
    steps = ["manage.py migrate", "manage.py seed_demo", "PORT=8000", "scripts/run.sh", "manage.py qcluster",
             'runserver "127.0.0.1:$PORT"', "seed_demo --print-logins"]
    positions = [plan.find(step) for step in steps]
    assert all(p >= 0 for p in positions), dict(zip(steps, positions, strict=True))
    assert positions[:2] == sorted(positions[:2])


def test_make_test_runs_the_whole_suite_and_make_bench_the_benchmarks():
    assert "-m pytest" in make_dry_run("test")
    assert "pytest tests/benchmarks -m bench" in make_dry_run("bench")


def test_make_install_creates_the_venv_and_installs_python_and_front_end_dependencies():
    plan = make_dry_run("install")
    if "pip install" not in plan:
        return  # already installed: nothing to do, which is the idempotence the contract asks for
    assert "-m venv .venv" in plan and "-r requirements.lock" in plan
    assert "npm ci" in plan or (ROOT / "static/vendor/.installed").exists()
