"""The compose file and the Kubernetes manifests in deploy/, checked without Docker or a cluster
(neither runs on the test machine; docs/cluster.md says what this leaves unchecked):

* **schemas**, offline, from packages the set-up installs: ``deploy/docker-compose.yml`` against
  the Compose Specification schema vendored in ``check-jsonschema`` (``vendor.compose-spec``),
  ``deploy/k8s/*.yaml`` against the Kubernetes OpenAPI schemas bundled in
  ``kubernetes-validate``, strict (an unknown field is an error);
* **the hub's own view**: each hub container's command is parsed by ``asrhub``'s own argument
  parser and its environment loaded by the settings loader, so a misspelt ``ASRHUB_…`` variable,
  a bad value or an unknown flag fails here as it would fail the pod;
* **no open hub**: the hubs listen on 0.0.0.0, so the key is required — compose stops when
  ``ASRHUB_API_KEYS`` is unset or empty (``${…:?…}``), the pod takes it from a Secret that must
  exist and its command refuses an empty value (run here with ``sh``); no hub port is published
  (clients reach HAProxy); HAProxy's stats are published on the host's loopback only.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from asrhub.cli import build_parser
from asrhub.settings.loader import load_from_args
from asrhub.settings.schema import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "docker-compose.yml"
K8S = sorted((ROOT / "deploy" / "k8s").glob("*.yaml"))
KEYS = "key-one,key-two"


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ``${NAME}``, ``${NAME:-default}`` and ``${NAME:?error}`` for the values this
    file uses (an unset or empty required one raises, as compose does)."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2) or "", match.group(3) or ""
        got = env.get(name, "")
        if op == ":?" and not got:
            raise ValueError(arg)
        return got or (arg if op == ":-" else "")

    return re.sub(r"\$\{([A-Z0-9_]+)(:[-?])?([^}]*)\}", one, value)


def hub_settings(argv: list[str], env: dict[str, str]) -> Settings:
    """What ``asrhub`` would run with: its parser on the command, its loader on the environment."""
    assert Path(argv[0]).name == "asrhub", argv
    args = build_parser().parse_args(argv[1:])
    assert args.command == "serve"
    return load_from_args(args, env=env).settings


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


# ---------------------------------------------------------------------------------- schemas


def test_compose_file_matches_the_compose_specification() -> None:
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "check-jsonschema"),
            "--builtin-schema",
            "vendor.compose-spec",
            str(COMPOSE),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", K8S, ids=lambda p: p.name)
def test_kubernetes_manifests_match_the_api_schemas_strictly(path: Path) -> None:
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert documents
    for document in documents:
        kubernetes_validate.validate(document, kubernetes_validate.latest_version(), strict=True)


def test_the_schema_check_fails_on_a_wrong_field() -> None:
    """The check can fail: a misspelt field of a container is refused."""
    (deployment, *_rest) = [d for d in yaml.safe_load_all(K8S[0].read_text()) if d]
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, kubernetes_validate.latest_version(), strict=True)


# ---------------------------------------------------------------------------------- compose


def test_compose_hubs_need_keys_and_load_as_the_hub_would() -> None:
    data = compose()
    hubs = {name: s for name, s in data["services"].items() if name.startswith("hub")}
    assert hubs
    for name, service in hubs.items():
        dockerfile = service["build"]["dockerfile_inline"]
        (cmd_line,) = [line.strip() for line in dockerfile.splitlines() if line.strip().startswith("CMD ")]
        argv = json.loads(cmd_line[4:])
        raw_env = {k: str(v) for k, v in service["environment"].items()}

        # No key, or an empty one: compose refuses to start (its ${VAR:?message}).
        for env in ({}, {"ASRHUB_API_KEYS": ""}):
            with pytest.raises(ValueError, match="ASRHUB_API_KEYS"):
                interpolate(raw_env["ASRHUB_API_KEYS"], env)

        env = {k: interpolate(v, {"ASRHUB_API_KEYS": KEYS}) for k, v in raw_env.items()}
        settings = hub_settings(argv, env)
        assert settings.server.host == "0.0.0.0"
        assert list(settings.server.api_keys) == KEYS.split(","), name
        assert settings.cluster.redis_url == "redis://redis:6379/0"
        assert "ports" not in service, f"{name} publishes a port: clients must come through HAProxy"


def test_compose_balancer_names_every_hub_and_keeps_its_stats_on_loopback() -> None:
    data = compose()
    hubs = sorted(name for name in data["services"] if name.startswith("hub"))
    lb = data["services"]["lb"]
    nodes = {k: v for k, v in lb["environment"].items() if k.startswith("ASRHUB_NODE")}
    assert nodes == {f"ASRHUB_NODE{i}": f"{hub}:8080" for i, hub in enumerate(hubs, 1)}
    assert lb["volumes"] == ["./haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro"]
    published = {p.rsplit(":", 1)[-1]: p for p in lb["ports"]}
    assert published["8404"].startswith("127.0.0.1:"), published


# ---------------------------------------------------------------------------------- Kubernetes


def hub_container() -> dict[str, Any]:
    for document in yaml.safe_load_all(K8S[0].read_text()):
        if document and document["kind"] == "Deployment" and document["metadata"]["name"] == "asrhub":
            container: dict[str, Any] = document["spec"]["template"]["spec"]["containers"][0]
            return container
    raise AssertionError("no asrhub Deployment")


def test_kubernetes_pod_takes_its_keys_from_a_required_secret() -> None:
    container = hub_container()
    (keys,) = [e for e in container["env"] if e["name"] == "ASRHUB_API_KEYS"]
    ref = keys["valueFrom"]["secretKeyRef"]
    assert ref["name"] == "asrhub-keys" and ref["key"] == "api-keys"
    assert not ref.get("optional", False), "an optional Secret would let a pod start without keys"


def test_kubernetes_command_refuses_empty_keys_and_runs_the_hub_otherwise() -> None:
    container = hub_container()
    shell, flag, script = container["command"]
    assert (shell, flag) == ("sh", "-c") and "args" not in container
    env = {e["name"]: e.get("value", KEYS) for e in container["env"]}

    refused = subprocess.run(
        [shell, flag, script], env={**env, "ASRHUB_API_KEYS": ""}, capture_output=True, text=True
    )
    assert refused.returncode == 1
    assert "ASRHUB_API_KEYS is empty" in refused.stderr

    # With keys the script gets past its guard to the hub (not installed at /app here: 127).
    passed = subprocess.run([shell, flag, script], env=env, capture_output=True, text=True)
    assert passed.returncode == 127 and "/app/.venv/bin/asrhub" in passed.stderr, passed.stderr

    argv = shlex.split(script.rsplit("exec ", 1)[1])
    settings = hub_settings(argv, env)
    assert settings.server.host == "0.0.0.0" and settings.server.port == 8080
    assert list(settings.server.api_keys) == KEYS.split(",")
    probes = {container["readinessProbe"]["httpGet"]["path"], container["livenessProbe"]["httpGet"]["path"]}
    assert probes == {"/healthz"}
