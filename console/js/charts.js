// Requests and tokens per day: two bar charts drawn by the vendored uPlot (a global from its IIFE
// build), and the same figures as a table for screen readers and for exact numbers.

import { count, el, fillTable, formatNumber } from "./ui.js";

const DAY = 86400;
const COLOURS = { requests: "#1d4ed8", errors: "#b91c1c", tokens: "#166534" };

// Whole numbers of requests and tokens on the y axes (no 0.25 of a request).
const COUNT_STEPS = [1, 2, 5].flatMap((step) => [1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7].map((p) => step * p));
COUNT_STEPS.sort((a, b) => a - b);

/** Every day of `period` (YYYY-MM), as YYYY-MM-DD. */
export function daysOf(period) {
  const [year, month] = period.split("-").map(Number);
  const last = new Date(Date.UTC(year, month, 0)).getUTCDate();
  return Array.from({ length: last }, (_, i) => `${period}-${String(i + 1).padStart(2, "0")}`);
}

/** The x range: the whole month (the data's first and last day), half a day either side. */
function monthRange(u) {
  const xs = u.data[0];
  return xs.length ? [xs[0] - DAY / 2, xs[xs.length - 1] + DAY / 2] : [0, DAY];
}

function barChart(container, { label, series }) {
  const opts = {
    width: Math.max(container.clientWidth, 200),
    height: 200,
    legend: { show: true, live: false },
    cursor: { drag: { x: false, y: false } },
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
    scales: {
      x: { time: true, range: monthRange },
      y: { range: (u, min, max) => [0, Math.max(max * 1.1, 1)] },
    },
    axes: [
      { stroke: "#374151", grid: { stroke: "#e5e7eb" }, ticks: { stroke: "#9ca3af" } },
      { stroke: "#374151", grid: { stroke: "#e5e7eb" }, ticks: { stroke: "#9ca3af" }, size: 56, incrs: COUNT_STEPS },
    ],
    series: [
      { label: "Day (UTC)" },
      ...series.map((s, index) => ({
        label: s.label,
        stroke: COLOURS[s.key],
        fill: `${COLOURS[s.key]}99`,
        width: 1,
        points: { show: false },
        paths: uPlot.paths.bars({ size: [series.length > 1 ? 0.4 : 0.6, 48], align: index ? 1 : -1 }),
      })),
    ],
  };
  const chart = new uPlot(opts, [[], ...series.map(() => [])], container);
  chart.root.setAttribute("role", "img");
  chart.root.setAttribute("aria-label", label);
  new ResizeObserver(() => {
    const width = Math.max(container.clientWidth, 200);
    if (width !== chart.width) chart.setSize({ width, height: 200 });
  }).observe(container);
  return chart;
}

/** The daily charts and table of one section: `ids` names its requests chart, tokens chart,
 * table body and summary elements. */
export class DailyFigures {
  constructor({ requestsChart, tokensChart, tableBody, summary }) {
    this.tableBody = tableBody;
    this.summary = summary;
    this.requests = barChart(requestsChart, {
      label: "Bar chart of requests and errors per day",
      series: [
        { label: "Requests", key: "requests" },
        { label: "Errors", key: "errors" },
      ],
    });
    this.tokens = barChart(tokensChart, {
      label: "Bar chart of tokens per day",
      series: [{ label: "Tokens", key: "tokens" }],
    });
  }

  /** Show `{period, days: [{date, requests, tokens, errors, refused?}]}` over the whole month:
   * days to come have no bar, past days without figures count as zero. */
  show({ period, days }) {
    const byDate = new Map(days.map((day) => [day.date, day]));
    const today = new Date().toISOString().slice(0, 10);
    const dates = daysOf(period);
    const figure = (date, key) => (date > today ? null : Number((byDate.get(date) || {})[key] || 0));
    const xs = dates.map((date) => Date.parse(`${date}T00:00:00Z`) / 1000);
    this.requests.setData([xs, dates.map((d) => figure(d, "requests")), dates.map((d) => figure(d, "errors"))]);
    this.tokens.setData([xs, dates.map((d) => figure(d, "tokens"))]);
    const active = days.filter((d) => d.requests || d.tokens || d.errors || d.refused);
    const totals = (key) => days.reduce((sum, day) => sum + Number(day[key] || 0), 0);
    this.summary.textContent = active.length
      ? `${period}: ${count(totals("requests"), "request", "requests")}, ` +
        `${count(totals("tokens"), "token", "tokens")}, ${count(totals("errors"), "error", "errors")}.`
      : `${period}: no requests yet.`;
    fillTable(
      this.tableBody,
      [...active].sort((a, b) => b.date.localeCompare(a.date)),
      (day) => [
        [day.date, ""],
        [formatNumber(day.requests || 0), "num requests"],
        [formatNumber(day.tokens || 0), "num tokens"],
        [formatNumber(day.errors || 0), "num errors"],
        [day.refused === undefined ? "–" : formatNumber(day.refused), "num refused"],
      ],
      (day) => ({ "data-date": day.date }),
    );
    return { requests: totals("requests"), errors: totals("errors"), tokens: totals("tokens") };
  }
}

/** The markup of a DailyFigures block, for a section to append (ids prefixed with `prefix`). */
export function dailyFiguresMarkup(prefix) {
  const tableId = `${prefix}-table`;
  return el(
    "div",
    {},
    el("p", { id: `${prefix}-summary`, class: "muted", role: "status" }),
    el(
      "div",
      { class: "chart-block" },
      el("h3", { id: `${prefix}-requests-title`, text: "Requests and errors per day" }),
      el("div", { id: `${prefix}-requests-chart`, class: "chart" }),
    ),
    el(
      "div",
      { class: "chart-block" },
      el("h3", { text: "Tokens per day" }),
      el("div", { id: `${prefix}-tokens-chart`, class: "chart" }),
    ),
    el(
      "details",
      {},
      el("summary", { text: "The figures as a table" }),
      el(
        "div",
        { class: "table-scroll" },
        el(
          "table",
          { id: tableId },
          el("caption", { class: "visually-hidden", text: "Requests, tokens and errors per day (UTC)" }),
          el(
            "thead",
            {},
            el(
              "tr",
              {},
              el("th", { scope: "col", text: "Day" }),
              el("th", { scope: "col", class: "num", text: "Requests" }),
              el("th", { scope: "col", class: "num", text: "Tokens" }),
              el("th", { scope: "col", class: "num", text: "Errors" }),
              el("th", { scope: "col", class: "num", text: "Refused" }),
            ),
          ),
          el("tbody", { id: `${prefix}-tbody` }),
        ),
      ),
    ),
  );
}

/** Build the markup into `container` and return its DailyFigures. */
export function mountDailyFigures(container, prefix) {
  container.append(dailyFiguresMarkup(prefix));
  const find = (suffix) => document.getElementById(`${prefix}-${suffix}`);
  return new DailyFigures({
    requestsChart: find("requests-chart"),
    tokensChart: find("tokens-chart"),
    tableBody: find("tbody"),
    summary: find("summary"),
  });
}
