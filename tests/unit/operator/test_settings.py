"""Operator settings from env, the `rayguard operator` command line, overlays and events."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest
import yaml

from rayguard_operator.manifests import events
from rayguard_operator import names
from rayguard_operator.cli import kopf_run_args
from rayguard_operator.errors import SpecError
from rayguard_operator.spec.overlay import check_overlay, merge_overlay
from rayguard_operator.settings import OperatorSettings, SettingsError
from tests.paths import REPO_ROOT


def test_defaults() -> None:
    settings = OperatorSettings.from_env({})
    assert settings == OperatorSettings("rayguard/node:0.1.0", (), 60.0, "json")
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.node_image = "x"  # type: ignore[misc]


def test_from_env() -> None:
    settings = OperatorSettings.from_env({
        "RAYGUARD_OPERATOR_NODE_IMAGE": "reg/node:2", "RAYGUARD_OPERATOR_NAMESPACES": " ray, ml ,,ray",
        "RAYGUARD_OPERATOR_RESYNC_SECONDS": "15", "RAYGUARD_OPERATOR_LOG_FORMAT": "plain"})
    assert settings == OperatorSettings("reg/node:2", ("ray", "ml"), 15.0, "plain")


@pytest.mark.parametrize("env,word", [
    ({"RAYGUARD_OPERATOR_RESYNC_SECONDS": "soon"}, "RAYGUARD_OPERATOR_RESYNC_SECONDS"),
    ({"RAYGUARD_OPERATOR_RESYNC_SECONDS": "0"}, "above 0"),
    ({"RAYGUARD_OPERATOR_LOG_FORMAT": "xml"}, "json or plain"),
    ({"RAYGUARD_OPERATOR_NAMESPACES": "Bad_NS"}, "RAYGUARD_OPERATOR_NAMESPACES"),
])
def test_bad_env(env: dict[str, str], word: str) -> None:
    with pytest.raises(SettingsError, match=word):
        OperatorSettings.from_env(env)


def test_pod_security_level() -> None:
    assert OperatorSettings.from_env({}).pod_security == "restricted"
    for level in ("restricted", "baseline", "privileged"):
        assert OperatorSettings.from_env({"RAYGUARD_OPERATOR_POD_SECURITY": f" {level.upper()} "}).pod_security == level
    with pytest.raises(SettingsError) as caught:
        OperatorSettings.from_env({"RAYGUARD_OPERATOR_POD_SECURITY": "strict"})
    assert str(caught.value) == ("RAYGUARD_OPERATOR_POD_SECURITY='strict': expected restricted, baseline"
                                 " or privileged")


def test_oom_threads() -> None:
    assert OperatorSettings.from_env({}).oom_threads == 32 == OperatorSettings().oom_threads
    assert OperatorSettings.from_env({"RAYGUARD_OPERATOR_OOM_THREADS": " 8 "}).oom_threads == 8
    assert OperatorSettings.from_env({"RAYGUARD_OPERATOR_OOM_THREADS": ""}).oom_threads == 32
    assert OperatorSettings.from_env({"RAYGUARD_OPERATOR_OOM_THREADS": "1"}).oom_threads == 1
    assert OperatorSettings.from_env({"RAYGUARD_OPERATOR_OOM_THREADS": "1024"}).oom_threads == 1024


@pytest.mark.parametrize("raw,message", [
    ("many", "RAYGUARD_OPERATOR_OOM_THREADS='many': expected a whole number of threads, e.g. 32"),
    ("8.5", "RAYGUARD_OPERATOR_OOM_THREADS='8.5': expected a whole number of threads, e.g. 32"),
    ("-4", "RAYGUARD_OPERATOR_OOM_THREADS='-4': expected a whole number of threads, e.g. 32"),
    ("+8", "RAYGUARD_OPERATOR_OOM_THREADS='+8': expected a whole number of threads, e.g. 32"),
    ("1_000", "RAYGUARD_OPERATOR_OOM_THREADS='1_000': expected a whole number of threads, e.g. 32"),
    ("\u0668", "RAYGUARD_OPERATOR_OOM_THREADS='\u0668': expected a whole number of threads, e.g. 32"),
    ("0", "RAYGUARD_OPERATOR_OOM_THREADS='0': must be from 1 to 1024"),
    ("1025", "RAYGUARD_OPERATOR_OOM_THREADS='1025': must be from 1 to 1024"),
])
def test_bad_oom_threads(raw: str, message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        OperatorSettings.from_env({"RAYGUARD_OPERATOR_OOM_THREADS": raw})
    assert str(caught.value) == message


def test_the_operator_refuses_bad_oom_threads_in_one_line() -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RAYGUARD_")}
    environ["RAYGUARD_OPERATOR_OOM_THREADS"] = "0"
    result = subprocess.run([sys.executable, "-m", "rayguard_operator.cli", "operator"],
                            capture_output=True, text=True, timeout=60, env=environ)
    assert result.returncode == 2
    assert result.stderr == "rayguard: RAYGUARD_OPERATOR_OOM_THREADS='0': must be from 1 to 1024\n"


def test_the_chart_sets_oom_threads() -> None:
    chart = REPO_ROOT / "charts" / "rayguard"
    values = yaml.safe_load((chart / "values.yaml").read_text(encoding="utf-8"))
    assert values["oomThreads"] == OperatorSettings().oom_threads
    deployment = (chart / "templates" / "deployment.yaml").read_text(encoding="utf-8")
    assert "- name: RAYGUARD_OPERATOR_OOM_THREADS\n          value: {{ .Values.oomThreads | quote }}" in deployment


def test_the_chart_passes_pod_security() -> None:
    chart = REPO_ROOT / "charts" / "rayguard"
    values = yaml.safe_load((chart / "values.yaml").read_text(encoding="utf-8"))
    assert values["podSecurity"] == OperatorSettings().pod_security
    deployment = (chart / "templates" / "deployment.yaml").read_text(encoding="utf-8")
    assert "- name: RAYGUARD_OPERATOR_POD_SECURITY\n          value: {{ .Values.podSecurity | quote }}" in deployment


def test_kopf_args_from_settings() -> None:
    assert kopf_run_args(["--standalone"], OperatorSettings()) == [
        "run", "-m", "rayguard_operator.handlers", "--all-namespaces", "--log-format", "json", "--standalone"]
    narrowed = OperatorSettings(namespaces=("a", "b"), log_format="plain")
    assert kopf_run_args([], narrowed) == [
        "run", "-m", "rayguard_operator.handlers", "--namespace", "a", "--namespace", "b", "--log-format", "plain"]
    # What the command line says wins.
    assert kopf_run_args(["-n", "c", "--log-format=full"], narrowed) == [
        "run", "-m", "rayguard_operator.handlers", "-n", "c", "--log-format=full"]


def test_operator_command_reaches_kopf() -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RAYGUARD_")}
    result = subprocess.run([sys.executable, "-m", "rayguard_operator.cli", "operator", "--help"],
                            capture_output=True, text=True, timeout=60, env=environ)
    assert result.returncode == 0 and "--standalone" in result.stdout and "rayguard operator" in result.stdout
    environ["RAYGUARD_OPERATOR_LOG_FORMAT"] = "xml"
    result = subprocess.run([sys.executable, "-m", "rayguard_operator.cli", "operator"],
                            capture_output=True, text=True, timeout=60, env=environ)
    assert result.returncode == 2 and "RAYGUARD_OPERATOR_LOG_FORMAT" in result.stderr


def test_overlay_merge_rules() -> None:
    pod = {"metadata": {"labels": {"mine": "1"}, "annotations": {}},
           "spec": {"containers": [{"name": "ray-node", "env": [{"name": "A", "value": "1"}],
                                    "securityContext": {"runAsNonRoot": True}}],
                    "volumes": [{"name": "dshm"}], "securityContext": {"fsGroup": 1}}}
    template = check_overlay({"metadata": {"labels": {"mine": "overlay", "team": "x"}},
                              "spec": {"containers": [{"name": "ray-node", "env": [{"name": "B", "value": "2"}],
                                                       "securityContext": {"readOnlyRootFilesystem": True}},
                                                      {"name": "side", "image": "s"}],
                                       "volumes": [{"name": "extra"}], "securityContext": {"runAsUser": 5},
                                       "tolerations": [{"operator": "Exists"}]}}, "t")
    merged = merge_overlay(pod, template, {"allowPrivilegeEscalation": False})
    assert merged["metadata"]["labels"] == {"mine": "1", "team": "x"}  # ours win
    ray, side = merged["spec"]["containers"]
    assert ray["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
    assert ray["securityContext"] == {"runAsNonRoot": True, "readOnlyRootFilesystem": True}
    assert side == {"name": "side", "image": "s", "securityContext": {"allowPrivilegeEscalation": False}}
    assert merged["spec"]["volumes"] == [{"name": "dshm"}, {"name": "extra"}]
    assert merged["spec"]["securityContext"] == {"fsGroup": 1, "runAsUser": 5}
    assert merged["spec"]["tolerations"] == [{"operator": "Exists"}]
    assert pod["spec"]["volumes"] == [{"name": "dshm"}]  # the input is untouched


def test_overlay_shape_errors_name_the_path() -> None:
    with pytest.raises(SpecError, match=r"^t\.spec\.containers: expected a list"):
        check_overlay({"spec": {"containers": {"name": "x"}}}, "t")
    with pytest.raises(SpecError, match=r"^t\.kind: unknown field"):
        check_overlay({"kind": "Pod"}, "t")


def test_event_reasons_are_defined_once_and_built_as_core_events() -> None:
    assert (events.INVALID_SPEC, events.CREATED, events.DELETED) == ("InvalidSpec", "Created", "Deleted")
    assert {events.OOM_KILLED, events.MEMORY_MONITOR_KILL, events.KERNEL_OOM_KILL,
            events.RAY_MEMORY_MONITOR_KILL, events.MEMORY_QUOTA_EXCEEDED} == {
        "OOMKilled", "MemoryMonitorKill", "KernelOOMKill", "RayMemoryMonitorKill", "MemoryQuotaExceeded"}
    cluster = {"apiVersion": names.API_VERSION, "kind": names.KIND,
               "metadata": {"name": "demo", "namespace": "ns", "uid": "u"}}
    event = events.build_event(cluster, events.EventNote(events.WARNING, events.INVALID_SPEC, "x" * 2000),
                               "demo.1", "2030-01-01T00:00:00Z")
    assert event["involvedObject"] == {"apiVersion": "rayguard.dev/v1", "kind": "RayCluster", "name": "demo",
                                       "namespace": "ns", "uid": "u"}
    assert (event["type"], event["reason"], len(event["message"])) == ("Warning", "InvalidSpec", 1024)
