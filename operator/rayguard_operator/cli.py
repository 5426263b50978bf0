"""`rayguard`: the operator's command line.

- `rayguard operator [kopf run options...]` runs the operator through kopf's own CLI (so every
  `kopf run` option works), adding the watched namespaces from RAYGUARD_OPERATOR_NAMESPACES
  (`--namespace` each, or `--all-namespaces`) and the log format from
  RAYGUARD_OPERATOR_LOG_FORMAT, unless the arguments already say.
- `rayguard render -f FILE [-o yaml|json]` prints what the operator would create.
  Exit status 2, with one line on stderr, for a file the operator would reject.
- `rayguard local up FILE [--duration S] [-- DRIVER...]` runs the cluster on this machine.
- `rayguard top CLUSTER [-n NAMESPACE]` (or `--redis-url URL`) shows live memory per node and task.
- `rayguard profile fetch CLUSTER|DIR [--flamegraph]` copies out (or lists) memray profiles of Ray workers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from rayguard_operator.local.cli import add_local_parser, split_driver
from rayguard_operator.top.cli import add_top_parser
from rayguard_operator.profile.cli import add_profile_parser
from rayguard_node.errors import RayguardError
from rayguard_operator.settings import OperatorSettings

EXIT_USAGE = 2
NAMESPACE_FLAGS = ("-n", "--namespace", "-A", "--all-namespaces")


def kopf_run_args(extra: Sequence[str], settings: OperatorSettings) -> list[str]:
    args = ["run", "-m", "rayguard_operator.handlers"]
    if not any(a in NAMESPACE_FLAGS or a.startswith(("--namespace=", "-n=")) for a in extra):
        if settings.namespaces:
            for namespace in settings.namespaces:
                args += ["--namespace", namespace]
        else:
            args.append("--all-namespaces")
    if not any(a == "--log-format" or a.startswith("--log-format=") for a in extra):
        args += ["--log-format", settings.log_format]
    return args + list(extra)


def _operator(extra: Sequence[str], settings: OperatorSettings) -> int:
    from kopf.cli import main as kopf_main  # imported here: `rayguard render` never loads kopf

    try:
        kopf_main(args=kopf_run_args(extra, settings), prog_name="rayguard operator")
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    return 0


def _render(args: argparse.Namespace, settings: OperatorSettings) -> int:
    from rayguard_operator.manifests.render import render_file

    sys.stdout.write(render_file(Path(args.file), args.output, settings))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rayguard", description="Memory-safe Ray clusters on Kubernetes.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    operator = commands.add_parser("operator", help="run the operator (arguments go to `kopf run`)",
                                   add_help=False)
    operator.add_argument("kopf_args", nargs=argparse.REMAINDER)
    render = commands.add_parser("render", help="print what the operator would create for a RayCluster")
    render.add_argument("-f", "--file", required=True, help="RayCluster YAML file")
    render.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml")
    add_local_parser(commands)
    add_top_parser(commands)
    add_profile_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Every refusal (settings, spec, file) is a RayguardError: exit 2 with one line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["operator"]:
        command, rest = "operator", argv[1:]  # passed through untouched, --help included
    else:
        argv, driver = split_driver(argv)
        args = build_parser().parse_args(argv)
        if args.command == "local":
            args.driver = driver
        command, rest = args.command, []
    prog = "rayguard" if command == "operator" else f"rayguard {command}"
    try:
        settings = OperatorSettings.from_env()
        if command == "operator":
            return _operator(rest, settings)
        if command in ("local", "top", "profile"):
            return int(args.handler(args))
        return _render(args, settings)
    except RayguardError as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
