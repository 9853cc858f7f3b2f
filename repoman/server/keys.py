"""Typed application keys shared by the app factory and the handlers."""

from aiohttp import web

from repoman.dataplane.service import InferenceService

SERVICE = web.AppKey("service", InferenceService)
