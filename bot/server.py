"""`expertbot serve`: one aiohttp application for every chat platform.

Routes: `POST /slack/events` (Slack's Events API, interactivity, slash commands, shortcuts —
verified by bolt with the signing secret), `POST /api/messages` (Teams, through the Microsoft 365
Agents SDK: every request's JWT verified, anonymous only when `teams.anonymous` is set),
`GET /healthz` (the process answers), `GET /readyz` (model loaded, index and database
reachable; 503 from the moment the server is told to stop), `GET /metrics` (Prometheus).
`serve` also runs the schedule (bot/schedule.py) and the intake's loops (bot/intake.py). With
`SLACK_APP_TOKEN` set, Slack comes over Socket Mode instead, through the same listeners.

Stopping (SIGTERM, SIGINT): `/readyz` turns 503 at once; questions that still arrive are
stored for another replica; answers in flight get `server.drain_s` to finish, and what is left
is released; a sync or training run in progress is stopped and recorded as interrupted; then
the server closes and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.signature import SignatureVerifier

from base.database import ping
from base.errors import ExpertbotError
from bot.claims import EventClaims
from bot.core.feedback import Feedback
from bot.core.runtime import Core
from bot.intake import Intake
from bot.ops import Ops
from bot.settings import Settings
from bot.slack import ids

log = structlog.get_logger("expertbot.server")

SERVICES: web.AppKey[Services] = web.AppKey("services")


@dataclass
class Services:
    settings: Settings
    core: Core
    ops: Ops
    feedback: Feedback
    claims: EventClaims
    intake: Intake
    slack: Any = None  # bot.slack.app.SlackBot when Slack is configured
    teams: Any = None  # bot.teams.app.TeamsBot when Teams is configured
    stopping: bool = False  # told to stop: not ready for new traffic

    @classmethod
    async def start(
        cls, settings: Settings, core: Core, *, teams_connections: Any = None
    ) -> Services:
        """Wire the platform layers to a started Core (whose start migrated the database)."""
        claims = EventClaims(core.knowledge.engine, lease_s=settings.delivery.lease_s)
        intake = Intake(claims, settings.delivery, capacity=settings.model.max_queue)
        ops = Ops(settings, core.knowledge, core.store, core.registry)
        feedback = Feedback(core.store, core.knowledge.search)
        services = cls(settings, core, ops, feedback, claims, intake)
        if settings.slack.configured:
            from bot.slack.app import SlackBot

            services.slack = SlackBot(settings.slack, core, ops, feedback, claims, intake)
        if settings.teams.configured:
            from bot.teams.app import TeamsBot
            from bot.teams.references import References

            references = References(core.knowledge.engine)
            services.teams = TeamsBot(
                settings.teams,
                core,
                ops,
                feedback,
                claims,
                intake,
                references,
                connections=teams_connections,
            )
        return services


def make_app(services: Services) -> web.Application:
    app = web.Application(
        client_max_size=services.settings.server.max_body_bytes,
        middlewares=[_request_context],
    )
    app[SERVICES] = services
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    slack = services.slack
    if slack is not None and services.settings.slack.signing_secret is not None:
        verifier = SignatureVerifier(services.settings.slack.signing_secret.get_secret_value())

        async def slack_events(request: web.Request) -> web.Response:
            raw = await request.read()  # beyond server.max_body_bytes: 413
            # The signature first, before anything is parsed (bolt parses, then verifies): what
            # is not signed with our secret is refused whatever it holds. Slack signs UTF-8 text;
            # other bytes, a timestamp that is no number, a non-ASCII signature: not signed.
            try:
                text = raw.decode("utf-8")
                signed = verifier.is_valid_request(text, dict(request.headers))
            except (ValueError, TypeError):
                signed = False
            if not signed:
                return web.json_response({"error": "invalid signature"}, status=401)
            try:
                bolt_request = AsyncBoltRequest(
                    body=text, query=request.query_string, headers=dict(request.headers)
                )
                problem = _misshapen(bolt_request.body)
            except (ValueError, TypeError, KeyError, AttributeError, IndexError, RecursionError):
                problem = "not JSON, not a form, or nested too deeply"
            if problem:
                log.warning("slack.malformed_request", bytes=len(raw), problem=problem)
                return web.json_response(
                    {"error": f"malformed request body: {problem}"}, status=400
                )
            try:
                response = await slack.app.async_dispatch(bolt_request)
            except (KeyError, TypeError, ValueError) as exc:
                # Signed and shaped like a Slack payload, yet not one bolt can read.
                log.warning("slack.unreadable_payload", error=f"{exc.__class__.__name__}: {exc}")
                return web.json_response({"error": "malformed Slack payload"}, status=400)
            if response.status == 404:  # no listener for it (an event or a payload we don't
                return web.Response(status=200)  # use): acknowledged, or Slack sends it again
            return await to_aiohttp_response(response)

        app.router.add_post(ids.EVENTS_PATH, slack_events)
    if services.teams is not None:
        from microsoft_agents.hosting.aiohttp import jwt_authorization_decorator

        from bot.teams.config import MESSAGES_PATH

        with warnings.catch_warnings():  # the SDK's middleware reads this (string) key
            warnings.simplefilter("ignore", web.NotAppKeyWarning)
            app["agent_configuration"] = services.teams.auth
        app.router.add_post(MESSAGES_PATH, jwt_authorization_decorator(services.teams.handle))
    return app


def _misshapen(body: Any) -> str | None:
    """Why a signed body is no Slack payload: it has no type (nor is it a slash
    command), or a field that bolt or a listener reads does not hold the JSON type
    Slack sends in it (bolt would answer those with a 500, or a 404 after the ack).
    None: shaped like one."""
    if not isinstance(body, dict):
        return "not a JSON object"
    kind, event, actions = body.get("type"), body.get("event"), body.get("actions")
    if not isinstance(kind, str) and (
        kind is not None or not {"command", "ssl_check"} & body.keys()
    ):
        return "no type"
    if (kind == "event_callback" or "event" in body) and not (
        isinstance(event, dict) and isinstance(event.get("type"), str)
    ):
        return "event"
    authorizations = body.get("authorizations", [])
    if not isinstance(authorizations, list) or not all(isinstance(a, dict) for a in authorizations):
        return "authorizations"
    if (kind == "block_actions" or "actions" in body) and not (
        isinstance(actions, list)
        and actions
        and all(isinstance(a, dict) for a in actions)
        and (kind != "block_actions" or all(isinstance(a.get("action_id"), str) for a in actions))
    ):
        return "actions"
    for key in ("view", "message", "container", "state"):
        if key in body and not isinstance(body[key], dict):
            return key
    for key in ("user", "channel", "team"):
        if key in body and not isinstance(body[key], str | dict | None):
            return key
    if "command" in body and not all(
        isinstance(body.get(key), str) for key in ("user_id", "channel_id")
    ):
        return "a command without user_id or channel_id"
    return None


@web.middleware
async def _request_context(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    request_id = request.headers.get("X-Request-Id") or uuid.uuid4().hex[:16]
    with structlog.contextvars.bound_contextvars(request_id=request_id):
        started = time.perf_counter()
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            log.info("http.refused", path=request.path, status=exc.status)
            raise
        log.debug(
            "http.request",
            path=request.path,
            status=response.status,
            ms=round(1000 * (time.perf_counter() - started), 2),
        )
        return response


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _metrics(request: web.Request) -> web.Response:
    """Prometheus exposition: questions, answers, latencies, feedback, jobs, the adapter."""
    from bot import metrics

    metrics.serving(request.app[SERVICES].core.generator.adapter)
    body, content_type = metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": content_type})


async def _readyz(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    checks: dict[str, str] = {"model": services.core.generator.model_name}
    if services.stopping:
        checks["server"] = "stopping"
        return web.json_response({"status": "stopping", "checks": checks}, status=503)
    ready = True
    index = services.core.knowledge.index
    try:
        checks["index"] = f"{await index.count_chunks()} chunks"
    except ExpertbotError as exc:  # names the backend and where it is, never a secret
        ready, checks["index"] = False, f"unreachable: {exc}"
    except Exception as exc:
        ready, checks["index"] = False, f"{index.name} unreachable: {exc.__class__.__name__}"
    try:
        await asyncio.to_thread(ping, services.core.knowledge.engine)
        checks["database"] = "ok"
    except ExpertbotError as exc:
        ready, checks["database"] = False, str(exc)
    return web.json_response(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status=200 if ready else 503,
    )


async def serve(
    settings: Settings,
    *,
    host: str,
    port: int,
    started: Callable[[str], None] | None = None,
    core: Core | None = None,
) -> None:
    """Load everything, serve until SIGINT/SIGTERM, then close in order."""
    core = core or Core.build(settings)
    await core.start(follow_adapters=True)
    runner: web.AppRunner | None = None
    socket_handler: Any = None
    services: Services | None = None
    scheduler: Any = None
    try:
        services = await Services.start(settings, core)
        # Our own tasks are drained before the server closes: its handlers need no long wait.
        runner = web.AppRunner(make_app(services), access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0] if runner.addresses else (host, port)
        url = f"http://{bound[0]}:{bound[1]}"
        slack_mode = _slack_mode(settings)
        if services.slack is not None and settings.slack.socket_mode:
            from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

            assert settings.slack.app_token is not None
            socket_handler = AsyncSocketModeHandler(
                services.slack.app, settings.slack.app_token.get_secret_value()
            )
            await socket_handler.connect_async()
        if settings.schedule.enabled:
            from bot.schedule import Scheduler

            scheduler = Scheduler(services.ops, database_url=settings.resolved_database_url)
            await scheduler.start()
        await services.intake.start()
        teams_mode = _teams_mode(settings)
        log.info(
            "serve.started",
            url=url,
            slack=slack_mode,
            teams=teams_mode,
            model=core.generator.model_name,
        )
        if settings.teams.configured and settings.teams.anonymous:
            log.warning("serve.teams_anonymous", warning=ANONYMOUS_WARNING)
        if started is not None:
            started(f"serving on {url} — Slack: {slack_mode} — Teams: {teams_mode}")
            started(f"schedule: {schedule_mode(settings)}")
            if settings.teams.configured and settings.teams.anonymous:
                started(f"WARNING: {ANONYMOUS_WARNING}")
        await _until_stopped()
    finally:
        log.info("serve.stopping", drain_s=settings.server.drain_s)
        if services is not None:
            services.stopping = True
            await services.intake.stop(settings.server.drain_s)
        if scheduler is not None:
            await scheduler.stop()
        if services is not None:
            interrupted = await services.ops.interrupt()
            if interrupted:
                log.warning("serve.jobs_interrupted", jobs=interrupted)
        if services is not None and services.teams is not None:
            await services.teams.drain(cancel=True)
        if socket_handler is not None:
            await socket_handler.close_async()
        if runner is not None:
            await runner.cleanup()
        await core.close()


def _slack_mode(settings: Settings) -> str:
    slack = settings.slack
    if not slack.configured:
        missing = "SLACK_BOT_TOKEN" if slack.bot_token is None else "SLACK_SIGNING_SECRET"
        return (
            f"not configured (set {missing}, or SLACK_APP_TOKEN for Socket Mode; "
            "see deploy/slack/README.md)"
        )
    if slack.socket_mode:
        return "Socket Mode"
    return f"HTTP events at {ids.EVENTS_PATH}"


def schedule_mode(settings: Settings) -> str:
    config = settings.schedule
    if not config.enabled:
        return "off (EXPERTBOT_SCHEDULE__SYNC and __TRAIN are empty)"
    from bot.schedule import NO_SOURCES

    sync = f"sync `{config.sync}`" if config.sync else "sync off"
    if config.sync and not settings.knowledge.sources:
        sync = f"sync off: {NO_SOURCES}"
    parts = [sync, f"train `{config.train}`" if config.train else "train off"]
    return ", ".join(parts) + f" ({config.timezone})"


ANONYMOUS_WARNING = (
    "Teams accepts UNAUTHENTICATED requests at /api/messages (EXPERTBOT_TEAMS__ANONYMOUS=true): "
    "anyone who can reach this server can talk to the bot as anyone. Local development only."
)


def _teams_mode(settings: Settings) -> str:
    from bot.teams.config import MESSAGES_PATH

    teams = settings.teams
    if not teams.configured:
        return (
            "not configured (set EXPERTBOT_TEAMS__CLIENT_ID, __CLIENT_SECRET and __TENANT_ID; "
            "see deploy/teams/README.md)"
        )
    if teams.client_id is None:
        return f"ANONYMOUS at {MESSAGES_PATH} (no token checked)"
    extra = ", anonymous requests allowed too" if teams.anonymous else ""
    return f"{MESSAGES_PATH}, tokens for app {teams.client_id}{extra}"


async def _until_stopped() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Not the main thread, or a platform without signals: Ctrl-C still interrupts.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
