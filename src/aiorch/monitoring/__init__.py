"""Metrics (Prometheus) and traces (OpenTelemetry, optional)."""

from aiorch.monitoring.prometheus_metrics import Metrics, metrics_endpoint

__all__ = ["Metrics", "metrics_endpoint"]
