"""Llama 3.x Instruct: Meta's official system prompt for its MATH evaluations.

The text is the one Meta used for the Llama 3.2 Instruct MATH evals and that
``huggingface/search-and-learn`` (the reference reproduction of compute-optimal test-time
scaling) uses in ``sal/config.py``. It asks for ``## Step k:`` blocks separated by blank lines,
which is exactly the step delimiter the search methods cut on, and for a closing
``$\\boxed{answer}$`` line.
"""

from __future__ import annotations

from testtime.prompts.base import PromptTemplate

SYSTEM = (
    "Solve the following math problem efficiently and clearly:\n\n"
    "- For simple problems (2 steps or fewer):\n"
    "Provide a concise solution with minimal explanation.\n\n"
    "- For complex problems (3 steps or more):\n"
    "Use this step-by-step format:\n\n"
    "## Step 1: [Concise description]\n"
    "[Brief explanation and calculations]\n\n"
    "## Step 2: [Concise description]\n"
    "[Brief explanation and calculations]\n\n"
    "...\n\n"
    "Regardless of the approach, always conclude with:\n\n"
    "Therefore, the final answer is: $\\boxed{answer}$. I hope it is correct.\n\n"
    "Where [answer] is just the final number or expression that solves the problem."
)

TEMPLATE = PromptTemplate(name="llama3", system=SYSTEM)
