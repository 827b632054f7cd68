// @ts-check
// The language picker (#language): lists the server's languages and sets the
// session's (`PATCH`), which decides what Run runs; a language gets its main
// file (with a hello program) unless the workspace has it.
import { errorMessage } from './api.js';
import { byId } from './dom.js';
import { starterOf } from './starters.js';

/** @typedef {import('./state.js').Store} Store */
/** @typedef {import('./api.js').Api} Api */
/** @typedef {import('./files.js').Files} Files */
/** @typedef {import('./save.js').Saver} Saver */

/** @param {{store: Store, api: Api, files: Files, saver: Saver}} deps */
export function mountLanguagePicker({ store, api, files, saver }) {
  const sel = byId('language', HTMLSelectElement);

  function render() {
    const { languages, language, sessionId } = store.get();
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
    sel.disabled = !sessionId || languages.length === 0;
  }

  /** @param {string} id */
  async function change(id) {
    const { sessionId, language } = store.get();
    if (id === language || !sessionId) return;
    try {
      const s = await api.patchSession(sessionId, id);
      store.set({ language: s.language || id });
    } catch (e) {
      store.set({ message: `cannot switch language: ${errorMessage(e)}` });
      render();
      return;
    }
    // Give the language its main file (with a hello program) unless it has one.
    const { main, content } = starterOf(id);
    if (!store.get().files.some((f) => f.path === main)) {
      await saver.flush();
      await api.writeFile(sessionId, main, content);
      await files.refresh();
    }
    if (store.get().openPath !== main) await files.open(main);
  }

  sel.addEventListener('change', () => change(sel.value));
  store.subscribe(['languages', 'language', 'sessionId'], render);
  render();
}
