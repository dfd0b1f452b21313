// Small DOM helpers shared by the consoles. Text is always set as text (never as HTML), so nothing
// an API returns can inject markup; nothing here sets inline styles (the CSP forbids them).

const numbers = new Intl.NumberFormat("en");

export const byId = (id) => document.getElementById(id);

/** An element with attributes (`class`, `hidden`, `data-*`, ...) and children (nodes or text). */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false || value === null || value === undefined) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

export const formatNumber = (value) => numbers.format(value);

/** "1 error", "3 errors". */
export function count(value, one, many) {
  return `${numbers.format(value)} ${value === 1 ? one : many}`;
}

export function formatPercent(value) {
  return `${numbers.format(Math.round(value * 10) / 10)} %`;
}

/** "42 s", "6 min 5 s", "3 h 4 min", "12 d 3 h". */
export function formatDuration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min${s % 60 ? ` ${s % 60} s` : ""}`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

/** Seconds of a Go-style duration (`350ms`, `6m0s`, `2h0m5s`), as OpenAI's reset headers say. */
export function parseGoDuration(text) {
  if (!text) return null;
  const units = { h: 3600, m: 60, s: 1, ms: 0.001 };
  let total = 0;
  let matched = false;
  for (const [, amount, unit] of text.matchAll(/(\d+(?:\.\d+)?)(ms|h|m|s)/g)) {
    total += Number(amount) * units[unit];
    matched = true;
  }
  return matched ? total : null;
}

/** A UTC timestamp as `2026-03-04 12:03:04 UTC`. */
export function formatTime(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  return `${date.toISOString().slice(0, 19).replace("T", " ")} UTC`;
}

/** The current calendar month (UTC) as YYYY-MM, the API's billing period. */
export function currentPeriod() {
  return new Date().toISOString().slice(0, 7);
}

/** Show a message in a status region (`kind`: "ok", "error" or "" for plain). */
export function say(region, message, kind = "") {
  region.textContent = message;
  region.className = kind;
  region.hidden = !message;
}

/** Disable a button while `work` runs (no double submits), then restore it. */
export async function busy(button, work) {
  button.disabled = true;
  try {
    return await work();
  } finally {
    button.disabled = false;
  }
}

/** The meter and its sentence for `used` of `limit` tokens. */
export function showMeter(meter, text, { used, limit, remaining }) {
  meter.max = Math.max(limit, 1);
  meter.value = Math.min(used, meter.max);
  meter.low = meter.max * 0.75;
  meter.high = meter.max * 0.9;
  meter.optimum = 0;
  const percent = limit ? (used / limit) * 100 : 0;
  text.textContent =
    `${formatNumber(used)} of ${formatNumber(limit)} tokens used (${formatPercent(percent)}); ` +
    `${formatNumber(remaining)} left this month.`;
  meter.setAttribute("aria-valuetext", text.textContent);
}

const FOCUSABLE = "button, [href], input, select, textarea, [tabindex]:not([tabindex='-1'])";

/** Tab and Shift+Tab wrap around inside a modal dialog; Escape closes it (the native cancel). */
export function trapFocus(dialog) {
  dialog.addEventListener("keydown", (event) => {
    if (event.key !== "Tab") return;
    const items = [...dialog.querySelectorAll(FOCUSABLE)].filter((n) => !n.disabled && !n.hidden);
    if (!items.length) return;
    const first = items[0];
    const last = items[items.length - 1];
    if (event.shiftKey && document.activeElement === first) {
      event.preventDefault();
      last.focus();
    } else if (!event.shiftKey && document.activeElement === last) {
      event.preventDefault();
      first.focus();
    }
  });
}

/** Ask in the page's confirmation dialog; resolves true only when the action is confirmed. Focus
 * returns to what had it. */
export function confirmAction({ title, message, confirmLabel, danger = false }) {
  const dialog = byId("confirm-dialog");
  const confirm = byId("confirm-ok");
  byId("confirm-title").textContent = title;
  byId("confirm-message").textContent = message;
  confirm.textContent = confirmLabel;
  confirm.className = danger ? "danger" : "";
  const opener = document.activeElement;
  return new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => {
        resolve(dialog.returnValue === "confirm");
        if (opener && opener.isConnected) opener.focus();
      },
      { once: true },
    );
    dialog.returnValue = "";
    dialog.showModal();
    byId("confirm-cancel").focus();
  });
}

/** Wire the page's confirmation dialog (call once). */
export function setUpConfirmDialog() {
  const dialog = byId("confirm-dialog");
  trapFocus(dialog);
  byId("confirm-ok").addEventListener("click", () => dialog.close("confirm"));
  byId("confirm-cancel").addEventListener("click", () => dialog.close("cancel"));
}

const KEY_WARNING = [
  "This key is shown only once. ",
  "Copy it now and keep it somewhere safe: InferGate stores only a hash of it and cannot show it again.",
];

/** Fill a panel with a secret shown once (an API key unless told otherwise): the secret, a copy
 * button and the warning (`warning`: its bold start and the rest). */
export function showSecret(
  panel,
  { title, key, note, label = "API key", copyLabel = "Copy key", warning = KEY_WARNING },
) {
  const input = el("input", {
    id: `${panel.id}-value`,
    class: "secret",
    readonly: true,
    value: key,
    autocomplete: "off",
    spellcheck: "false",
  });
  const status = el("p", { role: "status", class: "ok" });
  const copy = el("button", {
    type: "button",
    class: "secondary",
    text: copyLabel,
    onclick: () => copyText(input, status),
  });
  const parts = [
    el("h3", { text: title }),
    el("p", { class: "warning", role: "alert" }, el("strong", { text: warning[0] }), warning[1]),
    el("label", { for: input.id, text: label }),
    el("div", { class: "secret-row" }, input, copy),
    status,
  ];
  if (note) parts.push(el("p", { class: "muted", text: note }));
  panel.replaceChildren(...parts);
  panel.hidden = false;
  return input;
}

async function copyText(input, status) {
  try {
    await navigator.clipboard.writeText(input.value);
    say(status, "Copied to the clipboard.", "ok");
  } catch {
    // No clipboard API (a page served over plain HTTP from another host): select it instead.
    input.focus();
    input.select();
    say(status, "Selected: press Ctrl+C (or Cmd+C) to copy it.", "");
  }
}

/** A table body filled from `rows` by `cells(row)` (a list of [text, className]). */
export function fillTable(tbody, rows, cells, attributes = () => ({})) {
  tbody.replaceChildren(
    ...rows.map((row) =>
      el(
        "tr",
        attributes(row),
        ...cells(row).map(([content, className]) =>
          el("td", { class: className || null }, content instanceof Node ? content : String(content)),
        ),
      ),
    ),
  );
}

// How a logged chat ended, in words, and whether it was the service's failure or a refusal.
const STATUS = {
  SUCCESS: ["Success", "status-success"],
  CACHED: ["Success: cached answer", "status-success"],
  CANCELLED: ["Cancelled", ""],
  QUOTA_EXCEEDED: ["Refused: monthly quota", "status-refused"],
  RATE_LIMITED: ["Refused: rate limit", "status-refused"],
  TIMEOUT: ["Error: timeout", "status-error"],
  UPSTREAM_ERROR: ["Error: model or service", "status-error"],
  INTERRUPTED: ["Error: interrupted", "status-error"],
  EXPIRED: ["Error: never settled", "status-error"],
};

/** The cells of one request-log row (user's and operator's history tables alike). */
export function requestCells(item) {
  const [status, statusClass] = STATUS[item.status] || [item.status, ""];
  return [
    [formatTime(item.createdAt), ""],
    [status, statusClass],
    [item.model, ""],
    [formatNumber(item.promptTokens), "num"],
    [formatNumber(item.completionTokens), "num"],
    [formatNumber(item.tokensUsed), "num"],
    [`${formatNumber(Math.round(item.responseTimeMs))} ms`, "num"],
    [item.requestId, "id"],
  ];
}
