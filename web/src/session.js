// @ts-check
// The session: found again from the URL hash (`#s=<id>`, which wins) or
// localStorage (`evald.session`), else created with the starter of Python
// (or the first language); restarted, keeping the open file, once it is gone.
import { starterOf } from './starters.js';

/** @typedef {import('./state.js').Store} Store */
/** @typedef {import('./api.js').Api} Api */
/** @typedef {import('./api.js').SessionInfo} SessionInfo */
/** @typedef {import('./files.js').Files} Files */
/** @typedef {import('./editor.js').Editor} Editor */
/** @typedef {import('./terminal.js').Term} Term */
/** @typedef {import('./conn.js').SessionConnection} SessionConnection */

export const SESSION_KEY = 'evald.session';
export const DEFAULT_LANGUAGE = 'python';

/** The session id of the URL hash, if any. */
export function sessionFromUrl() {
  const m = /(?:^#|&)s=([^&]+)/.exec(location.hash);
  return m?.[1] ? decodeURIComponent(m[1]) : null;
}

/** @param {string} id */
function remember(id) {
  try {
    localStorage.setItem(SESSION_KEY, id);
  } catch {
    /* storage disabled */
  }
  const hash = `#s=${encodeURIComponent(id)}`;
  if (location.hash !== hash) history.replaceState(null, '', hash);
}

function storedSession() {
  try {
    return localStorage.getItem(SESSION_KEY);
  } catch {
    return null;
  }
}

/**
 * @param {{store: Store, api: Api, files: Files, editor: Editor, term: Term, conn: SessionConnection}} deps
 */
export function createSession({ store, api, files, editor, term, conn }) {
  /** @param {string} languageId @returns {Promise<SessionInfo>} */
  function newSession(languageId) {
    const { main, content } = starterOf(languageId);
    return api.createSession(languageId, [{ path: main, content }]);
  }

  /** Lists the files, opens the main one and connects. @param {string} id */
  async function enter(id) {
    const list = await files.refresh();
    const first = files.pickFileToOpen(list);
    if (first) await files.open(first);
    conn.connect(id);
  }

  /** Starts the IDE: the languages, the session (found again or new), its files, the socket. */
  async function boot() {
    const languages = (await api.languages()).slice().sort((a, b) => a.name.localeCompare(b.name));
    store.set({ languages });
    const fallback = languages.find((l) => l.id === DEFAULT_LANGUAGE)?.id ?? languages[0]?.id ?? DEFAULT_LANGUAGE;
    const id = sessionFromUrl() ?? storedSession();
    let session = id ? await api.getSession(id) : null;
    if (!session) {
      if (id) store.set({ message: `session ${id} is gone; started a new one` });
      session = await newSession(fallback);
    }
    remember(session.id);
    store.set({ sessionId: session.id, language: session.language || fallback, running: session.running ?? null });
    await enter(session.id);
  }

  /** The session expired or was deleted: start a new one, keeping the open file's text. */
  async function restart() {
    const { language, openPath } = store.get();
    const lang = language ?? DEFAULT_LANGUAGE;
    const s = openPath ? await api.createSession(lang, [{ path: openPath, content: editor.text() }]) : await newSession(lang);
    remember(s.id);
    store.set({ sessionId: s.id, running: null, lastExit: null });
    const list = await files.refresh();
    const first = files.pickFileToOpen(list);
    if (first) await files.open(first);
    term.reset();
    conn.connect(s.id);
  }

  // Another session's link pasted into this tab: load it.
  window.addEventListener('hashchange', () => {
    const id = sessionFromUrl();
    if (id && id !== store.get().sessionId) location.reload();
  });

  return { boot, restart };
}
