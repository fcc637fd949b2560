// The task panel: what one task looks like on the page, and which event type changes what.
//
// `handlersFor(view)` is the whole mapping from the stream protocol to the page. A new event
// type (an agent reporting its steps, a tool call) is one entry there and one method here.

const CONNECTION = {
  connecting: "connecting…",
  live: "live",
  reconnecting: "reconnecting…",
  ended: "ended",
  failed: "closed",
};

function byId(id) {
  return document.getElementById(id);
}

export class TaskView {
  constructor() {
    this.id = byId("task-id");
    this.status = byId("task-status");
    this.connection = byId("task-connection");
    this.progress = byId("task-progress");
    this.stage = byId("task-stage");
    this.cancel = byId("cancel");
    this.answer = byId("answer");
    this.outcome = byId("task-outcome");
    this.ended = true;
    this.percent = 0;
  }

  // A fresh panel for `taskId`, whose events are about to arrive.
  start(taskId) {
    this.id.textContent = taskId;
    this.status.textContent = "opening";
    this.connection.textContent = "";
    this.setProgress(0, "");
    this.answer.replaceChildren();
    this.answer.setAttribute("aria-busy", "true");
    this.setOutcome("", false);
    this.cancel.disabled = false;
    this.ended = false;
  }

  setProgress(value, stage) {
    const percent = Math.max(0, Math.min(100, Math.round(value)));
    this.percent = percent;
    this.progress.value = percent;
    this.progress.textContent = `${percent}%`;
    this.stage.textContent = stage ? `${stage} · ${percent}%` : `${percent}%`;
  }

  setOutcome(text, isError) {
    this.outcome.textContent = text;
    this.outcome.classList.toggle("error", isError);
  }

  showStatus({ status, attempt, error }) {
    if (status === "running" && attempt > 1) {
      this.status.textContent = `running (attempt ${attempt})`;
    } else if (status === "retrying" && error) {
      this.status.textContent = `retrying after ${error.type}: ${error.message}`;
    } else {
      this.status.textContent = status;
    }
  }

  showProgress({ progress, stage }) {
    this.setProgress(progress, stage);
  }

  appendText(text) {
    this.answer.append(document.createTextNode(text));
  }

  // A reset: what the page holds is discarded, the answer so far is `content`.
  replaceText(content) {
    this.answer.replaceChildren(document.createTextNode(content));
  }

  // The cancel request was accepted; the `cancelled` event may already have arrived.
  cancelRequested() {
    if (!this.ended) this.status.textContent = "cancelling…";
  }

  finish(status) {
    this.ended = true;
    this.status.textContent = status;
    this.setProgress(status === "completed" ? 100 : this.percent, status);
    this.cancel.disabled = true;
    this.answer.setAttribute("aria-busy", "false");
  }

  showResult(result) {
    // The result holds the whole answer: a task run without streaming has sent no chunks.
    if (typeof result.content === "string" && this.answer.textContent !== result.content) {
      this.replaceText(result.content);
    }
    this.finish("completed");
    this.setOutcome(describeUsage(result.usage), false);
  }

  showFailure(error) {
    if (typeof error.content === "string") this.replaceText(error.content);
    this.finish("failed");
    this.setOutcome(`Failed: ${error.type}: ${error.message}`, true);
  }

  showCancelled(cancelled) {
    if (typeof cancelled.content === "string") this.replaceText(cancelled.content);
    this.finish("cancelled");
    this.setOutcome("Cancelled: the answer above is what had arrived.", false);
  }

  showConnection(state, error) {
    this.connection.textContent = CONNECTION[state] ?? state;
    if (state === "failed") {
      this.cancel.disabled = true;
      this.answer.setAttribute("aria-busy", "false");
      this.setOutcome(`The stream stopped: ${error.message}`, true);
    }
  }
}

function describeUsage(usage) {
  if (!usage || typeof usage !== "object") return "Completed.";
  const parts = [];
  if (Number.isInteger(usage.prompt_tokens)) parts.push(`${usage.prompt_tokens} prompt`);
  if (Number.isInteger(usage.completion_tokens)) {
    parts.push(`${usage.completion_tokens} completion`);
  }
  if (Number.isInteger(usage.total_tokens)) parts.push(`${usage.total_tokens} total`);
  return parts.length ? `Completed. Usage: ${parts.join(", ")} tokens.` : "Completed.";
}

// Event type -> what it does to the view. Types not listed are not listened to.
export function handlersFor(view) {
  return {
    status: (data) => view.showStatus(data),
    progress: (data) => view.showProgress(data),
    chunk: (data) => view.appendText(data.text),
    reset: (data) => view.replaceText(data.content),
    result: (data) => view.showResult(data),
    error: (data) => view.showFailure(data),
    cancelled: (data) => view.showCancelled(data),
  };
}
