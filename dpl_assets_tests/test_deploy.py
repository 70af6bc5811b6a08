"""The Kubernetes deployment files in deploy/ agree with each other and with the code.

No cluster, Docker or Helm runs here: these tests check what can be checked without them
(the values against an extract of the chart's schema, the names shared between files, the
GPU steps against the assets of the ``gpu`` pool, no secrets in the files).
"""

from __future__ import annotations

import copy
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from dpl_assets.definitions import build_definitions

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
VOLUME = "dpl-data"


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    return _load(DEPLOY / "helm" / "values.yaml")


@pytest.fixture(scope="module")
def deployment(values: dict[str, Any]) -> dict[str, Any]:
    (only,) = values["dagster-user-deployments"]["deployments"]
    return only


def _env(deployment: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in deployment["env"]}


def gpu_ops(tmp_path: Path) -> set[str]:
    """Op names of the assets in the ``gpu`` pool (the steps that need a GPU)."""
    defs = build_definitions(tmp_path)
    return {
        assets.op.name
        for assets in defs.assets or []
        if getattr(assets, "op", None) is not None and assets.op.pool == "gpu"
    }


def test_code_location_module_matches_the_project(deployment: dict[str, Any]) -> None:
    """The chart, the image and the repo's own workspace load the same module."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    module = pyproject["tool"]["dagster"]["module_name"]
    workspace = _load(ROOT / "workspace.yaml")
    assert workspace["load_from"][0]["python_module"]["module_name"] == module
    assert deployment["codeServerArgs"] == ["-m", module]
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", dockerfile, re.M).group(1))
    assert cmd[:3] == ["dagster", "code-server", "start"] and cmd[-2:] == ["-m", module]
    assert deployment["image"]["repository"] and deployment["image"]["tag"]


def test_dockerfile_user_and_extras() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    users = re.findall(r"^USER (\S+)$", dockerfile, re.M)
    assert users and not users[-1].startswith(("0", "root"))
    extras = re.search(r"^ARG EXTRAS=(\S+)$", dockerfile, re.M).group(1).split(",")
    assert {"postgres", "k8s"} <= set(extras)
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*") + 1 :].count("!dpl_assets/") == 1


def test_shared_volume_everywhere(values: dict[str, Any], deployment: dict[str, Any]) -> None:
    """Code server, run pods (and through them step pods) mount the same RWX claim, and the
    output dir is on it."""
    pvc = _load(DEPLOY / "k8s" / "pvc.yaml")
    assert pvc["kind"] == "PersistentVolumeClaim" and pvc["metadata"]["name"] == VOLUME
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    for holder in (deployment, launcher):
        (volume,) = [v for v in holder["volumes"] if v["name"] == VOLUME]
        assert volume["persistentVolumeClaim"]["claimName"] == VOLUME
    assert deployment["volumes"] == launcher["volumes"]
    assert deployment["volumeMounts"] == launcher["volumeMounts"]
    (mount,) = [m for m in deployment["volumeMounts"] if m["name"] == VOLUME]
    env = _env(deployment)
    assert Path(env["DPL_OUTPUT_DIR"]).is_relative_to(mount["mountPath"])
    # GPU leases are per machine: never on the shared volume.
    assert not Path(env["DPL_DEVICE_LEASE_DIR"]).is_relative_to(mount["mountPath"])


def test_no_secrets_in_files(values: dict[str, Any]) -> None:
    """The Postgres password only comes from an existing Secret."""
    assert values["generatePostgresqlPasswordSecret"] is False
    assert values["global"]["postgresqlSecretName"]
    assert "postgresqlPassword" not in values["postgresql"]
    for path in DEPLOY.rglob("*"):
        if path.is_file():
            assert not re.search(r"(?i)password\s*[:=]\s*['\"]?\w", path.read_text()), path


def test_gpu_steps_are_the_gpu_pool(tmp_path: Path) -> None:
    """Every asset of the ``gpu`` pool gets one GPU in the k8s_job_executor's run config, and
    no other step does."""
    run_config = _load(DEPLOY / "k8s" / "run_config_k8s_executor.yaml")
    per_step = run_config["execution"]["config"]["per_step_k8s_config"]
    expected = gpu_ops(tmp_path)
    assert expected and set(per_step) == expected
    for config in per_step.values():
        assert config["container_config"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    step = run_config["execution"]["config"]["step_k8s_config"]["container_config"]
    assert "nvidia.com/gpu" not in step["resources"].get("limits", {})


def test_executor_config_is_dagster_k8s_schema() -> None:
    """The run config's executor section is valid for dagster-k8s's k8s_job_executor (only
    where dagster-k8s is installed: the `k8s` extra)."""
    executor = pytest.importorskip("dagster_k8s").k8s_job_executor
    from dagster._config import process_config

    config = _load(DEPLOY / "k8s" / "run_config_k8s_executor.yaml")["execution"]["config"]
    result = process_config(executor.config_schema.config_type, config)
    assert result.success, result.errors


def test_values_match_chart_schema_extract(values: dict[str, Any]) -> None:
    """The values against the extract of the chart's values.schema.json, and a misspelt key
    or a wrong launcher type is caught (so the check is not vacuous)."""
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((DEPLOY / "helm" / "values.schema.extract.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    assert not [error.message for error in validator.iter_errors(values)]
    typo = copy.deepcopy(values)
    typo["runLauncher"]["config"]["k8sRunLauncher"]["volumeMount"] = []
    assert not validator.is_valid(typo)
    wrong = copy.deepcopy(values)
    wrong["runLauncher"]["type"] = "K8sLauncher"
    assert not validator.is_valid(wrong)


def test_one_run_limit(values: dict[str, Any]) -> None:
    """dagster refuses an instance whose `concurrency` block and queued run coordinator both
    set a run limit; ours is in `concurrency`, with op-granularity pools (a pod per step)."""
    concurrency = values["concurrency"]
    assert concurrency["enabled"] and concurrency["runs"]["maxConcurrentRuns"] > 0
    assert concurrency["pools"]["granularity"] == "op"
    coordinator = values["dagsterDaemon"]["runCoordinator"].get("config") or {}
    assert "maxConcurrentRuns" not in (coordinator.get("queuedRunCoordinator") or {})


def test_dpl_executor_picks_the_k8s_executor_and_gpu_steps_ask_for_a_gpu(monkeypatch) -> None:
    """``DPL_EXECUTOR=k8s`` gives the jobs dagster-k8s's executor, an unknown value is
    refused by name; the GPU nodes' steps carry one ``nvidia.com/gpu`` for Kubernetes and
    the ``gpu`` Celery queue, the others neither."""
    from dagster_k8s import k8s_job_executor

    from dpl_assets.definitions import build_definitions, in_process_by_default_executor

    monkeypatch.setenv("DPL_EXECUTOR", "k8s")
    job = build_definitions().resolve_job_def("offline_audio")
    assert job.executor_def is k8s_job_executor
    monkeypatch.setenv("DPL_EXECUTOR", "kubernetes")
    with pytest.raises(ValueError, match="DPL_EXECUTOR='kubernetes'"):
        build_definitions()
    monkeypatch.delenv("DPL_EXECUTOR")
    defs = build_definitions()
    assert defs.resolve_job_def("offline_audio").executor_def is in_process_by_default_executor
    gpu_ops = {"wav2vec", "emoca", "rendering"}
    ops = {
        asset.node_def.name: asset.node_def.tags
        for asset in defs.assets or []
        if isinstance(asset, dg.AssetsDefinition)
    }
    assert gpu_ops | {"wav", "images"} <= set(ops)
    for op, tags in ops.items():
        k8s = json.loads(tags.get("dagster-k8s/config", "{}"))  # Dagster keeps tags as text
        container = k8s.get("container_config", {})
        gpus = container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu")
        queue = tags.get("dagster-celery/queue")
        assert (gpus, queue) == (("1", "gpu") if op in gpu_ops else (None, "cpu")), op
