"""Settings: defaults, the documented file shape, start-up errors that name the key, env."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from smsgw.errors import ConfigError
from smsgw.settings import (
    ConsoleProviderSettings,
    TwilioProviderSettings,
    load_settings,
    parse_settings,
)

pytestmark = pytest.mark.timeout(30)

FULL_TOML = """
[server]
host = "127.0.0.1"
port = 8080
public_url = "https://sms.example.com"   # how providers reach our webhooks

[otp]
secret = "env:SMSGW_OTP_SECRET"
length = 6
ttl_s = 600
max_attempts = 5

[redis]
url = "redis://127.0.0.1:6379/0"

[queue]
backend = "memory"
max_size = 100000

[audit]
backend = "sqlite"
path = "./data/audit.sqlite3"
table = "smsgw-audit"
endpoint_url = "http://127.0.0.1:8000"
region = "us-east-1"

[[clients]]
name = "login-app"
key = "env:LOGIN_APP_KEY"

[[providers]]
name = "twilio"
kind = "twilio"
rate = 5000
weight = 60
countries = ["*"]
base_url = "https://api.twilio.com"
account_sid = "AC0123456789abcdef0123456789abcdef"
auth_token = "env:TWILIO_AUTH_TOKEN"
from = "+15005550006"

[[providers]]
name = "console"
kind = "console"
path = "./data/sms.jsonl"
allow_beside_real = true   # beside twilio: only when asked for
"""

FULL_ENV = {
    "SMSGW_OTP_SECRET": "otp-secret-0123456789abcdef",
    "LOGIN_APP_KEY": "login-app-key-0123456789",
    "TWILIO_AUTH_TOKEN": "twilio-token-abcdef",
}

TWILIO = {
    "name": "twilio",
    "kind": "twilio",
    "account_sid": "AC1",
    "auth_token": "token",
    "from": "+15005550006",
}


def config_error(raw: dict[str, Any], env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_settings(raw, env={} if env is None else env)
    return info.value


# --- defaults and the documented file -----------------------------------------------------


def test_defaults_load_without_a_file() -> None:
    settings = load_settings(None, env={})
    assert settings.server.host == "127.0.0.1"
    assert settings.server.port == 8080
    assert settings.otp.length == 6
    assert settings.otp.ttl_s == 600
    assert settings.otp.max_attempts == 5
    assert settings.otp.max_sends == 5
    assert settings.otp.send_window_s == 600
    assert settings.otp.resend_cooldown_s == 30
    assert settings.otp.secret is None
    assert settings.redis.url is None
    assert settings.queue.backend == "auto"
    # Without redis.url every part stays in memory: the embedded defaults need no service.
    for backend in (settings.queue.backend, settings.limiter.backend, settings.otp.store):
        assert not settings.uses_redis(backend)
    assert settings.audit.backend == "sqlite"
    assert settings.clients == ()
    assert settings.providers == ()


def test_active_providers_default_to_console_on_stdout() -> None:
    settings = load_settings(None, env={})
    [console] = settings.active_providers
    assert isinstance(console, ConsoleProviderSettings)
    assert console.name == "console"
    assert console.path is None
    assert console.rate is None


def test_active_providers_are_the_configured_ones_when_present() -> None:
    settings = parse_settings({"providers": [TWILIO]}, env={})
    assert [p.name for p in settings.active_providers] == ["twilio"]


def test_full_file_in_the_documented_shape(tmp_path: Path) -> None:
    path = tmp_path / "smsgw.toml"
    path.write_text(FULL_TOML)

    settings = load_settings(path, env=FULL_ENV)

    assert settings.server.public_url == "https://sms.example.com"
    assert settings.otp.secret == FULL_ENV["SMSGW_OTP_SECRET"]
    assert settings.redis.url == "redis://127.0.0.1:6379/0"
    assert settings.queue.max_size == 100_000
    assert settings.audit.endpoint_url == "http://127.0.0.1:8000"
    assert settings.audit.table == "smsgw-audit"
    [client] = settings.clients
    assert client.name == "login-app"
    assert client.key == FULL_ENV["LOGIN_APP_KEY"]
    twilio, console = settings.providers
    assert isinstance(twilio, TwilioProviderSettings)
    assert twilio.auth_token == FULL_ENV["TWILIO_AUTH_TOKEN"]
    assert twilio.from_ == "+15005550006"
    assert twilio.rate == 5000
    assert twilio.weight == 60
    assert twilio.countries == ("*",)
    assert twilio.base_url == "https://api.twilio.com"
    assert isinstance(console, ConsoleProviderSettings)
    assert console.path == "./data/sms.jsonl"
    assert settings.active_providers == settings.providers


def test_settings_are_frozen() -> None:
    settings = load_settings(None, env={})
    with pytest.raises(AttributeError):
        settings.server.port = 1  # type: ignore[misc]


def test_unreadable_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_settings(missing, env={})
    assert info.value.key == str(missing)


def test_invalid_toml_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[server\nport = 1\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert info.value.key == str(path)
    assert "TOML" in info.value.problem


# --- start-up errors name their key -------------------------------------------------------


def test_wrong_type_names_the_key() -> None:
    error = config_error({"server": {"port": "x"}})
    assert error.key == "server.port"
    assert "int" in error.problem
    assert str(error).startswith("server.port: ")


def test_out_of_range_port_names_the_key() -> None:
    assert config_error({"server": {"port": 70000}}).key == "server.port"


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"nope": 1}, "nope"),
        ({"server": {"prot": 8080}}, "server.prot"),
        ({"providers": [{"name": "c", "kind": "console", "colour": "red"}]}, "providers[0].colour"),
        ({"providers": [TWILIO, {**TWILIO, "name": "t2", "auth": "x"}]}, "providers[1].auth"),
    ],
    ids=["top-level", "in-section", "in-provider", "in-second-provider"],
)
def test_unknown_key_is_an_error_naming_it(raw: dict[str, Any], key: str) -> None:
    error = config_error(raw)
    assert error.key == key
    assert "unknown" in error.problem


def test_missing_secret_names_the_key_not_the_value() -> None:
    error = config_error({"providers": [{**TWILIO, "auth_token": "env:NOPE"}]})
    assert error.key == "providers[0].auth_token"
    assert "NOPE" in error.problem


def test_empty_secret_counts_as_missing() -> None:
    error = config_error({"otp": {"secret": "env:EMPTY"}}, env={"EMPTY": ""})
    assert error.key == "otp.secret"


VONAGE = {"name": "v", "kind": "vonage", "api_key": "k", "api_secret": "s", "from": "smsgw"}


def test_vonage_signature_settings_are_checked() -> None:
    empty = config_error({"providers": [{**VONAGE, "signature_secret": "env:E"}]}, env={"E": " "})
    assert empty.key == "providers[0].signature_secret"
    method = config_error({"providers": [{**VONAGE, "signature_method": "crc32"}]})
    assert method.key == "providers[0].signature_method"


def test_secret_of_a_client_names_the_key() -> None:
    assert config_error({"clients": [{"name": "a", "key": "env:NOPE"}]}).key == "clients[0].key"


@pytest.mark.parametrize("field", ["account_sid", "auth_token", "name"])
def test_missing_required_provider_field(field: str) -> None:
    entry = {k: v for k, v in TWILIO.items() if k != field}
    error = config_error({"providers": [entry]})
    assert error.key == f"providers[0].{field}"
    assert "missing" in error.problem


def test_twilio_needs_a_sender() -> None:
    entry = {k: v for k, v in TWILIO.items() if k != "from"}
    assert config_error({"providers": [entry]}).key == "providers[0].from"


def test_unknown_provider_kind_names_the_key() -> None:
    error = config_error({"providers": [{"name": "x", "kind": "carrier-pigeon"}]})
    assert error.key == "providers[0].kind"


def test_bad_country_code_names_the_key() -> None:
    error = config_error({"providers": [{**TWILIO, "countries": ["US", "XX"]}]})
    assert error.key == "providers[0].countries"
    assert "XX" in error.problem


@pytest.mark.parametrize("weight", [0, -1, -0.5])
def test_weight_must_be_positive(weight: float) -> None:
    raw = {"providers": [{"name": "a", "kind": "console"}, {**TWILIO, "weight": weight}]}
    assert config_error(raw).key == "providers[1].weight"


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("Your code has no placeholder", "exactly once"),
        ("{code} or {code}", "exactly once"),
        ("{code} for {user}", "unknown placeholder {user}"),
        ("{code:>8}", "format spec"),
        ("{code!r}", "format spec"),
        ("{code", "bad template"),
    ],
    ids=["no-code", "two-codes", "unknown-placeholder", "format-spec", "conversion", "unclosed"],
)
def test_bad_templates_are_refused(template: str, problem: str) -> None:
    error = config_error({"otp": {"templates": {"default": template}}})
    assert error.key.startswith("otp")
    assert problem in error.problem
    assert "templates.default" in str(error)


def test_good_templates_are_accepted() -> None:
    templates = {
        "default": "{code} is your code",
        "fr": "Votre code {app} est {code}. Valable {minutes} minutes.",
        "login:de-AT": "{code}",
    }
    settings = parse_settings({"otp": {"templates": templates}}, env={})
    assert settings.otp.templates == templates


@pytest.mark.parametrize(
    "template",
    ["Sign in at https://{app} with {code}", "{app}.example.com: {code}", "{code} @{app}"],
    ids=["scheme", "domain", "mention"],
)
def test_templates_that_turn_the_app_name_into_a_link_are_refused(template: str) -> None:
    # {app} comes from the client's request: glued to "://", ".x" or "@" it makes a link.
    error = config_error({"otp": {"templates": {"default": template}}})
    assert error.key == "otp.templates.default"
    assert "{app}" in error.problem


def test_templates_may_put_punctuation_and_their_own_domain_around_the_app() -> None:
    # "@domain #code" is the origin-bound format browsers autofill (WebOTP): the operator's
    # own text, not the client's, so it stays allowed.
    templates = {"default": "{app}: {code}. Don't share it.\n\n@login.example.com #{code}"}
    error = config_error({"otp": {"templates": templates}})
    assert "exactly once" in error.problem  # two {code}: refused for that reason only
    templates = {"default": "{app}: {code} (from {app}.)\n\n@login.example.com"}
    assert parse_settings({"otp": {"templates": templates}}, env={}).otp.templates == templates


@pytest.mark.parametrize("name", ["evil.com", "a/b", "x:y", "me@evil", "Call 18005550199", ""])
def test_an_app_name_a_phone_would_linkify_is_refused(name: str) -> None:
    assert config_error({"otp": {"app_name": name}}).key == "otp.app_name"


def test_bad_template_names_the_exact_key() -> None:
    error = config_error({"otp": {"templates": {"login:fr": "no code here"}}})
    assert error.key == "otp.templates.login:fr"


def test_redis_queue_without_redis_url_names_the_key() -> None:
    error = config_error({"queue": {"backend": "redis"}})
    assert error.key == "queue.backend"


REDIS = {"url": "redis://127.0.0.1:6379/0"}


@pytest.mark.parametrize("queue", [{}, {"backend": "redis"}])
def test_a_redis_queue_without_a_key_to_seal_messages_is_refused(queue: dict[str, str]) -> None:
    # A key made up at start-up would leave the queue unreadable after a restart and to
    # every other replica: messages lost.
    error = config_error({"redis": REDIS, "queue": queue})
    assert error.key == "queue.secret"
    assert "otp.secret" in error.problem


@pytest.mark.parametrize(
    "sections",
    [
        {"queue": {"secret": "q" * 32}},
        {"otp": {"secret": "otp-secret-0123456789"}},  # the queue key is derived from it
        {"queue": {"backend": "memory"}},  # messages never leave the process
    ],
)
def test_a_redis_queue_starts_with_either_secret(sections: dict[str, Any]) -> None:
    parse_settings({"redis": REDIS, **sections}, env={})


def test_queue_secrets_come_from_the_environment_and_are_checked() -> None:
    settings = parse_settings(
        {"queue": {"secret": "env:Q", "previous_secret": "env:QP"}},
        env={"Q": "q" * 32, "QP": "p" * 16},
    )
    assert (settings.queue.secret, settings.queue.previous_secret) == ("q" * 32, "p" * 16)
    assert config_error({"queue": {"secret": "q" * 31}}).key == "queue.secret"
    # The previous one may be a former otp.secret (the key was derived from it), >= 16.
    assert config_error({"queue": {"previous_secret": "p" * 15}}).key == "queue.previous_secret"
    overridden = parse_settings({}, env={"SMSGW_QUEUE_SECRET": "o" * 40})
    assert overridden.queue.secret == "o" * 40


@pytest.mark.parametrize("length", [0, 3, 11, 100])
def test_otp_length_outside_4_to_10(length: int) -> None:
    error = config_error({"otp": {"length": length}})
    assert error.key == "otp.length"


@pytest.mark.parametrize("length", [4, 10])
def test_otp_length_bounds_are_inclusive(length: int) -> None:
    assert parse_settings({"otp": {"length": length}}, env={}).otp.length == length


def test_duplicate_provider_names() -> None:
    raw = {"providers": [TWILIO, {"name": "twilio", "kind": "console"}]}
    error = config_error(raw)
    assert error.key == "providers"
    assert "twilio" in error.problem


CONSOLE = {"name": "console", "kind": "console", "path": "./data/sms.jsonl"}


@pytest.mark.parametrize("real", [TWILIO, VONAGE], ids=["twilio", "vonage"])
def test_console_beside_a_real_provider_is_refused(real: dict[str, Any]) -> None:
    # Routed like any provider, the console would take a share of live traffic (and every
    # failover) and write the codes to a file.
    error = config_error({"providers": [real, CONSOLE]})
    assert error.key == "providers[1].allow_beside_real"
    assert "console" in error.problem


def test_console_beside_a_real_provider_is_allowed_when_asked_for() -> None:
    settings = parse_settings(
        {"providers": [TWILIO, {**CONSOLE, "allow_beside_real": True}]}, env={}
    )
    assert [p.name for p in settings.providers] == ["twilio", "console"]


def test_console_alone_needs_no_flag() -> None:
    settings = parse_settings({"providers": [CONSOLE, {**CONSOLE, "name": "c2"}]}, env={})
    assert [p.name for p in settings.active_providers] == ["console", "c2"]


def test_receipt_secrets_are_checked_and_may_come_from_the_environment() -> None:
    short = config_error({"server": {"receipt_secret": "short"}})
    assert short.key == "server.receipt_secret"
    alone = config_error({"server": {"receipt_previous_secret": "old-receipt-secret-0123"}})
    assert alone.key == "server.receipt_previous_secret"
    settings = parse_settings(
        {"server": {"receipt_secret": "env:RECEIPTS"}}, env={"RECEIPTS": "r" * 16}
    )
    assert settings.server.receipt_secret == "r" * 16
    overridden = parse_settings({}, env={"SMSGW_SERVER_RECEIPT_SECRET": "s" * 16})
    assert overridden.server.receipt_secret == "s" * 16


def test_duplicate_client_names() -> None:
    raw = {"clients": [{"name": "a", "key": "k" * 16}, {"name": "a", "key": "j" * 16}]}
    assert config_error(raw).key == "clients"


@pytest.mark.parametrize(
    "client",
    [
        {"name": "a", "key": "k" * 16, "key_sha256": "0" * 64},
        {"name": "a"},
    ],
    ids=["both", "neither"],
)
def test_client_needs_exactly_one_of_key_and_hash(client: dict[str, str]) -> None:
    raw = {"clients": [{"name": "ok", "key_sha256": "a" * 64}, client]}
    error = config_error(raw)
    assert error.key == "clients[1].key"
    assert "exactly one" in error.problem


def test_client_with_hash_only_is_fine() -> None:
    settings = parse_settings({"clients": [{"name": "a", "key_sha256": "ab" * 32}]}, env={})
    assert settings.clients[0].key is None


# --- environment overrides ----------------------------------------------------------------


def test_env_override_converts_to_the_setting_type() -> None:
    settings = parse_settings({}, env={"SMSGW_SERVER_PORT": "9000"})
    assert settings.server.port == 9000
    assert isinstance(settings.server.port, int)


def test_env_override_wins_over_the_file(tmp_path: Path) -> None:
    path = tmp_path / "smsgw.toml"
    path.write_text(FULL_TOML)
    settings = load_settings(path, env={**FULL_ENV, "SMSGW_SERVER_PORT": "9001"})
    assert settings.server.port == 9001
    assert settings.server.public_url == "https://sms.example.com"  # the rest stays


def test_env_override_of_redis_url() -> None:
    env = {"SMSGW_REDIS_URL": "redis://10.0.0.5:6380/2", "SMSGW_OTP_SECRET": "o" * 16}
    settings = parse_settings({}, env=env)
    assert settings.redis.url == "redis://10.0.0.5:6380/2"


def test_env_override_of_a_key_with_underscores() -> None:
    settings = parse_settings({}, env={"SMSGW_OTP_TTL_S": "120"})
    assert settings.otp.ttl_s == 120


def test_every_single_table_section_takes_env_overrides() -> None:
    # The sections are read from Settings, so the later ones are not forgotten.
    env = {
        "SMSGW_BREAKER_COOLDOWN_S": "5",
        "SMSGW_SCALING_MAX_WORKERS": "8",
        "SMSGW_ABUSE_DAILY_SENDS_PER_NUMBER": "3",
    }
    settings = parse_settings({}, env=env)
    assert settings.breaker.cooldown_s == 5.0
    assert settings.scaling.max_workers == 8
    assert settings.abuse.daily_sends_per_number == 3


def test_unknown_env_override_names_the_variable() -> None:
    error = config_error({}, env={"SMSGW_SERVER_NOPE": "1"})
    assert error.key == "SMSGW_SERVER_NOPE"


def test_env_override_with_wrong_type_names_the_variable() -> None:
    error = config_error({}, env={"SMSGW_SERVER_PORT": "eighty"})
    assert error.key == "SMSGW_SERVER_PORT"


def test_env_override_is_validated_like_the_file() -> None:
    error = config_error({}, env={"SMSGW_OTP_LENGTH": "12"})
    assert error.key == "otp.length"


def test_env_override_into_a_malformed_section_is_a_config_error() -> None:
    error = config_error({"server": 5}, env={"SMSGW_SERVER_PORT": "1"})
    assert error.key.startswith("server")


def test_malformed_section_without_override_names_it() -> None:
    assert config_error({"server": 5}).key == "server"
    assert config_error({"providers": [1]}).key == "providers[0]"


def test_unrelated_smsgw_variables_are_ignored() -> None:
    settings = parse_settings({}, env={"SMSGW_TWILIO_TOKEN": "x", "SMSGW_CONFIG": "/nope.toml"})
    assert settings == load_settings(None, env={})


def test_env_overrides_do_not_write_into_the_callers_mapping() -> None:
    raw: dict[str, Any] = {"server": {"port": 8080}}
    parse_settings(raw, env={"SMSGW_SERVER_PORT": "9000"})
    assert raw == {"server": {"port": 8080}}


def test_provider_settings_convert_with_their_kind_tag() -> None:
    twilio = msgspec.convert(TWILIO, TwilioProviderSettings)
    assert twilio.from_ == "+15005550006"
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({**TWILIO, "kind": "console"}, TwilioProviderSettings)


def test_the_example_config_documents_every_setting_and_loads() -> None:
    """config/smsgw.example.toml is the operators' reference: it must load, and name every key
    of every single-table section so nothing is undocumented."""
    example = Path(__file__).resolve().parent.parent / "config" / "smsgw.example.toml"
    env = {
        "SMSGW_OTP_SECRET": "0123456789abcdef0123",
        "LOGIN_APP_KEY": "abcdefghijklmnopqrstu",
        "TWILIO_AUTH_TOKEN": "token",
        "SMSGW_RECEIPT_SECRET": "receipt-secret-0123456789",
    }
    settings = load_settings(example, env=env)
    # No console beside Twilio: it would take live traffic and write the codes to a file.
    assert {p.name for p in settings.providers} == {"twilio"}
    text = example.read_text()
    for section in ("server", "otp", "redis", "limiter", "queue", "audit", "dispatch"):
        struct = type(getattr(settings, section))
        for field in msgspec.structs.fields(struct):
            documented = (
                f"\n{field.encode_name} =",
                f"# {field.encode_name} =",
                f"[{section}.{field.encode_name}]",
            )
            assert any(form in text for form in documented), (
                f"{section}.{field.encode_name} is not documented in the example"
            )


def test_no_secret_shows_in_the_repr_of_the_settings() -> None:
    secrets = {
        "otp": "otp-secret-0123456789",
        "prev": "previous-otp-secret-0123",
        "key": "client-key-0123456789",
        "old": "old-client-key-0123456789",
        "redis": "redis-password-42",
        "aws": "aws-secret-access-key-1",
        "twilio": "twilio-token-0123456789",
        "vonage": "vonage-secret-0123456789",
        "vonage_sig": "vonage-signature-secret-0123",
        "queue": "queue-secret-0123456789abcdef-0123456789",
        "queue_prev": "previous-queue-secret-0123456789abcdef",
        "receipt": "receipt-secret-0123456789",
        "old_receipt": "old-receipt-secret-0123456789",
    }
    settings = parse_settings(
        {
            "server": {
                "receipt_secret": secrets["receipt"],
                "receipt_previous_secret": secrets["old_receipt"],
            },
            "otp": {"secret": secrets["otp"], "previous_secret": secrets["prev"]},
            "redis": {"url": f"redis://:{secrets['redis']}@127.0.0.1:6379/0"},
            "queue": {"secret": secrets["queue"], "previous_secret": secrets["queue_prev"]},
            "audit": {"access_key_id": "AKIA", "secret_access_key": secrets["aws"]},
            "clients": [{"name": "a", "key": secrets["key"], "previous_key": secrets["old"]}],
            "providers": [
                {
                    "name": "twilio",
                    "kind": "twilio",
                    "account_sid": "AC1",
                    "auth_token": secrets["twilio"],
                    "from": "+15005550006",
                },
                {
                    "name": "vonage",
                    "kind": "vonage",
                    "api_key": "k",
                    "api_secret": secrets["vonage"],
                    "signature_secret": secrets["vonage_sig"],
                    "from": "smsgw",
                },
            ],
        },
        env={},
    )
    text = repr(settings)
    for secret in secrets.values():
        assert secret not in text


def test_kubernetes_service_links_are_not_taken_for_settings() -> None:
    env = {
        "SMSGW_REDIS_SERVICE_HOST": "10.0.0.7",
        "SMSGW_REDIS_SERVICE_PORT": "6379",
        "SMSGW_REDIS_SERVICE_PORT_REDIS": "6379",
        "SMSGW_REDIS_PORT_6379_TCP_ADDR": "10.0.0.7",
        "SMSGW_REDIS_PORT_6379_TCP": "tcp://10.0.0.7:6379",
        "SMSGW_SERVER_PORT": "9090",  # a real setting still applies
    }
    assert parse_settings({}, env=env).server.port == 9090
    with pytest.raises(ConfigError):
        parse_settings({}, env={"SMSGW_REDIS_HOSTNAME": "x"})  # a typo still fails


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"server": {"drain_timeout_s": float("nan")}}, "server.drain_timeout_s"),
        ({"dispatch": {"max_age_s": float("nan")}}, "dispatch.max_age_s"),
        ({"audit": {"flush_interval_s": float("nan")}}, "audit.flush_interval_s"),
        ({"abuse": {"spike_factor": float("nan")}}, "abuse.spike_factor"),
        ({"providers": [{**TWILIO, "rate": float("nan")}]}, "providers[0].rate"),
        ({"providers": [{**TWILIO, "timeout_s": float("nan")}]}, "providers[0].timeout_s"),
    ],
)
def test_nan_is_refused_where_a_bound_applies(raw: dict[str, Any], key: str) -> None:
    # TOML has `nan`; no comparison with it is true, so a hand-written `x <= 0` let it pass
    # (a NaN rate or timeout then broke the limiter or the sender at run time).
    assert config_error(raw).key == key


@pytest.mark.parametrize(
    ("raw", "key", "problem"),
    [
        ({"server": {"port": -1}}, "server.port", ">= 0"),
        ({"otp": {"length": 11}}, "otp.length", "<= 10"),
        ({"limiter": {"pace": 0.4}}, "limiter.pace", ">= 0.5"),
        ({"queue": {"secret": "q" * 31}}, "queue.secret", "length >= 32"),
        ({"clients": [{"name": "a", "key": "k" * 15}]}, "clients[0].key", "length >= 16"),
        (
            {"providers": [{**TWILIO, "connect_timeout_s": 0}]},
            "providers[0].connect_timeout_s",
            "> 0",
        ),
    ],
)
def test_bounds_name_the_key_and_the_bound(raw: dict[str, Any], key: str, problem: str) -> None:
    error = config_error(raw)
    assert (error.key, problem in error.problem) == (key, True), error


SENTINELS = ["10.0.0.1:26379", "sentinel-2.internal:26379", "[fd00::3]:26379"]


def test_sentinels_configure_redis_without_a_url() -> None:
    settings = parse_settings(
        {
            "redis": {"sentinels": SENTINELS, "sentinel_password": "env:SP"},
            "otp": {"secret": "otp-secret-0123456789"},
        },
        env={"SP": "sentinel-pass"},
    )
    assert settings.redis.configured
    assert settings.redis.sentinel_master == "smsgw"
    assert settings.redis.sentinel_password == "sentinel-pass"
    assert settings.uses_redis(settings.queue.backend)
    # A 202 waits for one replica by default wherever there are replicas to wait for.
    assert settings.redis.replica_acks == 1


@pytest.mark.parametrize(
    ("redis", "acks"),
    [
        ({}, 0),
        (REDIS, 0),
        ({**REDIS, "min_replicas_ack": 2}, 2),
        ({"sentinels": SENTINELS, "min_replicas_ack": 0}, 0),
    ],
)
def test_replica_acks_default_and_override(redis: dict[str, Any], acks: int) -> None:
    settings = parse_settings({"redis": redis, "queue": {"backend": "memory"}}, env={})
    assert settings.redis.replica_acks == acks


@pytest.mark.parametrize(
    ("redis", "key"),
    [
        ({"sentinels": ["no-port"]}, "redis.sentinels[0]"),
        ({"sentinels": ["host:port"]}, "redis.sentinels[0]"),
        ({"sentinels": SENTINELS, "sentinel_master": ""}, "redis.sentinel_master"),
        ({"min_replicas_ack": -1, **REDIS}, "redis.min_replicas_ack"),
        ({"replica_ack_timeout_s": 0, **REDIS}, "redis.replica_ack_timeout_s"),
        ({"url": "http://127.0.0.1:6379"}, "redis.url"),
        ({"url": "unix:///run/redis.sock", "sentinels": SENTINELS}, "redis.url"),
    ],
)
def test_bad_redis_settings_name_the_key(redis: dict[str, Any], key: str) -> None:
    assert config_error({"redis": redis, "queue": {"backend": "memory"}}).key == key


def test_the_sentinel_password_is_kept_out_of_the_settings_repr() -> None:
    settings = parse_settings(
        {
            "redis": {"sentinels": SENTINELS, "sentinel_password": "sentinel-pass"},
            "queue": {"backend": "memory"},
        },
        env={},
    )
    assert "sentinel-pass" not in repr(settings)
