"""Specs the CRD cannot reject: SpecValid=False, one Warning event, and no pod touched,
while every other cluster carries on. The operator runs under kopf against the emulator."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.crd_schema import validate_against_crd

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(180)


def cluster(name: str) -> dict[str, Any]:
    body = yaml.safe_load((REPO / "examples" / "raycluster-minimal.yaml").read_text())
    body["metadata"]["name"] = name
    return body


def invalid(name: str) -> dict[str, Any]:
    """Fractions that leave the head no heap: the schema takes each, the sum cannot work."""
    body = cluster(name)
    body["spec"]["head"]["memory"] = {"objectStoreFraction": 0.6, "redisFraction": 0.5}
    assert validate_against_crd(body) == []  # the API server would accept it
    return body


def test_invalid_spec_is_reported_and_creates_nothing(operator: Any) -> None:
    uid = operator.create(invalid("bad"))["metadata"]["uid"]
    operator.wait(lambda: operator.status("bad").get("phase") == "Invalid", "phase Invalid")
    spec_valid = operator.condition("bad", "SpecValid")
    assert (spec_valid["status"], spec_valid["reason"]) == ("False", "InvalidSpec")
    assert spec_valid["message"].startswith("spec.head.memory.objectStoreFraction: ")
    assert spec_valid["observedGeneration"] == 1
    assert operator.condition("bad", "Ready")["status"] == "False"

    operator.settle("bad")
    [event] = operator.events(reason="InvalidSpec", cluster="bad")  # once, not once per resync
    assert event["type"] == "Warning" and event["involvedObject"]["uid"] == uid
    assert "spec.head.memory.objectStoreFraction" in event["message"]
    assert operator.pods("bad") == []
    assert operator.events(reason="Created", cluster="bad") == []

    since = operator.api.emulator.mark()
    operator.wait_reconciles("bad", passes=3)
    assert operator.api.emulator.writes_by_resource(since=since) == {}

    # Fixed: the cluster is built and SpecValid turns True.
    operator.patch_spec("bad", {"head": {"memory": {"objectStoreFraction": 0.3, "redisFraction": 0.3}}})
    operator.wait(lambda: len(operator.pods("bad")) == 2, "the pods of the fixed cluster")
    operator.wait(lambda: operator.condition("bad", "SpecValid").get("status") == "True", "SpecValid=True")
    assert operator.status("bad")["observedGeneration"] == 2


def test_invalid_update_leaves_running_pods_alone(operator: Any) -> None:
    body = cluster("live")
    operator.create(body)
    operator.wait(lambda: len(operator.pods("live")) == 2, "the pods")
    for pod in operator.pod_names("live"):
        operator.set_ready(pod)
    operator.wait(lambda: operator.status("live").get("phase") == "Ready", "phase Ready")
    before = operator.pod_names("live")

    spec = copy.deepcopy(body["spec"])
    spec["workerGroups"][0]["rayStartParams"] = {"object-store-memory": 1000000000}  # rayguard's flag
    operator.patch_spec("live", spec)
    operator.wait(lambda: operator.status("live").get("phase") == "Invalid", "phase Invalid")
    message = operator.condition("live", "SpecValid")["message"]
    assert message.startswith("spec.workerGroups[0].rayStartParams.object-store-memory: ")
    operator.settle("live")
    assert operator.pod_names("live") == before
    status = operator.status("live")
    assert status["head"]["ready"] is True and status["workersReady"] == 1  # last known, kept
    assert operator.condition("live", "HeadReady")["status"] == "True"
    assert len(operator.events(reason="InvalidSpec", cluster="live")) == 1


def test_two_clusters_one_invalid(operator: Any) -> None:
    operator.create(invalid("broken"))
    operator.create(cluster("good"))
    operator.wait(lambda: len(operator.pods("good")) == 2, "the valid cluster's pods")
    for pod in operator.pod_names("good"):
        operator.set_ready(pod)
    operator.wait(lambda: operator.status("good").get("phase") == "Ready", "the valid cluster Ready")
    operator.wait(lambda: operator.status("broken").get("phase") == "Invalid", "the other Invalid")
    operator.settle("good")
    operator.settle("broken")

    assert operator.pods("broken") == []
    assert operator.events(reason="InvalidSpec", cluster="good") == []
    assert operator.condition("good", "SpecValid")["status"] == "True"
    # The valid one still reacts while the invalid one is around.
    [worker] = operator.pod_names("good", "cpu")
    operator.delete_pod(worker)
    operator.wait(lambda: len(operator.pod_names("good", "cpu") - {worker}) == 1, "a replacement worker")
