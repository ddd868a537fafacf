"""Cross-origin access: off by default, exact origins only when configured."""

from __future__ import annotations

import httpx

from .conftest import StartReplica

SITE = "https://chat.example"


async def test_no_origin_is_allowed_by_default(client: httpx.AsyncClient) -> None:
    response = await client.get("/rooms/lobby/messages", headers={"Origin": SITE})
    assert "access-control-allow-origin" not in response.headers


async def test_a_listed_origin_is_allowed_exactly_and_others_are_not(
    start_replica: StartReplica,
) -> None:
    replica = await start_replica(cors_origins=f"{SITE}, https://other.example")
    async with replica.client() as client:
        allowed = await client.get("/rooms/lobby/messages", headers={"Origin": SITE})
        stranger = await client.get("/healthz", headers={"Origin": "https://evil.example"})
        preflight = await client.options(
            "/messages",
            headers={"Origin": SITE, "Access-Control-Request-Method": "POST"},
        )
    assert allowed.headers["access-control-allow-origin"] == SITE
    assert "Origin" in allowed.headers["vary"]
    assert "access-control-allow-credentials" not in allowed.headers
    assert "access-control-allow-origin" not in stranger.headers
    assert preflight.headers["access-control-allow-origin"] == SITE
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "Content-Type" in preflight.headers["access-control-allow-headers"]


async def test_credentials_are_allowed_only_when_configured(start_replica: StartReplica) -> None:
    replica = await start_replica(cors_origins=SITE, cors_allow_credentials=True)
    async with replica.client() as client:
        response = await client.get("/healthz", headers={"Origin": SITE})
    assert response.headers["access-control-allow-credentials"] == "true"
    assert response.headers["access-control-allow-origin"] == SITE
