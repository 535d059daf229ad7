import dataclasses

import pytest

from risk.policy import (
    DEFAULT_POLICY,
    FLAG_FIELDS,
    GATE_FIELDS,
    THRESHOLD_NAMES,
    InspectionRatios,
    Policy,
    PolicyError,
    Threshold,
)


def test_defaults():
    p = DEFAULT_POLICY
    assert p.version == 1
    assert (p.window_days, p.min_cards, p.surge_weeks, p.grace_days) == (90, 10, 8, 14)
    assert p.inspection_ratios.to_dict() == {"green": 300, "yellow": 1000, "red": 10000}
    assert p.refund_rate == Threshold(1_500, 3_000)
    assert p.complaint_rate == Threshold(300, 1_000)
    assert p.issuance_surge == Threshold(30_000, 50_000)
    assert p.rejection_rate == Threshold(1_000, 2_500)
    assert p.overdue_complaints == Threshold(1, 3)
    assert p.complaints == Threshold(5, 20)


def test_round_trip():
    assert Policy.from_dict(DEFAULT_POLICY.to_dict()) == DEFAULT_POLICY
    d = DEFAULT_POLICY.to_dict()
    assert set(d) == {
        "version",
        "window_days",
        "min_cards",
        "surge_weeks",
        "grace_days",
        "inspection_ratios",
        *THRESHOLD_NAMES,
        *FLAG_FIELDS,
        *GATE_FIELDS,
    }


def test_defences_default_on_and_are_validated():
    p = DEFAULT_POLICY
    assert (p.complaint_needs_card, p.complaint_once_per_consumer, p.dismissed_complaints_count) == (True, True, False)
    assert (p.min_refund_consumers, p.min_rejection_consumers, p.min_complaint_consumers) == (5, 5, 5)
    assert (
        Policy.from_dict({"min_refund_consumers": 2, "complaint_needs_card": False}, base=p).min_refund_consumers == 2
    )
    for bad, field in (
        ({"complaint_needs_card": 1}, "complaint_needs_card"),
        ({"dismissed_complaints_count": "no"}, "dismissed_complaints_count"),
        ({"min_refund_consumers": 0}, "min_refund_consumers"),
        ({"min_rejection_consumers": True}, "min_rejection_consumers"),
    ):
        with pytest.raises(PolicyError, match=field):
            Policy.from_dict(bad, base=p)


def test_is_frozen_and_hashable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT_POLICY.min_cards = 3  # type: ignore[misc]
    hash(DEFAULT_POLICY)


def test_missing_keys_take_defaults():
    p = Policy.from_dict({"version": 2, "refund_rate": {"red": 4_000}})
    assert p.version == 2
    assert p.refund_rate == Threshold(1_500, 4_000)
    assert p.complaints == DEFAULT_POLICY.complaints


def test_partial_update_on_a_base():
    base = Policy.from_dict({"version": 4, "min_cards": 20})
    p = Policy.from_dict({"version": 5, "complaints": {"yellow": 8}}, base=base)
    assert (p.version, p.min_cards, p.complaints) == (5, 20, Threshold(8, 20))
    # without a version the base's is kept; bumping it is the caller's job
    assert Policy.from_dict({}, base=base).version == 4


def test_threshold_level_is_greater_or_equal():
    t = Threshold(10, 20)
    assert [t.level(v) for v in (9, 10, 11, 19, 20, 21)] == [None, "yellow", "yellow", "yellow", "red", "red"]


@pytest.mark.parametrize(
    "doc, fragment",
    [
        ({}, "version is required"),
        ({"version": 0}, "version must be at least 1"),
        ({"version": "2"}, "version must be an integer"),
        ({"version": 1, "window_days": 0}, "window_days"),
        ({"version": 1, "min_cards": -1}, "min_cards"),
        ({"version": 1, "surge_weeks": 0}, "surge_weeks"),
        ({"version": 1, "grace_days": -1}, "grace_days"),
        ({"version": 1, "grace_days": 14.0}, "grace_days must be an integer"),
        (
            {"version": 1, "refund_rate": {"yellow": 3_000, "red": 3_000}},
            "refund_rate: yellow (3000) must be below red (3000)",
        ),
        ({"version": 1, "refund_rate": {"yellow": 5_000}}, "refund_rate: yellow (5000) must be below red (3000)"),
        ({"version": 1, "complaints": {"yellow": -1, "red": 3}}, "complaints.yellow"),
        ({"version": 1, "complaints": {"yellow": 0, "red": 3}}, "complaints.yellow must be at least 1"),
        ({"version": 1, "complaint_rate": {"yellow": 0.5, "red": 3}}, "complaint_rate.yellow must be an integer"),
        ({"version": 1, "complaint_rate": {"yellow": 1, "red": True}}, "complaint_rate.red must be an integer"),
        ({"version": 1, "complaint_rate": [1, 2]}, "complaint_rate must be an object"),
        ({"version": 1, "complaint_rate": None}, "complaint_rate must be an object"),
        ({"version": 1, "complaint_rate": {"orange": 5}}, "unknown key(s) 'orange' in complaint_rate"),
        ({"version": 1, "refund_rat": {"yellow": 1, "red": 2}}, "unknown policy key(s) 'refund_rat'"),
        ({"version": 1, "inspection_ratios": {"green": 10_001}}, "inspection_ratios.green must be at most 10000"),
        ({"version": 1, "inspection_ratios": {"red": -1}}, "inspection_ratios.red"),
        (
            {"version": 1, "inspection_ratios": {"green": 2_000, "yellow": 1_000}},
            "must not decrease from green to yellow to red",
        ),
        ({"version": 1, "inspection_ratios": {"blue": 1}}, "unknown key(s) 'blue' in inspection_ratios"),
    ],
)
def test_from_dict_validation(doc, fragment):
    with pytest.raises(PolicyError) as err:
        Policy.from_dict(doc)
    assert fragment in str(err.value)
    assert isinstance(err.value, ValueError)


def test_from_dict_rejects_non_mapping():
    with pytest.raises(PolicyError, match="must be an object"):
        Policy.from_dict([("version", 1)])  # type: ignore[arg-type]


def test_direct_construction_validates_too():
    with pytest.raises(PolicyError):
        Threshold(5, 5)
    with pytest.raises(PolicyError):
        InspectionRatios(green=500, yellow=100)
    with pytest.raises(PolicyError):
        dataclasses.replace(DEFAULT_POLICY, window_days=0)
    with pytest.raises(PolicyError):
        Policy(version=1, refund_rate=(1, 2))  # type: ignore[arg-type]
