"""The risk policy: versioned thresholds that turn indicators into a health code.

This module owns `Policy` (what the operator reads and changes through `/v1/risk/policy`),
its `Threshold`s and inspection ratios, their validation (`PolicyError`) and their JSON form.
Every number is a non-negative integer: rates in basis points (1% = 100 bp, 100% = 10000 bp),
counts as counts, spans in days or weeks. Comparisons are therefore exact integer arithmetic.

A threshold is crossed when `value >= threshold` (see `Threshold.level`). Why each default is
what it is: risk/README.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

LEVELS: tuple[str, ...] = ("red", "yellow")  # worst first
CODES: tuple[str, ...] = ("green", "yellow", "red")
BP_WHOLE = 10_000  # 100% in basis points

# Judged indicators, in the order their reasons are listed. Rate-based ones are judged only
# once a merchant has sold `min_cards` cards; count-based ones are judged from the first card.
RATE_THRESHOLDS: tuple[str, ...] = (
    "refund_rate",
    "complaint_rate",
    "issuance_surge",
    "rejection_rate",
)
COUNT_THRESHOLDS: tuple[str, ...] = ("overdue_complaints", "complaints")
THRESHOLD_NAMES: tuple[str, ...] = RATE_THRESHOLDS + COUNT_THRESHOLDS
# Defences (SPEC §3 "No one party…"): switches on what counts, and the fewest distinct consumers a
# rate needs before it is judged (rate threshold -> policy field).
FLAG_FIELDS: tuple[str, ...] = ("complaint_needs_card", "complaint_once_per_consumer", "dismissed_complaints_count")
GATE_FIELDS: tuple[str, ...] = ("min_refund_consumers", "min_rejection_consumers", "min_complaint_consumers")
CONSUMER_GATES: dict[str, str] = {
    "refund_rate": "min_refund_consumers",
    "rejection_rate": "min_rejection_consumers",
    "complaint_rate": "min_complaint_consumers",
}


class PolicyError(ValueError):
    """A policy document that cannot be used; the message says which field and why."""


def _check_int(where: str, value: Any, minimum: int, maximum: int | None = None) -> None:
    # bool is an int subclass, and a float threshold would reintroduce inexact comparisons.
    if isinstance(value, bool) or not isinstance(value, int):
        raise PolicyError(f"{where} must be an integer, got {value!r}")
    if value < minimum:
        raise PolicyError(f"{where} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise PolicyError(f"{where} must be at most {maximum}, got {value}")


def _validate_threshold(where: str, yellow: Any, red: Any) -> None:
    _check_int(f"{where}.yellow", yellow, 1)
    _check_int(f"{where}.red", red, 1)
    if not yellow < red:
        raise PolicyError(f"{where}: yellow ({yellow}) must be below red ({red})")


def _validate_ratios(where: str, green: Any, yellow: Any, red: Any) -> None:
    for code, value in (("green", green), ("yellow", yellow), ("red", red)):
        _check_int(f"{where}.{code}", value, 0, BP_WHOLE)
    if not green <= yellow <= red:
        raise PolicyError(
            f"{where}: ratios must not decrease from green to yellow to red, got "
            f"green={green}, yellow={yellow}, red={red}"
        )


@dataclass(frozen=True)
class Threshold:
    """Yellow and red levels for one "higher is worse" indicator, `1 <= yellow < red`.

    Zero is refused: with `>=`, a threshold of 0 is crossed by every merchant, even one with
    nothing to judge. To make an indicator effectively silent, set very high levels.
    """

    yellow: int
    red: int

    def __post_init__(self) -> None:
        _validate_threshold("threshold", self.yellow, self.red)

    def level(self, value: int) -> str | None:
        """The worst level `value` crosses ("red", "yellow") or None. Crossing is `>=`: a value
        exactly at a threshold has reached it."""
        if value >= self.red:
            return "red"
        if value >= self.yellow:
            return "yellow"
        return None

    def to_dict(self) -> dict[str, int]:
        return {"yellow": self.yellow, "red": self.red}


@dataclass(frozen=True)
class InspectionRatios:
    """Share of merchants of each code drawn for random inspection, in bp (10000 = all).
    Worse codes are inspected at least as often as better ones (spec §3)."""

    green: int = 300
    yellow: int = 1_000
    red: int = 10_000

    def __post_init__(self) -> None:
        _validate_ratios("inspection_ratios", self.green, self.yellow, self.red)

    def ratio_bp(self, code: str) -> int:
        if code not in CODES:
            raise ValueError(f"unknown health code {code!r}; expected one of {', '.join(CODES)}")
        return getattr(self, code)

    def to_dict(self) -> dict[str, int]:
        return {code: getattr(self, code) for code in CODES}


@dataclass(frozen=True)
class Policy:
    """One version of the risk policy. Construct it directly or with `from_dict`; both validate."""

    version: int
    window_days: int = 90  # rolling window for rates and the complaint count
    # Rates are judged once the merchant has sold this many cards *all time* (not in the
    # window): a merchant is new only once. A window count would let an established merchant
    # whose sales dried up (a classic run-away pattern) become "new" again and escape its rates.
    min_cards: int = 10
    surge_weeks: int = 8  # weeks of history the issuance surge compares the last 7 days with
    grace_days: int = 14  # days a merchant may stay red before it is delisted automatically
    inspection_ratios: InspectionRatios = InspectionRatios()
    refund_rate: Threshold = Threshold(yellow=1_500, red=3_000)  # bp of issued
    complaint_rate: Threshold = Threshold(yellow=300, red=1_000)  # bp of cards sold
    issuance_surge: Threshold = Threshold(yellow=30_000, red=50_000)  # bp of weekly average
    rejection_rate: Threshold = Threshold(yellow=1_000, red=2_500)  # bp of asks
    overdue_complaints: Threshold = Threshold(yellow=1, red=3)  # count, now
    complaints: Threshold = Threshold(yellow=5, red=20)  # count in the window
    # Defences against one party moving a code by itself (SPEC §3; why each default: risk/README.md).
    complaint_needs_card: bool = True  # a complaint counts only from a consumer who holds or held a card here
    complaint_once_per_consumer: bool = True  # complaints and overdue complaints count distinct consumers
    dismissed_complaints_count: bool = False  # a complaint a regulator dismissed stops counting
    min_refund_consumers: int = 5  # refund_rate is judged once this many distinct consumers refunded in the window
    min_rejection_consumers: int = 5  # rejection_rate: the same, for consumers who rejected an ask
    min_complaint_consumers: int = 5  # complaint_rate: judged once this many complaints count in the window

    def __post_init__(self) -> None:
        _check_int("version", self.version, 1)
        _check_int("window_days", self.window_days, 1)
        _check_int("min_cards", self.min_cards, 0)
        _check_int("surge_weeks", self.surge_weeks, 1)
        _check_int("grace_days", self.grace_days, 0)
        for name in FLAG_FIELDS:
            if not isinstance(getattr(self, name), bool):
                raise PolicyError(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name in GATE_FIELDS:
            _check_int(name, getattr(self, name), 1)
        if not isinstance(self.inspection_ratios, InspectionRatios):
            raise PolicyError("inspection_ratios must be an InspectionRatios")
        for name in THRESHOLD_NAMES:
            if not isinstance(getattr(self, name), Threshold):
                raise PolicyError(f"{name} must be a Threshold")

    def threshold(self, name: str) -> Threshold:
        if name not in THRESHOLD_NAMES:
            raise KeyError(name)
        return getattr(self, name)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "version": self.version,
            "window_days": self.window_days,
            "min_cards": self.min_cards,
            "surge_weeks": self.surge_weeks,
            "grace_days": self.grace_days,
            "inspection_ratios": self.inspection_ratios.to_dict(),
        }
        for name in THRESHOLD_NAMES:
            out[name] = getattr(self, name).to_dict()
        for name in FLAG_FIELDS + GATE_FIELDS:
            out[name] = getattr(self, name)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], base: Policy | None = None) -> Policy:
        """Parse and validate a policy document (the JSON form of `to_dict`).

        Keys left out are taken from `base` (the current policy, so an operator may send only
        what changes, even one level of a threshold) or, without a base, from the defaults;
        without a base, `version` is required. Unknown keys are refused: a misspelt threshold
        must not be silently ignored. Raises `PolicyError` naming the offending field.
        """
        if not isinstance(d, Mapping):
            raise PolicyError(f"policy must be an object, got {type(d).__name__}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(str(k) for k in d if k not in known)
        if unknown:
            raise PolicyError(f"unknown policy key(s) {', '.join(map(repr, unknown))}; known: {', '.join(known)}")
        if base is None and "version" not in d:
            raise PolicyError("version is required")

        start = base if base is not None else cls(version=1)
        merged: dict[str, Any] = {}
        for name in ("version", "window_days", "min_cards", "surge_weeks", "grace_days", *FLAG_FIELDS, *GATE_FIELDS):
            merged[name] = d.get(name, getattr(start, name))
        merged["inspection_ratios"] = InspectionRatios(
            **_merge_group(
                "inspection_ratios",
                d.get("inspection_ratios", _KEEP),
                start.inspection_ratios.to_dict(),
            )
        )
        for name in THRESHOLD_NAMES:
            merged[name] = Threshold(**_merge_group(name, d.get(name, _KEEP), getattr(start, name).to_dict()))
        return cls(**merged)


_KEEP = object()  # a sub-object left out of the document: keep the current values


def _merge_group(where: str, given: Any, current: dict[str, int]) -> dict[str, int]:
    """Overlay a sub-object (a threshold or the inspection ratios) on its current values, then
    validate the result under its field name so messages read like 'refund_rate.red ...'."""
    if given is _KEEP:
        values = dict(current)
    else:
        if not isinstance(given, Mapping):
            raise PolicyError(f"{where} must be an object, got {given!r}")
        unknown = sorted(str(k) for k in given if k not in current)
        if unknown:
            raise PolicyError(f"unknown key(s) {', '.join(map(repr, unknown))} in {where}; known: {', '.join(current)}")
        values = {**current, **given}
    if where == "inspection_ratios":
        _validate_ratios(where, **values)
    else:
        _validate_threshold(where, **values)
    return values


DEFAULT_POLICY = Policy(version=1)
