// Attachments on the chat page: images are fetched with the token and shown inline
// (an <img> cannot send the bearer header, so it shows a blob: URL of the bytes);
// other files are a button that downloads them when clicked. Metadata and images
// are fetched once per id and kept until logout.

import { el } from "./view.js";

/** Images up to this size are shown inline; larger ones are offered as files. */
const INLINE_MAX_BYTES = 10 * 1024 * 1024;

/**
 * @typedef {object} Entry
 * @property {"loading" | "ready" | "failed"} state
 * @property {any} [meta] the gateway's attachment metadata
 * @property {string} [url] blob: URL of an inline image
 * @property {string} [error]
 */

/** @param {number} n */
const size = (n) =>
  n < 1024 ? `${n} B` : n < 1048576 ? `${(n / 1024).toFixed(0)} KB` : `${(n / 1048576).toFixed(1)} MB`;

export class Attachments {
  /**
   * @param {import("/sdk/gateway.js").GatewayClient} gateway
   * @param {() => void} onLoaded called when an attachment's look changed (redraw)
   */
  constructor(gateway, onLoaded) {
    this.gateway = gateway;
    this.onLoaded = onLoaded;
    /** @type {Map<string, Entry>} */
    this.entries = new Map();
  }

  /** The node showing attachment `id` now (loading it the first time). @param {string} id */
  node(id) {
    let entry = this.entries.get(id);
    if (!entry) {
      entry = { state: "loading" };
      this.entries.set(id, entry);
      this._load(id, entry);
    }
    const attrs = { class: "attachment", "data-testid": "attachment", "data-attachment-id": id };
    if (entry.state === "loading") return el("div", attrs, "loading attachment…");
    if (entry.state === "failed") return el("div", { ...attrs, "data-state": "failed" }, entry.error ?? "unavailable");
    const meta = entry.meta;
    if (entry.url) return el("div", attrs, el("img", { src: entry.url, alt: meta.filename, title: meta.filename }));
    const label = `📄 ${meta.filename} (${size(meta.size)})`;
    return el("div", attrs, el("button", { type: "button", "data-save": id }, label));
  }

  /** @param {string} id @param {Entry} entry */
  async _load(id, entry) {
    try {
      entry.meta = await this.gateway.attachmentMeta(id);
      const inline = entry.meta.content_type.startsWith("image/") && entry.meta.size <= INLINE_MAX_BYTES;
      if (inline) entry.url = URL.createObjectURL(await this.gateway.downloadAttachment(id));
      entry.state = "ready";
    } catch (err) {
      entry.state = "failed";
      entry.error = /** @type {any} */ (err).status === 404 ? "attachment not available" : "could not load the attachment";
    }
    this.onLoaded();
  }

  /** Download a file attachment and hand it to the browser to save. @param {string} id */
  async save(id) {
    const entry = this.entries.get(id);
    const blob = await this.gateway.downloadAttachment(id);
    const url = URL.createObjectURL(blob);
    const link = el("a", { href: url, download: entry?.meta?.filename ?? "file" });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  }

  /** Forget everything (logout): the images' memory is released. */
  clear() {
    for (const entry of this.entries.values()) if (entry.url) URL.revokeObjectURL(entry.url);
    this.entries.clear();
  }
}
