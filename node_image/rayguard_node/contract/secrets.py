"""The Ray auth token and the Redis password, as files only their owner can read."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

log = logging.getLogger(__name__)


def read_secret(path: Path, what: str) -> str:
    try:
        value = path.read_text().strip()
    except OSError as error:
        from rayguard_node.errors import InvalidSetting

        raise InvalidSetting(what, str(path), f"cannot read it ({error.strerror})") from None
    if not value:
        from rayguard_node.errors import InvalidSetting

        raise InvalidSetting(what, str(path), "the file is empty")
    return value


def ensure_secret(path: Path, what: str) -> str:
    """Reuse the secret in `path`, or generate one there (mode 0600) and say where."""
    if path.exists():
        return read_secret(path, what)
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(32)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(value)
    log.info("generated %s at %s", what, path)
    return value
