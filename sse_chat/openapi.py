"""The OpenAPI document of the HTTP API, built from the limits validation enforces."""

from __future__ import annotations

from typing import Any

from .config import Settings
from .messages import ROOM_PATTERN

_ERROR = {"$ref": "#/components/schemas/Error"}


def _error_response(what: str) -> dict[str, Any]:
    return {"description": what, "content": {"application/json": {"schema": _ERROR}}}


def _room_parameter() -> dict[str, Any]:
    return {
        "name": "room",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": f"^{ROOM_PATTERN.pattern}$"},
    }


def openapi_document(settings: Settings) -> dict[str, Any]:
    """OpenAPI 3.1 for this replica's configuration."""
    limits = settings.limits
    draft = {
        "type": "object",
        "required": ["user", "text"],
        "properties": {
            "user": {"type": "string", "minLength": 1, "maxLength": limits.max_user},
            "text": {"type": "string", "minLength": 1, "maxLength": limits.max_text},
        },
    }
    # A token is needed only where the replica is configured to need one.
    secured: list[dict[str, list[str]]] = [{"bearer": []}, {"cookie": []}, {}]
    auth_errors = {
        "401": _error_response("A token is needed here and is missing, malformed or expired"),
        "403": _error_response("The token does not open this room"),
    }
    post = {
        "summary": "Post a message",
        "security": secured,
        "parameters": [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                "description": "Retries with the same key store the message once",
            }
        ],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": draft},
                "application/x-www-form-urlencoded": {"schema": draft},
            },
        },
        "responses": {
            "201": {
                "description": "The stored message",
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Message"}}
                },
            },
            "400": _error_response("Malformed body"),
            "401": auth_errors["401"],
            "403": _error_response("The token posts as another user, or does not open the room"),
            "404": _error_response("Bad room name"),
            "408": _error_response("The body arrived too slowly"),
            "413": _error_response("Body too large"),
            "415": _error_response("Unsupported content type"),
            "422": _error_response("Invalid field"),
            "429": _error_response("Rate limited"),
            "503": _error_response("Cannot be stored now"),
        },
    }
    stream = {
        "summary": "The room's Server-Sent Events stream",
        "security": [*secured, {"access_token": []}],
        "parameters": [
            {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}},
            {"name": "lastEventId", "in": "query", "schema": {"type": "string"}},
            {"name": "user", "in": "query", "schema": {"type": "string"}},
        ],
        "responses": {
            "200": {
                "description": "retry, ready (live false while the backplane is away: the"
                " stream waits and replays when it is back), presence, then message events."
                " A replica that is full or draining answers 200 too, with a jittered retry"
                " and an `unavailable` event {error, message}, and ends the stream: an"
                " EventSource gives up for good on any other status.",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
            "400": _error_response("Malformed Last-Event-ID"),
            **auth_errors,
            "404": _error_response("Bad room name"),
            "422": _error_response("Invalid user"),
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "sse-chat", "version": "1"},
        "paths": {
            "/messages": {"post": post},
            "/rooms/{room}/messages": {
                "parameters": [_room_parameter()],
                "post": post,
                "get": {
                    "summary": "Recent history, oldest first",
                    "security": secured,
                    "parameters": [
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": settings.history_size,
                            },
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "Messages",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/History"}
                                }
                            },
                        },
                        **auth_errors,
                        "404": _error_response("Bad room name"),
                        "422": _error_response("Invalid limit"),
                        "503": _error_response("Backplane down"),
                    },
                },
            },
            "/events": {"get": stream},
            "/rooms/{room}/events": {"parameters": [_room_parameter()], "get": stream},
            "/rooms/{room}/presence": {
                "parameters": [_room_parameter()],
                "get": {
                    "summary": "Who is online",
                    "security": secured,
                    "responses": {
                        "200": {
                            "description": "Users online",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Presence"}
                                }
                            },
                        },
                        **auth_errors,
                        "404": _error_response("Bad room name"),
                        "503": _error_response("Backplane down"),
                    },
                },
            },
            "/session": {
                "post": {
                    "summary": "Keep the Bearer token in the HttpOnly `sse_chat_token` cookie",
                    "security": [{"bearer": []}],
                    "responses": {
                        "204": {"description": "Cookie set until the token expires"},
                        "401": auth_errors["401"],
                    },
                },
                "delete": {
                    "summary": "Clear the token cookie",
                    "responses": {"204": {"description": "Cookie cleared"}},
                },
            },
            "/healthz": {
                "get": {"summary": "Liveness", "responses": {"200": {"description": "Up"}}}
            },
            "/readyz": {
                "get": {
                    "summary": "Readiness",
                    "responses": {
                        "200": {"description": "Ready"},
                        "503": _error_response("Not ready"),
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": "sse_chat_token"},
                "access_token": {"type": "apiKey", "in": "query", "name": "access_token"},
            },
            "schemas": {
                "Message": {
                    "type": "object",
                    "required": ["id", "room", "user", "text", "ts", "replica"],
                    "properties": {
                        "id": {"type": "string", "pattern": "^[0-9]+-[0-9]+$"},
                        "room": {"type": "string"},
                        "user": {"type": "string"},
                        "text": {"type": "string"},
                        "ts": {"type": "string"},
                        "replica": {"type": "string"},
                    },
                },
                "History": {
                    "type": "object",
                    "required": ["room", "messages"],
                    "properties": {
                        "room": {"type": "string"},
                        "messages": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/Message"},
                        },
                    },
                },
                "Presence": {
                    "type": "object",
                    "required": ["room", "users"],
                    "properties": {
                        "room": {"type": "string"},
                        "users": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "Error": {
                    "type": "object",
                    "required": ["error", "message"],
                    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
                },
            },
        },
    }
