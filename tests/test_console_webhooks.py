"""The user console's quota alerts in a real browser (Debian's Chromium driven by Playwright, every
page watched as in test_console.py), against a whole local stack whose usage-service may send to a
local webhook receiver (QUOTA_WEBHOOK_ALLOWED_HOSTS names its host and port, nothing else).

Users have 250 tokens a month and the test LLM is set to 118 tokens a chat (18 of prompt, 100 of
output): the first chat uses 47 %, the second 94 %, past 80 % and short of 100 %.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from infergate_devstack.nginx import UNLIMITED_EDGE
from infergate_devstack.stack import Stack
from playwright.sync_api import Page, expect

from tests.fake_ollama_fixtures import FakeOllamaProcess
from tests.helpers import local_stack
from tests.test_console import (
    PHONE,
    OpenPage,
    PageWatch,
    assert_fits_and_is_accessible,
    chat,
    meter,
    register,
    sign_in,
)
from tests.test_console import browser as browser
from tests.test_console import llm as llm
from tests.test_console import pages as pages
from tests.test_console import playwright as playwright
from tests.webhook_receiver import (
    Received,
    WebhookReceiver,
    delivery_env,
    expected_signature,
)
from tests.webhook_receiver import receiver as receiver

MONTHLY_TOKENS = 250
PROMPT_TOKENS, COMPLETION_TOKENS = 18, 100
REFUSED_MESSAGE = (
    "The webhook URL's host resolves to a loopback address (127.0.0.1); webhooks are only sent "
    "to public addresses. (request id "
)


@pytest.fixture(scope="module")
def alerts_stack(
    tmp_path_factory: pytest.TempPathFactory,
    fake_ollama: FakeOllamaProcess,
    receiver: WebhookReceiver,
) -> Iterator[Stack]:
    env = {
        **UNLIMITED_EDGE,
        "AUTH_FAILURE_RATE_LIMIT": "100000",
        "REGISTRATION_RATE_LIMIT": "1000",
        "FREE_RATE_LIMIT": "1000",
        "FREE_MONTHLY_TOKENS": str(MONTHLY_TOKENS),
        "MAX_OUTPUT_TOKENS": str(COMPLETION_TOKENS),
        "PROMPT_TOKEN_OVERHEAD": "16",
        **delivery_env(receiver),
    }
    with local_stack(tmp_path_factory.mktemp("console-webhooks"), fake_ollama.url, env) as stack:
        yield stack


@pytest.fixture
def costly_chats(llm: Callable[..., None]) -> None:
    llm(prompt_tokens=PROMPT_TOKENS, completion_tokens=COMPLETION_TOKENS)


# -- the API and the receiver -------------------------------------------------------------------


def webhook_of(stack: Stack, key: str) -> httpx.Response:
    return httpx.get(f"{stack.public_url}/v1/webhook", headers={"x-api-key": key})


def set_webhook(stack: Stack, key: str, url: str) -> str:
    """Set `url` as the webhook of `key`'s user; its signing secret."""
    response = httpx.put(
        f"{stack.public_url}/v1/webhook", json={"url": url}, headers={"x-api-key": key}
    )
    assert response.status_code == 200, response.text
    return str(response.json()["secret"])


def received_at(receiver: WebhookReceiver, path: str, *, timeout_s: float = 15) -> list[Received]:
    """What the receiver answered at `path`, once it has answered something there."""
    deadline = time.monotonic() + timeout_s
    while not (got := [r for r in receiver.requests() if r.path == path]):
        assert time.monotonic() < deadline, f"nothing arrived at {path}: {receiver.requests()}"
        time.sleep(0.05)  # the receiver's own thread records what arrives
    return got


def signed_by(received: Received, secret: str) -> bool:
    return received.headers["webhook-signature"] == expected_signature(
        secret,
        msg_id=received.headers["webhook-id"],
        timestamp=received.headers["webhook-timestamp"],
        body=received.body,
    )


# -- the page -----------------------------------------------------------------------------------


def open_alerts(page: Page, watch: PageWatch, *, has_webhook: bool) -> None:
    """Open the quota alerts section from the keyboard; it loads the webhook (404: none yet)."""
    if not has_webhook:
        watch.provoke(404, "/v1/webhook")
    page.locator("#alerts-details > summary").focus()
    page.keyboard.press("Enter")
    shown = "#webhook-current" if has_webhook else "#webhook-none"
    expect(page.locator(shown)).to_be_visible()
    page.wait_for_load_state("networkidle")


def chat_in_playground(page: Page) -> float:
    """Send one prompt; the tokens used this month once the page has refreshed its figures."""
    used_before, _ = meter(page)
    page.get_by_label("Prompt").fill("hi")
    page.get_by_role("button", name="Send", exact=True).click()
    expect(page.locator("#chat-tokens")).to_contain_text("Tokens used:")
    page.wait_for_function(
        "before => document.getElementById('usage-meter').value > before", arg=used_before
    )
    page.wait_for_load_state("networkidle")
    return meter(page)[0]


def reload_alerts_until_delivered(page: Page, threshold: int, *, attempts: int = 50) -> None:
    """Press "Reload alerts" until the log shows the `threshold` event delivered (each press
    waits for the page's answer)."""
    row = page.locator(f'#deliveries-body tr[data-threshold="{threshold}"]')
    for _ in range(attempts):
        if row.count() and row.get_attribute("data-status") == "delivered":
            return
        with page.expect_response(lambda r: r.url.endswith("/v1/webhook/deliveries?limit=20")):
            page.get_by_role("button", name="Reload alerts").click()
    raise AssertionError(f"the log does not show the {threshold} % alert delivered")


@pytest.fixture(scope="module")
def section_shots(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Page, str], Path]:
    """A screenshot of the quota alerts section (docs/console-quota-alerts.png is a copy)."""
    directory = tmp_path_factory.mktemp("console-screenshots")

    def shot(page: Page, name: str) -> Path:
        path = directory / f"console-{name}.png"
        page.mouse.move(0, 0)  # no hover on the button pressed last
        page.locator("#alerts").screenshot(path=str(path))
        return path

    return shot


# -- the tests ----------------------------------------------------------------------------------


@pytest.mark.usefixtures("costly_chats")
def test_a_webhook_set_in_the_console_gets_the_80_percent_alert_and_the_log_shows_it(
    alerts_stack: Stack,
    receiver: WebhookReceiver,
    pages: OpenPage,
    section_shots: Callable[[Page, str], Path],
) -> None:
    _, key = register(alerts_stack)
    page, watch = pages(alerts_stack.public_url)
    sign_in(page, key)
    open_alerts(page, watch, has_webhook=False)
    path = f"/console-{uuid.uuid4().hex[:12]}"
    url = f"{receiver.url}{path}"

    page.get_by_label("Webhook URL").fill(url)
    page.get_by_label("Alert at").fill("100, 80")
    page.get_by_role("button", name="Save webhook").click()
    shown = page.locator("#webhook-secret-value")
    expect(shown).to_be_focused()
    secret = shown.input_value()
    assert secret.startswith("whsec_")
    expect(page.locator("#webhook-secret .warning")).to_contain_text("shown only once")
    page.get_by_role("button", name="Copy secret").click()
    expect(page.locator("#webhook-secret [role=status]")).to_have_text("Copied to the clipboard.")
    assert page.evaluate("navigator.clipboard.readText()") == secret
    expect(page.locator("#webhook-url")).to_have_text(url)
    expect(page.locator("#webhook-thresholds")).to_have_text("80 %, 100 % of your monthly quota")
    expect(page.locator("#deliveries-empty")).to_be_visible()
    assert webhook_of(alerts_stack, key).json()["thresholds"] == [80, 100]

    page.reload()  # once: the secret is not shown again
    expect(page.locator("#signed-in")).to_be_visible()
    open_alerts(page, watch, has_webhook=True)
    expect(page.locator("#webhook-url")).to_have_text(url)
    assert secret not in page.content()
    assert page.locator("#webhook-secret").is_hidden()

    chats = 0
    while chat_in_playground(page) < 0.8 * MONTHLY_TOKENS:
        chats += 1
        assert chats < 3, "two chats should have passed 80 %"
    assert meter(page) == (2 * (PROMPT_TOKENS + COMPLETION_TOKENS), MONTHLY_TOKENS)
    [arrived] = received_at(receiver, path)
    reload_alerts_until_delivered(page, 80)

    row = page.locator("#deliveries-body tr")
    expect(row).to_have_count(1)  # 80 % only: 94 % is short of 100 %
    month, time_cell = re.compile(r"^\d{4}-\d{2}$"), re.compile(r"^\d{4}-\d{2}-\d{2} [\d:]{8} UTC$")
    expect(row.locator("td")).to_have_text(
        [time_cell, arrived.headers["webhook-id"], month, "80 %", "Delivered", "1", "HTTP 204"]
    )
    assert arrived.status == 204
    assert arrived.event["data"]["threshold"] == 80
    assert signed_by(arrived, secret)
    assert [r.path for r in receiver.requests()].count(path) == 1  # that event, and only it
    section_shots(page, "quota-alerts")

    page.get_by_role("button", name="Remove webhook…").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Remove your webhook?")
    dialog.get_by_role("button", name="Remove webhook").click()
    expect(page.locator("#alerts-status")).to_have_text("Webhook removed: no more alerts are sent.")
    expect(page.locator("#webhook-none")).to_be_visible()
    for emptied in ("#webhook-current", "#webhook-secret", "#deliveries"):
        expect(page.locator(emptied)).to_be_hidden()
    expect(page.locator("#deliveries-body tr")).to_have_count(0)
    expect(page.get_by_label("Webhook URL")).to_have_value("")
    expect(page.get_by_label("Webhook URL")).to_be_focused()
    assert webhook_of(alerts_stack, key).status_code == 404
    page.wait_for_load_state("networkidle")
    watch.assert_clean()


def test_a_private_url_without_the_allowance_is_refused_in_words(
    alerts_stack: Stack, receiver: WebhookReceiver, pages: OpenPage
) -> None:
    _, key = register(alerts_stack)
    page, watch = pages(alerts_stack.public_url)
    sign_in(page, key)
    open_alerts(page, watch, has_webhook=False)
    url_field, thresholds = page.get_by_label("Webhook URL"), page.get_by_label("Alert at")
    error = page.locator("#webhook-form-error")

    url_field.fill(f"{receiver.url}/mine")
    thresholds.fill("80, 120")  # checked in the page: nothing is sent
    page.get_by_role("button", name="Save webhook").click()
    expect(error).to_have_text(
        "Thresholds are whole numbers from 1 to 100 (at most 10), separated by commas: "
        "for example 80, 100."
    )
    expect(thresholds).to_be_focused()
    expect(thresholds).to_have_attribute("aria-invalid", "true")

    # Allowed: the receiver's host and port. Another port of the same host is refused.
    thresholds.fill("80, 100")
    url_field.fill(f"http://127.0.0.1:{receiver.port + 1}/hook")
    watch.provoke(400, "/v1/webhook")
    page.get_by_role("button", name="Save webhook").click()
    expect(error).to_contain_text(REFUSED_MESSAGE)
    expect(url_field).to_be_focused()
    expect(url_field).to_have_attribute("aria-invalid", "true")
    expect(thresholds).not_to_have_attribute("aria-invalid", "true")
    expect(page.locator("#webhook-none")).to_be_visible()
    expect(page.locator("#webhook-secret")).to_be_hidden()
    assert webhook_of(alerts_stack, key).status_code == 404
    page.wait_for_load_state("networkidle")
    watch.assert_clean()


@pytest.mark.usefixtures("costly_chats")
def test_rotating_the_secret_asks_first_and_alerts_are_signed_with_the_new_one(
    alerts_stack: Stack,
    receiver: WebhookReceiver,
    pages: OpenPage,
    section_shots: Callable[[Page, str], Path],
) -> None:
    _, key = register(alerts_stack)
    path = f"/phone-{uuid.uuid4().hex[:12]}"
    first_secret = set_webhook(alerts_stack, key, f"{receiver.url}{path}")
    page, watch = pages(alerts_stack.public_url, viewport=PHONE)
    sign_in(page, key)
    open_alerts(page, watch, has_webhook=True)
    assert_fits_and_is_accessible(page)
    dialog = page.get_by_role("dialog")
    rotate = page.get_by_role("button", name="Rotate secret…")

    rotate.click()
    expect(dialog).to_contain_text("Rotate the signing secret?")
    expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(rotate).to_be_focused()
    expect(page.locator("#webhook-secret")).to_be_hidden()  # Escape rotated nothing

    rotate.click()
    dialog.get_by_role("button", name="Rotate secret").click()
    shown = page.locator("#webhook-secret-value")
    expect(shown).to_be_focused()
    new_secret = shown.input_value()
    assert new_secret.startswith("whsec_")
    assert new_secret != first_secret
    expect(page.locator("#webhook-secret h3")).to_have_text("Your new signing secret")
    page.wait_for_load_state("networkidle")
    assert_fits_and_is_accessible(page)
    section_shots(page, "quota-alerts-phone")

    for _ in range(2):  # past 80 %
        assert chat(alerts_stack, key).status_code == 200
    [arrived] = received_at(receiver, path)
    assert signed_by(arrived, new_secret)
    assert not signed_by(arrived, first_secret)
    watch.assert_clean()
