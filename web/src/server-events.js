// @ts-check
// What the page does with each (validated) server message.
import { fromBase64 } from './terminal.js';
import { formatExit } from './status.js';

/** @typedef {import('./protocol.gen').ServerMessage} ServerMessage */
/** @typedef {import('./state.js').Store} Store */
/** @typedef {import('./terminal.js').Term} Term */
/** @typedef {import('./files.js').Files} Files */

/**
 * @param {{store: Store, term: Term, files: Files}} deps
 * @returns {(msg: ServerMessage) => void}
 */
export function serverMessageHandler({ store, term, files }) {
  return (m) => {
    switch (m.type) {
      case 'hello':
        store.set({ running: m.running });
        if (m.language !== store.get().language) store.set({ language: m.language });
        break;
      case 'started':
        if (m.kind === 'run') term.reset();
        store.set({ running: m.kind, started: store.get().started + 1 });
        break;
      case 'output':
        term.write(fromBase64(m.data));
        break;
      case 'exit': {
        const color = m.status === 'ok' ? '90' : '31';
        term.notice(`[${m.kind} ended: ${formatExit(m).replace(/^exit: /, '')}]`, color);
        store.set({ running: null, lastExit: m });
        break;
      }
      case 'files':
        files.onServerFiles(m.files);
        break;
      case 'gap':
        term.notice(`[output ${m.from}..${m.to} was lost while disconnected (the replay buffer overflowed)]`, '33');
        break;
      case 'error':
        term.notice(`[evald: ${m.code}: ${m.message}]`, '31');
        store.set({ message: `${m.code}: ${m.message}` });
        break;
      case 'reconnect':
        store.set({ message: `the server is draining; reconnecting in ${Math.ceil(m.delay_ms / 1000)} s` });
        break;
      case 'pong':
        break;
      default:
        assertNever(m);
    }
  };
}

/** @param {never} x */
function assertNever(x) {
  throw new Error(`unhandled server message ${JSON.stringify(x)}`);
}
