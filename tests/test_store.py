"""The run directory under concurrency and faults: readers never modify it, one writer at a
time repairs it, JSON files are replaced atomically."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from testtime.records import ProblemRecord
from testtime.store import (
    LOCK_WAIT_S,
    REJECTED_FILE,
    RecordStore,
    RunLock,
    RunLocked,
    dump_json,
    read_records,
    writer_of,
)

SRC = Path(__file__).resolve().parents[1] / "src"


def record(pid: str) -> bytes:
    rec = ProblemRecord(id=pid, problem=f"q {pid}", reference="1", method="best_of_n", n=1)
    return (rec.model_dump_json() + "\n").encode()


def write(path: Path, *parts: bytes) -> bytes:
    data = b"".join(parts)
    path.write_bytes(data)
    return data


def test_readers_leave_a_torn_tail_alone_and_the_writer_cuts_it(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    data = write(path, record("a"), record("b"), record("c")[:30])
    store = RecordStore(path)
    assert sorted(store.records) == ["a", "b"] and store.pending_tail
    assert path.read_bytes() == data  # a reader changed nothing
    assert [r.id for r in read_records(path)] == ["a", "b"]
    assert path.read_bytes() == data
    writer = RecordStore(path, writer=True)
    assert sorted(writer.records) == ["a", "b"]
    assert path.read_bytes() == record("a") + record("b")  # the writer repaired it
    writer.append(ProblemRecord.model_validate_json(record("c")))
    assert [r.id for r in read_records(path)] == ["a", "b", "c"]


def test_an_invalid_complete_last_line_is_moved_aside_by_the_writer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "results.jsonl"
    bad = b'{"id": "c", "this is": "not a record"}\n'
    data = write(path, record("a"), bad)
    assert list(RecordStore(path).records) == ["a"]
    assert path.read_bytes() == data and not (tmp_path / REJECTED_FILE).exists()
    with caplog.at_level(logging.WARNING):
        assert list(RecordStore(path, writer=True).records) == ["a"]
    assert path.read_bytes() == record("a")
    assert (tmp_path / REJECTED_FILE).read_bytes() == bad
    assert "moved to" in caplog.text and REJECTED_FILE in caplog.text


def test_an_invalid_line_inside_the_file_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    write(path, record("a"), b"{oops}\n", record("b"))
    for writer in (False, True):
        with pytest.raises(ValueError, match=r"results\.jsonl:2: not a valid record"):
            RecordStore(path, writer=writer)
    with pytest.raises(RuntimeError, match="read-only"):
        RecordStore(tmp_path / "other.jsonl").append(ProblemRecord.model_validate_json(
            record("x")))


HOLD = """
import sys, time
from pathlib import Path
from testtime.store import RunLock
with RunLock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_one_writer_at_a_time_and_a_dead_writer_frees_the_directory(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        assert f"pid {holder.pid}" in (writer_of(tmp_path) or "")
        held = rf"being written by another process \(pid {holder.pid} on .* since .*\)"
        with pytest.raises(RunLocked, match=held), RunLock(tmp_path):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert writer_of(tmp_path) is None  # the kernel released the dead holder's lock
    with RunLock(tmp_path):
        assert f"pid {os.getpid()}" in (tmp_path / ".lock").read_text()


def test_json_files_are_replaced_atomically(tmp_path: Path) -> None:
    path = tmp_path / "summary.json"
    errors: list[str] = []
    stop = threading.Event()

    def writer(k: int) -> None:
        for i in range(200):
            dump_json(path, {"writer": k, "i": i, "pad": "x" * (1000 * (i % 7))})

    def reader() -> None:
        while not stop.is_set():
            try:
                if path.exists():
                    json.loads(path.read_text())
            except ValueError as exc:
                errors.append(str(exc))

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(3)]
    r = threading.Thread(target=reader)
    r.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    r.join()
    assert errors == []
    assert json.loads(path.read_text())["i"] == 199
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temp files left


def test_a_second_run_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    import asyncio

    from testtime.config import DatasetConfig, RunConfig
    from testtime.runner import run
    from testtime.testing import RuleScorer, ScriptedPolicy

    data = tmp_path / "set.jsonl"
    data.write_text("".join(json.dumps({"id": f"p{i}", "problem": f"{i}+1?",
                                        "answer": str(i + 1)}) + "\n" for i in range(3)))
    cfg = RunConfig(dataset=DatasetConfig(name=str(data)), policy="scripted", prm="rule")

    class Slow(ScriptedPolicy):
        async def generate(self, requests):  # type: ignore[no-untyped-def]
            await asyncio.sleep(LOCK_WAIT_S + 2)  # outlasts the second run's wait for the lock
            return await super().generate(requests)

    async def both() -> BaseException | None:
        first = asyncio.create_task(run(cfg, tmp_path / "run", progress=False,
                                        policy=Slow(lambda *a: "\\boxed{1}"),
                                        scorer=RuleScorer(lambda *a: 0.5)))
        await asyncio.sleep(0.2)
        started = time.monotonic()
        try:
            await asyncio.to_thread(lambda: asyncio.run(run(
                cfg, tmp_path / "run", resume=True, progress=False,
                policy=ScriptedPolicy(lambda *a: "\\boxed{1}"),
                scorer=RuleScorer(lambda *a: 0.5))))
        except RunLocked as exc:
            assert time.monotonic() - started < LOCK_WAIT_S + 2
            await first
            return exc
        await first
        return None

    exc = asyncio.run(both())
    assert exc is not None and f"pid {os.getpid()}" in str(exc)
