"""The aiohttp application factory: the route table, middlewares and background contexts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web
from aiohttp.typedefs import Middleware

from repoman.dataplane.api import DataPlane, MetricsSource
from repoman.server import handlers, page
from repoman.server.auth import AccessPolicy, access_middleware
from repoman.server.body import BodyLimits
from repoman.server.keys import ACCESS, DECODER, LIMITS, METRICS, SERVICE
from repoman.server.middleware import continue_within_limits, errors_as_json

DECODE_THREADS = 1
"""Big bodies decoded at once. Decoding holds the GIL, so more threads would not decode faster;
one keeps the event loop waiting on at most one long C call, and one big parse in memory."""

Background = Callable[[web.Application], AsyncIterator[None]]


def make_app(
    service: DataPlane,
    metrics: MetricsSource,
    *,
    background: Iterable[Background] = (),
    limits: BodyLimits | None = None,
    access: AccessPolicy | None = None,
) -> web.Application:
    """Build the KServe v2 HTTP app around ``service`` (and ``metrics`` for ``/metrics``).

    ``background`` are cleanup contexts (async generators) started before the server
    accepts connections and stopped, in reverse order, after it stopped accepting.
    Run it with serve_until_stopped: request bodies must reach the handlers as sent
    (aiohttp's auto_decompress off), see server/body.py.
    """
    policy = access or AccessPolicy()
    limits = limits or BodyLimits()
    middlewares: list[Middleware] = [errors_as_json]
    if policy.restricts:
        middlewares.append(access_middleware(policy))
    app = web.Application(middlewares=middlewares, client_max_size=limits.max_bytes)
    app[SERVICE] = service
    app[METRICS] = metrics
    app[LIMITS] = limits
    app[ACCESS] = policy
    # NOTE: threads start on first use, so small requests never create one.
    decoder = ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="repoman-decode")
    app[DECODER] = decoder

    async def stop_decoding(app: web.Application) -> None:
        decoder.shutdown(wait=False, cancel_futures=True)

    app.on_cleanup.append(stop_decoding)
    app.cleanup_ctx.extend(background)
    model = "/v2/models/{model}"
    versioned = model + "/versions/{version}"
    expect = {"expect_handler": continue_within_limits}  # for the routes that take a body
    app.router.add_routes(
        [
            # NOTE: inference first: aiohttp tries the /v2/models/... routes in this order,
            # one regular expression each, and inference is nearly every request.
            web.post(model + "/infer", handlers.infer, **expect),
            web.post(versioned + "/infer", handlers.infer, **expect),
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
            web.post("/v2/repository/index", handlers.repository_index, **expect),
            web.post("/v2/repository/models/{model}/load", handlers.repository_load, **expect),
            web.post("/v2/repository/models/{model}/unload", handlers.repository_unload, **expect),
            *page.ROUTES,
        ]
    )
    return app
