// The operator console's view of one user: who they are, this month's usage, their request
// history, and the actions on them (plan, new key, revoke), each behind a confirmation.

import {
  byId,
  busy,
  confirmAction,
  fillTable,
  formatNumber,
  formatTime,
  requestCells,
  say,
  showMeter,
  showSecret,
} from "../js/ui.js";

const PAGE_SIZE = 20;

export const userPath = (userId) => `/admin/users/${encodeURIComponent(userId)}`;

/** The user section of the page: `api` calls the admin API, `report(region, error)` shows a
 * failure, `changed()` runs after an action changed the user (the users list is reloaded). */
export class UserDetail {
  constructor({ api, report, changed }) {
    this.api = api;
    this.report = report;
    this.changed = changed;
    this.user = null;
    this.olderCursor = null;
    byId("plan-form").addEventListener("submit", (event) => {
      event.preventDefault();
      busy(byId("plan-submit"), () => this.changePlan());
    });
    byId("reissue").addEventListener("click", () => this.reissueKey());
    byId("revoke").addEventListener("click", () => this.revokeKey());
    byId("history-older").addEventListener("click", (event) =>
      busy(event.currentTarget, () =>
        this.loadHistory({ older: true }).catch((error) => this.report(byId("user-status"), error)),
      ),
    );
  }

  hide() {
    byId("user").hidden = true;
    this.forget();
    this.user = null;
  }

  /** Nothing of the previous user stays on screen (a key shown once least of all). */
  forget() {
    say(byId("user-status"), "");
    byId("issued-key").replaceChildren();
    byId("issued-key").hidden = true;
  }

  async open(userId) {
    try {
      const [{ data: user }, { data: usage }] = await Promise.all([
        this.api.json(userPath(userId)),
        this.api.json(`${userPath(userId)}/usage`),
      ]);
      if (!this.user || this.user.userId !== user.userId) this.forget();
      this.user = user;
      this.show(user, usage);
      await this.loadHistory();
      const section = byId("user");
      if (section.hidden) {
        section.hidden = false;
        byId("user-title").focus();
      }
    } catch (error) {
      this.report(byId("users-error"), error);
    }
  }

  show(user, usage) {
    byId("user-title").textContent = `User ${user.email}`;
    byId("user-id").textContent = user.userId;
    byId("user-email").textContent = user.email;
    byId("user-plan").textContent = user.plan;
    byId("user-key").textContent = user.keyPrefix ? `${user.keyPrefix}…` : "revoked";
    byId("user-created").textContent = formatTime(user.createdAt);
    byId("plan").value = user.plan;
    showMeter(byId("user-meter"), byId("user-usage-text"), {
      used: usage.usedTokens,
      limit: usage.monthlyLimit,
      remaining: usage.remainingTokens,
    });
  }

  async loadHistory({ older = false } = {}) {
    const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (older && this.olderCursor) query.set("before", this.olderCursor);
    const { data } = await this.api.json(`${userPath(this.user.userId)}/requests?${query}`);
    const body = byId("history-body");
    const kept = older ? [...body.children] : [];
    fillTable(body, data.data, requestCells, (item) => ({ "data-request-id": item.requestId }));
    body.prepend(...kept);
    this.olderCursor = data.nextCursor;
    byId("history-older").hidden = !data.nextCursor;
    byId("history-empty").hidden = body.children.length > 0;
  }

  async act({ confirm, call, done }) {
    if (!(await confirmAction(confirm))) return;
    const status = byId("user-status");
    try {
      const result = await call();
      say(status, done(result), "ok");
      await Promise.all([this.open(this.user.userId), this.changed()]);
    } catch (error) {
      this.report(status, error);
    }
  }

  changePlan() {
    const plan = byId("plan").value;
    const { email, plan: current, userId } = this.user;
    return this.act({
      confirm: {
        title: `Move ${email} to ${plan}?`,
        message: `From ${current} to ${plan}: the plan's token quota and request limit apply to their next request.`,
        confirmLabel: `Change to ${plan}`,
      },
      call: () => this.api.json(`${userPath(userId)}/plan`, { method: "PUT", body: { plan } }),
      done: ({ data }) =>
        `Plan changed to ${data.plan}: ${formatNumber(data.monthlyLimit)} tokens a month, ` +
        `${formatNumber(data.requestsPerWindow)} requests per ${data.windowSeconds} s.`,
    });
  }

  reissueKey() {
    const { email, userId } = this.user;
    return this.act({
      confirm: {
        title: `Issue a new key for ${email}?`,
        message: "Their current key stops working at once. The new key is shown once, here.",
        confirmLabel: "Issue new key",
      },
      call: () => this.api.json(`${userPath(userId)}/key`, { method: "POST" }),
      done: ({ data }) => {
        showSecret(byId("issued-key"), {
          title: `New API key for ${email}`,
          key: data.apiKey,
          note: "Hand it to the user over a safe channel.",
        });
        return "A new key was issued; the previous one no longer works.";
      },
    });
  }

  revokeKey() {
    const { email, userId } = this.user;
    return this.act({
      confirm: {
        title: `Revoke the key of ${email}?`,
        message: "Their key stops working at once, on every gateway. You can issue a new one later.",
        confirmLabel: "Revoke key",
        danger: true,
      },
      call: () => this.api.call(`${userPath(userId)}/key`, { method: "DELETE" }),
      done: () => "The key was revoked.",
    });
  }
}
