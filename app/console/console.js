// The console page: the forms, wired to the public API and to one task panel at a time.

import { Api } from "./api.js";
import { TaskStream } from "./task-stream.js";
import { TaskView, handlersFor } from "./task-view.js";

const KEY_STORAGE = "agent-service.api-key";

const $ = (id) => document.getElementById(id);

const storedKey = () => sessionStorage.getItem(KEY_STORAGE) ?? "";
const api = new Api(storedKey);
const view = new TaskView();
let stream = null;
let currentTask = null;
const descriptions = new Map();

function say(element, text, { error = false } = {}) {
  element.textContent = text;
  element.classList.toggle("error", error);
}

function needKey(element) {
  if (storedKey()) return false;
  say(element, "Enter an API key first.", { error: true });
  $("api-key").focus();
  return true;
}

async function loadAgents() {
  const select = $("agent");
  say($("key-message"), "Checking the key…");
  let listed;
  try {
    listed = await api.agents();
  } catch (error) {
    select.disabled = true;
    select.replaceChildren(new Option("Enter an API key first", ""));
    descriptions.clear();
    $("agent-description").textContent = "";
    say($("key-message"), error.message, { error: true });
    return;
  }
  const previous = select.value;
  descriptions.clear();
  select.replaceChildren(
    ...listed.agents.map((agent) => {
      descriptions.set(agent.id, agent.description);
      return new Option(agent.id, agent.id);
    }),
  );
  if (descriptions.has(previous)) select.value = previous;
  select.disabled = listed.agents.length === 0;
  showDescription();
  const count = listed.agents.length;
  say($("key-message"), `Key accepted: ${count} agent${count === 1 ? "" : "s"} available.`);
}

function showDescription() {
  $("agent-description").textContent = descriptions.get($("agent").value) ?? "";
}

// Watch `taskId`'s events from `url` (or from a freshly minted URL when none is given).
function watch(taskId, url) {
  if (stream !== null) stream.close();
  currentTask = taskId;
  view.start(taskId);
  stream = new TaskStream({
    url,
    handlers: handlersFor(view),
    renewUrl: (lastEventId) => api.streamUrl(taskId, lastEventId),
    onConnection: (state, error) => view.showConnection(state, error),
  });
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const key = $("api-key").value.trim();
  if (!key) return;
  sessionStorage.setItem(KEY_STORAGE, key);
  loadAgents();
});

$("forget-key").addEventListener("click", () => {
  sessionStorage.removeItem(KEY_STORAGE);
  $("api-key").value = "";
  $("agent").disabled = true;
  $("agent").replaceChildren(new Option("Enter an API key first", ""));
  descriptions.clear();
  showDescription();
  say($("key-message"), "Key forgotten.");
  $("api-key").focus();
});

$("agent").addEventListener("change", showDescription);

$("message").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
    event.preventDefault();
    $("send-form").requestSubmit();
  }
});

$("new-session").addEventListener("click", async () => {
  if (needKey($("send-message"))) return;
  try {
    const session = await api.createSession();
    $("session").value = session.session_id;
    say($("send-message"), `New session ${session.session_id}.`);
  } catch (error) {
    say($("send-message"), error.message, { error: true });
  }
});

$("send-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (needKey($("send-message"))) return;
  const button = $("send");
  button.disabled = true;
  say($("send-message"), "Sending…");
  try {
    const accepted = await api.invoke($("agent").value, {
      message: $("message").value,
      sessionId: $("session").value.trim(),
    });
    say($("send-message"), `Sent as task ${accepted.task_id}.`);
    watch(accepted.task_id, accepted.stream_url);
    $("task").scrollIntoView({ block: "nearest" });
  } catch (error) {
    say($("send-message"), error.message, { error: true });
  } finally {
    button.disabled = false;
  }
});

$("open-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (needKey($("open-message"))) return;
  const taskId = $("open-task-id").value.trim();
  if (!taskId) return;
  say($("open-message"), "Opening…");
  let url;
  try {
    url = await api.streamUrl(taskId, "");
  } catch (error) {
    const text = error.status === 404 ? `No task ${taskId} for this key (404).` : error.message;
    say($("open-message"), text, { error: true });
    return;
  }
  say($("open-message"), `Showing task ${taskId} from its start.`);
  watch(taskId, url);
  $("task").scrollIntoView({ block: "nearest" });
});

$("cancel").addEventListener("click", async () => {
  if (currentTask === null) return;
  const button = $("cancel");
  button.disabled = true;
  try {
    const status = await api.cancel(currentTask);
    if (["completed", "failed", "cancelled"].includes(status.status)) {
      view.setOutcome(`The task had already ended (${status.status}).`, false);
    } else {
      view.cancelRequested();
    }
  } catch (error) {
    button.disabled = false;
    view.setOutcome(error.message, true);
  }
});

if (storedKey()) {
  $("api-key").value = storedKey();
  loadAgents();
}
