"""Fixtures for the end-to-end tests on kind (tests/e2e).

They run against a kind cluster named `rayguard`, as `make kind-up` (scripts/kind-e2e.sh up)
leaves it: both images loaded, the operator chart installed, and the RayCluster `demo` from
examples/raycluster.yaml Ready.

- Without `kind`, `docker` with a reachable engine, `kubectl` or `helm`, or without that
  cluster, every test skips, and the reason names exactly what is missing.
- `RAYGUARD_E2E=1` asks for these tests: a missing cluster (or a cluster without the demo
  RayCluster) is set up with `scripts/kind-e2e.sh up`, and a missing tool fails the tests
  instead of skipping them. `make e2e` sets it, so a skip there can never pass for a success.

Every kubectl call goes through a private kubeconfig from `kind get kubeconfig`, never through
the current context, and every subprocess has a timeout. When a test fails, the report gets a
"kind diagnostics" section: the RayCluster, its pods and events, and the operator's log.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "kind-e2e.sh"

CLUSTER = "rayguard"  # the name in kind-config.yaml
RELEASE = "rayguard"
RELEASE_NAMESPACE = "rayguard-system"
RAYCLUSTER = "demo"  # examples/raycluster.yaml
NAMESPACE = "default"
CRD = "rayclusters.rayguard.dev"
CLUSTER_LABEL = "rayguard.dev/cluster"
NODE_TYPE_LABEL = "rayguard.dev/node-type"
CONTAINER = "ray-node"

WANTED_ENV = "RAYGUARD_E2E"
PROBE_TIMEOUT_S = 10  # each look at a tool while deciding whether to skip
KUBECTL_TIMEOUT_S = 60
SCRIPT_TIMEOUT_S = 60 * 60  # image builds, kind create, helm, and the wait for Ready
DIAGNOSTIC_TIMEOUT_S = 20
TOOLS = ("kind", "docker", "kubectl", "helm")


def e2e_wanted() -> bool:
    return os.environ.get(WANTED_ENV, "").strip() == "1"


def _first_line(text: str, limit: int = 120) -> str:
    lines = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    return lines[0][:limit] if lines else ""


def _probe(argv: list[str]) -> tuple[bool, str]:
    """(succeeded, why not) for a quick look at a tool; never hangs."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return False, f"`{' '.join(argv[:2])}` timed out after {PROBE_TIMEOUT_S}s"
    except OSError as error:
        return False, str(error)
    if done.returncode != 0:
        detail = _first_line(done.stderr) or _first_line(done.stdout) or f"exit status {done.returncode}"
        return False, detail
    return True, done.stdout


@dataclass(frozen=True)
class Prerequisites:
    missing: tuple[str, ...]  # tools, each as it should read in the skip reason
    cluster_exists: bool

    def reason(self) -> str:
        if self.missing:
            return "kind e2e needs: " + ", ".join(self.missing)
        return (f"kind e2e needs: a kind cluster named {CLUSTER} (`make kind-up` creates it;"
                f" or set {WANTED_ENV}=1 to let the tests create it)")


@functools.lru_cache(maxsize=1)
def prerequisites() -> Prerequisites:
    """Which tools are missing, and whether the kind cluster exists. Looked at once a session."""
    found = {tool: shutil.which(tool) is not None for tool in TOOLS}
    missing = []
    engine_ok = False
    for tool in TOOLS:
        if not found[tool]:
            missing.append(tool)
        elif tool == "docker":
            engine_ok, detail = _probe(["docker", "info", "--format", "{{.ServerVersion}}"])
            if not engine_ok:
                missing.append(f"docker engine (docker info failed: {detail})")
    cluster_exists = False
    if found["kind"] and engine_ok:
        ok, out = _probe(["kind", "get", "clusters"])
        if ok:
            cluster_exists = CLUSTER in out.split()
        else:
            missing.append(f"a working kind (kind get clusters failed: {out})")
    return Prerequisites(tuple(missing), cluster_exists)


def _kill_group(process: subprocess.Popen[Any]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def run_setup_script(config: pytest.Config) -> None:
    """`scripts/kind-e2e.sh up`, its output shown live (it takes minutes), bounded in time."""
    capture = config.pluginmanager.getplugin("capturemanager")
    live = capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext()
    with live:
        print(f"\n[e2e] {WANTED_ENV}=1: setting up with scripts/kind-e2e.sh up", flush=True)
        process = subprocess.Popen(["bash", str(SCRIPT), "up"], cwd=REPO, start_new_session=True,
                                   stdin=subprocess.DEVNULL)
        try:
            status = process.wait(SCRIPT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            pytest.fail(f"scripts/kind-e2e.sh up did not finish within {SCRIPT_TIMEOUT_S}s", pytrace=False)
        except BaseException:  # Ctrl-C: do not leave a docker build behind
            _kill_group(process)
            raise
    if status != 0:
        pytest.fail(f"scripts/kind-e2e.sh up failed with exit status {status} (its output is above)",
                    pytrace=False)


class CommandFailed(AssertionError):
    pass


class Kube:
    """kubectl against the kind cluster, through a private kubeconfig, with timeouts."""

    namespace = NAMESPACE
    name = RAYCLUSTER
    release_namespace = RELEASE_NAMESPACE

    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig

    def argv(self, *args: str) -> list[str]:
        return ["kubectl", "--kubeconfig", str(self.kubeconfig), *args]

    def run(self, *args: str, timeout: float = KUBECTL_TIMEOUT_S, input: str | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = self.argv(*args)
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input,
                                  stdin=None if input is not None else subprocess.DEVNULL)
        except subprocess.TimeoutExpired as error:
            raise CommandFailed(f"`kubectl {' '.join(args)}` timed out after {timeout:.0f}s\n"
                                f"stdout:\n{_text(error.stdout)[-3000:]}\n"
                                f"stderr:\n{_text(error.stderr)[-3000:]}") from None
        if check and done.returncode != 0:
            raise CommandFailed(f"`kubectl {' '.join(args)}` failed with exit status {done.returncode}:"
                                f" {done.stderr.strip()[-2000:]}")
        return done

    def json(self, *args: str, timeout: float = KUBECTL_TIMEOUT_S) -> Any:
        out = self.run(*args, "-o", "json", timeout=timeout).stdout
        try:
            return json.loads(out)
        except ValueError:
            raise CommandFailed(f"`kubectl {' '.join(args)} -o json` printed no JSON: {out[:500]!r}") from None

    def raycluster(self) -> dict[str, Any]:
        return self.json("get", "rgc", self.name, "-n", self.namespace)

    def exists(self, *args: str) -> bool:
        return self.run("get", *args, timeout=30, check=False).returncode == 0

    def poll(self, fetch: Callable[[], Any], done: Callable[[Any], bool], timeout: float,
             interval: float = 2.0) -> Any:
        """fetch() until done(value) or the deadline; the last value either way, for asserts."""
        deadline = time.monotonic() + timeout
        while True:
            value = fetch()
            if done(value) or time.monotonic() >= deadline:
                return value
            time.sleep(interval)

    def diagnostics(self) -> str:
        """What a human needs to see when a test fails; each part bounded in time."""
        selector = f"{CLUSTER_LABEL}={self.name}"
        parts: list[tuple[str, tuple[str, ...]]] = [
            ("RayCluster", ("describe", "rgc", self.name, "-n", self.namespace)),
            ("RayCluster status", ("get", "rgc", self.name, "-n", self.namespace, "-o", "jsonpath={.status}")),
            ("pods", ("get", "pods", "-n", self.namespace, "-l", selector, "-o", "wide")),
            ("pods described", ("describe", "pods", "-n", self.namespace, "-l", selector)),
            ("events about the RayCluster", ("get", "events", "-n", self.namespace,
                                             "--field-selector", f"involvedObject.name={self.name}")),
            ("operator pods", ("get", "pods", "-n", self.release_namespace, "-o", "wide")),
            ("operator log", ("logs", "-n", self.release_namespace, f"deployment/{RELEASE}", "--tail=80")),
        ]
        pods = self.run("get", "pods", "-n", self.namespace, "-l", selector, "-o", "name",
                        timeout=DIAGNOSTIC_TIMEOUT_S, check=False).stdout.split()
        parts += [(f"{pod} log", ("logs", "-n", self.namespace, pod, "-c", CONTAINER, "--tail=60"))
                  for pod in pods]
        out = []
        for title, args in parts:
            try:
                done = self.run(*args, timeout=DIAGNOSTIC_TIMEOUT_S, check=False)
                text = (done.stdout + done.stderr).strip()
            except CommandFailed as error:
                text = str(error)
            out.append(f"----- {title}: kubectl {' '.join(args)}\n{text}")
        return "\n".join(out)


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


@pytest.fixture(scope="session")
def kube(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kube]:
    """The kind cluster with the demo RayCluster; skips (or, with RAYGUARD_E2E=1, fails) with
    a reason naming what is missing."""
    wanted = e2e_wanted()
    found = prerequisites()
    if found.missing:
        if wanted:
            pytest.fail(f"{WANTED_ENV}=1, but {found.reason()}", pytrace=False)
        pytest.skip(found.reason())
    if not found.cluster_exists:
        if not wanted:
            pytest.skip(found.reason())
        run_setup_script(request.config)

    kubeconfig = tmp_path_factory.mktemp("kind") / "kubeconfig"
    try:
        done = subprocess.run(["kind", "get", "kubeconfig", "--name", CLUSTER], capture_output=True,
                              text=True, timeout=30, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail("`kind get kubeconfig` timed out after 30s", pytrace=False)
    if done.returncode != 0:
        pytest.fail(f"`kind get kubeconfig --name {CLUSTER}` failed: {done.stderr.strip()}", pytrace=False)
    kubeconfig.write_text(done.stdout)
    kubeconfig.chmod(0o600)
    api = Kube(kubeconfig)

    ready = api.run("get", "--raw", "/readyz", timeout=30, check=False)
    if ready.returncode != 0:
        pytest.fail(f"the kind cluster {CLUSTER} exists but its API server does not answer"
                    f" ({_first_line(ready.stderr)}); is its node container running?"
                    f" (`docker ps`, or `make kind-down kind-up`)", pytrace=False)
    if not api.exists("rgc", RAYCLUSTER, "-n", NAMESPACE):
        if not wanted:
            pytest.fail(f"the kind cluster {CLUSTER} has no RayCluster {RAYCLUSTER} in namespace"
                        f" {NAMESPACE}: run `make kind-up` (or set {WANTED_ENV}=1)", pytrace=False)
        run_setup_script(request.config)
    yield api


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed e2e test's report gets the cluster's state, read right after the failure."""
    report = yield
    if report.failed and report.when in ("setup", "call"):
        api = getattr(item, "funcargs", {}).get("kube")
        if isinstance(api, Kube):
            try:
                report.sections.append(("kind diagnostics", api.diagnostics()))
            except Exception as error:  # noqa: BLE001 (diagnostics must never hide the failure)
                report.sections.append(("kind diagnostics", f"could not collect diagnostics: {error!r}"))
    return report
