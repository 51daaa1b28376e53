"""deploy/: the systemd unit, the Dockerfile, the compose file and its config.

There is no Docker engine here: what can be checked without one is checked -- the unit with
``systemd-analyze verify`` (where it exists) and by its keys, the compose file parsed, the
Dockerfile's instructions, the image's command lines against the real command line, its
HEALTHCHECK against a real daemon, and the compose config against ``accord check``.
"""
from __future__ import annotations

import configparser
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from daemon.cli import parser
from daemon.config import load
from tests.test_crash_recovery import free_port
from tests.test_lease import Proc, event_is

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "accord.service"
DOCKER_ENV = {"ACCORD_DB_PASSWORD": "s3cret-pw", "UNLEASHED_API_ID": "id",
              "UNLEASHED_API_KEY": "key", "PROSPECT_TOKEN": "token"}


# --- systemd -----------------------------------------------------------------------------------
def unit() -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str                        # systemd keys are case-sensitive
    cp.read_string(UNIT.read_text())
    return cp


def test_the_unit_has_its_settings_and_the_hardening():
    s = unit()["Service"]
    assert s["ExecStart"] == "/opt/accord/bin/accord run --config /etc/accord/config.toml"
    assert s["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert s["Restart"] == "on-failure" and s["RestartSec"]
    assert s["DynamicUser"] == "yes"
    assert s["StateDirectory"] == "accord" and s["WorkingDirectory"] == "/var/lib/accord"
    assert s["EnvironmentFile"] == "-/etc/accord/accord.env"
    expected = {
        "ProtectSystem": "strict", "ProtectHome": "yes", "NoNewPrivileges": "yes",
        "PrivateTmp": "yes", "PrivateDevices": "yes", "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes", "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes", "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "RestrictNamespaces": "yes", "LockPersonality": "yes", "MemoryDenyWriteExecute": "yes",
        "CapabilityBoundingSet": "", "UMask": "0077", "SystemCallArchitectures": "native",
    }
    assert {k: s.get(k) for k in expected} == expected
    filters = [line.split("=", 1)[1] for line in UNIT.read_text().splitlines()
               if line.startswith("SystemCallFilter=")]
    assert "@system-service" in filters
    # the unit's command is one the daemon takes
    args = parser().parse_args(shlex.split(s["ExecStart"])[1:])
    assert args.command == "run" and args.config == "/etc/accord/config.toml"
    assert unit()["Install"]["WantedBy"] == "multi-user.target"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed here")
def test_systemd_analyze_verify_finds_nothing_to_say(tmp_path):
    # verify wants ExecStart to exist: point it at this environment's accord (the rest as is)
    accord = shutil.which("accord") or sys.executable
    copy = tmp_path / "accord.service"
    copy.write_text(UNIT.read_text().replace("/opt/accord/bin/accord", accord))
    out = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True,
                         text=True, timeout=60)
    ours = [line for line in (out.stdout + out.stderr).splitlines() if "accord" in line]
    assert out.returncode == 0 and not ours, out.stdout + out.stderr


# --- Dockerfile ----------------------------------------------------------------------------------
def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, pending = [], ""
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        whole = (pending + line).strip()
        pending = ""
        word, _, rest = whole.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def test_the_dockerfile_has_the_instructions_an_image_needs():
    ins = instructions()
    assert ins[0] == ("ARG", "BASE_IMAGE=python:3.12-slim")
    by = {}
    for word, rest in ins:
        by.setdefault(word, []).append(rest)
    assert all(f.startswith("${BASE_IMAGE}") for f in by["FROM"])
    assert any("python3 -m venv /opt/accord" in r for r in by["RUN"])
    assert any("pip install ." in r for r in by["RUN"])
    assert any("useradd" in r for r in by["RUN"])
    assert by["USER"][-1] not in ("root", "0")
    for _, rest in [i for i in ins if i[0] == "COPY" and "--from" not in i[1]]:
        for src in rest.split()[:-1]:
            assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
    health = by["HEALTHCHECK"][-1]
    # the check follows the config's [web] port instead of a port written in the image
    assert json.loads(health.split(" CMD ", 1)[1]) == ["accord", "health"]
    assert parser().parse_args(["health"]).command == "health"
    assert by["STOPSIGNAL"] == ["SIGTERM"]
    entry, cmd = json.loads(by["ENTRYPOINT"][-1]), json.loads(by["CMD"][-1])
    assert entry == ["accord"]
    assert cmd == ["run", "--config", "/etc/accord/config.toml"]
    args = parser().parse_args(cmd)
    assert args.command == "run"


def healthcheck_command() -> list[str]:
    """The image's HEALTHCHECK as it runs here: ``accord`` is this checkout's CLI; the
    config comes from $ACCORD_CONFIG, as in the image."""
    health = dict(instructions())["HEALTHCHECK"]
    exec_form = json.loads(health.split(" CMD ", 1)[1])
    assert exec_form[0] == "accord"
    return [sys.executable, "-m", "daemon.cli", *exec_form[1:]]


def test_the_healthcheck_passes_on_a_running_daemon_and_fails_without_one(tmp_path):
    web, ul, crm = free_port(), free_port(), free_port()
    cfg = tmp_path / "config.toml"
    cfg.write_text(f"""
[daemon]
database = "sqlite:///{tmp_path}/state.db"
log_format = "json"
[web]
port = {web}
[systems.unleashed]
type = "unleashed"
api_id = "sandbox"
api_key = "sandbox-key"
sandbox = {{ port = {ul}, records = 3 }}
[systems.prospect]
type = "prospect_crm"
token = "sandbox-token"
sandbox = {{ port = {crm}, records = 1 }}
[integrations.ul]
left = "unleashed"
right = "prospect"
preset = "unleashed_crm"
schedule = {{ every = "1h", jitter = "0s", run_at_start = false }}
""")
    env = {**os.environ, "ACCORD_CONFIG": str(cfg)}
    assert subprocess.run(healthcheck_command(), capture_output=True, cwd=ROOT, env=env,
                          timeout=30).returncode == 1
    daemon = Proc("run", "--config", str(cfg), cwd=tmp_path)
    try:
        daemon.wait_for(event_is("service.started"), 60)
        out = subprocess.run(healthcheck_command(), capture_output=True, text=True, cwd=ROOT,
                             env=env, timeout=30)
        assert out.returncode == 0, out.stderr
        assert f"127.0.0.1:{web}/healthz: alive" in out.stdout
        # an edit that breaks the file, not reloaded: the daemon runs what it loaded, and
        # the healthcheck (which reads only [web]) still finds it alive
        cfg.write_text(cfg.read_text() + '[systems.broken]\ntype = "no such connector"\n')
        out = subprocess.run(healthcheck_command(), capture_output=True, text=True, cwd=ROOT,
                             env=env, timeout=30)
        assert out.returncode == 0, out.stderr
    finally:
        daemon.stop()
    assert daemon.p.returncode == 0


# --- compose ---------------------------------------------------------------------------------------
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def test_compose_has_the_daemon_and_postgresql_with_healthchecks(monkeypatch):
    doc = compose()
    db, accord = doc["services"]["db"], doc["services"]["accord"]
    assert db["image"].startswith("postgres:16")
    assert db["healthcheck"]["test"] and "pg_isready" in " ".join(db["healthcheck"]["test"])
    assert any(v.split(":")[0] in doc["volumes"] for v in db["volumes"])
    assert accord["depends_on"]["db"]["condition"] == "service_healthy"
    assert accord["healthcheck"]["test"] == ["CMD", "accord", "health"]
    build = accord["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    mounts = {v.split(":")[1]: v.split(":")[0] for v in accord["volumes"]}
    assert (DEPLOY / mounts["/etc/accord/config.toml"]).resolve() == \
        DEPLOY / "config.docker.toml"
    # the config's database is the db service, with its user and database
    for k, v in DOCKER_ENV.items():
        monkeypatch.setenv(k, v)
    cfg = load(DEPLOY / "config.docker.toml")
    assert cfg.daemon.database == "postgresql://{u}:{p}@db:5432/{d}".format(
        u=db["environment"]["POSTGRES_USER"], p=os.environ["ACCORD_DB_PASSWORD"],
        d=db["environment"]["POSTGRES_DB"])
    assert cfg.daemon.log_format == "json"
    # every ${VAR} the config needs is handed to the container
    needed = {"ACCORD_DB_PASSWORD", "UNLEASHED_API_ID", "UNLEASHED_API_KEY", "PROSPECT_TOKEN"}
    assert needed <= set(accord["environment"])


@pytest.mark.skipif(shutil.which("podman-compose") is None and shutil.which("docker-compose")
                    is None, reason="neither podman-compose nor docker-compose is installed")
def test_compose_config_is_accepted_by_a_compose_tool():
    tool = shutil.which("podman-compose") or shutil.which("docker-compose")
    out = subprocess.run([tool, "-f", str(DEPLOY / "compose.yaml"), "config"], cwd=DEPLOY,
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, **DOCKER_ENV})
    assert out.returncode == 0, out.stdout + out.stderr


# --- the entry point -------------------------------------------------------------------------------
def accord(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "daemon.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_the_entry_point_answers_help():
    out = accord("--help")
    assert out.returncode == 0 and "run" in out.stdout


def test_check_on_the_compose_config_without_its_database_fails_in_one_line():
    out = accord("check", "--config", str(DEPLOY / "config.docker.toml"), env=DOCKER_ENV)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    err = out.stderr.strip().splitlines()
    assert len(err) == 1 and "state database postgresql://accord:***@db:5432/accord" in err[0]
    assert DOCKER_ENV["ACCORD_DB_PASSWORD"] not in out.stdout + out.stderr


def test_check_on_the_compose_config_without_its_secrets_names_the_variable():
    env = {k: v for k, v in os.environ.items() if k not in DOCKER_ENV}
    out = subprocess.run([sys.executable, "-m", "daemon.cli", "check", "--config",
                          str(DEPLOY / "config.docker.toml")], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, env=env)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "environment variable ACCORD_DB_PASSWORD is not set" in out.stderr


# --- the image, built and run with podman (CONTAINERS.md) ------------------------------------------
BASE = "localhost/debian-python:bookworm"
IMAGE = "localhost/accord:test"


def _podman_skip() -> str | None:
    if shutil.which("podman") is None or shutil.which("runc") is None:
        return "podman or runc is not installed (apt-get install podman buildah debootstrap runc)"
    if os.environ.get("ACCORD_TEST_PODMAN") != "1":
        return "set ACCORD_TEST_PODMAN=1 to build and run the image with podman (1-3 min)"
    return None


def _mirror() -> str:
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    for line in sources.read_text().splitlines() if sources.exists() else []:
        if line.startswith("URIs:"):
            return line.split()[1]
    return "http://deb.debian.org/debian"


@pytest.fixture
def podman(tmp_path):
    """``podman(*args)`` with runc and this machine's limits; the base image made if missing."""
    import resource
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[1], 32768)
    conf = tmp_path / "containers.conf"
    conf.write_text(f'[containers]\ndefault_ulimits = ["nofile={nofile}:{nofile}", '
                    f'"nproc={nproc}:{nproc}"]\n[engine]\nruntime = "runc"\n')
    env = {**os.environ, "CONTAINERS_CONF": str(conf)}

    def run(*args: str, check: bool = True, timeout: float = 300, **kw):
        out = subprocess.run(["podman", *args], capture_output=True, text=True, env=env,
                             timeout=timeout, **kw)
        if check:
            assert out.returncode == 0, f"podman {' '.join(args)}:\n{out.stdout[-3000:]}" \
                                        f"\n{out.stderr[-3000:]}"
        return out
    run.env = env
    if run("image", "exists", BASE, check=False).returncode != 0:
        if shutil.which("debootstrap") is None or os.geteuid() != 0:
            pytest.skip(f"no {BASE} image, and making it needs debootstrap and root")
        rootfs = tmp_path / "rootfs"
        subprocess.run(["debootstrap", "--variant=minbase",
                        "--include=python3,python3-venv,python3-pip,ca-certificates",
                        "bookworm", str(rootfs), _mirror()], check=True, capture_output=True,
                       timeout=600)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        run("import", "-", BASE, stdin=tar.stdout)
        assert tar.wait() == 0
    return run


@pytest.mark.slow
@pytest.mark.skipif(_podman_skip() is not None, reason=_podman_skip() or "")
def test_the_image_builds_runs_answers_its_healthcheck_and_stops_on_sigterm(tmp_path, podman):
    ctx = tmp_path / "context"                  # only what the Dockerfile copies
    for name in ("pyproject.toml", "README.md", "deploy/Dockerfile"):
        (ctx / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, ctx / name)
    for name in ("daemon", "connectors"):
        shutil.copytree(ROOT / name, ctx / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    podman("build", "--format", "docker", "--pull=never", "--build-arg", f"BASE_IMAGE={BASE}",
           "-v", "/etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro",
           "-f", "deploy/Dockerfile", "-t", IMAGE, ".", cwd=ctx, timeout=600)
    meta = json.loads(podman("image", "inspect", IMAGE).stdout)[0]
    assert meta["Config"]["User"] == "accord" and meta["Config"]["Entrypoint"] == ["accord"]
    health = meta.get("Healthcheck") or meta["Config"].get("Healthcheck")   # podman | docker
    assert health["Test"][-2:] == ["accord", "health"]

    assert "run" in podman("run", "--rm", IMAGE, "--help").stdout
    out = podman("run", "--rm", *[a for k, v in DOCKER_ENV.items() for a in ("-e", f"{k}={v}")],
                 "-v", f"{DEPLOY / 'config.docker.toml'}:/etc/accord/config.toml:ro",
                 IMAGE, "check", check=False)
    assert out.returncode == 2 and "state database" in out.stderr, out.stderr

    cfg = tmp_path / "config.toml"
    cfg.write_text("""
[daemon]
log_format = "json"
[web]
host = "0.0.0.0"
[systems.unleashed]
type = "unleashed"
api_id = "sandbox"
api_key = "sandbox-key"
sandbox = { port = 8701, records = 5 }
[systems.prospect]
type = "prospect_crm"
token = "sandbox-token"
sandbox = { port = 8702, records = 2 }
[integrations.ul]
left = "unleashed"
right = "prospect"
preset = "unleashed_crm"
schedule = { every = "1h", jitter = "0s" }
""")
    cfg.chmod(0o644)
    name, port = f"accord-test-{os.getpid()}", free_port()
    podman("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8080",
           "-v", f"{cfg}:/etc/accord/config.toml:ro", IMAGE)
    logs = subprocess.Popen(["podman", "logs", "-f", name], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=podman.env, text=True)
    try:
        deadline = time.monotonic() + 60
        ended = None
        for line in logs.stdout:                # bounded: the run ends, or the time is up
            if '"run.end"' in line:
                ended = json.loads(line)
                break
            assert time.monotonic() < deadline, "no run.end within 60 s"
        assert ended and ended["status"] == "ok", ended
        assert podman("exec", name, "id", "-u").stdout.strip() != "0"
        assert podman("healthcheck", "run", name, check=False).returncode == 0
        import urllib.request
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as r:
            assert r.status == 200
        podman("stop", "-t", "30", name)
        state = json.loads(podman("inspect", name).stdout)[0]["State"]
        assert state["ExitCode"] == 0           # SIGTERM: a graceful stop, not a kill
        assert '"service.stopped"' in podman("logs", name).stdout
    finally:
        logs.kill()
        logs.wait()
        podman("rm", "-f", name, check=False)


# --- project hygiene -------------------------------------------------------------------------------
async def test_the_sqlite_state_file_is_created_0600(tmp_path):
    from daemon import cli
    from tests.test_cli import write_config
    path = write_config(tmp_path)               # sandboxes of its own, state in tmp_path
    assert await cli.amain(["sync", "ul", "--config", path]) == 0
    made = [p for p in tmp_path.iterdir() if p.name.startswith("state.db")]
    assert any(p.name == "state.db" for p in made)
    for p in made:                              # state.db and its -wal / -shm
        assert p.stat().st_mode & 0o777 == 0o600, p.name


def test_the_console_script_creates_files_for_its_own_user_only(tmp_path):
    """``main()`` sets umask 077 (as the systemd unit does): the SQL connector's id file and
    the demo's sandbox files are private too."""
    script = ("import sys; from daemon import cli; code = cli.main(['presets']); "
              "open(sys.argv[1], 'w').close(); sys.exit(code)")
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "made")], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "made").stat().st_mode & 0o777 == 0o600


def test_state_files_are_ignored_by_git_and_docker():
    import fnmatch
    names = ["accord-state.db", "demo-state.db", "accord-sage50-ids.sqlite",
             "accord-state.db-wal", "artifacts/bench.json", ".ci/venv/bin/python"]
    out = subprocess.run(["git", "check-ignore", *names], cwd=ROOT, capture_output=True,
                         text=True, timeout=30)
    assert sorted(out.stdout.split()) == sorted(names)
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]

    def ignored(path: str) -> bool:
        return any(fnmatch.fnmatch(path, p) or path.startswith(p.rstrip("/") + "/")
                   or fnmatch.fnmatch(path, p.replace("**/", "")) for p in patterns)
    for secret in ("deploy/.env", ".git/config", "accord-state.db", "x.sqlite"):
        assert ignored(secret), secret
    for needed in ("pyproject.toml", "README.md", "daemon/cli.py", "connectors/base.py"):
        assert not ignored(needed), needed


def test_the_project_links_to_nothing_outside_it():
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                         timeout=30)
    offenders = []
    for name in out.stdout.split() + ["docs/architecture.md"]:
        if name == "tests/test_deploy.py" or not name.endswith(
                (".md", ".py", ".toml", ".txt", ".yaml", ".service")):
            continue
        text = (ROOT / name).read_text(encoding="utf-8", errors="replace")
        if "../shared" in text or "/work/shared" in text:
            offenders.append(name)
    assert offenders == []
    readme = (ROOT / "README.md").read_text()
    assert "(docs/architecture.md)" in readme
    doc = (ROOT / "docs" / "architecture.md").read_text()
    for words in ("stage", "match", "plan", "apply", "commit", "signpost", "quarantine",
                  "gate", "Converge", "No duplicates", "No lost update", "No echo",
                  "Rules hold", "Idempotent", "Bounded"):
        assert words.lower() in doc.lower(), words
