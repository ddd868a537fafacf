"""Settings: environment variables (and CLI flags) -> one typed, frozen object."""

from __future__ import annotations

import contextlib
import resource
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from .messages import Limits
from .ratelimit import Network, parse_networks
from .tokens import VerificationKey

MIN_SECRET_BYTES = 32  # RFC 7518: an HS256 key at least as long as the hash
_JWT_ALGORITHMS = {"HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384",
                   "ES512", "PS256", "PS384", "PS512", "EdDSA"}  # fmt: skip

ENV_PREFIX = "SSE_CHAT_"


class ConfigError(ValueError):
    """A setting has a value that cannot be used; the message names it."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a replica can be told. Each field is also `SSE_CHAT_<FIELD>`."""

    host: str = "127.0.0.1"
    port: int = 8000
    replica_id: str = field(default_factory=socket.gethostname)
    history_size: int = 1000
    keepalive_seconds: float = 15.0
    retry_ms: int = 3000
    drain_retry_ms: int = 250
    # Bytes queued for one stream that its client has not read yet; beyond it the client is cut.
    client_buffer_bytes: int = 256 * 1024
    max_user_length: int = 40
    max_text_length: int = 4000
    max_body_bytes: int = 16 * 1024
    default_history_limit: int = 50
    graceful_timeout_seconds: float = 5.0
    send_timeout_seconds: float = 30.0
    body_timeout_seconds: float = 10.0  # a POST body slower than this is refused (408)
    # Empty: the embedded backplane. Else redis://, rediss://, unix://, redis+sentinel:// or
    # redis[s]+cluster://.
    redis_url: str = ""
    redis_password_file: str = ""
    redis_prefix: str = "sse-chat"
    # Replicas that must hold a message before its POST answers 201 (WAIT after the append);
    # they have redis_wait_ms to say so, else the POST answers 503 outcome_unknown.
    redis_min_replicas: int = 0
    redis_wait_ms: int = 500
    presence_ttl_seconds: float = 20.0
    post_rate_limit: int = 30  # POSTs per client per window; 0 turns the limit off
    post_rate_window_seconds: int = 10
    # Open streams on one replica: by default the open-file limit less 1,000 for everything else,
    # so the cap answers before `accept` fails with EMFILE.
    max_streams: int = field(default_factory=lambda: default_max_streams())
    idempotency_seconds: int = 86400  # how long a POST's Idempotency-Key is remembered
    max_rooms_per_stream: int = 50  # rooms one `GET /events?rooms=` stream may follow
    listen_backlog: int = 4096  # the kernel caps it at net.core.somaxconn
    max_streams_per_client: int = 50  # open streams of one client address on one replica
    auth: str = "off"  # off | post (POSTs need a token) | all (every room request needs one)
    private_rooms: str = ""  # comma-separated names or `prefix-*`: need a token that grants them
    jwt_key_file: str = ""  # comma-separated files: a shared secret (HS256) or PEM public keys
    jwt_algorithms: str = "HS256"  # comma-separated; `none` is never accepted
    jwt_audience: str = ""  # set: tokens must carry this `aud`
    jwt_issuer: str = ""  # set: tokens must carry this `iss`
    cors_origins: str = ""  # comma-separated exact origins allowed cross-origin; empty: none
    cors_allow_credentials: bool = False
    trusted_proxies: str = ""  # addresses/networks whose X-Forwarded-For is believed

    def __post_init__(self) -> None:
        _check(0 <= self.port <= 65535, "port", "must be 0..65535")
        _check(bool(self.replica_id), "replica_id", "must not be empty")
        _check(self.replica_id.isprintable(), "replica_id", "must be printable")
        for name in (
            "history_size",
            "client_buffer_bytes",
            "listen_backlog",
            "max_rooms_per_stream",
            "idempotency_seconds",
            "max_user_length",
            "max_text_length",
            "max_body_bytes",
            "default_history_limit",
        ):
            _check(getattr(self, name) >= 1, name, "must be at least 1")
        _check(self.keepalive_seconds > 0, "keepalive_seconds", "must be positive")
        _check(self.retry_ms >= 0, "retry_ms", "must not be negative")
        _check(self.drain_retry_ms >= 0, "drain_retry_ms", "must not be negative")
        _check(self.graceful_timeout_seconds >= 0, "graceful_timeout_seconds", "must be >= 0")
        _check(self.send_timeout_seconds > 0, "send_timeout_seconds", "must be positive")
        _check(self.body_timeout_seconds > 0, "body_timeout_seconds", "must be positive")
        _check(self.presence_ttl_seconds > 0, "presence_ttl_seconds", "must be positive")
        _check(self.redis_min_replicas >= 0, "redis_min_replicas", "must not be negative")
        # Below the 2 s a POST waits for Redis, so a slow WAIT is told apart from a lost Redis.
        _check(1 <= self.redis_wait_ms <= 1500, "redis_wait_ms", "must be 1 to 1500")
        _check(self.max_streams >= 1, "max_streams", "must be at least 1")
        _check(self.max_streams_per_client >= 1, "max_streams_per_client", "must be at least 1")
        _check(self.post_rate_limit >= 0, "post_rate_limit", "must not be negative")
        _check(self.post_rate_window_seconds >= 1, "post_rate_window_seconds", "must be >= 1")
        _check("*" not in self.cors_origins, "cors_origins", "must list exact origins, not *")
        _check(self.auth in ("off", "post", "all"), "auth", "must be off, post or all")
        algorithms = [name.strip() for name in self.jwt_algorithms.split(",") if name.strip()]
        _check(bool(algorithms), "jwt_algorithms", "must name at least one algorithm")
        _check(
            all(name in _JWT_ALGORITHMS for name in algorithms),
            "jwt_algorithms",
            f"must be among {', '.join(sorted(_JWT_ALGORITHMS))} (never none)",
        )
        needs_keys = self.auth != "off" or bool(self.private_rooms.strip())
        _check(
            bool(self.jwt_key_file.strip()) or not needs_keys,
            "jwt_key_file",
            "must name a key file when SSE_CHAT_AUTH is not off or rooms are private",
        )
        try:
            parse_networks(self.trusted_proxies)
        except ValueError as bad:
            raise ConfigError(f"{ENV_PREFIX}TRUSTED_PROXIES: {bad}") from None

    @property
    def redis_password(self) -> str | None:
        """The password read from `redis_password_file` (a Docker secret), if one is named."""
        if not self.redis_password_file:
            return None
        try:
            with open(self.redis_password_file, encoding="utf-8") as secret:
                return secret.read().strip()
        except OSError as error:
            raise ConfigError(f"{ENV_PREFIX}REDIS_PASSWORD_FILE: cannot read it: {error}") from None

    @property
    def jwt_keys(self) -> list[VerificationKey]:
        """The keys read from `jwt_key_file` (comma-separated files, e.g. Docker secrets)."""
        keys = []
        for path in (part.strip() for part in self.jwt_key_file.split(",")):
            if not path:
                continue
            try:
                with open(path, "rb") as secret:
                    key = VerificationKey.from_file_content(secret.read())
            except OSError as error:
                message = f"{ENV_PREFIX}JWT_KEY_FILE: cannot read {path}: {error}"
                raise ConfigError(message) from None
            if key.secret is not None and len(key.secret) < MIN_SECRET_BYTES:
                raise ConfigError(
                    f"{ENV_PREFIX}JWT_KEY_FILE: the secret in {path} is {len(key.secret)} bytes;"
                    f" use at least {MIN_SECRET_BYTES} (e.g. `openssl rand -hex 32`)"
                )
            keys.append(key)
        return keys

    @property
    def trusted_networks(self) -> tuple[Network, ...]:
        """`trusted_proxies` parsed."""
        return parse_networks(self.trusted_proxies)

    @property
    def cors_origin_set(self) -> frozenset[str]:
        """`cors_origins` parsed (`*` is not accepted: origins are exact)."""
        return frozenset(o.strip().rstrip("/") for o in self.cors_origins.split(",") if o.strip())

    @property
    def limits(self) -> Limits:
        """Message field limits."""
        return Limits(max_user=self.max_user_length, max_text=self.max_text_length)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Read every `SSE_CHAT_*` variable that is set; defaults for the rest."""
        return cls().updated(
            {
                spec.name: environ[ENV_PREFIX + spec.name.upper()]
                for spec in fields(cls)
                if ENV_PREFIX + spec.name.upper() in environ
            }
        )

    def updated(self, raw: Mapping[str, object]) -> Settings:
        """A copy with the given fields replaced; strings are converted to each field's type."""
        types = {spec.name: spec.type for spec in fields(self)}
        changes: dict[str, Any] = {}
        for name, value in raw.items():
            if value is None:
                continue
            convert = _CONVERTERS[str(types[name])]
            try:
                changes[name] = convert(value) if isinstance(value, str) else value
            except ValueError:
                raise ConfigError(
                    f"{ENV_PREFIX}{name.upper()}: {value!r} is not a valid {types[name]}"
                ) from None
        return replace(self, **changes)


def raise_open_file_limit() -> None:
    """Raise this process's open-file limit to its hard limit (as nginx does), if allowed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def default_max_streams() -> int:
    """The default stream cap: the open-file limit less 1,000 (at least 100)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = soft if soft != resource.RLIM_INFINITY else 1_000_000
    return max(100, limit - 1000)


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(text)


_CONVERTERS: dict[str, Callable[[str], object]] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": _boolean,
}


def _check(ok: bool, name: str, rule: str) -> None:
    if not ok:
        raise ConfigError(f"{ENV_PREFIX}{name.upper()} {rule}")
