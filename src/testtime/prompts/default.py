"""The default prompt for small or unknown instruct models (the embedded SmolLM2).

SmolLM2-135M rarely writes ``\\boxed{}`` or blank-line-separated steps unless it is shown one
worked example; with it, it answers several easy problems right (without it, almost none).
"""

from __future__ import annotations

from testtime.prompts.base import PromptTemplate, WorkedExample

SYSTEM = (
    "You are a careful math tutor. Solve the problem step by step. Separate steps with a "
    "blank line. End with the final answer in the form \\boxed{answer}."
)

EXAMPLE = WorkedExample(
    problem="Tom has 3 boxes with 4 pencils in each box. He gives away 5 pencils. "
    "How many pencils does he have left?",
    solution=(
        "Tom starts with 3 boxes of 4 pencils, so he has 3 * 4 = 12 pencils.\n\n"
        "He gives away 5 pencils, so 12 - 5 = 7 pencils are left.\n\n"
        "The final answer is \\boxed{7}."
    ),
)

TEMPLATE = PromptTemplate(name="default", system=SYSTEM, examples=(EXAMPLE,))
