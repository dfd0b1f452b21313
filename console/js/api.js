// InferGate's HTTP API as the consoles call it: every response becomes data or an ApiError with a
// readable message, and a streamed chat (Server-Sent Events over a POST response) becomes events.

/** An API answer other than 2xx, or no answer at all (status 0). */
export class ApiError extends Error {
  constructor(message, { status = 0, code = null, requestId = null, retryAfterSeconds = null } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.requestId = requestId;
    this.retryAfterSeconds = retryAfterSeconds;
  }
}

/** Seconds to wait from Retry-After (seconds or an HTTP date; it takes precedence), else
 * retry-after-ms; null when the response names neither. */
export function retryAfterSeconds(headers) {
  const value = headers.get("retry-after");
  if (value && /^\d+$/.test(value.trim())) return Number(value.trim());
  if (value && !Number.isNaN(Date.parse(value))) {
    return Math.max(0, Math.ceil((Date.parse(value) - Date.now()) / 1000));
  }
  const ms = headers.get("retry-after-ms");
  if (ms && /^\d+$/.test(ms.trim())) return Math.ceil(Number(ms.trim()) / 1000);
  return null;
}

/** The ApiError of a non-2xx response: InferGate's `{"message","code","requestId"}` or
 * OpenAI's `{"error": {"message","type","code"}}`, or only the status if the body is neither. */
export async function errorFrom(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null; // not JSON (a proxy's page): the status says enough
  }
  const detail = body && typeof body.error === "object" && body.error !== null ? body.error : body;
  const message =
    detail && typeof detail.message === "string" && detail.message
      ? detail.message
      : `The server answered ${response.status} ${response.statusText}`.trim();
  return new ApiError(message, {
    status: response.status,
    code: (detail && (detail.code || detail.type)) || null,
    requestId: (body && body.requestId) || response.headers.get("x-request-id"),
    retryAfterSeconds: retryAfterSeconds(response.headers),
  });
}

/** One sentence for people: what went wrong and what to do. */
export function describeError(error) {
  if (!(error instanceof ApiError)) {
    return `Something went wrong in the console: ${error && error.message ? error.message : error}`;
  }
  let text;
  if (error.status === 0) {
    text = "Could not reach InferGate. Check your connection and try again.";
  } else if (error.status === 429) {
    const wait = error.retryAfterSeconds;
    text = wait === null ? "Rate limit reached; try again later." : `Rate limit reached; try again in ${wait} s.`;
    if (error.code === "registration_rate_limited") text = `${error.message} ${text}`;
  } else {
    text = /[.!?]$/.test(error.message) ? error.message : `${error.message}.`;
  }
  return error.requestId ? `${text} (request id ${error.requestId})` : text;
}

/** A random token for Idempotency-Key (crypto.randomUUID needs a secure context; this does not). */
export function idempotencyKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** A client of one API surface; `credentials()` returns the headers that authenticate a call. */
export class Api {
  constructor(credentials) {
    this.credentials = credentials;
  }

  /** The response of a call (2xx), or throws ApiError. `body` is sent as JSON. */
  async call(path, { method = "GET", body, headers = {}, signal } = {}) {
    const init = { method, headers: { ...this.credentials(), ...headers }, signal, cache: "no-store" };
    if (body !== undefined) {
      init.headers["content-type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (error) {
      if (error && error.name === "AbortError") throw error;
      throw new ApiError("network error");
    }
    if (!response.ok) throw await errorFrom(response);
    return response;
  }

  /** The JSON body of a call, with the response's headers: `{data, headers}`. */
  async json(path, options) {
    const response = await this.call(path, options);
    return { data: await response.json(), headers: response.headers };
  }
}

/** Calls `onEvent({event, data})` for each Server-Sent Event of a streamed response body. */
export async function readEvents(response, onEvent) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value.replace(/\r\n/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) !== -1) {
      const event = parseEvent(buffer.slice(0, end));
      buffer = buffer.slice(end + 2);
      if (event) onEvent(event);
    }
  }
  const last = parseEvent(buffer);
  if (last) onEvent(last);
}

function parseEvent(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
  }
  return data.length ? { event, data: data.join("\n") } : null;
}
