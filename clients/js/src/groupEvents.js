// System events of a group: membership and group changes in the group's seq stream
// (content types "application/vnd.im.group.*", JSON bodies; see docs/protocol.md).

export const GROUP_EVENT_PREFIX = "application/vnd.im.group.";

const decoder = new TextDecoder();

/** @param {string} contentType */
export function isGroupEvent(contentType) {
  return typeof contentType === "string" && contentType.startsWith(GROUP_EVENT_PREFIX);
}

/**
 * The event's JSON body ({actor_id, user_ids, name, ...}); {} when unreadable.
 * @param {{body: Uint8Array}} message
 * @returns {Record<string, any>}
 */
export function groupEventData(message) {
  try {
    const data = JSON.parse(decoder.decode(message.body));
    return data && typeof data === "object" && !Array.isArray(data) ? data : {};
  } catch {
    return {};
  }
}

/**
 * A readable line for a group event, e.g. "alice added bob, carol"; null for any
 * other message. `nameOf(userId)` gives a name (or undefined: "user <id>").
 * @param {{contentType: string, body: Uint8Array}} message
 * @param {(userId: number) => string | undefined} nameOf
 * @returns {string | null}
 */
export function describeGroupEvent(message, nameOf) {
  if (!isGroupEvent(message.contentType)) return null;
  const kind = message.contentType.slice(GROUP_EVENT_PREFIX.length);
  const data = groupEventData(message);
  const name = (id) => (Number.isInteger(id) ? (nameOf(id) ?? `user ${id}`) : "someone");
  const actor = name(data.actor_id);
  const ids = Array.isArray(data.user_ids) ? data.user_ids.filter(Number.isInteger) : [];
  const total = Number.isInteger(data.count) && data.count > ids.length ? data.count : ids.length;
  const shown = ids.slice(0, 10).map(name);
  const more = total - shown.length;
  const users = (shown.join(", ") || "someone") + (more > 0 ? ` and ${more} more` : "");
  const text = (key) => String(data[key] ?? "").slice(0, 80);
  switch (kind) {
    case "members_added": return `${actor} added ${users}`;
    case "member_removed": return `${actor} removed ${users}`;
    case "member_left": return `${users} left`;
    case "member_joined":
      return "approved_by" in data ? `${users} joined (approved by ${actor})` : `${users} joined by invite link`;
    case "role_changed": return `${actor} made ${users} ${text("role") || "a member"}`;
    case "owner_transferred": return `${actor} made ${users} the owner`;
    case "renamed": return `${actor} renamed the group to "${text("name")}"`;
    case "description_changed": return `${actor} changed the description`;
    case "avatar_changed": return `${actor} changed the group picture`;
    case "dissolved": return `${actor} dissolved the group`;
    default: return `${actor}: ${kind.replaceAll("_", " ")}`;
  }
}
