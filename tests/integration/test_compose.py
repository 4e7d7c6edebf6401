"""docker-compose.yml: docker-compose accepts it, and the services wait for what they need.

Debian's ``docker-compose`` checks the file without a Docker engine. When it is missing
the test fails, saying how to install it; it never skips.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"

SERVICES = {"redis", "postgres", "migrate", "worker", "beat", "api", "jamf-simulator"}
READY = {
    "redis": {"condition": "service_healthy"},
    "postgres": {"condition": "service_healthy"},
    "migrate": {"condition": "service_completed_successfully"},
}


def docker_compose(*args: str) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("docker-compose")
    if executable is None:
        pytest.fail(
            "docker-compose is not installed, so docker-compose.yml cannot be checked.\n"
            "Run `make system` (it installs Debian's docker-compose package, which needs "
            "no Docker engine to check the file).",
            pytrace=False,
        )
    return subprocess.run(
        [executable, "-f", str(COMPOSE_FILE), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return loaded


def test_docker_compose_accepts_the_file() -> None:
    result = docker_compose("config", "-q")
    assert result.returncode == 0, result.stderr


def test_docker_compose_sees_every_service() -> None:
    result = docker_compose("config", "--services")
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == SERVICES


def test_docker_compose_keeps_the_start_conditions() -> None:
    """The long ``depends_on`` form is read, not silently dropped, by this docker-compose."""
    result = docker_compose("config")
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)["services"]
    assert resolved["worker"]["depends_on"] == READY
    assert resolved["beat"]["depends_on"] == READY


@pytest.mark.parametrize("service", ["worker", "beat"])
def test_worker_and_beat_start_after_healthy_services_and_a_finished_migration(
    compose: dict[str, Any], service: str
) -> None:
    assert compose["services"][service]["depends_on"] == READY


def test_the_migration_waits_for_a_healthy_postgres(compose: dict[str, Any]) -> None:
    migrate = compose["services"]["migrate"]
    assert migrate["command"] == "db upgrade"
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert migrate.get("restart") == "no"  # it runs once; restarting would loop forever


def test_every_service_with_a_command_runs_the_devtrust_image(compose: dict[str, Any]) -> None:
    shared = compose["x-devtrust"]
    commands = {
        name: service["command"]
        for name, service in compose["services"].items()
        if "command" in service
    }
    assert commands == {
        "migrate": "db upgrade",
        "worker": "worker",
        "beat": "beat",
        "api": "serve --host 0.0.0.0 --port 8800",
        "jamf-simulator": "jamf simulator --host 0.0.0.0 --port 9000 --devices 1000",
    }
    for name in commands:
        service = compose["services"][name]
        assert service["image"] == shared["image"] == "devtrust:latest", name
        assert service["environment"] == shared["environment"], name


def test_the_programs_reach_the_services_by_their_compose_names(compose: dict[str, Any]) -> None:
    environment = compose["x-devtrust"]["environment"]
    assert environment["DEVTRUST_DATABASE_URL"] == (
        "postgresql+psycopg://devtrust:devtrust@postgres:5432/devtrust"
    )
    assert environment["DEVTRUST_BROKER_URL"] == "redis://redis:6379/0"
    assert environment["DEVTRUST_RESULT_BACKEND"] == "redis://redis:6379/1"
    assert environment["DEVTRUST_JAMF_URL"] == "http://jamf-simulator:9000"
    postgres = compose["services"]["postgres"]["environment"]
    assert postgres == {
        "POSTGRES_USER": "devtrust",
        "POSTGRES_PASSWORD": "devtrust",
        "POSTGRES_DB": "devtrust",
    }


@pytest.mark.parametrize("service", ["redis", "postgres", "api", "jamf-simulator"])
def test_long_running_services_have_a_healthcheck(compose: dict[str, Any], service: str) -> None:
    assert compose["services"][service]["healthcheck"]["test"]


# -- deploy/docker-compose.yml: production --------------------------------------------

DEPLOY_FILE = ROOT / "deploy" / "docker-compose.yml"
DEPLOY_SERVICES = {"redis", "postgres", "migrate", "worker", "beat", "api"}
DEPLOY_SECRETS = {
    "database_url", "broker_url", "result_backend", "jamf_client_secret", "device_ca_key",
    "device_ca_cert", "postgres_password", "redis_conf", "console_session_key",
}  # fmt: skip


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The production file as docker-compose resolves it, with the two settings it
    demands and a secrets directory of its own."""
    secrets = tmp_path_factory.mktemp("secrets")
    for name in DEPLOY_SECRETS:
        (secrets / name).write_text("x")
    executable = shutil.which("docker-compose")
    assert executable is not None, "docker-compose is not installed: run `make system`"
    env = {
        "PATH": "/usr/bin:/bin",
        "DEVTRUST_JAMF_URL": "https://jamf.example",
        "DEVTRUST_JAMF_CLIENT_ID": "devtrust",
        "DEVTRUST_SECRETS": str(secrets),
    }
    result = subprocess.run(
        [executable, "-f", str(DEPLOY_FILE), "config"],
        capture_output=True, text=True, timeout=60, check=False, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    resolved: dict[str, Any] = yaml.safe_load(result.stdout)
    return resolved


def test_the_production_file_needs_the_jamf_settings_and_has_no_simulator() -> None:
    executable = shutil.which("docker-compose")
    assert executable is not None
    result = subprocess.run(
        [executable, "-f", str(DEPLOY_FILE), "config", "-q"],
        capture_output=True, text=True, timeout=60, check=False, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode != 0 and "set DEVTRUST_JAMF_URL" in result.stderr


def test_production_services_are_the_programs_and_their_stores(deployed: dict[str, Any]) -> None:
    assert set(deployed["services"]) == DEPLOY_SERVICES
    assert set(deployed["secrets"]) == DEPLOY_SECRETS


def test_no_secret_is_in_the_production_file_or_environment(deployed: dict[str, Any]) -> None:
    for name, service in deployed["services"].items():
        for key, value in (service.get("environment") or {}).items():
            secretive = any(word in key for word in ("PASSWORD", "SECRET", "_URL", "KEY", "TOKEN"))
            if secretive and key not in ("DEVTRUST_JAMF_URL",):
                assert key.endswith("_FILE"), f"{name}: {key} is set inline"
                assert value.startswith("/run/secrets/"), f"{name}: {key}={value}"
                assert Path(value).name in {s["source"] for s in service["secrets"]}, key
    text = DEPLOY_FILE.read_text()
    assert "devtrust-secret" not in text and "redis://" not in text and "@postgres" not in text


def test_production_services_are_healthchecked_pinned_and_limited(
    deployed: dict[str, Any],
) -> None:
    for name, service in deployed["services"].items():
        image = service["image"]
        assert re.search(r":\d+\.\d+", image) and not image.endswith(":latest"), image
        logging = service["logging"]
        assert logging["options"]["max-size"] and logging["options"]["max-file"], name
        assert service["deploy"]["resources"]["limits"]["memory"], name
        if name != "migrate":  # a one-shot job, not a service to watch
            assert service["healthcheck"]["test"], name
    worker = " ".join(deployed["services"]["worker"]["healthcheck"]["test"])
    assert "inspect ping" in worker and "celery@$$HOSTNAME" in worker
    api = deployed["services"]["api"]
    assert api["deploy"]["replicas"] == 2 and "ports" not in api
    # Every replica reads the one device CA from the same secret files.
    env = api["environment"]
    assert env["DEVTRUST_DEVICE_CA_KEY_FILE"] == "/run/secrets/device_ca_key"
    assert env["DEVTRUST_DEVICE_CA_CERT_FILE"] == "/run/secrets/device_ca_cert"
    assert env["DEVTRUST_CONSOLE_SESSION_KEY_FILE"] == "/run/secrets/console_session_key"
