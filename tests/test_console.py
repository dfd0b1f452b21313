"""The web console in a real browser: Debian's Chromium driven by Playwright, against a whole local
stack (the deterministic test LLM) through nginx: the user console on the public listener, the
operator console on the operator listener (ADMIN_TOKEN is set, so nginx renders it).

Every page is watched: no console error, no uncaught exception, no failed request, no response of
400 or more that the test did not provoke, and no request to another origin. Screenshots go to the
pytest temporary directory (the README's are copies of them in docs/console-*.png).
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from infergate_devstack.install import find_program
from infergate_devstack.nginx import UNLIMITED_EDGE
from infergate_devstack.stack import Stack
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Page,
    Playwright,
    Request,
    Response,
    Route,
    ViewportSize,
    expect,
    sync_playwright,
)

from tests.fake_ollama_fixtures import FakeOllamaProcess
from tests.helpers import ADMIN_TOKEN, local_stack

FREE_TOKENS = 1000
PRO_TOKENS = 50_000
REQUESTS_PER_WINDOW = 500
ENV = {
    **UNLIMITED_EDGE,
    "ADMIN_TOKEN": ADMIN_TOKEN,
    "AUTH_FAILURE_RATE_LIMIT": "100000",
    "REGISTRATION_RATE_LIMIT": "1000",
    "FREE_RATE_LIMIT": str(REQUESTS_PER_WINDOW),
    "FREE_MONTHLY_TOKENS": str(FREE_TOKENS),
    "PRO_MONTHLY_TOKENS": str(PRO_TOKENS),
    "MAX_OUTPUT_TOKENS": "100",
    "PROMPT_TOKEN_OVERHEAD": "16",
}
# What the test LLM reports for every chat unless a test changes it.
PROMPT_TOKENS = 7
COMPLETION_TOKENS = 5
DESKTOP: ViewportSize = {"width": 1280, "height": 900}
PHONE: ViewportSize = {"width": 375, "height": 812}
LOAD_ERROR = "Failed to load resource: the server responded with a status of "


# -- the stack, the LLM, the browser ------------------------------------------------------------


@pytest.fixture(scope="module")
def console_stack(
    tmp_path_factory: pytest.TempPathFactory, fake_ollama: FakeOllamaProcess
) -> Iterator[Stack]:
    with local_stack(tmp_path_factory.mktemp("console"), fake_ollama.url, ENV) as running:
        assert running.admin_enabled
        yield running


@pytest.fixture
def llm(fake_ollama: FakeOllamaProcess) -> Iterator[Callable[..., None]]:
    """Change the test LLM's behaviour for one test (reset before and after)."""

    def post(path: str, body: dict[str, Any]) -> None:
        httpx.post(f"{fake_ollama.url}/_control/{path}", json=body).raise_for_status()

    post("reset", {})
    yield lambda **changes: post("config", changes)
    post("reset", {})


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as running:
        yield running


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    chromium = find_program("chromium")
    if chromium is None:
        pytest.fail("no chromium: `make test` installs it (`devstack install --browser`)")
    # --no-sandbox: the tests may run as root, where Chromium's sandbox refuses to start.
    launched = playwright.chromium.launch(executable_path=str(chromium), args=["--no-sandbox"])
    yield launched
    launched.close()


@dataclass
class PageWatch:
    """Everything a page did wrong: console errors, exceptions, failed requests, responses of 400
    or more that were not provoked (`provoke`), requests to another origin."""

    origin: str
    problems: list[str] = field(default_factory=list)
    provoked: set[tuple[int, str]] = field(default_factory=set)

    def attach(self, page: Page) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.problems.append(f"uncaught: {error}"))
        page.on("requestfailed", self._failed)
        page.on("request", self._request)
        page.on("response", self._response)

    def provoke(self, status: int, path: str) -> None:
        """A response the test causes on purpose (and the console line Chromium logs for it)."""
        self.provoked.add((status, path))

    def assert_clean(self) -> None:
        assert self.problems == []

    def _console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        status = message.text.removeprefix(LOAD_ERROR).split(" ")[0]
        path = urlsplit(message.location.get("url", "")).path
        if not (status.isdigit() and (int(status), path) in self.provoked):
            self.problems.append(f"console error: {message.text} ({message.location})")

    def _failed(self, request: Request) -> None:
        self.problems.append(f"request failed: {request.method} {request.url} {request.failure}")

    def _request(self, request: Request) -> None:
        if not request.url.startswith(self.origin + "/"):
            self.problems.append(f"request to another origin: {request.url}")

    def _response(self, response: Response) -> None:
        provoked = (response.status, urlsplit(response.url).path) in self.provoked
        if response.status >= 400 and not provoked:
            request = response.request
            self.problems.append(f"HTTP {response.status}: {request.method} {response.url}")


OpenPage = Callable[..., tuple[Page, PageWatch]]


@pytest.fixture
def pages(browser: Browser) -> Iterator[OpenPage]:
    """Open a watched page on `origin` in a fresh browser context (own storage, no cookies)."""
    contexts = []

    def open_page(origin: str, *, viewport: ViewportSize = DESKTOP) -> tuple[Page, PageWatch]:
        context = browser.new_context(base_url=origin, viewport=viewport)
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=origin)
        contexts.append(context)
        page = context.new_page()
        watch = PageWatch(origin)
        watch.attach(page)
        return page, watch

    yield open_page
    for context in contexts:
        context.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Page, str], Path]:
    """Save a full-page screenshot under the pytest temporary directory."""
    directory = tmp_path_factory.mktemp("console-screenshots")

    def shot(page: Page, name: str) -> Path:
        path = directory / f"console-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return shot


# -- the API, the way a user calls it -----------------------------------------------------------


def unique_email() -> str:
    return f"console-{uuid.uuid4().hex[:12]}@example.com"


def register(stack: Stack) -> tuple[str, str]:
    email = unique_email()
    response = httpx.post(f"{stack.public_url}/v1/register", json={"email": email})
    assert response.status_code == 201, response.text
    return email, str(response.json()["apiKey"])


def usage_of(stack: Stack, key: str) -> httpx.Response:
    return httpx.get(f"{stack.public_url}/v1/usage", headers={"x-api-key": key})


def chat(stack: Stack, key: str) -> httpx.Response:
    return httpx.post(
        f"{stack.public_url}/v1/chat",
        json={"prompt": "Hello"},
        headers={"x-api-key": key},
        timeout=30,
    )


def admin_get(stack: Stack, path: str) -> Any:
    response = httpx.get(f"{stack.operator_url}{path}", headers={"x-admin-token": ADMIN_TOKEN})
    assert response.status_code == 200, response.text
    return response.json()


def today() -> str:
    return datetime.now(UTC).date().isoformat()


# -- the pages ----------------------------------------------------------------------------------


def open_page_at(page: Page, path: str) -> None:
    """Go to `path` and wait until everything it loads has loaded (the favicon too, which
    Chromium fetches after the load event: another navigation would abort it)."""
    page.goto(path)
    page.wait_for_load_state("networkidle")


def sign_in(page: Page, key: str) -> None:
    if urlsplit(page.url).path != "/":
        open_page_at(page, "/")
    page.locator("#signin-key").fill(key)
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.locator("#signed-in")).to_be_visible()
    expect(page.locator("#daily-summary")).not_to_be_empty()
    page.wait_for_load_state("networkidle")


def operator_sign_in(page: Page) -> None:
    if urlsplit(page.url).path != "/":
        open_page_at(page, "/")
    page.locator("#admin-token").fill(ADMIN_TOKEN)
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.locator("#signed-in")).to_be_visible()
    expect(page.locator("#error-rate")).not_to_be_empty()
    page.wait_for_load_state("networkidle")


def meter(page: Page, selector: str = "#usage-meter") -> tuple[float, float]:
    value, maximum = page.eval_on_selector(selector, "m => [m.value, m.max]")
    return float(value), float(maximum)


def day_cell(page: Page, column: str, *, table: str = "daily") -> int:
    """Today's figure in a per-day table (`daily`: the user's, `totals`: the operator's); 0 if
    today has no row."""
    cell = page.locator(f'#{table}-tbody tr[data-date="{today()}"] td.{column}')
    return int((cell.text_content() or "0").replace(",", "")) if cell.count() else 0


# Records every state of the playground's answer: [answer so far, tokens line at that moment].
WATCH_ANSWER = """() => {
  window.answerSeen = [];
  const output = document.getElementById("chat-output");
  const tokens = document.getElementById("chat-tokens");
  new MutationObserver(() => window.answerSeen.push([output.textContent, tokens.textContent]))
    .observe(output, { childList: true, characterData: true, subtree: true });
}"""

UNLABELLED_CONTROLS = """() => [...document.querySelectorAll("input, select, textarea")]
    .filter((e) => e.type !== "hidden" && e.labels.length === 0 && !e.getAttribute("aria-label"))
    .map((e) => e.id || e.name)"""

# WCAG 2 contrast of every visible text against the first opaque background behind it.
LOW_CONTRAST_TEXT = """() => {
  const rgb = (c) => {
    const p = c.match(/[\\d.]+/g).map(Number);
    return { r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1 };
  };
  const lum = ({ r, g, b }) => {
    const f = (v) => ((v /= 255) <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4);
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const behind = (node) => {
    for (let n = node; n; n = n.parentElement) {
      const c = rgb(getComputedStyle(n).backgroundColor);
      if (c.a === 1) return c;
    }
    return { r: 255, g: 255, b: 255, a: 1 };
  };
  const failures = [];
  for (const node of document.querySelectorAll("body *")) {
    if (!node.checkVisibility() || node.closest(":disabled")) continue;
    const text = [...node.childNodes]
      .filter((n) => n.nodeType === 3)
      .map((n) => n.textContent.trim())
      .join("");
    if (!text) continue;
    const style = getComputedStyle(node);
    const [hi, lo] = [lum(rgb(style.color)), lum(behind(node))].sort((a, b) => b - a);
    const ratio = (hi + 0.05) / (lo + 0.05);
    const size = parseFloat(style.fontSize);
    const large = size >= 24 || (Number(style.fontWeight) >= 700 && size >= 18.66);
    if (ratio < (large ? 3 : 4.5)) {
      failures.push(`${node.tagName} "${text.slice(0, 40)}": ${ratio.toFixed(2)}`);
    }
  }
  return failures;
}"""


def assert_fits_and_is_accessible(page: Page) -> None:
    """No horizontal overflow at the page's width, a label for every control, AA contrast."""
    width = page.viewport_size["width"] if page.viewport_size else 0
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    assert page.evaluate(UNLABELLED_CONTROLS) == []
    assert page.evaluate(LOW_CONTRAST_TEXT) == []


# -- the user console ---------------------------------------------------------------------------


def test_a_user_registers_sees_the_key_once_and_signs_in_with_it(
    console_stack: Stack, pages: OpenPage, shots: Callable[[Page, str], Path]
) -> None:
    page, watch = pages(console_stack.public_url)
    open_page_at(page, "/")
    page.keyboard.press("Tab")  # keyboard first: the skip link, with a visible focus ring
    expect(page.locator(".skip-link")).to_be_focused()
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") == "solid"

    page.get_by_label("Email").fill(unique_email())
    page.get_by_role("button", name="Create account").click()
    shown = page.locator("#new-key-value")
    expect(shown).to_be_visible()
    key = shown.input_value()
    expect(page.locator("#new-key .warning")).to_contain_text("This key is shown only once.")
    page.get_by_role("button", name="Copy key").click()
    expect(page.locator("#new-key [role=status]")).to_have_text("Copied to the clipboard.")
    assert page.evaluate("navigator.clipboard.readText()") == key
    assert usage_of(console_stack, key).status_code == 200
    shots(page, "user-registered")

    page.reload()
    page.wait_for_load_state("networkidle")
    expect(page.locator("#signed-out")).to_be_visible()
    assert key not in page.content()  # once: a reload shows it no more
    watch.provoke(401, "/v1/usage")
    page.locator("#signin-key").fill("ig_not-a-key-of-anyone-0123456789")
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.locator("#signin-error")).to_contain_text("Invalid API key.")
    sign_in(page, key)

    expect(page.locator("#usage-text")).to_contain_text(f"0 of {FREE_TOKENS:,} tokens used")
    assert page.evaluate("sessionStorage.getItem('infergate.apiKey')") == key
    assert page.evaluate("localStorage.length") == 0
    assert page.context.cookies() == []
    assert key not in page.url
    watch.assert_clean()


def test_the_playground_streams_and_usage_moves_by_exactly_the_tokens_it_used(
    console_stack: Stack,
    pages: OpenPage,
    llm: Callable[..., None],
    shots: Callable[[Page, str], Path],
) -> None:
    reply = "Streamed to the console, piece by piece."
    llm(reply=reply, chunk_delay_s=0.15)  # five chunks (one per completion token), paced
    _, key = register(console_stack)
    page, watch = pages(console_stack.public_url)
    sign_in(page, key)
    used_before = usage_of(console_stack, key).json()["usedTokens"]
    assert meter(page) == (used_before, FREE_TOKENS)
    tokens_before = day_cell(page, "tokens")

    page.evaluate(WATCH_ANSWER)
    page.get_by_label("Prompt").fill("Say something")
    page.get_by_role("button", name="Send", exact=True).click()
    output, tokens = page.locator("#chat-output"), page.locator("#chat-tokens")
    expect(tokens).to_contain_text("Tokens used:")
    expect(output).to_have_text(reply)
    seen: list[list[str]] = page.evaluate("window.answerSeen")
    # Streamed: the answer grew piece by piece, each piece shown before the answer was complete.
    before_done = [text for text, tokens_text in seen if text and not tokens_text]
    assert all(reply.startswith(text) for text in before_done)
    assert len({text for text in before_done if len(text) < len(reply)}) >= 2
    used = int(tokens.get_attribute("data-tokens-used") or "0")
    assert used == PROMPT_TOKENS + COMPLETION_TOKENS
    expect(tokens).to_have_text(
        f"Tokens used: {used} (prompt {PROMPT_TOKENS}, completion {COMPLETION_TOKENS})."
    )

    after = usage_of(console_stack, key)
    assert after.json()["usedTokens"] == used_before + used
    expect(page.locator("#usage-text")).to_contain_text(f"{used_before + used} of {FREE_TOKENS:,}")
    assert meter(page) == (used_before + used, FREE_TOKENS)
    expect(page.locator(f'#daily-tbody tr[data-date="{today()}"] td.tokens')).to_have_text(
        str(tokens_before + used)
    )
    assert day_cell(page, "requests") == 1
    newest = page.locator("#requests-body tr").first
    expect(newest.locator("td").nth(1)).to_have_text("Success")
    expect(newest.locator("td").nth(5)).to_have_text(str(used))
    # The rate-limit window as the headers of /v1/usage say (reading usage does not count).
    remaining = after.headers["x-ratelimit-remaining-requests"]
    assert after.headers["x-ratelimit-limit-requests"] == str(REQUESTS_PER_WINDOW)
    expect(page.locator("#window-requests")).to_contain_text(
        f"{remaining} of {REQUESTS_PER_WINDOW} left in this window; resets in"
    )
    left = int(after.headers["x-ratelimit-remaining-tokens"])
    expect(page.locator("#window-tokens")).to_contain_text(f"{left:,} of {FREE_TOKENS:,} left")
    shots(page, "user-dashboard")
    watch.assert_clean()


def test_rotating_switches_the_session_to_the_new_key_and_refuses_the_old_one(
    console_stack: Stack, pages: OpenPage
) -> None:
    _, old_key = register(console_stack)
    page, watch = pages(console_stack.public_url)
    sign_in(page, old_key)
    dialog = page.get_by_role("dialog")

    page.get_by_role("button", name="Rotate key…").click()
    expect(dialog).to_be_visible()
    expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
    page.keyboard.press("Tab")
    expect(dialog.get_by_role("button", name="Rotate key")).to_be_focused()
    page.keyboard.press("Tab")  # focus stays in the dialog: back to the first button
    expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(page.get_by_role("button", name="Rotate key…")).to_be_focused()
    assert usage_of(console_stack, old_key).status_code == 200  # Escape rotated nothing

    page.get_by_role("button", name="Rotate key…").click()
    dialog.get_by_role("button", name="Rotate key").click()
    shown = page.locator("#rotated-key-value")
    expect(shown).to_be_visible()
    new_key = shown.input_value()
    expect(page.locator("#rotated-key .warning")).to_contain_text("shown only once")

    assert new_key != old_key
    assert page.evaluate("sessionStorage.getItem('infergate.apiKey')") == new_key
    assert usage_of(console_stack, old_key).status_code == 401
    assert usage_of(console_stack, new_key).status_code == 200
    page.get_by_role("button", name="Refresh").click()  # the page goes on with the new key
    expect(page.locator("#session-label")).to_contain_text(new_key[-4:])
    page.wait_for_load_state("networkidle")
    watch.assert_clean()


def test_revoking_signs_out_and_the_key_is_refused(console_stack: Stack, pages: OpenPage) -> None:
    _, key = register(console_stack)
    page, watch = pages(console_stack.public_url)
    sign_in(page, key)

    page.get_by_role("button", name="Revoke key…").click()
    page.get_by_role("dialog").get_by_role("button", name="Revoke key").click()

    expect(page.locator("#signed-out")).to_be_visible()
    expect(page.locator("#page-status")).to_have_text(
        "Your API key was revoked and you are signed out."
    )
    assert page.evaluate("sessionStorage.length") == 0
    assert usage_of(console_stack, key).status_code == 401
    watch.assert_clean()


def test_api_errors_are_shown_as_sentences(console_stack: Stack, pages: OpenPage) -> None:
    page, watch = pages(console_stack.public_url)
    open_page_at(page, "/")
    answers = iter(
        [
            (429, {"retry-after": "12"}, {"message": "Too many requests", "code": "rate_limited"}),
            (503, {}, {"error": {"message": "The model is overloaded", "type": "server_error"}}),
        ]
    )

    def answer(route: Route) -> None:
        status, headers, body = next(answers)
        headers |= {"content-type": "application/json", "x-request-id": f"req-{status}"}
        route.fulfill(status=status, headers=headers, body=json.dumps(body))

    page.route("**/v1/usage", answer)
    watch.provoke(429, "/v1/usage")
    watch.provoke(503, "/v1/usage")
    for expected in (
        "Rate limit reached; try again in 12 s. (request id req-429)",
        "The model is overloaded. (request id req-503)",
    ):
        page.locator("#signin-key").fill("ig_any-key-0123456789")
        page.get_by_role("button", name="Sign in", exact=True).click()
        expect(page.locator("#signin-error")).to_have_text(expected)
    watch.assert_clean()


# -- the operator console -----------------------------------------------------------------------


def test_the_operator_moves_a_user_to_pro_and_the_user_sees_the_new_limit(
    console_stack: Stack, pages: OpenPage, shots: Callable[[Page, str], Path]
) -> None:
    email, key = register(console_stack)
    user_page, user_watch = pages(console_stack.public_url)
    sign_in(user_page, key)
    expect(user_page.locator("#usage-text")).to_contain_text(f"of {FREE_TOKENS:,} tokens used")
    operator, watch = pages(console_stack.operator_url)
    operator_sign_in(operator)

    operator.get_by_label("Search by email").fill(email[:20])
    operator.get_by_role("button", name="Search").click()
    row = operator.locator("#users-body tr").filter(has_text=email)
    expect(row).to_have_count(1)
    row.get_by_role("button", name=f"Open {email}").click()
    expect(operator.locator("#user-title")).to_have_text(f"User {email}")
    expect(operator.locator("#user-title")).to_be_focused()
    operator.get_by_label("Plan", exact=True).select_option("PRO")
    operator.get_by_role("button", name="Change plan…").click()
    dialog = operator.get_by_role("dialog")
    expect(dialog).to_contain_text(f"Move {email} to PRO?")
    dialog.get_by_role("button", name="Change to PRO").click()

    expect(operator.locator("#user-status")).to_contain_text(
        f"Plan changed to PRO: {PRO_TOKENS:,} tokens a month"
    )
    expect(operator.locator("#user-plan")).to_have_text("PRO")
    expect(row.locator("td").nth(1)).to_have_text("PRO")
    user_page.get_by_role("button", name="Refresh").click()
    expect(user_page.locator("#usage-text")).to_contain_text(f"0 of {PRO_TOKENS:,} tokens used")
    assert meter(user_page) == (0, PRO_TOKENS)
    operator.wait_for_load_state("networkidle")
    shots(operator, "operator-user")
    watch.assert_clean()
    user_watch.assert_clean()


def test_the_operator_sees_totals_top_users_and_the_error_rate_and_manages_keys(
    console_stack: Stack,
    pages: OpenPage,
    llm: Callable[..., None],
    shots: Callable[[Page, str], Path],
) -> None:
    email, key = register(console_stack)
    for _ in range(3):
        assert chat(console_stack, key).status_code == 200
    llm(fail_status=500)
    assert chat(console_stack, key).status_code >= 500
    usage_of(console_stack, key)  # waits until this user's chats are settled
    operator, watch = pages(console_stack.operator_url)
    operator_sign_in(operator)

    period = datetime.now(UTC).strftime("%Y-%m")
    days = admin_get(console_stack, f"/admin/usage/daily?period={period}")["days"]
    top = admin_get(console_stack, f"/admin/usage/top?period={period}&limit=10")["data"]
    requests, errors = sum(d["requests"] for d in days), sum(d["errors"] for d in days)
    assert errors >= 1
    rate = f"{math.floor(errors / requests * 1000 + 0.5) / 10:g} %"  # as the page rounds
    expect(operator.locator("#error-rate")).to_have_text(
        f"{rate} in {period} ({errors:,} error{'s' * (errors != 1)} in {requests:,} requests)."
    )
    assert day_cell(operator, "tokens", table="totals") == next(
        d["tokens"] for d in days if d["date"] == today()
    )
    (mine,) = [row for row in top if row["tokens"] and row["userId"] in _ids_of(operator, email)]
    ranked = operator.locator(f'#top-body tr[data-user-id="{mine["userId"]}"]')
    expect(ranked.locator("td").nth(1)).to_have_text(email)
    expect(ranked.locator("td").nth(2)).to_have_text(f"{mine['tokens']:,}")
    expect(ranked.locator("td").nth(3)).to_have_text(str(mine["requests"]))
    shots(operator, "operator-overview")

    ranked.get_by_role("button", name=f"Open {email}").click()
    expect(operator.locator("#history-body tr")).to_have_count(4)
    expect(operator.locator("#history-body tr").first.locator("td").nth(1)).to_have_text(
        "Error: model or service"
    )
    dialog = operator.get_by_role("dialog")
    operator.get_by_role("button", name="Re-issue key…").click()
    dialog.get_by_role("button", name="Issue new key").click()
    issued = operator.locator("#issued-key-value")
    expect(issued).to_be_visible()
    new_key = issued.input_value()
    assert usage_of(console_stack, key).status_code == 401
    assert usage_of(console_stack, new_key).status_code == 200

    operator.get_by_role("button", name="Revoke key…").click()
    dialog.get_by_role("button", name="Revoke key").click()
    expect(operator.locator("#user-key")).to_have_text("revoked")
    assert usage_of(console_stack, new_key).status_code == 401
    operator.wait_for_load_state("networkidle")
    watch.assert_clean()


def test_the_operator_pages_through_the_users_a_search_finds(
    console_stack: Stack, pages: OpenPage
) -> None:
    prefix = f"paging-{uuid.uuid4().hex[:8]}"
    for number in range(21):  # one more than a page
        email = f"{prefix}-{number:02}@example.com"
        response = httpx.post(f"{console_stack.public_url}/v1/register", json={"email": email})
        assert response.status_code == 201, response.text
    operator, watch = pages(console_stack.operator_url)
    operator_sign_in(operator)
    rows = operator.locator("#users-body tr")
    first_cells = operator.locator("#users-body tr td:first-child")

    operator.get_by_label("Search by email").fill(prefix.upper())  # any case
    operator.get_by_role("button", name="Search").click()
    expect(first_cells.first).to_have_text(f"{prefix}-00@example.com")
    expect(rows).to_have_count(20)
    expect(operator.get_by_role("button", name="Previous page")).to_be_disabled()
    operator.get_by_role("button", name="Next page").click()
    expect(first_cells).to_have_text([f"{prefix}-20@example.com"])
    expect(operator.locator("#users-page")).to_have_text("Page 2")
    expect(operator.get_by_role("button", name="Next page")).to_be_disabled()
    operator.get_by_role("button", name="Previous page").click()
    expect(rows).to_have_count(20)
    expect(operator.locator("#users-page")).to_have_text("Page 1")
    operator.wait_for_load_state("networkidle")
    watch.assert_clean()


def _ids_of(page: Page, email: str) -> list[str]:
    """The user ids the top-users table shows for `email`."""
    rows = page.locator("#top-body tr").filter(has_text=email)
    return [rows.nth(i).get_attribute("data-user-id") or "" for i in range(rows.count())]


# -- phone width, accessibility, the API reference ----------------------------------------------


def test_the_consoles_fit_a_375_px_screen_with_labels_and_aa_contrast(
    console_stack: Stack, pages: OpenPage, shots: Callable[[Page, str], Path]
) -> None:
    email, key = register(console_stack)
    assert chat(console_stack, key).status_code == 200
    page, watch = pages(console_stack.public_url, viewport=PHONE)
    open_page_at(page, "/")
    assert_fits_and_is_accessible(page)
    sign_in(page, key)
    page.locator("#daily summary").click()  # the per-day table open too
    assert_fits_and_is_accessible(page)
    shots(page, "user-phone")

    operator, operator_watch = pages(console_stack.operator_url, viewport=PHONE)
    open_page_at(operator, "/")
    assert_fits_and_is_accessible(operator)
    operator_sign_in(operator)
    operator.get_by_label("Search by email").fill(email)
    operator.get_by_role("button", name="Search").click()
    operator.locator("#users-body").get_by_role("button", name=f"Open {email}").click()
    expect(operator.locator("#history-body tr")).to_have_count(1)
    operator.wait_for_load_state("networkidle")
    assert_fits_and_is_accessible(operator)
    shots(operator, "operator-phone")
    watch.assert_clean()
    operator_watch.assert_clean()


def test_the_api_reference_renders_swagger_ui_from_the_same_origin(
    console_stack: Stack, pages: OpenPage
) -> None:
    page, watch = pages(console_stack.public_url)
    open_page_at(page, "/docs")

    # Swagger UI's bundle is large: on a busy machine it takes a few seconds to start.
    expect(page.locator(".swagger-ui .opblock").first).to_be_visible(timeout=20_000)
    expect(page.locator(".swagger-ui")).to_contain_text("/v1/chat")
    page.wait_for_load_state("networkidle")
    watch.assert_clean()
