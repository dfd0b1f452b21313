// The operator console (served only on nginx's operator listener): the admin token in this tab's
// sessionStorage, users with search and paging, one user's usage, history, plan and key, totals
// per day across users, the top users by tokens and the error rate.

import { Api, ApiError, describeError } from "../js/api.js";
import { mountDailyFigures } from "../js/charts.js";
import {
  busy,
  byId,
  count,
  currentPeriod,
  el,
  fillTable,
  formatNumber,
  formatPercent,
  formatTime,
  say,
  setUpConfirmDialog,
} from "../js/ui.js";
import { UserDetail, userPath } from "./user-detail.js";

const TOKEN_ITEM = "infergate.adminToken";
const PAGE_SIZE = 20;

const session = {
  get token() {
    return sessionStorage.getItem(TOKEN_ITEM);
  },
  set token(value) {
    if (value) sessionStorage.setItem(TOKEN_ITEM, value);
    else sessionStorage.removeItem(TOKEN_ITEM);
  },
};
const tokenHeaders = (token) => (token ? { "x-admin-token": token } : {});
const api = new Api(() => tokenHeaders(session.token));

const users = { search: "", cursors: [null], page: 0 };
const detail = new UserDetail({
  api,
  report: (region, error) => report(region, error),
  changed: () => loadUsers(users.page),
});
let totals = null;

// -- session ----------------------------------------------------------------------------------

/** Why signing in failed: a refused token, or no admin API behind this listener at all. */
function explainSignIn(error) {
  if (error instanceof ApiError && error.status === 401) return "The admin token was refused.";
  if (error instanceof ApiError && error.status === 404) {
    return "The admin API is off: set ADMIN_TOKEN (16 characters or more) for the gateways.";
  }
  return describeError(error);
}

/** A refused token (changed on the gateways) ends the session; other errors are shown. */
function report(region, error) {
  if (error instanceof ApiError && error.status === 401 && session.token) {
    signOut(`You were signed out: ${explainSignIn(error)}`);
    return;
  }
  say(region, describeError(error), "error");
}

async function signIn(token) {
  const first = await new Api(() => tokenHeaders(token)).json(usersPath(""));
  session.token = token;
  byId("signed-out").hidden = true;
  byId("signed-in").hidden = false;
  byId("nav").hidden = false;
  byId("session").hidden = false;
  if (!totals) totals = mountDailyFigures(byId("totals-figures"), "totals");
  showUsers(first.data);
  await loadOverview();
}

function signOut(message = "") {
  session.token = null;
  byId("signed-in").hidden = true;
  byId("nav").hidden = true;
  byId("session").hidden = true;
  byId("signed-out").hidden = false;
  detail.hide();
  say(byId("page-status"), message, "ok");
  byId("admin-token").value = "";
  byId("admin-token").focus();
}

// -- overview ---------------------------------------------------------------------------------

async function loadOverview() {
  const period = byId("period").value || currentPeriod();
  const query = new URLSearchParams({ period });
  try {
    const [{ data: daily }, { data: top }] = await Promise.all([
      api.json(`/admin/usage/daily?${query}`),
      api.json(`/admin/usage/top?${query}&limit=10`),
    ]);
    const sums = totals.show(daily);
    byId("error-rate").textContent = sums.requests
      ? `${formatPercent((sums.errors / sums.requests) * 100)} in ${daily.period} ` +
        `(${count(sums.errors, "error", "errors")} in ${count(sums.requests, "request", "requests")}).`
      : `No requests in ${daily.period}.`;
    await showTop(top.data);
    say(byId("overview-error"), "");
  } catch (error) {
    report(byId("overview-error"), error);
  }
}

async function showTop(rows) {
  // The ranking names users by id: their emails are looked up (ten small calls at most).
  const found = await Promise.allSettled(rows.map((row) => api.json(userPath(row.userId))));
  const emails = new Map(found.map((result, i) => [rows[i].userId, result.value && result.value.data.email]));
  fillTable(
    byId("top-body"),
    rows.map((row, index) => ({ ...row, rank: index + 1 })),
    (row) => [
      [String(row.rank), "num"],
      [emails.get(row.userId) || row.userId, emails.get(row.userId) ? "" : "id"],
      [formatNumber(row.tokens), "num"],
      [formatNumber(row.requests), "num"],
      [openButton(row.userId, emails.get(row.userId) || row.userId), ""],
    ],
    (row) => ({ "data-user-id": row.userId }),
  );
  byId("top-empty").hidden = rows.length > 0;
}

// -- users ------------------------------------------------------------------------------------

function usersPath(cursor) {
  const query = new URLSearchParams({ search: users.search, limit: String(PAGE_SIZE) });
  if (cursor) query.set("cursor", cursor);
  return `/admin/users?${query}`;
}

function openButton(userId, name) {
  return el("button", {
    type: "button",
    class: "link",
    text: "Open",
    "aria-label": `Open ${name}`,
    onclick: () => detail.open(userId),
  });
}

function showUsers(page) {
  fillTable(
    byId("users-body"),
    page.data,
    (user) => [
      [user.email, ""],
      [user.plan, ""],
      [user.keyPrefix ? `${user.keyPrefix}…` : "revoked", user.keyPrefix ? "key" : "status-error"],
      [formatTime(user.createdAt), ""],
      [openButton(user.userId, user.email), ""],
    ],
    (user) => ({ "data-user-id": user.userId }),
  );
  users.cursors[users.page + 1] = page.nextCursor || null;
  byId("users-empty").hidden = page.data.length > 0;
  byId("users-previous").disabled = users.page === 0;
  byId("users-next").disabled = !page.nextCursor;
  byId("users-page").textContent = `Page ${users.page + 1}`;
  say(byId("users-error"), "");
}

async function loadUsers(page) {
  try {
    const { data } = await api.json(usersPath(users.cursors[page]));
    users.page = page;
    showUsers(data);
  } catch (error) {
    report(byId("users-error"), error);
  }
}

// -- wiring -----------------------------------------------------------------------------------

function onSubmit(formId, handler) {
  byId(formId).addEventListener("submit", (event) => {
    event.preventDefault();
    const button = event.submitter || event.target.querySelector("button[type=submit]");
    busy(button, handler);
  });
}

function wire() {
  setUpConfirmDialog();
  byId("period").value = currentPeriod();
  onSubmit("signin-form", async () => {
    const token = byId("admin-token").value.trim();
    if (!token) return say(byId("signin-error"), "Paste the admin token first.", "error");
    try {
      await signIn(token);
      say(byId("signin-error"), "");
      say(byId("page-status"), "");
      byId("main").focus();
    } catch (error) {
      say(byId("signin-error"), explainSignIn(error), "error");
    }
  });
  onSubmit("period-form", loadOverview);
  onSubmit("search-form", () => {
    users.search = byId("search").value.trim();
    users.cursors = [null];
    return loadUsers(0);
  });
  byId("users-next").addEventListener("click", () => loadUsers(users.page + 1));
  byId("users-previous").addEventListener("click", () => loadUsers(users.page - 1));
  byId("sign-out").addEventListener("click", () => signOut("You are signed out."));
}

async function start() {
  wire();
  if (!session.token) return;
  try {
    await signIn(session.token);
  } catch (error) {
    signOut(`Please sign in again: ${explainSignIn(error)}`);
  }
}

start();
