// Typing and presence on the chat page: "bob is typing…" under the open conversation,
// an online dot (or "last seen") for 1:1 peers in the header and the list, and Typing
// frames while the user types (at most one per TYPING_REFRESH_MS). Presence comes from
// the endpoint when a 1:1 opens and from pushes after that.
import { $, el } from "./view.js";

const TYPING_REFRESH_MS = 3000;

/** @param {number} ts */
const clock = (ts) => new Date(ts).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });

export class PageSignals {
  /**
   * @param {import("/sdk/im.js").ImClient} client
   * @param {Map<string, import("./view.js").Conv>} conversations
   * @param {Map<number, string>} names
   * @param {() => string | null} openId
   */
  constructor(client, conversations, names, openId) {
    this.client = client;
    this.conversations = conversations;
    this.names = names;
    this.openId = openId;
    /** @type {Map<number, {online: boolean, lastSeenMs: number}>} */
    this.presence = new Map();
    this.lastTyping = 0;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.expiry = undefined;
    client.on("presence", (p) => {
      this.presence.set(p.userId, { online: p.online, lastSeenMs: p.lastSeenMs });
      this.render();
    });
    client.on("typing", (t) => {
      this.render();
      // Redraw when it runs out, unless refreshed (a STOPPED or a message comes first).
      clearTimeout(this.expiry);
      if (t.started) this.expiry = setTimeout(() => this.render(), t.expiresInMs + 50);
    });
    client.on("message", () => this.render());
  }

  /** The peer's presence, when a 1:1 opens. @param {import("./view.js").Conv} conv */
  async load(conv) {
    if (conv.kind !== "direct") return;
    for (const m of await this.client.gateway.conversationPresence(conv.id)) {
      this.presence.set(m.user_id, { online: m.online, lastSeenMs: m.last_seen_ms ?? 0 });
    }
    this.render();
  }

  /** The user typed in the composer. */
  typed() {
    const id = this.openId();
    const now = Date.now();
    if (!id || now - this.lastTyping < TYPING_REFRESH_MS) return;
    this.lastTyping = now;
    this.client.sendTyping(id);
  }

  /** A line went out: the next keystroke says "typing" again at once. */
  sent() {
    this.lastTyping = 0;
  }

  render() {
    const id = this.openId();
    const conv = id ? this.conversations.get(id) : undefined;
    const typing = id ? this.client.typingIn(id).filter((u) => u !== this.client.userId) : [];
    const who = typing.map((u) => this.names.get(u) ?? `user ${u}`);
    $("typing").textContent = who.length ? `${who.join(", ")} ${who.length > 1 ? "are" : "is"} typing…` : "";

    const head = $("peer-presence");
    head.replaceChildren();
    head.dataset.state = "";
    const peer = conv && conv.kind === "direct" ? this.presence.get(conv.peerId) : undefined;
    if (peer?.online) {
      head.dataset.state = "online";
      head.append(el("span", { class: "dot", "aria-hidden": "true" }), "online");
    } else if (peer?.lastSeenMs) {
      head.dataset.state = "offline";
      head.append(`last seen ${clock(peer.lastSeenMs)}`);
    }
    for (const button of $("conversations").querySelectorAll("button[data-id]")) {
      const c = this.conversations.get(/** @type {string} */ (button.getAttribute("data-id")));
      const online = c?.kind === "direct" && this.presence.get(c.peerId)?.online;
      button.querySelector(".dot")?.remove();
      if (online) button.prepend(el("span", { class: "dot", "data-testid": "online", "aria-label": "online" }));
    }
  }
}
