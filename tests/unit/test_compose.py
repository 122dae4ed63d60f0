"""docker-compose.yml and Dockerfile, validated by Debian's `docker-compose config` (no engine)."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"

#: What an operator must set; `docker compose` refuses to start without each.
REQUIRED = {
    "HUB_PSEUDONYM_SECRET": "p" * 40,
    "HUB_MASTER_KEY": "bWFzdGVyLWtleS1mb3ItdGhlLWNvbXBvc2UtdGVzdHM=",
    "POSTGRES_PASSWORD": "compose-test-password",
    "HUB_NOTIFIER_SESSION_SECRET": "s" * 40,
    "HUB_NOTIFIER_PUBLIC_URL": "https://hub.example.nl",
    "GRAFANA_ADMIN_PASSWORD": "grafana-test-password",
}
#: Jobs that run once and exit; every other service runs for good.
ONE_SHOT = {"topics", "migrate", "teams", "hub"}
LONG_RUNNING = {
    "kafka",
    "postgres",
    "ingest",
    "matcher",
    "notifier",
    "privacy-purge",
    "prometheus",
    "grafana",
}
HTTP_PORTS = {"ingest": 8001, "matcher": 8002, "notifier": 8003}


def compose(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail("docker-compose is not installed: `make debs` installs Debian's package")
    # A clean environment and an empty env file instead of a developer's .env: only what the
    # test gives counts.
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(ROOT), **env}
    with tempfile.NamedTemporaryFile(suffix=".env") as empty:
        return subprocess.run(
            [binary, "--env-file", empty.name, "-f", str(COMPOSE_FILE), "config"],
            cwd=ROOT,
            env=clean,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    result = compose(REQUIRED)
    assert result.returncode == 0, result.stderr
    parsed: dict[str, Any] = yaml.safe_load(result.stdout)
    return parsed


@pytest.fixture(scope="module")
def services(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = config["services"]
    return found


def mounts(service: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """Container path -> (host path or volume name, read-only)."""
    found = {}
    for volume in service.get("volumes", []):
        source, target, *mode = volume.split(":")
        found[target] = (source, mode == ["ro"])
    return found


def test_the_file_is_valid_with_the_required_variables(services: dict[str, Any]) -> None:
    assert set(services) == ONE_SHOT | LONG_RUNNING


def test_required_variables_are_the_ones_the_file_declares() -> None:
    text = COMPOSE_FILE.read_text()
    assert set(re.findall(r"\$\{(\w+):\?", text)) == set(REQUIRED)
    header = text[: text.index("\nx-hub-env")]
    for name in REQUIRED:
        assert re.search(rf"^#\s+{name}\s", header, re.MULTILINE), f"{name} not in the header"


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_a_missing_required_variable_is_refused_by_name(missing: str) -> None:
    result = compose({k: v for k, v in REQUIRED.items() if k != missing})
    assert result.returncode != 0
    assert f"set {missing}" in result.stderr, result.stderr


def test_every_long_running_service_has_a_health_check_and_restarts(
    services: dict[str, Any],
) -> None:
    for name in LONG_RUNNING:
        service = services[name]
        assert service["restart"] == "unless-stopped", name
        check = service.get("healthcheck", {})
        assert not check.get("disable"), name
        assert check.get("test", [None])[0] in ("CMD", "CMD-SHELL"), name
    for name in ONE_SHOT:
        assert services[name]["restart"] == "no", name
        assert "healthcheck" not in services[name], name


def test_services_are_ready_only_when_their_readyz_says_so(services: dict[str, Any]) -> None:
    # The slim image has no curl: the checks run python, and their code must at least compile.
    for name, port in HTTP_PORTS.items():
        test = services[name]["healthcheck"]["test"]
        assert test[:3] == ["CMD", "python", "-c"], name
        assert f"http://127.0.0.1:{port}/readyz" in test[3], name
    for name, service in services.items():
        test = service.get("healthcheck", {}).get("test", [])
        if test[:3] == ["CMD", "python", "-c"]:
            compile(test[3], f"{name} healthcheck", "exec")


def test_every_dependency_waits_for_a_condition(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for dependency, how in service.get("depends_on", {}).items():
            expected = (
                "service_completed_successfully" if dependency in ONE_SHOT else "service_healthy"
            )
            assert how == {"condition": expected}, (name, dependency)


def test_services_wait_for_the_topics_and_the_migration(services: dict[str, Any]) -> None:
    assert services["topics"]["command"] == ["topics", "create"]
    assert services["migrate"]["command"] == ["db", "upgrade"]
    database_users = {"ingest", "notifier", "privacy-purge", "teams"}
    for name in ("ingest", "matcher", "notifier", "privacy-purge"):
        needs = services[name]["depends_on"]
        assert "topics" in needs, name
        assert "kafka" in needs, name
    for name in database_users:
        assert "migrate" in services[name]["depends_on"], name
    assert "migrate" in services["teams"]["depends_on"]
    assert "teams" in services["notifier"]["depends_on"]
    # The topics job and the services must agree on the partition count.
    partitions = {
        s["environment"]["HUB_TOPIC_PARTITIONS"] for s in services.values() if "build" in s
    }
    assert partitions == {"4"}


def test_the_matcher_scales_to_several_replicas(services: dict[str, Any]) -> None:
    matcher = services["matcher"]
    assert "container_name" not in matcher
    assert "hostname" not in matcher
    assert "ports" not in matcher
    assert matcher["command"] == ["run", "matcher"]


def test_kafka_is_the_official_image_in_kraft_mode_with_two_client_listeners(
    services: dict[str, Any],
) -> None:
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["CLUSTER_ID"]
    everything = yaml.safe_dump(services).lower()
    assert "zookeeper" not in everything
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    listeners = dict(item.split("://") for item in env["KAFKA_LISTENERS"].split(","))
    advertised = dict(item.split("://") for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    clients = set(listeners) - {controller}
    assert len(clients) == 2
    assert set(advertised) == clients
    internal = advertised[env["KAFKA_INTER_BROKER_LISTENER_NAME"]]
    (external,) = (advertised[name] for name in clients if advertised[name] != internal)
    # The services use the internal listener; the host reaches the external one.
    assert {s["environment"]["HUB_KAFKA_BOOTSTRAP"] for s in services.values() if "build" in s} == {
        internal
    }
    host, port = external.rsplit(":", 1)
    assert host == "localhost"
    # Plaintext without authentication (intake records carry identities): loopback only.
    assert kafka["ports"] == [f"127.0.0.1:{port}:{port}/tcp"]
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def repo_path(service: dict[str, Any], container_path: str) -> Path:
    """The file in the repository that a container path of a read-only bind mount shows."""
    for target, (source, read_only) in mounts(service).items():
        if container_path == target or container_path.startswith(target + "/"):
            assert read_only, target
            return Path(source) / container_path[len(target) :].lstrip("/")
    raise AssertionError(f"{container_path} is on no mount")


def test_prometheus_reads_its_configuration_and_rules_from_the_repository(
    services: dict[str, Any],
) -> None:
    prometheus = services["prometheus"]
    assert prometheus["image"].startswith("prom/prometheus:")
    assert mounts(prometheus)["/etc/prometheus"] == (str(ROOT / "deploy/prometheus"), True)
    (option,) = (o for o in prometheus["command"] if o.startswith("--config.file="))
    config_file = repo_path(prometheus, option.split("=", 1)[1])
    assert config_file == ROOT / "deploy/prometheus/prometheus.yml"
    assert config_file.is_file(), "deploy/prometheus/prometheus.yml is missing"
    scrape = yaml.safe_load(config_file.read_text())
    rules = scrape.get("rule_files", [])
    assert rules, "prometheus.yml names no rule files"
    for pattern in rules:
        path = pattern if pattern.startswith("/") else f"/etc/prometheus/{pattern}"
        assert glob.glob(str(repo_path(prometheus, path))), f"no rule file matches {pattern}"


def test_prometheus_scrapes_the_services_by_their_compose_names(
    services: dict[str, Any],
) -> None:
    config_file = ROOT / "deploy/prometheus/prometheus.yml"
    assert config_file.is_file(), "deploy/prometheus/prometheus.yml is missing"
    scrape = yaml.safe_load(config_file.read_text())
    targets: dict[str, set[str]] = {}
    for job in scrape["scrape_configs"]:
        found = targets.setdefault(job["job_name"], set())
        for static in job.get("static_configs", []):
            found.update(static["targets"])
        for dns in job.get("dns_sd_configs", []):
            assert dns.get("type", "SRV") == "A", job["job_name"]
            found.update(f"{name}:{dns['port']}" for name in dns["names"])
    for name, port in HTTP_PORTS.items():
        assert f"{name}:{port}" in targets[f"hub-{name}"], name
    # The matcher by DNS: one target per replica, however many `--scale` made.
    (matcher_job,) = (j for j in scrape["scrape_configs"] if j["job_name"] == "hub-matcher")
    assert matcher_job.get("dns_sd_configs"), "the matcher is not found by DNS"


def test_grafana_is_provisioned_from_the_repository_and_asks_for_a_login(
    services: dict[str, Any],
) -> None:
    grafana = services["grafana"]
    assert grafana["image"].startswith("grafana/grafana:")
    env = grafana["environment"]
    assert env["GF_SECURITY_ADMIN_PASSWORD"] == REQUIRED["GRAFANA_ADMIN_PASSWORD"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    found = mounts(grafana)
    provisioning = ROOT / "deploy/grafana/provisioning"
    dashboards = ROOT / "deploy/grafana/dashboards"
    assert found["/etc/grafana/provisioning"] == (str(provisioning), True)
    assert found["/var/lib/grafana/dashboards"] == (str(dashboards), True)
    assert provisioning.is_dir(), "deploy/grafana/provisioning is missing"
    assert list(dashboards.glob("*.json")), "no dashboards in deploy/grafana/dashboards"
    # The provisioning must point at what the stack mounts and runs.
    providers = [
        provider
        for file in sorted((provisioning / "dashboards").glob("*.y*ml"))
        for provider in yaml.safe_load(file.read_text()).get("providers", [])
    ]
    assert providers, "no dashboard provider in deploy/grafana/provisioning/dashboards"
    for provider in providers:
        assert repo_path(grafana, provider["options"]["path"]).is_dir(), provider["name"]
    sources = [
        source
        for file in sorted((provisioning / "datasources").glob("*.y*ml"))
        for source in yaml.safe_load(file.read_text()).get("datasources", [])
    ]
    assert any(s["type"] == "prometheus" for s in sources), "no Prometheus data source"
    for source in sources:
        if source["type"] == "prometheus":
            assert urlsplit(source["url"]).hostname in services, source["url"]


def test_the_image_is_built_in_stages_and_runs_as_a_user(services: dict[str, Any]) -> None:
    lines = [
        line.strip()
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    stages = [i for i, line in enumerate(lines) if line.upper().startswith("FROM ")]
    assert len(stages) > 1
    users = [line.split()[1] for line in lines[stages[-1] :] if line.upper().startswith("USER ")]
    assert users, "the final stage sets no USER"
    assert users[-1].split(":")[0] not in ("root", "0")
    # No service overrides the image's user with root.
    for name, service in services.items():
        assert service.get("user", "hub") not in ("root", "0"), name


def test_the_operators_toolbox_is_not_started_by_up_and_has_every_setting(
    services: dict[str, Any],
) -> None:
    # `docker compose run --rm hub status` (docs/operations.md): every hub command must run in it.
    toolbox = services["hub"]
    assert toolbox["profiles"] == ["tools"]
    assert "depends_on" not in toolbox
    env = toolbox["environment"]
    for name in set(REQUIRED) - {"POSTGRES_PASSWORD", "GRAFANA_ADMIN_PASSWORD"}:
        assert env[name] == REQUIRED[name], name
    assert REQUIRED["POSTGRES_PASSWORD"] in env["HUB_DATABASE_URL"]
    for name in ("ingest", "privacy-purge", "hub"):
        pseudonyms = services[name]["environment"]
        assert pseudonyms["HUB_PSEUDONYM_VERSION"] == "1", name
        # Passed through only when set: an empty value is not valid JSON for the settings.
        assert pseudonyms["HUB_PSEUDONYM_PREVIOUS_SECRETS"] is None, name
