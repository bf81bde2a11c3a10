"""`aiorch doctor`: the guide's "the AI is slow" checklist (section 6), automated.

Sources fill an `Observation` (two scrapes of `/metrics` plus `/readyz`, or a Prometheus
server); `diagnose` runs the checks over it and returns a ranked `Report` whose `exit_code` is
0 healthy, 1 warnings, 2 an SLO breached or an endpoint down. See docs/doctor.md.
"""

from __future__ import annotations

from aiorch.doctor.checks import diagnose
from aiorch.doctor.exposition import ExpositionError, Scrape, between, parse, totals
from aiorch.doctor.findings import Finding, Report, Severity
from aiorch.doctor.observation import Observation, Readiness, Thresholds, Window
from aiorch.doctor.series import Histogram, View

__all__ = [
    "ExpositionError",
    "Finding",
    "Histogram",
    "Observation",
    "Readiness",
    "Report",
    "Scrape",
    "Severity",
    "Thresholds",
    "View",
    "Window",
    "between",
    "diagnose",
    "parse",
    "totals",
]
