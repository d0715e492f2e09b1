// Rendering of the chat page: plain DOM, text always set as textContent (a message
// is never HTML). The state it draws is app.js's.
import { describeGroupEvent, isEvent, isGroupEvent } from "/sdk/im.js";

/**
 * @typedef {object} Pending a message of ours without its seq yet
 * @property {string} cmid
 * @property {string} text
 * @property {"sending" | "sent" | "failed"} status
 * @property {string} [error]
 */

/**
 * @typedef {object} Conv
 * @property {string} id
 * @property {"direct" | "group"} kind
 * @property {string} name
 * @property {number} peerId 0 for groups
 * @property {number} lastSeq
 * @property {number} readPoint we have read up to here (or joined the group there)
 * @property {Map<number, import("/sdk/im.js").Message>} messages by seq
 * @property {Map<string, Pending>} pending by client_msg_id
 * @property {Map<number, number>} reads the other members' read cursors
 * @property {{user_id: number, role: string}[]} members groups, once the panel asked
 * @property {boolean} loaded the latest page of history is in
 * @property {boolean} exhausted nothing older to load
 * @property {boolean} loading
 * @property {number} touched for the list order: last activity
 * @property {boolean} [dissolved] a dissolved group: read-only
 * @property {boolean} pinned listed first (our own setting, on every device of ours)
 * @property {number} mutedUntil ms since the epoch; 0 not muted; -1 muted forever
 * @property {boolean} archived listed last, under "Archived" (our own setting)
 * @property {string} ownName our own name for it, shown instead of its title ("" none)
 * @property {{user_id: number, requested_at: number}[]} requests join requests waiting
 *   (groups we manage, once the panel asked)
 */

/**
 * Our role in a group ("" when we are not in it, or it is a 1:1).
 * @param {Conv | undefined} conv @param {number} me
 */
export function myRole(conv, me) {
  return conv?.members.find((m) => m.user_id === me)?.role ?? "";
}

/** @param {Conv} conv */
export const isMuted = (conv) => conv.mutedUntil === -1 || conv.mutedUntil > Date.now();

export const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));

/** @param {string} tag @param {Record<string, string>} attrs @param {(Node | string)[]} children */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  node.append(...children);
  return node;
}

/** @param {Conv} conv */
export const unread = (conv) => Math.max(0, conv.lastSeq - conv.readPoint);

/** @param {Conv} conv @param {Map<number, string>} names */
export function title(conv, names) {
  if (conv.ownName) return conv.ownName;
  if (conv.kind === "group") return conv.name || conv.id;
  return names.get(conv.peerId) ?? `user ${conv.peerId}`;
}

/**
 * The conversation list: pinned first, then the most recent activity; archived ones
 * after all others, under a heading.
 * @param {Map<string, Conv>} conversations @param {string | null} openId @param {Map<number, string>} names
 */
export function renderList(conversations, openId, names) {
  const sorted = [...conversations.values()].sort(
    (a, b) =>
      Number(a.archived) - Number(b.archived) ||
      Number(b.pinned) - Number(a.pinned) ||
      b.touched - a.touched,
  );
  const items = sorted.map((conv) => {
    const count = unread(conv);
    const button = el(
      "button",
      { type: "button", "data-testid": "conversation", "data-id": conv.id },
      el("span", { class: "name" }, conv.kind === "group" ? `# ${title(conv, names)}` : title(conv, names)),
    );
    if (conv.pinned) button.append(el("span", { class: "flag", "aria-label": "pinned" }, "📌"));
    if (isMuted(conv)) button.append(el("span", { class: "flag", "aria-label": "muted" }, "🔕"));
    button.dataset.pinned = String(conv.pinned);
    button.dataset.archived = String(conv.archived);
    button.dataset.muted = String(isMuted(conv));
    if (count) button.append(el("span", { class: "unread", "aria-label": `${count} unread` }, String(count)));
    if (conv.id === openId) button.setAttribute("aria-current", "true");
    return el("li", {}, button);
  });
  const firstArchived = sorted.findIndex((conv) => conv.archived);
  if (firstArchived >= 0) {
    items.splice(firstArchived, 0, el("li", { class: "list-heading", "data-testid": "archived-heading" }, "Archived"));
  }
  $("conversations").replaceChildren(...items);
}

/**
 * Delivery and read mark of one of our messages (seq known): ✓✓ once stored and
 * pushed to the members online, "read" once a member's read cursor passed it.
 * @param {Conv} conv @param {number} seq
 */
function mark(conv, seq) {
  const readers = [...conv.reads.values()].filter((s) => s >= seq).length;
  if (readers === 0) return { status: "delivered", text: "✓✓", hint: "delivered: stored and pushed" };
  const text = conv.kind === "group" ? `✓✓ read by ${readers}` : "✓✓ read";
  return { status: "read", text, hint: "read" };
}

const PENDING_MARKS = {
  sending: { text: "…", hint: "sending" },
  sent: { text: "✓", hint: "sent: the server has it" },
  failed: { text: "not sent", hint: "failed" },
};

/** @param {number} ts */
const clock = (ts) => new Date(ts).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });

/**
 * One message bubble. `state`: "edited" or "recalled" when it is; `actions`: our own
 * text messages get Edit and Recall buttons (the gateway says whether it is too late).
 * @param {{text: string, mine: boolean, sender: string, time: string, status: string, markText: string, hint: string, seq?: number, state?: string, actions?: boolean, attachments?: Node[]}} m
 */
function bubble(m) {
  const node = el("div", {
    "data-testid": "message",
    class: `message ${m.mine ? "mine" : "theirs"}`,
    "data-status": m.status,
  });
  if (m.seq) node.dataset.seq = String(m.seq);
  if (m.state) node.dataset.state = m.state;
  if (!m.mine && m.sender) node.append(el("div", { class: "sender" }, m.sender));
  if (m.text) node.append(el("div", { class: "text" }, m.text));
  if (m.attachments?.length) node.append(el("div", { class: "attachments" }, ...m.attachments));
  const meta = el("div", { class: "meta" }, el("time", {}, m.time));
  if (m.state === "edited") meta.append(" ", el("span", { class: "edited" }, "(edited)"));
  if (m.mine) meta.append(" ", el("span", { class: "mark", title: m.hint }, m.markText));
  if (m.actions) {
    for (const [action, label] of [["edit", "Edit"], ["recall", "Recall"]]) {
      const button = el("button", { type: "button", class: "action", "data-action": action, "data-testid": action }, label);
      meta.append(" ", button);
    }
  }
  node.append(meta);
  return node;
}

/**
 * The open conversation's messages, in seq order, then ours not yet sequenced.
 * `mode`: "bottom" scrolls to the newest, "prepend" keeps the view where it was after
 * older messages came in above, "keep" follows the newest only if already there.
 * @param {Conv} conv @param {number} me @param {Map<number, string>} names
 * @param {"bottom" | "prepend" | "keep"} mode
 * @param {(id: string) => Node} [attachment] the node showing an attachment
 */
export function renderMessages(conv, me, names, mode, attachment) {
  const box = $("messages");
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  const fromBottom = box.scrollHeight - box.scrollTop;
  const nodes = [];
  if (conv.exhausted && conv.messages.size) {
    nodes.push(el("p", { class: "start" }, "Start of the conversation"));
  }
  for (const seq of [...conv.messages.keys()].sort((a, b) => a - b)) {
    const m = /** @type {import("/sdk/im.js").Message} */ (conv.messages.get(seq));
    if (isGroupEvent(m.contentType)) {
      // A change of the group ("alice added bob"): a line of its own, not a bubble.
      const line = describeGroupEvent(m, (id) => names.get(id)) ?? "";
      nodes.push(el("p", { class: "event", "data-testid": "event", "data-seq": String(seq) }, line));
      continue;
    }
    if (isEvent(m)) continue; // applied to the message it names (edits.js)
    const mine = m.senderId === me;
    const { status, text, hint } = mine ? mark(conv, seq) : { status: "received", text: "", hint: "" };
    const sender = conv.kind === "group" ? (names.get(m.senderId) ?? `user ${m.senderId}`) : "";
    const body = m.recalled ? "message recalled" : (m.text ?? `(${m.contentType}, ${m.body.length} bytes)`);
    const state = m.recalled ? "recalled" : m.editedAt ? "edited" : "";
    const actions = mine && !m.recalled;
    const time = clock(m.serverTs);
    const files = attachment && !m.recalled ? (m.attachmentIds ?? []).map(attachment) : [];
    nodes.push(
      bubble({ text: body, mine, sender, time, status, markText: text, hint, seq, state, actions, attachments: files }),
    );
  }
  for (const p of conv.pending.values()) {
    const { text, hint } = PENDING_MARKS[p.status];
    nodes.push(bubble({ text: p.text, mine: true, sender: "", time: "", status: p.status, markText: text, hint: p.error ?? hint }));
  }
  box.replaceChildren(...nodes);
  if (mode === "bottom" || (mode === "keep" && atBottom)) box.scrollTop = box.scrollHeight;
  else if (mode === "prepend") box.scrollTop = box.scrollHeight - fromBottom;
}

/** @param {Conv | undefined} conv @param {Map<number, string>} names @param {number} me */
export function renderMembers(conv, names, me) {
  if (!conv || conv.kind !== "group") return;
  const owner = myRole(conv, me) === "owner" && !conv.dissolved;
  const items = conv.members.map((m) => {
    const who = m.user_id === me ? "you" : (names.get(m.user_id) ?? `user ${m.user_id}`);
    const item = el("li", { "data-testid": "member" }, `${who}${m.role === "member" ? "" : ` (${m.role})`}`);
    if (owner && m.user_id !== me) {
      item.append(" ", el("button", { type: "button", "data-transfer": String(m.user_id) }, "Make owner"));
    }
    return item;
  });
  $("member-list").replaceChildren(...items);
}

/** @param {string} state @param {string} reason */
export function renderStatus(state, reason) {
  const labels = {
    online: "online",
    connecting: "connecting…",
    syncing: "syncing…",
    offline: "offline, reconnecting…",
    closed: "signed out",
  };
  const node = $("status");
  node.textContent = labels[/** @type {keyof typeof labels} */ (state)] ?? state;
  node.dataset.state = state;
  node.title = reason;
}
