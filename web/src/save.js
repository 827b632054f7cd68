// @ts-check
// Saving the open file: a PUT 300 ms after the last edit, at once before Run
// and on Ctrl+S, one PUT at a time and in order.

/** @typedef {import('./state.js').Store} Store */
/** @typedef {import('./api.js').Api} Api */
/** @typedef {import('./editor.js').Editor} Editor */

export const SAVE_DEBOUNCE_MS = 300;

/**
 * @typedef {object} Saver
 * @property {() => void} schedule an edit happened: save after the debounce
 * @property {() => Promise<void>} flush write the open file now if it changed; resolves once stored
 * @property {() => void} discard forget pending edits (the open file is being deleted)
 */

/**
 * @param {{store: Store, api: Api, editor: Editor}} deps
 * @returns {Saver}
 */
export function createSaver({ store, api, editor }) {
  // The saver's own handles (not state the page shows): the debounce timer
  // and the chain that keeps PUTs in order.
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let timer;
  /** @type {Promise<void>} */
  let chain = Promise.resolve();

  function flush() {
    clearTimeout(timer);
    timer = undefined;
    const { sessionId, openPath, dirty, openReadOnly } = store.get();
    if (dirty && openPath && sessionId && !openReadOnly) {
      const text = editor.text();
      store.set({ dirty: false, save: 'saving' });
      chain = chain
        .then(() => api.writeFile(sessionId, openPath, text))
        .then(() => {
          if (!store.get().dirty) store.set({ save: 'saved' });
        })
        .catch((e) => {
          store.set({ dirty: true, save: 'error', message: `save failed: ${e instanceof Error ? e.message : e}` });
        });
    }
    return chain;
  }

  return {
    schedule() {
      store.set({ dirty: true, save: 'pending' });
      clearTimeout(timer);
      timer = setTimeout(flush, SAVE_DEBOUNCE_MS);
    },
    flush,
    discard() {
      clearTimeout(timer);
      timer = undefined;
      store.set({ dirty: false });
    },
  };
}
