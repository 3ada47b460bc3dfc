"""The equal-cost frontier: Pareto points, interpolation, the difference of a method to it, and the
number of coreset reuses after which a static method pays for its scoring."""

from __future__ import annotations

import pytest

from lightning_prune.pipeline.frontier import Frontier, FrontierPoint

P = FrontierPoint


@pytest.fixture
def frontier() -> Frontier:
    return Frontier.of(
        [
            P(0.5, 0.80, "full-budget r0.50"),
            P(0.3, 0.70, "full-budget r0.70"),
            P(1.0, 0.90, "full"),
            P(0.5, 0.75, "random r0.50"),  # dominated at the same cost
            P(0.7, 0.78, "random r0.30"),  # dominated: less accurate than a cheaper point
            P(0.3, 0.72, "rs2 r0.70"),  # the better of two at one cost
        ]
    )


def test_only_pareto_points_remain_in_order_of_cost(frontier):
    assert [p.label for p in frontier.points] == ["rs2 r0.70", "full-budget r0.50", "full"]


def test_accuracy_is_interpolated_between_points_and_flat_beyond_the_last(frontier):
    assert frontier.accuracy_at(0.3) == pytest.approx(0.72)
    assert frontier.accuracy_at(0.4) == pytest.approx(0.76)
    assert frontier.accuracy_at(0.75) == pytest.approx(0.85)
    assert frontier.accuracy_at(1.0) == pytest.approx(0.90)
    assert frontier.accuracy_at(3.0) == pytest.approx(0.90)
    assert frontier.accuracy_at(0.1) is None


def test_the_interpolation_is_never_below_a_cheaper_measured_point(frontier):
    for step in range(30, 300):
        cost = step / 100
        cheaper = max(p.accuracy for p in frontier.points if p.cost <= cost)
        assert frontier.accuracy_at(cost) >= cheaper - 1e-12


def test_difference_to_the_frontier(frontier):
    assert frontier.difference(0.4, 0.80) == pytest.approx(0.04)
    assert frontier.difference(1.5, 0.85) == pytest.approx(-0.05)
    assert frontier.difference(0.1, 0.5) is None


def test_cost_for_an_accuracy_inverts_the_line(frontier):
    assert frontier.cost_for(0.76) == pytest.approx(0.4)
    assert frontier.cost_for(0.85) == pytest.approx(0.75)
    assert frontier.cost_for(0.6) == pytest.approx(0.3)  # below the cheapest: its cost, an upper bound
    assert frontier.cost_for(0.95) is None


def test_reuse_break_even(frontier):
    # 0.85 costs the frontier 0.75; a coreset trained at 0.5 per use saves 0.25 a use: a one-off cost of
    # 1.0 is paid after 1.0 / 0.25 = 4 uses, and the cost per use falls below on the 5th
    assert frontier.reuse_break_even(0.85, one_off_cost=1.0, cost_per_use=0.5) == 5
    assert frontier.reuse_break_even(0.85, one_off_cost=0.9, cost_per_use=0.5) == 4
    assert frontier.reuse_break_even(0.85, one_off_cost=0.0, cost_per_use=0.5) == 1
    # the frontier reaches 0.76 at 0.4: a coreset that needs 0.5 a use never pays
    assert frontier.reuse_break_even(0.76, one_off_cost=1.0, cost_per_use=0.5) is None
    # above every baseline: it pays from the first use
    assert frontier.reuse_break_even(0.95, one_off_cost=3.0, cost_per_use=0.5) == 1


def test_a_saving_per_use_below_the_cost_resolution_never_pays(frontier):
    # the built-in study printed "pays after 6713425 uses" for a coreset whose accuracy the frontier
    # reached for a hair more than the coreset's own training: a saving per use far below what the
    # baselines' costs resolve is no saving
    needed = frontier.cost_for(0.76)
    assert frontier.reuse_break_even(0.76, one_off_cost=1.0, cost_per_use=needed - 1e-7) is None
    assert frontier.reuse_break_even(0.76, one_off_cost=1.0, cost_per_use=needed - 0.009) is None
    # a saving of 1% of one full training or more is counted
    assert frontier.reuse_break_even(0.76, one_off_cost=1.0, cost_per_use=needed - 0.03) == 34


def test_bad_points_are_refused():
    with pytest.raises(ValueError, match="at least one baseline"):
        Frontier.of([])
    with pytest.raises(ValueError, match="cost"):
        Frontier.of([P(float("nan"), 0.5, "x")])
    with pytest.raises(ValueError, match="cost"):
        Frontier.of([P(-0.1, 0.5, "x")])


def _entry(mean, dynamic=False):
    return {"mean": mean, "std": 0.0, "runs": [mean], "dynamic": dynamic}


def test_a_runs_report_places_every_method_against_its_baselines():
    from lightning_prune.pipeline.frontier import best_at_budgets, frontier_report

    summary = {
        "full": {"0.00": _entry(0.90)},
        "full-budget": {"0.50": _entry(0.80)},
        "rs2": {"0.50": _entry(0.82, dynamic=True)},
        "random": {"0.50": _entry(0.78)},
        "tdds": {"0.50": _entry(0.85)},
        "infobatch": {"0.50": _entry(0.89, dynamic=True)},
    }
    costs = {
        "full": {"0.00": {"relative": 1.0, "upfront": 0.0}},
        "full-budget": {"0.50": {"relative": 0.5, "upfront": 0.0}},
        "rs2": {"0.50": {"relative": 0.5, "upfront": 0.0}},
        "random": {"0.50": {"relative": 0.5, "upfront": 0.0}},
        "tdds": {"0.50": {"relative": 1.5, "upfront": 1.0}},
        "infobatch": {"0.50": {"relative": 0.6, "upfront": 0.0}},
    }
    rows = frontier_report(summary, costs)
    assert set(rows) == {"tdds", "infobatch"}
    assert rows["tdds"]["0.50"]["difference"] == pytest.approx(85 - 90)  # beyond the full data: flat at 90
    # at 85 points the frontier (82 at 0.5 -> 90 at 1.0) needs 0.6875x; the coreset trains at 0.5 a use:
    # 0.5 + 1.0 / n < 0.6875 from n = 6
    assert rows["tdds"]["0.50"]["reuse_break_even"] == 6
    assert rows["infobatch"]["0.50"]["difference"] == pytest.approx(89 - (82 + 0.2 * 8))
    assert "reuse_break_even" not in rows["infobatch"]["0.50"]  # dynamic: nothing to reuse
    best = best_at_budgets(summary, costs, [0.5, 1.0, float("inf")])
    assert [(b, m) for b, m, *_ in best] == [(0.5, "rs2"), (1.0, "full"), (float("inf"), "full")]


def test_under_equal_steps_a_coreset_saves_no_compute_so_no_break_even_is_reported():
    from lightning_prune.pipeline.frontier import frontier_report

    summary = {"full": {"0.00": _entry(0.90)}, "random": {"0.70": _entry(0.80)}, "tdds": {"0.70": _entry(0.85)}}
    # equal steps: the coreset's last batch of each epoch is smaller, so it forwards 0.85x for the same steps;
    # at 85 points the frontier (80 at 0.85 -> 90 at 1.0) needs 0.925x: 0.85 + 1.0 / n < 0.925 from n = 14
    costs = {
        "full": {"0.00": {"relative": 1.0, "upfront": 0.0}},
        "random": {"0.70": {"relative": 0.85, "upfront": 0.0}},
        "tdds": {"0.70": {"relative": 1.85, "upfront": 1.0}},
    }
    assert frontier_report(summary, costs)["tdds"]["0.70"]["reuse_break_even"] == 14  # in samples, not steps
    rows = frontier_report(summary, costs, reuse_break_even=False)
    assert rows["tdds"]["0.70"]["difference"] == pytest.approx(85 - 90)
    assert "reuse_break_even" not in rows["tdds"]["0.70"]
