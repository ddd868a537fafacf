from __future__ import annotations

import resource
import socket

import pytest

from sse_chat.config import ConfigError, Settings
from sse_chat.messages import Limits


def test_defaults_apply_when_no_variable_is_set() -> None:
    settings = Settings.from_env({"PATH": "/bin", "SSE_CHAT": "x", "OTHER_PORT": "1"})
    assert settings == Settings(replica_id=socket.gethostname())
    assert (settings.host, settings.port, settings.history_size) == ("127.0.0.1", 8000, 1000)
    assert (settings.keepalive_seconds, settings.retry_ms, settings.client_buffer_bytes) == (
        15.0,
        3000,
        256 * 1024,
    )
    assert settings.listen_backlog == 4096
    assert settings.limits == Limits(max_user=40, max_text=4000)


def test_every_variable_is_read_and_converted_to_its_field_type() -> None:
    settings = Settings.from_env(
        {
            "SSE_CHAT_HOST": "0.0.0.0",
            "SSE_CHAT_PORT": "9000",
            "SSE_CHAT_REPLICA_ID": "replica-7",
            "SSE_CHAT_HISTORY_SIZE": "20",
            "SSE_CHAT_KEEPALIVE_SECONDS": "0.5",
            "SSE_CHAT_RETRY_MS": "0",
            "SSE_CHAT_CLIENT_BUFFER_BYTES": "8192",
            "SSE_CHAT_LISTEN_BACKLOG": "128",
            "SSE_CHAT_MAX_USER_LENGTH": "10",
            "SSE_CHAT_MAX_TEXT_LENGTH": "100",
            "SSE_CHAT_MAX_BODY_BYTES": "2048",
            "SSE_CHAT_DEFAULT_HISTORY_LIMIT": "5",
            "SSE_CHAT_GRACEFUL_TIMEOUT_SECONDS": "2",
        }
    )
    assert settings == Settings(
        host="0.0.0.0",
        port=9000,
        replica_id="replica-7",
        history_size=20,
        keepalive_seconds=0.5,
        retry_ms=0,
        client_buffer_bytes=8192,
        listen_backlog=128,
        max_user_length=10,
        max_text_length=100,
        max_body_bytes=2048,
        default_history_limit=5,
        graceful_timeout_seconds=2.0,
    )
    assert type(settings.port) is int
    assert type(settings.graceful_timeout_seconds) is float
    assert settings.limits == Limits(max_user=10, max_text=100)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SSE_CHAT_PORT", "http"),
        ("SSE_CHAT_PORT", ""),
        ("SSE_CHAT_PORT", "80.5"),
        ("SSE_CHAT_HISTORY_SIZE", "many"),
        ("SSE_CHAT_KEEPALIVE_SECONDS", "soon"),
        ("SSE_CHAT_RETRY_MS", "1e3"),
    ],
)
def test_value_of_the_wrong_type_raises_config_error_naming_the_variable(
    name: str, value: str
) -> None:
    with pytest.raises(ConfigError, match=f"^{name}: {value!r} is not a valid"):
        Settings.from_env({name: value})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SSE_CHAT_PORT", "-1"),
        ("SSE_CHAT_PORT", "65536"),
        ("SSE_CHAT_REPLICA_ID", ""),
        ("SSE_CHAT_REPLICA_ID", "bad\nid"),
        ("SSE_CHAT_HISTORY_SIZE", "0"),
        ("SSE_CHAT_CLIENT_BUFFER_BYTES", "0"),
        ("SSE_CHAT_LISTEN_BACKLOG", "0"),
        ("SSE_CHAT_MAX_USER_LENGTH", "0"),
        ("SSE_CHAT_MAX_TEXT_LENGTH", "0"),
        ("SSE_CHAT_MAX_BODY_BYTES", "0"),
        ("SSE_CHAT_DEFAULT_HISTORY_LIMIT", "-5"),
        ("SSE_CHAT_KEEPALIVE_SECONDS", "0"),
        ("SSE_CHAT_KEEPALIVE_SECONDS", "nan"),
        ("SSE_CHAT_RETRY_MS", "-1"),
        ("SSE_CHAT_GRACEFUL_TIMEOUT_SECONDS", "-0.1"),
    ],
)
def test_value_out_of_range_raises_config_error_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"^{name} "):
        Settings.from_env({name: value})


@pytest.mark.parametrize("port", ["0", "65535"])
def test_port_bounds_are_accepted(port: str) -> None:
    assert Settings.from_env({"SSE_CHAT_PORT": port}).port == int(port)


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


def test_updated_keeps_fields_given_as_none_and_converts_strings() -> None:
    settings = Settings(replica_id="r1").updated({"port": "81", "host": None, "retry_ms": 5})
    assert (settings.port, settings.host, settings.retry_ms) == (81, "127.0.0.1", 5)


def test_the_stream_cap_defaults_to_the_open_file_limit_less_a_reserve() -> None:
    settings = Settings()
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert settings.max_streams == max(100, soft - 1000)


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"auth": "maybe"}, "SSE_CHAT_AUTH"),
        ({"auth": "post"}, "SSE_CHAT_JWT_KEY_FILE"),  # a policy that needs tokens needs keys
        ({"private_rooms": "team-*"}, "SSE_CHAT_JWT_KEY_FILE"),
        ({"jwt_algorithms": "none"}, "SSE_CHAT_JWT_ALGORITHMS"),
        ({"jwt_algorithms": "HS256,none"}, "SSE_CHAT_JWT_ALGORITHMS"),
        ({"jwt_algorithms": ""}, "SSE_CHAT_JWT_ALGORITHMS"),
    ],
)
def test_an_auth_setting_that_cannot_work_is_refused_naming_it(
    overrides: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        Settings(**overrides)  # type: ignore[arg-type]


def test_a_short_shared_secret_is_refused(tmp_path: pytest.TempPathFactory) -> None:
    key = tmp_path / "key"  # type: ignore[operator]
    key.write_bytes(b"short\n")
    with pytest.raises(ConfigError, match="at least 32"):
        Settings(auth="post", jwt_key_file=str(key)).jwt_keys  # noqa: B018
