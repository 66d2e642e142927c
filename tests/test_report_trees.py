"""Search trees in the report: every node status a search can record is drawn."""

from __future__ import annotations

from types import SimpleNamespace
from typing import get_args

from testtime.analysis.trees import COLORS, tree_svg
from testtime.records import NodeRecord
from testtime.search.base import NodeStatus


def test_every_node_status_has_a_colour() -> None:
    assert set(COLORS) == set(get_args(NodeStatus))
    assert set(COLORS) == set(get_args(NodeRecord.model_fields["status"].annotation))


def test_a_tree_with_every_status_is_drawn() -> None:
    # The paper's beam search records cut and duplicate steps as "dropped"; a report over such a
    # run once failed with KeyError: 'dropped'.
    statuses = get_args(NodeStatus)
    nodes = [NodeRecord(id=0, parent=-1, depth=0, text="root", tokens=3, score=0.5,
                        status="kept")]
    nodes += [NodeRecord(id=i + 1, parent=0, depth=1, text=f"step <{s}>", tokens=4,
                         score=None if s == "dropped" else 0.25, status=s)
              for i, s in enumerate(statuses)]
    svg = tree_svg(SimpleNamespace(tree=nodes))  # type: ignore[arg-type]
    assert svg.count("<circle") == len(nodes)
    for s in statuses:
        assert f'fill="{COLORS[s]}"' in svg and f" {s} score=" in svg
    assert "step &lt;dropped&gt;" in svg  # step text is escaped
