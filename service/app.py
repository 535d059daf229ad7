"""The FastAPI app: composes the ledger, the risk module and the resource routers.

`create_app()` builds everything that needs no event loop; the lifespan migrates the database and
starts the background tasks (sweeper, checkpointer). Tests drive the app without the lifespan.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service.alerts.router import router as alerts_router
from service.cards.router import router as cards_router
from service.complaints.router import router as complaints_router
from service.consumers.router import router as consumers_router
from service.consumers.router import sms_test_router
from service.core.clock import Clock
from service.core.filemodes import secure_data_dir
from service.core.settings import Settings, get_settings
from service.credit.router import router as credit_router
from service.db.engine import make_engines
from service.db.writer import Writer
from service.event_log.router import router as events_router
from service.health.router import router as health_router
from service.http.context import AppContext
from service.http.errors import install_error_handlers
from service.http.middleware import MAX_BODY, BodyLimitMiddleware
from service.keys_api.router import router as keys_router
from service.ledger_api import checkpoints, witnessing
from service.ledger_api.router import router as ledger_router
from service.merchants.router import router as merchants_router
from service.ops import migrate, sweeper
from service.pages import router as pages_router
from service.parties.router import router as parties_router
from service.products.router import router as products_router
from service.redemptions.fastpath import RedemptionFastPath
from service.redemptions.router import router as redemptions_router
from service.security.keys import load_keys
from service.settlements.router import router as settlements_router
from service.system.router import router as system_router
from service.system.router import test_router
from service.webhooks import dispatcher as webhook_dispatcher
from service.webhooks.router import router as webhooks_router

log = logging.getLogger("escrow")


def build_context(settings: Settings) -> AppContext:
    settings.check_production()
    secure_data_dir(settings)  # 0700 folder, 0600 keys and database files, also those made before
    keys = load_keys(settings)
    engines = make_engines(settings)
    clock = Clock(movable=settings.env == "test")
    writer = Writer(
        engines.sync_writer, clock, engines.is_sqlite, settings.writer_max_batch, risk_events=settings.risk_incremental
    )
    return AppContext(settings=settings, engines=engines, writer=writer, clock=clock, keys=keys)


def create_app(settings: Settings | None = None, ctx: AppContext | None = None) -> FastAPI:
    settings = settings or (ctx.settings if ctx else get_settings())
    ctx = ctx or build_context(settings)
    ctx.extras["witnesses"] = witnessing.configured(ctx.settings)  # a bad ESCROW_WITNESSES stops start-up here

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await asyncio.to_thread(migrate.upgrade, settings.effective_database_url)
        secure_data_dir(settings)  # the migration may just have created the database file
        if ctx.keys.operator_token_generated:
            print(
                f"Development operator token (stored in {settings.data_dir / 'operator_token'}): "
                f"{ctx.keys.operator_token}",
                file=sys.stderr,
                flush=True,
            )
        async with ctx.engines.reader.connect() as conn:
            await ctx.clock.refresh(conn)
        # What start-up built lives as long as the process: keep it out of the cyclic collector's
        # full passes, which otherwise walk it all (65-130 ms measured under load) and stall every
        # request in flight.
        gc.collect()
        gc.freeze()
        # The youngest generation is collected once 50,000 (not 700) more objects were made than freed:
        # a redemption's request makes hundreds that live until it is answered, so at the default every
        # few pairs paid a collection of the objects of the requests in flight (0.6 ms each, 4 % of the
        # server's CPU per pair measured under load), which then moved on to be walked again by the
        # older generations. The objects in flight stay far below it (17-22 thousand at 64 connections).
        gc.set_threshold(50_000, *gc.get_threshold()[1:])
        tasks = []
        if settings.background_tasks:
            tasks.append(asyncio.create_task(sweeper.run_forever(ctx), name="sweeper"))
            tasks.append(asyncio.create_task(checkpoints.run_forever(ctx), name="checkpointer"))
            tasks.append(asyncio.create_task(witnessing.run_forever(ctx), name="witnesses"))
            tasks.append(asyncio.create_task(webhook_dispatcher.run_forever(ctx), name="webhooks"))
            for starter in ctx.extras.get("background", []):
                tasks.append(asyncio.create_task(starter(ctx)))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await ctx.writer.stop()
            if "epoch_watch" in ctx.extras:
                ctx.extras["epoch_watch"].close()
            await ctx.engines.dispose()

    app = FastAPI(
        title="Prepaid escrow service (预付保)",
        version="0.1.0",
        lifespan=lifespan,
        generate_unique_id_function=lambda route: route.name,  # operation ids (and client functions) = route names
        telemetry={"tracing": False, "metrics": False, "logs": False},  # its per-request check costs ~8%
        description="Prepaid cards sold into escrow; money released only on the consumer's confirmation; "
        "every movement on a verifiable ledger. Amounts are integer fen.",
    )
    app.state.ctx = ctx
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=MAX_BODY)
    # Starlette tries routes in order: the redemption hot path (ask, confirm) first.
    for r in (
        redemptions_router,
        cards_router,
        system_router,
        merchants_router,
        parties_router,
        consumers_router,
        products_router,
        ledger_router,
        complaints_router,
        alerts_router,
        health_router,
    ):
        app.include_router(r)
    for r in (settlements_router, credit_router):  # custody and credit (SPEC §12)
        app.include_router(r)
    for r in (events_router, webhooks_router):  # events and webhooks (SPEC §9)
        app.include_router(r)
    for r in ctx.extras.get("routers", []):
        app.include_router(r)
    app.include_router(keys_router)
    app.include_router(pages_router)  # the pages last: their /{portal}/api/... proxy must not shadow an API route
    if settings.env == "test":
        app.include_router(test_router)
        app.include_router(sms_test_router)
    return app


def asgi_app(app: FastAPI):
    """The app as served: the redemption fast path in front of FastAPI (see service/redemptions/fastpath.py),
    unless ESCROW_FASTPATH=false."""
    return RedemptionFastPath(app, app) if app.state.ctx.settings.fastpath else app
