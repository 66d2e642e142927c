"""DeepConf's token and trace confidences (Fu et al. 2025, "Deep Think with Confidence",
arXiv 2508.15260; facebookresearch/deepconf ``deepconf/utils.py``).

* Token confidence: minus the mean log-probability of the :data:`TOP_K` most likely next
  tokens, ``C_i = -(1/k) sum_j log P_i(j)``: high when the distribution is peaked. The
  in-process backends compute it from the full distribution; vLLM and OpenAI-compatible
  servers from the top-k log-probabilities they return (the official code averages what vLLM
  returns for ``logprobs=20``: the top 20 and the sampled token).
* Trace confidences, over a path's tokens: *group* confidences are the means over sliding
  windows of :data:`WINDOW` tokens (stride 1; the whole trace when it is shorter); the
  ``lowest`` group, the ``bottom10`` (mean of the lowest 10 % of groups, at least one), the
  ``tail`` (mean of the last :data:`WINDOW` tokens) and the ``mean`` over all tokens.

The selection rules built on them live in :mod:`testtime.selection`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Tokens whose log-probabilities make a token confidence (DeepConf: 20).
TOP_K = 20
#: Group window and tail length in tokens (DeepConf: 2048).
WINDOW = 2048
#: Share of the lowest groups averaged by ``bottom10``.
BOTTOM_FRACTION = 0.1
#: Trace metrics, in the order records store them.
METRICS = ("lowest", "bottom10", "tail", "mean")


def token_confidence(logprobs: Sequence[float] | np.ndarray) -> float:
    """``-mean(logprobs)`` of the top-k log-probabilities of one position."""
    values = np.asarray(logprobs, dtype=np.float64)
    return float(-values.mean()) if values.size else 0.0


def top_k_confidence(logits: np.ndarray, k: int = TOP_K) -> float:
    """Token confidence from a full row of logits (unwarped, T=1)."""
    x = logits.astype(np.float64)
    m = float(x.max())
    lse = m + float(np.log(np.exp(x - m).sum()))
    k = min(k, x.size)
    top = np.partition(x, x.size - k)[x.size - k:]
    return float(lse - top.mean())


def trace_confidence(values: Sequence[float]) -> dict[str, float] | None:
    """The trace metrics of a path's token confidences (None for an empty path)."""
    c = np.asarray(values, dtype=np.float64)
    n = c.size
    if n == 0:
        return None
    if n <= WINDOW:
        groups = np.array([c.mean()])
    else:  # every window of WINDOW tokens, stride 1 (cumulative sums: O(n))
        s = np.concatenate(([0.0], np.cumsum(c)))
        groups = (s[WINDOW:] - s[:-WINDOW]) / WINDOW
    lowest_k = max(1, int(BOTTOM_FRACTION * groups.size))
    return {
        "lowest": float(groups.min()),
        "bottom10": float(np.sort(groups)[:lowest_k].mean()),
        "tail": float(c[-WINDOW:].mean()),
        "mean": float(c.mean()),
    }
