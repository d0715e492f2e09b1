// @ts-check
/**
 * Typing and presence signals (docs/protocol.md "Typing and presence"): relayed to
 * online devices, never stored. A STARTED lasts `expiresInMs` unless refreshed; the
 * tracker runs them out on the clock it is given (tests pass their own).
 * @module
 */

import { enumName, num } from "./wire.js";

/**
 * @typedef {object} Typing
 * @property {string} conversationId
 * @property {number} userId who is typing
 * @property {boolean} started false: stopped
 * @property {number} expiresInMs a STARTED not refreshed within this long is over
 */

/**
 * @typedef {object} Presence
 * @property {number} userId a 1:1 peer
 * @property {boolean} online
 * @property {number} lastSeenMs when it was last online (0: unknown or hidden)
 */

/** @param {any} t @returns {Typing} */
export function typingFromWire(t) {
  return {
    conversationId: t.conversationId ?? "",
    userId: num(t.userId),
    started: enumName(t.state, "TYPING_STATE_") === "STARTED",
    expiresInMs: num(t.expiresInMs),
  };
}

/** @param {any} p @returns {Presence} */
export function presenceFromWire(p) {
  return { userId: num(p.userId), online: Boolean(p.online), lastSeenMs: num(p.lastSeenMs) };
}

/** The frame a client sends. @param {string} conversationId @param {boolean} started */
export function typingFrame(conversationId, started) {
  return {
    typing: { conversationId, state: started ? "TYPING_STATE_STARTED" : "TYPING_STATE_STOPPED" },
  };
}

/** Who is typing where, as the Typing frames said. */
export class TypingTracker {
  /** @param {() => number} [now] milliseconds, Date.now by default */
  constructor(now = Date.now) {
    this.now = now;
    /** @type {Map<string, number>} "conversation user" -> when its STARTED runs out */
    this._until = new Map();
  }

  /** @param {Typing} typing */
  update(typing) {
    const key = `${typing.conversationId} ${typing.userId}`;
    if (typing.started && typing.expiresInMs > 0) {
      this._until.set(key, this.now() + typing.expiresInMs);
    } else {
      this._until.delete(key);
    }
  }

  /** The user's message came: it is no longer typing it. @param {string} cid @param {number} userId */
  stopped(cid, userId) {
    this._until.delete(`${cid} ${userId}`);
  }

  /** User ids typing in the conversation now, ascending. @param {string} conversationId */
  typingIn(conversationId) {
    const now = this.now();
    const out = [];
    for (const [key, until] of this._until) {
      if (until <= now) {
        this._until.delete(key);
        continue;
      }
      const [cid, user] = key.split(" ");
      if (cid === conversationId) out.push(Number(user));
    }
    return out.sort((a, b) => a - b);
  }
}
