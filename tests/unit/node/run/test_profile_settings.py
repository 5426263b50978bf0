"""RAYGUARD_PROFILE, RAYGUARD_PROFILE_MATCH and RAYGUARD_PROFILE_MAX_BYTES: parsed strictly, into
RunConfig.profile, and what `ray start` then gets."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from rayguard_node.errors import InvalidSetting
from rayguard_node.profiling.hook import DIR_ENV, FILE_MAX_ENV, HOOK_DIR, MATCH_ENV
from rayguard_node.profiling.index import ProfileSettings
from rayguard_node.run.config import run_config
from rayguard_node.run.options import RUN_OPTIONS, resolve

MiB = 1 << 20


def config(**env: str):
    return run_config({"role": "head", **resolve(RUN_OPTIONS, argparse.Namespace(), env)})


def test_off_by_default() -> None:
    assert config().profile == ProfileSettings(False, ("*",), 1 << 30)


@pytest.mark.parametrize("value, expected", [("true", True), ("True", True), ("1", True),
                                             ("false", False), ("0", False), (" FALSE ", False)])
def test_on_or_off(value: str, expected: bool) -> None:
    assert config(RAYGUARD_PROFILE=value).profile.enabled is expected


@pytest.mark.parametrize("value", ["yes", "on", "2", "tru"])
def test_anything_else_is_refused(value: str) -> None:
    with pytest.raises(InvalidSetting, match="RAYGUARD_PROFILE.*must be true or false"):
        config(RAYGUARD_PROFILE=value)


def test_globs_and_the_cap() -> None:
    profile = config(RAYGUARD_PROFILE="true", RAYGUARD_PROFILE_MATCH="hog*, Trainer ,x?y",
                     RAYGUARD_PROFILE_MAX_BYTES="256Mi").profile
    assert profile == ProfileSettings(True, ("hog*", "Trainer", "x?y"), 256 * MiB)
    assert profile.file_max_bytes == 64 * MiB


@pytest.mark.parametrize("value", ["hog*,", ",hog", "a,,b", " ", ",".join(["g"] * 17), "x" * 129])
def test_bad_globs_are_refused(value: str) -> None:
    with pytest.raises(InvalidSetting) as caught:
        config(RAYGUARD_PROFILE_MATCH=value)
    assert "RAYGUARD_PROFILE_MATCH" in str(caught.value)


@pytest.mark.parametrize("value", ["63Mi", "0", "1k"])
def test_too_small_a_cap_is_refused(value: str) -> None:
    with pytest.raises(InvalidSetting, match="RAYGUARD_PROFILE_MAX_BYTES.*at least 64Mi"):
        config(RAYGUARD_PROFILE_MAX_BYTES=value)


def test_the_flags_win_over_the_env() -> None:
    args = argparse.Namespace(profile="false", profile_match="a", profile_max_bytes="128Mi")
    values = resolve(RUN_OPTIONS, args, {"RAYGUARD_PROFILE": "true", "RAYGUARD_PROFILE_MATCH": "b"})
    assert run_config({"role": "head", **values}).profile == ProfileSettings(False, ("a",), 128 * MiB)


def test_ray_start_gets_the_hook_only_when_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rayguard_node.run import supervisor as module
    from rayguard_node.sizing.plan import BudgetSettings, NodeFacts, make_plan

    started: list[dict[str, str]] = []

    class Popen:
        stdout: list[bytes] = []

        def __init__(self, argv: list[str], env: dict[str, str], **_kw: object) -> None:
            started.append(env)

    monkeypatch.setattr(module.subprocess, "Popen", Popen)
    plan = make_plan("head", NodeFacts(limit_bytes=4 << 30, limit_source="test", ray_sees_limit=True),
                     BudgetSettings(num_cpus=0))
    monkeypatch.setenv("PYTHONPATH", "/mine")
    for on in (True, False):
        cfg = config(RAYGUARD_PROFILE=str(on).lower(), RAYGUARD_PROFILE_MATCH="hog*",
                     RAYGUARD_RAY_TEMP_DIR=str(tmp_path))
        module.Supervisor(cfg, plan)._start_ray(tmp_path / "token")
    on_env, off_env = started
    assert on_env["PYTHONPATH"].split(os.pathsep) == [str(HOOK_DIR), "/mine"]
    assert on_env[DIR_ENV] == str(tmp_path / "session_latest" / "logs" / "memray")
    assert on_env[MATCH_ENV] == "hog*" and on_env[FILE_MAX_ENV] == str(256 * MiB)
    assert off_env["PYTHONPATH"] == "/mine" and DIR_ENV not in off_env
