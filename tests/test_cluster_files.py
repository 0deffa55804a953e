"""The files in `cluster/` and `serve_configs/`: each parses, has what its tool requires, and its
numbers agree with the creason configuration it runs. No Ray cluster is started.

- Serve configs (serve_configs/*.yaml and the RayService's serveConfigV2) validate against Ray's
  own `ServeDeploySchema` (with no keys it would ignore), their `args` against creason's
  `BuildArgs`, and their `config` + `overrides` load.
- KubeRay files: the fields KubeRay reads (apiVersion, kind, head and worker groups, rayStartParams
  as strings, the quoted-JSON custom resources, GPU limits, replicas bounds, token auth).
- The launcher file validates against Ray's cluster-launcher JSON schema, as `ray up` does.
- The commands the files run (the RayJob's entrypoint, the commands their headers document) load
  with `load_config`, and what they start fits the cluster: rollout actors and training workers
  together on their pools, then evaluation actors, then Serve replicas, packed by Ray resources.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

import ray
from creason.cli import build_parser
from creason.config import CreasonConfig, builtin_config_path, load_config

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
SERVE_CONFIGS = ROOT / "serve_configs"
KUBERAY = {"kuberay-raycluster.yaml": "RayCluster", "kuberay-rayjob.yaml": "RayJob", "kuberay-rayservice.yaml": "RayService"}
LAUNCHER = "ray-cluster-launcher.yaml"
SUBMISSION_MODES = {"K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"}
GPU_DTYPES = {"bfloat16", "float16", "auto"}
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# Fields of the ray.io/v1 types (KubeRay's raycluster/rayjob/rayservice_types.go): the API server
# prunes a key it does not know, so a misspelt one would vanish without an error.
KUBERAY_FIELDS = {
    "RayClusterSpec": {"headGroupSpec", "workerGroupSpecs", "rayVersion", "enableInTreeAutoscaling", "autoscalerOptions",
                       "authOptions", "headServiceAnnotations", "suspend", "managedBy", "gcsFaultToleranceOptions"},
    "HeadGroupSpec": {"serviceType", "headService", "enableIngress", "rayStartParams", "template"},
    "WorkerGroupSpec": {"groupName", "replicas", "minReplicas", "maxReplicas", "numOfHosts", "rayStartParams", "template",
                        "scaleStrategy", "suspend", "idleTimeoutSeconds"},
    "AutoscalerOptions": {"resources", "image", "imagePullPolicy", "env", "envFrom", "volumeMounts", "securityContext",
                          "idleTimeoutSeconds", "upscalingMode", "version"},
    "AuthOptions": {"mode", "secretName", "enableK8sTokenAuth"},
    "RayJobSpec": {"activeDeadlineSeconds", "backoffLimit", "rayClusterSpec", "submitterPodTemplate", "metadata",
                   "clusterSelector", "submitterConfig", "managedBy", "deletionPolicy", "entrypoint", "runtimeEnvYAML",
                   "jobId", "submissionMode", "entrypointResources", "entrypointNumCpus", "entrypointNumGpus",
                   "ttlSecondsAfterFinished", "shutdownAfterJobFinishes", "suspend"},
    "RayServiceSpec": {"serveConfigV2", "rayClusterConfig", "serveService", "upgradeStrategy",
                       "excludeHeadPodFromServeSvc", "rayClusterDeletionDelaySeconds"},
}


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _doc(name: str) -> dict:
    return _load(CLUSTER / name)


def _cluster_spec(doc: dict) -> dict:
    """The RayClusterSpec inside a RayCluster, RayJob or RayService."""
    key = {"RayCluster": None, "RayJob": "rayClusterSpec", "RayService": "rayClusterConfig"}[doc["kind"]]
    return doc["spec"] if key is None else doc["spec"][key]


# ---- reading KubeRay pods as Ray nodes --------------------------------------------------------------


def _quantity(value: Any) -> float:
    """A Kubernetes CPU or count quantity ("88", 8, "500m")."""
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def kuberay_custom_resources(params: dict) -> dict[str, float]:
    """`rayStartParams.resources` in KubeRay's documented form, '"{\\"name\\": 8}"': a JSON string
    literal holding a JSON object (the backslashes are real characters of the value)."""
    raw = params.get("resources")
    if raw is None:
        return {}
    assert isinstance(raw, str) and raw.startswith('"') and raw.endswith('"'), (
        f"rayStartParams.resources must be KubeRay's quoted JSON, e.g. '\"{{\\\"x\\\": 1}}\"', got {raw!r}")
    parsed = json.loads(json.loads(raw))
    assert isinstance(parsed, dict) and all(isinstance(v, (int, float)) and v > 0 for v in parsed.values()), parsed
    return {k: float(v) for k, v in parsed.items()}


def _container(group: dict) -> dict:
    containers = group["template"]["spec"]["containers"]
    assert containers, "a pod template without containers"
    return containers[0]


def pod_node(group: dict) -> dict[str, float]:
    """The Ray resources one pod of a group advertises: num-cpus / num-gpus when given, else the
    container's limits (as KubeRay derives them), plus the custom resources."""
    params, limits = group["rayStartParams"], _container(group)["resources"]["limits"]
    cpu = _quantity(params.get("num-cpus", limits["cpu"]))
    gpu = _quantity(params.get("num-gpus", limits.get("nvidia.com/gpu", 0)))
    return {"CPU": cpu, "GPU": gpu, **kuberay_custom_resources(params)}


def kuberay_nodes(spec: dict) -> list[dict[str, float]]:
    """Every node the cluster can hold: the head, and per worker group maxReplicas pods when the
    autoscaler may add them, else `replicas`."""
    autoscaling = bool(spec.get("enableInTreeAutoscaling", False))
    nodes = [pod_node(spec["headGroupSpec"])]
    for group in spec["workerGroupSpecs"]:
        count = group["maxReplicas"] if autoscaling else group["replicas"]
        nodes += [pod_node(group) for _ in range(count * group.get("numOfHosts", 1))]
    return nodes


def launcher_nodes(cfg: dict) -> list[dict[str, float]]:
    types = cfg["available_node_types"]
    nodes = [{k: float(v) for k, v in types[cfg["head_node_type"]]["resources"].items()}]
    for name, node_type in types.items():
        if name != cfg["head_node_type"]:
            nodes += [{k: float(v) for k, v in node_type["resources"].items()}] * node_type["max_workers"]
    return nodes


# ---- what a creason config asks of the cluster ---------------------------------------------------------


def demands(cfg: CreasonConfig) -> dict[str, list[tuple[str, dict[str, float]]]]:
    """Per phase of the pipeline, the Ray resources of everything alive at once."""
    r, t, e, s = cfg.rollout, cfg.train, cfg.evaluate, cfg.serve
    return {
        "training": [(f"rollout actor {i}", {"CPU": r.cpus_per_actor, "GPU": r.gpus_per_actor, **r.custom_resources})
                     for i in range(r.num_actors)]
                    + [(f"training worker {i}", {"CPU": t.cpus_per_worker, "GPU": t.gpus_per_worker, **t.custom_resources})
                       for i in range(t.num_workers)],
        "evaluation": [(f"evaluation actor {i}", {"CPU": e.cpus_per_actor, "GPU": e.gpus_per_actor})
                       for i in range(e.num_actors)],
        "serving": [(f"serve replica {i}", {"CPU": s.cpus_per_replica, "GPU": s.gpus_per_replica})
                    for i in range(s.max_replicas)],
    }


def unplaced(items: list[tuple[str, dict[str, float]]], nodes: list[dict[str, float]]) -> list[str]:
    """First-fit placement (largest GPU demand first), as Ray's scheduler packs logical resources;
    returns what found no node."""
    free = [dict(n) for n in nodes]
    left = []
    for label, need in sorted(items, key=lambda item: -item[1].get("GPU", 0)):
        for node in free:
            if all(node.get(k, 0.0) + 1e-9 >= v for k, v in need.items() if v > 0):
                for k, v in need.items():
                    node[k] = node.get(k, 0.0) - v
                break
        else:
            left.append(label)
    return left


def assert_fits(cfg: CreasonConfig, nodes: list[dict[str, float]], phases: tuple[str, ...], where: str) -> None:
    for phase in phases:
        left = unplaced(demands(cfg)[phase], nodes)
        assert not left, f"{where}: {phase} does not fit: no node for {left[:3]}{'...' if len(left) > 3 else ''}"


def assert_gpu_settings(cfg: CreasonConfig, where: str, phases: tuple[str, ...]) -> None:
    """A GPU cluster must run the GPU settings: the CPU defaults would put a 14 B model on CPUs."""
    if "training" in phases:
        assert cfg.model.precision == "bf16", f"{where}: model.precision should be bf16 on GPUs"
        assert cfg.rollout.gpus_per_actor > 0 and cfg.train.gpus_per_worker > 0, f"{where}: rollout/training on CPUs"
        assert cfg.rollout.custom_resources and cfg.train.custom_resources, f"{where}: pools are not named"
        assert not set(cfg.rollout.custom_resources) & set(cfg.train.custom_resources), f"{where}: pools overlap"
    if "evaluation" in phases:
        assert cfg.evaluate.gpus_per_actor > 0, f"{where}: evaluate.gpus_per_actor is 0 (evaluation on CPUs)"
    if "serving" in phases:
        assert cfg.serve.gpus_per_replica > 0, f"{where}: serve.gpus_per_replica is 0 (serving on CPUs)"
        assert cfg.serve.dtype in GPU_DTYPES, f"{where}: serve.dtype {cfg.serve.dtype} on GPUs"


def assert_pools_apart(nodes: list[dict[str, float]], cfg: CreasonConfig, where: str) -> None:
    """Every custom resource the config requests is advertised, and no node advertises both pools."""
    rollout, train = set(cfg.rollout.custom_resources), set(cfg.train.custom_resources)
    advertised = {k for n in nodes for k in n if k not in ("CPU", "GPU")}
    assert rollout | train <= advertised, f"{where}: no node advertises {sorted((rollout | train) - advertised)}"
    for node in nodes:
        assert not (rollout & set(node) and train & set(node)), f"{where}: a node is in both pools: {node}"


# ---- the commands the files run ------------------------------------------------------------------------------


def script_command(script: Path) -> str:
    """The `creason` subcommand a ray_jobs script runs (`main(["<command>", *sys.argv[1:]])`)."""
    found = re.findall(r"main\(\[\"([a-z-]+)\", \*sys\.argv\[1:\]\]\)", script.read_text())
    assert len(found) == 1, f"{script}: expected one `main([\"<command>\", *sys.argv[1:]])`"
    return found[0]


def job_config(entrypoint: str, where: str) -> CreasonConfig:
    """The config a `python ray_jobs/<script>.py --config X --set ...` command runs, its flags read
    by the real `creason` parser of the command the script wraps."""
    argv = shlex.split(entrypoint)
    assert argv[0] == "python" and len(argv) >= 2, f"{where}: expected `python ray_jobs/<script>.py ...`: {argv[:2]}"
    script = Path(argv[1])
    assert script.parts[0] == "ray_jobs" and (ROOT / script).is_file(), f"{where}: {script} is not a script in ray_jobs/"
    try:
        args = build_parser().parse_args([script_command(ROOT / script), *argv[2:]])
    except SystemExit:
        pytest.fail(f"{where}: `{shlex.join(argv[1:])}`: the script does not take these flags")
    return load_config(args.config, args.overrides)


def documented_command(path: Path) -> str:
    """The entrypoint of the `ray job submit ... -- python ...` command in a file's header comment."""
    lines = [line.lstrip("#").strip() for line in path.read_text().splitlines() if line.startswith("#")]
    start = next(i for i, line in enumerate(lines) if "ray job submit" in line)
    command = []
    for line in lines[start:]:
        command.append(line.rstrip("\\").strip())
        if not line.endswith("\\"):
            break
    submit = " ".join(command)
    assert " -- " in submit, f"{path.name}: the documented `ray job submit` has no ` -- ` before the entrypoint"
    return submit.split(" -- ", 1)[1]


def _serve_arg_config(config: str | None) -> str | None:
    """`args.config` of a Serve application, as this checkout can load it: an absolute path on the
    cluster's shared storage that does not exist here stands for the shipped config of that name."""
    if config is None or Path(config).exists() or builtin_config_path(config).exists():
        return config
    stem = Path(config).stem
    assert Path(config).is_absolute() and builtin_config_path(stem).exists(), (
        f"args.config {config!r}: neither a file here, a shipped config, nor a shared-storage copy of one")
    return stem


@pytest.fixture(scope="module")
def build_args():
    from creason.serve.app import BuildArgs  # imports vLLM (a few seconds)

    return BuildArgs


def serve_app_configs(serve_doc: dict, where: str, build_args) -> list[CreasonConfig]:
    """Validate a Serve config file's content with Ray's schema and creason's BuildArgs; return the
    creason config of each creason application."""
    from ray.serve.schema import HTTPOptionsSchema, ServeApplicationSchema, ServeDeploySchema

    schema = ServeDeploySchema.model_validate(serve_doc)
    # Ray's models ignore unknown keys: a misspelt one would be dropped silently.
    assert set(serve_doc) <= set(ServeDeploySchema.model_fields), f"{where}: unknown keys {set(serve_doc) - set(ServeDeploySchema.model_fields)}"
    assert set(serve_doc.get("http_options", {})) <= set(HTTPOptionsSchema.model_fields), f"{where}: unknown http_options"
    configs = []
    assert schema.applications, f"{where}: no applications"
    for app in serve_doc["applications"]:
        assert set(app) <= set(ServeApplicationSchema.model_fields), f"{where}: unknown keys {set(app) - set(ServeApplicationSchema.model_fields)}"
        assert app["import_path"] == "creason.serve.app:build_app", f"{where}: {app['import_path']}"
        args = build_args.model_validate(app.get("args") or {})
        overrides = list(args.overrides)
        overrides += [f"serve.model_path={args.model_path}"] if args.model_path else []
        overrides += [f"serve.questions_dir={args.questions_dir}"] if args.questions_dir else []
        configs.append(load_config(_serve_arg_config(args.config), overrides))
    return configs


# ---- the folder ---------------------------------------------------------------------------------------------------


def test_cluster_folder_has_the_expected_files():
    assert {p.name for p in CLUSTER.glob("*.yaml")} == set(KUBERAY) | {LAUNCHER}, (
        "a new file in cluster/ needs checks in tests/test_cluster_files.py")


@pytest.mark.parametrize("path", sorted(CLUSTER.glob("*.yaml")) + sorted(SERVE_CONFIGS.glob("*.yaml")),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_file_parses_and_explains_itself(path):
    assert isinstance(_load(path), dict), f"{path.name}: not a YAML mapping"
    header = path.read_text().split("\n", 1)[0]
    assert header.startswith("# "), f"{path.name}: starts without a header comment saying how to use it"


# ---- serve configs ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(SERVE_CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_serve_config_validates_with_ray_and_creason(path, build_args):
    for cfg in serve_app_configs(_load(path), path.name, build_args):
        if cfg.serve.gpus_per_replica > 0:
            assert cfg.serve.dtype in GPU_DTYPES, f"{path.name}: GPU replicas in {cfg.serve.dtype}"
        else:
            assert cfg.serve.dtype == "float32", f"{path.name}: CPU replicas in {cfg.serve.dtype} (bf16 is ~8x slower on CPUs)"


# ---- KubeRay -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(KUBERAY))
def test_kuberay_resource_has_the_fields_kuberay_reads(name):
    doc = _doc(name)
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == KUBERAY[name]
    assert DNS_LABEL.match(doc["metadata"]["name"]) and len(doc["metadata"]["name"]) <= 63
    spec = _cluster_spec(doc)
    outer = {"RayJob": "RayJobSpec", "RayService": "RayServiceSpec"}.get(doc["kind"])
    checked = [("RayClusterSpec", spec), ("HeadGroupSpec", spec["headGroupSpec"]),
               ("AutoscalerOptions", spec.get("autoscalerOptions", {})), ("AuthOptions", spec.get("authOptions", {}))]
    checked += [("WorkerGroupSpec", g) for g in spec["workerGroupSpecs"]] + ([(outer, doc["spec"])] if outer else [])
    for kind, fields in checked:
        assert set(fields) <= KUBERAY_FIELDS[kind], f"{kind}: fields KubeRay does not have: {set(fields) - KUBERAY_FIELDS[kind]}"
    assert spec["rayVersion"] == ray.__version__, f"rayVersion {spec['rayVersion']} is not the Ray this repo pins"
    assert spec.get("authOptions", {}).get("mode") == "token", "Ray token authentication is not on"
    assert isinstance(spec.get("enableInTreeAutoscaling", False), bool)

    head = spec["headGroupSpec"]
    groups = spec["workerGroupSpecs"]
    images = set()
    for where, group in [("head", head)] + [(g["groupName"], g) for g in groups]:
        params = group["rayStartParams"]
        assert isinstance(params, dict) and all(isinstance(v, str) for v in params.values()), (
            f"{where}: rayStartParams values must all be strings: {params}")
        kuberay_custom_resources(params)
        container = _container(group)
        images.add(container["image"])
        tag = container["image"].rpartition(":")[2]
        assert tag.startswith(spec["rayVersion"] + "-"), f"{where}: image {container['image']} is not Ray {spec['rayVersion']}"
        res = container["resources"]
        for kind in ("limits", "requests"):
            assert {"cpu", "memory"} <= set(res[kind]), f"{where}: resources.{kind} needs cpu and memory"
        assert res["limits"].get("nvidia.com/gpu") == res["requests"].get("nvidia.com/gpu"), (
            f"{where}: GPU requests must equal limits")
        volumes = {v["name"] for v in group["template"]["spec"].get("volumes", [])}
        for mount in container.get("volumeMounts", []):
            assert mount["name"] in volumes, f"{where}: volumeMount {mount['name']} has no volume"
    assert len(images) == 1, f"head and workers must run one image (one Ray, one Python): {images}"

    assert head["rayStartParams"].get("num-cpus") == "0", "the head should take no tasks or actors"
    assert "nvidia.com/gpu" not in _container(head)["resources"]["limits"], "the head is CPU-only"
    names = [g["groupName"] for g in groups]
    assert groups and len(set(names)) == len(names), f"worker groups need unique names: {names}"
    for g in groups:
        assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"], f"{g['groupName']}: min <= replicas <= max"
        assert _quantity(_container(g)["resources"]["limits"].get("nvidia.com/gpu", 0)) >= 1, f"{g['groupName']}: no GPUs"


def test_rayjob_runs_the_pipeline_on_shared_storage():
    doc = _doc("kuberay-rayjob.yaml")
    spec = doc["spec"]
    assert spec["submissionMode"] in SUBMISSION_MODES
    assert isinstance(spec["shutdownAfterJobFinishes"], bool)
    entrypoint = spec["entrypoint"]
    assert "'" not in entrypoint and '"' not in entrypoint, (
        "the entrypoint passes through two shells (submitter, Ray job): keep quotes out of it")
    assert shlex.split(entrypoint)[1] == "ray_jobs/pipeline.py"
    cfg = job_config(entrypoint, "RayJob entrypoint")

    from ray.runtime_env import RuntimeEnv

    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert isinstance(runtime_env, dict) and set(runtime_env) <= RuntimeEnv.known_fields, runtime_env
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in runtime_env.get("env_vars", {}).items()), (
        "runtime_env env_vars must be strings")
    if spec["submissionMode"] == "HTTPMode":  # the operator sends it as is: no local folder to upload
        assert "://" in runtime_env.get("working_dir", "://"), "HTTPMode needs a remote working_dir URI"

    # output_dir (Ray Train's storage) must be on a volume every pod mounts.
    cluster = spec["rayClusterSpec"]
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        mounts = [m["mountPath"] for m in _container(group).get("volumeMounts", [])]
        assert any(Path(cfg.output_dir).is_relative_to(m) for m in mounts), (
            f"output_dir {cfg.output_dir} is not on a volume of every pod (mounts: {mounts})")


def test_rayjob_cluster_has_the_shape_of_the_raycluster():
    """Same groups, pools and GPUs per pod: the RayCluster's documented command is the RayJob's."""
    job = _cluster_spec(_doc("kuberay-rayjob.yaml"))
    long_lived = _cluster_spec(_doc("kuberay-raycluster.yaml"))
    def shape(spec: dict) -> dict:
        return {g["groupName"]: pod_node(g) for g in spec["workerGroupSpecs"]}

    assert shape(job) == shape(long_lived)
    assert pod_node(job["headGroupSpec"]) == pod_node(long_lived["headGroupSpec"])
    documented = shlex.split(documented_command(CLUSTER / "kuberay-raycluster.yaml"))
    assert documented == shlex.split(_doc("kuberay-rayjob.yaml")["spec"]["entrypoint"])


def test_rayservice_deploys_creason_on_gpu_replicas(build_args):
    doc = _doc("kuberay-rayservice.yaml")
    serve_config = doc["spec"]["serveConfigV2"]
    assert isinstance(serve_config, str), "serveConfigV2 is a YAML string (a `|` block), not a mapping"
    (cfg,) = serve_app_configs(yaml.safe_load(serve_config), "serveConfigV2", build_args)
    assert cfg.serve.require_api_key, "the Serve port is not covered by Ray's token: require creason's key"
    nodes = kuberay_nodes(_cluster_spec(doc))
    assert_gpu_settings(cfg, "RayService", ("serving",))
    assert_fits(cfg, nodes, ("serving",), "RayService")


# ---- the cluster launcher ------------------------------------------------------------------------------------------


def test_launcher_validates_against_rays_schema():
    pytest.importorskip("jsonschema")
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = _doc(LAUNCHER)
    validate_config(prepare_config(raw))  # what `ray up` does before it starts anything
    for key in ("cluster_name", "provider", "available_node_types", "head_node_type", "max_workers"):
        assert key in raw, key
    types = raw["available_node_types"]
    assert raw["head_node_type"] in types
    for name, node_type in types.items():
        assert {"node_config", "resources"} <= set(node_type), name
        if name != raw["head_node_type"]:
            assert {"min_workers", "max_workers"} <= set(node_type), name
            assert node_type["min_workers"] <= node_type["max_workers"], name
            assert node_type["resources"].get("GPU", 0) >= 1, f"{name}: a worker type without GPUs"
    assert raw["max_workers"] >= sum(t.get("min_workers", 0) for t in types.values())
    assert types[raw["head_node_type"]]["resources"].get("CPU") == 0, "the head should take no tasks or actors"


def test_launcher_turns_on_token_auth_and_installs_creason():
    raw = _doc(LAUNCHER)
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in raw[key] if "ray start" in c]
        assert starts and all("RAY_AUTH_MODE=token" in c for c in starts), f"{key}: ray start without RAY_AUTH_MODE=token"
    assert any(remote.endswith(".ray/auth_token") for remote in raw["file_mounts"]), "the token is not copied to the nodes"
    assert any("[gpu]" in c and "pip install" in c for c in raw["setup_commands"]), "creason[gpu] is not installed"


# ---- what runs where --------------------------------------------------------------------------------------------------


def _clusters() -> list[tuple[str, list[dict[str, float]], str]]:
    """(file, the nodes it can hold, the entrypoint it runs)."""
    return [
        ("kuberay-rayjob.yaml", kuberay_nodes(_cluster_spec(_doc("kuberay-rayjob.yaml"))),
         _doc("kuberay-rayjob.yaml")["spec"]["entrypoint"]),
        ("kuberay-raycluster.yaml", kuberay_nodes(_cluster_spec(_doc("kuberay-raycluster.yaml"))),
         documented_command(CLUSTER / "kuberay-raycluster.yaml")),
        (LAUNCHER, launcher_nodes(_doc(LAUNCHER)), documented_command(CLUSTER / LAUNCHER)),
    ]


@pytest.mark.parametrize("name,nodes,entrypoint", [pytest.param(*c, id=c[0]) for c in _clusters()])
def test_pipeline_fits_the_cluster(name, nodes, entrypoint):
    cfg = job_config(entrypoint, name)
    phases = ("training", "evaluation", "serving")
    assert_gpu_settings(cfg, name, phases)
    assert_pools_apart(nodes, cfg, name)
    assert_fits(cfg, nodes, phases, name)
    from creason.rollout.sync import make_weight_sync

    make_weight_sync(cfg.rollout.weight_sync, [])  # a transport that is not written yet raises here


def test_packing_check_catches_a_config_that_does_not_fit():
    """The check above can fail: one rollout actor more than the rollout pool holds."""
    name, nodes, entrypoint = _clusters()[0]
    cfg = job_config(entrypoint, name)
    too_many = cfg.model_copy(update={"rollout": cfg.rollout.model_copy(update={"num_actors": cfg.rollout.num_actors + 1})})
    assert unplaced(demands(too_many)["training"], nodes) == [f"rollout actor {cfg.rollout.num_actors}"]
    shared = cfg.model_copy(update={"train": cfg.train.model_copy(update={"custom_resources": cfg.rollout.custom_resources})})
    with pytest.raises(AssertionError, match="pools overlap"):
        assert_gpu_settings(shared, name, ("training",))


def test_kuberay_custom_resources_form():
    assert kuberay_custom_resources({"resources": '"{\\"creason_rollout\\": 8}"'}) == {"creason_rollout": 8.0}
    with pytest.raises(AssertionError, match="quoted JSON"):
        kuberay_custom_resources({"resources": '{"creason_rollout": 8}'})


# ---- docs/cluster.md ----------------------------------------------------------------------------------------------


def test_cluster_doc_names_only_commands_and_scripts_that_exist():
    text = (ROOT / "docs" / "cluster.md").read_text()
    subcommands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    blocks = re.findall(r"```.*?```", text, re.S)
    code = blocks + re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    named = {m for c in code for m in re.findall(r"(?:^|[\s(])creason ([a-z][a-z-]+)", c, re.M)}
    assert named, "docs/cluster.md names no creason command"
    assert named <= set(subcommands), f"docs/cluster.md names creason commands that do not exist: {named - set(subcommands)}"
    scripts = set(re.findall(r"\bray_jobs/([a-z_]+\.py)", text))
    assert scripts and all((ROOT / "ray_jobs" / s).is_file() for s in scripts), (
        f"docs/cluster.md names scripts that are not in ray_jobs/: {sorted(s for s in scripts if not (ROOT / 'ray_jobs' / s).is_file())}")
    for name in re.findall(r"cluster/([a-z-]+\.yaml)", text):
        assert (CLUSTER / name).is_file(), f"docs/cluster.md names cluster/{name}"


def _cell_value(text: str) -> Any:
    """A value as the docs table writes it: `code`, a trailing (note), numbers like 2e-5."""
    text = re.sub(r"\s*\([^)]*\)$", "", text.strip()).strip().strip("`")
    try:
        return float(text)
    except ValueError:
        return yaml.safe_load(text)


def _field(cfg: CreasonConfig, dotted: str) -> Any:
    value: Any = cfg
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def _same(documented: Any, actual: Any) -> bool:
    if isinstance(actual, (int, float)) and not isinstance(actual, bool):
        return isinstance(documented, (int, float)) and not isinstance(documented, bool) and float(documented) == pytest.approx(actual)
    return documented == actual


def test_cluster_doc_config_table_matches_the_configs():
    """The quickstart -> paper -> cluster table in docs/cluster.md states the loaded values."""
    text = (ROOT / "docs" / "cluster.md").read_text()
    table = text[text.index("| field | quickstart | paper | cluster files |"):].split("\n\n", 1)[0].splitlines()[2:]
    configs = [load_config("quickstart"), load_config("paper"),
               job_config(_doc("kuberay-rayjob.yaml")["spec"]["entrypoint"], "RayJob entrypoint")]
    assert len(table) > 10
    for row in table:
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        fields = [f.strip().strip("`") for f in cells[0].split(" / ")]
        for column, cfg in enumerate(configs, 1):
            cell = cells[column - 1] if cells[column] == "same" else cells[column]
            if column == 3 and not cell:  # the cluster files leave the field as paper has it
                cell = cells[2] if cells[2] != "same" else cells[1]
            if fields == ["algorithm.rewards"]:
                names = re.findall(r"`(\w+)`", cell)
                assert names == [r.path.rpartition(":")[2] for r in cfg.algorithm.rewards], (row, column)
                continue
            values = [_cell_value(v) for v in cell.split(" / ")]
            assert len(values) == len(fields), f"docs/cluster.md row {cells[0]}: {len(values)} values"
            for name, value in zip(fields, values):
                assert _same(value, _field(cfg, name)), (
                    f"docs/cluster.md: {name} is {_field(cfg, name)!r} in column {column}, the table says {value!r}")
