// One session's WebSocket (docs/protocol.md) with reconnect: backoff with
// jitter, resume from the last sequence number seen, `gap` and `reconnect`
// (drain) handling, a heartbeat, and the browser's offline/online events.

/** Delay before reconnect attempt n (0-based): min(1.7^n s, 15 s) + 0..500 ms. */
export function backoffMs(n, random = Math.random) {
  return Math.min(Math.pow(1.7, n) * 1000, 15000) + Math.floor(random() * 500);
}

const PING_EVERY_MS = 20000;
const DEAD_AFTER_MS = 45000; // no frame at all for this long: the link is dead

// Close codes after which reconnecting to the same session is pointless.
const FINAL = {
  4404: 'session not found (or expired)',
  4409: 'the session reached its maximum lifetime',
};
const REASONS = {
  1000: 'closed',
  1001: 'the server went away',
  1006: 'connection lost',
  4000: 'connection dropped',
  4400: 'malformed message',
  4408: 'idle timeout',
  4429: 'too many sessions or clients on this node',
  4503: 'the node is shutting down',
};

export class SessionConnection {
  /**
   * @param {object} o
   * @param {string} o.sessionId
   * @param {(msg: object) => void} o.onMessage every server message, in order, without duplicates
   * @param {(conn: string, info: {reconnectIn?: number, note?: string, code?: number}) => void} o.onState
   * @param {(code: number, reason: string) => void} o.onFinal the session is gone; no more reconnects
   */
  constructor({ sessionId, onMessage, onState, onFinal }) {
    this.sessionId = sessionId;
    this.onMessage = onMessage;
    this.onState = onState;
    this.onFinal = onFinal;
    this.ws = null;
    this.attempt = 0; // failed attempts since the last hello
    this.lastSeq = 0; // the last sequence number seen (0: none)
    this.everConnected = false;
    this.timer = null;
    this.countdown = null;
    this.heartbeat = null;
    this.lastFrameAt = 0;
    this.drainDelayMs = null;
    this.stopped = false;
    this.onOffline = () => this.drop(4000, 'the browser went offline');
    this.onOnline = () => {
      if (!this.ws && !this.stopped) this.schedule(Math.floor(Math.random() * 300), 'back online');
    };
    window.addEventListener('offline', this.onOffline);
    window.addEventListener('online', this.onOnline);
  }

  url() {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    // Ask for a replay from the last seen event; 0 on a fresh page replays
    // whatever the server still buffers, so a reload shows the recent output.
    return `${proto}//${location.host}/api/v1/sessions/${encodeURIComponent(this.sessionId)}/ws?last_seq=${this.lastSeq}`;
  }

  get connected() {
    return !!this.ws && this.ws.readyState === WebSocket.OPEN && this.helloSeen;
  }

  start() {
    this.open();
  }

  open() {
    this.clearTimers();
    if (this.stopped) return;
    this.onState(this.everConnected ? 'reconnecting' : 'connecting', {});
    let ws;
    try {
      ws = new WebSocket(this.url());
    } catch (e) {
      this.schedule(null, e.message);
      return;
    }
    this.ws = ws;
    this.helloSeen = false;
    ws.onmessage = (ev) => this.frame(ws, ev);
    ws.onclose = (ev) => this.closed(ws, ev.code, ev.reason);
    ws.onerror = () => {}; // onclose follows
  }

  frame(ws, ev) {
    if (ws !== this.ws) return;
    this.lastFrameAt = Date.now();
    let msg;
    try {
      msg = JSON.parse(ev.data);
    } catch {
      return;
    }
    if (!msg || typeof msg.type !== 'string') return;
    if (msg.type === 'hello') {
      this.helloSeen = true;
      this.everConnected = true;
      this.attempt = 0;
      this.drainDelayMs = null;
      if (typeof msg.seq === 'number' && msg.seq < this.lastSeq) {
        // The server's sequence went backwards (a new session state): start over.
        this.lastSeq = msg.seq;
      }
      this.startHeartbeat(ws);
      this.onState('connected', {});
      this.onMessage(msg);
      return;
    }
    if (msg.type === 'gap') {
      if (typeof msg.to === 'number') this.lastSeq = Math.max(this.lastSeq, msg.to);
      this.onMessage(msg);
      return;
    }
    if (msg.type === 'reconnect') {
      // The node drains: go elsewhere after the hinted delay (plus jitter so
      // that the clients of a node do not all come back at once).
      const d = Math.max(0, Number(msg.delay_ms) || 0);
      this.drainDelayMs = d + Math.floor(Math.random() * 500);
      this.onMessage(msg);
      this.abandon(4000, 'the server asked to reconnect', this.drainDelayMs);
      return;
    }
    if (typeof msg.seq === 'number') {
      if (msg.seq <= this.lastSeq) return; // already seen (replay overlap)
      this.lastSeq = msg.seq;
    }
    this.onMessage(msg);
  }

  closed(ws, code, reason) {
    if (ws !== this.ws) return;
    this.ws = null;
    this.helloSeen = false;
    this.stopHeartbeat();
    if (this.stopped) return;
    if (FINAL[code]) {
      this.clearTimers();
      this.onState('ended', { code, note: reason || FINAL[code] });
      this.onFinal(code, reason || FINAL[code]);
      return;
    }
    const note = reason || REASONS[code] || `closed (${code})`;
    const delay = this.drainDelayMs;
    this.drainDelayMs = null;
    this.schedule(delay, note, code);
  }

  /** Forgets the socket at once (as if the network dropped) and reconnects. */
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
  drop(code = 4000, note = 'connection dropped') {
    if (this.ws) this.abandon(code, note);
  }

  schedule(delayMs, note, code) {
    this.clearTimers();
    const delay = delayMs ?? backoffMs(this.attempt);
    this.attempt += 1;
    const due = Date.now() + delay;
    const tick = () => {
      const left = Math.max(0, Math.ceil((due - Date.now()) / 1000));
      this.onState('disconnected', { reconnectIn: left, note, code });
    };
    tick();
    this.countdown = setInterval(tick, 250);
    this.timer = setTimeout(() => this.open(), delay);
  }

  /** Reconnect now (the banner's button). */
  retryNow() {
    if (!this.ws && !this.stopped) this.open();
  }

  startHeartbeat(ws) {
    this.stopHeartbeat();
    this.lastFrameAt = Date.now();
    this.heartbeat = setInterval(() => {
      if (ws !== this.ws) return;
      if (Date.now() - this.lastFrameAt > DEAD_AFTER_MS) {
        this.abandon(4000, 'no answer from the server');
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

  /** Sends a client message; false when not connected. */
  send(msg) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  stop() {
    this.stopped = true;
    this.clearTimers();
    this.stopHeartbeat();
    window.removeEventListener('offline', this.onOffline);
    window.removeEventListener('online', this.onOnline);
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.onmessage = ws.onclose = ws.onerror = null;
      ws.close(1000);
    }
  }
}
