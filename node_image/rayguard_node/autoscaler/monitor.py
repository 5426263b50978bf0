"""Run Ray 2.60's v1 autoscaler (`ray.autoscaler._private.monitor.Monitor`) for one cluster,
in this process, until told to stop.

`run_autoscaler(options, stop)` waits for the head's GCS (TCP, with backoff), points this
process's Ray client at the cluster's token, and runs the Monitor with a config callable that
re-reads the JSON config every update (with `options.provider_overrides` laid over its
`provider` section: local mode names its own target there). When the Monitor fails (the GCS
went away, or the provider kept failing), it backs off, waits for the GCS again and starts a
fresh Monitor, which reads the current state from the target: nothing it did is repeated,
nothing is scaled down on what it could not read. `AutoscalerThread` runs the same in a thread.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from rayguard_node.errors import RayguardError

log = logging.getLogger(__name__)

BACKOFF_FIRST_S, BACKOFF_MAX_S = 0.5, 30.0
RAN_WELL_S = 60.0  # a Monitor that ran this long before failing starts again after the first delay


class ConfigUnreadable(RayguardError):
    """The config file is missing or not an autoscaler config (one line, naming the file)."""


@dataclass(frozen=True)
class AutoscalerOptions:
    """What one autoscaler needs. `config_path` is re-read every update; `provider_overrides`
    are laid over its `provider` section each time (e.g. {"target": "module:callable"})."""

    gcs_address: str  # host:port of the head's GCS
    config_path: Path
    cluster_name: str | None = None  # set: overrides the config's cluster_name
    token_file: Path | None = None  # the cluster's Ray token; None: this process's Ray auth as it is
    provider_overrides: Mapping[str, Any] = field(default_factory=dict)
    monitor_ip: str | None = None  # set: Ray's autoscaler metrics server on this address
    backoff_first_s: float = BACKOFF_FIRST_S
    backoff_max_s: float = BACKOFF_MAX_S


def read_config(path: Path, provider_overrides: Mapping[str, Any] | None = None,
                cluster_name: str | None = None) -> dict[str, Any]:
    """The autoscaler config from `path`, with the overrides in its provider section."""
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ConfigUnreadable(f"autoscaler config {path}: {error}") from None
    if not isinstance(config, dict) or not isinstance(config.get("provider"), dict):
        raise ConfigUnreadable(f"autoscaler config {path}: expected a JSON object with a provider section")
    config["provider"].update(provider_overrides or {})
    if cluster_name:
        config["cluster_name"] = cluster_name
    return config


def gcs_reachable(address: str, timeout_s: float = 2.0) -> str | None:
    """None when the GCS port accepts a connection, else why not."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return None
    except (OSError, ValueError) as error:
        return str(getattr(error, "strerror", None) or error)


def wait_for_gcs(address: str, stop: threading.Event, first_s: float, max_s: float) -> bool:
    delay, attempt = first_s, 1
    while not stop.is_set():
        why = gcs_reachable(address)
        if why is None:
            return True
        log.info("waiting for the head's GCS at %s (attempt %d: %s); retrying in %.1fs", address, attempt, why, delay)
        stop.wait(delay)
        delay, attempt = min(delay * 2, max_s), attempt + 1
    return False


def use_ray_token(token_file: Path) -> None:
    """Token auth for this process's Ray client, from the cluster's token file: the same
    variables the runtime gives Ray, then Ray's cached config and token reloaded."""
    from ray._raylet import AuthenticationTokenLoader, Config

    os.environ.pop("RAY_AUTH_TOKEN", None)
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(token_file)
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


class _Stopped(BaseException):
    """Raised inside the Monitor's loop to end it (not an Exception: Ray's handlers let it through)."""


def _monitor_class() -> type:
    from ray.autoscaler._private.monitor import Monitor

    class StoppableMonitor(Monitor):  # type: ignore[misc, valid-type]
        """Ray's Monitor, whose loop ends when `stop` is set (checked before each update)."""

        def __init__(self, stop: threading.Event, **kwargs: Any) -> None:
            self._stop = stop
            super().__init__(**kwargs)

        def update_load_metrics(self) -> None:
            if self._stop.is_set():
                raise _Stopped()
            super().update_load_metrics()

    return StoppableMonitor


def run_autoscaler(options: AutoscalerOptions, stop: threading.Event) -> None:
    """Run until `stop` is set (the loop notices within one update interval, ~5 s)."""
    from ray.autoscaler._private.providers import _clear_provider_cache

    if options.token_file is not None:
        use_ray_token(options.token_file)
    _clear_provider_cache()  # a provider from an earlier run in this process is not reused
    read: Callable[[], dict[str, Any]] = lambda: read_config(options.config_path, options.provider_overrides,
                                                             options.cluster_name)
    monitor_class = _monitor_class()
    delay = options.backoff_first_s
    while not stop.is_set():
        started = time.monotonic()
        if not wait_for_gcs(options.gcs_address, stop, options.backoff_first_s, options.backoff_max_s):
            return
        try:
            read()  # a config that cannot be read is reported now, not deep inside Ray's loop
            monitor = monitor_class(stop, address=options.gcs_address, autoscaling_config=read,
                                    monitor_ip=options.monitor_ip, retry_on_failure=False)
            log.info("autoscaler started for the GCS at %s", options.gcs_address)
            monitor._initialize_autoscaler()
            monitor._run()
        except _Stopped:
            break
        except Exception as error:  # noqa: BLE001: any failure restarts the Monitor after a pause
            if time.monotonic() - started > RAN_WELL_S:
                delay = options.backoff_first_s  # it had been running: not one failure in a row
            log.warning("autoscaler stopped (%s); starting again in %.1fs", type(error).__name__, delay, exc_info=True)
            stop.wait(delay)
            delay = min(delay * 2, options.backoff_max_s)
    log.info("autoscaler stopped")


class AutoscalerThread:
    """`run_autoscaler` in a daemon thread: `start()`, then `stop()` (waits for it to end)."""

    def __init__(self, options: AutoscalerOptions) -> None:
        self.options = options
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="rayguard-autoscaler", daemon=True)

    def _main(self) -> None:
        try:
            run_autoscaler(self.options, self.stop_event)
        except BaseException as error:  # kept for the caller
            self.error = error
            log.exception("autoscaler thread failed")

    def start(self) -> AutoscalerThread:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 30.0) -> bool:
        """True when the thread ended within `timeout_s`."""
        self.stop_event.set()
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()
