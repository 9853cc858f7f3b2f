"""Typed application keys shared by the app factory and the handlers."""

from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from repoman.dataplane.service import InferenceService
from repoman.metrics import Metrics
from repoman.server.body import BodyLimits

SERVICE = web.AppKey("service", InferenceService)
METRICS = web.AppKey("metrics", Metrics)
LIMITS = web.AppKey("limits", BodyLimits)
DECODER = web.AppKey("decoder", ThreadPoolExecutor)
"""The worker threads that decode big request bodies, so the event loop keeps serving."""
