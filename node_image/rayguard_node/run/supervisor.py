"""`rayguard-node run`: Redis (head), Ray, the monitor and the health port, and a clean stop.

One shutdown path: SIGTERM or SIGINT sets an event; every wait in start-up and in the
main loop waits on it, so a signal mid-start stops what has started and nothing more.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from rayguard_node.errors import InvalidSetting, RayguardError
from rayguard_node.sizing.plan import HEAD, MemoryPlan
from rayguard_node.run.ray_command import loggable_argv, ray_environment, ray_start_argv
from rayguard_node.run.config import RunConfig
from rayguard_node.run.parts import RuntimeParts, build_parts
from rayguard_node.contract.secrets import ensure_secret, read_secret
from rayguard_node.contract.profiles import profile_dir
from rayguard_node.profiling.hook import environment as profile_environment

log = logging.getLogger(__name__)

HEAD_WAIT_MAX_BACKOFF_S = 5.0
AUTH_REFUSED_MARKER = b"InvalidAuthToken"
# `ray start` prints this once the node is up and registered with the GCS.
RAY_STARTED_MARKER = b"Ray runtime started."
EXIT_AUTH_REFUSED = 3  # Ray would retry a wrong token for a minute; we stop at once
EXIT_SIGNALLED_BEFORE_RAY = 143
EXIT_REFUSED = 2  # a RayguardError: bad settings, a secret file that is not ours, no Redis
DESCENDANTS_PERIOD_S = 10.0


class Supervisor:
    def __init__(self, config: RunConfig, plan: MemoryPlan) -> None:
        self.config = config
        self.plan = plan
        self.procfs_root = config.procfs_root
        self.sysfs_root = config.sysfs_root
        self.shutdown = threading.Event()
        self.ray: subprocess.Popen[bytes] | None = None
        self.parts: RuntimeParts | None = None
        self.descendants: dict[int, float] = {}  # pid -> create time, for the final sweep
        self.auth_refused = False
        self.ray_started = threading.Event()
        self._ray_output: threading.Thread | None = None

    # -- signals --------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        def handler(signum: int, _frame: object) -> None:
            log.info("received %s: stopping", signal.Signals(signum).name)
            self.shutdown.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    # -- start-up -------------------------------------------------------------------
    def _secrets(self) -> tuple[Path, str | None]:
        temp_dir = self.config.effective_temp_dir
        token_path = self.config.ray_auth_token_file
        if token_path is None:
            if self.config.role != HEAD:
                raise InvalidSetting("--ray-auth-token-file / RAYGUARD_RAY_AUTH_TOKEN_FILE", None,
                                     "a worker needs the cluster's Ray auth token file (the head's token)")
            token_path = temp_dir / "rayguard_auth_token"
            ensure_secret(token_path, "Ray auth token")
        else:
            read_secret(token_path, "--ray-auth-token-file / RAYGUARD_RAY_AUTH_TOKEN_FILE")
        password_path = self.config.redis_password_file
        if password_path is not None:
            return token_path, read_secret(password_path, "--redis-password-file")
        if self.config.role == HEAD and not self.config.redis_url and self.config.gcs is None:
            return token_path, ensure_secret(temp_dir / "rayguard_redis_password", "Redis password")
        return token_path, None

    def _wait_for_head(self) -> bool:
        host, port = self.config.head_host, self.config.gcs_port
        delay, attempt = 0.5, 1
        while not self.shutdown.is_set():
            try:
                with socket.create_connection((host, port), timeout=2):
                    log.info("head GCS at %s:%d is reachable", host, port)
                    return True
            except OSError as error:
                log.info("waiting for the head GCS at %s:%d (attempt %d: %s); retrying in %.1fs",
                         host, port, attempt, error.strerror or error, delay)
            self.shutdown.wait(delay)
            delay, attempt = min(delay * 2, HEAD_WAIT_MAX_BACKOFF_S), attempt + 1
        return False

    def _start_ray(self, token_path: Path) -> None:
        ray_exe = str(Path(sys.executable).with_name("ray"))
        argv = ray_start_argv(self.config, self.plan, ray_exe if os.path.exists(ray_exe) else "ray")
        env = ray_environment(self.plan, token_path, gcs=self.config.gcs, head=self.config.role == HEAD)
        # Ray drains for up to this long on SIGTERM; keep it inside our grace period.
        env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] = str(max(1, int(self.config.grace_seconds * 0.6)))
        if self.config.profile.enabled:  # every Ray worker under a memray Tracker (profiling/hook.py)
            profile = self.config.profile
            env.update(profile_environment(self.config.effective_temp_dir, profile.match, profile.file_max_bytes, env))
            log.info("memray profiles of Ray workers go to %s", profile_dir(self.config.effective_temp_dir))
        log.info("starting Ray: %s", " ".join(loggable_argv(argv)))
        # Ray's own chatter goes to stderr: stdout carries only reports, one JSON per line.
        self.ray = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self._ray_output = threading.Thread(target=self._relay_ray_output, name="ray-output", daemon=True)
        self._ray_output.start()

    def _relay_ray_output(self) -> None:
        """Copy Ray's output to stderr, noticing the failures worth a clear line of our own."""
        assert self.ray is not None and self.ray.stdout is not None
        for raw in self.ray.stdout:
            sys.stderr.buffer.write(raw)
            sys.stderr.buffer.flush()
            if RAY_STARTED_MARKER in raw:
                self.ray_started.set()
            if AUTH_REFUSED_MARKER in raw and not self.auth_refused:
                self.auth_refused = True
                self.shutdown.set()

    # -- main -----------------------------------------------------------------------
    def run(self) -> int:
        self.install_signal_handlers()
        for line in self.plan.warnings:
            log.warning("plan: %s", line)
        log.info("plan: %s", " ".join(self.plan.ray_start_args))
        try:
            token_path, redis_password = self._secrets()
            self.parts = build_parts(self.config, self.plan, redis_password, self.procfs_root,
                                     self.sysfs_root, ray_running=self.ray_running,
                                     ray_started=self.ray_started.is_set)
            self.parts.health.start()
            if self.config.role == HEAD and self.parts.redis_server is not None:
                self.parts.redis_server.start()
            if self.config.role != HEAD and not self._wait_for_head():
                return self._stop(EXIT_SIGNALLED_BEFORE_RAY)
            if self.shutdown.is_set():
                return self._stop(EXIT_SIGNALLED_BEFORE_RAY)
            self._start_ray(token_path)
            self.parts.monitor.start()
            remembered_at = 0.0
            while not self.shutdown.is_set():
                if self.ray is not None and self.ray.poll() is not None:
                    self._explain_ray_exit()
                    break
                if time.monotonic() - remembered_at > DESCENDANTS_PERIOD_S:  # walks all of /proc
                    self._remember_descendants()
                    remembered_at = time.monotonic()
                self.shutdown.wait(0.5)
            if self.auth_refused:
                self._explain_ray_exit()
                return self._stop(EXIT_AUTH_REFUSED)
            return self._stop(None)
        except RayguardError:
            self._stop(EXIT_REFUSED)  # the CLI prints the error and exits with this status
            raise

    def _explain_ray_exit(self) -> None:
        assert self.ray is not None
        if self._ray_output is not None and self.ray.poll() is not None:
            self._ray_output.join(2)
        if self.auth_refused:
            log.error("the head refused this node's Ray auth token: the file %s must hold the"
                      " cluster's token (the head's, from the cluster Secret)",
                      self.config.ray_auth_token_file or "<generated>")
        else:
            log.error("Ray exited by itself with status %s", self.ray.returncode)

    def ray_running(self) -> bool:
        return self.ray is not None and self.ray.poll() is None

    def _remember_descendants(self) -> None:
        try:
            for child in psutil.Process().children(recursive=True):
                self.descendants.setdefault(child.pid, child.create_time())
        except psutil.Error:
            pass

    # -- shutdown -------------------------------------------------------------------
    def _stop(self, status: int | None) -> int:
        deadline = time.monotonic() + self.config.grace_seconds
        self._remember_descendants()
        if self.parts is not None:
            self.parts.monitor.stop()
        if self.ray is not None and self.ray.poll() is None:
            log.info("stopping Ray (grace %.0fs)", self.config.grace_seconds)
            self.ray.send_signal(signal.SIGTERM)
            try:
                self.ray.wait(max(0.1, deadline - time.monotonic() - 1))
            except subprocess.TimeoutExpired:
                log.warning("Ray did not stop within the grace period: killing it")
                self.ray.kill()
                self.ray.wait()
        self._kill_leftovers()
        if self.parts is not None:
            self.parts.close()
        if status is None:
            code = self.ray.returncode if self.ray is not None else 0
            status = 128 - code if code is not None and code < 0 else (code or 0)
        log.info("rayguard-node exits with status %d", status)
        return status

    def _kill_leftovers(self) -> None:
        self._remember_descendants()
        redis_pid = self.parts.redis_server.pid if self.parts and self.parts.redis_server else None
        for pid, created in self.descendants.items():
            if pid == redis_pid:
                continue  # stopped last, after the final reports are flushed
            try:
                process = psutil.Process(pid)
                if process.create_time() == created:
                    process.kill()
                    log.info("killed leftover process %d (%s)", pid, process.name())
            except psutil.Error:
                pass
