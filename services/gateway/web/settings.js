// Our own settings of a conversation: pin, mute, archive, and a name only we see. The
// buttons act on the open conversation; the gateway tells every device of ours (this
// one too), and a fresh start reads them from the conversation list.
import { $, isMuted } from "./view.js";

/**
 * What the gateway says of our settings: the REST form (muted_until) or the event's
 * (mutedUntil, from the SDK).
 * @param {import("./view.js").Conv} conv @param {any} s
 */
export function applySettings(conv, s) {
  conv.pinned = Boolean(s.pinned);
  conv.mutedUntil = s.muted_until ?? s.mutedUntil ?? 0;
  conv.archived = Boolean(s.archived);
  conv.ownName = s.name ?? "";
}

/**
 * The open conversation's settings buttons, as our settings say.
 * @param {import("./view.js").Conv | undefined} conv
 */
export function renderSettings(conv) {
  for (const id of ["pin", "mute", "archive", "own-name"]) $(id).hidden = !conv;
  if (!conv) return;
  const muted = isMuted(conv);
  toggle("pin", conv.pinned, "Unpin", "Pin");
  toggle("mute", muted, "Unmute", "Mute");
  toggle("archive", conv.archived, "Unarchive", "Archive");
  $("own-name").textContent = conv.ownName ? "Clear my name" : "Name it";
}

/** @param {string} id @param {boolean} on @param {string} onText @param {string} offText */
function toggle(id, on, onText, offText) {
  $(id).textContent = on ? onText : offText;
  $(id).setAttribute("aria-pressed", String(on));
}

/**
 * @param {import("/sdk/im.js").ImClient} client
 * @param {() => import("./view.js").Conv | undefined} openConv
 * @param {() => void} redraw
 * @param {(err: unknown) => void} showError
 */
export function bindSettings(client, openConv, redraw, showError) {
  /** @param {(conv: import("./view.js").Conv) => object | null} changes */
  const change = async (changes) => {
    const conv = openConv();
    const wanted = conv && changes(conv);
    if (!conv || !wanted) return;
    try {
      applySettings(conv, await client.gateway.updateSettings(conv.id, wanted));
      redraw();
    } catch (err) {
      showError(err);
    }
  };
  $("pin").addEventListener("click", () => change((conv) => ({ pinned: !conv.pinned })));
  $("mute").addEventListener("click", () =>
    change((conv) => ({ mutedUntil: isMuted(conv) ? 0 : -1 })),
  );
  $("archive").addEventListener("click", () => change((conv) => ({ archived: !conv.archived })));
  $("own-name").addEventListener("click", () =>
    change((conv) => {
      if (conv.ownName) return { name: "" };
      const name = window.prompt("Your name for this conversation (only you see it)", "");
      return name?.trim() ? { name: name.trim() } : null;
    }),
  );
}
