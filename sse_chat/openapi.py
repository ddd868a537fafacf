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
    post = {
        "summary": "Post a message",
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
            "401": _error_response("Posting needs a valid token"),
            "403": _error_response("The token posts as another user"),
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
                    "responses": {
                        "200": {
                            "description": "Users online",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Presence"}
                                }
                            },
                        },
                        "404": _error_response("Bad room name"),
                        "503": _error_response("Backplane down"),
                    },
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
            }
        },
    }
