"""The pod–runtime contract (rayguard_node.contract.settings) holds on both sides and in the
README: what the operator sets, the node reads; what the node reads, the README documents."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from rayguard_node.cli import build_parser
from rayguard_node.contract import settings as contract
from rayguard_node.run.config import RunConfig
from rayguard_node.sizing.plan import BudgetSettings
from rayguard_node.sizing.quantity import parse_bytes
from rayguard_operator.manifests.render import load_cluster
from rayguard_operator.spec.model import parse_cluster
from rayguard_operator.manifests.pod import build_pod
from rayguard_operator.settings import OperatorSettings
from tests.paths import REPO_ROOT

EXAMPLES = sorted((REPO_ROOT / "examples").glob("raycluster*.yaml"))


def _subparser(name: str) -> argparse.ArgumentParser:
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return commands.choices[name]


def node_env_names(command: str) -> set[str]:
    """The env vars `rayguard-node COMMAND` reads, from its parser's help ("[env NAME]")."""
    names = set()
    for action in _subparser(command)._actions:
        text = action.help or ""
        if "[env " in text:
            names.add(text.rsplit("[env ", 1)[1].rstrip("]"))
    return names


def built_env_names(example: Path) -> set[str]:
    return built_env_names_of(load_cluster(example))


def built_env_names_of(body: dict[str, object]) -> set[str]:
    cluster = parse_cluster(body, OperatorSettings())
    names: set[str] = set()
    for group in cluster.groups:
        container = build_pod(cluster, group, "x")["spec"]["containers"][0]
        names |= {entry["name"] for entry in container["env"]}
    return names


def test_examples_exist() -> None:
    assert EXAMPLES, "examples/raycluster*.yaml"


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_the_pod_builder_sets_only_what_the_node_reads(example: Path) -> None:
    built = built_env_names(example)
    unread = built - node_env_names("run") - contract.PASSED_THROUGH
    assert unread == set()
    # ... and exactly the variables the contract says the operator sets.
    assert built <= contract.POD_ENV
    # NUM_CPUS only when no CPU limit exists; the profiling settings only where a group profiles;
    # NUM_GPUS and RAY_RESOURCES only where there is something to tell Ray.
    assert contract.POD_ENV - built <= {contract.NUM_CPUS.env} | {s.env for s in contract.PROFILE_SETTINGS} \
        | {s.env for s in contract.ACCELERATOR_SETTINGS} | {s.env for s in contract.GCS_SETTINGS} \
        | {s.env for s in contract.AUTOSCALER_SETTINGS}


def test_a_profiling_group_gets_every_profiling_setting() -> None:
    body = load_cluster(EXAMPLES[0])
    body["spec"]["memory"] = {"profiling": {"enabled": True}}
    assert {s.env for s in contract.PROFILE_SETTINGS} <= built_env_names_of(body)
    assert not {s.env for s in contract.PROFILE_SETTINGS} & built_env_names(EXAMPLES[0])


def test_the_node_reads_every_contract_setting() -> None:
    assert node_env_names("run") == {s.env for s in contract.SETTINGS}
    assert node_env_names("plan") == {s.env for s in (contract.ROLE,) + contract.BUDGET}


def test_every_setting_has_its_row_in_the_readme() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    assert contract.readme_table() in readme, "regenerate the table: print(contract.readme_table())"
    for setting in contract.SETTINGS:
        assert f"| `{setting.env}` | `{setting.flag}` |" in readme


def test_a_missing_row_would_be_noticed() -> None:
    table = contract.readme_table()
    assert f"`{contract.GRACE_SECONDS.env}`" in table
    without = "\n".join(line for line in table.splitlines() if contract.GRACE_SECONDS.env not in line)
    assert contract.readme_table() not in without


def test_the_overlay_may_not_set_what_the_operator_sets() -> None:
    from rayguard_operator import names

    assert names.RESERVED_ENV == contract.POD_ENV
    assert contract.ROLE.env in names.RESERVED_ENV and contract.GUARD_REFRESH_MS.env not in names.RESERVED_ENV


BUDGET_DEFAULTS = {
    "object_store_fraction": 0.3, "redis_fraction": 0.3, "heap_fraction": 0.5, "usage_threshold": 0.95,
    "monitor_refresh_ms": 250, "guard_refresh_ms": 50,
}


@pytest.mark.parametrize("key, value", sorted(BUDGET_DEFAULTS.items()))
def test_stated_budget_defaults_are_the_codes(key: str, value: object) -> None:
    assert getattr(BudgetSettings(), key) == value
    assert contract.by_key(key).default == str(value)


@pytest.mark.parametrize("key", ["object_store_max_bytes", "redis_max_bytes"])
def test_stated_byte_defaults_are_the_codes(key: str) -> None:
    assert getattr(BudgetSettings(), key) == parse_bytes(contract.by_key(key).default, key)


@pytest.mark.parametrize("key", ["redis_port", "health_port", "grace_seconds"])
def test_stated_run_defaults_are_the_codes(key: str) -> None:
    assert float(getattr(RunConfig(role="head"), key)) == float(contract.by_key(key).default)
