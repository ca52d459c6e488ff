"""Choosing on the dev split: candidate specs, and how a candidate's members are combined."""

from __future__ import annotations

import pytest

from cropworker_models import choose, data
from tests.images import DATA

pytestmark = pytest.mark.train


def test_spec_names_members_their_input_and_their_weight() -> None:
    assert choose.parse("fast") == ("fast", [choose.Member("fast")])
    label, members = choose.parse("pair=fast:256*0.4,cache/x.onnx*0.6")
    assert label == "pair"
    assert members == [choose.Member("fast", 256, 0.4), choose.Member("cache/x.onnx", None, 0.6)]
    with pytest.raises(ValueError, match="positive"):
        choose.parse("fast*0,vanilla")


def test_weights_decide_how_much_of_each_member_the_candidate_is() -> None:
    images = data.load_fixation_sets(DATA)[:2]
    fast = choose.score_images([choose.Member("fast")], images)
    # a member weighted next to nothing leaves the other's scores as they are
    almost = choose.score_images(
        [choose.Member("fast"), choose.Member("vanilla", weight=1e-9)], images
    )
    assert [r["nss"] for r in almost] == pytest.approx([r["nss"] for r in fast], rel=1e-6)
    even = choose.score_images([choose.Member("fast"), choose.Member("vanilla")], images)
    assert [r["nss"] for r in even] != pytest.approx([r["nss"] for r in fast], rel=1e-3)
