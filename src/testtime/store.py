"""Where records live: ``results.jsonl`` (one ``ProblemRecord`` per line), read by anyone,
written by one process at a time.

* Each record is appended with a single ``write`` of one complete line followed by ``fsync``,
  so a crash leaves at most one torn last line.
* **Readers never modify a run directory.** A torn last line (no newline: a write in progress
  or a crash) is left alone and not read; so is a complete last line that fails validation.
  An invalid line anywhere else is an error naming the file and line.
* **The writer** (``RecordStore(path, writer=True)``, under :class:`RunLock`) repairs the tail
  when it opens the file: a torn last line is cut off, a complete but invalid last line is
  moved to ``results.rejected.jsonl`` (with a warning) and cut off. The problem is then
  computed again.
* :class:`RunLock` is an exclusive ``flock`` on ``<run dir>/.lock``, held for a whole
  invocation; a second writer gets an error naming the holder (pid, host, start time). The
  kernel releases it when the holder dies, even by SIGKILL.
* :func:`dump_json` writes a file atomically: a unique temporary name, ``fsync`` of the file,
  ``rename``, ``fsync`` of the directory.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

from testtime.errors import UserError
from testtime.records import SCHEMA_VERSION, ProblemRecord

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
REJECTED_FILE = "results.rejected.jsonl"
#: A writer retries the lock this long: a reader asking whether a run is in progress holds it
#: (shared) for a moment.
LOCK_WAIT_S = 2.0


class RunLocked(RuntimeError):
    """Another process is writing this run directory."""


class RecordStore:
    """The records of one ``results.jsonl``, keyed by problem id (the later line wins: a
    retried problem is appended after its error record)."""

    def __init__(self, path: Path, *, writer: bool = False) -> None:
        self.path = path
        self.writer = writer
        self.records: dict[str, ProblemRecord] = {}
        self.pending_tail = False
        """A torn or invalid last line was left alone (a reader; a run in progress)."""
        if path.exists():
            self._load()

    def _load(self) -> None:
        raw = self.path.read_bytes()
        lines = raw.split(b"\n")
        # A complete file ends with "\n", so the last element is empty; anything else there is
        # a line still being written, or torn by a crash mid-write.
        tail = lines.pop()
        good = len(raw) - len(tail)
        rejected: bytes | None = None
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rec = ProblemRecord.model_validate_json(line)
            except ValueError as exc:
                if lineno != len(lines):
                    raise UserError(f"{self.path}:{lineno}: not a valid record: {exc}") from exc
                rejected = line  # a complete but invalid last line
                good -= len(line) + 1
                break
            if rec.schema_version > SCHEMA_VERSION:  # older ones read with defaults
                raise UserError(f"{self.path}:{lineno}: record schema {rec.schema_version}, "
                                 f"this version reads {SCHEMA_VERSION}")
            self.records[rec.id] = rec
        if good == len(raw):
            return
        if not self.writer:
            self.pending_tail = True
            return
        if rejected is not None:
            aside = self.path.with_name(REJECTED_FILE)
            log.warning("%s: the last line is not a valid record; moved to %s and recomputed",
                        self.path, aside)
            _append_bytes(aside, rejected + b"\n")
        elif tail:
            log.warning("%s: cutting a torn last line (%d bytes)", self.path, len(tail))
        with open(self.path, "r+b") as f:
            f.truncate(good)
            os.fsync(f.fileno())

    def done_ids(self) -> set[str]:
        """Problems finished without error."""
        return {k for k, r in self.records.items() if r.error is None}

    def append(self, record: ProblemRecord) -> None:
        if not self.writer:
            raise RuntimeError(f"{self.path}: opened read-only")
        _append_bytes(self.path, (record.model_dump_json() + "\n").encode())
        self.records[record.id] = record

    def __iter__(self) -> Iterator[ProblemRecord]:
        return iter(self.records.values())


def _append_bytes(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(data)
        while view:  # os.write may write less than asked for large records
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def read_records(path: Path) -> list[ProblemRecord]:
    """Records of a finished or partial run (latest record per id); never modifies it."""
    return list(RecordStore(path))


class RunLock:
    """Exclusive right to write a run directory, for as long as the ``with`` block runs."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self._fd: int | None = None

    def __enter__(self) -> Self:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    holder = os.pread(fd, 512, 0).decode(errors="replace").strip()
                    os.close(fd)
                    raise RunLocked(f"{self.run_dir} is being written by another process "
                                    f"({holder or 'unknown holder'}); wait for it to finish "
                                    f"or stop it") from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        info = (f"pid {os.getpid()} on {socket.gethostname()} since "
                f"{time.strftime('%Y-%m-%d %H:%M:%S')}")
        os.pwrite(fd, info.encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def writer_of(run_dir: Path) -> str | None:
    """Who is writing ``run_dir`` now (``"pid ... on ... since ..."``), or None."""
    try:
        fd = os.open(run_dir / LOCK_FILE, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.pread(fd, 512, 0).decode(errors="replace").strip() or "another process"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def dump_json(path: Path, data: Any) -> None:
    """Write JSON atomically: unique temp file, fsync, rename, fsync of the directory."""
    text = json.dumps(data, indent=2, sort_keys=False) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
