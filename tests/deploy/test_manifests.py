"""Offline checks of the deploy manifests, the Caddyfile, compose.yaml and the Dockerfile.

Every Kubernetes object is validated against the Kubernetes OpenAPI schemas (strict: unknown
fields are errors) with ``kubernetes-validate``, which ships the schemas, so nothing is fetched.
The other tests assert the wiring that a schema cannot see: probes on the right ports, selectors
that match, a grace period longer than the drain, no keys in the Secret.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from pathlib import Path
from typing import Any

import pytest

from gateway.ops.settings import Settings

try:
    import kubernetes_validate
    import yaml
except ImportError as exc:  # pragma: no cover - the failure message is the point
    kubernetes_validate = None
    yaml = None
    _IMPORT_ERROR: ImportError | None = exc
else:
    _IMPORT_ERROR = None

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
NAMESPACE = "preview-gateway"
# The oldest and the newest Kubernetes minor versions the manifests are checked against.
K8S_VERSIONS = ("1.30.0", "1.37.0")
GATEWAY_UID = 10001
SETTINGS = {f"GATEWAY_{name.upper()}" for name in Settings.model_fields}


def _require_tools() -> None:
    if _IMPORT_ERROR is not None:
        pytest.fail(
            f"the manifest validator is missing ({_IMPORT_ERROR}). Install the test extra: "
            "pip install -e '.[test]' (it must list kubernetes-validate, which ships the "
            "Kubernetes schemas and PyYAML).",
            pytrace=False,
        )


def _load_all(path: Path) -> list[dict[str, Any]]:
    _require_tools()
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def _objects() -> list[dict[str, Any]]:
    return [obj for path in _manifest_files() for obj in _load_all(path)]


def _one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        o
        for o in _objects()
        if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _gateway_deployment() -> dict[str, Any]:
    return _one("Deployment", "preview-gateway")


def _gateway_container() -> dict[str, Any]:
    containers = _gateway_deployment()["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "gateway")


def _config() -> dict[str, str]:
    data: dict[str, str] = _one("ConfigMap", "preview-gateway")["data"]
    return data


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _port_number(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    for p in container["ports"]:
        if p["name"] == port:
            return int(p["containerPort"])
    raise AssertionError(f"container {container['name']} has no port named {port!r}")


# ── schema validation ──────────────────────────────────────────────────────────────────────


def test_validator_is_installed() -> None:
    _require_tools()
    assert kubernetes_validate is not None and yaml is not None
    # It ships the schemas of every version the manifests are checked against: none is fetched.
    shipped = set(kubernetes_validate.utils.all_versions())
    assert set(K8S_VERSIONS) <= shipped, f"schemas missing for {set(K8S_VERSIONS) - shipped}"


def test_kustomization_lists_every_manifest() -> None:
    kustomization = _load_all(K8S / "kustomization.yaml")[0]
    assert kustomization["kind"] == "Kustomization"
    assert kustomization["namespace"] == NAMESPACE
    assert sorted(kustomization["resources"]) == [p.name for p in _manifest_files()]


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("path", _manifest_files(), ids=lambda p: p.name)
def test_manifest_validates_against_the_kubernetes_schema(path: Path, version: str) -> None:
    objects = _load_all(path)
    assert objects, f"{path.name} holds no objects"
    for obj in objects:
        where = f"{path.name}: {obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            field = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{where} is invalid for Kubernetes {version}: {field}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            pytest.fail(f"{where}: no schema ({exc.message})")


def test_the_validator_rejects_a_broken_deployment() -> None:
    """Guards the test above: strict validation catches a misspelt field and a wrong type."""
    broken = copy.deepcopy(_gateway_deployment())
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)
    broken = copy.deepcopy(_gateway_deployment())
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)


def test_every_object_is_namespaced_consistently() -> None:
    for obj in _objects():
        if obj["kind"] == "Namespace":
            assert obj["metadata"]["name"] == NAMESPACE
        else:
            assert obj["metadata"].get("namespace") == NAMESPACE, obj["metadata"]["name"]


# ── the gateway Deployment ─────────────────────────────────────────────────────────────────


def test_probes_hit_the_health_endpoints_on_the_api_port() -> None:
    container = _gateway_container()
    api_port = int(next(e["value"] for e in container["env"] if e["name"] == "GATEWAY_API_PORT"))
    readiness = container["readinessProbe"]["httpGet"]
    liveness = container["livenessProbe"]["httpGet"]
    assert readiness["path"] == "/readyz"
    # Liveness must not depend on Redis, or a Redis outage restarts every replica.
    assert liveness["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    for probe in (readiness, liveness, container["startupProbe"]["httpGet"]):
        assert _port_number(container, probe["port"]) == api_port


def test_container_ports_match_the_settings() -> None:
    container = _gateway_container()
    env = {e["name"]: e["value"] for e in container["env"]}
    assert _port_number(container, "edge") == int(env["GATEWAY_EDGE_PORT"])
    assert _port_number(container, "api") == int(env["GATEWAY_API_PORT"])


def test_termination_grace_covers_prestop_and_drain() -> None:
    pod = _gateway_deployment()["spec"]["template"]["spec"]
    container = _gateway_container()
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    assert pre_stop >= 5, "the load balancer needs time to drop the pod before SIGTERM"
    grace = float(_config()["GATEWAY_SHUTDOWN_GRACE_S"])
    assert pod["terminationGracePeriodSeconds"] > pre_stop + grace + 2


def test_pod_runs_non_root_with_a_read_only_root_fs() -> None:
    pod = _gateway_deployment()["spec"]["template"]["spec"]
    container = _gateway_container()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == GATEWAY_UID
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert pod["automountServiceAccountToken"] is False


def test_pods_meet_the_restricted_pod_security_standard() -> None:
    namespace = _one("Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for obj in _objects():
        if obj["kind"] not in {"Deployment", "StatefulSet"}:
            continue
        pod = obj["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, obj["metadata"]["name"]
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        for c in pod["containers"]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, c["name"]
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"], c["name"]


def test_every_container_has_requests_and_limits() -> None:
    for obj in _objects():
        if obj["kind"] not in {"Deployment", "StatefulSet"}:
            continue
        for c in obj["spec"]["template"]["spec"]["containers"]:
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), (c["name"], kind)


def test_rolling_update_never_drops_below_the_replica_count() -> None:
    deployment = _gateway_deployment()
    assert deployment["spec"]["replicas"] >= 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_image_is_pinned() -> None:
    image = _gateway_container()["image"]
    assert ":" in image.rsplit("/", 1)[-1], "give the image a tag"
    assert not image.endswith(":latest")


# ── selectors and references ───────────────────────────────────────────────────────────────


def test_deployment_selector_matches_its_pod_labels() -> None:
    deployment = _gateway_deployment()
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert _matches(deployment["spec"]["selector"]["matchLabels"], labels)


def test_pdb_selects_exactly_the_gateway_pods() -> None:
    pdb = _one("PodDisruptionBudget")
    pod_labels = _gateway_deployment()["spec"]["template"]["metadata"]["labels"]
    assert _matches(pdb["spec"]["selector"]["matchLabels"], pod_labels)
    redis_labels = _one("StatefulSet", "redis")["spec"]["template"]["metadata"]["labels"]
    assert not _matches(pdb["spec"]["selector"]["matchLabels"], redis_labels)
    hpa = _one("HorizontalPodAutoscaler")
    # A budget of one unavailable pod must leave a replica serving.
    assert pdb["spec"]["maxUnavailable"] < hpa["spec"]["minReplicas"]


def test_hpa_targets_the_deployment() -> None:
    hpa = _one("HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "preview-gateway")
    assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_services_select_pods_and_name_real_ports() -> None:
    workloads = [o for o in _objects() if o["kind"] in {"Deployment", "StatefulSet"}]
    for service in (o for o in _objects() if o["kind"] == "Service"):
        selected = [
            w
            for w in workloads
            if _matches(service["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"])
        ]
        assert len(selected) == 1, service["metadata"]["name"]
        container = selected[0]["spec"]["template"]["spec"]["containers"][0]
        for port in service["spec"]["ports"]:
            _port_number(container, port["targetPort"])


def test_edge_and_api_are_separate_services() -> None:
    container = _gateway_container()
    edge = _one("Service", "preview-gateway")
    api = _one("Service", "preview-gateway-api")
    assert [_port_number(container, p["targetPort"]) for p in edge["spec"]["ports"]] == [8080]
    assert [_port_number(container, p["targetPort"]) for p in api["spec"]["ports"]] == [8081]
    assert api["spec"]["type"] == "ClusterIP", "never expose the control API"


def test_redis_url_names_the_bundled_redis_service() -> None:
    url = _config()["GATEWAY_REDIS_URL"]
    match = re.fullmatch(r"rediss?://(?:[^@/]*@)?([a-z0-9.-]+):(\d+)/\d+", url)
    assert match, url
    assert "@" not in url, "passwords belong in a Secret, not in the ConfigMap"
    host, port = match.group(1), int(match.group(2))
    service = _one("Service", host.split(".")[0])
    assert port in [p["port"] for p in service["spec"]["ports"]]
    statefulset = _one("StatefulSet", "redis")
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]


def test_optional_redis_secret_overrides_the_configmap() -> None:
    sources = _gateway_container()["envFrom"]
    assert sources[0]["configMapRef"]["name"] == "preview-gateway"
    # Later envFrom sources win: the optional Secret must come after the ConfigMap.
    assert sources[-1]["secretRef"] == {"name": "preview-gateway-env", "optional": True}


# ── settings and secrets ───────────────────────────────────────────────────────────────────


def test_configmap_holds_valid_gateway_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    config = _config()
    unknown = set(config) - SETTINGS
    assert not unknown, f"not gateway settings: {sorted(unknown)}"
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)
    for name, value in config.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.public_scheme == "https"
    assert settings.trusted_proxies, "set GATEWAY_TRUSTED_PROXIES to the load balancer's CIDR"
    assert settings.allowed_targets, "set GATEWAY_ALLOWED_TARGETS to the sandbox network"


def test_api_keys_come_from_the_mounted_secret_file() -> None:
    path = Path(_config()["GATEWAY_API_KEYS_FILE"])
    container = _gateway_container()
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(path.parent))
    # A subPath mount would never see the Secret's updates, so keys could not rotate.
    assert "subPath" not in mount
    volumes = _gateway_deployment()["spec"]["template"]["spec"]["volumes"]
    volume = next(v for v in volumes if v["name"] == mount["name"])
    secret = _one("Secret", volume["secret"]["secretName"])
    assert path.name in {**secret.get("data", {}), **secret.get("stringData", {})}


def test_secret_ships_no_keys() -> None:
    for path in _manifest_files():
        for obj in _load_all(path):
            if obj["kind"] != "Secret":
                continue
            assert not obj.get("data"), "ship no base64 data; create the Secret out of band"
            for key, value in obj.get("stringData", {}).items():
                lines = [ln.split("#", 1)[0].strip() for ln in value.splitlines()]
                assert not any(lines), f"{path.name}: {key} holds a key; ship comments only"


def test_settings_named_in_deploy_files_and_docs_exist() -> None:
    files = [*DEPLOY.rglob("*"), ROOT / "docs" / "operations.md", ROOT / "Dockerfile"]
    for path in files:
        if not path.is_file():
            continue
        for name in set(re.findall(r"\bGATEWAY_[A-Z0-9_]+[A-Z0-9]\b", path.read_text())):
            assert name in SETTINGS, f"{path.relative_to(ROOT)} names unknown setting {name}"


# ── compose.yaml and the Caddyfile ─────────────────────────────────────────────────────────


def _compose() -> dict[str, Any]:
    docs = _load_all(DEPLOY / "compose.yaml")
    assert len(docs) == 1
    return docs[0]


def _compose_default(value: str) -> str:
    """`${VAR:-default}` -> default; anything else unchanged."""
    match = re.fullmatch(r"\$\{[A-Z_]+:-(.*)\}", value)
    return match.group(1) if match else value


def test_compose_has_two_gateways_redis_and_caddy() -> None:
    services = _compose()["services"]
    assert set(services) == {"gateway-1", "gateway-2", "redis", "caddy"}
    for name in ("gateway-1", "gateway-2"):
        service = services[name]
        env = service["environment"]
        assert env["GATEWAY_REDIS_URL"].startswith("redis://redis:")
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert service["read_only"] is True
        assert service["ulimits"]["nofile"]["soft"] >= 65536
        grace = float(env["GATEWAY_SHUTDOWN_GRACE_S"])
        assert float(service["stop_grace_period"].rstrip("s")) > grace
        # The control API is published on loopback only.
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), port
    assert {"80:80", "443:443"} <= set(services["caddy"]["ports"])


def test_compose_trusts_only_caddy_and_keeps_its_network_out_of_targets() -> None:
    compose = _compose()
    services = compose["services"]
    subnet = ipaddress.ip_network(compose["networks"]["preview"]["ipam"]["config"][0]["subnet"])
    caddy_ip = ipaddress.ip_address(services["caddy"]["networks"]["preview"]["ipv4_address"])
    for name in ("gateway-1", "gateway-2"):
        env = services[name]["environment"]
        trusted = [ipaddress.ip_network(n) for n in env["GATEWAY_TRUSTED_PROXIES"].split(",")]
        assert trusted == [ipaddress.ip_network(f"{caddy_ip}/32")]
        targets = _compose_default(env["GATEWAY_ALLOWED_TARGETS"]).split(",")
        for net in (ipaddress.ip_network(t) for t in targets):
            assert not net.overlaps(subnet), f"{name} may dial Redis and the other replica"


def test_caddyfile_balances_over_both_replicas_with_readiness_checks() -> None:
    caddyfile = (DEPLOY / "Caddyfile").read_text()
    active = "\n".join(ln.split("#", 1)[0] for ln in caddyfile.splitlines())
    compose = _compose()["services"]
    upstreams = re.search(r"reverse_proxy\s+([^{\n]+)\{", active)
    assert upstreams, "no reverse_proxy block"
    assert upstreams.group(1).split() == ["gateway-1:8080", "gateway-2:8080"]
    assert set(upstreams.group(1).replace(":8080", "").split()) <= set(compose)
    assert re.search(r"^\s*health_uri /readyz$", active, re.M)
    assert re.search(r"^\s*health_port 8081$", active, re.M)
    assert re.search(r"^\s*lb_try_duration \d+s$", active, re.M), "retry refused connections"
    assert re.search(r"^\*\.\{\$PREVIEW_DOMAIN[^}]*\}", active, re.M), "wildcard site address"


def test_the_on_demand_caddyfile_asks_the_gateway_and_is_selectable_in_compose() -> None:
    caddyfile = (DEPLOY / "caddy" / "Caddyfile").read_text()
    active = "\n".join(ln.split("#", 1)[0] for ln in caddyfile.splitlines())
    assert re.search(r"on_demand_tls\s*\{[^}]*ask \{\$CADDY_ASK_URL:[^}]*/v0/tls/ask\}", active)
    assert re.search(r"^\s*on_demand$", active, re.M)
    assert "skip_install_trust" in active
    upstreams = re.search(r"reverse_proxy \{\$CADDY_UPSTREAMS:([^}]+)\}", active)
    assert upstreams and upstreams.group(1).split() == ["gateway-1:8080", "gateway-2:8080"]
    caddy = _compose()["services"]["caddy"]
    assert "${CADDYFILE:-./Caddyfile}:/etc/caddy/Caddyfile:ro" in caddy["volumes"]
    ask = caddy["environment"]["CADDY_ASK_URL"]
    assert ask.startswith("http://gateway-1:8081/"), "the ask endpoint is on the control API"


# ── the Dockerfile ─────────────────────────────────────────────────────────────────────────


def test_dockerfile_builds_a_non_root_image_with_a_stdlib_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text()
    instructions = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    froms = [ln for ln in instructions if ln.startswith("FROM ")]
    assert froms == ["FROM ${BASE} AS builder", "FROM ${BASE}"]
    assert "ARG BASE=python:3.12-slim" in instructions
    assert f"USER {GATEWAY_UID}:{GATEWAY_UID}" in instructions
    assert "EXPOSE 8080 8081" in instructions
    assert "STOPSIGNAL SIGTERM" in instructions
    assert 'ENTRYPOINT ["python", "-m", "gateway"]' in instructions
    healthcheck = text[text.index("HEALTHCHECK") :].split("\n\n")[0]
    assert "urllib" in healthcheck and "/healthz" in healthcheck
    assert "curl" not in healthcheck
    assert not text.startswith("# syntax="), "BuildKit would pull the frontend from Docker Hub"
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*") :][:4] == ["*", "!pyproject.toml", "!README.md", "!gateway/"]
