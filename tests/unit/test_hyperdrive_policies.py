"""Early termination policies: hand-computed metric curves, checked against the documented semantics.

Semantics under test (airflow_provider/core/hyperdrive/policies.py and Azure ML v1's HyperDrive docs):
interval k = the trial's k-th report; a policy is evaluated at k when k is a multiple of
evaluation_interval and k >= delay_evaluation; the cohort at k is every trial with at least k
reports (the trial itself included), each cut to its first k values.
"""

from __future__ import annotations

import json
import math

import pytest

from airflow_provider.core.errors import ConfigurationError
from airflow_provider.core.hyperdrive import (
    BanditPolicy,
    MedianStoppingPolicy,
    NoTerminationPolicy,
    PrimaryMetricGoal,
    TruncationSelectionPolicy,
)
from airflow_provider.core.hyperdrive.policies import EarlyTerminationPolicy, policy_from_dict

MAX = PrimaryMetricGoal.MAXIMIZE
MIN = PrimaryMetricGoal.MINIMIZE


def stop_interval(policy: EarlyTerminationPolicy, own: list[float], others: list[list[float]],
                  goal: PrimaryMetricGoal = MAX, after: int = 0) -> int | None:
    """The interval at which ``first_stop`` stops the trial (None: never), checking the reason's shape."""
    result = policy.first_stop(own, others, goal, after=after)
    if result is None:
        return None
    interval, reason = result
    assert isinstance(reason, str)
    assert type(policy).__name__ in reason
    assert f"interval {interval}" in reason
    return interval


# --------------------------------------------------------------------------------------------- when


@pytest.mark.parametrize(
    ("evaluation_interval", "delay_evaluation", "evaluated"),
    [
        (1, 0, [1, 2, 3, 4, 5, 6, 7, 8, 9]),
        (3, 0, [3, 6, 9]),
        (3, 3, [3, 6, 9]),
        (3, 4, [6, 9]),
        (2, 5, [6, 8]),
        (1, 5, [5, 6, 7, 8, 9]),
        (4, 9, []),
        (10, 0, []),
    ],
)
def test_applies_only_at_multiples_of_the_interval_from_the_delay_on(
        evaluation_interval: int, delay_evaluation: int, evaluated: list[int]) -> None:
    policy = BanditPolicy(evaluation_interval=evaluation_interval, slack_amount=0.1,
                          delay_evaluation=delay_evaluation)
    assert [k for k in range(1, 10) if policy.applies_at(k)] == evaluated


@pytest.mark.parametrize(
    ("evaluation_interval", "delay_evaluation", "expected"),
    [
        (1, 0, 1),
        (3, 0, 3),
        (3, 3, 3),  # the delay is inclusive: interval 3 >= delay 3
        (3, 4, 6),  # 3 is delayed, the next multiple is 6
        (2, 5, 6),  # 5 is not a multiple of 2: delayed intervals are skipped, not evaluated late
        (4, 0, 4),
        (1, 7, 7),
        (1, 8, None),  # the trial ends (7 reports) before the delay
        (8, 0, None),  # no multiple of 8 is reached
    ],
)
def test_bandit_first_stop_honours_evaluation_interval_and_delay(
        evaluation_interval: int, delay_evaluation: int, expected: int | None) -> None:
    # The trial is hopeless from its first report on (0.1 vs a leader at 1.0, slack 0.1), so the
    # interval at which it stops is exactly the first interval at which the policy applies.
    policy = BanditPolicy(evaluation_interval=evaluation_interval, slack_amount=0.1,
                          delay_evaluation=delay_evaluation)
    assert stop_interval(policy, [0.1] * 7, [[1.0] * 7]) == expected


@pytest.mark.parametrize(
    "policy",
    [
        BanditPolicy(evaluation_interval=3, slack_amount=0.1, delay_evaluation=4),
        MedianStoppingPolicy(evaluation_interval=3, delay_evaluation=4),
        TruncationSelectionPolicy(50, evaluation_interval=3, delay_evaluation=4),
    ],
    ids=["bandit", "median", "truncation"],
)
def test_every_policy_is_evaluated_only_at_its_scheduled_intervals(policy: EarlyTerminationPolicy) -> None:
    # Hopeless at every interval: stopped at the first scheduled one, 6 (3 is before the delay).
    assert stop_interval(policy, [1.0] * 8, [[10.0] * 8]) == 6
    assert stop_interval(policy, [1.0] * 5, [[10.0] * 8]) is None  # never reaches interval 6


def test_first_stop_after_skips_intervals_already_evaluated() -> None:
    policy = BanditPolicy(slack_amount=0.1)
    own, others = [0.1] * 5, [[1.0] * 5]
    assert stop_interval(policy, own, others) == 1
    assert stop_interval(policy, own, others, after=3) == 4
    assert stop_interval(policy, own, others, after=5) is None


def test_first_stop_of_a_trial_without_reports_is_none() -> None:
    for policy in (BanditPolicy(slack_factor=0.1), MedianStoppingPolicy(), TruncationSelectionPolicy(50)):
        assert policy.first_stop([], [[1.0, 2.0]], MAX) is None


# ------------------------------------------------------------------------------------------- bandit

AZURE_LEADER = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.78, 0.8]


def test_bandit_azure_example_stops_below_best_over_one_plus_slack_at_interval_10() -> None:
    # Maximizing, slack_factor=0.2, the best trial reported 0.8 by interval 10: trials whose best by
    # interval 10 is below 0.8 / 1.2 = 0.667 stop. The delay keeps intervals 1-9 from being judged
    # (at interval 2, 0.1 < 0.2 / 1.2 would have stopped the laggard).
    policy = BanditPolicy(evaluation_interval=1, slack_factor=0.2, delay_evaluation=10)
    laggard = [0.1] * 9 + [0.66]
    survivor = [0.1] * 9 + [0.67]
    assert stop_interval(policy, laggard, [AZURE_LEADER, survivor]) == 10
    assert stop_interval(policy, survivor, [AZURE_LEADER, laggard]) is None
    assert stop_interval(policy, AZURE_LEADER, [laggard, survivor]) is None
    # Without the delay the laggard is judged from interval 1 on, and stops at 2.
    undelayed = BanditPolicy(evaluation_interval=1, slack_factor=0.2)
    assert stop_interval(undelayed, laggard, [AZURE_LEADER]) == 2


def test_bandit_keeps_evaluating_after_the_delay() -> None:
    # The survivor passes interval 10 (0.67 >= 0.8/1.2) but not 11, where the leader reached 0.9
    # (limit 0.75).
    policy = BanditPolicy(evaluation_interval=1, slack_factor=0.2, delay_evaluation=10)
    survivor = [0.1] * 9 + [0.67, 0.67, 0.67]
    leader = [*AZURE_LEADER, 0.9, 0.9]
    assert stop_interval(policy, survivor, [leader]) == 11
    # With evaluation_interval=5 the next evaluation after 10 is 15: the trial ends at 12 unstopped.
    sparse = BanditPolicy(evaluation_interval=5, slack_factor=0.2, delay_evaluation=10)
    assert stop_interval(sparse, survivor, [leader]) is None


@pytest.mark.parametrize(
    ("policy", "goal", "leader", "boundary", "beyond"),
    [
        # maximize, factor: limit = 3 / (1 + 0.5) = 2
        (BanditPolicy(slack_factor=0.5), MAX, 3.0, 2.0, 1.99),
        # minimize, factor: limit = 2 * (1 + 0.5) = 3
        (BanditPolicy(slack_factor=0.5), MIN, 2.0, 3.0, 3.01),
        # maximize, amount: limit = 1 - 0.5 = 0.5
        (BanditPolicy(slack_amount=0.5), MAX, 1.0, 0.5, 0.49),
        # minimize, amount: limit = 1 + 0.25 = 1.25
        (BanditPolicy(slack_amount=0.25), MIN, 1.0, 1.25, 1.26),
    ],
    ids=["max-factor", "min-factor", "max-amount", "min-amount"],
)
def test_bandit_limit_is_strict_in_both_directions_and_both_slacks(
        policy: BanditPolicy, goal: PrimaryMetricGoal, leader: float, boundary: float, beyond: float) -> None:
    assert stop_interval(policy, [boundary], [[leader]], goal) is None  # exactly at the limit: kept
    assert stop_interval(policy, [beyond], [[leader]], goal) == 1
    assert stop_interval(policy, [leader], [[beyond]], goal) is None  # the leader itself


def test_bandit_slack_factor_zero_stops_everything_worse_than_the_best() -> None:
    policy = BanditPolicy(slack_factor=0)
    assert stop_interval(policy, [0.5, 0.6], [[0.6, 0.6]]) == 1
    assert stop_interval(policy, [0.6, 0.6], [[0.6, 0.6]]) is None  # ties are kept
    assert stop_interval(policy, [0.7, 0.6], [[0.6, 0.6]], MIN) == 1


def test_bandit_compares_best_so_far_not_the_latest_value() -> None:
    policy = BanditPolicy(slack_amount=0.1)
    # Maximize: the trial's best stays 0.9 even though it falls to 0.1.
    assert stop_interval(policy, [0.9, 0.1, 0.1], [[0.9, 0.9, 0.9]]) is None
    # The leader's best counts too: it reached 1.0 at 1, then fell back; the trial (0.85) is out.
    assert stop_interval(policy, [0.5, 0.85, 0.85], [[0.5, 1.0, 0.2]]) == 2
    # Minimize: best = smallest value so far.
    assert stop_interval(policy, [0.2, 5.0, 5.0], [[0.2, 0.2, 0.2]], MIN) is None
    assert stop_interval(policy, [1.0, 0.9, 0.8], [[1.0, 0.5, 0.5]], MIN) == 2


def test_bandit_cuts_other_trials_to_the_interval() -> None:
    # The other trial reaches 5.0 only at its 4th report: the trial stops at 4, not before.
    policy = BanditPolicy(slack_amount=0.1)
    assert stop_interval(policy, [0.45] * 4, [[0.5, 0.5, 0.5, 5.0]]) == 4
    # ... and the trial's own later values do not save it earlier.
    assert stop_interval(policy, [0.3, 0.3, 0.9], [[0.5, 0.5, 0.5]]) == 1


def test_bandit_ignores_trials_that_have_not_reached_the_interval() -> None:
    own = [0.1, 0.1]
    short_leader = [5.0]
    assert stop_interval(BanditPolicy(slack_amount=0.1), own, [short_leader]) == 1
    # At interval 2 the one-report leader is not in the cohort: the trial is alone, and kept.
    assert stop_interval(BanditPolicy(evaluation_interval=2, slack_amount=0.1), own, [short_leader]) is None
    assert stop_interval(BanditPolicy(evaluation_interval=2, slack_amount=0.1), own, [[5.0, 0.0]]) == 2


# ------------------------------------------------------------------------------------------- median


def test_median_odd_cohort() -> None:
    # Interval 3: running averages 2 (own), 5, 4 -> median 4. Own best 3 < 4: stopped.
    policy = MedianStoppingPolicy(evaluation_interval=3)
    others = [[5.0, 5.0, 5.0], [4.0, 4.0, 4.0]]
    assert stop_interval(policy, [1.0, 2.0, 3.0], others) == 3
    # Own best 4 equals the median: "strictly worse" is required.
    assert stop_interval(policy, [1.0, 2.0, 4.0], others) is None


@pytest.mark.parametrize(
    ("own", "expected"),
    [
        ([4.5, -0.5], 2),  # best 4.5 < 5 (would survive the lower middle, 4)
        ([5.0, -1.0], None),  # exactly the median
        ([5.5, -1.5], None),  # best 5.5 > 5 (would be stopped by the upper middle, 6)
    ],
)
def test_median_even_cohort_is_the_mean_of_the_two_middle_averages(own: list[float], expected: int | None) -> None:
    # Interval 2: running averages 2 (own), 4, 6, 9 -> median (4 + 6) / 2 = 5.
    policy = MedianStoppingPolicy(evaluation_interval=2)
    assert stop_interval(policy, own, [[4.0, 4.0], [6.0, 6.0], [9.0, 9.0]]) == expected


def test_median_uses_running_averages_not_best_values() -> None:
    # Others average 5 but peaked at 10: the median of averages (6, 5, 5 -> 5) keeps a trial whose best is 6.
    policy = MedianStoppingPolicy(evaluation_interval=2)
    assert stop_interval(policy, [6.0, 6.0], [[0.0, 10.0], [0.0, 10.0]]) is None
    # A trial whose best (4) is below 5 is stopped.
    assert stop_interval(policy, [4.0, 4.0], [[0.0, 10.0], [0.0, 10.0]]) == 2


def test_median_includes_the_trial_itself_in_the_cohort() -> None:
    # Interval 2: averages 3 (own: [1, 5]), 6, 4.5 -> median 4.5 <= own best 5: kept.
    # (Without itself the median would be 5.25 and the trial would stop.)
    policy = MedianStoppingPolicy(evaluation_interval=2)
    assert stop_interval(policy, [1.0, 5.0], [[6.0, 6.0], [4.5, 4.5]]) is None


def test_median_minimize() -> None:
    # Interval 1: averages 6, 2, 3 -> median 3; own best 6 > 3: stopped at 1.
    others = [[2.0, 2.0], [3.0, 3.0]]
    assert stop_interval(MedianStoppingPolicy(), [6.0, 5.0], others, MIN) == 1
    # Interval 2: averages 5.5, 2, 3 -> median 3; own best (smallest) 5 > 3: stopped at 2.
    assert stop_interval(MedianStoppingPolicy(evaluation_interval=2), [6.0, 5.0], others, MIN) == 2
    # Own best 1 (min) < 3: kept, even though its average (2.5) is not.
    assert stop_interval(MedianStoppingPolicy(evaluation_interval=2), [4.0, 1.0], others, MIN) is None
    # The same curve maximizing: best 4 vs median of (2.5, 2, 3) = 2.5: kept; [1, 1] is stopped.
    assert stop_interval(MedianStoppingPolicy(evaluation_interval=2), [4.0, 1.0], others, MAX) is None
    assert stop_interval(MedianStoppingPolicy(evaluation_interval=2), [1.0, 1.0], others, MAX) == 2


def test_median_cohort_cuts_others_and_ignores_short_trials() -> None:
    policy = MedianStoppingPolicy(evaluation_interval=2)
    # Cut to 2 values, the other trial averages 0 (not 100/3): median of (1, 0) = 0.5 < own best 1.
    assert stop_interval(policy, [1.0, 1.0], [[0.0, 0.0, 100.0]]) is None
    # A one-report trial is not in the interval-2 cohort.
    assert stop_interval(policy, [1.0, 1.0], [[100.0], [0.0, 0.0]]) is None
    assert stop_interval(policy, [1.0, 1.0], [[100.0, 100.0], [0.0, 0.0]]) is None  # median 1 == best
    assert stop_interval(policy, [1.0, 1.0], [[100.0, 100.0], [50.0, 50.0]]) == 2


# --------------------------------------------------------------------------------------- truncation


@pytest.mark.parametrize(
    ("percentage", "own", "others", "expected"),
    [
        # 5 trials, 20 %: floor(1.0) = 1 -> the worst stops, the second worst does not.
        (20, 1.0, [2.0, 3.0, 4.0, 5.0], 1),
        (20, 2.0, [1.0, 3.0, 4.0, 5.0], None),
        # 4 trials, 20 %: floor(0.8) = 0 -> fewer than 100/20 = 5 trials never truncate.
        (20, 1.0, [2.0, 3.0, 4.0], None),
        # 25 %: 4 trials -> 1 stops; 3 trials -> none.
        (25, 1.0, [2.0, 3.0, 4.0], 1),
        (25, 1.0, [2.0, 3.0], None),
        # 10 trials, 25 %: floor(2.5) = 2 -> the two worst stop, the third worst does not.
        (25, 1.0, [2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0], 1),
        (25, 2.0, [1.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0], 1),
        (25, 3.0, [1.0, 2.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0], None),
        # 5 trials, 30 %: floor(1.5) = 1.
        (30, 2.0, [1.0, 3.0, 4.0, 5.0], None),
        # 3 trials, 50 %: floor(1.5) = 1.
        (50, 1.0, [2.0, 3.0], 1),
        (50, 2.0, [1.0, 3.0], None),
        # 2 trials, 99 %: floor(1.98) = 1.
        (99, 1.0, [2.0], 1),
        # 99 trials... 1 %: 99 trials -> floor(0.99) = 0; 100 trials -> 1.
        (1, 0.0, [float(i) for i in range(1, 99)], None),
        (1, 0.0, [float(i) for i in range(1, 100)], 1),
    ],
)
def test_truncation_floor_count(percentage: int, own: float, others: list[float], expected: int | None) -> None:
    policy = TruncationSelectionPolicy(percentage)
    assert stop_interval(policy, [own], [[value] for value in others]) == expected


@pytest.mark.parametrize(
    ("percentage", "own", "others", "expected"),
    [
        # 20 % of 5 = 1, two trials tie for last: neither has 4 trials strictly better -> none stops.
        (20, 1.0, [1.0, 3.0, 4.0, 5.0], None),
        # 40 % of 5 = 2, three tie for last: 2 strictly better < 3 -> none stops.
        (40, 1.0, [1.0, 1.0, 4.0, 5.0], None),
        # 40 % of 5 = 2, two tie for last: 3 strictly better >= 3 -> both are the worst two.
        (40, 1.0, [1.0, 3.0, 4.0, 5.0], 1),
        # All equal: never.
        (99, 1.0, [1.0] * 9, None),
    ],
)
def test_truncation_ties_never_truncate(percentage: int, own: float, others: list[float],
                                        expected: int | None) -> None:
    policy = TruncationSelectionPolicy(percentage)
    assert stop_interval(policy, [own], [[value] for value in others]) == expected


def test_truncation_minimize_ranks_the_largest_as_worst() -> None:
    policy = TruncationSelectionPolicy(20)
    others = [[1.0], [2.0], [3.0], [4.0]]
    assert stop_interval(policy, [5.0], others, MIN) == 1
    assert stop_interval(policy, [0.5], others, MIN) is None
    assert stop_interval(policy, [0.5], others, MAX) == 1
    assert stop_interval(policy, [5.0], others, MAX) is None


def test_truncation_ranks_by_best_so_far() -> None:
    policy = TruncationSelectionPolicy(20, evaluation_interval=2)
    others = [[2.0, 2.0], [3.0, 3.0], [4.0, 4.0], [6.0, 6.0]]
    # Latest value 0 would be the worst, but the best so far (5) ranks 2nd of 5.
    assert stop_interval(policy, [5.0, 0.0], others) is None
    assert stop_interval(policy, [1.0, 1.5], others) == 2


def test_truncation_cohort_cuts_others_and_ignores_short_trials() -> None:
    # 34 % of the 2 trials that reached interval 2 is floor(0.68) = 0: nothing is truncated. Counting
    # the one-report trial (3 trials -> 1) would have stopped the trial.
    policy = TruncationSelectionPolicy(34, evaluation_interval=2)
    assert stop_interval(policy, [0.1, 0.1], [[0.9], [0.5, 0.5]]) is None
    assert stop_interval(policy, [0.1, 0.1], [[0.9, 0.9], [0.5, 0.5]]) == 2
    # Cut to 2 values the other trial's best is 1 < 2: the trial is not the worst (it would be with 100).
    assert stop_interval(TruncationSelectionPolicy(50), [2.0, 2.0], [[1.0, 1.0, 100.0]]) is None


def test_truncation_stops_a_trial_once_it_falls_behind() -> None:
    policy = TruncationSelectionPolicy(50)
    # Ahead at interval 1 (3 > 2), behind at 2 (3 < 4).
    assert stop_interval(policy, [3.0, 3.0, 3.0], [[2.0, 4.0, 4.0]]) == 2


# ----------------------------------------------------------------------------------- no termination


def test_no_termination_never_stops() -> None:
    policy = NoTerminationPolicy()
    hopeless = [0.0] * 20
    leaders = [[100.0] * 20] * 10
    assert policy.first_stop(hopeless, leaders, MAX) is None
    assert policy.first_stop([100.0] * 20, [[0.0] * 20] * 10, MIN) is None
    assert all(policy.stop_reason(k, hopeless, leaders, MAX) is None for k in range(1, 21))


# -------------------------------------------------------------------------------------- lone trial

CURVES = [
    [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
    [0.9, 0.7, 0.5, 0.3, 0.2, 0.1],
    [0.5, 0.1, 0.8, 0.2, 0.9, 0.05],
    [3.0, 3.0, 3.0, 3.0],
]

ALL_POLICIES = [
    NoTerminationPolicy(),
    BanditPolicy(slack_factor=0.0),
    BanditPolicy(slack_factor=0.2, evaluation_interval=2, delay_evaluation=1),
    BanditPolicy(slack_amount=0.0),
    MedianStoppingPolicy(),
    MedianStoppingPolicy(evaluation_interval=2, delay_evaluation=3),
    TruncationSelectionPolicy(1),
    TruncationSelectionPolicy(99),
]


@pytest.mark.parametrize("policy", ALL_POLICIES, ids=repr)
@pytest.mark.parametrize("goal", [MAX, MIN])
@pytest.mark.parametrize("curve", CURVES)
def test_a_lone_trial_is_never_stopped(policy: EarlyTerminationPolicy, goal: PrimaryMetricGoal,
                                       curve: list[float]) -> None:
    assert policy.first_stop(curve, [], goal) is None
    # Trials with no reports are not in any cohort either.
    assert policy.first_stop(curve, [[], []], goal) is None


@pytest.mark.parametrize("policy", [BanditPolicy(slack_amount=0.1), MedianStoppingPolicy(),
                                    TruncationSelectionPolicy(50)], ids=repr)
@pytest.mark.parametrize("goal", [MAX, MIN])
def test_a_lone_trial_with_negative_or_zero_metrics_is_never_stopped(
        policy: EarlyTerminationPolicy, goal: PrimaryMetricGoal) -> None:
    assert policy.first_stop([-5.0, 0.0, -1.0, -10.0, 2.0], [], goal) is None


# ----------------------------------------------------------------------------------- serialisation


@pytest.mark.parametrize(
    "policy",
    [
        NoTerminationPolicy(),
        BanditPolicy(evaluation_interval=2, slack_factor=0.1, delay_evaluation=3),
        BanditPolicy(slack_amount=0.05),
        MedianStoppingPolicy(),
        MedianStoppingPolicy(evaluation_interval=5, delay_evaluation=7),
        TruncationSelectionPolicy(20),
        TruncationSelectionPolicy(35, evaluation_interval=4, delay_evaluation=2),
    ],
    ids=repr,
)
def test_to_dict_round_trips_through_json(policy: EarlyTerminationPolicy) -> None:
    data = json.loads(json.dumps(policy.to_dict()))
    rebuilt = policy_from_dict(data)
    assert type(rebuilt) is type(policy)
    assert rebuilt == policy
    assert rebuilt.to_dict() == policy.to_dict()
    assert rebuilt.evaluation_interval == policy.evaluation_interval
    assert rebuilt.delay_evaluation == policy.delay_evaluation


def test_to_dict_contents() -> None:
    assert BanditPolicy(evaluation_interval=2, slack_factor=0.1, delay_evaluation=3).to_dict() == {
        "kind": "BanditPolicy", "evaluation_interval": 2, "delay_evaluation": 3,
        "slack_factor": 0.1, "slack_amount": None,
    }
    assert TruncationSelectionPolicy(20, delay_evaluation=5).to_dict() == {
        "kind": "TruncationSelectionPolicy", "evaluation_interval": 1, "delay_evaluation": 5,
        "truncation_percentage": 20,
    }
    assert MedianStoppingPolicy(evaluation_interval=3).to_dict() == {
        "kind": "MedianStoppingPolicy", "evaluation_interval": 3, "delay_evaluation": 0,
    }
    assert NoTerminationPolicy().to_dict() == {"kind": "NoTerminationPolicy"}


def test_round_tripped_policy_decides_the_same() -> None:
    policy = BanditPolicy(evaluation_interval=2, slack_amount=0.1, delay_evaluation=3)
    rebuilt = policy_from_dict(policy.to_dict())
    own, others = [0.1] * 6, [[1.0] * 6]
    assert policy.first_stop(own, others, MAX) == rebuilt.first_stop(own, others, MAX)
    assert rebuilt.first_stop(own, others, MAX)[0] == 4  # type: ignore[index]


@pytest.mark.parametrize("data", [{"kind": "SomethingElse"}, {}, {"kind": "EarlyTerminationPolicy"}])
def test_policy_from_dict_refuses_unknown_kinds(data: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError) as caught:
        policy_from_dict(data)
    assert caught.value.field == "policy"


def test_policy_from_dict_validates_the_fields() -> None:
    with pytest.raises(ConfigurationError) as caught:
        policy_from_dict({"kind": "TruncationSelectionPolicy", "truncation_percentage": 100})
    assert "truncation_percentage" in str(caught.value)


# ----------------------------------------------------------------------------------- invalid values


def error_of(build: object) -> ConfigurationError:
    with pytest.raises(ConfigurationError) as caught:
        build()  # type: ignore[operator]
    return caught.value


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({}, "slack_factor"),
        ({"slack_factor": 0.1, "slack_amount": 0.1}, "slack_factor"),
        ({"slack_factor": -0.1}, "slack_factor"),
        ({"slack_amount": -1}, "slack_amount"),
        ({"slack_factor": "0.1"}, "slack_factor"),
        ({"slack_amount": True}, "slack_amount"),
        ({"slack_factor": 0.1, "evaluation_interval": 0}, "evaluation_interval"),
        ({"slack_factor": 0.1, "evaluation_interval": -2}, "evaluation_interval"),
        ({"slack_factor": 0.1, "evaluation_interval": 1.5}, "evaluation_interval"),
        ({"slack_factor": 0.1, "evaluation_interval": True}, "evaluation_interval"),
        ({"slack_factor": 0.1, "delay_evaluation": -1}, "delay_evaluation"),
        ({"slack_factor": 0.1, "delay_evaluation": 2.0}, "delay_evaluation"),
    ],
)
def test_bandit_refuses_bad_arguments(kwargs: dict[str, object], field: str) -> None:
    error = error_of(lambda: BanditPolicy(**kwargs))  # type: ignore[arg-type]
    assert error.field.startswith("BanditPolicy")
    assert field in str(error)


def test_bandit_names_both_slacks_when_neither_or_both_are_given() -> None:
    for kwargs in ({}, {"slack_factor": 0.1, "slack_amount": 0.2}):
        message = str(error_of(lambda kwargs=kwargs: BanditPolicy(**kwargs)))
        assert "slack_factor" in message and "slack_amount" in message


@pytest.mark.parametrize("name", ["slack_factor", "slack_amount"])
def test_bandit_refuses_nan_slack(name: str) -> None:
    error = error_of(lambda: BanditPolicy(**{name: math.nan}))  # type: ignore[arg-type]
    assert error.field == f"BanditPolicy.{name}"


@pytest.mark.parametrize("value", [0, 100, 20.0, True, False, -5, 150, "20", None])
def test_truncation_percentage_must_be_an_integer_from_1_to_99(value: object) -> None:
    error = error_of(lambda: TruncationSelectionPolicy(value))  # type: ignore[arg-type]
    assert error.field == "TruncationSelectionPolicy.truncation_percentage"
    assert "truncation_percentage" in str(error)


@pytest.mark.parametrize("value", [1, 50, 99])
def test_truncation_percentage_bounds_are_accepted(value: int) -> None:
    assert TruncationSelectionPolicy(value).truncation_percentage == value


@pytest.mark.parametrize(
    "build",
    [
        lambda **kw: MedianStoppingPolicy(**kw),
        lambda **kw: TruncationSelectionPolicy(10, **kw),
        lambda **kw: BanditPolicy(slack_amount=0.1, **kw),
    ],
    ids=["median", "truncation", "bandit"],
)
@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"evaluation_interval": 0}, "evaluation_interval"),
        ({"evaluation_interval": None}, "evaluation_interval"),
        ({"delay_evaluation": -1}, "delay_evaluation"),
        ({"delay_evaluation": "3"}, "delay_evaluation"),
    ],
)
def test_every_policy_validates_interval_and_delay(build: object, kwargs: dict[str, object], field: str) -> None:
    error = error_of(lambda: build(**kwargs))  # type: ignore[operator]
    assert error.field.endswith(f".{field}")
    assert field in str(error)


def test_zero_delay_and_unit_interval_are_accepted() -> None:
    policy = MedianStoppingPolicy(evaluation_interval=1, delay_evaluation=0)
    assert policy.applies_at(1)
    assert BanditPolicy(slack_amount=0).slack_amount == 0


# ---------------------------------------------------------------------- diverged trials (NaN, inf)
NAN = float("nan")


@pytest.mark.parametrize("goal", list(PrimaryMetricGoal))
def test_a_diverged_trial_is_stopped_by_every_policy(goal: PrimaryMetricGoal) -> None:
    good = [0.5, 0.6, 0.7] if goal is PrimaryMetricGoal.MAXIMIZE else [0.7, 0.6, 0.5]
    others = [good, good, [g + (0.01 if goal is PrimaryMetricGoal.MAXIMIZE else -0.01) for g in good], good]
    diverged = [good[0], NAN, math.inf if goal is PrimaryMetricGoal.MINIMIZE else -math.inf]
    assert BanditPolicy(slack_amount=0.1).first_stop(diverged[1:], others, goal) == (
        1, BanditPolicy(slack_amount=0.1).stop_reason(1, diverged[1:], others, goal))
    assert MedianStoppingPolicy().first_stop([NAN, NAN], others, goal)[0] == 1  # type: ignore[index]
    assert TruncationSelectionPolicy(20).first_stop([NAN, NAN], others, goal)[0] == 1  # type: ignore[index]


def test_a_nan_sibling_does_not_switch_the_median_and_truncation_policies_off() -> None:
    goal = PrimaryMetricGoal.MAXIMIZE
    others = [[0.9, 0.9], [0.8, 0.8], [NAN, NAN], [0.85, 0.85]]
    assert MedianStoppingPolicy().first_stop([0.1, 0.1], others, goal) is not None
    assert TruncationSelectionPolicy(40).first_stop([0.1, 0.1], others, goal) is not None
    assert MedianStoppingPolicy().first_stop([0.95, 0.95], others, goal) is None
    assert goal.best([NAN, 0.3, NAN]) == 0.3 and PrimaryMetricGoal.MINIMIZE.best([NAN, 0.3]) == 0.3


def test_policy_from_dict_refuses_unknown_fields_with_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match=r"policy: .* does not describe a BanditPolicy"):
        policy_from_dict({"kind": "BanditPolicy", "slack_factor": 0.1, "typo_interval": 2})
