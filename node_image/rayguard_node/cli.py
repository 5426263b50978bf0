"""`rayguard-node`: detect, plan and run. Bad input exits 2 with one line on stderr."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

from rayguard_node.run.options import BUDGET_OPTIONS, ROLE_OPTION, add_options, add_roots, resolve
from rayguard_node.cgroup.detect import detect
from rayguard_node.errors import RayguardError
from rayguard_node.sizing.facts import compute_plan
from rayguard_node.sizing.tables import detection_table, plan_table

PROG = "rayguard-node"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + traceback
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="rayguard's node runtime: memory-safe Ray nodes.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    detect_parser = commands.add_parser("detect", help="show this container's real memory limit")
    detect_parser.add_argument("--json", action="store_true", help="machine-readable output")
    add_roots(detect_parser)

    plan_parser = commands.add_parser("plan", help="show how Ray's memory would be split")
    plan_parser.add_argument("--json", action="store_true", help="machine-readable output")
    add_options(plan_parser, (ROLE_OPTION,) + BUDGET_OPTIONS)
    add_roots(plan_parser)

    from rayguard_node.run.cli import add_run_parser  # the supervisor pulls in more; keep detect light

    add_run_parser(commands)
    from rayguard_node.autoscaler.cli import add_autoscaler_parser

    add_autoscaler_parser(commands)
    return parser


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
    handlers = {"detect": _cmd_detect, "plan": _cmd_plan, "run": args.__dict__.get("handler"),
                "autoscaler": args.__dict__.get("handler")}
    try:
        return handlers[args.command](args)
    except RayguardError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        where = f"cannot read {error.filename}: " if error.filename is not None else ""
        print(f"{PROG}: error: {where}{error.strerror or error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
