"""Compiling a flow: what a link's base keeps."""
from __future__ import annotations

import pytest

from daemon import presets
from daemon.engine.flow import compile_flow
from daemon.engine.rules import FlowRules


@pytest.mark.parametrize("preset", ["unleashed_crm", "tryton_crm"])
def test_a_flow_without_if_or_owner_when_keeps_the_base_it_always_had(preset):
    """Links made by an earlier version hash the field paths, duplicates and all: the same
    paths in the same order keep their hashes, so an upgrade re-merges nothing."""
    spec = presets.expand({"preset": preset, "left": "a", "right": "b"}, "x")
    for raw in spec["flows"]:
        flow = compile_flow(FlowRules.model_validate(raw))
        for side in ("left", "right"):
            assert flow.base_paths[side] == [f.path(side) for f in flow.fields]


def test_the_base_also_keeps_what_if_and_owner_when_look_at():
    spec = presets.expand({"preset": "sage50fr_sales_management", "left": "a", "right": "b"},
                          "x")
    flows = {f["name"]: compile_flow(FlowRules.model_validate(f)) for f in spec["flows"]}
    assert "STOCK_TYPE" in flows["products"].base_paths["left"]
    assert flows["companies"].base_paths["left"].count("TYPE") >= 1
    assert flows["companies"].shared is not None and flows["products"].shared is None
