// @ts-check
// Hooks for tests and debugging on `window.__evald` (web/README.md lists them).
import { DROPPED } from './conn.js';

/** @typedef {import('./state.js').Store} Store */
/** @typedef {import('./editor.js').Editor} Editor */
/** @typedef {import('./terminal.js').Term} Term */
/** @typedef {import('./conn.js').SessionConnection} SessionConnection */
/** @typedef {import('./save.js').Saver} Saver */

/**
 * @param {{store: Store, editor: Editor, term: Term, conn: SessionConnection, saver: Saver}} deps
 */
export function installTestHooks({ store, editor, term, conn, saver }) {
  const hooks = {
    terminalText: () => term.text(),
    editorText: () => editor.text(),
    /** @param {string} t */
    setEditorText: (t) => editor.setText(t),
    /** The open file's editor mode (`python`, `c`, ...), null until it has loaded. */
    editorMode: () => store.get().editorMode,
    dropConnection: () => conn.drop(DROPPED, 'dropped by a test'),
    flushSave: () => saver.flush(),
    /**
     * Feeds one frame through the connection's message handler, as if the
     * server had sent it (validation included).
     * @param {string} frame
     */
    receive: (frame) => conn.receive(frame),
    get state() {
      return { ...store.get() };
    },
    get lastSeq() {
      return conn.lastSeq;
    },
    /** The connection's state transitions: [{at, state}]. */
    connLog: () => store.get().connLog.slice(),
    /** How many processes have started while this page was open (replays included). */
    get started() {
      return store.get().started;
    },
    /** How many server messages the validator rejected (and the page ignored). */
    get invalidMessages() {
      return store.get().invalidMessages;
    },
  };
  Object.defineProperty(window, '__evald', { value: hooks, configurable: true });
}
