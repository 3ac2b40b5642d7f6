"""Templates: the most specific template wins, and code_span points exactly at the code."""

from __future__ import annotations

import pytest

from smsgw.errors import ConfigError
from smsgw.otp.templates import Templates
from smsgw.queue.message import Message
from smsgw.settings import DEFAULT_TEMPLATE, parse_settings

pytestmark = pytest.mark.timeout(30)

# Every level of specificity, each recognisable by its text.
ALL = {
    "login:fr-CA": "login:fr-CA {code}",
    "login:fr": "login:fr {code}",
    "login": "login {code}",
    "fr-CA": "fr-CA {code}",
    "fr": "fr {code}",
    "default": "default {code}",
}
ORDER = ["login:fr-CA", "login:fr", "login", "fr-CA", "fr", "default"]


@pytest.mark.parametrize("dropped", range(len(ORDER) + 1))
def test_choice_order_from_most_to_least_specific(dropped: int) -> None:
    """Remove the most specific templates one by one: the next one in order is chosen."""
    remaining = {key: ALL[key] for key in ORDER[dropped:]}
    chosen = Templates(remaining).choose("login", "fr-CA")
    expected = ALL[ORDER[dropped]] if dropped < len(ORDER) else DEFAULT_TEMPLATE
    assert chosen == expected


def test_without_locale_only_app_and_default_apply() -> None:
    templates = Templates(ALL)
    assert templates.choose("login", None) == "login {code}"
    assert templates.choose("signup", None) == "default {code}"
    assert Templates({"fr": "fr {code}"}).choose("login", None) == DEFAULT_TEMPLATE


def test_other_apps_templates_are_not_used() -> None:
    templates = Templates({"login:fr": "login:fr {code}", "login": "login {code}"})
    assert templates.choose("signup", "fr") == DEFAULT_TEMPLATE
    assert templates.choose("signup", "fr-CA") == DEFAULT_TEMPLATE


def test_language_falls_back_from_region_but_not_the_reverse() -> None:
    templates = Templates({"fr-CA": "fr-CA {code}"})
    assert templates.choose("login", "fr") == DEFAULT_TEMPLATE
    assert Templates({"fr": "fr {code}"}).choose("login", "fr-BE") == "fr {code}"


def test_built_in_template_renders_app_code_and_minutes() -> None:
    rendered = Templates({}).render(app="Acme", locale=None, code="042137", ttl_s=600)
    assert rendered.body == "Your Acme code is 042137. It expires in 10 minutes."
    start, end = rendered.code_span
    assert rendered.body[start:end] == "042137"


@pytest.mark.parametrize(("ttl_s", "minutes"), [(30, 1), (60, 1), (61, 2), (90, 2), (3600, 60)])
def test_minutes_round_up(ttl_s: int, minutes: int) -> None:
    rendered = Templates({"default": "{code} {minutes}"}).render(
        app="a", locale=None, code="1234", ttl_s=ttl_s
    )
    assert rendered.body == f"1234 {minutes}"


@pytest.mark.parametrize(
    ("template", "app", "code"),
    [
        ("{code} is your code", "x", "1234"),
        ("Your code: {code}", "x", "0000123456"),
        ("{app} {app} {code} {app}", "Acme", "5555"),
        # The app name holds the same digits as the code: the span must point at the code.
        ("{app} sent {code}", "123456", "123456"),
        # A literal "{code}" in the app name is not the placeholder.
        ("{app}: {code}", "{code}", "9876"),
        ("Kód {code}, platí {minutes} min ✓", "x", "1234"),
    ],
)
def test_code_span_points_at_the_code(template: str, app: str, code: str) -> None:
    rendered = Templates({"default": template}).render(app=app, locale=None, code=code, ttl_s=300)
    start, end = rendered.code_span
    assert rendered.body[start:end] == code
    assert end - start == len(code)
    expected = template.format(app=app, code=code, minutes=5)
    assert rendered.body == expected
    # Masking by the span removes the code from the text around it.
    masked = rendered.body[:start] + "*" * len(code) + rendered.body[end:]
    assert masked == template.format(app=app, code="*" * len(code), minutes=5)


def test_message_masks_body_with_the_rendered_span() -> None:
    rendered = Templates({}).render(app="987654", locale=None, code="987654", ttl_s=600)
    message = Message(
        to="+14155550100",
        country="US",
        body=rendered.body,
        client="c",
        code_span=rendered.code_span,
    )
    assert message.masked_body() == "Your 987654 code is ******. It expires in 10 minutes."


def test_a_template_the_settings_accept_renders_the_code_in_its_place() -> None:
    template = "Code\x00 {code}"
    try:
        settings = parse_settings({"otp": {"templates": {"default": template}}}, env={})
    except ConfigError:
        return  # refusing such a template at start-up is a fine answer too
    rendered = Templates(settings.otp.templates).render(
        app="x", locale=None, code="123456", ttl_s=60
    )
    assert rendered.body == "Code\x00 123456"
    start, end = rendered.code_span
    assert rendered.body[start:end] == "123456"
