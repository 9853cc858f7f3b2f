"""Typed application keys shared by the app factory and the handlers."""

from aiohttp import web

from repoman.service import InferenceService

SERVICE = web.AppKey("service", InferenceService)
