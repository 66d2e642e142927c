from testtime.steps import completion_steps, split_text
from testtime.types import Completion


def test_split_keeps_delimiters_and_concatenates() -> None:
    text = "First.\n\nSecond.\n\n\nThird \\boxed{3}"
    parts = split_text(text)
    assert parts == ["First.\n\n", "Second.\n\n\n", "Third \\boxed{3}"]
    assert "".join(parts) == text


def test_split_edge_cases() -> None:
    assert split_text("") == []
    assert split_text("no delimiter") == ["no delimiter"]
    assert split_text("\n\nAfter a leading blank line") == ["\n\nAfter a leading blank line"]
    assert split_text("ends.\n\n") == ["ends.\n\n"]


def test_token_attribution_sums_to_completion_tokens() -> None:
    pieces = ("Step", " one", ".\n\n", "Step", " two", ".")
    c = Completion(
        text="".join(pieces), prompt_tokens=10, completion_tokens=7, finish_reason="eos",
        token_texts=pieces, token_logprobs=(-1, -1, -1, -2, -2, -2),
        token_certainties=(0.5,) * 6,
    )
    steps = completion_steps(c)
    assert [s.text for s in steps] == ["Step one.\n\n", "Step two."]
    # 3 tokens each; the EOS token is charged to the last step.
    assert [s.num_tokens for s in steps] == [3, 4]
    assert sum(s.num_tokens for s in steps) == c.completion_tokens
    assert steps[0].logprob_sum == -3 and steps[1].logprob_sum == -6
    assert steps[1].certainty_sum == 1.5
    assert not any(s.truncated for s in steps)


def test_truncated_last_step_marked() -> None:
    c = Completion(text="a\n\nb c", prompt_tokens=1, completion_tokens=3,
                   finish_reason="length", token_texts=("a\n\n", "b", " c"))
    steps = completion_steps(c)
    assert [s.truncated for s in steps] == [False, True]


def test_without_token_texts_uses_counter() -> None:
    c = Completion(text="one two\n\nthree", prompt_tokens=1, completion_tokens=5,
                   finish_reason="eos")
    steps = completion_steps(c, count_tokens=lambda s: len(s.split()))
    assert [s.num_tokens for s in steps] == [2, 3]
    assert steps[0].logprob_sum is None
