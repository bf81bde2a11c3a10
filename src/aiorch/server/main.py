"""The app as uvicorn loads it in each worker: settings from the environment, built once."""

from __future__ import annotations

import logging
import os

from starlette.applications import Starlette

from aiorch.config import load_settings
from aiorch.server.app import create_app


def app_from_env() -> Starlette:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # prometheus_client switches to multiprocess mode when the variable merely exists, and an
    # empty value would scatter its files over the working directory: empty means unset.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR") == "":
        del os.environ["PROMETHEUS_MULTIPROC_DIR"]
    return create_app(load_settings())
