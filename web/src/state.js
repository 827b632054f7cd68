// @ts-check
// The IDE's state: one object of type State, replaced (never mutated) by
// set(), observed through subscribe(). Every piece of mutable application
// state is here; see web/README.md ("State") for what lives elsewhere.

/** @typedef {import('./protocol.gen').FileEntry} FileEntry */
/** @typedef {import('./protocol.gen').ProcessKind} ProcessKind */
/** @typedef {import('./protocol.gen').ExitMessage} ExitMessage */

/**
 * A language of `GET /api/v1/languages`.
 * @typedef {object} Language
 * @property {string} id
 * @property {string} name
 * @property {string} [version]
 * @property {string[]} [aliases]
 * @property {boolean} [compiled]
 * @property {boolean} [repl]
 */

/** @typedef {'connecting' | 'connected' | 'disconnected' | 'reconnecting' | 'ended'} ConnState */
/** @typedef {'saved' | 'pending' | 'saving' | 'error'} SaveState */
/** @typedef {{at: number, state: ConnState}} ConnLogEntry */

/**
 * @typedef {object} State
 * @property {string | null} sessionId
 * @property {string | null} language the session's language id
 * @property {readonly Language[]} languages sorted by name
 * @property {readonly FileEntry[]} files the workspace, as the server listed it
 * @property {string | null} openPath the file in the editor
 * @property {boolean} openReadOnly the open file is binary: shown, never saved
 * @property {string | null} editorMode the open file's editor language (a mode name), once loaded
 * @property {boolean} dirty the editor has edits not yet handed to a PUT
 * @property {SaveState} save
 * @property {ConnState} conn
 * @property {number} reconnectIn seconds until the next attempt, when disconnected
 * @property {string} connNote why, when not connected
 * @property {readonly ConnLogEntry[]} connLog the connection's transitions (at most 200), for tests
 * @property {ProcessKind | null} running
 * @property {boolean} starting Run was pressed: the save before it is in flight
 * @property {number} started processes started while this page was open (replays included)
 * @property {ExitMessage | null} lastExit
 * @property {number} invalidMessages server messages rejected by the validator
 * @property {string} message the last notice for the status bar
 */

/** @returns {State} */
export function initialState() {
  return {
    sessionId: null,
    language: null,
    languages: [],
    files: [],
    openPath: null,
    openReadOnly: false,
    editorMode: null,
    dirty: false,
    save: 'saved',
    conn: 'connecting',
    reconnectIn: 0,
    connNote: '',
    connLog: [],
    running: null,
    starting: false,
    started: 0,
    lastExit: null,
    invalidMessages: 0,
    message: '',
  };
}

/** @typedef {keyof State} Key */
/** @typedef {(state: Readonly<State>) => void} Listener */

/**
 * @typedef {object} Store
 * @property {() => Readonly<State>} get the current state (frozen; replaced by every change)
 * @property {(patch: Partial<State>) => void} set changes the keys whose values differ, then tells the subscribers
 * @property {(keys: readonly Key[], listener: Listener) => () => void} subscribe
 *   calls `listener` after every change of one of `keys`; returns the unsubscribe function
 */

/**
 * @param {State} [initial]
 * @returns {Store}
 */
export function createStore(initial = initialState()) {
  let state = Object.freeze({ ...initial });
  /** @type {Set<{keys: ReadonlySet<Key>, listener: Listener}>} */
  const subscribers = new Set();
  return {
    get: () => state,
    set(patch) {
      const changed = /** @type {Key[]} */ (Object.keys(patch)).filter((k) => !Object.is(state[k], patch[k]));
      if (!changed.length) return;
      state = Object.freeze({ ...state, ...patch });
      for (const s of [...subscribers]) {
        if (changed.some((k) => s.keys.has(k))) s.listener(state);
      }
    },
    subscribe(keys, listener) {
      const s = { keys: new Set(keys), listener };
      subscribers.add(s);
      return () => subscribers.delete(s);
    },
  };
}
