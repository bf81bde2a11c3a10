"""The app as uvicorn loads it in each worker: settings from the environment, built once."""

from __future__ import annotations

import logging

import prometheus_client
from starlette.applications import Starlette

from aiorch.config import load_settings
from aiorch.server.app import create_app


def app_from_env() -> Starlette:
    # `_created` series (one more gauge per counter and histogram child) are start times nobody
    # here reads; dropping them cuts the exposition by a fifth. A process-wide switch, so it is
    # thrown here, in the served process, not in `create_app`, which tests call with their own
    # registries.
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return create_app(load_settings())
