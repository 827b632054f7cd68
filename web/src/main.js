// @ts-check
// The evald IDE's entry point: makes the store and the page's singletons once
// (editor, terminal, connection), hands each module what it needs, and boots.
// Module map: web/README.md.
import { api, errorMessage } from './api.js';
import { createConnection } from './connection.js';
import { element } from './dom.js';
import { Editor } from './editor.js';
import { mountFileTree } from './file-tree.js';
import { createFiles } from './files.js';
import { installTestHooks } from './hooks.js';
import { mountLanguagePicker } from './language.js';
import { mountRunControls, terminalInput } from './run.js';
import { createSaver } from './save.js';
import { serverMessageHandler } from './server-events.js';
import { createSession } from './session.js';
import { createStore } from './state.js';
import { mountStatus } from './status.js';
import { Term } from './terminal.js';

function main() {
  // The singletons, in an order where each exists before anything calls it:
  // the editor calls the saver only on a user's edit, the connection calls
  // its handlers only once connected (boot, at the end).
  const store = createStore();
  const editor = new Editor(element('editor'), {
    onChange: () => saver.schedule(),
    onMode: (editorMode) => store.set({ editorMode }),
    onModeError: (path, e) => store.set({ message: `cannot load the editor mode of ${path}: ${errorMessage(e)}` }),
  });
  const saver = createSaver({ store, api, editor });
  const files = createFiles({ store, api, editor, saver });
  const conn = createConnection({
    store,
    onMessage: (msg) => onMessage(msg),
    notice: (text) => term.notice(text, '31'),
  });
  const term = new Term(element('terminal'), terminalInput({ store, conn }));
  const onMessage = serverMessageHandler({ store, term, files });
  const session = createSession({ store, api, files, editor, term, conn });

  mountFileTree({ store, files });
  mountLanguagePicker({ store, api, files, saver });
  mountRunControls({ store, conn, term, saver });
  mountStatus({
    store,
    onRetry: () => conn.retryNow(),
    onRestart: () => session.restart().catch((e) => store.set({ message: errorMessage(e) })),
  });
  window.addEventListener('beforeunload', () => {
    if (store.get().dirty) saver.flush();
  });
  installTestHooks({ store, editor, term, conn, saver });

  session.boot().catch((e) => {
    store.set({ message: `cannot start: ${errorMessage(e)}` });
    term.notice(`[evald: cannot start the IDE: ${errorMessage(e)}]`, '31');
  });
}

main();
