"""`rayguard profile fetch CLUSTER|DIR [-n NS] [--pod P] [--out DIR] [--flamegraph]`.

A cluster: each running pod's memray files (all Ray sessions in its temp dir) come out through
the exec API as one `tar` stream, into `OUT/<pod>/<session>/`. A directory (local mode's run
dir, printed by `rayguard local up`, or any directory of profiles): the files are already there.
Each file is listed with what its worker ran; `--flamegraph` renders each and prints the HTML.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from rayguard_node.contract.profiles import SUBDIR
from rayguard_node.errors import RayguardError

from rayguard_operator import names
from rayguard_operator.profile.fetch import (Profile, copy_tree, find_profiles, flamegraph, need_memray,
                                             unpack_profiles)

EXIT_SOME_FAILED = 1  # no profile found, or one could not be rendered
# In the pod: every session's profile dir under Ray's temp dir. find does not descend into
# Ray's session_latest link, so each file comes once; no file at all is an empty archive.
POD_COMMAND = ["sh", "-c", 'cd "$1" 2>/dev/null || exit 0; find . -mindepth 4 -maxdepth 4 -type f'
               f' -path "./session_*/{"/".join(SUBDIR)}/*" -print0 | tar cf - --null -T -',
               "sh", names.RAY_TEMP_DIR]


def add_profile_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    profile = commands.add_parser("profile", help="memray profiles of Ray workers (memory.profiling)")
    actions = profile.add_subparsers(dest="profile_command", required=True)
    fetch = actions.add_parser("fetch", help="copy a cluster's memray files out of its pods, or list a"
                                             " directory's; --flamegraph renders them")
    fetch.add_argument("target", metavar="CLUSTER|DIR",
                       help="a RayCluster's name, or a directory (local mode's run dir) that holds profiles")
    fetch.add_argument("-n", "--namespace", help="the cluster's namespace (default: the kubeconfig context's)")
    fetch.add_argument("--pod", action="append", default=None, metavar="POD",
                       help="only this pod (repeatable)")
    fetch.add_argument("--out", type=Path, default=None, metavar="DIR",
                       help="where the files go (default: ./rayguard-profiles/CLUSTER; a directory's"
                            " files stay where they are unless this is given)")
    fetch.add_argument("--flamegraph", action="store_true",
                       help="run `memray flamegraph` on each file and print the HTML paths")
    fetch.set_defaults(handler=run_profile_fetch)


def _say(text: str) -> None:
    print(text, flush=True)


def run_profile_fetch(args: argparse.Namespace) -> int:
    target = Path(args.target)
    if target.is_dir():
        profiles = find_profiles(target)
        if profiles and args.out is not None:
            profiles = copy_tree(profiles, target, args.out)
        where = str(target)
    elif "/" in args.target or args.target.startswith("."):  # no RayCluster is named so
        raise RayguardError(f"{args.target}: no such directory")
    else:
        out = args.out or Path("rayguard-profiles") / args.target
        profiles = fetch_from_cluster(args.target, args.namespace, args.pod, out)
        where = f"RayCluster {args.target}"
    if not profiles:
        print(f"rayguard profile fetch: no memray profiles in {where}", file=sys.stderr)
        return EXIT_SOME_FAILED
    if args.flamegraph:
        need_memray()
    status = 0
    for profile in profiles:
        _say(profile.line())
        if args.flamegraph:
            try:
                _say(f"  flamegraph: {flamegraph(profile.path)}")
            except RayguardError as error:  # one unreadable file does not stop the others
                print(f"rayguard profile fetch: {error}", file=sys.stderr, flush=True)
                status = EXIT_SOME_FAILED
    return status


def _namespace(given: str | None) -> str:
    if given:
        return given
    import kubernetes.config

    try:
        _contexts, active = kubernetes.config.list_kube_config_contexts()
        return str((active or {}).get("context", {}).get("namespace") or "default")
    except (kubernetes.config.ConfigException, OSError, TypeError):
        return "default"


def fetch_from_cluster(cluster: str, namespace: str | None, only: list[str] | None, out: Path) -> list[Profile]:
    from rayguard_operator.kube.api import KubeApi
    from rayguard_operator.kube.exec import exec_to_file

    namespace = _namespace(namespace)
    api = KubeApi.from_environment()
    try:
        pods = api.list_pods(namespace, names.cluster_selector(cluster))
        if not pods:
            print(f"rayguard profile fetch: no pods of RayCluster {namespace}/{cluster}", file=sys.stderr)
        fetched: list[Profile] = []
        for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
            name = pod["metadata"]["name"]
            if only and name not in only:
                continue
            phase = (pod.get("status") or {}).get("phase")
            if phase != "Running":
                _say(f"pod {name}: {phase or 'no phase'}, skipped (exec needs a running container)")
                continue
            with tempfile.NamedTemporaryFile(prefix="rayguard-profiles-", suffix=".tar") as archive:
                status, stderr = exec_to_file(api, namespace, name, names.CONTAINER, POD_COMMAND, archive)
                archive.flush()
                if status not in (0, None):
                    _say(f"pod {name}: collecting the files failed (status {status}): {stderr.strip()[:200]}")
                    continue
                unpack_profiles(Path(archive.name), out / name)
            fetched += find_profiles(out / name) if (out / name).is_dir() else []
        return fetched
    finally:
        api.close()
