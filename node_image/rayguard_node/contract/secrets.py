"""The Ray auth token and the Redis password, as files only their owner can read.

Two ways to get one:

- `read_secret`: a file the user (or the operator's pod spec) named. It is read as given,
  symlinks included: a Kubernetes Secret volume holds root-owned 0644 files behind symlinks.
- `ensure_secret`: the default file off-cluster (`rayguard-node run` by hand, local mode),
  in a temp dir (`/tmp/ray`) other users of the machine may have made or may write to. It
  is generated with mode 0600; an existing one is reused only if it is a regular file (not
  a symlink) owned by the current user with no access for group or others. Anything else
  could have been planted by another user, so it is an error, not a token.

Both read at most 64 KiB without blocking, so a FIFO or a device in place of the file is
an error naming it, not a hang.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from pathlib import Path

from rayguard_node.errors import InvalidSetting

log = logging.getLogger(__name__)

MAX_BYTES = 64 * 1024
_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)


def _read(path: Path, what: str, flags: int, private: bool) -> str:
    try:
        descriptor = os.open(path, flags)
    except OSError as error:
        why = "it is a symbolic link" if private and os.path.islink(path) else f"cannot read it ({error.strerror})"
        raise InvalidSetting(what, str(path), why) from None
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise InvalidSetting(what, str(path), "not a regular file")
        if private and info.st_uid != os.geteuid():
            raise InvalidSetting(what, str(path), f"owned by uid {info.st_uid}, not by this user"
                                 f" (uid {os.geteuid()}); a reused secret must be yours with mode 0600:"
                                 " remove it, or name your own file")
        if private and stat.S_IMODE(info.st_mode) & 0o077:
            raise InvalidSetting(what, str(path), f"mode {stat.S_IMODE(info.st_mode):04o} lets others"
                                 " read or write it; a reused secret must have mode 0600: remove it,"
                                 " or name your own file")
        data = os.read(descriptor, MAX_BYTES + 1)
    except OSError as error:
        raise InvalidSetting(what, str(path), f"cannot read it ({error.strerror})") from None
    finally:
        os.close(descriptor)
    if len(data) > MAX_BYTES:
        raise InvalidSetting(what, str(path), f"too large for a token or password (over {MAX_BYTES} bytes)")
    try:
        value = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise InvalidSetting(what, str(path), "not UTF-8 text") from None
    if not value:
        raise InvalidSetting(what, str(path), "the file is empty")
    return value


def read_secret(path: Path | str, what: str) -> str:
    """The secret in a file the user named."""
    return _read(Path(path), what, _READ_FLAGS, private=False)


def ensure_secret(path: Path, what: str) -> str:
    """Reuse the secret in `path` if it is private to us, or generate one there (mode 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(32)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
                             | getattr(os, "O_CLOEXEC", 0), 0o600)
    except FileExistsError:  # also a symlink, dangling or not: never followed
        return _read(path, what, _READ_FLAGS | getattr(os, "O_NOFOLLOW", 0), private=True)
    except OSError as error:
        raise InvalidSetting(what, str(path), f"cannot create it ({error.strerror})") from None
    with os.fdopen(descriptor, "w") as handle:
        handle.write(value)
    log.info("generated %s at %s", what, path)
    return value
