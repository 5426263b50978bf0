"""Fixtures for the container tests (tests/containers, marker `containers`): rendered pods run
as podman containers from the built images (`rayguard local up --runtime podman`).

- Where podman cannot run rayguard's containers (podman or its OCI runtime missing, not root)
  every test skips, and the reason says which. On a root Debian machine with podman and runc
  (`make podman` installs them) they run.
- They need rayguard/node:0.1.0: `make images` builds it. Where it is missing, the `images`
  fixture builds both with scripts/build-images.sh, and fails, with the build's tail, if that fails.
- podman reads CONTAINERS_CONF; unless set, it is scripts/podman/containers.conf (runc, no default
  ulimits), as the Makefile's targets set it.

`make test` leaves them out (`-m "not containers"`); `make test-containers` runs them.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from rayguard_operator.local.podman_args import CGROUP_PARENT_PREFIX
from tests.paths import REPO_ROOT

IMAGES = ("rayguard/node:0.1.0", "rayguard/operator:0.1.0")
BUILD_TIMEOUT_S = 1800


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.containers)


@pytest.fixture(scope="session")
def podman_ready() -> None:
    os.environ.setdefault("CONTAINERS_CONF", str(REPO_ROOT / "scripts" / "podman" / "containers.conf"))
    from rayguard_operator.local.containers import podman_problem
    problem = podman_problem()
    if problem is not None:
        pytest.skip(f"podman cannot run rayguard's containers here: {problem}")


@pytest.fixture(scope="session")
def images(podman_ready: None) -> tuple[str, ...]:
    missing = [i for i in IMAGES
               if subprocess.run(["podman", "image", "exists", i], timeout=60).returncode != 0]
    if missing:
        build = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "build-images.sh")], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
        if build.returncode != 0:
            pytest.fail(f"{', '.join(missing)} missing and scripts/build-images.sh failed:\n"
                        + (build.stdout + build.stderr)[-3000:], pytrace=False)
    return IMAGES


def rayguard_containers() -> list[str]:
    """Every container a `rayguard local up --runtime podman` made, running or not."""
    listed = subprocess.run(["podman", "ps", "--all", "--filter", "label=rayguard.dev/local-run",
                             "--format", "{{.Names}}"], capture_output=True, text=True, timeout=60, check=True)
    return listed.stdout.split()


def podman_cgroups() -> list[str]:
    """Cgroups podman made for runs, in every hierarchy: each run's parent
    (`rayguard-podman-<run>`, holding its containers and their conmon), and podman's default
    `libpod_parent`, which a container started without the run's parent would leave behind."""
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()
              if line.split()[2:3] in (["cgroup"], ["cgroup2"])]
    return sorted(str(d) for m in mounts for d in Path(m).glob("*")
                  if d.is_dir() and (d.name == "libpod_parent" or d.name.startswith(CGROUP_PARENT_PREFIX)))
