"""The view's web server (aiohttp): the page, its static files and four JSON endpoints.

* ``GET /`` — the page (``static/index.html``; ``?entity=ID`` chooses the entity);
* ``GET /api/status`` — the Kafka connection (state, error, bootstrap, topics), the ring size,
  and the entities kept with their flag counts;
* ``GET /api/entity/{id}?signal=N&predictions=N&beats=N`` — that entity's rows newer than the
  page's cursors (404 when the entity is not kept);
* ``GET /api/fleet`` — the fleet figures from Prometheus' HTTP API (``SEQSTREAM_PROMETHEUS_URL``):
  events/s, p99 end-to-end latency and anomalies per minute over the last minute, summed over all
  workers Prometheus scrapes, as the Grafana dashboard computes them; ``null`` with the reason
  when Prometheus does not answer or has no series yet.

The server keeps no state per page: each page polls with its cursors, so a client costs one
answer of at most ``SEQSTREAM_VIEW_SAMPLES`` rows per ring, and the page itself keeps no more.
"""

from __future__ import annotations

import asyncio
import math
import time
from importlib import resources
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from seqstream.view.buffers import Buffers
from seqstream.view.follower import Follower
from stream.settings import Settings

__all__ = ["FLEET_QUERIES", "make_app"]

FLEET_WINDOW = "1m"
FLEET_QUERIES = {
    "events_per_s": f"sum(rate(seqstream_events_total[{FLEET_WINDOW}]))",
    "latency_p99_s": "histogram_quantile(0.99, sum by (le) "
                     f"(rate(seqstream_latency_seconds_bucket[{FLEET_WINDOW}])))",
    "anomalies_per_min": f"60 * sum(rate(seqstream_anomalies_total[{FLEET_WINDOW}]))",
}
FLEET_CACHE_S = 2.0  # pages poll more often than Prometheus scrapes (5 s): share one answer
SESSION = web.AppKey("session", aiohttp.ClientSession)  # for the Prometheus queries
STATIC = resources.files("seqstream.view").joinpath("static")
CONTENT_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}


def _json(body: Any) -> web.Response:
    return web.json_response(body, dumps=lambda o: orjson.dumps(o).decode())


def _cursor(request: web.Request, name: str) -> int:
    raw = request.query.get(name, "0")
    try:
        value = int(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name}: expected a row number, got {raw!r}") from None
    if value < 0:
        raise web.HTTPBadRequest(text=f"{name}: expected a row number >= 0, got {value}")
    return value


class _Fleet:
    """Prometheus' answers, fetched at most every FLEET_CACHE_S seconds."""

    def __init__(self, url: str) -> None:
        self.url, self.at, self.answer = url, -math.inf, {}
        self.lock = asyncio.Lock()

    async def get(self, session: aiohttp.ClientSession) -> dict[str, Any]:
        async with self.lock:
            if time.monotonic() - self.at > FLEET_CACHE_S:
                self.answer = await self._ask(session)
                self.at = time.monotonic()
        return self.answer

    async def _ask(self, session: aiohttp.ClientSession) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.url, "error": ""}
        for name, query in FLEET_QUERIES.items():
            try:
                async with session.get(f"{self.url}/api/v1/query", params={"query": query},
                                       timeout=aiohttp.ClientTimeout(total=2)) as reply:
                    result = (await reply.json())["data"]["result"]
            except (aiohttp.ClientError, TimeoutError, KeyError, ValueError) as ex:
                out[name] = None
                out["error"] = f"Prometheus at {self.url}: {type(ex).__name__} {ex}".strip()
                continue
            value = float(result[0]["value"][1]) if result else math.nan
            out[name] = value if math.isfinite(value) else None
        if not out["error"] and all(out[name] is None for name in FLEET_QUERIES):
            out["error"] = (f"Prometheus at {self.url} has no seqstream series over the last "
                            "minute: no worker is scraped there")
        return out


def make_app(settings: Settings, buffers: Buffers | None = None) -> web.Application:
    """The application; its start-up starts the Kafka follower and its cleanup stops it."""
    buffers = buffers or Buffers(settings.view_samples, settings.view_entities)
    follower = Follower(settings, buffers)
    fleet = _Fleet(settings.prometheus_url)
    app = web.Application()

    async def lifecycle(app: web.Application):  # type: ignore[no-untyped-def]
        task = asyncio.create_task(follower.run())
        session = app[SESSION] = aiohttp.ClientSession()
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await session.close()

    async def page(request: web.Request) -> web.Response:
        return _static("index.html")

    async def static(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in {"index.html", "view.js", "view.css"}:
            raise web.HTTPNotFound(text=f"expected index.html, view.js or view.css, got {name!r}")
        return _static(name)

    async def status(request: web.Request) -> web.Response:
        return _json({**follower.status(), "window": settings.view_samples,
                                  "max_entities": settings.view_entities,
                                  "entities": buffers.listing()})

    async def entity(request: web.Request) -> web.Response:
        name = request.match_info["entity_id"]
        rows = buffers.view(name, signal=_cursor(request, "signal"),
                            predictions=_cursor(request, "predictions"),
                            beats=_cursor(request, "beats"))
        if rows is None:
            raise web.HTTPNotFound(text=f"entity {name!r}: not heard since the view started "
                                        "(or dropped as the least recently heard)")
        return _json(rows)

    async def fleet_figures(request: web.Request) -> web.Response:
        return _json(await fleet.get(request.app[SESSION]))

    app.cleanup_ctx.append(lifecycle)
    app.add_routes([web.get("/", page), web.get("/static/{name}", static),
                    web.get("/api/status", status), web.get("/api/entity/{entity_id}", entity),
                    web.get("/api/fleet", fleet_figures)])
    return app


def _static(name: str) -> web.Response:
    suffix = name[name.rindex("."):]
    return web.Response(body=STATIC.joinpath(name).read_bytes(),
                        content_type=CONTENT_TYPES[suffix], charset="utf-8")
