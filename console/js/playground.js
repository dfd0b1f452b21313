// The user console's playground: one prompt, its answer streamed as it is generated (Server-Sent
// Events over the POST response of /v1/chat, read with fetch, since EventSource can only GET),
// and the tokens it used at the end.

import { ApiError, describeError, readEvents } from "./api.js";
import { byId, formatNumber, say } from "./ui.js";

function showEvent(payload, output) {
  if (payload.type === "delta") {
    output.append(payload.output);
  } else if (payload.type === "done") {
    const tokens = byId("chat-tokens");
    tokens.dataset.tokensUsed = String(payload.tokensUsed);
    const parts = Number.isInteger(payload.promptTokens)
      ? ` (prompt ${formatNumber(payload.promptTokens)}, completion ${formatNumber(payload.completionTokens)})`
      : "";
    say(tokens, `Tokens used: ${formatNumber(payload.tokensUsed)}${parts}.`, "ok");
  } else if (payload.type === "error") {
    const error = new ApiError(payload.message, { status: 502, code: payload.code, requestId: payload.requestId });
    const charged = `Tokens charged: ${formatNumber(payload.tokensUsed)}.`;
    say(byId("chat-error"), `The answer stopped: ${describeError(error)} ${charged}`, "error");
  }
}

/** The playground of a page: `api` sends the chat, `report(region, error)` shows a failure,
 * `finished()` runs after every chat (the page refreshes its figures). */
export class Playground {
  constructor({ api, report, finished }) {
    this.api = api;
    this.report = report;
    this.finished = finished;
    this.abort = null;
    byId("chat-stop").addEventListener("click", () => this.stop());
  }

  stop() {
    if (this.abort) this.abort.abort();
  }

  clear() {
    this.stop();
    byId("chat-output").textContent = "";
    say(byId("chat-tokens"), "");
    delete byId("chat-tokens").dataset.tokensUsed;
    say(byId("chat-error"), "");
  }

  async send(prompt) {
    this.clear();
    const output = byId("chat-output");
    this.abort = new AbortController();
    byId("chat-stop").hidden = false;
    try {
      const response = await this.api.call("/v1/chat", {
        method: "POST",
        body: { prompt, stream: true },
        signal: this.abort.signal,
      });
      if ((response.headers.get("content-type") || "").startsWith("text/event-stream")) {
        await readEvents(response, (event) => showEvent(JSON.parse(event.data), output));
      } else {
        const data = await response.json();
        showEvent({ type: "delta", output: data.output }, output);
        showEvent({ type: "done", tokensUsed: data.tokensUsed }, output);
      }
    } catch (error) {
      if (error.name === "AbortError") say(byId("chat-error"), "Stopped.", "");
      else this.report(byId("chat-error"), error);
    } finally {
      this.abort = null;
      byId("chat-stop").hidden = true;
    }
    await this.finished();
  }
}
