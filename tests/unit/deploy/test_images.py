"""The images are reproducible: an exact base tag, every Python package at the version in
constraints.txt, and that file matching what this environment really has installed. They
install into a virtualenv (so a Debian base, whose system pip is externally managed, works as
well as python:3.11-slim), keep no build tools, and run as uid 1000. tests/containers builds
and runs them."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest

from tests.paths import REPO_ROOT

DOCKERFILES = [REPO_ROOT / "node_image" / "Dockerfile", REPO_ROOT / "operator" / "Dockerfile"]
CONSTRAINTS = REPO_ROOT / "constraints.txt"
# python:MAJOR.MINOR.PATCH-slim-DEBIAN (a python:3.11-slim), optionally @sha256:..., optionally a
# named build stage.
EXACT_BASE = re.compile(r"^FROM python:3\.\d+\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?( AS [a-z]+)?$")


def pins() -> dict[str, str]:
    found = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin (name==version)"
            found[name.lower().replace("_", "-")] = version
    return found


def test_constraints_pin_ray_and_the_operators_stack() -> None:
    pinned = pins()
    assert pinned["ray"] == "2.60.0"
    for name in ("kopf", "kubernetes", "psutil", "pyyaml", "redis", "prometheus-client"):
        assert name in pinned, name


def test_what_is_installed_is_what_constraints_txt_says() -> None:
    installed = {d.metadata["Name"].lower().replace("_", "-"): d.version for d in metadata.distributions()}
    wrong = {name: (version, installed[name]) for name, version in pins().items()
             if name in installed and installed[name] != version}
    assert wrong == {}, "installed versions differ from constraints.txt: (pinned, installed)"
    # The project's own runtime dependencies are all pinned.
    requires = metadata.requires("rayguard") or []
    names = {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].lower().replace("_", "-")
             for r in requires if "extra ==" not in r}
    assert names - set(pins()) == set()


def with_arg_defaults(line: str, text: str) -> str:
    """A FROM line with each `${NAME}` replaced by its `ARG NAME=default` (a build-arg may swap the
    base, e.g. for a CUDA image; the default build stays pinned)."""
    defaults = dict(re.findall(r"^ARG ([A-Z_]+)=(\S+)$", text, flags=re.M))
    return re.sub(r"\$\{([A-Z_]+)\}", lambda m: defaults.get(m.group(1), m.group(0)), line)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_dockerfile_pins_its_base_and_its_packages(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    froms = [with_arg_defaults(line.strip(), text) for line in text.splitlines() if line.startswith("FROM ")]
    assert froms and all(EXACT_BASE.match(line) for line in froms), froms
    installs = [line for line in text.splitlines() if "pip install" in line]
    assert installs and all("-c /src/constraints.txt" in line for line in installs), installs
    assert "constraints.txt" in text.split("pip install", 1)[0]  # copied before the first install


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_nothing_is_fetched_at_run_time(dockerfile: Path) -> None:
    runtime = [line for line in dockerfile.read_text().splitlines()
               if line.startswith(("CMD", "ENTRYPOINT"))]
    assert runtime and not any(word in line for line in runtime for word in ("pip", "curl", "wget", "apt"))


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_the_base_is_a_build_arg_with_a_pinned_python_3_11_slim_default(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    assert "FROM ${BASE_IMAGE}" in text.splitlines()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?$", text, flags=re.M)
    assert EXACT_BASE.match(with_arg_defaults("FROM ${BASE_IMAGE}", text))
    assert not EXACT_BASE.match(with_arg_defaults("FROM ${BASE_IMAGE}", "ARG BASE_IMAGE=python:3.11-slim"))


def stages(text: str) -> list[str]:
    return re.split(r"^FROM ", text, flags=re.M)[1:]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_a_virtualenv_is_built_in_one_stage_and_copied_alone_into_the_image(dockerfile: Path) -> None:
    build, final = stages(dockerfile.read_text())
    assert build.startswith("${BASE_IMAGE} AS venv") and "RUN python3 -m venv /opt/rayguard" in build
    assert "PATH=/opt/rayguard/bin:$PATH" in build and "PATH=/opt/rayguard/bin:$PATH" in final
    assert "pip uninstall -y -q pip setuptools" in build  # nothing installs at run time
    assert final.startswith("${BASE_IMAGE}\n")
    assert "COPY --from=venv /opt/rayguard /opt/rayguard" in final
    assert "pip install" not in final and "COPY pyproject.toml" not in final


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_the_image_keeps_no_build_tools_and_runs_as_uid_1000(dockerfile: Path) -> None:
    final = stages(dockerfile.read_text())[-1]
    for tool in ("gcc", "g++", "build-essential", "make ", "-dev ", "git "):
        assert tool not in final, tool
    assert final.rstrip().splitlines().count("USER 1000:1000") == 1
    assert "--uid 1000" in final


def test_a_loose_pin_would_be_refused() -> None:
    assert not EXACT_BASE.match("FROM python:3.11-slim")
    assert not EXACT_BASE.match("FROM python:latest")
    assert EXACT_BASE.match("FROM python:3.11.14-slim-bookworm@sha256:" + "a" * 64)
