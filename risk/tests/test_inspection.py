import random
from collections import Counter

import pytest

from risk.inspection import draw_inspections, draw_size
from risk.policy import DEFAULT_POLICY, Policy

INSPECTORS = ["insp_a", "insp_b", "insp_c"]


def population(green=200, yellow=40, red=5):
    return (
        [(f"mch_g{i:03}", "green") for i in range(green)]
        + [(f"mch_y{i:03}", "yellow") for i in range(yellow)]
        + [(f"mch_r{i:03}", "red") for i in range(red)]
    )


def codes_of(result, merchants):
    code = dict(merchants)
    return Counter(code[m] for m, _ in result)


def test_draw_size_rounds_up():
    assert draw_size(300, 200) == 6
    assert draw_size(300, 201) == 7  # 6.03 -> 7
    assert draw_size(300, 1) == 1
    assert draw_size(300, 0) == 0
    assert draw_size(0, 100) == 0
    assert draw_size(10_000, 5) == 5


def test_same_seed_same_draw():
    m = population()
    assert draw_inspections(m, INSPECTORS, DEFAULT_POLICY, "2025-06-01") == draw_inspections(
        m, INSPECTORS, DEFAULT_POLICY, "2025-06-01"
    )


def test_other_seed_other_draw():
    m = population()
    a = draw_inspections(m, INSPECTORS, DEFAULT_POLICY, "2025-06-01")
    b = draw_inspections(m, INSPECTORS, DEFAULT_POLICY, "2025-06-02")
    assert {x for x, _ in a} != {x for x, _ in b}


def test_input_order_does_not_matter():
    m = population()
    expected = draw_inspections(m, INSPECTORS, DEFAULT_POLICY, "seed")
    rng = random.Random(1)
    for _ in range(5):
        shuffled_m, shuffled_i = m[:], INSPECTORS[:]
        rng.shuffle(shuffled_m)
        rng.shuffle(shuffled_i)
        assert draw_inspections(shuffled_m, shuffled_i, DEFAULT_POLICY, "seed") == expected


def test_ratios_respected_and_red_always_drawn():
    m = population(green=200, yellow=40, red=5)
    result = draw_inspections(m, INSPECTORS, DEFAULT_POLICY, "seed")
    assert codes_of(result, m) == {"green": 6, "yellow": 4, "red": 5}
    reds = {mid for mid, code in m if code == "red"}
    for seed in ("a", "b", "c", "d"):
        drawn = {x for x, _ in draw_inspections(m, INSPECTORS, DEFAULT_POLICY, seed)}
        assert reds <= drawn


def test_result_order_red_first_and_each_merchant_once():
    m = population()
    result = draw_inspections(m, INSPECTORS, DEFAULT_POLICY, "seed")
    code = dict(m)
    order = [code[x] for x, _ in result]
    assert order == sorted(order, key=["red", "yellow", "green"].index)
    assert len({x for x, _ in result}) == len(result)


def test_inspectors_spread_evenly():
    m = population(green=0, yellow=0, red=10)
    result = draw_inspections(m, INSPECTORS, DEFAULT_POLICY, "seed")
    load = Counter(i for _, i in result)
    assert set(load) == set(INSPECTORS)
    assert max(load.values()) - min(load.values()) <= 1


def test_inspector_pairing_depends_on_seed():
    m = population(green=0, yellow=0, red=6)
    pairings = {tuple(draw_inspections(m, INSPECTORS, DEFAULT_POLICY, f"s{n}")) for n in range(10)}
    assert len(pairings) > 1


def test_custom_ratios():
    ratios = {"green": 0, "yellow": 5_000, "red": 5_000}
    p = Policy.from_dict({"version": 2, "inspection_ratios": ratios})
    m = population(green=50, yellow=10, red=4)
    assert codes_of(draw_inspections(m, INSPECTORS, p, "x"), m) == {"yellow": 5, "red": 2}


def test_nothing_to_draw():
    assert draw_inspections([], INSPECTORS, DEFAULT_POLICY, "x") == []
    assert draw_inspections([], [], DEFAULT_POLICY, "x") == []


@pytest.mark.parametrize(
    "merchants, inspectors, seed",
    [
        ([("m1", "red")], [], "x"),  # someone to inspect, nobody to send
        ([("m1", "purple")], INSPECTORS, "x"),
        ([("m1", "red"), ("m1", "green")], INSPECTORS, "x"),
        ([("m1", "red")], ["i1", "i1"], "x"),
        ([("m1", "red")], INSPECTORS, ""),
    ],
)
def test_bad_input(merchants, inspectors, seed):
    with pytest.raises(ValueError):
        draw_inspections(merchants, inspectors, DEFAULT_POLICY, seed)
