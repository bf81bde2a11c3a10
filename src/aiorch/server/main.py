"""The app as uvicorn loads it in each worker: settings from the environment, built once."""

from __future__ import annotations

import logging

from starlette.applications import Starlette

from aiorch.config import load_settings
from aiorch.server.app import create_app


def app_from_env() -> Starlette:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return create_app(load_settings())
