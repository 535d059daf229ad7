"""Every `window_<counter>` and `all_time_<counter>` indicator is that counter, unchanged."""

from __future__ import annotations

from dataclasses import fields

from risk import MerchantCounters, compute_indicators
from risk.counters import COUNTER_FIELDS


def test_each_copied_indicator_is_its_counter():
    window = MerchantCounters(*(11 + i for i in range(len(COUNTER_FIELDS))))
    all_time = MerchantCounters(*(1_000 + 7 * i for i in range(len(COUNTER_FIELDS))))
    ind = compute_indicators(window, all_time, 5, 40, 0, 3, prior_weeks=8, complaints=2)
    copied = 0
    for f in fields(ind):
        for prefix, counters in (("window_", window), ("all_time_", all_time)):
            if f.name.startswith(prefix):
                assert getattr(ind, f.name) == getattr(counters, f.name[len(prefix) :]), f.name
                copied += 1
    assert copied == 10  # six of the window, four of all time
    assert ind.complaints_filed == window.complaints
