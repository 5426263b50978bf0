"""`rayguard-node`: detect, plan and run. Bad input exits 2 with one line on stderr."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Sequence

from rayguard_node.run.options import BUDGET_OPTIONS, ROLE_OPTION, add_options, budget_settings, resolve
from rayguard_node.cgroup.detect import MemoryDetection, detect, read_shm
from rayguard_node.errors import RayguardError
from rayguard_node.sizing.plan import MemoryPlan, NodeFacts, make_plan
from rayguard_node.sizing.tables import detection_table, plan_table

PROG = "rayguard-node"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + traceback
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _roots(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sysfs-root", type=Path, default=Path("/sys"), help="where sysfs is (tests use fake trees)")
    parser.add_argument("--procfs-root", type=Path, default=Path("/proc"), help="where procfs is")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="rayguard's node runtime: memory-safe Ray nodes.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    detect_parser = commands.add_parser("detect", help="show this container's real memory limit")
    detect_parser.add_argument("--json", action="store_true", help="machine-readable output")
    _roots(detect_parser)

    plan_parser = commands.add_parser("plan", help="show how Ray's memory would be split")
    plan_parser.add_argument("--json", action="store_true", help="machine-readable output")
    add_options(plan_parser, (ROLE_OPTION,) + BUDGET_OPTIONS)
    _roots(plan_parser)

    from rayguard_node.run.cli import add_run_parser  # the supervisor pulls in more; keep detect light

    add_run_parser(commands)
    return parser


def host_cpus() -> int:
    return len(os.sched_getaffinity(0))


def node_facts(values: dict[str, object], sysfs_root: Path, procfs_root: Path) -> tuple[NodeFacts, list[str]]:
    """Detection, with `limit_bytes` and `shm_bytes` overrides; an override of the limit
    also makes detection failures non-fatal, so a broken cgroup file can be bypassed."""
    warnings: list[str] = []
    detection: MemoryDetection | None = None
    try:
        detection = detect(sysfs_root, procfs_root)
    except (RayguardError, OSError) as error:
        if "limit_bytes" not in values:
            raise
        warnings.append(f"detection failed ({error}); using the given limit")
    shm_free = values.get("shm_bytes")
    if shm_free is None:
        shm_free = detection.shm_free_bytes if detection else read_shm(Path("/dev/shm"))[1]
    if "limit_bytes" in values:
        limit = int(values["limit_bytes"])  # type: ignore[arg-type]
        sees = detection is not None and detection.ray_limit_bytes == limit
        return NodeFacts(limit, "override", detection.cpu_limit if detection else None,
                         shm_free, sees), warnings  # type: ignore[arg-type]
    assert detection is not None
    warnings.extend(w for w in detection.warnings if not w.startswith("no memory limit"))
    return NodeFacts(detection.limit_bytes, detection.source, detection.cpu_limit,
                     shm_free, detection.ray_sees_limit), warnings  # type: ignore[arg-type]


def compute_plan(values: dict[str, object], sysfs_root: Path, procfs_root: Path) -> MemoryPlan:
    if "role" not in values:
        raise RayguardError("--role is required (head or worker), or set RAYGUARD_ROLE")
    settings = budget_settings(values)
    facts, warnings = node_facts(values, sysfs_root, procfs_root)
    plan = make_plan(str(values["role"]), facts, settings, host_cpus())
    if warnings:
        plan = MemoryPlan(**{**plan.__dict__, "warnings": tuple(warnings) + plan.warnings})
    return plan


def _cmd_detect(args: argparse.Namespace) -> int:
    detection = detect(args.sysfs_root, args.procfs_root)
    print(json.dumps(detection.to_json_dict(), indent=2) if args.json else detection_table(detection))
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    values = resolve((ROLE_OPTION,) + BUDGET_OPTIONS, args, os.environ)
    plan = compute_plan(values, args.sysfs_root, args.procfs_root)
    print(json.dumps(plan.to_json_dict(), indent=2) if args.json else plan_table(plan))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = {"detect": _cmd_detect, "plan": _cmd_plan, "run": args.__dict__.get("handler")}
    try:
        return handlers[args.command](args)
    except RayguardError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"{PROG}: error: cannot read {error.filename}: {error.strerror}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
