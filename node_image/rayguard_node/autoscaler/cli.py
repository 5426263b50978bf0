"""`rayguard-node autoscaler`: the head pod's autoscaler sidecar (monitor.py), configured by the
environment the operator sets (contract/autoscaler.py), logging one line per record: INFO to
stdout, warnings and errors to stderr."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from rayguard_node.contract import autoscaler as contract
from rayguard_node.errors import InvalidSetting

if TYPE_CHECKING:  # the monitor module pulls in Ray: only when the command runs
    from rayguard_node.autoscaler.monitor import AutoscalerOptions

LOG_FORMAT = "%(asctime)s %(levelname)s rayguard-node autoscaler %(name)s: %(message)s"
DEFAULT_GCS_ADDRESS = "127.0.0.1:6379"
# (dest, env, meaning)
OPTIONS = (
    ("cluster", contract.CLUSTER_ENV, "the RayCluster's name (overrides the config's cluster_name)"),
    ("namespace", contract.NAMESPACE_ENV, "the RayCluster's namespace (overrides the config's provider.namespace)"),
    ("config", contract.CONFIG_ENV, f"the autoscaler config (JSON), re-read every update (default {contract.CONFIG_PATH})"),
    ("gcs_address", contract.GCS_ADDRESS_ENV, f"host:port of the head's GCS (default {DEFAULT_GCS_ADDRESS})"),
    ("ray_auth_token_file", contract.RAY_AUTH_TOKEN_FILE_ENV, "file holding the cluster's Ray auth token (required)"),
)


def add_autoscaler_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser("autoscaler", help="run Ray's autoscaler for a rayguard cluster (the head's sidecar)")
    for dest, env, meaning in OPTIONS:
        parser.add_argument("--" + dest.replace("_", "-"), dest=dest, default=None, metavar="VALUE",
                            help=f"{meaning} [env {env}]")
    parser.set_defaults(handler=_cmd_autoscaler)


class OneLineFormatter(logging.Formatter):
    """A record, with its traceback if any, on one line (newlines shown as ' | ')."""

    def format(self, record: logging.LogRecord) -> str:
        return " | ".join(line for line in super().format(record).splitlines() if line.strip())


class _Below(logging.Filter):
    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < self.level


def setup_logging() -> None:
    formatter = OneLineFormatter(LOG_FORMAT)
    out, err = logging.StreamHandler(sys.stdout), logging.StreamHandler(sys.stderr)
    out.addFilter(_Below(logging.WARNING))
    err.setLevel(logging.WARNING)
    for handler in (out, err):
        handler.setFormatter(formatter)
    for name in ("", "ray"):  # Ray's own logger does not propagate to the root
        logger = logging.getLogger(name)
        logger.handlers = [out, err]
        logger.setLevel(logging.INFO)


def options_from(args: argparse.Namespace, environ: Mapping[str, str]) -> AutoscalerOptions:
    from rayguard_node.autoscaler.monitor import AutoscalerOptions

    def value(dest: str, env: str) -> str | None:
        return getattr(args, dest, None) or environ.get(env) or None

    given = {dest: value(dest, env) for dest, env, _ in OPTIONS}
    token = given["ray_auth_token_file"]
    if not token:
        raise InvalidSetting(f"--ray-auth-token-file / {contract.RAY_AUTH_TOKEN_FILE_ENV}", token,
                             "required: the cluster's Ray token file")
    address = given["gcs_address"] or DEFAULT_GCS_ADDRESS
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidSetting(f"--gcs-address / {contract.GCS_ADDRESS_ENV}", address, "expected host:port")
    overrides = {"namespace": given["namespace"]} if given["namespace"] else {}
    return AutoscalerOptions(gcs_address=address, config_path=Path(given["config"] or contract.CONFIG_PATH),
                             cluster_name=given["cluster"], token_file=Path(token), provider_overrides=overrides)


def _cmd_autoscaler(args: argparse.Namespace) -> int:
    from rayguard_node.autoscaler.monitor import read_config, run_autoscaler

    options = options_from(args, os.environ)
    if not options.token_file or not options.token_file.is_file():
        raise InvalidSetting(f"--ray-auth-token-file / {contract.RAY_AUTH_TOKEN_FILE_ENV}", str(options.token_file),
                             "no such file")
    setup_logging()
    read_config(options.config_path, options.provider_overrides, options.cluster_name)  # bad config: exit 2 now
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        logging.getLogger(__name__).info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    run_autoscaler(options, stop)
    return 0
