// @ts-check
/**
 * The gateway's REST API (docs/rest-api.md) on `fetch`: login, refresh, users,
 * conversations, history, sending without a socket, cursors, receipts and groups. Bodies come back as the
 * gateway's JSON objects, except messages, which are turned into the SDK's `Message`.
 * @module
 */

import { groupConversationId, messageFromRest, toBase64 } from "./wire.js";

/** The gateway's largest history page. */
export const MAX_PAGE = 500;

/** An answer that is not a success: the problem details' `code` is stable. */
export class ApiError extends Error {
  /**
   * @param {number} status HTTP status (0: the gateway could not be reached)
   * @param {string} code e.g. "invalid_credentials", "username_taken", "network"
   * @param {string} detail
   * @param {number | null} retryAfter seconds, on 429
   */
  constructor(status, code, detail, retryAfter = null) {
    super(`${status} ${code}: ${detail}`);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.detail = detail;
    this.retryAfter = retryAfter;
  }
}

/**
 * @typedef {object} Session what a login or refresh gives
 * @property {string} accessToken
 * @property {string} refreshToken single use: each refresh hands out the next one
 * @property {number} userId
 * @property {string} deviceId
 * @property {number} expiresAt access token expiry, ms since the epoch (local clock)
 * @property {{id: string, tcp: string, ws: string, tls: boolean}} connector
 * @property {number} heartbeatInterval seconds
 */

/**
 * @typedef {object} Conversation
 * @property {string} conversation_id
 * @property {"direct" | "group"} kind
 * @property {string | null} name
 * @property {number | null} peer_id
 * @property {number} last_seq
 * @property {number} delivered_seq
 * @property {number} read_seq
 * @property {number} unread
 */

/** @param {any} data @returns {Session} */
function sessionFrom(data) {
  return {
    accessToken: data.access_token,
    refreshToken: data.refresh_token ?? "",
    userId: Number(data.user_id),
    deviceId: String(data.device_id),
    expiresAt: Date.now() + Number(data.expires_in ?? 0) * 1000,
    connector: data.connector,
    heartbeatInterval: Number(data.heartbeat_interval ?? 20),
  };
}

export class GatewayClient {
  /**
   * @param {string} baseUrl e.g. "http://127.0.0.1:8080" ("" in a page the gateway serves)
   * @param {{fetch?: typeof fetch, onSession?: (s: Session | null) => void}} [options]
   *   `onSession` hears of every new session (login, refresh) and of its end (null):
   *   refresh tokens are single use, so whoever stores one must store each new one.
   */
  constructor(baseUrl, options = {}) {
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this.fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.onSession = options.onSession ?? (() => {});
    /** @type {Session | null} */
    this.session = null;
    /** @type {Promise<Session> | null} */
    this._refreshing = null;
  }

  /**
   * @param {string} method @param {string} path @param {unknown} [body]
   * @param {{auth?: boolean}} [options]
   */
  async request(method, path, body, { auth = true } = {}) {
    if (auth && this.session && this.session.expiresAt - Date.now() < 30_000) {
      await this.refresh(); // about to expire: a 401 mid-request would cost a round trip
    }
    let response = await this._send(method, path, body, auth);
    if (response.status === 401 && auth && this.session?.refreshToken) {
      await this.refresh(); // revoked or expired early: one refresh, one retry
      response = await this._send(method, path, body, auth);
    }
    if (response.status === 204) return null;
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      const retry = response.headers.get("retry-after");
      throw new ApiError(
        response.status,
        data.code ?? "http_error",
        data.detail ?? response.statusText,
        retry === null ? null : Number(retry),
      );
    }
    return data;
  }

  /** @param {string} method @param {string} path @param {unknown} body @param {boolean} auth */
  async _send(method, path, body, auth) {
    /** @type {Record<string, string>} */
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (auth) {
      if (!this.session) throw new ApiError(401, "unauthorized", "not logged in");
      headers.Authorization = `Bearer ${this.session.accessToken}`;
    }
    try {
      return await this.fetch(this.baseUrl + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (err) {
      throw new ApiError(0, "network", `gateway unreachable: ${/** @type {Error} */ (err).message}`);
    }
  }

  /** @param {Session | null} session */
  _setSession(session) {
    this.session = session;
    this.onSession(session);
    return session;
  }

  // ------------------------------------------------------------------ auth

  /** @param {string} username @param {string} password @param {string} [displayName] */
  register(username, password, displayName) {
    const body = { username, password, ...(displayName ? { display_name: displayName } : {}) };
    return this.request("POST", "/v1/auth/register", body, { auth: false });
  }

  /**
   * Log in; the device's previous session ends.
   * @param {string} username @param {string} password @param {string} deviceId
   * @returns {Promise<Session>}
   */
  async login(username, password, deviceId) {
    const body = { username, password, device_id: deviceId };
    const data = await this.request("POST", "/v1/auth/login", body, { auth: false });
    return /** @type {Session} */ (this._setSession(sessionFrom(data)));
  }

  /**
   * New tokens (and a live connector) for the session. One at a time: a refresh token
   * is single use, and presenting a spent one ends the session.
   * @param {string} [refreshToken] to resume a session stored elsewhere
   * @returns {Promise<Session>}
   */
  refresh(refreshToken) {
    if (!this._refreshing) {
      const token = refreshToken ?? this.session?.refreshToken;
      this._refreshing = (async () => {
        if (!token) throw new ApiError(401, "unauthorized", "no refresh token");
        const body = { refresh_token: token };
        try {
          const data = await this.request("POST", "/v1/auth/refresh", body, { auth: false });
          return /** @type {Session} */ (this._setSession(sessionFrom(data)));
        } catch (err) {
          if (err instanceof ApiError && err.status === 401) this._setSession(null);
          throw err;
        }
      })().finally(() => {
        this._refreshing = null;
      });
    }
    return this._refreshing;
  }

  /** End this session (its sockets are kicked). */
  async logout() {
    try {
      await this.request("POST", "/v1/auth/logout");
    } finally {
      this._setSession(null);
    }
  }

  // ------------------------------------------------------------------ users

  me() {
    return this.request("GET", "/v1/users/me");
  }

  /** @param {number} userId */
  user(userId) {
    return this.request("GET", `/v1/users/${userId}`);
  }

  /** The user of that name, or null. @param {string} username */
  async userByName(username) {
    const data = await this.request("GET", `/v1/users?username=${encodeURIComponent(username)}`);
    return data.users[0] ?? null;
  }

  // ---------------------------------------------------------------- privacy

  /** No 1:1 messages either way, no group invites from them, no presence. @param {number} userId */
  block(userId) {
    return this.request("PUT", `/v1/users/${userId}/block`);
  }

  /** @param {number} userId */
  unblock(userId) {
    return this.request("DELETE", `/v1/users/${userId}/block`);
  }

  /** The ids of the users this user blocked. @returns {Promise<number[]>} */
  async blocks() {
    return (await this.request("GET", "/v1/users/me/blocks")).user_ids;
  }

  /** @returns {Promise<{invites_from_contacts_only: boolean}>} */
  privacy() {
    return this.request("GET", "/v1/users/me/privacy");
  }

  /** @param {{invites_from_contacts_only?: boolean}} settings */
  setPrivacy(settings) {
    return this.request("PATCH", "/v1/users/me/privacy", settings);
  }

  // ---------------------------------------------------------- conversations

  /** Every conversation of the user, with unread counts. @returns {Promise<Conversation[]>} */
  async conversations() {
    return (await this.request("GET", "/v1/conversations")).conversations;
  }

  /** What a device calls after (re)connecting. @returns {Promise<Conversation[]>} */
  async sync() {
    return (await this.request("GET", "/v1/sync")).conversations;
  }

  /** Get or create the 1:1 conversation. @param {number} peerId @returns {Promise<Conversation>} */
  directConversation(peerId) {
    return this.request("POST", "/v1/conversations/direct", { peer_id: peerId });
  }

  /**
   * One page of history after `afterSeq`, ascending.
   * @param {string} conversationId
   * @param {{afterSeq?: number, limit?: number}} [page]
   * @returns {Promise<{messages: import("./wire.js").Message[], hasMore: boolean}>}
   */
  async history(conversationId, { afterSeq = 0, limit = 100 } = {}) {
    const path =
      `/v1/conversations/${encodeURIComponent(conversationId)}/messages` +
      `?after_seq=${afterSeq}&limit=${limit}`;
    const data = await this.request("GET", path);
    return { messages: data.messages.map(messageFromRest), hasMore: data.has_more };
  }

  /**
   * Recall a message: its sender within the recall window, a group's owner or admin
   * at any time. Resolves to the recall event `{msg_id, conversation_id, refers_to,
   * content_type, server_ts}` (on its way to every member). Safe to retry.
   * @param {string} conversationId @param {string} msgId
   */
  recall(conversationId, msgId) {
    const path = `/v1/conversations/${encodeURIComponent(conversationId)}/messages/${msgId}`;
    return this.request("POST", `${path}/recall`);
  }

  /**
   * Replace the text of one's own text message (within the edit window). Resolves to
   * the edit event; retrying with the same `clientMsgId` is the same edit.
   * @param {string} conversationId @param {string} msgId @param {string} text
   * @param {string} [clientMsgId]
   */
  edit(conversationId, msgId, text, clientMsgId) {
    const path = `/v1/conversations/${encodeURIComponent(conversationId)}/messages/${msgId}`;
    return this.request("PATCH", path, clientMsgId ? { text, client_msg_id: clientMsgId } : { text });
  }

  /**
   * Send a message over REST, without a socket (`POST /v1/conversations/{id}/messages`).
   * Idempotent by `clientMsgId`: after a 503 or a network error, call again with the
   * same one and the message is stored once. `ImClient.post` makes the id for you.
   * @param {string} conversationId
   * @param {string} clientMsgId 1-64 characters, not starting with "~" (the server's own keys)
   * @param {string | Uint8Array} content text (sent as UTF-8) or bytes
   * @param {{contentType?: string, attachmentIds?: string[]}} [options]
   * @returns {Promise<import("./wire.js").SendAck>} msgId as a decimal string
   */
  async postMessage(conversationId, clientMsgId, content, options = {}) {
    const { contentType = "text/plain", attachmentIds = [] } = options;
    /** @type {Record<string, unknown>} */
    const body = { client_msg_id: clientMsgId, content_type: contentType };
    if (typeof content === "string") body.text = content;
    else body.body_base64 = toBase64(content);
    if (attachmentIds.length) body.attachment_ids = attachmentIds;
    const path = `/v1/conversations/${encodeURIComponent(conversationId)}/messages`;
    const data = await this.request("POST", path, body);
    return {
      clientMsgId: data.client_msg_id,
      msgId: String(data.msg_id),
      serverTs: Number(data.server_ts),
      conversationId: data.conversation_id,
    };
  }

  /**
   * Text messages of my conversations holding every word of `query` (whole words, any
   * case, accents ignored), newest first; only `conversationId` when given. Pass
   * `nextCursor` back as `cursor` for older hits. `snippet` is plain text around the
   * first match; `highlights` are [start, end) offsets of the matching words in it.
   * @param {string} query
   * @param {{conversationId?: string, cursor?: string, limit?: number}} [options]
   * @returns {Promise<{hits: {message: import("./wire.js").Message, snippet: string,
   *   highlights: [number, number][]}[], nextCursor: string | null}>}
   */
  async search(query, { conversationId, cursor = "", limit = 20 } = {}) {
    const params = new URLSearchParams({ q: query, limit: String(limit) });
    if (conversationId != null) params.set("conversation_id", conversationId);
    if (cursor) params.set("cursor", cursor);
    const data = await this.request("GET", `/v1/search?${params}`);
    const hits = data.results.map((r) => ({
      message: messageFromRest(r.message),
      snippet: r.snippet.text,
      highlights: r.snippet.highlights,
    }));
    return { hits, nextCursor: data.next_cursor ?? null };
  }

  /**
   * Every other member's presence: `{user_id, online, last_seen_ms}` (null: unknown or
   * hidden). Members only.
   * @param {string} conversationId
   */
  async conversationPresence(conversationId) {
    const path = `/v1/conversations/${encodeURIComponent(conversationId)}/presence`;
    return (await this.request("GET", path)).members;
  }

  /** Your presence setting: `{visible, last_seen_ms}`. */
  myPresence() {
    return this.request("GET", "/v1/users/me/presence");
  }

  /** Show (true) or hide (false) your online state and last seen. @param {boolean} visible */
  setPresenceVisible(visible) {
    return this.request("PUT", "/v1/users/me/presence", { visible });
  }

  /** @param {string} conversationId @param {number} seq */
  ack(conversationId, seq) {
    return this.request("POST", `/v1/conversations/${encodeURIComponent(conversationId)}/ack`, {
      seq,
    });
  }

  /** @param {string} conversationId @param {number} seq */
  read(conversationId, seq) {
    return this.request("POST", `/v1/conversations/${encodeURIComponent(conversationId)}/read`, {
      seq,
    });
  }

  /**
   * Who has read message `seq` (computed from the members' read cursors).
   * @param {string} conversationId @param {number} seq
   * @param {{list?: "read" | "unread" | "both", cursor?: string, limit?: number}} [options]
   */
  receipts(conversationId, seq, { list = "both", cursor = "", limit = 100 } = {}) {
    const path =
      `/v1/conversations/${encodeURIComponent(conversationId)}/receipts` +
      `?seq=${seq}&list=${list}&limit=${limit}&cursor=${encodeURIComponent(cursor)}`;
    return this.request("GET", path);
  }

  // ------------------------------------------------------------- attachments

  /**
   * Upload a file (a `Blob`/`File`, or bytes) for messages; send its `attachment_id`
   * in `send(..., {attachmentIds})`. The gateway refuses files over its size limit
   * (413) and types it does not accept (415).
   * @param {Blob | Uint8Array} file
   * @param {{filename?: string, contentType?: string}} [options] defaults: the File's
   * @returns {Promise<{attachment_id: string, owner_id: number, filename: string,
   *   content_type: string, size: number, sha256: string, created_at: number}>}
   */
  async uploadAttachment(file, { filename, contentType } = {}) {
    const name = filename ?? (/** @type {any} */ (file).name || "file");
    const type =
      contentType || (file instanceof Blob ? file.type : "") || "application/octet-stream";
    const path = `/v1/attachments?filename=${encodeURIComponent(name)}`;
    try {
      const response = await this._authorized((auth) =>
        this.fetch(this.baseUrl + path, {
          method: "POST",
          headers: { ...auth, "Content-Type": type, Accept: "application/json" },
          body: /** @type {BodyInit} */ (file),
        }),
      );
      return await response.json();
    } catch (err) {
      // A too-large upload is refused before it is read and the connection closed:
      // a client still sending sees a network error. Say what it was.
      if (!(err instanceof ApiError) || err.status !== 0) throw err;
      const size = file instanceof Blob ? file.size : file.byteLength;
      const limits = await this.attachmentLimits().catch(() => null);
      if (limits && size > limits.max_bytes) {
        throw new ApiError(413, "payload_too_large", `the attachment is larger than ${limits.max_bytes} bytes`);
      }
      throw err;
    }
  }

  /** What uploads may be. @returns {Promise<{max_bytes: number, content_types: string[], max_per_message: number}>} */
  attachmentLimits() {
    return this.request("GET", "/v1/attachments/limits");
  }

  /** Metadata of an attachment you may read. @param {string} attachmentId */
  attachmentMeta(attachmentId) {
    return this.request("GET", `/v1/attachments/${encodeURIComponent(attachmentId)}/meta`);
  }

  /**
   * The attachment's bytes as a `Blob` (its type set). Downloads need the bearer
   * token, so an `<img>` cannot point at the URL itself: show
   * `URL.createObjectURL(blob)` instead.
   * @param {string} attachmentId
   * @returns {Promise<Blob>}
   */
  async downloadAttachment(attachmentId) {
    const url = `${this.baseUrl}/v1/attachments/${encodeURIComponent(attachmentId)}`;
    const response = await this._authorized((auth) => this.fetch(url, { headers: auth }));
    return response.blob();
  }

  /**
   * A fetch with the bearer header, once more after a refresh on 401; a failed
   * answer becomes an ApiError.
   * @param {(auth: Record<string, string>) => Promise<Response>} call
   */
  async _authorized(call) {
    if (!this.session) throw new ApiError(401, "unauthorized", "not logged in");
    if (this.session.expiresAt - Date.now() < 30_000) await this.refresh();
    const headers = () => ({ Authorization: `Bearer ${this.session?.accessToken}` });
    let response;
    try {
      response = await call(headers());
      if (response.status === 401 && this.session?.refreshToken) {
        await this.refresh();
        response = await call(headers());
      }
    } catch (err) {
      if (err instanceof ApiError) throw err;
      throw new ApiError(0, "network", `gateway unreachable: ${/** @type {Error} */ (err).message}`);
    }
    if (!response.ok) {
      const data = await response.json().catch(() => ({}));
      const retry = response.headers.get("retry-after");
      throw new ApiError(
        response.status,
        data.code ?? "http_error",
        data.detail ?? response.statusText,
        retry === null ? null : Number(retry),
      );
    }
    return response;
  }

  /**
   * Change your own settings of a conversation; only what is given changes. Your other
   * online devices get a "settings" event. Resolves to the settings now in force
   * (`{muted, muted_until, pinned, archived, name, updated_at}`).
   * @param {string} conversationId
   * @param {{mutedUntil?: number, muteForSeconds?: number, pinned?: boolean,
   *   archived?: boolean, name?: string}} changes mutedUntil: ms since the epoch,
   *   0 unmutes, -1 mutes forever
   */
  updateSettings(conversationId, changes) {
    const fields = {
      muted_until: changes.mutedUntil,
      mute_for_seconds: changes.muteForSeconds,
      pinned: changes.pinned,
      archived: changes.archived,
      name: changes.name,
    };
    const body = Object.fromEntries(Object.entries(fields).filter(([, v]) => v !== undefined));
    return this.request(
      "PATCH",
      `/v1/conversations/${encodeURIComponent(conversationId)}/settings`,
      body,
    );
  }

  /**
   * Mute for `seconds`, or forever when not given.
   * @param {string} conversationId @param {number} [seconds]
   */
  mute(conversationId, seconds) {
    return this.updateSettings(
      conversationId,
      seconds === undefined ? { mutedUntil: -1 } : { muteForSeconds: seconds },
    );
  }

  /** @param {string} conversationId */
  unmute(conversationId) {
    return this.updateSettings(conversationId, { mutedUntil: 0 });
  }

  /** @param {string} conversationId @param {boolean} [pinned] */
  pin(conversationId, pinned = true) {
    return this.updateSettings(conversationId, { pinned });
  }

  // ------------------------------------------------------------------ groups

  /**
   * @param {string} name @param {number[]} memberIds
   * @param {{historyVisible?: boolean}} [options]
   */
  createGroup(name, memberIds, { historyVisible = false } = {}) {
    const body = { name, member_ids: memberIds, history_visible: historyVisible };
    return this.request("POST", "/v1/groups", body);
  }

  /** @param {string | number} groupId */
  group(groupId) {
    return this.request("GET", `/v1/groups/${groupPath(groupId)}`);
  }

  /** @param {string | number} groupId @param {{cursor?: string, limit?: number}} [page] */
  members(groupId, { cursor = "", limit = 100 } = {}) {
    const query = `?limit=${limit}&cursor=${encodeURIComponent(cursor)}`;
    return this.request("GET", `/v1/groups/${groupPath(groupId)}/members${query}`);
  }

  /** @param {string | number} groupId @param {number[]} userIds */
  addMembers(groupId, userIds) {
    return this.request("POST", `/v1/groups/${groupPath(groupId)}/members`, { user_ids: userIds });
  }

  /** @param {string | number} groupId @param {number} userId */
  removeMember(groupId, userId) {
    return this.request("DELETE", `/v1/groups/${groupPath(groupId)}/members/${userId}`);
  }

  /** @param {string | number} groupId */
  leaveGroup(groupId) {
    return this.request("POST", `/v1/groups/${groupPath(groupId)}/leave`);
  }

  // ---- group lifecycle (each change shows in the group as a system event)

  /**
   * Change what is given (owner or admin); returns the group.
   * @param {string | number} groupId
   * @param {{name?: string, description?: string, avatar?: string}} changes
   */
  updateGroup(groupId, changes) {
    return this.request("PATCH", `/v1/groups/${groupPath(groupId)}`, changes);
  }

  /** @param {string | number} groupId @param {string} name */
  renameGroup(groupId, name) {
    return this.updateGroup(groupId, { name });
  }

  /** Make `userId` the owner (owner only); the caller becomes an admin. */
  transferGroup(groupId, userId) {
    return this.request("POST", `/v1/groups/${groupPath(groupId)}/transfer`, { user_id: userId });
  }

  /** Dissolve the group (owner only): read-only from now on. */
  dissolveGroup(groupId) {
    return this.request("POST", `/v1/groups/${groupPath(groupId)}/dissolve`);
  }

  /**
   * A new invite link (owner or admin); its `token` is only in this answer.
   * @param {string | number} groupId
   * @param {{expiresInSeconds?: number, maxUses?: number, approvalRequired?: boolean}} [options]
   */
  createInvite(groupId, { expiresInSeconds = 7 * 24 * 3600, maxUses = 0, approvalRequired = false } = {}) {
    const body = { expires_in_seconds: expiresInSeconds, max_uses: maxUses, approval_required: approvalRequired };
    return this.request("POST", `/v1/groups/${groupPath(groupId)}/invites`, body);
  }

  /** @param {string | number} groupId */
  async invites(groupId) {
    return (await this.request("GET", `/v1/groups/${groupPath(groupId)}/invites`)).invites;
  }

  /** @param {string | number} groupId @param {string} linkId */
  revokeInvite(groupId, linkId) {
    return this.request("DELETE", `/v1/groups/${groupPath(groupId)}/invites/${encodeURIComponent(linkId)}`);
  }

  /** Join with an invite token: {conversation_id, name, status: joined|already_member|pending}. */
  joinGroup(token) {
    return this.request("POST", "/v1/groups/join", { token });
  }

  /** @param {string | number} groupId */
  async joinRequests(groupId) {
    return (await this.request("GET", `/v1/groups/${groupPath(groupId)}/join-requests`)).requests;
  }

  /** Approve or reject a join request; resolves to true when the user joined. */
  async decideJoinRequest(groupId, userId, approve) {
    const verb = approve ? "approve" : "reject";
    const path = `/v1/groups/${groupPath(groupId)}/join-requests/${userId}/${verb}`;
    return (await this.request("POST", path)).joined;
  }
}

/** @param {string | number} groupId */
function groupPath(groupId) {
  return encodeURIComponent(groupConversationId(groupId));
}
