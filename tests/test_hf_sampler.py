"""The transformers backend's batched per-row sampler: right distribution, per-row streams."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from testtime.policy.hf_logits import RowSampler, row_uniforms

ROWS = 40_000
#: Five standard errors of a frequency estimated from ROWS draws (p(1-p) <= 1/4).
TOLERANCE = 5 * 0.5 / ROWS**0.5


def draws(logits: list[float], temperature: float, top_p: float, step: int = 0) -> object:
    sampler = RowSampler(list(range(ROWS)), temperature, top_p, "cpu")
    sampler.step = step
    out = sampler(None, torch.tensor([logits]).expand(ROWS, len(logits)))
    # Exactly one token per row is left open, the drawn one.
    assert ((out == 0).sum(-1) == 1).all() and torch.isinf(out).sum() == ROWS * (len(logits) - 1)
    return torch.bincount(out.argmax(-1), minlength=len(logits)).double() / ROWS


@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
def test_frequencies_follow_the_tempered_softmax(temperature: float) -> None:
    logits = [0.0, 1.0, 2.0, -1.0, 0.5]
    want = torch.softmax(torch.tensor(logits, dtype=torch.float64) / temperature, -1)
    got = draws(logits, temperature, 1.0, step=7)
    assert torch.allclose(got, want, atol=TOLERANCE), (got, want)


def test_top_p_keeps_the_smallest_nucleus_and_renormalises() -> None:
    # p = softmax([0, 1, 2, -1]) = .087, .237, .644, .032: the nucleus for 0.7 is {2, 1}.
    logits = [0.0, 1.0, 2.0, -1.0]
    p = torch.softmax(torch.tensor(logits, dtype=torch.float64), -1)
    want = torch.zeros(4, dtype=torch.float64)
    want[[1, 2]] = p[[1, 2]] / p[[1, 2]].sum()
    got = draws(logits, 1.0, 0.7)
    assert got[0] == 0 and got[3] == 0
    assert torch.allclose(got, want, atol=TOLERANCE)


def test_a_rows_draws_depend_on_its_seed_and_step_only() -> None:
    gen = torch.Generator().manual_seed(0)
    alone, batched = RowSampler([6], 1.0, 1.0, "cpu"), RowSampler([5, 6, 7], 1.0, 1.0, "cpu")
    other = RowSampler([8], 1.0, 1.0, "cpu")
    same = differ = 0
    for _ in range(50):
        x = torch.randn(3, 64, generator=gen)
        a = alone(None, x[1:2]).argmax(-1).item()
        assert batched(None, x).argmax(-1)[1].item() == a  # the batch around it changes nothing
        b = other(None, x[1:2]).argmax(-1).item()
        same, differ = same + (a == b), differ + (a != b)
    assert differ > 25  # another seed gives another stream


def test_uniforms_are_uniform_and_steps_independent() -> None:
    keys = torch.arange(100_000)
    u0, u1 = row_uniforms(keys, 0), row_uniforms(keys, 1)
    assert 0 < u0.min() and u0.max() < 1
    assert abs(u0.mean().item() - 0.5) < 0.005 and abs(u0.std().item() - 12**-0.5) < 0.005
    assert abs(torch.corrcoef(torch.stack([u0, u1]))[0, 1].item()) < 0.02
    assert torch.equal(row_uniforms(keys, 0), u0)  # a pure function of (key, step)
