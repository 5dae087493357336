"""Committed narrative notebooks carry the outputs of their current code (issue 13: readers see results without
running anything, and never stale ones)."""
from dis2.regenerate import stale_outputs


def test_committed_outputs_match_their_code():
    stale = stale_outputs()
    assert stale == [], (f"{stale}: outputs were made from other code than the notebook now holds; rerun "
                         f"`dis2 figures --only <name>` (writes them back with a new stamp) or clear the outputs")
