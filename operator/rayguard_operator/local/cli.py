"""`rayguard local up FILE [--duration S] [--runtime process|podman] [-- DRIVER ...]`."""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from rayguard_operator.local.autoscaling import config_from_items, group_templates
from rayguard_operator.local.cluster import PROFILES_DIR, LocalCluster
from rayguard_operator.local.runtime import RUNTIMES, make_runtime


def add_local_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    local = commands.add_parser("local", help="run a RayCluster on this machine, no Kubernetes")
    actions = local.add_subparsers(dest="local_command", required=True)
    up = actions.add_parser("up", help="bring a RayCluster up locally until Ctrl-C or --duration")
    up.add_argument("file", type=Path, help="a RayCluster YAML file")
    up.add_argument("--duration", type=float, default=None, metavar="S",
                    help="stop after S seconds (default: until Ctrl-C, or until the driver exits)")
    up.add_argument("--keep-logs", action="store_true", help="keep the run directory with the pods' logs")
    up.add_argument("--runtime", choices=RUNTIMES, default="process",
                    help="process (default): each pod's rayguard-node as a local process tree in its own"
                         " memory cgroup; podman: each pod as a container from its own image and spec")
    up.set_defaults(handler=run_local_up, driver=[])
    up.epilog = "After --: a driver command to run once the cluster is ready (see split_driver)."


def split_driver(argv: list[str]) -> tuple[list[str], list[str]]:
    """`local up ... -- DRIVER...`: everything after the first `--` is the driver, untouched
    (its own `--` included), and options may come after the file (`FILE --duration 60`)."""
    if argv[:1] != ["local"] or "--" not in argv:
        return argv, []
    cut = argv.index("--")
    return argv[:cut], argv[cut + 1:]


def run_local_up(args: argparse.Namespace) -> int:
    from rayguard_operator.manifests.render import load_cluster, render_list
    from rayguard_operator.settings import OperatorSettings

    body = load_cluster(args.file)  # refused as `rayguard render` refuses it: exit 2, one line
    items = render_list(body, OperatorSettings.from_env(), args.file)["items"]
    driver = [a for a in args.driver if a != "--"] if args.driver else []
    run_dir = Path(tempfile.mkdtemp(prefix="rayguard-local-"))
    templates = None
    if config_from_items(items, body["metadata"]["name"]) is not None:  # autoscaling: pods to start more from
        templates = group_templates(body, lambda copy: render_list(copy, OperatorSettings.from_env(), args.file)["items"])
    cluster = LocalCluster(body, items, run_dir, runtime=make_runtime(args.runtime, run_dir), templates=templates)
    try:
        cluster.check()  # a pod the runtime cannot run as specified: refused, nothing started
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    status = 0
    try:
        cluster.say(f"rayguard local: RayCluster {cluster.name} from {args.file}"
                    f" (logs in {run_dir})")
        cluster.up()
        env = cluster.driver_env()
        cluster.say("Connect a driver, and watch its memory, with:\n"
                    f"  export RAY_ADDRESS={env['RAY_ADDRESS']} RAY_AUTH_MODE=token"
                    f" RAY_AUTH_TOKEN_PATH={env['RAY_AUTH_TOKEN_PATH']}\n"
                    f"  {cluster.top_command()}")
        deadline = time.monotonic() + args.duration if args.duration else None
        process = None
        if driver:
            cluster.say(f"Running the driver: {' '.join(driver)}\n")
            process = subprocess.Popen(cluster.runtime.driver_argv(driver, env), env=env)

        def done() -> bool:
            if stop.is_set() or (deadline is not None and time.monotonic() >= deadline):
                return True
            return process is not None and process.poll() is not None

        cluster.wait(done)
        if process is not None:
            if process.poll() is None:
                process.terminate()
            status = process.wait()
            time.sleep(1.5)  # a last report may still be on its way
            cluster.poll()
    except KeyboardInterrupt:
        pass
    finally:
        cluster.say("\nStopping the cluster...")
        cluster.down()
        kills = cluster.kernel_oom_kills()
        if kills:
            cluster.say("Kernel OOM kills per pod cgroup: "
                        + ", ".join(f"{name} {count}" for name, count in kills.items()))
        gone = "container and volume" if args.runtime == "podman" else "cgroup and process"
        cluster.say(f"{cluster.events_printed} OOM event(s) shown. Every {gone} is gone.")
        signal.signal(signal.SIGINT, previous)
        if cluster.kept_profiles:
            cluster.say(f"memray profiles of {len(cluster.kept_profiles)} worker(s) kept in {run_dir};"
                        f" flame graphs: rayguard profile fetch {run_dir} --flamegraph")
        if not args.keep_logs:
            remove_all_but_profiles(run_dir)
    return status


def remove_all_but_profiles(run_dir: Path) -> None:
    """The run dir goes, except the pods' memray files (pods/<pod>/profiles/)."""
    pods = run_dir / "pods"
    if not any((pod / PROFILES_DIR).is_dir() for pod in (pods.iterdir() if pods.is_dir() else ())):
        shutil.rmtree(run_dir, ignore_errors=True)
        return

    def remove(path: Path) -> None:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    for entry in run_dir.iterdir():
        if entry != pods:
            remove(entry)
    for pod in pods.iterdir():
        for entry in pod.iterdir() if (pod / PROFILES_DIR).is_dir() else [pod]:
            if entry.name != PROFILES_DIR:
                remove(entry)
