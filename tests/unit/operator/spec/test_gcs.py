"""spec.gcsFaultTolerance: parsing, the CRD's rules, the head's plan, and the pods' env (the
password and user by secretKeyRef only)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from rayguard_node.contract import settings as S
from rayguard_operator.errors import SpecError
from rayguard_operator.manifests.pod import build_pod
from rayguard_operator.settings import OperatorSettings
from rayguard_operator.spec.gcs import parse_gcs
from rayguard_operator.spec.model import parse_cluster
from tests.crd_schema import validate_against_crd
from tests.paths import REPO_ROOT

PASSWORD = "s3cret-value-never-in-a-pod"
FT = {"redisAddress": "redis.example:6379", "passwordSecret": {"name": "redis", "key": "password"},
      "usernameSecret": {"name": "redis", "key": "user"}}


def body(ft: Any = None, uid: str = "0b0e8b1c-5a6e-4c07-a1f4-3f0d3c8f4e21") -> dict[str, Any]:
    data = yaml.safe_load((REPO_ROOT / "examples" / "raycluster-minimal.yaml").read_text())
    data["metadata"]["uid"] = uid
    if ft is not None:
        data["spec"]["gcsFaultTolerance"] = ft
    return data


def test_the_namespace_defaults_to_the_uid_and_may_be_given() -> None:
    assert parse_gcs(FT, "the-uid").namespace == "the-uid"
    assert parse_gcs({**FT, "externalStorageNamespace": "team-a"}, "uid").key_prefix == "RAYteam-a@"
    assert parse_gcs({}, "uid") is None and parse_gcs(None, "uid") is None


@pytest.mark.parametrize("ft, field", [
    ({"redisAddress": "no-port"}, "spec.gcsFaultTolerance.redisAddress"),
    ({**FT, "externalStorageNamespace": "a@b"}, "spec.gcsFaultTolerance.externalStorageNamespace"),
    ({**FT, "passwordSecret": {"name": "redis"}}, "spec.gcsFaultTolerance.passwordSecret.key"),
    ({**FT, "passwd": "x"}, "spec.gcsFaultTolerance.passwd"),
    ({"usernameSecret": {"name": "r", "key": "u"}}, "spec.gcsFaultTolerance")])
def test_what_cannot_work_is_named(ft: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_gcs(ft, "uid")
    assert caught.value.path == field


def test_the_crd_takes_the_new_fields_and_refuses_an_at_sign() -> None:
    assert validate_against_crd(body({**FT, "externalStorageNamespace": "team-a"})) == []
    assert validate_against_crd(body({**FT, "externalStorageNamespace": "team@a"})) != []
    assert validate_against_crd(body({"usernameSecret": {"name": "r", "key": "u"}})) != []


def test_the_head_gives_the_redis_share_to_the_heap() -> None:
    off, on = (parse_cluster(body(ft), OperatorSettings()).head.plan for ft in (None, FT))
    assert off.redis_max_bytes > 0 and on.redis_max_bytes == 0
    assert on.heap_bytes == off.heap_bytes + int(off.redis_max_bytes * 0.5)


def test_every_pod_gets_the_ft_env_and_the_password_only_by_reference() -> None:
    cluster = parse_cluster(body(FT), OperatorSettings())
    for group in cluster.groups:
        pod = build_pod(cluster, group, "x")
        env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
        assert env[S.GCS_REDIS_ADDRESS.env]["value"] == "redis.example:6379"
        assert env[S.GCS_STORAGE_NAMESPACE.env]["value"] == cluster.uid
        assert env[S.GCS_REDIS_PASSWORD.env] == {"name": S.GCS_REDIS_PASSWORD.env, "valueFrom": {
            "secretKeyRef": {"name": "redis", "key": "password"}}}
        assert env[S.GCS_REDIS_USERNAME.env]["valueFrom"]["secretKeyRef"] == {"name": "redis", "key": "user"}
        assert all("value" not in env[s.env] for s in (S.GCS_REDIS_PASSWORD, S.GCS_REDIS_USERNAME))
        assert PASSWORD not in json.dumps(pod)


def test_without_fault_tolerance_no_pod_changes() -> None:
    cluster = parse_cluster(body(), OperatorSettings())
    names = {e["name"] for g in cluster.groups for e in build_pod(cluster, g, "x")["spec"]["containers"][0]["env"]}
    assert not names & {s.env for s in S.GCS_SETTINGS}
