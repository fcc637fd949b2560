// The public REST API, as the console calls it: the same endpoints as any other client.
//
// The API key travels in the X-API-Key header only, never in a URL. Paths are relative to the
// page (/console), so the console works wherever the service is mounted. Every failure becomes an
// ApiError whose message a person can read: what happened, the server's own words, what to do.

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.name = "ApiError";
    // The HTTP status, or 0 when the server could not be reached at all.
    this.status = status;
  }

  // Worth trying again later: the server is down, busy or restarting.
  get transient() {
    return this.status === 0 || this.status === 429 || this.status >= 500;
  }
}

// The server's `detail`: a sentence, or a list of {loc, msg} items naming fields.
function describeDetail(detail) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail
      .map((item) => {
        const field = Array.isArray(item.loc) ? item.loc.filter((p) => p !== "body").join(".") : "";
        return field ? `${field}: ${item.msg}` : item.msg;
      })
      .join("; ");
  }
  return "";
}

function explain(status, detail, retryAfter) {
  const said = detail ? ` (${detail})` : "";
  switch (status) {
    case 401:
      return `The server refused this API key (401)${said}. Check the key and enter it again.`;
    case 404:
      return `Not found (404)${said}.`;
    case 413:
    case 422:
      return `The server did not accept the request (${status})${said}.`;
    case 429: {
      const wait = retryAfter ? ` Try again in ${retryAfter} s.` : " Try again shortly.";
      return `Too many requests (429)${said}.${wait}`;
    }
    case 503:
      return `The service is unavailable right now (503)${said}. Try again shortly.`;
    default:
      return `The server answered ${status}${said}.`;
  }
}

export class Api {
  // `key` is a function returning the current API key (or "" when none is set).
  constructor(key) {
    this.key = key;
  }

  async request(method, path, body) {
    const headers = { Accept: "application/json", "X-API-Key": this.key() };
    const init = { method, headers, cache: "no-store", credentials: "omit" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch {
      throw new ApiError(0, "Cannot reach the server. Is it running? Try again in a moment.");
    }
    let payload = null;
    try {
      payload = await response.json();
    } catch {
      payload = null;
    }
    if (!response.ok) {
      const detail = payload ? describeDetail(payload.detail) : "";
      throw new ApiError(
        response.status,
        explain(response.status, detail, response.headers.get("Retry-After")),
      );
    }
    return payload;
  }

  agents() {
    return this.request("GET", "api/v1/agents");
  }

  invoke(agentId, { message, sessionId }) {
    const body = { message, stream: true };
    if (sessionId) body.session_id = sessionId;
    return this.request("POST", `api/v1/agents/${encodeURIComponent(agentId)}/invoke-async`, body);
  }

  cancel(taskId) {
    return this.request("POST", `api/v1/agents/tasks/${encodeURIComponent(taskId)}/cancel`);
  }

  createSession() {
    return this.request("POST", "api/v1/sessions");
  }

  // A URL that opens this task's event stream: a token scoped to the task (it opens nothing
  // else, so it may sit in the URL where EventSource needs it), resuming after `lastEventId`.
  async streamUrl(taskId, lastEventId) {
    const issued = await this.request("POST", "api/v1/auth/token", { task_id: taskId });
    const query = new URLSearchParams({ token: issued.access_token });
    if (lastEventId) query.set("last_event_id", lastEventId);
    return `api/v1/agents/tasks/${encodeURIComponent(taskId)}/events?${query}`;
  }
}
