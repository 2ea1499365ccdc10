"""deploy/docker-compose.yml, deploy/Dockerfile and deploy/kubernetes/: Docker does not run
here, so they are parsed, and everything they reference is checked against the project.

Images are the project's own (built by deploy/Dockerfile, tagged with pyproject's
version) or pinned official ones; every command is one the image has, parsed by the
project's own argument parsers (console scripts from pyproject) or by Ray's CLI; ports
agree with the CLI defaults and with each other; mounted and copied files exist.
"""

from __future__ import annotations

import posixpath
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import grpc
import pytest
import yaml

from coordinator.cli import build_parser as coordinator_parser
from coordinator.cli import plan_from_args
from coordinator.errors import PlanError
from coordinator.plan import Plan
from model_server.cli import DEFAULT_METRICS_PORT, DEFAULT_PORT
from model_server.cli import build_parser as model_server_parser

REPO = Path(__file__).resolve().parents[3]
DEPLOY = REPO / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
IMAGE = f"raysiege:{PROJECT['version']}"
# Official images we use, pinned to a version (never `latest`).
EXTERNAL_IMAGES = {"prom/prometheus", "grafana/grafana"}
COMPOSE = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]


def ray_cli() -> click.Group:
    from ray.scripts.scripts import cli

    return cli


def click_parse(group: click.Group, args: list[str]) -> click.Context:
    """Parse `args` the way Ray's CLI would, without running anything."""
    command: click.Command = group
    while isinstance(command, click.Group):
        _, command, args = command.resolve_command(click.Context(command), list(args))
    return command.make_context(command.name, list(args))


def parsed(argv: list[str]) -> tuple[str, Any]:
    """(program, what its parser made of argv); fails on anything the image cannot run."""
    program, args = argv[0], list(argv[1:])
    assert program in PROJECT["scripts"] or program in ("ray", "python"), program
    try:
        if program == "coordinator":
            assert args[0] == "start", args
            return program, plan_from_args(coordinator_parser().parse_args(args))
        if program == "model-server":
            return program, model_server_parser().parse_args(args)
        if program == "ray":
            context = click_parse(ray_cli(), args)
            if context.command.name == "submit":  # `ray job submit -- ENTRYPOINT...`
                parsed(list(context.params["entrypoint"]))
            return program, context
    except (SystemExit, click.UsageError, PlanError) as error:
        pytest.fail(f"{argv}: not accepted by {program}'s parser: {error}")
    return program, args


def entrypoint_plan(argv: list[str]) -> Plan:
    """The coordinator plan a command runs, directly or through `ray job submit`."""
    program, result = parsed(argv)
    if program == "ray":
        return entrypoint_plan(list(result.params["entrypoint"]))
    assert program == "coordinator"
    return result


def test_parsing_can_fail():
    with pytest.raises(pytest.fail.Exception, match="not accepted"):
        parsed(["model-server", "serve", "--no-such-flag"])
    with pytest.raises(pytest.fail.Exception, match="not accepted"):
        parsed(["ray", "start", "--no-such-flag"])
    with pytest.raises(pytest.fail.Exception, match="not accepted"):
        parsed(["ray", "job", "submit", "--", "coordinator", "start", "--agents", "zero"])
    with pytest.raises(AssertionError):
        parsed(["raysiege-agent", "run"])


# -- Dockerfile ---------------------------------------------------------------------------


def test_dockerfile_installs_the_project_on_its_python():
    text = (DEPLOY / "Dockerfile").read_text()
    (base,) = re.findall(r"^FROM (\S+)", text, re.M)
    minimum = PROJECT["requires-python"].removeprefix(">=")
    assert base == f"python:{minimum}-slim"
    sources = [
        src
        for line in re.findall(r"^COPY (.+)$", text, re.M)
        for src in line.split()[:-1]
        if not src.startswith("--")
    ]
    assert sources, "no COPY"
    for src in sources:
        assert (REPO / src).exists(), f"COPY {src}: not in the repository"
    # the import packages setuptools is told to find, and the readme pyproject names
    for package in ("coordinator", "agents", "model_server"):
        assert package in sources
    assert PROJECT["readme"] in sources and "pyproject.toml" in sources
    assert "pip install ." in text
    ports = {int(p) for p in re.findall(r"^EXPOSE (.+)$", text, re.M)[0].split()}
    assert {DEFAULT_PORT, DEFAULT_METRICS_PORT, Plan().outputs.metrics_port} <= ports


# -- docker-compose.yml -------------------------------------------------------------------


def test_compose_has_the_issue_s_services():
    assert {"model-server", "ray-head", "ray-worker", "prometheus", "grafana"} <= set(SERVICES)


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_compose_images_are_ours_or_pinned(name):
    service = SERVICES[name]
    image = service["image"]
    if image == IMAGE:
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        assert (DEPLOY / service["build"]["context"]).resolve() == REPO
        assert (DEPLOY / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
    else:
        repository, _, tag = image.partition(":")
        assert repository in EXTERNAL_IMAGES, image
        assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{image}: pin a version"


@pytest.mark.parametrize("name", sorted(n for n, s in SERVICES.items() if s["image"] == IMAGE))
def test_compose_commands_are_the_project_s(name):
    service = SERVICES[name]
    parsed(service["command"])
    check = service.get("healthcheck", {}).get("test")
    if check:
        assert check[0] == "CMD"
        parsed(check[1:])


def published(service: str) -> set[int]:
    """Container ports a service publishes, on loopback only."""
    out = set()
    for spec in SERVICES[service].get("ports", []):
        host, host_port, container = spec.split(":")
        assert host == "127.0.0.1", f"{service}: publish on loopback only, not {spec}"
        assert host_port == container
        out.add(int(container))
    return out


def host_path(service: str, container_path: str) -> Path:
    """The repository file a container path of `service` is mounted from."""
    for volume in SERVICES[service].get("volumes", []):
        source, target = volume.split(":")[:2]
        if not source.startswith("."):
            continue  # a named volume
        if container_path == target or container_path.startswith(target + "/"):
            return DEPLOY / source / posixpath.relpath(container_path, target)
    raise AssertionError(f"{service}: nothing mounted at {container_path}")


def test_compose_mounts_exist():
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in COMPOSE["volumes"], f"{name}: undeclared volume {source}"


def test_model_server_ports_match_its_cli_defaults():
    args = parsed(SERVICES["model-server"]["command"])[1]
    assert (args.port, args.metrics_port) == (DEFAULT_PORT, DEFAULT_METRICS_PORT)
    assert args.host == args.metrics_host == "0.0.0.0"  # reachable from the other containers
    assert published("model-server") == {DEFAULT_PORT, DEFAULT_METRICS_PORT}
    check = " ".join(SERVICES["model-server"]["healthcheck"]["test"])
    assert f"127.0.0.1:{DEFAULT_PORT}" in check


def test_ray_cluster_and_the_load_test_agree():
    head = parsed(SERVICES["ray-head"]["command"])[1].params
    worker = parsed(SERVICES["ray-worker"]["command"])[1].params
    assert head["head"] and head["block"] and worker["block"]
    assert worker["address"] == f"ray-head:{head['port']}"
    assert head["num_cpus"] == 0 and worker["num_cpus"] >= 1
    submit = parsed(SERVICES["loadtest"]["command"])[1].params
    from ray._private.ray_constants import DEFAULT_DASHBOARD_PORT

    assert submit["address"] == f"http://ray-head:{DEFAULT_DASHBOARD_PORT}"
    assert head["dashboard_host"] == "0.0.0.0"
    plan = entrypoint_plan(SERVICES["loadtest"]["command"])
    assert plan.fleet.avoid_head  # agents on the workers
    assert plan.fleet.agents * plan.fleet.agent_cpus <= worker["num_cpus"]
    assert plan.target.address == f"model-server:{DEFAULT_PORT}"
    assert plan.outputs.metrics_host == "0.0.0.0"


def test_prometheus_in_compose_scrapes_what_the_services_serve():
    service = SERVICES["prometheus"]
    flags = dict(arg.lstrip("-").split("=", 1) for arg in service["command"])
    config_path = host_path("prometheus", flags["config.file"])
    assert config_path == DEPLOY / "prometheus" / "prometheus-compose.yml"
    config = yaml.safe_load(config_path.read_text())
    for rule_file in config["rule_files"]:
        container = posixpath.join(posixpath.dirname(flags["config.file"]), rule_file)
        assert host_path("prometheus", container).is_file(), rule_file
    targets = {
        job["job_name"]: [t for c in job["static_configs"] for t in c["targets"]]
        for job in config["scrape_configs"]
    }
    # the coordinator runs where `loadtest` submits it: on the Ray head
    plan = entrypoint_plan(SERVICES["loadtest"]["command"])
    assert targets["raysiege"] == [f"ray-head:{plan.outputs.metrics_port}"]
    model_server = parsed(SERVICES["model-server"]["command"])[1]
    assert targets["model-server"] == [f"model-server:{model_server.metrics_port}"]
    assert published("prometheus") == {int(flags["web.listen-address"].rsplit(":", 1)[1])}


def test_grafana_in_compose_is_provisioned_with_the_dashboard():
    provisioning = host_path("grafana", "/etc/grafana/provisioning")  # Grafana's default
    assert provisioning == DEPLOY / "grafana" / "provisioning"
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    url = urlsplit(source["url"])
    prometheus_port = next(iter(published("prometheus")))
    assert (url.hostname, url.port) == ("prometheus", prometheus_port)
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "raysiege.yml").read_text())[
        "providers"
    ]
    dashboards = host_path("grafana", provider["options"]["path"])
    assert (dashboards / "raysiege.json").is_file()
    assert published("grafana") == {3000}


def test_the_compose_healthcheck_reports_serving_and_not_serving():
    """The healthcheck's Python, run against a real gRPC health service."""
    from concurrent import futures

    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    snippet = SERVICES["model-server"]["healthcheck"]["test"][3]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        code = snippet.replace(f"127.0.0.1:{DEFAULT_PORT}", f"127.0.0.1:{port}")

        def run() -> int:
            return subprocess.run([sys.executable, "-c", code], timeout=60).returncode

        servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        assert run() != 0
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        assert run() == 0
    finally:
        server.stop(0)


# -- kubernetes/ --------------------------------------------------------------------------


def manifests() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    files = {KUBERNETES / name for name in kustomization["resources"]}
    assert files == set(KUBERNETES.glob("*.yaml")) - {KUBERNETES / "kustomization.yaml"}
    return [doc for path in sorted(files) for doc in yaml.safe_load_all(path.read_text()) if doc]


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m for m in manifests() if m["kind"] == kind}


def pod_specs() -> list[tuple[str, dict[str, Any]]]:
    specs = []
    for m in manifests():
        spec = m["spec"]
        if m["kind"] == "Deployment":
            specs.append((m["metadata"]["name"], spec["template"]["spec"]))
        elif m["kind"] == "RayCluster":
            specs.append(("head", spec["headGroupSpec"]["template"]["spec"]))
            for group in spec["workerGroupSpecs"]:
                specs.append((group["groupName"], group["template"]["spec"]))
        elif m["kind"] == "RayJob":
            specs.append(("submitter", spec["submitterPodTemplate"]["spec"]))
    return specs


def test_kubernetes_kinds_and_images():
    kinds = {(m["apiVersion"], m["kind"]) for m in manifests()}
    assert kinds == {
        ("apps/v1", "Deployment"),
        ("v1", "Service"),
        ("ray.io/v1", "RayCluster"),
        ("ray.io/v1", "RayJob"),
        ("monitoring.coreos.com/v1", "ServiceMonitor"),
        ("monitoring.coreos.com/v1", "PrometheusRule"),
    }
    for name, spec in pod_specs():
        for container in spec["containers"]:
            assert container["image"] == IMAGE, f"{name}: {container['image']}"
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    assert kustomization["images"] == [{"name": "raysiege", "newTag": PROJECT["version"]}]


def test_kubernetes_ray_version_is_the_project_s():
    import ray

    (cluster,) = by_kind("RayCluster").values()
    assert cluster["spec"]["rayVersion"] == ray.__version__
    pin = next(d for d in PROJECT["dependencies"] if d.startswith("ray"))
    assert re.match(
        pin.removeprefix("ray==").replace(".", r"\.").replace("*", ".*"), ray.__version__
    )


def test_kubernetes_ray_start_params_are_ray_start_flags():
    (cluster,) = by_kind("RayCluster").values()
    head = cluster["spec"]["headGroupSpec"]["rayStartParams"]
    params = parsed(["ray", "start", "--head", *(f"--{k}={v}" for k, v in head.items())])[1].params
    assert params["num_cpus"] == 0 and params["dashboard_host"] == "0.0.0.0"
    for group in cluster["spec"]["workerGroupSpecs"]:
        flags = (f"--{k}={v}" for k, v in group["rayStartParams"].items())
        parsed(["ray", "start", "--address=head:6379", *flags])


def container_ports(spec: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for c in spec["containers"] for p in c.get("ports", [])}


def test_kubernetes_model_server_ports_and_probes():
    deployment = by_kind("Deployment")["model-server"]
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    args = parsed([*container["command"], *container["args"]])[1]
    ports = container_ports(spec)
    assert ports == {"grpc": args.port, "metrics": args.metrics_port}
    assert (args.port, args.metrics_port) == (DEFAULT_PORT, DEFAULT_METRICS_PORT)
    assert args.host == args.metrics_host == "0.0.0.0"
    assert container["readinessProbe"]["grpc"]["port"] == args.port
    assert container["livenessProbe"]["tcpSocket"]["port"] in ports
    assert deployment["spec"]["selector"]["matchLabels"].items() <= (
        deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/var/cache/raysiege" in mounts  # RAYSIEGE_CACHE_DIR in deploy/Dockerfile
    assert "RAYSIEGE_CACHE_DIR=/var/cache/raysiege" in (DEPLOY / "Dockerfile").read_text()


def pod_labels_and_ports() -> list[tuple[dict[str, str], dict[str, int]]]:
    """(labels, named container ports) of every pod the manifests make."""
    out = []
    for m in manifests():
        if m["kind"] == "Deployment":
            template = m["spec"]["template"]
            out.append((template["metadata"]["labels"], container_ports(template["spec"])))
        elif m["kind"] == "RayCluster":
            head = m["spec"]["headGroupSpec"]["template"]
            # KubeRay labels the pods it makes with the cluster and the node type
            labels = {
                **head["metadata"]["labels"],
                "ray.io/cluster": m["metadata"]["name"],
                "ray.io/node-type": "head",
            }
            out.append((labels, container_ports(head["spec"])))
    return out


def test_kubernetes_services_select_pods_with_their_target_ports():
    for name, service in by_kind("Service").items():
        selector = service["spec"]["selector"]
        pods = [
            ports for labels, ports in pod_labels_and_ports() if selector.items() <= labels.items()
        ]
        assert len(pods) == 1, f"Service {name} selects {len(pods)} pod templates"
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in pods[0], f"Service {name}: no port {port['targetPort']}"
            assert pods[0][port["targetPort"]] == port["port"]


def test_kubernetes_rayjob_runs_the_coordinator_against_the_services():
    (job,) = by_kind("RayJob").values()
    (cluster,) = by_kind("RayCluster").values()
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    plan = entrypoint_plan(shlex.split(job["spec"]["entrypoint"]))
    host, port = plan.target.address.rsplit(":", 1)
    service = by_kind("Service")[host]
    assert int(port) in {p["port"] for p in service["spec"]["ports"]}
    assert plan.fleet.avoid_head and plan.outputs.metrics_host == "0.0.0.0"
    head_ports = container_ports(cluster["spec"]["headGroupSpec"]["template"]["spec"])
    assert head_ports["coordinator"] == plan.outputs.metrics_port
    assert plan.thresholds  # the run is judged
    workers = cluster["spec"]["workerGroupSpecs"]
    cpus = sum(
        g["replicas"] * float(c["resources"]["requests"]["cpu"])
        for g in workers
        for c in g["template"]["spec"]["containers"]
    )
    assert plan.fleet.agents * plan.fleet.agent_cpus <= cpus


def test_kubernetes_ray_token_auth_is_on_everywhere():
    for name, spec in pod_specs():
        if name == "model-server":
            continue
        env = {e["name"]: e for c in spec["containers"] for e in c.get("env", [])}
        assert env["RAY_AUTH_MODE"]["value"] == "token", name
        secret = env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert secret == {"name": "raysiege-ray-token", "key": "token"}, name
    assert "raysiege-ray-token" in (KUBERNETES / "kustomization.yaml").read_text()


def test_kubernetes_service_monitors_scrape_named_service_ports_every_second():
    services = by_kind("Service")
    monitors = by_kind("ServiceMonitor")
    assert len(monitors) == 2
    scraped = set()
    for name, monitor in monitors.items():
        wanted = monitor["spec"]["selector"]["matchLabels"]
        (service,) = [
            s for s in services.values() if wanted.items() <= s["metadata"]["labels"].items()
        ]
        names = {p["name"] for p in service["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in names, f"ServiceMonitor {name}: no port {endpoint['port']}"
            assert endpoint["interval"] == "1s"
        scraped.add(service["metadata"]["name"])
    assert scraped == {"model-server", "raysiege-coordinator"}


def test_kubernetes_prometheus_rule_is_deploy_prometheus_rules():
    (rule,) = by_kind("PrometheusRule").values()
    groups = [
        group
        for path in sorted((DEPLOY / "prometheus" / "rules").glob("*.yml"))
        for group in yaml.safe_load(path.read_text())["groups"]
    ]
    assert rule["spec"]["groups"] == groups, "copy deploy/prometheus/rules/*.yml's groups"
