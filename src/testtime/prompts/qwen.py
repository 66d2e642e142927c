"""Qwen2.5 and Qwen2.5-Math Instruct: the chain-of-thought system prompt from Qwen's model cards.

Qwen2.5-Math-Instruct was trained with exactly this system message for CoT answers; the same
message works for the general Qwen2.5 Instruct models, and the problem is the user turn as-is.
"""

from __future__ import annotations

from testtime.prompts.base import PromptTemplate

#: The CoT instruction shared by the Qwen2.5-Math and DeepSeek-R1 model cards.
REASON_STEP_BY_STEP = "Please reason step by step, and put your final answer within \\boxed{}."

TEMPLATE = PromptTemplate(name="qwen", system=REASON_STEP_BY_STEP)
