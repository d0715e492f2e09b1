// Helpers of the SDK's tests against a real suite: IM_GATEWAY_URL names its gateway
// (tests/clients/test_js_sdk.py starts one and runs these tests with it).
import { ImClient } from "../src/im.js";

export const GATEWAY = process.env.IM_GATEWAY_URL ?? "";
/** node:test option: skip the suite tests when no suite was named. */
export const needsSuite = { skip: GATEWAY ? false : "IM_GATEWAY_URL is not set", timeout: 30_000 };

const run = Math.random().toString(36).slice(2, 8);
let count = 0;

/** A registered user with a fresh name. */
export async function newUser(prefix = "u") {
  const username = `${prefix}${run}${++count}`;
  const password = `${username}-password`;
  const client = new ImClient(GATEWAY);
  const user = await client.register(username, password);
  return { username, password, userId: user.user_id };
}

const clients = [];

/** Remember a client for closeAll. */
export function track(client) {
  clients.push(client);
  return client;
}

/** Close every client a test file made, whatever became of its tests. */
export async function closeAll() {
  await Promise.allSettled(clients.map((c) => c.close()));
}

/** A logged-in (not yet connected) client of `user`; options go to ImClient. */
export async function loggedIn(user, options = {}, device = "node") {
  const options_ = { sendTimeoutMs: 1000, backoffMs: 100, ...options };
  const client = track(new ImClient(GATEWAY, options_));
  await client.login(user.username, user.password, `${device}-${++count}`);
  return client;
}

/** The next `type` event matching `predicate`, or a rejection after `ms`. */
export function next(client, type, predicate = () => true, ms = 10_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no ${type} event within ${ms} ms`));
    }, ms);
    const off = client.on(type, (value) => {
      if (!predicate(value)) return;
      clearTimeout(timer);
      off();
      resolve(value);
    });
  });
}

/** Every `type` event from now on, in an array. */
export function collect(client, type) {
  const seen = [];
  client.on(type, (value) => seen.push(value));
  return seen;
}

/** Wait until `condition()` holds (state the suite changes without telling us). */
export async function eventually(condition, what, ms = 10_000) {
  const deadline = Date.now() + ms;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * A WebSocket class whose traffic a test can see and bend: `outgoing(frame)` may return
 * false to drop a frame; `incoming(frame)` returns the frames to hand on instead (none,
 * one, or a copy too). `Tap.last` is the newest socket, for `inject` and `cut`.
 */
export function tap({ outgoing = () => true, incoming = (f) => [f] } = {}) {
  class Tap extends globalThis.WebSocket {
    static last = null;
    constructor(url, protocols) {
      super(url, protocols);
      this.listeners = [];
      Tap.last = this;
    }
    send(data) {
      if (outgoing(JSON.parse(data)) !== false) super.send(data);
    }
    addEventListener(type, listener, options) {
      if (type !== "message") return super.addEventListener(type, listener, options);
      this.listeners.push(listener);
      return super.addEventListener(
        type,
        (event) => {
          for (const frame of incoming(JSON.parse(event.data))) {
            listener({ data: JSON.stringify(frame) });
          }
        },
        options,
      );
    }
    /** Hand the client a frame as if the connector had sent it. */
    inject(frame) {
      for (const listener of this.listeners) listener({ data: JSON.stringify(frame) });
    }
  }
  return Tap;
}
