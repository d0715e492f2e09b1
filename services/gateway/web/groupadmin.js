// Managing a group from its panel: make a member the owner, dissolve the group, invite
// links that need approval, and the join requests waiting for a decision. The group
// service decides who may; each change comes back to every member as a system event.
import { $, el, myRole } from "./view.js";

/** @param {import("./view.js").Conv | undefined} conv @param {number} me */
export const isManager = (conv, me) => ["owner", "admin"].includes(myRole(conv, me));

/**
 * The owner's and admins' part of the panel, as our role allows.
 * @param {import("./view.js").Conv | undefined} conv @param {number} me @param {Map<number, string>} names
 */
export function renderGroupAdmin(conv, me, names) {
  const open = Boolean(conv && conv.kind === "group" && !conv.dissolved);
  $("dissolve").hidden = !open || myRole(conv, me) !== "owner";
  $("join-requests").hidden = !open || !isManager(conv, me);
  if (!conv || $("join-requests").hidden) return;
  const items = conv.requests.map((r) =>
    el(
      "li",
      { "data-testid": "join-request", "data-user": String(r.user_id) },
      names.get(r.user_id) ?? `user ${r.user_id}`,
      " ",
      el("button", { type: "button", "data-decide": "approve" }, "Approve"),
      el("button", { type: "button", "data-decide": "reject" }, "Reject"),
    ),
  );
  $("join-request-list").replaceChildren(...items);
}

/**
 * @param {import("/sdk/im.js").ImClient} client
 * @param {() => import("./view.js").Conv | undefined} openConv
 * @param {(conv: import("./view.js").Conv) => Promise<void>} reload members and requests, then redraw
 * @param {(err: unknown) => void} showError
 */
export function bindGroupAdmin(client, openConv, reload, showError) {
  /** @param {(conv: import("./view.js").Conv) => Promise<unknown>} act */
  const run = async (act) => {
    const conv = openConv();
    if (!conv) return;
    try {
      await act(conv);
      await reload(conv);
    } catch (err) {
      showError(err);
    }
  };
  $("member-list").addEventListener("click", (event) => {
    const button = /** @type {HTMLElement} */ (event.target).closest("button[data-transfer]");
    if (!button || !confirm("Make this member the owner? You become an admin.")) return;
    run((conv) => client.gateway.transferGroup(conv.id, Number(button.getAttribute("data-transfer"))));
  });
  $("dissolve").addEventListener("click", () => {
    if (!confirm("Dissolve this group? Nobody can send to it any more; history stays.")) return;
    run(async (conv) => {
      await client.gateway.dissolveGroup(conv.id);
      conv.dissolved = true;
    });
  });
  $("join-request-list").addEventListener("click", (event) => {
    const button = /** @type {HTMLElement} */ (event.target).closest("button[data-decide]");
    const userId = Number(button?.closest("[data-user]")?.getAttribute("data-user"));
    if (!button || !userId) return;
    const approve = button.getAttribute("data-decide") === "approve";
    run((conv) => client.gateway.decideJoinRequest(conv.id, userId, approve));
  });
  $("join-requests-refresh").addEventListener("click", () => run(async () => {}));
}
