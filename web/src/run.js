// @ts-check
// Run controls: Run (save, then run), Stop (INT, then KILL after 1 s), Shell,
// REPL, the keyboard shortcuts (Ctrl+Enter runs, Ctrl+S saves now), and the
// terminal's keystrokes and size to the running process.
import { button } from './dom.js';

/** @typedef {import('./state.js').Store} Store */
/** @typedef {import('./state.js').State} State */
/** @typedef {import('./conn.js').SessionConnection} SessionConnection */
/** @typedef {import('./terminal.js').Term} Term */
/** @typedef {import('./save.js').Saver} Saver */
/** @typedef {'run' | 'shell' | 'repl'} StartKind */

export const KILL_AFTER_MS = 1000;

/** @param {{store: Store, conn: SessionConnection, term: Term, saver: Saver}} deps */
export function mountRunControls({ store, conn, term, saver }) {
  const runButton = button('run');
  const stopButton = button('stop');
  const shellButton = button('shell');
  const replButton = button('repl');

  /** @param {StartKind} kind */
  function start(kind) {
    if (!conn.send({ type: kind, rows: term.rows, cols: term.cols })) store.set({ message: 'not connected' });
    term.focus();
  }

  async function run() {
    store.set({ starting: true });
    try {
      await saver.flush();
      start('run');
    } finally {
      store.set({ starting: false });
    }
  }

  function stop() {
    if (!store.get().running) return;
    conn.send({ type: 'signal', signal: 'INT' });
    const which = store.get().started;
    setTimeout(() => {
      const s = store.get();
      if (s.running && s.started === which) conn.send({ type: 'signal', signal: 'KILL' });
    }, KILL_AFTER_MS);
  }

  /** @param {Readonly<State>} s */
  function render(s) {
    const live = s.conn === 'connected';
    const lang = s.languages.find((l) => l.id === s.language);
    runButton.disabled = !live || !!s.running || !s.sessionId || s.starting;
    shellButton.disabled = !live || !!s.running;
    replButton.disabled = !live || !!s.running || !lang || !lang.repl;
    stopButton.disabled = !live || !s.running;
  }

  runButton.addEventListener('click', run);
  stopButton.addEventListener('click', stop);
  shellButton.addEventListener('click', () => start('shell'));
  replButton.addEventListener('click', () => start('repl'));
  document.addEventListener('keydown', (ev) => {
    if ((ev.ctrlKey || ev.metaKey) && ev.key === 'Enter' && !runButton.disabled) {
      ev.preventDefault();
      run();
    } else if ((ev.ctrlKey || ev.metaKey) && ev.key === 's') {
      ev.preventDefault();
      saver.flush();
    }
  });
  store.subscribe(['conn', 'running', 'sessionId', 'starting', 'languages', 'language'], render);
  render(store.get());
}

/**
 * The terminal's keystrokes and size go to the running process only.
 * @param {{store: Store, conn: SessionConnection}} deps
 */
export function terminalInput({ store, conn }) {
  return {
    /** @param {string} data */
    onData: (data) => {
      if (store.get().running) conn.send({ type: 'stdin', data });
    },
    /** @param {number} rows @param {number} cols */
    onResize: (rows, cols) => {
      if (store.get().running) conn.send({ type: 'resize', rows, cols });
    },
  };
}
