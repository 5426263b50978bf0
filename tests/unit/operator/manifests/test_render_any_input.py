"""`rayguard render` never prints a traceback, whatever the file holds: every refusal is exit
status 2 with one line. Hand-picked files, then the example with random fields replaced by
values of the wrong type, size or shape (a fixed seed, so a failure can be replayed)."""

from __future__ import annotations

import contextlib
import copy
import io
import random
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from rayguard_operator.cli import main
from tests.paths import REPO_ROOT

EXAMPLE = yaml.safe_load((REPO_ROOT / "examples" / "raycluster.yaml").read_text())
ODD_VALUES: list[Any] = [None, 0, -1, 1e400, "1e400", "", "x", [], {}, [1], {"a": 1}, {0: "int key"}, True,
                         "99999999999Ei", "\x00", 2**70, "٤Gi", -0.0, float("nan"), "-1Gi", 10**6]


def render(path: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["render", "-f", str(path)])
    return code, out.getvalue(), err.getvalue()


def assert_rendered_or_refused(path: Path) -> int:
    code, out, err = render(path)
    assert code in (0, 2), (code, err)
    if code == 2:
        assert len(err.strip().splitlines()) == 1 and err.startswith("rayguard render: "), err
        assert out == ""
    else:
        assert yaml.safe_load(out)["kind"] == "List"
    return code


ALIAS_BOMB = "\n".join(["a: &a [x, x, x, x, x, x, x, x, x, x]"] + [
    f"{chr(97 + i)}: &{chr(97 + i)} [" + ", ".join([f"*{chr(96 + i)}"] * 10) + "]" for i in range(1, 9)])


@pytest.mark.parametrize("content, words", [
    (b"\x00\xff\xfe", "not UTF-8"),
    (ALIAS_BOMB.encode(), "too large or too deeply nested"),
    (("a: " + "[" * 3000 + "]" * 3000).encode(), "nested too deeply"),
    (b"", "found 0"),
    (b"- 1\n- 2\n", "RayCluster"),
    (b"apiVersion: rayguard.dev/v1\nkind: RayCluster\nmetadata: {name: x}\nspec: 5\n", "spec"),
    (yaml.safe_dump({**EXAMPLE, "spec": {**EXAMPLE["spec"], "image": 2**70}}).encode(), "64 bits"),
    (yaml.safe_dump({**EXAMPLE, "spec": {**EXAMPLE["spec"], "memory": {0: 1}}}).encode(), "keys must be strings"),
    (b"apiVersion: rayguard.dev/v1\nkind: RayCluster\nmetadata: {name: x}\nspec: {memory: {heapFraction: .nan}}\n",
     "nan"),
], ids=["binary", "alias-bomb", "deep", "empty", "a-list", "spec-not-object", "int-over-64-bits", "int-key",
        "nan"])
def test_hand_picked_files_are_refused_in_one_line(tmp_path: Path, content: bytes, words: str) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_bytes(content)
    code, _out, err = render(path)
    assert code == 2 and len(err.strip().splitlines()) == 1 and words in err, err


def test_a_directory_is_refused(tmp_path: Path) -> None:
    code, _out, err = render(tmp_path)
    assert code == 2 and "cannot read" in err


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        yield from _paths(value, prefix + (key,))


def _mutated(rng: random.Random) -> dict[str, Any]:
    body, paths = copy.deepcopy(EXAMPLE), list(_paths(EXAMPLE))
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(paths[1:])
        node: Any = body
        try:
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = copy.deepcopy(rng.choice(ODD_VALUES))
        except (KeyError, IndexError, TypeError):
            pass  # an earlier change replaced a parent
    return body


def test_the_example_renders() -> None:
    assert assert_rendered_or_refused(REPO_ROOT / "examples" / "raycluster.yaml") == 0


def test_random_damage_is_rendered_or_refused_in_one_line(tmp_path: Path) -> None:
    rng = random.Random(20261127)
    codes = []
    for trial in range(250):
        path = tmp_path / f"cluster-{trial}.yaml"
        path.write_text(yaml.safe_dump(_mutated(rng)))
        codes.append(assert_rendered_or_refused(path))
    assert codes.count(2) > 100  # most damage is refused, and the test did damage
