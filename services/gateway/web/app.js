// The web chat page, on the JavaScript SDK that the gateway serves at /sdk/ (the same
// files as clients/js/src). State lives here, drawing in view.js.
import { ApiError, groupEventData, ImClient, isGroupEvent, newClientMsgId } from "/sdk/im.js";
import { Attachments } from "./attachments.js";
import { bindSearch } from "./search.js";
import { PageSignals } from "./signals.js";
import {
  $,
  renderList,
  renderMembers,
  renderMessages,
  renderStatus,
  title,
  unread,
} from "./view.js";
import { applyEvents, bindMessageActions } from "./edits.js";
import { applySettings, bindSettings, renderSettings } from "./settings.js";
import { bindGroupAdmin, isManager, renderGroupAdmin } from "./groupadmin.js";

const PAGE = 50; // messages per history page
// Per tab: each tab is a device of its own (a second login of one device ends the first).
const store = sessionStorage;

const client = new ImClient(""); // the gateway that served this page
const attachments = new Attachments(client.gateway, () => redraw("keep"));
/** @type {Map<string, import("./view.js").Conv>} */
const conversations = new Map();
/** @type {Map<number, string>} user id -> username */
const names = new Map();
/** @type {string | null} */
let openId = null;
/** Users we blocked (for the Block/Unblock button of 1:1 conversations). @type {Set<number>} */
const blocked = new Set();
let leaving = false; // a logout in progress: its "closed" is expected
let activity = 0;
const signals = new PageSignals(client, conversations, names, () => openId);
/** A list position for activity now: wall-clock ms, like the gateway's last_activity_at. */
const touch = () => (activity = Math.max(activity + 1, Date.now()));

// ------------------------------------------------------------------ helpers

function deviceId() {
  let id = store.getItem("im.device");
  if (!id) {
    id = `web-${newClientMsgId().slice(0, 8)}`;
    store.setItem("im.device", id);
  }
  return id;
}

/** @param {unknown} err */
function describe(err) {
  if (err instanceof ApiError) return err.status === 0 ? "The gateway cannot be reached." : err.detail;
  return err instanceof Error ? err.message : String(err);
}

/** A username, fetched once; the page redraws when it comes. @param {number} userId */
function learnName(userId) {
  if (!userId || names.has(userId)) return;
  names.set(userId, `user ${userId}`);
  client.gateway
    .user(userId)
    .then((u) => {
      names.set(userId, u.username);
      redraw("keep");
    })
    .catch(() => {});
}

/** @param {string} id */
function conversation(id) {
  let conv = conversations.get(id);
  if (!conv) {
    const [kind, a, b] = id.split(":");
    const peerId = kind === "d" ? (Number(a) === client.userId ? Number(b) : Number(a)) : 0;
    conv = {
      id,
      kind: kind === "g" ? "group" : "direct",
      name: "",
      peerId,
      lastSeq: 0,
      readPoint: 0,
      messages: new Map(),
      pending: new Map(),
      reads: new Map(),
      members: [],
      loaded: false,
      exhausted: false,
      loading: false,
      touched: 0,
      pinned: false,
      mutedUntil: 0,
      archived: false,
      ownName: "",
      requests: [],
    };
    conversations.set(id, conv);
    if (peerId) learnName(peerId);
    if (conv.kind === "group") {
      const c = conv;
      client.gateway.group(id).then((g) => {
        c.name = g.name;
        c.dissolved = g.dissolved;
        redraw("keep");
      }, () => {});
    }
  }
  return conv;
}

/** @param {any} c a conversation from the gateway (sync, list, direct) */
function upsert(c) {
  const conv = conversation(c.conversation_id);
  if (c.name) conv.name = c.name;
  conv.lastSeq = Math.max(conv.lastSeq, c.last_seq ?? 0);
  // unread already leaves out what came before we joined a group
  conv.readPoint = Math.max(conv.readPoint, (c.last_seq ?? 0) - (c.unread ?? 0));
  if (c.settings) applySettings(conv, c.settings);
  // The list comes in the gateway's order (pinned, then last activity): keep it.
  if (c.last_activity_at) conv.touched = Math.max(conv.touched, c.last_activity_at);
  return conv;
}

/**
 * A group event changes what we show of the group: its name, whether it is open.
 * @param {import("./view.js").Conv} conv @param {import("/sdk/im.js").Message} m
 */
function applyGroupEvent(conv, m) {
  if (!isGroupEvent(m.contentType)) return;
  const data = groupEventData(m);
  for (const id of [data.actor_id, data.approved_by, ...(data.user_ids ?? [])]) {
    if (Number.isInteger(id)) learnName(id);
  }
  if (m.contentType.endsWith(".renamed") && typeof data.name === "string") conv.name = data.name;
  if (m.contentType.endsWith(".dissolved")) conv.dissolved = true;
}

/** Kinds of group event after which the open group's members (and roles) are read again. */
const MEMBERSHIP_EVENTS = ["members_added", "member_removed", "member_left", "member_joined", "role_changed", "owner_transferred"];

/** @param {"bottom" | "prepend" | "keep"} mode */
function redraw(mode) {
  renderList(conversations, openId, names);
  const conv = openId ? conversations.get(openId) : undefined;
  if (conv) {
    $("title").textContent = title(conv, names);
    renderMessages(conv, client.userId, names, mode, (id) => attachments.node(id));
    renderMembers(conv, names, client.userId);
    renderGroupAdmin(conv, client.userId, names);
    const closed = Boolean(conv.dissolved);
    /** @type {HTMLTextAreaElement} */ ($("composer")).disabled = closed;
    /** @type {HTMLButtonElement} */ ($("send")).disabled = closed;
    /** @type {HTMLTextAreaElement} */ ($("composer")).placeholder = closed
      ? "This group was dissolved: read only"
      : "Message (Enter sends, Shift+Enter for a new line)";
  }
  signals.render();
  renderSettings(conv);
  document.title = [...conversations.values()].some(unread) ? "(new) IM chat" : "IM chat";
}

/** Report the open conversation read, while the page is seen. */
function markRead() {
  const conv = openId ? conversations.get(openId) : undefined;
  if (!conv || document.visibilityState !== "visible" || conv.lastSeq <= conv.readPoint) return;
  conv.readPoint = conv.lastSeq;
  client.read(conv.id, conv.lastSeq).catch(() => {}); // the next open reports it again
}

// ------------------------------------------------------------------ SDK events

client.on("session", (session) => {
  // Refresh tokens are single use: always keep the newest.
  if (session) store.setItem("im.refresh", session.refreshToken);
  else store.removeItem("im.refresh");
});

client.on("state", ({ state, reason }) => {
  renderStatus(state, reason);
  if (state === "closed" && !leaving) showLogin(`Signed out: ${reason}`);
});

client.on("synced", (list) => {
  for (const c of list) upsert(c);
  markRead();
  redraw("keep");
});

client.on("message", (m) => {
  const conv = conversation(m.conversationId);
  conv.messages.set(m.seq, m);
  applyEvents(conv, [m]);
  conv.lastSeq = Math.max(conv.lastSeq, m.seq);
  conv.touched = touch();
  applyGroupEvent(conv, m);
  if (m.conversationId === openId && MEMBERSHIP_EVENTS.some((kind) => m.contentType.endsWith(`.${kind}`))) {
    loadReads(conv).then(() => redraw("keep"), () => {});
  }
  if (m.senderId === client.userId) {
    conv.pending.delete(m.clientMsgId); // it has its seq now
    conv.readPoint = Math.max(conv.readPoint, m.seq); // ours: not unread
  } else {
    learnName(m.senderId);
  }
  if (m.conversationId === openId) markRead();
  redraw(m.senderId === client.userId ? "bottom" : "keep");
});

client.on("receipt", (r) => {
  const conv = conversations.get(r.conversationId);
  if (!conv) return;
  if (r.readerId === client.userId) {
    conv.readPoint = Math.max(conv.readPoint, r.readSeq); // read on another device of ours
  } else {
    conv.reads.set(r.readerId, Math.max(conv.reads.get(r.readerId) ?? 0, r.readSeq));
  }
  redraw("keep");
});

// Our own settings changed, here or on another device of ours.
client.on("settings", (s) => {
  applySettings(conversation(s.conversationId), s);
  redraw("keep");
});

// ------------------------------------------------------------------ views

/** @param {string} [error] */
function showLogin(error = "") {
  // What was shown belongs to the session that ended; the next may be someone else's.
  conversations.clear();
  names.clear();
  blocked.clear();
  openId = null;
  $("messages").replaceChildren();
  $("conversations").replaceChildren();
  $("chat-view").hidden = true;
  $("login-view").hidden = false;
  $("login-error").textContent = error;
  /** @type {HTMLInputElement} */ ($("login-form").querySelector("[name=username]")).focus();
}

/** @param {string | null} username */
async function enterChat(username) {
  $("login-view").hidden = true;
  $("chat-view").hidden = false;
  if (!username) username = (await client.gateway.me()).username;
  names.set(client.userId, /** @type {string} */ (username));
  $("me").textContent = `you: ${username}`;
  $("peer").focus();
  client.connect().catch((err) => showLogin(describe(err)));
  try {
    for (const id of await client.gateway.blocks()) blocked.add(id);
  } catch (err) {
    $("side-error").textContent = describe(err);
  }
}

/** The Block/Unblock button of a 1:1 conversation. @param {import("./view.js").Conv} conv */
function showBlockButton(conv) {
  const button = $("block-toggle");
  button.hidden = conv.kind !== "direct";
  if (conv.kind === "direct") button.textContent = blocked.has(conv.peerId) ? "Unblock" : "Block";
}

/** @param {boolean} register */
async function logIn(register) {
  const form = /** @type {HTMLFormElement} */ ($("login-form"));
  if (!form.reportValidity()) return;
  const username = /** @type {HTMLInputElement} */ (form.elements.namedItem("username")).value.trim();
  const password = /** @type {HTMLInputElement} */ (form.elements.namedItem("password")).value;
  $("login-error").textContent = "";
  try {
    if (register) await client.register(username, password);
    await client.login(username, password, deviceId());
    store.setItem("im.username", username);
    form.reset();
    await enterChat(username);
  } catch (err) {
    $("login-error").textContent = describe(err);
  }
}

async function logOut() {
  leaving = true;
  try {
    await client.close({ logout: true });
  } catch {
    // the session may be gone already: signed out either way
  }
  store.removeItem("im.refresh");
  attachments.clear();
  leaving = false;
  showLogin();
}

/** @param {string} id */
async function openConversation(id) {
  openId = id;
  const conv = conversation(id);
  const composer = /** @type {HTMLTextAreaElement} */ ($("composer"));
  composer.disabled = false;
  /** @type {HTMLButtonElement} */ ($("send")).disabled = false;
  /** @type {HTMLButtonElement} */ ($("attach-button")).disabled = false;
  $("members-toggle").hidden = conv.kind !== "group";
  showBlockButton(conv);
  $("members").hidden = true;
  $("members-toggle").setAttribute("aria-expanded", "false");
  redraw("bottom");
  composer.focus();
  try {
    if (!conv.loaded) await loadLatest(conv);
    await loadReads(conv);
    await signals.load(conv);
  } catch (err) {
    $("side-error").textContent = describe(err);
  }
  markRead();
  redraw("keep");
}

/** @param {import("./view.js").Conv} conv @param {import("/sdk/im.js").Message[]} messages */
function add(conv, messages) {
  for (const m of messages) {
    conv.messages.set(m.seq, m);
    conv.lastSeq = Math.max(conv.lastSeq, m.seq);
    if (conv.kind === "group") learnName(m.senderId);
    applyGroupEvent(conv, m);
  }
  applyEvents(conv, messages);
}

/** @param {import("./view.js").Conv} conv */
async function loadLatest(conv) {
  const afterSeq = Math.max(0, conv.lastSeq - PAGE);
  const page = await client.gateway.history(conv.id, { afterSeq, limit: PAGE });
  add(conv, page.messages);
  conv.loaded = true;
  conv.exhausted = afterSeq === 0;
  if (conv.id === openId) redraw("bottom");
  const box = $("messages");
  if (!conv.exhausted && box.scrollHeight <= box.clientHeight) await loadOlder(conv);
}

/** Infinite scroll: the page before the oldest message shown. @param {import("./view.js").Conv} conv */
async function loadOlder(conv) {
  if (conv.exhausted || conv.loading || !conv.loaded) return;
  const oldest = Math.min(conv.lastSeq + 1, ...conv.messages.keys());
  if (oldest <= 1) {
    conv.exhausted = true; // seq 1 is here: nothing before it
    if (conv.id === openId) redraw("keep");
    return;
  }
  const afterSeq = Math.max(0, oldest - 1 - PAGE);
  conv.loading = true;
  try {
    const page = await client.gateway.history(conv.id, { afterSeq, limit: oldest - 1 - afterSeq });
    add(conv, page.messages);
    // Nothing there: before we joined, or the start.
    conv.exhausted = afterSeq === 0 || page.messages.length === 0;
  } finally {
    conv.loading = false;
  }
  if (conv.id === openId) redraw("prepend");
}

/** Where the others' read cursors are, for the read marks. @param {import("./view.js").Conv} conv */
async function loadReads(conv) {
  if (conv.kind === "group") {
    const page = await client.gateway.members(conv.id, { limit: 1000 });
    conv.members = page.members;
    for (const m of page.members) {
      learnName(m.user_id);
      if (m.user_id !== client.userId) conv.reads.set(m.user_id, m.read_seq);
    }
    // Best effort: a role that changed meanwhile leaves the list empty, not an error.
    const manages = isManager(conv, client.userId) && !conv.dissolved;
    conv.requests = manages ? await client.gateway.joinRequests(conv.id).catch(() => []) : [];
    for (const r of conv.requests) learnName(r.user_id);
    return;
  }
  // 1:1: has the peer read our newest message? (Receipts keep it current from now on.)
  const ours = [...conv.messages.values()].filter((m) => m.senderId === client.userId);
  const newest = Math.max(0, ...ours.map((m) => m.seq));
  if (!newest) return;
  const receipts = await client.gateway.receipts(conv.id, newest, { list: "read" });
  if (receipts.read_count > 0) {
    conv.reads.set(conv.peerId, Math.max(conv.reads.get(conv.peerId) ?? 0, newest));
  }
}

function send() {
  const composer = /** @type {HTMLTextAreaElement} */ ($("composer"));
  const text = composer.value.trim();
  const conv = openId ? conversations.get(openId) : undefined;
  if (!text || !conv) return;
  composer.value = "";
  signals.sent();
  const cmid = newClientMsgId();
  /** @type {import("./view.js").Pending} */
  const pending = { cmid, text, status: "sending" };
  conv.pending.set(cmid, pending);
  conv.touched = touch();
  redraw("bottom");
  // Offline, it waits in the SDK and goes out on the next connection.
  client.send(conv.id, text, { clientMsgId: cmid }).then(
    () => {
      pending.status = "sent";
      redraw("keep");
    },
    (err) => {
      pending.status = "failed";
      pending.error = describe(err);
      redraw("keep");
    },
  );
}

/**
 * Upload the chosen files, then send each in a message of its own (its name as the
 * text); its bubble waits meanwhile like any message of ours.
 * @param {FileList} files
 */
function sendFiles(files) {
  const conv = openId ? conversations.get(openId) : undefined;
  if (!conv) return;
  for (const file of files) {
    const cmid = newClientMsgId();
    /** @type {import("./view.js").Pending} */
    const pending = { cmid, text: `📎 ${file.name}`, status: "sending" };
    conv.pending.set(cmid, pending);
    conv.touched = ++activity;
    redraw("bottom");
    client.gateway
      .uploadAttachment(file)
      .then((up) => client.send(conv.id, file.name, { clientMsgId: cmid, attachmentIds: [up.attachment_id] }))
      .then(
        () => {
          pending.status = "sent";
          redraw("keep");
        },
        (err) => {
          pending.status = "failed";
          pending.error = describe(err);
          redraw("keep");
        },
      );
  }
}

// ------------------------------------------------------------------ forms and keys

/** @param {string} id @param {(form: HTMLFormElement) => Promise<void>} action */
function onSubmit(id, action) {
  $(id).addEventListener("submit", (event) => {
    event.preventDefault();
    $("side-error").textContent = "";
    action(/** @type {HTMLFormElement} */ (event.target)).catch((err) => {
      $("side-error").textContent = describe(err);
    });
  });
}

/** @param {string} id */
const value = (id) => /** @type {HTMLInputElement} */ ($(id)).value.trim();

function bind() {
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    logIn(false);
  });
  $("login-form").querySelector("[data-testid=register]")?.addEventListener("click", () => logIn(true));
  $("logout").addEventListener("click", logOut);

  onSubmit("peer-form", async (form) => {
    const peer = await client.resolveUser(value("peer"));
    if (peer === client.userId) throw new Error("That is you: pick someone else.");
    upsert(await client.gateway.directConversation(peer));
    form.reset();
    await openConversation(await client.directConversationWith(peer));
  });

  onSubmit("group-form", async (form) => {
    const usernames = value("group-members").split(/[\s,]+/).filter(Boolean);
    const ids = await Promise.all(usernames.map((u) => client.resolveUser(u)));
    const group = await client.gateway.createGroup(value("group-name"), ids);
    const conv = conversation(group.conversation_id);
    conv.name = group.name;
    conv.touched = touch();
    form.reset();
    /** @type {HTMLDetailsElement} */ ($("new-group")).open = false;
    await openConversation(conv.id);
  });

  bindGroupAdmin(
    client,
    () => (openId ? conversations.get(openId) : undefined),
    async (conv) => {
      await loadReads(conv);
      redraw("keep");
    },
    (err) => ($("side-error").textContent = describe(err)),
  );

  bindSettings(
    client,
    () => (openId ? conversations.get(openId) : undefined),
    () => redraw("keep"),
    (err) => ($("side-error").textContent = describe(err)),
  );

  onSubmit("add-member-form", async (form) => {
    if (!openId) return;
    await client.gateway.addMembers(openId, [await client.resolveUser(value("add-member"))]);
    form.reset();
    await loadReads(conversation(openId));
    redraw("keep");
  });

  $("leave").addEventListener("click", async () => {
    if (!openId || !confirm("Leave this group?")) return;
    try {
      await client.gateway.leaveGroup(openId);
      conversations.delete(openId);
      openId = null;
      $("members").hidden = true;
      $("messages").replaceChildren();
      $("title").textContent = "Pick a conversation, or type a username above";
      redraw("keep");
    } catch (err) {
      $("side-error").textContent = describe(err);
    }
  });

  $("block-toggle").addEventListener("click", async () => {
    const conv = openId && conversation(openId);
    if (!conv || conv.kind !== "direct") return;
    try {
      if (blocked.has(conv.peerId)) {
        await client.gateway.unblock(conv.peerId);
        blocked.delete(conv.peerId);
      } else {
        await client.gateway.block(conv.peerId);
        blocked.add(conv.peerId);
      }
      showBlockButton(conv);
    } catch (err) {
      $("side-error").textContent = describe(err);
    }
  });

  onSubmit("rename-form", async (form) => {
    if (!openId) return;
    const group = await client.gateway.renameGroup(openId, value("rename"));
    conversation(openId).name = group.name; // the event says so to everyone else
    form.reset();
    redraw("keep");
  });

  $("invite").addEventListener("click", async () => {
    if (!openId) return;
    try {
      const approvalRequired = /** @type {HTMLInputElement} */ ($("invite-approval")).checked;
      const invite = await client.gateway.createInvite(openId, { approvalRequired });
      $("invite-token").textContent = `Token (share it; valid 7 days): ${invite.token}`;
    } catch (err) {
      $("side-error").textContent = describe(err);
    }
  });

  onSubmit("join-form", async (form) => {
    const joined = await client.gateway.joinGroup(value("join-token"));
    form.reset();
    /** @type {HTMLDetailsElement} */ ($("join-group")).open = false;
    if (joined.status === "pending") {
      $("side-error").textContent = `Asked to join ${joined.name}: an admin will decide.`;
      return;
    }
    const conv = conversation(joined.conversation_id);
    conv.name = joined.name;
    conv.touched = ++activity;
    await openConversation(conv.id);
  });

  $("members-toggle").addEventListener("click", () => {
    const panel = $("members");
    panel.hidden = !panel.hidden;
    $("members-toggle").setAttribute("aria-expanded", String(!panel.hidden));
  });

  $("conversations").addEventListener("click", (event) => {
    const button = /** @type {HTMLElement} */ (event.target).closest("[data-id]");
    if (button) openConversation(/** @type {string} */ (button.getAttribute("data-id")));
  });
  // Arrow keys move along the list (each entry is a button: Tab reaches it, Enter opens).
  $("conversations").addEventListener("keydown", (event) => {
    if (event.key !== "ArrowDown" && event.key !== "ArrowUp") return;
    const buttons = [...$("conversations").querySelectorAll("button")];
    const at = buttons.indexOf(/** @type {HTMLButtonElement} */ (document.activeElement));
    const next = buttons[at + (event.key === "ArrowDown" ? 1 : -1)];
    if (next) {
      event.preventDefault();
      next.focus();
    }
  });

  $("composer").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    } else if (event.key === "Escape") {
      /** @type {HTMLElement | null} */ ($("conversations").querySelector("[aria-current]"))?.focus();
    }
  });
  bindMessageActions(client, () => (openId ? conversations.get(openId) : undefined), describe);
  $("composer").addEventListener("input", () => signals.typed());
  $("composer-form").addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });

  $("attach-button").addEventListener("click", () => $("attach").click());
  $("attach").addEventListener("change", () => {
    const input = /** @type {HTMLInputElement} */ ($("attach"));
    if (input.files?.length) sendFiles(input.files);
    input.value = ""; // the same file can be picked again
  });
  $("messages").addEventListener("click", (event) => {
    const button = /** @type {HTMLElement} */ (event.target).closest("[data-save]");
    const id = button?.getAttribute("data-save");
    if (id) attachments.save(id).catch((err) => ($("side-error").textContent = describe(err)));
  });

  $("messages").addEventListener("scroll", () => {
    const conv = openId ? conversations.get(openId) : undefined;
    if (conv && $("messages").scrollTop < 80) loadOlder(conv).catch(() => {});
  });

  document.addEventListener("keydown", (event) => {
    if ((event.ctrlKey || event.metaKey) && event.key === "k") {
      event.preventDefault(); // Ctrl+K: chat with someone
      $("peer").focus();
    }
  });
  document.addEventListener("visibilitychange", markRead);
  bindSearch(client, { open: openConversation, label: (id) => title(conversation(id), names), describe });
}

async function start() {
  bind();
  const token = store.getItem("im.refresh");
  if (token) {
    try {
      await client.resume(token); // a reload: the same session, new tokens
      await enterChat(store.getItem("im.username"));
      return;
    } catch {
      store.removeItem("im.refresh");
    }
  }
  showLogin();
}

start();
