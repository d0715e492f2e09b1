// @ts-check
/**
 * JavaScript client of the IM suite, for browsers and Node (22+, or 20.10+ with
 * --experimental-websocket): REST login at the gateway, then one WebSocket to the
 * assigned connector speaking im.v1.json (docs/protocol.md).
 *
 * What `ImClient` promises (as the Python client in im/client does):
 * - every message of every conversation is handed out once ("message" event), whether
 *   it came live or by sync: duplicates are dropped by msgId;
 * - per conversation in seq order: a live message that skips seqs first pulls the gap;
 * - a message is acknowledged (cumulative DeliverAck, batched) only once handed out;
 * - a Send without a SendAck in time is sent again, same client_msg_id (stored once);
 *   sends made while offline wait and go out on the next connection;
 * - a lost socket is reopened with backoff, after logging in again (refresh token, or
 *   the password given to login): the connector may be gone, and a Kick{RECONNECT}
 *   asks for another one. Each connection syncs before it is "online".
 * @module
 */

import { ApiError, GatewayClient, MAX_PAGE } from "./gateway.js";
import {
  enumName,
  FATAL_ERRORS,
  messageFromWire,
  RETRYABLE_SEND_ERRORS,
  receiptFromWire,
  settingsFromWire,
  SUBPROTOCOL,
  sendAckFromWire,
  toBase64,
  toBytes,
  directConversationId,
  groupConversationId,
} from "./wire.js";
import { TypingTracker, presenceFromWire, typingFrame, typingFromWire } from "./signals.js";

export { ApiError, GatewayClient } from "./gateway.js";
export { applyEvent, displayText, EDIT, isEvent, RECALL } from "./events.js";

export { describeGroupEvent, GROUP_EVENT_PREFIX, groupEventData, isGroupEvent } from "./groupEvents.js";
export { TypingTracker } from "./signals.js";
export {
  directConversationId,
  fromBase64,
  groupConversationId,
  SUBPROTOCOL,
  toBase64,
} from "./wire.js";

/** @typedef {import("./wire.js").Message} Message */
/** @typedef {import("./wire.js").SendAck} SendAck */
/** @typedef {import("./wire.js").Receipt} Receipt */
/** @typedef {import("./gateway.js").Session} Session */
/** @typedef {import("./gateway.js").Conversation} Conversation */
/** @typedef {"offline" | "connecting" | "syncing" | "online" | "closed"} State */

/** An Error frame answered a Send (code: "FORBIDDEN", "BODY_TOO_LARGE", ...). */
export class SendError extends Error {
  /** @param {string} code @param {string} message @param {string} clientMsgId */
  constructor(code, message, clientMsgId) {
    super(`${code}: ${message}`);
    this.name = "SendError";
    this.code = code;
    this.clientMsgId = clientMsgId;
  }
}

/** No SendAck after every attempt of one connection. */
export class SendTimeout extends Error {
  /** @param {string} clientMsgId @param {number} attempts */
  constructor(clientMsgId, attempts) {
    super(`no SendAck for ${clientMsgId} after ${attempts} attempts`);
    this.name = "SendTimeout";
    this.clientMsgId = clientMsgId;
  }
}

/** The client was closed, or its session ended (kicked, revoked, logged out). */
export class ClientClosed extends Error {
  /** @param {string} reason */
  constructor(reason) {
    super(reason);
    this.name = "ClientClosed";
  }
}

/** The connector refused the Auth frame (code: "AUTH_FAILED", "UNAVAILABLE", ...). */
export class AuthError extends Error {
  /** @param {string} code @param {string} message */
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.name = "AuthError";
    this.code = code;
  }
}

/** Kicks after which reconnecting would only fight another device or a revocation. */
const FINAL_KICKS = new Set(["DEVICE_LOGGED_IN_ELSEWHERE", "TOKEN_REVOKED"]);
const OPEN = 1; // WebSocket.OPEN, the same in every implementation

const DEFAULTS = {
  ackDelayMs: 50, // DeliverAcks are batched this long (one frame per conversation)
  sendTimeoutMs: 5000, // a Send without SendAck this long is sent again
  sendAttempts: 3, // transmissions of one Send per connection
  authTimeoutMs: 10000, // open + AuthOk
  heartbeatMisses: 3, // a connector silent this many intervals is given up
  backoffMs: 500, // first reconnect delay, doubled per failure (with jitter)
  maxBackoffMs: 30000,
  dedupeSize: 10000, // msgIds remembered
};

/**
 * @typedef {typeof DEFAULTS & {
 *   WebSocket?: typeof WebSocket,
 *   fetch?: typeof fetch,
 *   now?: () => number,
 * }} Options
 */

/**
 * @typedef {object} Events
 * @property {Message} message a message, once, in seq order per conversation
 * @property {Receipt} receipt a member's read cursor moved
 * @property {import("./wire.js").ConversationSettings} settings this user's own settings
 *   of a conversation changed (on this device or another): apply them as they are
 * @property {{reason: string, detail: string}} kick
 * @property {{state: State, reason: string}} state
 * @property {Session | null} session new tokens (store the refresh token) or none
 * @property {Conversation[]} synced the conversation list, after each sync
 * @property {{code: string, message: string}} error a connector error that ended nothing
 *   (e.g. FORBIDDEN for a Typing in a conversation the user is not in)
 * @property {import("./signals.js").Typing} typing a member started or stopped typing
 *   (`typingIn` tells who is typing now, expiries applied)
 * @property {import("./signals.js").Presence} presence a 1:1 peer came online or went
 *   offline (debounced by the server)
 */

/**
 * A new client_msg_id (a random UUID), also where crypto.randomUUID is missing (a page
 * served over plain http from another host). Pass one to `send` to know a message by
 * it before its SendAck (its Deliver carries it back).
 */
export function newClientMsgId() {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/**
 * @typedef {object} PendingSend
 * @property {string} cmid
 * @property {object} frame
 * @property {number} tries transmissions on the current connection
 * @property {ReturnType<typeof setTimeout> | undefined} timer
 * @property {(ack: SendAck) => void} resolve
 * @property {(err: Error) => void} reject
 */

export class ImClient {
  /**
   * @param {string} gatewayUrl "" for the gateway that served the page
   * @param {Partial<Options>} [options]
   */
  constructor(gatewayUrl, options = {}) {
    this.options = { ...DEFAULTS, ...options };
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (!this.WebSocket) {
      throw new Error("no WebSocket here: pass options.WebSocket (Node 20: --experimental-websocket)");
    }
    this.gateway = new GatewayClient(gatewayUrl, {
      fetch: options.fetch,
      onSession: (s) => this._emit("session", s),
    });
    /** @type {State} */
    this.state = "offline";
    this.duplicates = 0; // copies dropped: wire resends and sync/live overlap
    this.retransmits = 0; // Sends sent again for want of a SendAck
    this.connections = 0; // sockets that reached AuthOk

    /** @type {Map<string, Set<Function>>} */
    this._listeners = new Map();
    /** @type {[string, string, string] | null} username, password, device */
    this._credentials = null;
    /** @type {WebSocket | null} */
    this._ws = null;
    this._authed = false;
    /** @type {{resolve: Function, reject: Function} | null} */
    this._authWaiter = null;
    /** @type {Map<string, PendingSend>} */
    this._pending = new Map();
    /** @type {Map<string, true>} insertion-ordered: the oldest is forgotten first */
    this._seen = new Map();
    /** @type {Map<string, number>} highest seq handed out per conversation */
    this._cursor = new Map();
    /** @type {Map<string, number>} */
    this._ackPending = new Map();
    this._ackTimer = undefined;
    this._synced = false;
    /** @type {Message[]} live messages that came while syncing */
    this._early = [];
    this._chain = Promise.resolve();
    this._wanted = false; // between connect() and close(): keep a connection up
    this._connecting = false;
    this._retryTimer = undefined;
    this._failures = 0;
    this._heartbeat = undefined;
    this._lastRecv = 0;
    this._requestId = 1;
    /** @type {{promise: Promise<void>, resolve: Function, reject: Function} | null} */
    this._firstOnline = null;
    /** @type {Map<string, number>} */
    this._userIds = new Map();
    this._userOfState = 0; // whose cursors and seen ids these are
    this.typing = new TypingTracker(options.now);
    this._onBrowserOnline = () => this._retryNow();
    this._onBrowserOffline = () => this._lose(this._ws, "the browser went offline");
  }

  // ---------------------------------------------------------------- events

  /**
   * Listen to an event; returns the function that stops listening.
   * @template {keyof Events} K
   * @param {K} type @param {(value: Events[K]) => void} listener
   */
  on(type, listener) {
    let set = this._listeners.get(type);
    if (!set) this._listeners.set(type, (set = new Set()));
    set.add(listener);
    return () => set.delete(listener);
  }

  /** @param {keyof Events} type @param {unknown} value */
  _emit(type, value) {
    for (const listener of this._listeners.get(type) ?? []) {
      try {
        listener(value);
      } catch (err) {
        console.error(`im: a "${type}" listener failed`, err); // never breaks the client
      }
    }
  }

  /** @param {State} state @param {string} [reason] */
  _setState(state, reason = "") {
    if (this.state === state) return;
    this.state = state;
    this._emit("state", { state, reason });
  }

  // --------------------------------------------------------------- session

  /** The logged-in user's id (0 before login). */
  get userId() {
    return this.gateway.session?.userId ?? 0;
  }

  /** @param {string} username @param {string} password @param {string} [displayName] */
  register(username, password, displayName) {
    return this.gateway.register(username, password, displayName);
  }

  /**
   * Log in. The password is kept in memory only, to log in again should the session's
   * refresh token be refused.
   * @param {string} username @param {string} password @param {string} deviceId
   */
  async login(username, password, deviceId) {
    const before = this._userOfState;
    const session = await this.gateway.login(username, password, deviceId);
    this._credentials = [username, password, deviceId];
    this._forgetIfOtherUser(before, session.userId);
    return session;
  }

  /** Take up a session stored earlier (a page reload) by its refresh token. @param {string} refreshToken */
  async resume(refreshToken) {
    const before = this._userOfState;
    const session = await this.gateway.refresh(refreshToken);
    this._forgetIfOtherUser(before, session.userId);
    return session;
  }

  /**
   * Cursors, seen ids and names belong to one user: another user logging in on this
   * client (after a logout) starts from nothing.
   * @param {number} before @param {number} userId
   */
  _forgetIfOtherUser(before, userId) {
    if (before !== userId) {
      this._cursor.clear();
      this._seen.clear();
      this._userIds.clear();
      this._early = [];
    }
    this._userOfState = userId;
  }

  async _relogin() {
    try {
      await this.gateway.refresh();
      return;
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 401) || !this._credentials) throw err;
    }
    await this.gateway.login(...this._credentials);
  }

  // ------------------------------------------------------------ connecting

  /**
   * Open the socket, authenticate, sync; resolves once online. Until close() the client
   * keeps a connection: failures are retried with backoff (this promise waits for
   * them) unless the session has ended, which rejects it.
   * @returns {Promise<void>}
   */
  connect() {
    if (!this.gateway.session && !this._credentials) {
      return Promise.reject(new Error("log in (or resume) first"));
    }
    if (!this._wanted) {
      this._wanted = true;
      /** @type {any} */
      const first = {};
      first.promise = new Promise((resolve, reject) => Object.assign(first, { resolve, reject }));
      first.promise.catch(() => {}); // a caller that does not wait must not see it unhandled
      this._firstOnline = first;
      globalThis.addEventListener?.("online", this._onBrowserOnline);
      globalThis.addEventListener?.("offline", this._onBrowserOffline);
      this._attempt(false);
    }
    return /** @type {any} */ (this._firstOnline).promise;
  }

  /** One connection attempt: log in again if asked, open, authenticate, sync. @param {boolean} relogin */
  async _attempt(relogin) {
    this._retryTimer = undefined;
    this._connecting = true;
    this._setState("connecting");
    /** @type {WebSocket | null} */
    let ws = null;
    try {
      const session = this.gateway.session;
      if (relogin || !session || session.expiresAt - Date.now() < 30_000) await this._relogin();
      try {
        ws = await this._open();
      } catch (err) {
        // A refused token (revoked, expired early): one fresh login, straight away.
        if (!(err instanceof AuthError && err.code === "AUTH_FAILED") || relogin) throw err;
        await this._relogin();
        ws = await this._open();
      }
      this._setState("syncing");
      await this._sync();
      if (ws !== this._ws || !this._wanted) throw new Error("the socket closed during sync");
      this._connecting = false;
      this._failures = 0;
      this._setState("online");
      this._firstOnline?.resolve();
    } catch (err) {
      this._connecting = false;
      if (!this._wanted) return;
      if (ws && ws === this._ws) this._drop(ws);
      if (isFinal(err)) {
        this._end(/** @type {Error} */ (err));
      } else {
        // 429 (logins backing off) says how long; other failures take the backoff.
        const after = err instanceof ApiError && err.retryAfter ? err.retryAfter * 1000 : 0;
        this._retryLater(/** @type {Error} */ (err).message, after || undefined);
      }
    }
  }

  /** @param {string} reason @param {number} [delay] */
  _retryLater(reason, delay) {
    clearTimeout(this._retryTimer);
    const base = Math.min(this.options.maxBackoffMs, this.options.backoffMs * 2 ** this._failures);
    this._failures += 1;
    const wait = delay ?? base * (0.5 + Math.random() / 2); // jitter: not all at once
    this._setState("offline", reason);
    this._retryTimer = setTimeout(() => this._attempt(true), wait);
  }

  /** The browser is back online: do not sit out the rest of a backoff. */
  _retryNow() {
    if (this._wanted && this._retryTimer !== undefined) {
      clearTimeout(this._retryTimer);
      this._attempt(true);
    }
  }

  /** Open the socket to the session's connector and authenticate. @returns {Promise<WebSocket>} */
  _open() {
    const session = /** @type {Session} */ (this.gateway.session);
    return new Promise((resolve, reject) => {
      const ws = new this.WebSocket(session.connector.ws, SUBPROTOCOL);
      this._ws = ws;
      this._authed = false;
      this._synced = false;
      const timer = setTimeout(() => fail(new Error("no AuthOk in time")), this.options.authTimeoutMs);
      /** @param {Error} err */
      const fail = (err) => {
        clearTimeout(timer);
        this._authWaiter = null;
        this._drop(ws);
        reject(err);
      };
      this._authWaiter = {
        resolve: (/** @type {any} */ authOk) => {
          clearTimeout(timer);
          this._authWaiter = null;
          this._authed = true;
          this.connections += 1;
          const interval = authOk.heartbeatIntervalMs || session.heartbeatInterval * 1000;
          this._startHeartbeat(ws, interval);
          this._resendPending();
          resolve(ws);
        },
        reject: fail,
      };
      ws.addEventListener("open", () => {
        if (ws.protocol !== SUBPROTOCOL) {
          fail(new Error(`the connector did not accept ${SUBPROTOCOL}`));
          return;
        }
        this._lastRecv = Date.now();
        ws.send(JSON.stringify({ requestId: 1, auth: { token: session.accessToken } }));
      });
      ws.addEventListener("message", (event) => this._onMessage(ws, event.data));
      ws.addEventListener("close", (event) => {
        this._lose(ws, event.reason || `closed (${event.code})`);
      });
      ws.addEventListener("error", () => {}); // a close event follows, with the reason
    });
  }

  /** Stop using a socket: its later events are ignored. @param {WebSocket} ws */
  _drop(ws) {
    if (ws === this._ws) {
      this._flushAcks(); // while it may still take them; else sync acks them later
      this._ws = null;
      this._authed = false;
      clearInterval(this._heartbeat);
    }
    try {
      ws.close();
    } catch {
      // already closed
    }
  }

  /**
   * The socket in use is gone: reconnect, unless the kick says not to.
   * @param {WebSocket | null} ws @param {string} reason @param {{reason: string}} [kick]
   */
  _lose(ws, reason, kick) {
    if (!ws || ws !== this._ws) return;
    if (this._authWaiter) {
      // Before AuthOk: a kick is a verdict on the token, like Error{AUTH_FAILED}.
      this._authWaiter.reject(kick ? new AuthError("AUTH_FAILED", reason) : new Error(reason));
      return;
    }
    this._drop(ws);
    for (const entry of this._pending.values()) clearTimeout(entry.timer); // resent on the next
    if (!this._wanted || this._connecting) return; // the attempt in progress sees it
    if (kick && FINAL_KICKS.has(kick.reason)) {
      this._end(new ClientClosed(reason));
    } else if (kick?.reason === "RECONNECT") {
      this._retryLater(reason, 0); // the connector is draining: log in again, at once
    } else {
      this._retryLater(reason);
    }
  }

  /** The session is over: no more reconnects, every waiting send fails. @param {Error} err */
  _end(err) {
    this._wanted = false;
    clearTimeout(this._retryTimer);
    this._retryTimer = undefined;
    this._authWaiter?.reject(err); // an attempt waiting for AuthOk ends now, not at its timeout
    if (this._ws) this._drop(this._ws);
    for (const entry of [...this._pending.values()]) this._settle(entry, err);
    globalThis.removeEventListener?.("online", this._onBrowserOnline);
    globalThis.removeEventListener?.("offline", this._onBrowserOffline);
    this._setState("closed", err.message);
    this._firstOnline?.reject(err);
  }

  /** @param {WebSocket} ws @param {number} intervalMs */
  _startHeartbeat(ws, intervalMs) {
    clearInterval(this._heartbeat);
    this._heartbeat = setInterval(() => {
      // A socket can look open long after the network or the connector is gone.
      if (Date.now() - this._lastRecv > intervalMs * this.options.heartbeatMisses) {
        this._lose(ws, "heartbeat timeout: the connector went silent");
        return;
      }
      this._sendFrame({ requestId: this._nextRequestId(), ping: {} });
    }, intervalMs);
  }

  _nextRequestId() {
    this._requestId = (this._requestId % 0xfffffff0) + 1;
    return this._requestId;
  }

  /** @param {object} frame */
  _sendFrame(frame) {
    const ws = this._ws;
    if (!ws || ws.readyState !== OPEN) return false;
    ws.send(JSON.stringify(frame));
    return true;
  }

  // -------------------------------------------------------------- receiving

  /** @param {WebSocket} ws @param {unknown} data */
  _onMessage(ws, data) {
    if (ws !== this._ws) return;
    this._lastRecv = Date.now();
    /** @type {any} */
    let frame;
    try {
      frame = JSON.parse(String(data));
    } catch {
      this._lose(ws, "the connector sent something that is not JSON");
      return;
    }
    if (frame.authOk) this._authWaiter?.resolve(frame.authOk);
    else if (frame.deliver) this._onDeliver(messageFromWire(frame.deliver.message ?? {}));
    else if (frame.sendAck) this._onSendAck(frame.sendAck);
    else if (frame.receipt) this._emit("receipt", receiptFromWire(frame.receipt));
    else if (frame.typing) this._onTyping(typingFromWire(frame.typing));
    else if (frame.presence) this._emit("presence", presenceFromWire(frame.presence));
    else if (frame.conversationSettingsChanged) {
      this._emit("settings", settingsFromWire(frame.conversationSettingsChanged));
    }
    else if (frame.kick) this._onKick(ws, frame.kick);
    else if (frame.error) this._onError(ws, frame.error);
    // pong: being a frame was the point (_lastRecv)
  }

  /** @param {import("./signals.js").Typing} typing */
  _onTyping(typing) {
    this.typing.update(typing);
    this._emit("typing", typing);
  }

  /** @param {Message} message */
  _onDeliver(message) {
    if (!this._synced) this._early.push(message); // handed out after sync, in order
    else this._enqueue(message);
  }

  /** Live messages one at a time: a gap pull must finish before the next. @param {Message} m */
  _enqueue(m) {
    this._chain = this._chain
      .then(() => this._acceptLive(m))
      .catch((err) => console.error("im: a live message failed", err));
  }

  /** @param {Message} m */
  async _acceptLive(m) {
    const cid = m.conversationId;
    const base = this._cursor.get(cid) ?? 0; // a conversation new since sync starts at 0
    if (m.seq > base + 1) {
      try {
        await this._pull(cid, base, m.seq - 1);
      } catch (err) {
        // e.g. history from before we joined the group is not ours to see
        console.warn(`im: could not pull ${cid} after ${base}`, err);
      }
    }
    this._hand(m);
    // A copy we had already (resent because our ack was lost) is acked again too.
    this._ack(cid, this._cursor.get(cid) ?? m.seq);
  }

  /** Hand a message out unless it was already. @param {Message} m */
  _hand(m) {
    if (this._seen.has(m.msgId)) {
      this.duplicates += 1;
      return false;
    }
    this._seen.set(m.msgId, true);
    if (this._seen.size > this.options.dedupeSize) {
      this._seen.delete(/** @type {string} */ (this._seen.keys().next().value));
    }
    this._cursor.set(m.conversationId, Math.max(this._cursor.get(m.conversationId) ?? 0, m.seq));
    this.typing.stopped(m.conversationId, m.senderId);
    this._emit("message", m);
    return true;
  }

  /** Cumulative acks, one frame per conversation per batch. @param {string} cid @param {number} seq */
  _ack(cid, seq) {
    this._ackPending.set(cid, Math.max(this._ackPending.get(cid) ?? 0, seq));
    if (this._ackTimer === undefined) {
      this._ackTimer = setTimeout(() => this._flushAcks(), this.options.ackDelayMs);
    }
  }

  _flushAcks() {
    clearTimeout(this._ackTimer);
    this._ackTimer = undefined;
    for (const [conversationId, seq] of this._ackPending) {
      this._sendFrame({ deliverAck: { conversationId, seq: String(seq) } });
    }
    this._ackPending.clear();
  }

  /** Pull what was missed in every conversation; then the live ones that waited. */
  async _sync() {
    const conversations = await this.gateway.sync();
    for (const conv of conversations) {
      const cid = conv.conversation_id;
      const delivered = conv.delivered_seq ?? 0;
      const base = Math.max(this._cursor.get(cid) ?? 0, delivered);
      this._cursor.set(cid, base);
      if ((conv.last_seq ?? 0) > base) await this._pull(cid, base, null);
      else if (base > delivered) await this.gateway.ack(cid, base); // acks lost with a socket
    }
    this._synced = true;
    this._emit("synced", conversations);
    const early = this._early;
    this._early = [];
    for (const m of early) this._enqueue(m);
    await this._chain;
  }

  /**
   * Hand out history after `after` (up to `until`), then ack it over REST.
   * @param {string} cid @param {number} after @param {number | null} until
   */
  async _pull(cid, after, until) {
    let afterSeq = after;
    for (;;) {
      const page = await this.gateway.history(cid, { afterSeq, limit: MAX_PAGE });
      for (const m of page.messages) {
        if (until !== null && m.seq > until) break;
        this._hand(m);
        afterSeq = m.seq;
      }
      const done = until !== null && afterSeq >= until;
      if (!page.hasMore || page.messages.length === 0 || done) break;
    }
    const top = this._cursor.get(cid) ?? 0;
    if (top > after) await this.gateway.ack(cid, top);
  }

  /** @param {WebSocket} ws @param {any} kick */
  _onKick(ws, kick) {
    const info = { reason: enumName(kick.reason, "KICK_REASON_"), detail: kick.detail ?? "" };
    this._emit("kick", info);
    this._lose(ws, `kicked: ${info.reason}${info.detail ? ` (${info.detail})` : ""}`, info);
  }

  /** @param {WebSocket} ws @param {any} error */
  _onError(ws, error) {
    const code = enumName(error.code, "ERROR_CODE_");
    const message = error.message ?? "";
    const entry = error.clientMsgId ? this._pending.get(error.clientMsgId) : undefined;
    if (this._authWaiter) {
      this._authWaiter.reject(new AuthError(code, message));
    } else if (entry) {
      this._onSendError(entry, code, message);
    } else if (FATAL_ERRORS.has(code)) {
      this._lose(ws, `error ${code}: ${message}`);
    } else {
      this._emit("error", { code, message });
    }
  }

  // ---------------------------------------------------------------- sending

  /**
   * Send to a conversation; resolves with the SendAck (the server has it, durably).
   * @param {string} conversationId
   * @param {string | Uint8Array} content text (sent as UTF-8) or bytes
   * @param {{contentType?: string, clientMsgId?: string, attachmentIds?: string[]}} [options]
   *   `attachmentIds`: your uploads (`client.gateway.uploadAttachment`) the message
   *   refers to; the conversation's members may then download them.
   * @returns {Promise<SendAck>}
   */
  send(conversationId, content, { contentType = "text/plain", clientMsgId, attachmentIds } = {}) {
    if (!this._wanted) return Promise.reject(new ClientClosed("not connected: call connect()"));
    const cmid = clientMsgId ?? newClientMsgId();
    if (this._pending.has(cmid)) {
      return Promise.reject(new Error(`a send with client_msg_id ${cmid} is in flight`));
    }
    const body = toBase64(toBytes(content));
    /** @type {Record<string, unknown>} */
    const send = { clientMsgId: cmid, conversationId, contentType, body };
    if (attachmentIds?.length) send.attachmentIds = attachmentIds;
    const frame = { send };
    return new Promise((resolve, reject) => {
      /** @type {PendingSend} */
      const entry = { cmid, frame, tries: 0, timer: undefined, resolve, reject };
      this._pending.set(cmid, entry);
      if (this._authed) this._transmit(entry); // else on the next connection
    });
  }

  /**
   * Send over REST instead of the socket (no connection needed, e.g. a page or a job
   * that only posts). Resolves once the server has it; the message then arrives on
   * every member's socket, this user's too, like any other.
   * @param {string} conversationId
   * @param {string | Uint8Array} content text (sent as UTF-8) or bytes
   * @param {{contentType?: string, clientMsgId?: string, attachmentIds?: string[]}} [options]
   *   a retry with the same clientMsgId is stored once
   * @returns {Promise<SendAck>}
   */
  post(conversationId, content, options = {}) {
    const { clientMsgId = newClientMsgId(), ...rest } = options;
    return this.gateway.postMessage(conversationId, clientMsgId, content, rest);
  }

  /** Send to the 1:1 conversation with a user (username or id). @param {string | number} peer @param {string | Uint8Array} content */
  async sendToUser(peer, content, options = {}) {
    return this.send(await this.directConversationWith(peer), content, options);
  }

  /** @param {string | number} group @param {string | Uint8Array} content */
  sendToGroup(group, content, options = {}) {
    return this.send(groupConversationId(group), content, options);
  }

  /** @param {PendingSend} entry */
  _transmit(entry) {
    clearTimeout(entry.timer);
    if (entry.tries >= this.options.sendAttempts) {
      this._settle(entry, new SendTimeout(entry.cmid, entry.tries));
      return;
    }
    if (entry.tries > 0) this.retransmits += 1;
    entry.tries += 1;
    // The same client_msg_id: the connector answers a repeat with the same SendAck.
    this._sendFrame({ requestId: this._nextRequestId(), ...entry.frame });
    entry.timer = setTimeout(() => {
      if (this._authed) this._transmit(entry); // offline: it goes on the next connection
    }, this.options.sendTimeoutMs);
  }

  _resendPending() {
    for (const entry of this._pending.values()) {
      entry.tries = 0;
      this._transmit(entry);
    }
  }

  /** @param {any} ack */
  _onSendAck(ack) {
    const entry = this._pending.get(ack.clientMsgId);
    if (entry) this._settle(entry, null, sendAckFromWire(ack));
  }

  /** @param {PendingSend} entry @param {string} code @param {string} message */
  _onSendError(entry, code, message) {
    if (RETRYABLE_SEND_ERRORS.has(code) && entry.tries < this.options.sendAttempts) {
      clearTimeout(entry.timer); // busy: the same Send again after a pause
      entry.timer = setTimeout(() => this._authed && this._transmit(entry), 1000 * entry.tries);
      return;
    }
    this._settle(entry, new SendError(code, message, entry.cmid));
  }

  /** @param {PendingSend} entry @param {Error | null} err @param {SendAck} [ack] */
  _settle(entry, err, ack) {
    clearTimeout(entry.timer);
    this._pending.delete(entry.cmid);
    if (err) entry.reject(err);
    else entry.resolve(/** @type {SendAck} */ (ack));
  }

  // ------------------------------------------------------------ reading etc.

  /**
   * Report that the user has read a conversation up to `seq` (members get a Receipt).
   * @param {string} conversationId @param {number} seq
   */
  async read(conversationId, seq) {
    const frame = { read: { conversationId, seq: String(seq) } };
    if (!this._authed || !this._sendFrame(frame)) await this.gateway.read(conversationId, seq);
  }

  /**
   * Recall a message (`gateway.recall`); the recall event comes to every member's
   * devices, this one's too, as a `"message"` (see `applyEvent`).
   * @param {string} conversationId @param {string} msgId
   */
  recall(conversationId, msgId) {
    return this.gateway.recall(conversationId, msgId);
  }

  /**
   * Edit one's own text message (`gateway.edit`); pass the same `clientMsgId` to retry
   * safely (one is made up when none is given).
   * @param {string} conversationId @param {string} msgId @param {string} text
   * @param {string} [clientMsgId]
   */
  edit(conversationId, msgId, text, clientMsgId = newClientMsgId()) {
    return this.gateway.edit(conversationId, msgId, text, clientMsgId);
  }

  /**
   * Tell the other members the user is (no longer) typing; best effort (false when not
   * connected). While the user types, call it again every few seconds: a STARTED runs
   * out after the expiry the server gives it.
   * @param {string} conversationId @param {boolean} [started]
   */
  sendTyping(conversationId, started = true) {
    if (!this._authed) return false;
    return this._sendFrame({ requestId: this._nextRequestId(), ...typingFrame(conversationId, started) });
  }

  /** User ids typing in a conversation now. @param {string} conversationId */
  typingIn(conversationId) {
    return this.typing.typingIn(conversationId);
  }

  /** Highest seq of a conversation handed out so far. @param {string} conversationId */
  cursor(conversationId) {
    return this._cursor.get(conversationId) ?? 0;
  }

  /** A user id from a username or an id (cached). @param {string | number} peer */
  async resolveUser(peer) {
    if (typeof peer === "number") return peer;
    const known = this._userIds.get(peer);
    if (known !== undefined) return known;
    const user = await this.gateway.userByName(peer);
    if (!user) throw new ApiError(404, "not_found", `no user named ${peer}`);
    this._userIds.set(peer, Number(user.user_id));
    return Number(user.user_id);
  }

  /** The 1:1 conversation id with a user (username or id). @param {string | number} peer */
  async directConversationWith(peer) {
    return directConversationId(this.userId, await this.resolveUser(peer));
  }

  /**
   * Close the socket and stop reconnecting; sends still waiting fail. `logout` also
   * ends the session at the gateway.
   * @param {{logout?: boolean}} [options]
   */
  async close({ logout = false } = {}) {
    const wanted = this._wanted;
    this._flushAcks();
    if (wanted) this._end(new ClientClosed("closed by the client"));
    else this._setState("closed", "closed by the client");
    if (logout && this.gateway.session) {
      try {
        await this.gateway.logout();
      } finally {
        this._credentials = null;
      }
    }
  }
}

/** Errors after which retrying cannot help: the session or the credentials are gone. @param {unknown} err */
function isFinal(err) {
  if (err instanceof ApiError) return err.status === 401 || err.status === 403;
  if (err instanceof AuthError) return err.code === "AUTH_FAILED";
  return err instanceof ClientClosed;
}
