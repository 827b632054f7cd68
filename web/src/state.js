// The IDE's state: one plain object, changed only through set(), observed
// through subscribe(). No framework.

const state = {
  sessionId: null,
  language: null, // id
  languages: [], // [{id, name, version, aliases, compiled, repl}]
  files: [], // [{path, size, is_dir}]
  openPath: null,
  conn: 'connecting', // connecting | connected | disconnected | reconnecting | ended
  reconnectIn: 0, // seconds until the next attempt, when disconnected
  connNote: '', // why, when not connected
  running: null, // null | run | shell | repl
  lastExit: null, // the last `exit` message
  save: 'saved', // saved | pending | saving | error
  message: '', // the last notice for the status bar
};

const subscribers = new Set();

export function get() {
  return state;
}

export function set(patch) {
  let changed = false;
  for (const k of Object.keys(patch)) {
    if (state[k] !== patch[k]) {
      state[k] = patch[k];
      changed = true;
    }
  }
  if (changed) for (const f of subscribers) f(state, patch);
}

export function subscribe(f) {
  subscribers.add(f);
  return () => subscribers.delete(f);
}
