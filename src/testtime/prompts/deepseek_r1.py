"""DeepSeek-R1-Distill (Qwen and Llama distills): no system prompt, instruction in the user turn.

DeepSeek's usage recommendations for the R1 series: avoid a system prompt (put every
instruction in the user prompt), add "Please reason step by step, and put your final answer
within \\boxed{}." to math problems, and sample at temperature 0.6 with top-p 0.95 and up to
32,768 new tokens (greedy decoding makes these models repeat themselves).
"""

from __future__ import annotations

from testtime.prompts.base import PromptTemplate, RecommendedSampling
from testtime.prompts.qwen import REASON_STEP_BY_STEP

TEMPLATE = PromptTemplate(
    name="deepseek_r1",
    system=None,
    user_format="{problem}\n" + REASON_STEP_BY_STEP,
    recommended_sampling=RecommendedSampling(temperature=0.6, top_p=0.95, max_tokens=32768),
)
