"""`--runtime podman`: each rendered pod as a container, from its own image and spec.

`podman_args.plan_container` turns the pod into `podman run` arguments or refuses it, naming the
field. Here the runtime makes the pod's volumes (directories, owned by the pod's user and
fsGroup; the Secret's keys as read-only files), runs the container attached (its stdout holds
the reports, its stderr the runtime's log), reads the kernel OOM counter of the container's
memory cgroup while it runs, and removes the container and its directories once it stopped.

Containers are labelled with the run and the pid of the `rayguard local up` that made them;
`open` removes those of a run whose process is gone (one killed with SIGKILL cannot clean up).

podman reads its settings from containers.conf; on hosts where its defaults fail (crun on
hybrid cgroups, default ulimits that may not be set) point CONTAINERS_CONF at
scripts/podman/containers.conf, as the Makefile's targets do.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any, Callable, Mapping

from rayguard_node.cgroup.scratch import MemoryCgroup, memory_cgroup_of
from rayguard_node.contract import settings as S
from rayguard_node.errors import RayguardError

from rayguard_operator import names
from rayguard_operator.local.pods import LocalNode, LocalPorts, local_node
from rayguard_operator.local.podman_args import (LABEL_OWNER_PID, LABEL_RUN, ContainerPlan, HostDir,
                                                 cgroup_parent, plan_container, refuse)

PODMAN_TIMEOUT_S = 60
SECRET_KEYS = (names.SECRET_KEY_RAY_TOKEN, names.SECRET_KEY_REDIS_PASSWORD)


def podman(*args: str, timeout: float = PODMAN_TIMEOUT_S, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, check=check)


def podman_problem() -> str | None:
    """Why podman cannot run rayguard's containers here; None when it can."""
    if shutil.which("podman") is None:
        return "podman is not installed (apt-get install podman runc)"
    if os.geteuid() != 0:
        return "not root: rootless podman cannot give a container its memory limit on every host"
    try:
        info = podman("info", "--format", "{{.Host.OCIRuntime.Name}} {{.Host.OCIRuntime.Path}}")
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"`podman info` failed: {error}"
    if info.returncode != 0:
        return f"`podman info` failed: {(info.stderr.strip().splitlines() or ['?'])[-1]}"
    runtime_path = info.stdout.split()[-1] if info.stdout.split() else ""
    if not runtime_path or not Path(runtime_path).exists():
        return f"podman's OCI runtime is missing ({info.stdout.strip() or 'none'}): apt-get install runc"
    return None


class ContainerHandle:
    """One pod's container, run attached: `process` is `podman run`, whose exit status is the
    container's (137 when SIGKILLed)."""

    def __init__(self, name: str, plan: ContainerPlan, process: subprocess.Popen[bytes],
                 stdout_path: Path, stderr_path: Path, temp_dir: Path) -> None:
        self.name, self.plan, self.process, self.temp_dir = name, plan, process, temp_dir
        self.stdout_path, self.stderr_path = stdout_path, stderr_path
        self.how = f"container {name}"
        self.cgroup: MemoryCgroup | None = None
        self.oom_kills: int | None = None  # the counter's last value read while it ran
        self.state: dict[str, Any] | None = None  # podman's State, once it exited

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def poll(self) -> int | None:
        status = self.process.poll()
        if status is None:
            self._read_oom_counter()
        elif self.state is None:
            self.state = self._inspect_state() or {}
        return status

    def _inspect_state(self) -> dict[str, Any] | None:
        result = podman("inspect", "--format", "{{json .State}}", self.name)
        return json.loads(result.stdout) if result.returncode == 0 and result.stdout.strip() else None

    def _read_oom_counter(self) -> None:
        """The kernel counts OOM kills in the container's own cgroup, which goes with it: read
        it while the container runs (each poll), keep the last value."""
        if self.cgroup is None:
            state = self._inspect_state() or {}
            if state.get("Pid"):
                self.cgroup = memory_cgroup_of(int(state["Pid"]))
        if self.cgroup is not None and self.cgroup.directory.is_dir():
            self.oom_kills = max(self.cgroup.oom_kill_count(), self.oom_kills or 0)

    def terminate(self) -> None:
        if self.process.poll() is None:
            podman("kill", "--signal", "TERM", self.name)

    def kill(self) -> None:
        podman("kill", "--signal", "KILL", self.name)

    def wait(self, timeout: float | None = None) -> int:
        status = self.process.wait(timeout)
        self.poll()
        return status

    def oom_kill_count(self) -> int | None:
        if self.process.poll() is None:
            self._read_oom_counter()
        # A kill of the container's main process ends it, and its cgroup, before a poll reads
        # the counter; podman's OOMKilled says the cgroup had one.
        if self.state and self.state.get("OOMKilled"):
            return max(1, self.oom_kills or 0)
        return self.oom_kills

    def oom_killed(self) -> bool:
        self.poll()
        return bool(self.state and self.state.get("OOMKilled")) and self.process.returncode == 128 + signal.SIGKILL

    def remove(self) -> None:
        if self.process.poll() is None:
            self.kill()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:  # still being created: `rm --force` below ends it
                self.process.kill()
                self.process.wait()
        self.poll()
        podman("rm", "--force", "--volumes", "--ignore", self.name)
        for directory in self.plan.dirs:
            if directory.host != self.temp_dir:  # Ray's temp dir: the cluster copies profiles out first
                shutil.rmtree(directory.host, ignore_errors=True)


class PodmanRuntime:
    name = "podman"

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.run_id = uuid.uuid4().hex[:8]
        self.images: dict[str, bool] = {}
        self.problem: str | None = None
        self.checked = False
        self.handles: list[ContainerHandle] = []
        self.say: Callable[[str], None] = lambda _text: None
        self.driver_name = ""

    def container_name(self, pod_name: str) -> str:
        return f"rayguard-{self.run_id}-{pod_name}"

    def plan(self, pod: Mapping[str, Any], node: LocalNode) -> ContainerPlan:
        cluster = pod["metadata"]["labels"][names.LABEL_CLUSTER]
        return plan_container(pod, node, self.container_name(node.name), self.run_id,
                              self.run_dir / "pods" / node.name / "volumes",
                              (names.secret_name(cluster), SECRET_KEYS), os.getpid())

    def check(self, pod: Mapping[str, Any], pod_name: str) -> None:
        if not self.checked:
            self.problem, self.checked = podman_problem(), True
        if self.problem is not None:
            raise RayguardError(f"--runtime podman: {self.problem}")
        ports = LocalPorts(*range(1, 8))  # any ports and paths: only the refusals matter here
        plan = self.plan(pod, local_node(pod, pod_name, ports, ports, self.run_dir / "secrets",
                                         self.run_dir / "check"))
        if plan.image not in self.images:
            self.images[plan.image] = podman("image", "exists", plan.image).returncode == 0
        if not self.images[plan.image]:
            raise refuse(pod_name, "spec.containers[0].image",
                         f"{plan.image} is not in podman's images, and nothing is pulled here: build it"
                         " (make images)")

    def open(self, say: Callable[[str], None]) -> None:
        swept = sweep_orphans()
        if swept:
            say(f"Removed {len(swept)} container(s) left by a `rayguard local up` that is gone: {', '.join(swept)}")
        say("--runtime podman: each pod is a container from its image (host network, loopback ports);"
            " as with --runtime process, a pod that exits is reported, not restarted. A driver must run"
            " the head's Python and Ray: one given after -- runs in a container beside the head.")
        self.say = say

    def start(self, pod: Mapping[str, Any], node: LocalNode, logs: Path) -> ContainerHandle:
        plan = self.plan(pod, node)
        if plan.notes:
            self.say(f"  pod {node.name}: {', '.join(plan.notes)}: one machine, the pod runs here")
        for directory in plan.dirs:
            make_dir(directory, plan, Path(node.env[S.RAY_AUTH_TOKEN_FILE.env]).parent)
        stdout_path, stderr_path = logs / "reports.jsonl", logs / "runtime.log"
        with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
            process = subprocess.Popen(plan.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                       start_new_session=True)  # Ctrl-C reaches us, not them
        handle = ContainerHandle(self.container_name(node.name), plan, process, stdout_path, stderr_path,
                                 Path(node.env[S.RAY_TEMP_DIR.env]))
        self.handles.append(handle)
        return handle

    def driver_argv(self, driver: list[str], env: Mapping[str, str]) -> list[str]:
        """The driver in a container from the head's image (Ray refuses a driver whose Python
        differs from the cluster's) beside the head, as `kubectl exec` into the head would run it:
        in the head's PID namespace (a driver finds its raylet in the process list), on the
        host's network, as the head's user, with the head's Ray temp dir at its host path (the
        raylet's sockets), the head's Secret files, and the working directory, read-only."""
        head = self.handles[0].plan
        name = f"rayguard-{self.run_id}-driver"
        argv = ["podman", "run", "--rm", f"--name={name}", "--pull=never", "--network=host",
                f"--pid=container:{self.handles[0].name}", f"--cgroup-parent={cgroup_parent(self.run_id)}",
                f"--user={head.uid}:{head.gid}", "--cap-drop=ALL", "--security-opt=no-new-privileges",
                f"--label={LABEL_RUN}={self.run_id}", f"--label={LABEL_OWNER_PID}={os.getpid()}",
                f"--volume={os.getcwd()}:{os.getcwd()}:ro", f"--workdir={os.getcwd()}",
                "--env=PYTHONUNBUFFERED=1"]
        argv.append(f"--volume={self.handles[0].temp_dir}:{self.handles[0].temp_dir}")
        for key, value in env.items():
            if key.startswith("RAY_"):
                argv.append(f"--env={key}={value}")
        secret = next((d for d in head.dirs if d.secret and d.mounts), None)
        if secret is not None and "RAY_AUTH_TOKEN_PATH" in env:
            argv += [f"--volume={secret.host}:{secret.mounts[0][0]}:ro",
                     f"--env=RAY_AUTH_TOKEN_PATH={secret.mounts[0][0]}/{names.SECRET_KEY_RAY_TOKEN}"]
        self.driver_name = name
        self.say(f"(the driver runs in container {name}, from {head.image})")
        return [*argv, "--entrypoint=" + json.dumps(driver), head.image]

    def close(self) -> None:
        for handle in self.handles:  # normally removed already by the cluster's `down`
            handle.remove()
        self.handles = []
        if self.driver_name:  # `--rm` removes it once it exits; this, if it did not
            podman("rm", "--force", "--ignore", self.driver_name)
        remove_cgroup_parent(self.run_id)


def make_dir(directory: HostDir, plan: ContainerPlan, secrets_dir: Path) -> None:
    """As a kubelet makes a volume: owned by the pod's user and fsGroup; a Secret's files
    root-owned, group fsGroup, at the volume's defaultMode."""
    directory.host.mkdir(parents=True, exist_ok=True)
    if directory.secret:
        os.chown(directory.host, 0, plan.gid)
        directory.host.chmod(0o750)
        for key in directory.secret_keys:
            target = directory.host / key
            shutil.copyfile(secrets_dir / key, target)
            os.chown(target, 0, plan.gid)
            target.chmod(directory.mode)
        return
    os.chown(directory.host, plan.uid, plan.gid)
    directory.host.chmod(0o2775)


def sweep_orphans() -> list[str]:
    """Remove the containers of `rayguard local up` runs whose process is gone, and what they
    mounted of that run: its run directory (`rayguard-local-*`) and Ray temp dirs (`/tmp/rg-*`)."""
    listed = podman("ps", "--all", "--filter", f"label={LABEL_RUN}", "--format", "json")
    if listed.returncode != 0 or not listed.stdout.strip():
        return []
    removed = []
    for container in json.loads(listed.stdout):
        owner = (container.get("Labels") or {}).get(LABEL_OWNER_PID, "")
        if owner.isdigit() and int(owner) != os.getpid() and not _alive(int(owner)):
            name = (container.get("Names") or [container["Id"][:12]])[0]
            mounts = podman("inspect", "--format", "{{json .Mounts}}", container["Id"])
            sources = [Path(m.get("Source") or "/") for m in json.loads(mounts.stdout or "null") or []] \
                if mounts.returncode == 0 else []
            podman("rm", "--force", "--volumes", "--ignore", container["Id"])
            remove_cgroup_parent((container.get("Labels") or {}).get(LABEL_RUN, ""))
            for source in sources:
                made = [d for d in (source, *source.parents) if d.parent == Path(tempfile.gettempdir())
                        and d.name.startswith(("rayguard-local-", "rg-"))]
                for directory in made:
                    shutil.rmtree(directory, ignore_errors=True)
            removed.append(name)
    return removed


def remove_cgroup_parent(run_id: str) -> None:
    """The run's cgroup parent (`cgroup_parent`), in every cgroup hierarchy mounted here, once
    its containers are gone: the deepest directories first (a cgroup goes only when empty)."""
    if not run_id:
        return
    try:
        mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()
                  if line.split()[2:3] in (["cgroup"], ["cgroup2"])]
    except OSError:
        return
    for mount in mounts:
        top = Path(mount) / cgroup_parent(run_id).lstrip("/")
        if not top.is_dir():
            continue
        for directory in sorted((d for d in top.rglob("*") if d.is_dir()), key=lambda d: -len(d.parts)) + [top]:
            try:
                directory.rmdir()
            except OSError:
                pass


def _alive(pid: int) -> bool:
    """Running: not gone, and not a zombie (a killed process nobody reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[:1] != ["Z"]
