// One task's event stream, read with EventSource, handed to a table of handlers by event type.
//
// Only the types in the table are listened to, so a type the page does not know (new ones may
// appear: an agent's own steps, say) is ignored by construction; showing one is one more entry.
//
// Two kinds of `error` reach an EventSource: the server's `error` event, which always has data
// and ends the task, and the browser's own, without data, when the connection drops. For the
// latter the browser reconnects by itself and sends Last-Event-ID, so nothing is lost or
// repeated. When the browser gives up instead (an HTTP error while reconnecting, such as a token
// that a restarted server no longer accepts), this module asks for a fresh stream URL that
// resumes after the last event it saw, and tries again with a growing pause.

export const TERMINAL = new Set(["result", "error", "cancelled"]);

const FIRST_PAUSE_MS = 1000;
const LONGEST_PAUSE_MS = 10000;

export class TaskStream {
  // handlers: {eventType: (data) => void}; terminal types end the stream after their handler.
  // renewUrl(lastEventId): a promise of a new stream URL; it rejects with an ApiError.
  // onConnection(state): "connecting", "live", "reconnecting", "ended" or "failed" (with error).
  constructor({ url, handlers, renewUrl, onConnection }) {
    this.handlers = handlers;
    this.renewUrl = renewUrl;
    this.onConnection = onConnection;
    this.lastEventId = "";
    this.source = null;
    this.timer = null;
    this.pause = FIRST_PAUSE_MS;
    this.finished = false;
    this.connect(url);
  }

  connect(url) {
    this.onConnection("connecting");
    const source = new EventSource(url);
    this.source = source;
    source.addEventListener("open", () => {
      this.pause = FIRST_PAUSE_MS;
      this.onConnection("live");
    });
    for (const type of Object.keys(this.handlers)) {
      if (type === "error") continue;
      source.addEventListener(type, (event) => this.deliver(type, event));
    }
    source.addEventListener("error", (event) => {
      if (typeof event.data === "string") {
        this.deliver("error", event);
      } else if (source.readyState === EventSource.CLOSED) {
        this.renewLater();
      } else {
        this.onConnection("reconnecting");
      }
    });
  }

  deliver(type, event) {
    if (this.finished) return;
    if (event.lastEventId) this.lastEventId = event.lastEventId;
    let data;
    try {
      data = JSON.parse(event.data);
    } catch {
      return; // not one of ours: every event of the protocol carries JSON
    }
    const handler = this.handlers[type];
    if (handler) handler(data);
    if (TERMINAL.has(type)) {
      this.finished = true;
      this.source.close();
      this.onConnection("ended");
    }
  }

  renewLater() {
    this.source.close();
    if (this.finished) return;
    this.onConnection("reconnecting");
    const pause = this.pause;
    this.pause = Math.min(this.pause * 2, LONGEST_PAUSE_MS);
    this.timer = setTimeout(async () => {
      this.timer = null;
      if (this.finished) return;
      let url;
      try {
        url = await this.renewUrl(this.lastEventId);
      } catch (error) {
        if (error.transient) {
          this.renewLater();
        } else {
          this.finished = true;
          this.onConnection("failed", error);
        }
        return;
      }
      if (!this.finished) this.connect(url);
    }, pause);
  }

  close() {
    this.finished = true;
    if (this.timer !== null) clearTimeout(this.timer);
    if (this.source !== null) this.source.close();
  }
}
