// @ts-check
/**
 * Recall and edit events (docs/protocol.md "Events"). They arrive like any message
 * (live, in sync and in history), in seq order, with a reserved content type and
 * `refersTo`, the msgId of the message they act on. History already shows messages in
 * their current state; a client that keeps messages applies the events it receives:
 *
 *     const view = new Map(); // msgId -> Message
 *     client.on("message", (m) => { if (!applyEvent(view, m)) view.set(m.msgId, m); });
 * @module
 */

/** Recalls `refersTo`: its body is gone for good. */
export const RECALL = "application/vnd.im.recall";
/** Replaces the text of `refersTo`; the event's text is the new text. */
export const EDIT = "application/vnd.im.edit";
/** A message the server made to act on another one (never shown by itself). Group
 * events (`application/vnd.im.group.*`) are not: they are shown, as lines. */
export function isEvent(/** @type {{contentType: string}} */ message) {
  return message.contentType === RECALL || message.contentType === EDIT;
}

/**
 * Apply `event` to the message it refers to in `view` (msgId -> Message), if there.
 * Returns false for an ordinary message. Idempotent: a recall erases the text for good,
 * an edit after a recall changes nothing, an event seen twice changes nothing more.
 * @param {Map<string, import("./wire.js").Message>} view
 * @param {import("./wire.js").Message} event
 */
export function applyEvent(view, event) {
  if (!isEvent(event)) return false;
  const target = view.get(event.refersTo);
  if (!target || target.conversationId !== event.conversationId) return true;
  if (event.contentType === RECALL) {
    target.recalled = true;
    target.body = new Uint8Array();
    target.text = target.text === null ? null : "";
  } else if (event.contentType === EDIT && !target.recalled && event.serverTs >= target.editedAt) {
    target.body = event.body;
    target.text = event.text;
    target.editedAt = event.serverTs;
  }
  return true;
}

/** How a chat shows a message in its current state. @param {import("./wire.js").Message} m */
export function displayText(m) {
  if (m.recalled) return "message recalled";
  const text = m.text ?? `(${m.contentType}, ${m.body.length} bytes)`;
  return m.editedAt ? `${text} (edited)` : text;
}
