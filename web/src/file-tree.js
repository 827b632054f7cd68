// @ts-check
// The file tree (#files): one item per file or directory, click to open,
// rename in place, delete with a second click; and the new-file input.
import { errorMessage } from './api.js';
import { byId, element } from './dom.js';

/** @typedef {import('./state.js').Store} Store */
/** @typedef {import('./files.js').Files} Files */

const CONFIRM_MS = 3000;

/** @param {{store: Store, files: Files}} deps */
export function mountFileTree({ store, files }) {
  const ul = element('files');

  function render() {
    const { files: entries, openPath } = store.get();
    // Keep an item that is being renamed untouched.
    if (ul.querySelector('input')) return;
    ul.replaceChildren();
    for (const f of entries) {
      const li = document.createElement('li');
      li.dataset.path = f.path;
      li.dataset.testid = 'file';
      li.style.setProperty('--depth', String(f.path.split('/').length - 1));
      const name = document.createElement('span');
      name.className = 'name';
      name.textContent = f.path.split('/').pop() ?? f.path;
      name.title = f.is_dir ? f.path : `${f.path} (${f.size} bytes)`;
      li.append(name);
      if (f.is_dir) {
        li.className = 'dir';
        li.dataset.dir = '';
      } else {
        li.className = f.path === openPath ? 'file open' : 'file';
        li.addEventListener('click', (ev) => {
          if (ev.target instanceof Element && ev.target.closest('button, input')) return;
          files.open(f.path);
        });
        li.append(renameButton(li, f.path), deleteButton(f.path));
      }
      ul.append(li);
    }
  }

  /** @param {HTMLLIElement} li @param {string} path */
  function renameButton(li, path) {
    const ren = document.createElement('button');
    ren.className = 'act rename';
    ren.title = 'rename';
    ren.textContent = '\u270E';
    ren.addEventListener('click', () => startRename(li, path));
    return ren;
  }

  /** @param {string} path */
  function deleteButton(path) {
    const del = document.createElement('button');
    del.className = 'act delete';
    del.title = 'delete (click twice)';
    del.textContent = '\u2715';
    del.addEventListener('click', () => {
      if (del.dataset.confirm !== undefined) {
        files.remove(path).catch((e) => store.set({ message: errorMessage(e) }));
        return;
      }
      del.dataset.confirm = '';
      del.textContent = 'delete?';
      setTimeout(() => {
        delete del.dataset.confirm;
        del.textContent = '\u2715';
      }, CONFIRM_MS);
    });
    return del;
  }

  /** @param {HTMLLIElement} li @param {string} path */
  function startRename(li, path) {
    const input = document.createElement('input');
    input.className = 'rename-input';
    input.dataset.testid = 'rename-input';
    input.value = path;
    li.replaceChildren(input);
    input.focus();
    input.setSelectionRange(path.lastIndexOf('/') + 1, path.length);
    let done = false;
    /** @param {boolean} commit */
    const finish = async (commit) => {
      if (done) return;
      done = true;
      input.remove();
      const to = input.value.trim();
      if (commit && to && to !== path) {
        try {
          await files.rename(path, to);
        } catch (e) {
          store.set({ message: `rename failed: ${errorMessage(e)}` });
        }
      }
      render();
    };
    input.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter') finish(true);
      else if (ev.key === 'Escape') finish(false);
    });
    input.addEventListener('blur', () => finish(false));
  }

  function mountNewFile() {
    const form = byId('new-file-form', HTMLFormElement);
    const input = byId('new-file-name', HTMLInputElement);
    element('new-file').addEventListener('click', () => {
      form.hidden = false;
      input.value = '';
      input.focus();
    });
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const path = input.value.trim();
      if (!path) return;
      try {
        await files.create(path);
        form.hidden = true;
        input.value = '';
      } catch (e) {
        store.set({ message: errorMessage(e) });
        input.select();
      }
    });
    input.addEventListener('keydown', (ev) => {
      if (ev.key === 'Escape') form.hidden = true;
    });
  }

  mountNewFile();
  store.subscribe(['files', 'openPath'], render);
  render();
}
