// @ts-check
// The session connection wired to the page: its state, transitions and
// rejected frames go to the store (and the console), the end of a session
// to the terminal.
import { SessionConnection } from './conn.js';

/** @typedef {import('./state.js').Store} Store */
/** @typedef {import('./protocol.gen').ServerMessage} ServerMessage */

const CONN_LOG_MAX = 200;

/**
 * @param {{store: Store, onMessage: (msg: ServerMessage) => void, notice: (text: string) => void}} deps
 *   notice: a line for the terminal (the session has ended)
 * @returns {SessionConnection}
 */
export function createConnection({ store, onMessage, notice }) {
  return new SessionConnection({
    onMessage,
    onState: (conn, info) => {
      const { connLog } = store.get();
      /** @type {Partial<import('./state.js').State>} */
      const patch = { conn, connNote: info.note || '' };
      if (connLog[connLog.length - 1]?.state !== conn) patch.connLog = [...connLog, { at: Date.now(), state: conn }].slice(-CONN_LOG_MAX);
      if (conn === 'disconnected') patch.reconnectIn = info.reconnectIn ?? 0;
      store.set(patch);
    },
    onFinal: (_code, reason) => {
      store.set({ running: null, message: reason });
      notice(`[evald: ${reason}]`);
    },
    onInvalid: (errors, frame) => {
      console.warn('evald: ignored an invalid server message:', errors.join('; '), frame);
      store.set({ invalidMessages: store.get().invalidMessages + 1 });
    },
  });
}
