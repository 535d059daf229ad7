"""Risk module of the prepaid escrow service: counters, indicators, policy, health codes
(预付健康码) and random inspection draws. Pure Python, integers only, no I/O; the service
stores the counters and calls these functions on every event that can change a code."""

from .classify import Assessment, Reason, classify
from .counters import MerchantCounters
from .indicators import Indicators, compute_indicators, ratio_bp
from .inspection import draw_inspections
from .policy import DEFAULT_POLICY, InspectionRatios, Policy, PolicyError, Threshold

__all__ = [
    "Assessment",
    "DEFAULT_POLICY",
    "Indicators",
    "InspectionRatios",
    "MerchantCounters",
    "Policy",
    "PolicyError",
    "Reason",
    "Threshold",
    "classify",
    "compute_indicators",
    "draw_inspections",
    "ratio_bp",
]
