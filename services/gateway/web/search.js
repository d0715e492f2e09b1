// The search box of the chat page: GET /v1/search through the SDK, hits listed under
// the box with the matching words marked; a hit opens its conversation.
import { $, el } from "./view.js";

/**
 * The snippet as text nodes, each matching word in a <mark> (never HTML from the server).
 * @param {string} text @param {[number, number][]} highlights
 */
function marked(text, highlights) {
  /** @type {(Node | string)[]} */
  const parts = [];
  let at = 0;
  for (const [start, end] of highlights) {
    if (start < at) continue;
    parts.push(text.slice(at, start), el("mark", {}, text.slice(start, end)));
    at = end;
  }
  parts.push(text.slice(at));
  return parts;
}

/**
 * @param {import("/sdk/im.js").ImClient} client
 * @param {{open: (id: string) => Promise<void>, label: (id: string) => string,
 *   describe: (err: unknown) => string}} page
 */
export function bindSearch(client, page) {
  const results = $("search-results");
  $("search-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const query = /** @type {HTMLInputElement} */ ($("search")).value.trim();
    results.replaceChildren();
    if (!query) return;
    try {
      const { hits } = await client.gateway.search(query, { limit: 20 });
      if (!hits.length) results.append(el("li", { class: "hint" }, "No messages found."));
      for (const hit of hits) {
        const button = el(
          "button",
          { type: "button", "data-testid": "search-hit", "data-id": hit.message.conversationId },
          el("span", { class: "name" }, page.label(hit.message.conversationId)),
          el("span", { class: "snippet" }, ...marked(hit.snippet, hit.highlights)),
        );
        results.append(el("li", {}, button));
      }
    } catch (err) {
      results.append(el("li", { class: "error", role: "alert" }, page.describe(err)));
    }
  });
  results.addEventListener("click", (event) => {
    const button = /** @type {HTMLElement} */ (event.target).closest("[data-id]");
    if (button) page.open(/** @type {string} */ (button.getAttribute("data-id")));
  });
}
