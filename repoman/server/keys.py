"""Typed application keys shared by the app factory and the handlers."""

from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from repoman.dataplane.api import DataPlane, MetricsSource
from repoman.server.body import BodyLimits
from repoman.server.policy import AccessPolicy

SERVICE = web.AppKey("service", DataPlane)
METRICS = web.AppKey("metrics", MetricsSource)
LIMITS = web.AppKey("limits", BodyLimits)
DECODER = web.AppKey("decoder", ThreadPoolExecutor)
"""The worker threads that decode big request bodies, so the event loop keeps serving."""
ACCESS = web.AppKey("access", AccessPolicy)
"""Who may call what: the status page asks it what a caller may see and do."""
