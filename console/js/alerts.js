// The user console's quota alerts: the user's webhook (URL and thresholds), its signing secret
// shown once (when the webhook is created and when the secret is rotated), removing it, and the
// log of the events sent to it.
//
// The section loads when it is first opened, not at sign-in: GET /v1/webhook answers 404 when the
// user has no webhook, and a browser logs every 404 as a failed request, so a page that loaded it
// for everyone would log one for most users. Once loaded, the page's refreshes update it.

import { ApiError, describeError } from "./api.js";
import { busy, byId, confirmAction, fillTable, formatNumber, formatTime, say, showSecret } from "./ui.js";

const DEFAULT_THRESHOLDS = [80, 100];
const MAX_THRESHOLDS = 10;
const DELIVERIES_SHOWN = 20;
const SECRET_WARNING = [
  "This secret is shown only once. ",
  "Copy it now and give it to the program that receives your alerts: it checks the " +
    "webhook-signature header of every event with it. If you lose it, rotate it.",
];

// A delivery's status in words, and its colour class.
const STATUS = {
  delivered: ["Delivered", "status-success"],
  pending: ["Pending", ""],
  failed: ["Failed", "status-error"],
};

/** The percentages typed as "80, 100" (commas, spaces or semicolons between them, a % sign
 * allowed), sorted and without repeats; null when any is not a whole number from 1 to 100. */
export function parseThresholds(text) {
  const parts = text.replace(/%/g, " ").split(/[\s,;]+/).filter(Boolean);
  if (!parts.length || !parts.every((part) => /^\d{1,3}$/.test(part))) return null;
  const values = [...new Set(parts.map((part) => Number.parseInt(part, 10)))];
  if (values.length > MAX_THRESHOLDS || values.some((v) => v < 1 || v > 100)) return null;
  return values.sort((a, b) => a - b);
}

const percents = (values) => values.map((value) => `${value} %`).join(", ");

/** The cells of one row of the delivery log. */
function deliveryCells(item) {
  const [status, statusClass] = STATUS[item.status] || [item.status, ""];
  const due = item.status === "pending" && item.nextAttemptAt ? ` (next try ${formatTime(item.nextAttemptAt)})` : "";
  const code = item.lastStatusCode === null || item.lastStatusCode === undefined ? null : `HTTP ${item.lastStatusCode}`;
  const answer = [code, item.lastError].filter(Boolean).join(": ") || "–";
  return [
    [formatTime(item.createdAt), ""],
    [item.eventId, "id"],
    [item.period, ""],
    [`${item.threshold} %`, "num"],
    [status + due, statusClass],
    [formatNumber(item.attempts), "num"],
    [answer, "answer"],
  ];
}

/** The quota alerts section of the page: `api` makes the calls, `report(region, error)` shows a
 * failure (and ends the session on a refused key). */
export class QuotaAlerts {
  constructor({ api, report }) {
    this.api = api;
    this.report = report;
    this.loaded = false;
    this.webhook = null;
    byId("alerts-details").addEventListener("toggle", (event) => {
      if (event.currentTarget.open && !this.loaded) this.refresh();
    });
    byId("webhook-form").addEventListener("submit", (event) => {
      event.preventDefault();
      busy(event.submitter || byId("webhook-save"), () => this.save());
    });
    byId("webhook-rotate").addEventListener("click", () => this.rotateSecret());
    byId("webhook-remove").addEventListener("click", () => this.remove());
    byId("deliveries-refresh").addEventListener("click", (e) => busy(e.currentTarget, () => this.refresh()));
  }

  /** Forget what is shown (signing out): the section loads again when it is next opened. */
  reset() {
    this.loaded = false;
    this.show(null);
    this.fillForm(null);
    this.forgetSecret();
    byId("alerts-details").open = false;
    byId("webhook-none").hidden = true;
    for (const id of ["alerts-status", "alerts-error", "deliveries-error"]) say(byId(id), "");
  }

  forgetSecret() {
    byId("webhook-secret").replaceChildren();
    byId("webhook-secret").hidden = true;
  }

  /** The page's refresh: the webhook and its log, if the section has shown a webhook. (Without
   * one there is nothing to update, and asking would only get a 404.) */
  async refreshIfShown() {
    if (this.loaded && this.webhook) await this.refresh();
  }

  async refresh() {
    const firstLoad = !this.loaded;
    try {
      const { data } = await this.api.json("/v1/webhook");
      this.show(data);
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 404)) return this.report(byId("alerts-error"), error);
      this.show(null);
    }
    this.loaded = true;
    if (firstLoad) this.fillForm(this.webhook);
    say(byId("alerts-error"), "");
    return this.refreshDeliveries();
  }

  /** The current webhook (null: none), and its log only when there is one. */
  show(webhook) {
    this.webhook = webhook;
    byId("webhook-none").hidden = Boolean(webhook);
    byId("webhook-current").hidden = !webhook;
    byId("deliveries").hidden = !webhook;
    byId("webhook-form-title").textContent = webhook ? "Change the webhook" : "Set a webhook";
    if (!webhook) {
      byId("deliveries-body").replaceChildren();
      return;
    }
    byId("webhook-url").textContent = webhook.url;
    byId("webhook-thresholds").textContent = `${percents(webhook.thresholds)} of your monthly quota`;
    byId("webhook-updated").textContent = formatTime(webhook.updatedAt);
  }

  /** The form holds what is set (only when that changes: a refresh keeps what is being typed). */
  fillForm(webhook) {
    byId("webhook-url-input").value = webhook ? webhook.url : "";
    byId("webhook-thresholds-input").value = (webhook ? webhook.thresholds : DEFAULT_THRESHOLDS).join(", ");
    this.clearMarks();
  }

  clearMarks() {
    for (const id of ["webhook-url-input", "webhook-thresholds-input"]) byId(id).removeAttribute("aria-invalid");
    say(byId("webhook-form-error"), "");
  }

  async refreshDeliveries() {
    if (!this.webhook) return;
    try {
      const { data } = await this.api.json(`/v1/webhook/deliveries?limit=${DELIVERIES_SHOWN}`);
      fillTable(byId("deliveries-body"), data.data, deliveryCells, (item) => ({
        "data-event-id": item.eventId,
        "data-threshold": item.threshold,
        "data-status": item.status,
      }));
      byId("deliveries-empty").hidden = data.data.length > 0;
      say(byId("deliveries-error"), "");
    } catch (error) {
      this.report(byId("deliveries-error"), error);
    }
  }

  /** A field's problem: said in the form's alert, the field marked invalid and focused. */
  invalid(fieldId, message) {
    const field = byId(fieldId);
    field.setAttribute("aria-invalid", "true");
    say(byId("webhook-form-error"), message, "error");
    field.focus();
  }

  async save() {
    const url = byId("webhook-url-input").value.trim();
    const thresholds = parseThresholds(byId("webhook-thresholds-input").value);
    this.clearMarks();
    say(byId("alerts-status"), "");
    if (!url) return this.invalid("webhook-url-input", "Enter the URL your alerts are to be sent to.");
    if (!thresholds) {
      return this.invalid(
        "webhook-thresholds-input",
        `Thresholds are whole numbers from 1 to 100 (at most ${MAX_THRESHOLDS}), separated by commas: for example 80, 100.`,
      );
    }
    try {
      const { data } = await this.api.json("/v1/webhook", { method: "PUT", body: { url, thresholds } });
      this.loaded = true;
      this.show(data);
      this.fillForm(data);
      if (data.secret) {
        this.showSecret("Your webhook's signing secret", data.secret);
      } else {
        say(byId("alerts-status"), "Webhook saved.", "ok");
      }
      await this.refreshDeliveries();
    } catch (error) {
      if (error instanceof ApiError && error.status === 400) {
        const field = error.code === "webhook_url_refused" ? "webhook-url-input" : "webhook-thresholds-input";
        this.invalid(field, describeError(error));
      } else {
        this.report(byId("webhook-form-error"), error);
      }
    }
  }

  showSecret(title, secret) {
    showSecret(byId("webhook-secret"), {
      title,
      key: secret,
      label: "Signing secret",
      copyLabel: "Copy secret",
      warning: SECRET_WARNING,
      note: "Events are signed with this secret from now on.",
    }).focus();
  }

  async rotateSecret() {
    const confirmed = await confirmAction({
      title: "Rotate the signing secret?",
      message:
        "Events are signed with a new secret from now on: your receiver must check them with it. " +
        "The current secret stops being used at once. The new secret is shown once.",
      confirmLabel: "Rotate secret",
    });
    if (!confirmed) return;
    try {
      const { data } = await this.api.json("/v1/webhook/secret", { method: "POST" });
      this.show(data);
      this.showSecret("Your new signing secret", data.secret);
      say(byId("alerts-error"), "");
    } catch (error) {
      this.report(byId("alerts-error"), error);
    }
  }

  async remove() {
    const confirmed = await confirmAction({
      title: "Remove your webhook?",
      message: "Nothing more is sent to it, and alerts not delivered yet are dropped.",
      confirmLabel: "Remove webhook",
      danger: true,
    });
    if (!confirmed) return;
    try {
      await this.api.call("/v1/webhook", { method: "DELETE" });
      this.show(null);
      this.fillForm(null);
      this.forgetSecret();
      say(byId("alerts-error"), "");
      say(byId("alerts-status"), "Webhook removed: no more alerts are sent.", "ok");
      byId("webhook-url-input").focus(); // the button that had focus is gone
    } catch (error) {
      this.report(byId("alerts-error"), error);
    }
  }
}
