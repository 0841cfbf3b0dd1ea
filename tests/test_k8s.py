"""deploy/k8s as `kubectl kustomize` renders it: what someone applying it relies on."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

import actions
from core.settings import VARIABLES, load

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
COMMANDS = {"irbot-bot": "serve", "irbot-worker": "worker", "irbot-findings": "findings"}
# Slack tokens as Slack issues them (xoxb-123-456-abc, xapp-1-A0-123-abc) and signing secrets (32 hex digits).
REAL_LOOKING = re.compile(r"xox[a-z]-\d+-|xapp-\d+-[A-Z0-9]+-|\b[0-9a-f]{32}\b|AKIA[0-9A-Z]{16}|ASIA[0-9A-Z]{16}")
SECRET_NAMES = {"SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}


@pytest.fixture(scope="module")
def rendered() -> dict[tuple[str, str], dict]:
    from tests.conftest import need_binary

    kubectl = need_binary("kubectl")
    result = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    documents = [d for d in yaml.safe_load_all(result.stdout) if d]
    objects = {(d["kind"], d["metadata"]["name"]): d for d in documents}
    assert len(objects) == len(documents), "two objects share a kind and name"
    return objects


def pod(objects, name: str) -> dict:
    return objects["Deployment", name]["spec"]["template"]


def container(objects, name: str) -> dict:
    (only,) = pod(objects, name)["spec"]["containers"]
    return only


def environment(objects, name: str) -> dict[str, str]:
    """What the container's environment holds: its envFrom ConfigMaps and Secrets, then its env."""
    env: dict[str, str] = {}
    for source in container(objects, name).get("envFrom", []):
        if "configMapRef" in source:
            env.update(objects["ConfigMap", source["configMapRef"]["name"]]["data"])
        if "secretRef" in source:
            secret = objects["Secret", source["secretRef"]["name"]]
            env.update(secret.get("stringData", {}))
            assert not secret.get("data"), "the Secret's placeholders are readable stringData"
    for item in container(objects, name).get("env", []):
        env[item["name"]] = item.get("value", "")
    return env


def secret_values(objects) -> dict[str, str]:
    return objects["Secret", "irbot-secrets"]["stringData"]


def test_the_kustomization_renders_every_manifest_in_the_directory(rendered):
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    assert {kind for kind, _ in rendered} == {"ServiceAccount", "ConfigMap", "Secret", "PersistentVolumeClaim", "Deployment", "Service", "NetworkPolicy"}


def test_bot_worker_and_findings_run_the_image_with_their_command(rendered):
    for name, command in COMMANDS.items():
        spec = container(rendered, name)
        assert spec["image"] == "irbot:latest"  # the kustomize images: entry, which users override
        assert "command" not in spec, "the image's entrypoint (irbot) must stay"
        assert spec["args"] == [command]
    assert rendered["Deployment", "irbot-bot"]["spec"]["replicas"] == 1
    assert rendered["Deployment", "irbot-worker"]["spec"]["replicas"] == 2
    assert rendered["Deployment", "irbot-findings"]["spec"]["replicas"] == 1
    assert rendered["Deployment", "irbot-findings"]["spec"]["strategy"]["type"] == "Recreate"


def test_a_stopping_worker_has_time_to_finish_any_job_but_a_memory_capture(rendered):
    grace = pod(rendered, "irbot-worker")["spec"]["terminationGracePeriodSeconds"]
    # RQ finishes the running job on SIGTERM; the kubelet SIGKILLs after the grace. Executions of
    # approved requests and recoveries have a 60-minute job timeout (core.queues, workers.recovery).
    longest = max([60 * 60] + [spec.timeout_seconds for spec in actions.REGISTRY.values() if spec.queue != "long"])
    assert longest < grace <= longest + 15 * 60


def test_redis_keeps_its_append_only_file_on_a_persistent_volume(rendered):
    redis = container(rendered, "irbot-redis")
    started = redis.get("command", []) + redis.get("args", [])
    assert started[0] == "redis-server"
    assert started[started.index("--appendonly") + 1] == "yes"
    data_dir = started[started.index("--dir") + 1] if "--dir" in started else "/data"
    (mount,) = [m for m in redis["volumeMounts"] if m["mountPath"] == data_dir]
    (volume,) = [v for v in pod(rendered, "irbot-redis")["spec"]["volumes"] if v["name"] == mount["name"]]
    assert ("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]) in rendered
    # Never two Redis pods on the same append-only file.
    assert rendered["Deployment", "irbot-redis"]["spec"]["replicas"] == 1
    assert rendered["Deployment", "irbot-redis"]["spec"]["strategy"]["type"] == "Recreate"


def test_redis_url_points_at_the_redis_service(rendered):
    url = urlsplit(rendered["ConfigMap", "irbot-config"]["data"]["REDIS_URL"])
    service = rendered["Service", url.hostname]
    assert url.port in [p["port"] for p in service["spec"]["ports"]]
    labels = pod(rendered, "irbot-redis")["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_variable_a_command_needs_comes_from_the_configmap_or_the_secret(rendered, name):
    command = COMMANDS[name]
    env = environment(rendered, name)
    needed = [v.name for v in VARIABLES if command in v.needed_by]
    assert needed and [n for n in needed if not env.get(n)] == []
    # And the values shipped are well-formed: irbot's own start-up check accepts them.
    load(env, command)


def test_the_configmap_holds_nothing_secret(rendered):
    data = rendered["ConfigMap", "irbot-config"]["data"]
    assert not SECRET_NAMES & set(data)
    assert urlsplit(data["REDIS_URL"]).password is None
    assert [v for v in data.values() if REAL_LOOKING.search(v)] == []
    secrets = load(environment(rendered, "irbot-bot"), "serve").secrets()
    assert secrets and not [v for v in data.values() for s in secrets if s in v]


def test_the_secret_holds_slack_placeholders_and_no_aws_keys(rendered):
    values = secret_values(rendered)
    assert {"SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET"} <= set(values)
    assert not {k for k in values if k.startswith("AWS_")}
    for key, value in values.items():
        assert "REPLACE" in value, f"{key} should be a placeholder"
        assert not REAL_LOOKING.search(value), f"{key} looks like a real credential"
    for name in COMMANDS:  # AWS credentials come from the ServiceAccount's role, not the environment
        assert not {k for k in environment(rendered, name) if k.startswith("AWS_") and k != "AWS_REGION"}


def test_pods_get_aws_credentials_from_the_service_account(rendered):
    account = rendered["ServiceAccount", "irbot"]
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
    for name in COMMANDS:
        assert pod(rendered, name)["spec"]["serviceAccountName"] == "irbot"
    assert pod(rendered, "irbot-redis")["spec"].get("serviceAccountName") != "irbot"


def test_the_bot_is_probed_and_scraped_on_its_http_port(rendered):
    bot = container(rendered, "irbot-bot")
    ports = {p["name"]: p["containerPort"] for p in bot["ports"]}
    port = int(environment(rendered, "irbot-bot")["PORT"])
    for probe in ("readinessProbe", "livenessProbe"):
        check = bot[probe]["httpGet"]
        assert check["path"] == "/healthz"
        assert ports.get(check["port"], check["port"]) == port
    service = rendered["Service", "irbot-bot"]
    (service_port,) = service["spec"]["ports"]
    assert service_port["port"] == 3000 and ports.get(service_port["targetPort"], service_port["targetPort"]) == port
    assert service["spec"]["selector"].items() <= pod(rendered, "irbot-bot")["metadata"]["labels"].items()
    annotations = pod(rendered, "irbot-bot")["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == port


@pytest.mark.parametrize("name", sorted(COMMANDS) + ["irbot-redis"])
def test_every_pod_runs_unprivileged(rendered, name):
    spec = pod(rendered, name)["spec"]
    for each in spec["containers"]:
        context = each["securityContext"]
        assert {**spec.get("securityContext", {}), **context}.get("runAsNonRoot") is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"]["drop"] == ["ALL"]
    assert spec["automountServiceAccountToken"] is False
    if name in COMMANDS:  # the image's own user, by number, so the kubelet can verify runAsNonRoot
        uid = re.search(r"useradd .*--uid (\d+)", (ROOT / "deploy" / "Dockerfile").read_text()).group(1)
        assert spec["securityContext"]["runAsUser"] == int(uid)
