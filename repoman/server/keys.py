"""Typed application keys shared by the app factory and the handlers."""

from aiohttp import web

from repoman.dataplane.service import InferenceService
from repoman.metrics import Metrics

SERVICE = web.AppKey("service", InferenceService)
METRICS = web.AppKey("metrics", Metrics)
