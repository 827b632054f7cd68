// @ts-check
// The workspace's files: listing, opening into the editor, creating,
// renaming, deleting, and following the server's `files` events.
import { checkPath, errorMessage } from './api.js';
import { starterOf } from './starters.js';

/** @typedef {import('./state.js').Store} Store */
/** @typedef {import('./state.js').FileEntry} FileEntry */
/** @typedef {import('./api.js').Api} Api */
/** @typedef {import('./editor.js').Editor} Editor */
/** @typedef {import('./save.js').Saver} Saver */

/**
 * @typedef {object} Files
 * @property {() => Promise<readonly FileEntry[]>} refresh lists the workspace again
 * @property {(path: string) => Promise<void>} open shows a file in the editor (saving the one left first)
 * @property {(files: readonly FileEntry[]) => string | null} pickFileToOpen the language's main file, else the first file
 * @property {(path: string) => Promise<void>} create
 * @property {(from: string, to: string) => Promise<void>} rename
 * @property {(path: string) => Promise<void>} remove
 * @property {(files: FileEntry[]) => Promise<void>} onServerFiles a `files` event
 */

/**
 * @param {{store: Store, api: Api, editor: Editor, saver: Saver}} deps
 * @returns {Files}
 */
export function createFiles({ store, api, editor, saver }) {
  /** The session id; the files exist only once a session does. */
  function session() {
    const { sessionId } = store.get();
    if (!sessionId) throw new Error('no session yet');
    return sessionId;
  }

  async function refresh() {
    const files = await api.listFiles(session());
    store.set({ files });
    return files;
  }

  /** @param {string} path */
  async function open(path) {
    await saver.flush();
    let text = '';
    let readOnly = false;
    try {
      const bytes = await api.readFile(session(), path);
      try {
        text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
      } catch {
        text = `(binary file, ${bytes.length} bytes)`;
        readOnly = true;
      }
    } catch (e) {
      store.set({ message: `cannot open ${path}: ${errorMessage(e)}` });
      return;
    }
    // Typed into this same file while it loaded: keep the typing; typed into
    // the file being left: save that first.
    if (store.get().dirty && store.get().openPath === path) return;
    if (store.get().dirty) await saver.flush();
    store.set({ openReadOnly: readOnly, dirty: false });
    editor.open(text, path, readOnly);
    store.set({ openPath: path, save: 'saved' });
  }

  /** @param {readonly FileEntry[]} files */
  function pickFileToOpen(files) {
    const plain = files.filter((f) => !f.is_dir);
    const main = starterOf(store.get().language).main;
    return (plain.find((f) => f.path === main) || plain[0])?.path ?? null;
  }

  /** @param {string} path */
  async function create(path) {
    const err = checkPath(path);
    if (err) throw new Error(`bad name: ${err}`);
    if (store.get().files.some((f) => f.path === path)) throw new Error(`${path} exists`);
    await api.writeFile(session(), path, '');
    await refresh();
    await open(path);
  }

  /** @param {string} from @param {string} to */
  async function rename(from, to) {
    const err = checkPath(to);
    if (err) throw new Error(`bad name: ${err}`);
    if (from === to) return;
    await saver.flush();
    await api.rename(session(), from, to);
    if (store.get().openPath === from) store.set({ openPath: to });
    await refresh();
  }

  /** @param {string} path */
  async function remove(path) {
    if (store.get().openPath === path) saver.discard();
    await api.deleteFile(session(), path);
    const files = await refresh();
    if (store.get().openPath === path) {
      const next = pickFileToOpen(files);
      if (next) await open(next);
      else {
        editor.open('', null, true);
        store.set({ openPath: null });
      }
    }
  }

  /** @param {FileEntry[]} files */
  async function onServerFiles(files) {
    const before = store.get().files;
    store.set({ files });
    const { openPath } = store.get();
    if (!openPath) return;
    const now = files.find((f) => f.path === openPath);
    if (!now) {
      if (!store.get().dirty) {
        const next = pickFileToOpen(files);
        if (next) open(next);
      }
      return;
    }
    // A program rewrote the open file: show the new content unless edits are pending.
    const old = before.find((f) => f.path === openPath);
    if (!store.get().dirty && store.get().save === 'saved' && old && old.size !== now.size) {
      const bytes = await api.readFile(session(), openPath).catch(() => null);
      if (bytes && !store.get().dirty) {
        const text = new TextDecoder().decode(bytes);
        if (text !== editor.text()) editor.open(text, openPath, false);
      }
    }
  }

  return { refresh, open, pickFileToOpen, create, rename, remove, onServerFiles };
}
