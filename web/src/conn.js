// @ts-check
// The session's WebSocket (docs/protocol.md) with reconnect: backoff with
// jitter, resume from the last sequence number seen, `gap` and `reconnect`
// (drain) handling, a heartbeat, and the browser's offline/online events.
// Every frame is validated (protocol.js) before anything acts on it.
//
// One SessionConnection is made at start-up; connect(sessionId) points it at
// a session (again after a restart). Its fields are the transport's own
// bookkeeping (the socket, timers, the resume cursor); what the page shows
// goes to the store through the callbacks.
import { CLOSE, CLOSE_MEANINGS } from './close-codes.gen.js';
import { parseServerMessage } from './protocol.js';

/** @typedef {import('./protocol.gen').ServerMessage} ServerMessage */
/** @typedef {import('./protocol.gen').ClientMessage} ClientMessage */
/** @typedef {import('./state.js').ConnState} ConnState */
/** @typedef {{reconnectIn?: number, note?: string, code?: number | undefined}} ConnInfo */

/**
 * Delay before reconnect attempt n (0-based): min(1.7^n s, 15 s) + 0..500 ms.
 * @param {number} n
 * @param {() => number} [random]
 */
export function backoffMs(n, random = Math.random) {
  return Math.min(Math.pow(1.7, n) * 1000, 15000) + Math.floor(random() * 500);
}

const PING_EVERY_MS = 20000;
const DEAD_AFTER_MS = 45000; // no frame at all for this long: the link is dead

/** The code this client closes a socket with when it gives it up (drop, offline, drain, dead link). */
export const DROPPED = 4000;

/** What the server's close codes mean (generated from crates/proto). @type {ReadonlyMap<number, string>} */
const MEANINGS = new Map(Object.entries(CLOSE_MEANINGS).map(([code, meaning]) => [Number(code), meaning]));
/** Codes the browser itself reports (RFC 6455), which the server never sends. @type {ReadonlyMap<number, string>} */
const BROWSER_MEANINGS = new Map([
  [1001, 'the server went away'],
  [1006, 'connection lost'],
]);
/** Close codes after which reconnecting to the same session is pointless. @type {ReadonlySet<number>} */
const FINAL = new Set([CLOSE.NOT_FOUND, CLOSE.LIFETIME]);

/** @param {number} code */
function meaningOf(code) {
  return MEANINGS.get(code) ?? BROWSER_MEANINGS.get(code) ?? `closed (${code})`;
}

/**
 * @typedef {object} Handlers
 * @property {(msg: ServerMessage) => void} onMessage every valid server message, in order, without duplicates
 * @property {(conn: ConnState, info: ConnInfo) => void} onState
 * @property {(code: number, reason: string) => void} onFinal the session is gone; no more reconnects
 * @property {(errors: string[], frame: unknown) => void} onInvalid a frame that is not a valid server message (not acted on)
 */

export class SessionConnection {
  /** @param {Handlers} handlers */
  constructor(handlers) {
    this.handlers = handlers;
    /** @type {string | null} */
    this.sessionId = null;
    /** @type {WebSocket | null} */
    this.ws = null;
    this.helloSeen = false;
    this.attempt = 0; // failed attempts since the last hello
    this.lastSeq = 0; // the last sequence number seen (0: none)
    this.everConnected = false;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.timer = null;
    /** @type {ReturnType<typeof setInterval> | null} */
    this.countdown = null;
    /** @type {ReturnType<typeof setInterval> | null} */
    this.heartbeat = null;
    this.lastFrameAt = 0;
    /** @type {number | null} */
    this.drainDelayMs = null;
    this.stopped = true;
    window.addEventListener('offline', () => this.drop(DROPPED, 'the browser went offline'));
    window.addEventListener('online', () => {
      if (!this.ws && !this.stopped) this.schedule(Math.floor(Math.random() * 300), 'back online');
    });
  }

  /** Connects to a session (dropping any previous one), resuming from nothing. @param {string} sessionId */
  connect(sessionId) {
    this.stop();
    this.sessionId = sessionId;
    this.attempt = 0;
    this.lastSeq = 0;
    this.everConnected = false;
    this.drainDelayMs = null;
    this.stopped = false;
    this.open();
  }

  url() {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    // Ask for a replay from the last seen event; 0 on a fresh page replays
    // whatever the server still buffers, so a reload shows the recent output.
    return `${proto}//${location.host}/api/v1/sessions/${encodeURIComponent(this.sessionId ?? '')}/ws?last_seq=${this.lastSeq}`;
  }

  open() {
    this.clearTimers();
    if (this.stopped) return;
    this.handlers.onState(this.everConnected ? 'reconnecting' : 'connecting', {});
    let ws;
    try {
      ws = new WebSocket(this.url());
    } catch (e) {
      this.schedule(null, e instanceof Error ? e.message : String(e));
      return;
    }
    this.ws = ws;
    this.helloSeen = false;
    ws.onmessage = (ev) => {
      if (ws === this.ws) this.receive(ev.data);
    };
    ws.onclose = (ev) => this.closed(ws, ev.code, ev.reason);
    ws.onerror = () => {}; // onclose follows
  }

  /**
   * One frame from the server: validated, then acted on. (Also the test
   * hook `window.__evald.receive`.)
   * @param {unknown} data
   */
  receive(data) {
    this.lastFrameAt = Date.now(); // any frame shows the link is alive
    const parsed = parseServerMessage(data);
    if (!parsed.ok) {
      this.handlers.onInvalid(parsed.errors, data);
      return;
    }
    const msg = parsed.message;
    switch (msg.type) {
      case 'hello':
        this.helloSeen = true;
        this.everConnected = true;
        this.attempt = 0;
        this.drainDelayMs = null;
        // The server's sequence went backwards (a new session state): start over.
        if (msg.seq < this.lastSeq) this.lastSeq = msg.seq;
        if (this.ws) this.startHeartbeat(this.ws);
        this.handlers.onState('connected', {});
        this.handlers.onMessage(msg);
        return;
      case 'gap':
        this.lastSeq = Math.max(this.lastSeq, msg.to);
        this.handlers.onMessage(msg);
        return;
      case 'reconnect':
        // The node drains: go elsewhere after the hinted delay (plus jitter so
        // that the clients of a node do not all come back at once).
        this.drainDelayMs = msg.delay_ms + Math.floor(Math.random() * 500);
        this.handlers.onMessage(msg);
        this.abandon(DROPPED, 'the server asked to reconnect', this.drainDelayMs);
        return;
      case 'started':
      case 'output':
      case 'exit':
      case 'files':
        if (msg.seq <= this.lastSeq) return; // already seen (replay overlap)
        this.lastSeq = msg.seq;
        this.handlers.onMessage(msg);
        return;
      case 'error':
      case 'pong':
        this.handlers.onMessage(msg);
        return;
      default:
        assertNever(msg);
    }
  }

  /** @param {WebSocket} ws @param {number} code @param {string} reason */
  closed(ws, code, reason) {
    if (ws !== this.ws) return;
    this.ws = null;
    this.helloSeen = false;
    this.stopHeartbeat();
    if (this.stopped) return;
    if (FINAL.has(code)) {
      this.clearTimers();
      const note = reason || meaningOf(code);
      this.handlers.onState('ended', { code, note });
      this.handlers.onFinal(code, note);
      return;
    }
    const delay = this.drainDelayMs;
    this.drainDelayMs = null;
    this.schedule(delay, reason || meaningOf(code), code);
  }

  /**
   * Forgets the socket at once (as if the network dropped) and reconnects.
   * @param {number} code @param {string} note @param {number | null} [delayMs]
   */
  abandon(code, note, delayMs = null) {
    const ws = this.ws;
    if (!ws) return;
    this.ws = null;
    this.helloSeen = false;
    this.stopHeartbeat();
    ws.onmessage = ws.onclose = ws.onerror = null;
    try {
      ws.close(code, note.slice(0, 100));
    } catch {
      /* already closing */
    }
    if (!this.stopped) this.schedule(delayMs, note, code);
  }

  /** Test hook and offline handler: drop the connection like a network failure. */
  drop(code = DROPPED, note = 'connection dropped') {
    if (this.ws) this.abandon(code, note);
  }

  /** @param {number | null} delayMs @param {string} note @param {number} [code] */
  schedule(delayMs, note, code) {
    this.clearTimers();
    const delay = delayMs ?? backoffMs(this.attempt);
    this.attempt += 1;
    const due = Date.now() + delay;
    const tick = () => {
      const left = Math.max(0, Math.ceil((due - Date.now()) / 1000));
      this.handlers.onState('disconnected', { reconnectIn: left, note, code });
    };
    tick();
    this.countdown = setInterval(tick, 250);
    this.timer = setTimeout(() => this.open(), delay);
  }

  /** Reconnect now (the banner's button). */
  retryNow() {
    if (!this.ws && !this.stopped) this.open();
  }

  /** @param {WebSocket} ws */
  startHeartbeat(ws) {
    this.stopHeartbeat();
    this.lastFrameAt = Date.now();
    this.heartbeat = setInterval(() => {
      if (ws !== this.ws) return;
      if (Date.now() - this.lastFrameAt > DEAD_AFTER_MS) {
        this.abandon(DROPPED, 'no answer from the server');
        return;
      }
      this.send({ type: 'ping' });
    }, PING_EVERY_MS);
  }

  stopHeartbeat() {
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.heartbeat = null;
  }

  clearTimers() {
    if (this.timer) clearTimeout(this.timer);
    if (this.countdown) clearInterval(this.countdown);
    this.timer = this.countdown = null;
  }

  /**
   * Sends a client message; false when not connected.
   * @param {ClientMessage} msg
   */
  send(msg) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  /** Closes the socket and stops reconnecting (until the next connect). */
  stop() {
    this.stopped = true;
    this.clearTimers();
    this.stopHeartbeat();
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.onmessage = ws.onclose = ws.onerror = null;
      ws.close(CLOSE.NORMAL);
    }
  }
}

/** Compile-time exhaustiveness: every server message type is handled above. @param {never} x */
function assertNever(x) {
  throw new Error(`unhandled server message ${JSON.stringify(x)}`);
}
