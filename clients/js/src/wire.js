// @ts-check
/**
 * The im.v1.json wire encoding (docs/protocol.md "JSON frames") and the one message
 * shape the SDK hands out, whether a message came live on the socket or from history.
 *
 * In canonical JSON, 64-bit integers are strings: `seq`, user ids and timestamps are
 * turned into numbers here (they stay far below 2^53), but `msgId` stays a string: a
 * time-ordered 64-bit id does not fit a JavaScript number.
 * @module
 */

export const SUBPROTOCOL = "im.v1.json";

/** Errors after which the connector closes the socket (docs/protocol.md "Errors"). */
export const FATAL_ERRORS = new Set([
  "BAD_FRAME",
  "FRAME_TOO_LARGE",
  "AUTH_REQUIRED",
  "AUTH_FAILED",
  "AUTH_TIMEOUT",
  "HEARTBEAT_TIMEOUT",
]);

/** Send errors worth resending under the same client_msg_id, after a pause. */
export const RETRYABLE_SEND_ERRORS = new Set(["UNAVAILABLE", "RATE_LIMITED"]);

/**
 * @typedef {object} Message
 * @property {string} msgId decimal string: globally unique, time ordered
 * @property {string} conversationId "d:<low>:<high>" or "g:<id>"
 * @property {number} seq gap-free per conversation, from 1
 * @property {number} senderId
 * @property {string} senderDevice
 * @property {string} clientMsgId
 * @property {string} contentType
 * @property {Uint8Array} body
 * @property {string | null} text the body as UTF-8 when contentType is text/*, else null
 * @property {number} serverTs milliseconds since the Unix epoch
 * @property {string} refersTo events (recall, edit): the msgId they act on; else ""
 * @property {number} editedAt when the text was last edited (ms), 0 if never
 * @property {boolean} recalled recalled: its body is empty for good

 * @property {string[]} attachmentIds uploads the message refers to
 *   (`client.gateway.downloadAttachment(id)`)
 */

/**
 * @typedef {object} SendAck
 * @property {string} clientMsgId
 * @property {string} msgId
 * @property {number} serverTs
 * @property {string} conversationId
 */

/**
 * @typedef {object} Receipt
 * @property {string} conversationId
 * @property {number} readerId
 * @property {number} readSeq the reader has read every message up to this seq
 */

/**
 * A member's own settings of a conversation (ConversationSettingsChanged, and the
 * `settings` of GET /v1/conversations in camelCase).
 * @typedef {object} ConversationSettings
 * @property {string} conversationId
 * @property {number} mutedUntil ms since the epoch; 0 not muted; -1 muted forever
 * @property {boolean} pinned
 * @property {boolean} archived
 * @property {string} name the user's own name for it ("" = none)
 * @property {number} updatedAt ms since the epoch
 */

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** @param {Uint8Array} bytes */
export function toBase64(bytes) {
  let binary = "";
  // In slices: String.fromCharCode(...all) overflows the stack on large bodies.
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

/** @param {string} b64 */
export function fromBase64(b64) {
  const binary = atob(b64);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/** @param {string | Uint8Array} content */
export function toBytes(content) {
  return typeof content === "string" ? encoder.encode(content) : content;
}

/** A JSON int64 (string, number or absent) as a number. @param {unknown} v */
export function num(v) {
  return v === undefined || v === null || v === "" ? 0 : Number(v);
}

/**
 * The 1:1 conversation id of two users.
 * @param {number} a @param {number} b
 */
export function directConversationId(a, b) {
  if (a === b) throw new Error("a direct conversation needs two different users");
  return `d:${Math.min(a, b)}:${Math.max(a, b)}`;
}

/** A group's conversation id from 7, "7" or "g:7". @param {string | number} group */
export function groupConversationId(group) {
  const text = String(group).trim();
  return text.startsWith("g:") ? text : `g:${text}`;
}

/**
 * @param {string} contentType @param {Uint8Array} body
 * @returns {string | null}
 */
function textOf(contentType, body) {
  const text = contentType.startsWith("text/") || contentType === "application/vnd.im.edit";
  return text ? decoder.decode(body) : null;
}

/** A msgId that may be absent or "0" (protobuf's default) as "" or its decimal string. */
function idOrEmpty(/** @type {unknown} */ v) {
  return v === undefined || v === null || v === "" || v === "0" || v === 0 ? "" : String(v);
}

/**
 * A message from a Deliver frame (canonical JSON: camelCase, int64 as strings, base64).
 * @param {any} m
 * @returns {Message}
 */
export function messageFromWire(m) {
  const body = m.body ? fromBase64(m.body) : new Uint8Array();
  const contentType = m.contentType ?? "";
  return {
    msgId: String(m.msgId ?? "0"),
    conversationId: m.conversationId ?? "",
    seq: num(m.seq),
    senderId: num(m.senderId),
    senderDevice: m.senderDevice ?? "",
    clientMsgId: m.clientMsgId ?? "",
    contentType,
    body,
    text: textOf(contentType, body),
    serverTs: num(m.serverTs),
    refersTo: idOrEmpty(m.refersTo),
    editedAt: num(m.editedAt),
    recalled: Boolean(m.recalled),

    attachmentIds: Array.isArray(m.attachmentIds) ? m.attachmentIds.map(String) : [],
  };
}

/**
 * A message from the history endpoint (snake_case, body_b64).
 * @param {any} m
 * @returns {Message}
 */
export function messageFromRest(m) {
  const body = m.body_b64 != null ? fromBase64(m.body_b64) : encoder.encode(m.text ?? "");
  const contentType = m.content_type ?? "";
  return {
    msgId: String(m.msg_id),
    conversationId: m.conversation_id,
    seq: num(m.seq),
    senderId: num(m.sender_id),
    senderDevice: m.sender_device ?? "",
    clientMsgId: m.client_msg_id ?? "",
    contentType,
    body,
    text: m.text ?? textOf(contentType, body),
    serverTs: num(m.server_ts),
    refersTo: idOrEmpty(m.refers_to),
    editedAt: num(m.edited_at),
    recalled: Boolean(m.recalled),

    attachmentIds: Array.isArray(m.attachment_ids) ? m.attachment_ids.map(String) : [],
  };
}

/** @param {any} a @returns {SendAck} */
export function sendAckFromWire(a) {
  return {
    clientMsgId: a.clientMsgId ?? "",
    msgId: String(a.msgId ?? "0"),
    serverTs: num(a.serverTs),
    conversationId: a.conversationId ?? "",
  };
}

/** @param {any} r @returns {Receipt} */
export function receiptFromWire(r) {
  return {
    conversationId: r.conversationId ?? "",
    readerId: num(r.readerId),
    readSeq: num(r.readSeq),
  };
}

/** @param {any} s @returns {ConversationSettings} */
export function settingsFromWire(s) {
  return {
    conversationId: s.conversationId ?? "",
    mutedUntil: num(s.mutedUntil),
    pinned: Boolean(s.pinned),
    archived: Boolean(s.archived),
    name: s.name ?? "",
    updatedAt: num(s.updatedAt),
  };
}

/** "ERROR_CODE_BAD_FRAME" -> "BAD_FRAME"; "KICK_REASON_RECONNECT" -> "RECONNECT". */
export function enumName(/** @type {unknown} */ value, /** @type {string} */ prefix) {
  const text = String(value ?? "");
  return text.startsWith(prefix) ? text.slice(prefix.length) : text || "UNSPECIFIED";
}
