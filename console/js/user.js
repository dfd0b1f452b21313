// The user console: register, sign in with an API key (kept in this tab's sessionStorage only:
// never a cookie, never the URL), usage against the quota, the rate-limit window, usage per day,
// recent requests, a streaming playground, quota alerts by webhook, and rotating or revoking the
// key.

import { QuotaAlerts } from "./alerts.js";
import { Api, ApiError, describeError, idempotencyKey } from "./api.js";
import { mountDailyFigures } from "./charts.js";
import { Playground } from "./playground.js";
import {
  busy,
  byId,
  confirmAction,
  fillTable,
  formatDuration,
  formatNumber,
  parseGoDuration,
  requestCells,
  say,
  setUpConfirmDialog,
  showMeter,
  showSecret,
} from "./ui.js";

const KEY_ITEM = "infergate.apiKey";
const PAGE_SIZE = 20;

const session = {
  get key() {
    return sessionStorage.getItem(KEY_ITEM);
  },
  set key(value) {
    if (value) sessionStorage.setItem(KEY_ITEM, value);
    else sessionStorage.removeItem(KEY_ITEM);
  },
};

const keyHeaders = (key) => (key ? { "x-api-key": key } : {});
const api = new Api(() => keyHeaders(session.key));

let daily = null;
let olderCursor = null;
const playground = new Playground({
  api,
  report: (region, error) => report(region, error),
  finished: () => (session.key ? refreshAll() : undefined),
});
const alerts = new QuotaAlerts({ api, report: (region, error) => report(region, error) });

// -- signing in and out -----------------------------------------------------------------------

async function signIn(key) {
  const { data, headers } = await new Api(() => keyHeaders(key)).json("/v1/usage");
  session.key = key;
  showSignedIn();
  showUsage(data, headers);
  await Promise.all([refreshDaily(), refreshRequests()]);
}

function showSignedIn() {
  forgetShownKeys();
  byId("signed-out").hidden = true;
  byId("signed-in").hidden = false;
  byId("nav").hidden = false;
  byId("session").hidden = false;
  const ending = `ending in …${session.key.slice(-4)}`;
  byId("session-label").textContent = `Signed in (key ${ending})`;
  byId("key-label").textContent = `You are signed in with the key ${ending}.`;
  if (!daily) daily = mountDailyFigures(byId("daily-figures"), "daily");
}

/** A key shown once leaves the page when the session changes. */
function forgetShownKeys() {
  for (const id of ["rotated-key", "new-key"]) {
    byId(id).replaceChildren();
    byId(id).hidden = true;
  }
  byId("new-key-actions").hidden = true;
  delete byId("use-new-key").dataset.key;
}

function signOut(message = "") {
  session.key = null;
  playground.clear();
  alerts.reset();
  byId("signed-in").hidden = true;
  byId("nav").hidden = true;
  byId("session").hidden = true;
  byId("signed-out").hidden = false;
  forgetShownKeys();
  say(byId("page-status"), message, "ok");
  byId("signin-key").value = "";
  byId("signin-key").focus();
}

/** A refused key (rotated or revoked elsewhere) ends the session; other errors are shown. */
function report(region, error) {
  if (error instanceof ApiError && error.status === 401 && session.key) {
    signOut(`You were signed out: ${describeError(error)}`);
    return;
  }
  say(region, describeError(error), "error");
}

// -- usage, window, per day, requests ---------------------------------------------------------

function showUsage(data, headers) {
  showMeter(byId("usage-meter"), byId("usage-text"), {
    used: data.usedTokens,
    limit: data.monthlyLimit,
    remaining: data.remainingTokens,
  });
  showWindow(headers);
}

function windowText(headers, kind, span) {
  const limit = headers.get(`x-ratelimit-limit-${kind}`);
  const remaining = headers.get(`x-ratelimit-remaining-${kind}`);
  if (limit === null || remaining === null) return "Not reported right now.";
  const reset = parseGoDuration(headers.get(`x-ratelimit-reset-${kind}`));
  const resets = reset === null ? "" : `; resets in ${formatDuration(Math.ceil(reset))}`;
  return `${formatNumber(Number(remaining))} of ${formatNumber(Number(limit))} left ${span}${resets}.`;
}

function showWindow(headers) {
  byId("window-requests").textContent = windowText(headers, "requests", "in this window");
  byId("window-tokens").textContent = windowText(headers, "tokens", "this month");
}

async function refreshUsage() {
  const { data, headers } = await api.json("/v1/usage");
  showUsage(data, headers);
}

async function refreshDaily() {
  try {
    const { data } = await api.json("/v1/usage/daily");
    daily.show(data);
    say(byId("daily-error"), "");
  } catch (error) {
    report(byId("daily-error"), error);
  }
}

async function refreshRequests({ older = false } = {}) {
  const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (older && olderCursor) params.set("before", olderCursor);
  try {
    const { data } = await api.json(`/v1/requests?${params}`);
    const body = byId("requests-body");
    const kept = older ? [...body.children] : [];
    fillTable(body, data.data, requestCells, (item) => ({ "data-request-id": item.requestId }));
    body.prepend(...kept);
    olderCursor = data.nextCursor;
    byId("requests-older").hidden = !olderCursor;
    byId("requests-empty").hidden = body.children.length > 0;
    say(byId("requests-error"), "");
  } catch (error) {
    report(byId("requests-error"), error);
  }
}

async function refreshAll() {
  try {
    await refreshUsage();
  } catch (error) {
    report(byId("page-status"), error);
    return;
  }
  await Promise.all([refreshDaily(), refreshRequests(), alerts.refreshIfShown()]);
}

// -- the key ----------------------------------------------------------------------------------

async function rotate() {
  const confirmed = await confirmAction({
    title: "Rotate your API key?",
    message:
      "A new key replaces this one. The current key stops working at once, everywhere it is used. " +
      "The new key is shown once.",
    confirmLabel: "Rotate key",
  });
  if (!confirmed) return;
  try {
    const { data } = await api.json("/v1/keys/rotate", {
      method: "POST",
      headers: { "Idempotency-Key": idempotencyKey() },
    });
    session.key = data.apiKey;
    showSignedIn();
    const input = showSecret(byId("rotated-key"), {
      title: "Your new API key",
      key: data.apiKey,
      note: "This tab now uses the new key. Replace the old one wherever you use it.",
    });
    input.focus();
    say(byId("key-error"), "");
  } catch (error) {
    report(byId("key-error"), error);
  }
}

async function revoke() {
  const confirmed = await confirmAction({
    title: "Revoke your API key?",
    message:
      "The key stops working at once and you are signed out. You cannot create another key " +
      "yourself: an operator can issue you a new one.",
    confirmLabel: "Revoke key",
    danger: true,
  });
  if (!confirmed) return;
  try {
    await api.call("/v1/keys/current", { method: "DELETE" });
    signOut("Your API key was revoked and you are signed out.");
  } catch (error) {
    report(byId("key-error"), error);
  }
}

// -- wiring -----------------------------------------------------------------------------------

function onSubmit(formId, handler) {
  byId(formId).addEventListener("submit", (event) => {
    event.preventDefault();
    handler(event.submitter || event.target.querySelector("button[type=submit]"));
  });
}

function wire() {
  setUpConfirmDialog();
  onSubmit("signin-form", (button) => {
    const key = byId("signin-key").value.trim();
    if (!key) return say(byId("signin-error"), "Paste your API key first.", "error");
    return busy(button, async () => {
      try {
        await signIn(key);
        say(byId("signin-error"), "");
        say(byId("page-status"), "");
        byId("main").focus();
      } catch (error) {
        say(byId("signin-error"), describeError(error), "error");
      }
    });
  });
  onSubmit("register-form", (button) => {
    const email = byId("register-email").value.trim();
    if (!email) return say(byId("register-error"), "Enter your email address.", "error");
    return busy(button, async () => {
      try {
        const { data } = await new Api(() => ({})).json("/v1/register", {
          method: "POST",
          body: { email },
          headers: { "Idempotency-Key": idempotencyKey() },
        });
        say(byId("register-error"), "");
        byId("register-form").reset();
        showSecret(byId("new-key"), { title: "Your API key", key: data.apiKey }).focus();
        byId("new-key-actions").hidden = false;
        byId("use-new-key").dataset.key = data.apiKey;
      } catch (error) {
        say(byId("register-error"), describeError(error), "error");
      }
    });
  });
  byId("use-new-key").addEventListener("click", async (event) => {
    try {
      await signIn(event.currentTarget.dataset.key);
      byId("main").focus();
    } catch (error) {
      say(byId("register-error"), describeError(error), "error");
    }
  });
  onSubmit("chat-form", (button) => {
    const prompt = byId("chat-prompt").value;
    if (!prompt.trim()) return say(byId("chat-error"), "Write a prompt first.", "error");
    return busy(button, () => playground.send(prompt));
  });
  byId("requests-older").addEventListener("click", (e) => busy(e.currentTarget, () => refreshRequests({ older: true })));
  byId("refresh").addEventListener("click", (e) => busy(e.currentTarget, refreshAll));
  byId("rotate").addEventListener("click", rotate);
  byId("revoke").addEventListener("click", revoke);
  byId("sign-out").addEventListener("click", () => signOut("You are signed out."));
}

async function start() {
  wire();
  if (!session.key) return;
  try {
    await signIn(session.key);
  } catch (error) {
    signOut(`Please sign in again: ${describeError(error)}`);
  }
}

start();
