import asyncio
import threading

import pytest

from testtime.policy.batching import RequestBatcher
from testtime.policy.completion import build_completion
from testtime.types import ChatMessage, Completion, GenerationRequest, SamplingParams


def _echo(rows, params):  # type: ignore[no-untyped-def]
    return [
        Completion(text=f"{r.prefix}|{seed}", prompt_tokens=1, completion_tokens=1,
                   finish_reason="eos")
        for r, seed in rows
    ]


def _req(prefix: str, n: int = 1, temperature: float = 0.8, seed: int | None = 1):
    return GenerationRequest((ChatMessage("user", "q"),), prefix,
                             SamplingParams(n=n, temperature=temperature, seed=seed))


def test_concurrent_requests_share_batches_and_keep_order() -> None:
    sizes: list[int] = []

    def fn(rows, params):  # type: ignore[no-untyped-def]
        sizes.append(len(rows))
        return _echo(rows, params)

    batcher = RequestBatcher(fn, max_batch_seqs=6)

    async def main() -> list[list[list[Completion]]]:
        return await asyncio.gather(
            *(batcher.submit([_req(f"p{i}", n=2), _req(f"q{i}")]) for i in range(4))
        )

    outs = asyncio.run(main())
    for i, out in enumerate(outs):
        assert [c.text.split("|")[0] for c in out[0]] == [f"p{i}", f"p{i}"]
        assert len(out[1]) == 1 and out[1][0].text.startswith(f"q{i}|")
    # 12 rows from 4 concurrent tasks in full batches of 6, not 8 small calls.
    assert sizes == [6, 6]
    assert batcher.stats.rows == 12 and batcher.stats.max_rows == 6


def test_rows_of_one_request_get_distinct_seeds_and_split_across_batches() -> None:
    batcher = RequestBatcher(_echo, max_batch_seqs=3)
    [out] = asyncio.run(batcher.submit([_req("x", n=5, seed=7)]))
    seeds = [c.text.split("|")[1] for c in out]
    assert len(out) == 5 and len(set(seeds)) == 5


def test_different_sampling_configs_are_not_mixed() -> None:
    temps: list[float] = []

    def fn(rows, params):  # type: ignore[no-untyped-def]
        assert {r.params.temperature for r, _ in rows} == {params.temperature}
        temps.append(params.temperature)
        return _echo(rows, params)

    batcher = RequestBatcher(fn, max_batch_seqs=8)

    async def main() -> None:
        await asyncio.gather(batcher.submit([_req("a", temperature=0.0)]),
                             batcher.submit([_req("b", temperature=0.7)]))

    asyncio.run(main())
    assert sorted(temps) == [0.0, 0.7]


def test_backend_error_reaches_the_caller_and_batcher_recovers() -> None:
    calls = 0

    def fn(rows, params):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("device fell over")
        return _echo(rows, params)

    batcher = RequestBatcher(fn, max_batch_seqs=8)

    async def main() -> None:
        with pytest.raises(RuntimeError, match="device fell over"):
            await batcher.submit([_req("a")])
        out = await batcher.submit([_req("b")])
        assert out[0][0].text.startswith("b|")

    asyncio.run(main())


def test_build_completion_stop_string_contract() -> None:
    pieces = ["So", " 2", ".\n", "\nNext", " step"]
    c = build_completion(pieces, prompt_tokens=3, stop=("\n\n",), ended_with_eos=False)
    assert c.text == "So 2.\n\n" and c.finish_reason == "stop"
    assert c.completion_tokens == 4 and c.token_texts == tuple(pieces[:4])
    c = build_completion(["a", "b"], prompt_tokens=3, stop=("\n\n",), ended_with_eos=True)
    assert (c.text, c.finish_reason, c.completion_tokens) == ("ab", "eos", 3)
    c = build_completion(["a", "b"], prompt_tokens=3, stop=(), ended_with_eos=False)
    assert (c.finish_reason, c.completion_tokens) == ("length", 2)


def test_failing_request_is_isolated_from_its_batch_mates() -> None:
    def fn(rows, params):  # type: ignore[no-untyped-def]
        if any(r.prefix == "poison" for r, _ in rows):
            raise ValueError("cannot encode poison")
        return _echo(rows, params)

    batcher = RequestBatcher(fn, max_batch_seqs=8)

    async def main() -> tuple[object, object]:
        return await asyncio.gather(batcher.submit([_req("good", n=2)]),
                                    batcher.submit([_req("poison")]), return_exceptions=True)

    good, bad = asyncio.run(main())
    assert isinstance(bad, ValueError)
    assert [c.text.split("|")[0] for c in good[0]] == ["good", "good"]  # type: ignore[index]


def test_rows_with_different_max_tokens_share_a_batch_run_at_the_largest() -> None:
    # Beam search asks each path for min(step limit, tokens left): near the path limit those
    # differ, and splitting batches on them would fragment the step into tiny calls.
    from testtime.policy.batching import row_limit

    calls: list[tuple[int, list[int]]] = []

    def fn(rows, params):  # type: ignore[no-untyped-def]
        calls.append((params.max_tokens, [row_limit(r, params) for r, _ in rows]))
        return _echo(rows, params)

    def req(max_tokens: int) -> GenerationRequest:
        return GenerationRequest((ChatMessage("user", "q"),), "",
                                 SamplingParams(n=1, temperature=0.8, seed=1,
                                                max_tokens=max_tokens))

    batcher = RequestBatcher(fn, max_batch_seqs=8)

    async def main() -> None:
        await asyncio.gather(*(batcher.submit([req(m)]) for m in (5, 50, 20)))

    asyncio.run(main())
    assert calls == [(50, [5, 50, 20])]


def test_equal_requests_from_two_callers_stay_two_callers() -> None:
    # Pending entries are identities: equal requests must each get their own answer, and a
    # failing batch must be retried per caller without hashing requests by value.
    state = {"n": 0}

    def fn(rows, params):  # type: ignore[no-untyped-def]
        state["n"] += 1
        if state["n"] == 1 and len(rows) > 1:
            raise RuntimeError("batch too big")
        return _echo(rows, params)

    batcher = RequestBatcher(fn, max_batch_seqs=4)

    async def main() -> list[list[list[Completion]]]:
        return await asyncio.gather(batcher.submit([_req("same")]),
                                    batcher.submit([_req("same")]))

    outs = asyncio.run(asyncio.wait_for(main(), timeout=10))
    assert [len(o[0]) for o in outs] == [1, 1]


@pytest.mark.parametrize("streaming", [False, True])
def test_cancelled_callers_rows_are_never_decoded(streaming: bool) -> None:
    # A caller that is gone (an HTTP client of `serve tts` disconnected: its task cancelled)
    # must not cost compute: its queued rows are dropped when a batch is cut or extended.
    decoded: list[str] = []  # prefix of every row the scripted backend decodes
    started, release = threading.Event(), threading.Event()

    def fn(rows, params, stream=None):  # type: ignore[no-untyped-def]
        decoded.extend(r.prefix for r, _ in rows)
        if rows[0][0].prefix == "first":
            started.set()
            assert release.wait(10)
        if stream is None:
            return _echo(rows, params)
        more = stream.take(8)  # the streaming path: rows joining a running call
        decoded.extend(r.prefix for r, _ in more)
        outs = _echo(rows + more, params)
        for i in range(len(rows), len(outs)):
            stream.deliver(i, outs[i])
        return outs[: len(rows)]

    batcher = RequestBatcher(fn, max_batch_seqs=8, streaming=streaming)

    async def main() -> tuple[list[list[Completion]], list[list[Completion]], bool]:
        first = asyncio.create_task(batcher.submit([_req("first")]))
        await asyncio.to_thread(started.wait, 10)  # the backend is busy with "first"
        gone = asyncio.create_task(batcher.submit([_req("gone", n=4)]))
        kept = asyncio.create_task(batcher.submit([_req("kept", n=2)]))
        await asyncio.sleep(0)  # both are queued behind the running call
        gone.cancel()
        await asyncio.sleep(0)
        release.set()
        a, b = await asyncio.wait_for(asyncio.gather(first, kept), timeout=10)
        return a, b, gone.cancelled()

    first_out, kept_out, cancelled = asyncio.run(main())
    assert cancelled
    assert "gone" not in decoded
    assert sorted(decoded) == ["first", "kept", "kept"]
    assert [c.text.split("|")[0] for c in kept_out[0]] == ["kept", "kept"]
    assert len(first_out[0]) == 1
