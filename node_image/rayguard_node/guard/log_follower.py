"""Following `<ray temp dir>/session_latest/logs/raylet.out` across Ray's restarts.

The follower hands out complete lines, in order, each once. It copes with:

- no file yet (Ray still starting), or `session_latest` briefly missing;
- rotation: raylet.out renamed away and a new one created. The old file stays open
  until its tail is read, then the new file is read from its start;
- truncation in place (the size falls below what was read): read again from the start;
- a new session (`session_latest` re-pointed): the old file's tail is read, then the new
  session's raylet.out from its start;
- a partial last line: kept until its newline arrives. When its file is left behind
  (rotation, new session) the writer is gone, so it is handed out as it is.

`start_at_end=True` skips what a file already holds when the follower first finds it at
its first poll (an earlier session's log, say). Files that appear later are new, and are
always read from their start. No threads: the caller polls.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

READ_CHUNK_BYTES = 1 << 20


class RayletLogFollower:
    def __init__(self, temp_dir: Path | str, *, start_at_end: bool = False,
                 filename: str = "raylet.out", max_read_bytes: int = 8 << 20,
                 max_line_bytes: int = 1 << 20) -> None:
        self.temp_dir = Path(temp_dir)
        self.filename = filename
        self.start_at_end = start_at_end
        self.max_read_bytes = max_read_bytes
        self.max_line_bytes = max_line_bytes
        self.rotations = 0
        self.sessions = 0
        self._file: BinaryIO | None = None
        self._ident: tuple[int, int] | None = None
        self._session: str | None = None
        self._offset = 0
        self._buffer = bytearray()
        self._discard_partial = False
        self._first_poll = True
        self._opened_any = False

    @property
    def path(self) -> Path:
        return self.temp_dir / "session_latest" / "logs" / self.filename

    def poll(self) -> list[str]:
        """Complete lines added since the last poll, without their newlines."""
        lines: list[str] = []
        try:
            self._poll(lines)
        finally:
            self._first_poll = False
        return lines

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file = None
        self._ident = None
        self._buffer.clear()
        self._discard_partial = False

    # -- internals --------------------------------------------------------------------

    def _poll(self, lines: list[str]) -> None:
        session = self._current_session()
        if self._file is not None and session is not None and session != self._session:
            self._leave(lines)
            self.sessions += 1
        if self._file is None:
            if session is None or not self._open(session):
                return
        self._read(lines, limit=self.max_read_bytes)
        assert self._session is not None
        try:
            status = os.stat(self._log_path(self._session))
        except OSError:
            return  # renamed away and not yet re-created: keep reading the old file
        if (status.st_dev, status.st_ino) != self._ident:
            self._leave(lines)
            self.rotations += 1
            if self._open(self._session):
                self._read(lines, limit=self.max_read_bytes)
        elif status.st_size < self._offset:
            assert self._file is not None
            self._file.seek(0)
            self._offset = 0
            self._buffer.clear()
            self._discard_partial = False
            self._read(lines, limit=self.max_read_bytes)

    def _current_session(self) -> str | None:
        link = self.temp_dir / "session_latest"
        try:
            return os.path.realpath(link) if link.exists() else None
        except OSError:
            return None

    def _log_path(self, session: str) -> Path:
        return Path(session) / "logs" / self.filename

    def _open(self, session: str) -> bool:
        self._session = session
        try:
            handle = open(self._log_path(session), "rb")
        except OSError:
            return False
        status = os.fstat(handle.fileno())
        self._file, self._ident = handle, (status.st_dev, status.st_ino)
        self._offset = 0
        self._buffer.clear()
        self._discard_partial = False
        at_end = self.start_at_end and self._first_poll and not self._opened_any
        self._opened_any = True
        if at_end and status.st_size > 0:
            handle.seek(status.st_size - 1)
            self._discard_partial = handle.read(1) != b"\n"
            self._offset = status.st_size
        return True

    def _leave(self, lines: list[str]) -> None:
        """Read the current file to its end, hand out its last partial line, close it."""
        self._read(lines, limit=None)
        if self._buffer and not self._discard_partial:
            lines.append(_decode(self._buffer))
        self.close()

    def _read(self, lines: list[str], limit: int | None) -> None:
        assert self._file is not None
        taken = 0
        while limit is None or taken < limit:
            chunk = self._file.read(READ_CHUNK_BYTES)
            if not chunk:
                break
            taken += len(chunk)
            self._offset += len(chunk)
            self._buffer += chunk
            self._split(lines)

    def _split(self, lines: list[str]) -> None:
        start = 0
        while True:
            end = self._buffer.find(b"\n", start)
            if end < 0:
                break
            if self._discard_partial:
                self._discard_partial = False
            else:
                lines.append(_decode(self._buffer[start:end]))
            start = end + 1
        del self._buffer[:start]
        if len(self._buffer) > self.max_line_bytes:
            if not self._discard_partial:
                lines.append(_decode(self._buffer))
            self._buffer.clear()
            # The rest of this over-long line up to its newline is dropped.
            self._discard_partial = True


def _decode(raw: bytes | bytearray) -> str:
    return bytes(raw).decode("utf-8", "replace").rstrip("\r")
