"""The colour steps the panels draw, every one read from :mod:`agent.spec`.

The agent's finding thresholds where it has one, the alert's where the panel shows what pages
(long transactions, PgBouncer waits), and the panel-only steps declared there too. A panel
draws a :class:`Band` and says it in its description with the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.models import dashboard as gm

from agent import spec


def steps(*pairs: tuple[float | None, str]) -> gd.ThresholdsConfig:
    """Absolute colour steps: (from value, colour), the first from ``None``."""
    return (gd.ThresholdsConfig().mode(gm.ThresholdsMode.ABSOLUTE)
            .steps([gm.Threshold(value=v, color=color) for v, color in pairs]))


NEUTRAL = steps((None, "green"))


@dataclass(frozen=True, slots=True)
class Band:
    """Green, orange from ``warning``, red from ``critical``: two thresholds of the spec. A
    quantity that runs out (``low``) turns red under ``critical`` and orange under ``warning``."""

    warning: spec.Threshold
    critical: spec.Threshold
    low: bool = False

    def steps(self) -> gd.ThresholdsConfig:
        if self.low:
            return steps((None, "red"), (self.critical.default, "orange"),
                         (self.warning.default, "green"))
        return steps((None, "green"), (self.warning.default, "orange"),
                     (self.critical.default, "red"))

    def said(self) -> str:
        """The panel prose for :meth:`steps`, the amounts said as a person says them."""
        if self.low:
            return f"Red under {self.critical.said}, orange under {self.warning.said}"
        return f"Orange from {self.warning.said}, red from {self.critical.said}"


UTILIZATION = Band(spec.DIAGNOSE["utilization_warning"], spec.DIAGNOSE["utilization_critical"])
IDLE_IN_TX = Band(spec.DIAGNOSE["idle_in_transaction_warning"],
                  spec.DIAGNOSE["idle_in_transaction_critical"])
XACT_AGE = Band(spec.DIAGNOSE["long_transaction"], spec.ALERTS["long_transaction_seconds"])
LOCK_WAIT = Band(spec.PANELS["lock_wait_warning"], spec.PANELS["lock_wait_critical"])
HOLDER_SHARE = Band(spec.DIAGNOSE["holder_share"], spec.PANELS["holder_share_red"])
IDLE_SHARE = Band(spec.PANELS["idle_share_warning"], spec.PANELS["idle_share_critical"])
POOL_WAIT = Band(spec.ALERTS["pgbouncer_wait_seconds"], spec.DIAGNOSE["pool_wait_critical"])
POLL_DURATION = Band(spec.PANELS["poll_duration_warning"], spec.PANELS["poll_duration_critical"])
POOL_SATURATION = Band(spec.PANELS["pool_saturation_warning"],
                       spec.PANELS["pool_saturation_critical"])
FREE_SLOTS = Band(spec.PANELS["free_slots_warning"], spec.PANELS["free_slots_critical"],
                  low=True)
