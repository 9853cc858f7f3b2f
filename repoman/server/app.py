"""The aiohttp application factory: the route table, middlewares and background contexts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable

from aiohttp import web
from aiohttp.typedefs import Middleware

from repoman.dataplane.service import InferenceService
from repoman.metrics import Metrics
from repoman.server import handlers
from repoman.server.auth import AccessPolicy, access_middleware
from repoman.server.keys import METRICS, SERVICE
from repoman.server.middleware import errors_as_json

DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024

Background = Callable[[web.Application], AsyncIterator[None]]


def make_app(
    service: InferenceService,
    metrics: Metrics,
    *,
    background: Iterable[Background] = (),
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    access: AccessPolicy | None = None,
) -> web.Application:
    """Build the KServe v2 HTTP app around ``service`` (and ``metrics`` for ``/metrics``).

    ``background`` are cleanup contexts (async generators) started before the server
    accepts connections and stopped, in reverse order, after it stopped accepting.
    """
    policy = access or AccessPolicy()
    middlewares: list[Middleware] = [errors_as_json]
    if policy.restricts:
        middlewares.append(access_middleware(policy))
    app = web.Application(middlewares=middlewares, client_max_size=max_request_bytes)
    app[SERVICE] = service
    app[METRICS] = metrics
    app.cleanup_ctx.extend(background)
    model = "/v2/models/{model}"
    versioned = model + "/versions/{version}"
    app.router.add_routes(
        [
            # NOTE: inference first: aiohttp tries the /v2/models/... routes in this order,
            # one regular expression each, and inference is nearly every request.
            web.post(model + "/infer", handlers.infer),
            web.post(versioned + "/infer", handlers.infer),
            web.get("/v2/health/live", handlers.live),
            web.get("/metrics", handlers.metrics),
            web.get("/v2/health/ready", handlers.ready),
            web.get("/v2", handlers.server_metadata),
            # NOTE: before /v2/models/{model}, which would take "stats" for a model name.
            web.get("/v2/models/stats", handlers.statistics),
            web.get(model, handlers.model_metadata),
            web.get(versioned, handlers.model_metadata),
            web.get(model + "/ready", handlers.model_ready),
            web.get(versioned + "/ready", handlers.model_ready),
            web.get(model + "/config", handlers.model_config),
            web.get(versioned + "/config", handlers.model_config),
            web.get(model + "/stats", handlers.statistics),
            web.get(versioned + "/stats", handlers.statistics),
            web.post("/v2/repository/index", handlers.repository_index),
            web.post("/v2/repository/models/{model}/load", handlers.repository_load),
            web.post("/v2/repository/models/{model}/unload", handlers.repository_unload),
        ]
    )
    return app
