// The evald IDE: wires the state, the HTTP API, the session socket, the
// editor and the terminal to the page (index.html).
import '@xterm/xterm/css/xterm.css';
import './app.css';
import * as store from './state.js';
import { api, checkPath } from './api.js';
import { SessionConnection } from './conn.js';
import { Editor } from './editor.js';
import { Term, fromBase64 } from './terminal.js';
import { STARTERS } from './starters.gen.js';

const $ = (id) => document.getElementById(id);
const SESSION_KEY = 'evald.session';
const DEFAULT_LANGUAGE = 'python';
const SAVE_DEBOUNCE_MS = 300;
const KILL_AFTER_MS = 1000;

/** The starter of a language: its main file and hello program. */
function starterOf(languageId) {
  const s = STARTERS[languageId];
  if (s) return { main: s.main, content: s.hello ?? '' };
  return { main: 'main.txt', content: '' };
}

let conn = null;
let editor = null;
let term = null;

// ---------- saving ----------
let saveTimer = null;
let dirty = false;
let saveChain = Promise.resolve();
let openReadOnly = false;

function scheduleSave() {
  dirty = true;
  store.set({ save: 'pending' });
  clearTimeout(saveTimer);
  saveTimer = setTimeout(flushSave, SAVE_DEBOUNCE_MS);
}

/** Writes the open file if it changed; resolves once stored. */
function flushSave() {
  clearTimeout(saveTimer);
  saveTimer = null;
  const { sessionId, openPath } = store.get();
  if (dirty && openPath && sessionId && !openReadOnly) {
    dirty = false;
    const text = editor.text();
    store.set({ save: 'saving' });
    saveChain = saveChain
      .then(() => api.writeFile(sessionId, openPath, text))
      .then(() => {
        if (!dirty) store.set({ save: 'saved' });
      })
      .catch((e) => {
        dirty = true;
        store.set({ save: 'error', message: `save failed: ${e.message}` });
      });
  }
  return saveChain;
}

// ---------- files ----------
async function refreshFiles() {
  const { sessionId } = store.get();
  const files = await api.listFiles(sessionId);
  store.set({ files });
  return files;
}

async function openFile(path) {
  await flushSave();
  const { sessionId } = store.get();
  let text = '';
  let readOnly = false;
  try {
    const bytes = await api.readFile(sessionId, path);
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    } catch {
      text = `(binary file, ${bytes.length} bytes)`;
      readOnly = true;
    }
  } catch (e) {
    store.set({ message: `cannot open ${path}: ${e.message}` });
    return;
  }
  // Typed into this same file while it loaded: keep the typing; typed into
  // the file being left: save that first.
  if (dirty && store.get().openPath === path) return;
  if (dirty) await flushSave();
  openReadOnly = readOnly;
  dirty = false;
  editor.open(text, path, readOnly);
  store.set({ openPath: path, save: 'saved' });
}

function pickFileToOpen(files) {
  const { language } = store.get();
  const plain = files.filter((f) => !f.is_dir);
  const main = starterOf(language).main;
  return (plain.find((f) => f.path === main) || plain[0])?.path ?? null;
}

async function createFile(path) {
  const err = checkPath(path);
  if (err) throw new Error(`bad name: ${err}`);
  if (store.get().files.some((f) => f.path === path)) throw new Error(`${path} exists`);
  await api.writeFile(store.get().sessionId, path, '');
  await refreshFiles();
  await openFile(path);
}

async function renameFile(from, to) {
  const err = checkPath(to);
  if (err) throw new Error(`bad name: ${err}`);
  if (from === to) return;
  await flushSave();
  await api.rename(store.get().sessionId, from, to);
  if (store.get().openPath === from) store.set({ openPath: to });
  await refreshFiles();
}

async function deleteFile(path) {
  if (store.get().openPath === path) {
    clearTimeout(saveTimer);
    dirty = false;
  }
  await api.deleteFile(store.get().sessionId, path);
  const files = await refreshFiles();
  if (store.get().openPath === path) {
    const next = pickFileToOpen(files);
    if (next) await openFile(next);
    else {
      editor.open('', null, true);
      store.set({ openPath: null });
    }
  }
}

function renderFiles() {
  const { files, openPath } = store.get();
  const ul = $('files');
  // Keep an item that is being renamed untouched.
  if (ul.querySelector('input')) return;
  ul.replaceChildren();
  for (const f of files) {
    const li = document.createElement('li');
    li.dataset.path = f.path;
    li.dataset.testid = 'file';
    li.style.setProperty('--depth', String(f.path.split('/').length - 1));
    const name = document.createElement('span');
    name.className = 'name';
    name.textContent = f.path.split('/').pop();
    name.title = f.is_dir ? f.path : `${f.path} (${f.size} bytes)`;
    li.append(name);
    if (f.is_dir) {
      li.className = 'dir';
      li.dataset.dir = '';
    } else {
      li.className = f.path === openPath ? 'file open' : 'file';
      li.addEventListener('click', (ev) => {
        if (ev.target.closest('button, input')) return;
        openFile(f.path);
      });
      const ren = document.createElement('button');
      ren.className = 'act rename';
      ren.title = 'rename';
      ren.textContent = '\u270E';
      ren.addEventListener('click', () => startRename(li, f.path));
      const del = document.createElement('button');
      del.className = 'act delete';
      del.title = 'delete (click twice)';
      del.textContent = '\u2715';
      del.addEventListener('click', () => {
        if (del.dataset.confirm !== undefined) {
          deleteFile(f.path).catch((e) => store.set({ message: e.message }));
          return;
        }
        del.dataset.confirm = '';
        del.textContent = 'delete?';
        setTimeout(() => {
          delete del.dataset.confirm;
          del.textContent = '\u2715';
        }, 3000);
      });
      li.append(ren, del);
    }
    ul.append(li);
  }
}

function startRename(li, path) {
  const input = document.createElement('input');
  input.className = 'rename-input';
  input.dataset.testid = 'rename-input';
  input.value = path;
  li.replaceChildren(input);
  input.focus();
  input.setSelectionRange(path.lastIndexOf('/') + 1, path.length);
  let done = false;
  const finish = async (commit) => {
    if (done) return;
    done = true;
    input.remove();
    if (commit && input.value.trim() && input.value.trim() !== path) {
      try {
        await renameFile(path, input.value.trim());
      } catch (e) {
        store.set({ message: `rename failed: ${e.message}` });
      }
    }
    renderFiles();
  };
  input.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter') finish(true);
    else if (ev.key === 'Escape') finish(false);
  });
  input.addEventListener('blur', () => finish(false));
}

function setupNewFile() {
  const form = $('new-file-form');
  const input = $('new-file-name');
  $('new-file').addEventListener('click', () => {
    form.hidden = false;
    input.value = '';
    input.focus();
  });
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const path = input.value.trim();
    if (!path) return;
    try {
      await createFile(path);
      form.hidden = true;
      input.value = '';
    } catch (e) {
      store.set({ message: e.message });
      input.select();
    }
  });
  input.addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape') form.hidden = true;
  });
}

// ---------- language ----------
function renderLanguages() {
  const { languages, language } = store.get();
  const sel = $('language');
  if (sel.options.length !== languages.length) {
    sel.replaceChildren(
      ...languages.map((l) => {
        const o = document.createElement('option');
        o.value = l.id;
        o.textContent = l.version ? `${l.name} ${l.version}` : l.name;
        return o;
      }),
    );
  }
  if (language) sel.value = language;
}

async function changeLanguage(id) {
  const { sessionId, language } = store.get();
  if (id === language) return;
  try {
    const s = await api.patchSession(sessionId, id);
    store.set({ language: s.language || id });
  } catch (e) {
    store.set({ message: `cannot switch language: ${e.message}` });
    renderLanguages();
    return;
  }
  // Give the language its main file (with a hello program) unless it has one.
  const { main, content } = starterOf(id);
  const files = store.get().files;
  if (!files.some((f) => f.path === main)) {
    await flushSave();
    await api.writeFile(sessionId, main, content);
    await refreshFiles();
  }
  if (store.get().openPath !== main) await openFile(main);
}

// ---------- processes ----------
let startedCount = 0;

function startProcess(kind) {
  const ok = conn && conn.send({ type: kind, rows: term.rows, cols: term.cols });
  if (!ok) store.set({ message: 'not connected' });
  term.focus();
}

async function run() {
  $('run').disabled = true;
  await flushSave();
  startProcess('run');
  render();
}

function stop() {
  if (!store.get().running) return;
  conn.send({ type: 'signal', signal: 'INT' });
  const which = startedCount;
  setTimeout(() => {
    if (store.get().running && startedCount === which) conn.send({ type: 'signal', signal: 'KILL' });
  }, KILL_AFTER_MS);
}

function formatExit(m) {
  const parts = [`exit: ${m.status}`];
  if (m.exit_code !== null && m.exit_code !== undefined) parts.push(`code ${m.exit_code}`);
  if (m.signal) parts.push(`signal ${m.signal}`);
  if (typeof m.cpu_ms === 'number') parts.push(`cpu ${Math.round(m.cpu_ms)} ms`);
  if (typeof m.wall_ms === 'number') parts.push(`wall ${Math.round(m.wall_ms)} ms`);
  return parts.join(' \u00b7 ');
}

function onServerMessage(m) {
  switch (m.type) {
    case 'hello':
      store.set({ running: m.running ?? null });
      if (m.language && m.language !== store.get().language) store.set({ language: m.language });
      break;
    case 'started':
      startedCount += 1;
      if (m.kind === 'run') term.reset();
      store.set({ running: m.kind });
      break;
    case 'output':
      term.write(fromBase64(m.data || ''));
      break;
    case 'exit': {
      const color = m.status === 'ok' ? '90' : '31';
      term.notice(`[${m.kind || 'process'} ended: ${formatExit(m).replace(/^exit: /, '')}]`, color);
      store.set({ running: null, lastExit: m });
      break;
    }
    case 'files':
      onFilesChanged(m.files || []);
      break;
    case 'gap':
      term.notice(`[output ${m.from}..${m.to} was lost while disconnected (the replay buffer overflowed)]`, '33');
      break;
    case 'error':
      term.notice(`[evald: ${m.code}: ${m.message}]`, '31');
      store.set({ message: `${m.code}: ${m.message}` });
      if (m.code === 'not_running' || m.code === 'busy') render();
      break;
    case 'reconnect':
      store.set({ message: `the server is draining; reconnecting in ${Math.ceil((m.delay_ms || 0) / 1000)} s` });
      break;
    default:
      break; // pong and future types
  }
}

async function onFilesChanged(files) {
  const before = store.get().files;
  store.set({ files });
  const { openPath } = store.get();
  if (!openPath) return;
  const now = files.find((f) => f.path === openPath);
  if (!now) {
    if (!dirty) {
      const next = pickFileToOpen(files);
      if (next) openFile(next);
    }
    return;
  }
  // A program rewrote the open file: show the new content unless edits are pending.
  const old = before.find((f) => f.path === openPath);
  if (!dirty && store.get().save === 'saved' && old && old.size !== now.size) {
    const bytes = await api.readFile(store.get().sessionId, openPath).catch(() => null);
    if (bytes && !dirty) {
      const text = new TextDecoder().decode(bytes);
      if (text !== editor.text()) editor.open(text, openPath, false);
    }
  }
}

// ---------- connection ----------
const connLog = []; // [{at, state}] transitions, for tests and debugging

function connect() {
  if (conn) conn.stop();
  conn = new SessionConnection({
    sessionId: store.get().sessionId,
    onMessage: onServerMessage,
    onState: (state, info) => {
      if (connLog[connLog.length - 1]?.state !== state) connLog.push({ at: Date.now(), state });
      if (connLog.length > 200) connLog.shift();
      const patch = { conn: state, connNote: info.note || '' };
      if (state === 'disconnected') patch.reconnectIn = info.reconnectIn ?? 0;
      store.set(patch);
    },
    onFinal: (code, reason) => {
      store.set({ running: null, message: reason });
      term.notice(`[evald: ${reason}]`, '31');
    },
  });
  conn.start();
}

// ---------- session ----------
function sessionFromUrl() {
  const m = /(?:^#|&)s=([^&]+)/.exec(location.hash);
  return m ? decodeURIComponent(m[1]) : null;
}

function remember(id) {
  try {
    localStorage.setItem(SESSION_KEY, id);
  } catch {
    /* storage disabled */
  }
  const hash = `#s=${encodeURIComponent(id)}`;
  if (location.hash !== hash) history.replaceState(null, '', hash);
}

async function newSession(languageId) {
  const { main, content } = starterOf(languageId);
  const s = await api.createSession(languageId, [{ path: main, content }]);
  return s;
}

async function boot() {
  const languages = (await api.languages()).slice().sort((a, b) => a.name.localeCompare(b.name));
  store.set({ languages });
  const fallback = languages.find((l) => l.id === DEFAULT_LANGUAGE)?.id ?? languages[0]?.id ?? DEFAULT_LANGUAGE;

  let id = sessionFromUrl();
  if (!id) {
    try {
      id = localStorage.getItem(SESSION_KEY);
    } catch {
      id = null;
    }
  }
  let session = id ? await api.getSession(id) : null;
  if (!session) {
    if (id) store.set({ message: `session ${id} is gone; started a new one` });
    session = await newSession(fallback);
  }
  remember(session.id);
  store.set({ sessionId: session.id, language: session.language || fallback, running: session.running ?? null });
  const files = await refreshFiles();
  const first = pickFileToOpen(files);
  if (first) await openFile(first);
  connect();
}

/** The session expired or was deleted: start a new one, keeping the open file's text. */
async function restartSession() {
  const { language, openPath } = store.get();
  const keep = openPath ? [{ path: openPath, content: editor.text() }] : undefined;
  const s = keep ? await api.createSession(language, keep) : await newSession(language);
  remember(s.id);
  store.set({ sessionId: s.id, running: null, lastExit: null });
  const files = await refreshFiles();
  const first = pickFileToOpen(files);
  if (first) await openFile(first);
  term.reset();
  connect();
}

// ---------- rendering ----------
function render() {
  const s = store.get();
  const connEl = $('conn');
  const connText = s.conn === 'ended' ? 'disconnected' : s.conn;
  connEl.textContent = connText;
  connEl.dataset.state = s.conn;
  const live = s.conn === 'connected';
  $('run').disabled = !live || !!s.running || !s.sessionId;
  $('shell').disabled = !live || !!s.running;
  const lang = s.languages.find((l) => l.id === s.language);
  $('repl').disabled = !live || !!s.running || !lang || !lang.repl;
  $('stop').disabled = !live || !s.running;
  $('language').disabled = !s.sessionId || s.languages.length === 0;

  const banner = $('banner');
  const action = $('banner-action');
  if (s.conn === 'disconnected') {
    banner.hidden = false;
    $('banner-text').textContent = `disconnected \u2014 reconnecting in ${s.reconnectIn}s${s.connNote ? ` (${s.connNote})` : ''}`;
    action.textContent = 'Reconnect now';
    action.dataset.action = 'retry';
  } else if (s.conn === 'ended') {
    banner.hidden = false;
    $('banner-text').textContent = `disconnected \u2014 ${s.connNote}`;
    action.textContent = 'Start a new session';
    action.dataset.action = 'restart';
  } else {
    banner.hidden = true;
  }

  const sb = $('statusbar');
  sb.dataset.conn = s.conn;
  $('status-conn').textContent =
    s.conn === 'disconnected' ? `disconnected \u2014 reconnecting in ${s.reconnectIn}s` : connText;
  $('session-id').textContent = s.sessionId ? `session ${s.sessionId}` : '';
  const le = $('last-exit');
  if (s.lastExit) {
    le.textContent = formatExit(s.lastExit);
    le.dataset.status = s.lastExit.status;
  } else {
    le.textContent = '';
    delete le.dataset.status;
  }
  $('message').textContent = s.message;
  $('open-path').textContent = s.openPath ?? 'no file';
  const saveEl = $('save-state');
  saveEl.dataset.state = s.save;
  saveEl.textContent = { saved: 'saved', pending: 'edited', saving: 'saving\u2026', error: 'not saved' }[s.save];
  const running = $('running');
  running.dataset.state = s.running ?? '';
  running.textContent = s.running ? `\u25CF ${s.running} running` : '';
}

let lastFiles = null;
let lastOpen = null;
let lastLangs = null;
let lastLang = null;
store.subscribe((s) => {
  render();
  if (s.files !== lastFiles || s.openPath !== lastOpen) {
    lastFiles = s.files;
    lastOpen = s.openPath;
    renderFiles();
  }
  if (s.languages !== lastLangs || s.language !== lastLang) {
    lastLangs = s.languages;
    lastLang = s.language;
    renderLanguages();
  }
});

// ---------- start ----------
function main() {
  editor = new Editor($('editor'), () => scheduleSave());
  term = new Term($('terminal'), {
    onData: (data) => {
      if (store.get().running) conn?.send({ type: 'stdin', data });
    },
    onResize: (rows, cols) => {
      if (store.get().running) conn?.send({ type: 'resize', rows, cols });
    },
  });
  setupNewFile();
  $('run').addEventListener('click', run);
  $('stop').addEventListener('click', stop);
  $('shell').addEventListener('click', () => startProcess('shell'));
  $('repl').addEventListener('click', () => startProcess('repl'));
  $('language').addEventListener('change', (ev) => changeLanguage(ev.target.value));
  $('banner-action').addEventListener('click', (ev) => {
    if (ev.target.dataset.action === 'retry') conn?.retryNow();
    else restartSession().catch((e) => store.set({ message: e.message }));
  });
  document.addEventListener('keydown', (ev) => {
    if ((ev.ctrlKey || ev.metaKey) && ev.key === 'Enter' && !$('run').disabled) {
      ev.preventDefault();
      run();
    } else if ((ev.ctrlKey || ev.metaKey) && ev.key === 's') {
      ev.preventDefault();
      flushSave();
    }
  });
  window.addEventListener('beforeunload', () => {
    if (dirty) flushSave();
  });
  window.addEventListener('hashchange', () => {
    const id = sessionFromUrl();
    if (id && id !== store.get().sessionId) location.reload();
  });

  // Hooks for tests and debugging.
  window.__evald = {
    terminalText: () => term.text(),
    editorText: () => editor.text(),
    setEditorText: (t) => editor.setText(t),
    dropConnection: () => conn?.drop(4000, 'dropped by a test'),
    flushSave,
    get state() {
      return { ...store.get() };
    },
    get lastSeq() {
      return conn?.lastSeq ?? 0;
    },
    /** The connection's state transitions: [{at, state}]. */
    connLog: () => connLog.slice(),
    /** How many processes have started while this page was open (replays included). */
    get started() {
      return startedCount;
    },
  };

  render();
  boot().catch((e) => {
    store.set({ message: `cannot start: ${e.message}` });
    term.notice(`[evald: cannot start the IDE: ${e.message}]`, '31');
  });
}

main();
