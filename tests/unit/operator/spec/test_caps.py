"""The scale caps in the model: the CRD's numbers, enforced again on bodies no server checked
(render's files) and on objects stored before the CRD had them (SpecValid=False)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from rayguard_operator.errors import SpecError
from rayguard_operator.settings import OperatorSettings
from rayguard_operator.spec.model import MAX_CLUSTER_WORKERS, MAX_GROUP_REPLICAS, parse_cluster
from tests.crd_schema import validate_against_crd
from tests.paths import REPO_ROOT

SETTINGS = OperatorSettings()
CAP, TOTAL = MAX_GROUP_REPLICAS, MAX_CLUSTER_WORKERS


def with_groups(*replicas: int, **fields: Any) -> dict[str, Any]:
    body = yaml.safe_load((REPO_ROOT / "examples" / "raycluster-minimal.yaml").read_text())
    group = body["spec"]["workerGroups"][0]
    body["spec"]["workerGroups"] = [dict(copy.deepcopy(group), name=f"g{i}", replicas=n, **fields)
                                    for i, n in enumerate(replicas)]
    return body


def test_the_caps_are_the_designed_ones() -> None:
    assert (CAP, TOTAL) == (1000, 1000)


@pytest.mark.parametrize("replicas", [(CAP,), (TOTAL // 2,) * 2, (TOTAL // 32,) * 32],
                         ids=["group-at-cap", "cluster-at-cap", "32-groups-at-cap"])
def test_at_the_caps_the_model_and_the_crd_accept(replicas: tuple[int, ...]) -> None:
    body = with_groups(*replicas)
    assert validate_against_crd(body) == []
    cluster = parse_cluster(body, SETTINGS)
    assert sum(g.replicas for g in cluster.worker_groups) == sum(replicas)


@pytest.mark.parametrize("field", ["replicas", "minReplicas", "maxReplicas"])
def test_a_group_field_above_the_cap_is_refused(field: str) -> None:
    body = with_groups(1)
    body["spec"]["workerGroups"][0].update({"maxReplicas": CAP + 1, field: CAP + 1})
    assert validate_against_crd(body)  # the CRD refuses it too
    with pytest.raises(SpecError) as caught:
        parse_cluster(body, SETTINGS)
    # The field itself is named (maxReplicas, also above the cap here, is checked after it).
    assert caught.value.path == f"spec.workerGroups[0].{field}"
    assert str(caught.value) == f"spec.workerGroups[0].{field}: must be at most {CAP}, found {CAP + 1}"


def test_workers_above_the_cluster_cap_are_refused() -> None:
    body = with_groups(TOTAL // 2, TOTAL - TOTAL // 2, 1)
    assert any(e.startswith("spec.workerGroups: the sum of replicas") for e in validate_against_crd(body))
    with pytest.raises(SpecError) as caught:
        parse_cluster(body, SETTINGS)
    assert str(caught.value) == (f"spec.workerGroups: the sum of replicas over all worker groups must be at most"
                                 f" {TOTAL}, found {TOTAL + 1}")


def test_max_replicas_does_not_count_towards_the_cluster_cap() -> None:
    """The default maxReplicas is the group cap; only replicas make pods."""
    body = with_groups(*(1,) * 32, maxReplicas=CAP)
    assert validate_against_crd(body) == []
    assert len(parse_cluster(body, SETTINGS).worker_groups) == 32
