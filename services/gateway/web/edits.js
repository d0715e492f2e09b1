// Recall and edit on the chat page: the events that come as messages are applied to the
// messages they refer to (history already shows the current state), and the Edit and
// Recall buttons of our own messages call the gateway. The events then come back to
// every device, this one too, and redraw the message.
import { applyEvent, isEvent } from "/sdk/im.js";
import { $ } from "./view.js";

/**
 * Apply the events among `messages` (just added to `conv`) to their targets.
 * @param {import("./view.js").Conv} conv @param {import("/sdk/im.js").Message[]} messages
 */
export function applyEvents(conv, messages) {
  const events = messages.filter(isEvent);
  if (!events.length) return;
  const byId = new Map([...conv.messages.values()].map((m) => [m.msgId, m]));
  for (const event of events) applyEvent(byId, event);
}

/**
 * The message actions: buttons with data-action="edit" | "recall" in a bubble.
 * @param {import("/sdk/im.js").ImClient} client
 * @param {() => import("./view.js").Conv | undefined} openConv
 * @param {(err: unknown) => string} describe
 */
export function bindMessageActions(client, openConv, describe) {
  $("messages").addEventListener("click", async (event) => {
    const button = /** @type {HTMLElement} */ (event.target).closest("button[data-action]");
    const conv = openConv();
    const seq = Number(button?.closest("[data-seq]")?.getAttribute("data-seq"));
    const message = conv?.messages.get(seq);
    if (!button || !conv || !message) return;
    $("message-error").textContent = "";
    try {
      if (button.dataset.action === "recall") {
        await client.recall(conv.id, message.msgId);
        return;
      }
      const text = prompt("Edit message", message.text ?? "");
      if (text === null || !text.trim() || text.trim() === message.text) return;
      await client.edit(conv.id, message.msgId, text.trim());
    } catch (err) {
      $("message-error").textContent = describe(err);
    }
  });
}
