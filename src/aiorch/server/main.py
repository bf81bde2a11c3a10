"""The app as uvicorn loads it in each worker: settings from the environment, built once."""

from __future__ import annotations

import gc
import logging

import prometheus_client
from starlette.applications import Starlette

from aiorch.config import load_settings
from aiorch.server.app import create_app

# Measured (docs/performance.md): 8 to 16 % less CPU per request than Python's default of 700.
YOUNG_GENERATION = 20_000


def app_from_env() -> Starlette:
    # `_created` series (one more gauge per counter and histogram child) are start times nobody
    # here reads; dropping them cuts the exposition by a fifth. A process-wide switch, so it is
    # thrown here, in the served process, not in `create_app`, which tests call with their own
    # registries.
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    app = create_app(load_settings())
    # The app just built (modules, functions, settings, the orchestrator) lives as long as the
    # process: frozen out of the collector's generations, a full collection no longer walks it.
    # And the young generation is collected every YOUNG_GENERATION net allocations, not 700:
    # with 32 requests in flight, each young collection walked their live objects, one every
    # six requests, to free nearly nothing (a request's data dies by reference counting).
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_GENERATION, *gc.get_threshold()[1:])
    return app
