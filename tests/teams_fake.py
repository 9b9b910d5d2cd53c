"""Local fakes of what Teams talks to, for integration tests with the real Agents SDK.

- `FakeConnector`: the Bot Connector service an activity's `serviceUrl` points at. Every request
  the bot makes (send, reply, update) is recorded as a `Sent` with its method, path, JSON body
  and Authorization header; a send is answered with a new message id, or, for a streamed
  update, with the stream's id (as Teams does).
- `FakeEntra`: the keys Bot Framework signs its tokens with. `token()` signs a JWT as the
  Bot Framework would for our app; `install()` points the SDK's key lookup for the Bot Framework
  issuer at our JWKS URL, so the SDK's own validator checks real RS256 signatures.
- `FakeTokens`: the outgoing side (MSAL's client-credentials token), a fixed token.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt import PyJWKClient
from microsoft_agents.hosting.core import AccessTokenProviderBase, AgentAuthConfiguration

from tests.local_server import serve_locally

BOT_ID = "28:expertbot"
TENANT = "00000000-0000-4000-8000-000000000001"
BOTFRAMEWORK_ISSUER = "https://api.botframework.com"
OUTGOING_TOKEN = "outgoing-token-from-fake-entra"


@dataclass
class Sent:
    method: str
    path: str
    body: dict[str, Any]
    authorization: str | None
    at: float = field(default_factory=time.monotonic)
    reply_id: str | None = None  # the id the fake answered with (the message's id in Teams)

    @property
    def stream_type(self) -> str | None:
        for entity in self.body.get("entities") or []:
            if entity.get("type") == "streaminfo":
                return entity.get("streamType") or "streaming"
        return None

    @property
    def conversation(self) -> str:
        return self.path.split("/")[3]


class FakeConnector:
    def __init__(self) -> None:
        self.sent: list[Sent] = []
        self.url = ""
        self._ids = itertools.count(1)
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.fail_next = 0  # answer this many sends with 500

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/v3/conversations/{tail:.*}", self._conversations)
        self._runner, self.url = await serve_locally(app)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _conversations(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else {}
        sent = Sent(request.method, request.path, body, request.headers.get("Authorization"))
        async with self._changed:
            self.sent.append(sent)
            self._changed.notify_all()
        if self.fail_next:
            self.fail_next -= 1
            return web.json_response({"error": {"code": "ServiceError"}}, status=500)
        stream_id = next(
            (
                e.get("streamId")
                for e in body.get("entities") or []
                if e.get("type") == "streaminfo" and e.get("streamId")
            ),
            None,
        )
        sent.reply_id = stream_id or f"msg-{next(self._ids)}"
        return web.json_response({"id": sent.reply_id})

    async def wait_for(
        self, predicate: Any = None, count: int = 1, timeout: float = 60
    ) -> list[Sent]:
        """The first `count` requests matching `predicate`, waiting for them to arrive."""

        def matching() -> list[Sent]:
            return [s for s in self.sent if predicate is None or predicate(s)]

        async def arrived() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: len(matching()) >= count)

        try:
            await asyncio.wait_for(arrived(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"expected {count} matching requests; got {len(matching())}: "
                + "; ".join(f"{s.method} {s.path} {s.body.get('type')}" for s in self.sent)
            ) from None
        return matching()[:count]

    def messages(self, conversation: str | None = None) -> list[Sent]:
        """Message activities (not typing), optionally in one conversation."""
        return [
            s
            for s in self.sent
            if s.body.get("type") == "message"
            and (conversation is None or s.conversation == conversation)
        ]


class FakeEntra:
    """Signs tokens as the Bot Framework does; serves the public key as a JWKS."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "fake-botframework-key"
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/keys", self._keys)
        self._runner, base = await serve_locally(app)
        self.url = f"{base}/keys"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _keys(self, request: web.Request) -> web.Response:
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        jwk |= {"kid": self.kid, "use": "sig", "alg": "RS256"}
        return web.json_response({"keys": [jwk]})

    def token(
        self,
        audience: str,
        *,
        service_url: str,
        key: rsa.RSAPrivateKey | None = None,
        expires_in: int = 3600,
    ) -> str:
        now = int(time.time())
        claims = {
            "iss": BOTFRAMEWORK_ISSUER,
            "aud": audience,
            "serviceurl": service_url,
            "nbf": now - 60,
            "iat": now - 60,
            "exp": now + expires_in,
        }
        return jwt.encode(claims, key or self.key, algorithm="RS256", headers={"kid": self.kid})

    def install(self) -> None:
        """Route the SDK's key lookup for Bot Framework tokens to this JWKS."""
        from microsoft_agents.hosting.core.authorization._entra_issuers import (
            BOTFRAMEWORK_JWKS_URIS,
        )
        from microsoft_agents.hosting.core.authorization.jwt.jwt_token_validator import (
            JwtTokenValidator,
            _JwkClientCacheEntry,
        )

        uri = BOTFRAMEWORK_JWKS_URIS[BOTFRAMEWORK_ISSUER]
        cache = JwtTokenValidator._jwk_client_manager._cache
        cache[uri] = _JwkClientCacheEntry(PyJWKClient(self.url), threading.Lock())

    def uninstall(self) -> None:
        from microsoft_agents.hosting.core.authorization._entra_issuers import (
            BOTFRAMEWORK_JWKS_URIS,
        )
        from microsoft_agents.hosting.core.authorization.jwt.jwt_token_validator import (
            JwtTokenValidator,
        )

        JwtTokenValidator._jwk_client_manager._cache.pop(
            BOTFRAMEWORK_JWKS_URIS[BOTFRAMEWORK_ISSUER], None
        )


class FakeTokens(AccessTokenProviderBase):
    """The outgoing-token provider MSAL would be, for one connection."""

    def __init__(self, configuration: AgentAuthConfiguration) -> None:
        self._configuration = configuration
        self.requests = 0

    @property
    def configuration(self) -> AgentAuthConfiguration:
        return self._configuration

    async def get_access_token(
        self, resource_url: str, scopes: list[str], force_refresh: bool = False
    ) -> str:
        self.requests += 1
        return OUTGOING_TOKEN

    def get_token_credential(self) -> Any:
        raise NotImplementedError("not used by the bot")


def activity(
    text: str | None,
    *,
    service_url: str,
    conversation: str = "a:personal-chat-1",
    kind: str = "personal",
    user: str = "aad-employee",
    name: str = "Erin Employee",
    activity_id: str | None = None,
    mention: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    """A Teams message activity as the Bot Connector posts it."""
    body: dict[str, Any] = {
        "type": "message",
        "id": activity_id or f"act-{time.monotonic_ns()}",
        "channelId": "msteams",
        "serviceUrl": service_url,
        "from": {"id": f"29:{user}", "aadObjectId": user, "name": name},
        "recipient": {"id": BOT_ID, "name": "expertbot"},
        "conversation": {"id": conversation, "conversationType": kind, "tenantId": TENANT},
        "channelData": {"tenant": {"id": TENANT}},
        "timestamp": "2026-11-21T10:00:00.000Z",
    }
    if text is not None:
        body["text"] = f"<at>expertbot</at> {text}" if mention else text
    if mention:
        body["entities"] = [
            {
                "type": "mention",
                "mentioned": {"id": BOT_ID, "name": "expertbot"},
                "text": "<at>expertbot</at>",
            }
        ]
    return body | extra
