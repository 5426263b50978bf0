"""The hook's pure parts: which process is a Ray worker, what its title says it runs, which
names start a recording, and the environment `ray start` gets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rayguard_node.contract.profiles import file_name, parse_file_name, profile_dir
from rayguard_node.profiling.hook import (DIR_ENV, FILE_MAX_ENV, HOOK_DIR, MATCH_ENV, environment,
                                          is_ray_worker, name_matches, task_name)

WORKER = "/venv/lib/python3.11/site-packages/ray/_private/workers/default_worker.py"
SETUP = "/venv/lib/python3.11/site-packages/ray/_private/workers/setup_worker.py"


@pytest.mark.parametrize("argv, expected", [
    ([WORKER, "--node-ip-address=1.2.3.4"], True),
    ([SETUP, WORKER, "--node-ip-address=1.2.3.4"], False),  # execs the worker: named only as an argument
    (["/venv/bin/ray", "start", "--block"], False),
    (["-c"], False),
    ([], False),
])
def test_only_the_worker_script_itself_is_a_worker(argv: list[str], expected: bool) -> None:
    assert is_ray_worker(argv) is expected


@pytest.mark.parametrize("title, name", [
    ("ray::hog", "hog"), ("ray::Holder.grow", "Holder.grow"), ("ray::Holder", "Holder"),
    ("ray::hog some padding", "hog"), ("ray::IDLE", None), ("ray::IDLE_SpillWorker", None),
    ("ray::", None), ("/venv/bin/python default_worker.py", None), ("", None),
])
def test_the_title_names_the_task_or_actor(title: str, name: str | None) -> None:
    assert task_name(title) == name


@pytest.mark.parametrize("name, globs, expected", [
    ("hog", ["hog*"], True), ("hog_big", ["hog*"], True), ("ahog", ["hog*"], False),
    ("Holder.grow", ["Holder"], True),  # the class matches every method
    ("Holder.grow", ["Holder.gr*"], True), ("Holder.grow", ["Holder.put"], False),
    ("Hog", ["hog*"], False),  # case-sensitive, as Ray's names are
    ("train", ["hog*", "tr?in"], True), ("x", ["*"], True),
])
def test_globs(name: str, globs: list[str], expected: bool) -> None:
    assert name_matches(name, globs) is expected


def test_ray_gets_the_hook_first_and_keeps_its_own_path(tmp_path: Path) -> None:
    env = environment(tmp_path, ("hog*", "Trainer"), 64 << 20, {"PYTHONPATH": "/mine:/other"})
    assert env["PYTHONPATH"].split(os.pathsep) == [str(HOOK_DIR), "/mine", "/other"]
    assert env[DIR_ENV] == str(tmp_path / "session_latest" / "logs" / "memray") == str(profile_dir(tmp_path))
    assert env[MATCH_ENV] == "hog*,Trainer" and env[FILE_MAX_ENV] == str(64 << 20)
    assert environment(tmp_path, ("*",), 1, {})["PYTHONPATH"] == str(HOOK_DIR)
    assert (HOOK_DIR / "sitecustomize.py").is_file() and not (HOOK_DIR / "__init__.py").exists()
    # The hook reads the variable by its literal name, to import nothing where profiles are off.
    assert f'os.environ.get("{DIR_ENV}")' in (HOOK_DIR / "sitecustomize.py").read_text()


def test_file_names_carry_pid_and_start_time() -> None:
    assert file_name(4242, 1191011) == "4242-1191011.bin"
    assert parse_file_name("4242-1191011.bin") == (4242, 1191011)
    for other in ("profiles.json", "4242.bin", "4242-1.bin.tmp", "../1-2.bin", "a-1.bin", "-1-2.bin"):
        assert parse_file_name(other) is None
