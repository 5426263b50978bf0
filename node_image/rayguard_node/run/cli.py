"""`rayguard-node run --role head|worker`: argument wiring for the supervisor."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from rayguard_node.run.options import BUDGET_OPTIONS, ROLE_OPTION, RUN_OPTIONS, add_options, add_roots, resolve

LOG_FORMAT = "%(asctime)s %(levelname)s rayguard-node: %(message)s"


def add_run_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser("run", help="run a Ray node under rayguard's supervision")
    add_options(parser, (ROLE_OPTION,) + RUN_OPTIONS + BUDGET_OPTIONS)
    add_roots(parser)
    parser.set_defaults(handler=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    from rayguard_node.run.config import run_config
    from rayguard_node.run.supervisor import Supervisor
    from rayguard_node.sizing.facts import compute_plan

    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr)
    values = resolve((ROLE_OPTION,) + RUN_OPTIONS + BUDGET_OPTIONS, args, os.environ)
    config = run_config({**values, "sysfs_root": args.sysfs_root, "procfs_root": args.procfs_root})
    plan = compute_plan(values, config.sysfs_root, config.procfs_root)
    return Supervisor(config, plan).run()
