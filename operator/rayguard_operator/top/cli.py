"""`rayguard top CLUSTER [-n NAMESPACE]` and `rayguard top --redis-url URL [--redis-password-file FILE]`.

Every refusal is a `RayguardError` (exit status 2, one line): no such cluster or head pod, no
Secret, Redis unreachable or refusing the password, a bad password file.
"""

from __future__ import annotations

import argparse
import sys
import urllib.parse
from pathlib import Path

import redis

from rayguard_operator.top.reader import LiveReader, TopError, describe, read_password_file, redis_client
from rayguard_operator.top.screen import ScreenOptions, run_screen

REDIS_ERRORS = (redis.exceptions.RedisError, OSError)
DEFAULT_ROWS = 20


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0.05 <= value <= 3600:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"must be between 0.05 and 3600 seconds, not {text}")
    return value


def add_top_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    top = commands.add_parser(
        "top", help="live memory per node and per task or actor, from the head's Redis",
        description="Live memory per node (limit, working set, headroom to the guard threshold) and"
                    " per task or actor (RSS - SHR, quota, peak, age), largest first.")
    top.add_argument("cluster", nargs="?", metavar="CLUSTER",
                     help="a RayCluster's name (its head's Redis is reached through the Kubernetes API)")
    top.add_argument("-n", "--namespace", help="the cluster's namespace (default: the kubeconfig"
                     " context's, or `default`)")
    top.add_argument("--redis-url", metavar="URL", help="read this Redis instead (local mode, hand-run"
                     " nodes), e.g. redis://127.0.0.1:6380")
    top.add_argument("--redis-password-file", type=Path, metavar="FILE", help="the password for --redis-url")
    top.add_argument("--once", action="store_true", help="print one table and exit")
    top.add_argument("--json", action="store_true", help="JSON, one object per refresh")
    top.add_argument("--rows", type=_positive_int, default=DEFAULT_ROWS, metavar="N",
                     help=f"rows read per node, largest first (default {DEFAULT_ROWS})")
    top.add_argument("--interval", type=_positive_seconds, default=1.0, metavar="S",
                     help="seconds between refreshes (default 1)")
    top.set_defaults(handler=run_top)


def url_where(url: str) -> str:
    """host:port of a Redis URL, never its password."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    try:
        port = parts.port or 6379
    except ValueError:
        raise TopError(f"bad --redis-url {url!r}: the port is not a number") from None
    return f"{parts.hostname or '127.0.0.1'}:{port}"


def _check(args: argparse.Namespace) -> None:
    if args.cluster and args.redis_url:
        raise TopError("give CLUSTER or --redis-url, not both")
    if not args.cluster and not args.redis_url:
        raise TopError("give a CLUSTER (on Kubernetes) or --redis-url URL (local mode, hand-run nodes)")
    if args.redis_password_file and not args.redis_url:
        raise TopError("--redis-password-file goes with --redis-url; with CLUSTER the password"
                       " comes from the cluster's Secret")
    if args.namespace and args.redis_url:
        raise TopError("-n/--namespace goes with CLUSTER, not with --redis-url")
    if args.redis_url and not args.redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise TopError(f"bad --redis-url {args.redis_url!r}: expected redis://HOST:PORT[/DB]")


def run_top(args: argparse.Namespace) -> int:
    """Ctrl-C at any point (connecting included) ends it with status 0, as `top` does."""
    try:
        return _run(args)
    except KeyboardInterrupt:
        return 0


def _run(args: argparse.Namespace) -> int:
    _check(args)
    kube, password = None, None
    if args.redis_url:
        password = read_password_file(args.redis_password_file) if args.redis_password_file else None
        where = url_where(args.redis_url)
        client = redis_client(args.redis_url, password)
    else:
        from rayguard_operator.top.kube import open_kube_redis  # the kubernetes client: only here

        kube = open_kube_redis(args.cluster, args.namespace)
        where, password = kube.where, kube.password
        client = redis_client(kube.url, kube.password)
    reader = LiveReader(client, args.rows)

    def why(error: BaseException) -> str:
        text = describe(error, where, password_given=password is not None)
        if kube is not None and kube.bridge.last_error is not None:
            failure = " ".join(str(kube.bridge.last_error).split())[:300]  # one line, whatever it was
            text += f" (port-forward: {failure or type(kube.bridge.last_error).__name__})"
        return text

    try:
        try:
            first = reader.read()
        except REDIS_ERRORS as error:
            raise TopError(why(error)) from None
        options = ScreenOptions(source=where if kube is None else f"{kube.namespace}/{args.cluster}",
                                interval_s=args.interval, once=args.once, as_json=args.json,
                                tty=sys.stdout.isatty(), rows_per_node=args.rows)
        return run_screen(reader.read, first, options, why, REDIS_ERRORS)
    finally:
        client.close()
        if kube is not None:
            kube.close()
