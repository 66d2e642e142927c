"""The default prompt for small or unknown instruct models (the embedded SmolLM2).

SmolLM2-135M rarely writes ``\\boxed{}`` or blank-line-separated steps unless it is shown one
worked example. Measured greedily on 24 demo problems (levels 1, 2, 4), the example written
inside the user turn with no system prompt got 16/24 right; the same example as a separate
user/assistant exchange with a system prompt got 9/24, and two examples 9-10/24. So the
example is inlined in the user turn.
"""

from __future__ import annotations

from testtime.prompts.base import PromptTemplate, WorkedExample

INSTRUCTION = "Solve the problem. Put the final answer in \\boxed{}."

EXAMPLE = WorkedExample(
    problem="Tom has 3 boxes with 4 pencils in each box. He gives away 5 pencils. "
    "How many pencils does he have left?",
    solution=(
        "Tom starts with 3 boxes of 4 pencils, so he has 3 * 4 = 12 pencils.\n\n"
        "He gives away 5 pencils, so 12 - 5 = 7 pencils are left.\n\n"
        "The final answer is \\boxed{7}."
    ),
)

USER_FORMAT = (
    f"{INSTRUCTION}\n\nExample:\nProblem: {EXAMPLE.problem}\nSolution: {EXAMPLE.solution}"
    "\n\nProblem: {problem}\nSolution:"
)

TEMPLATE = PromptTemplate(name="default", system=None, user_format=USER_FORMAT)
