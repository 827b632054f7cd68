// @ts-check
// What the page says about itself: the connection (#conn), the banner while
// disconnected (with Reconnect now / Start a new session), the editor's head
// (open file, save state), the terminal's head (what runs) and the status
// bar (session, last exit, the last message).
import { button, element } from './dom.js';

/** @typedef {import('./state.js').Store} Store */
/** @typedef {import('./state.js').State} State */
/** @typedef {import('./protocol.gen').ExitMessage} ExitMessage */

/** `exit: ok · code 0 · cpu 11 ms · wall 2130 ms`. @param {ExitMessage} m */
export function formatExit(m) {
  const parts = [`exit: ${m.status}`];
  if (m.exit_code !== null) parts.push(`code ${m.exit_code}`);
  if (m.signal) parts.push(`signal ${m.signal}`);
  parts.push(`cpu ${m.cpu_ms} ms`, `wall ${m.wall_ms} ms`);
  return parts.join(' \u00b7 ');
}

const SAVE_TEXT = { saved: 'saved', pending: 'edited', saving: 'saving\u2026', error: 'not saved' };

/**
 * @param {{store: Store, onRetry: () => void, onRestart: () => void}} deps
 *   onRetry: the banner's "Reconnect now"; onRestart: its "Start a new session"
 */
export function mountStatus({ store, onRetry, onRestart }) {
  const conn = element('conn');
  const banner = element('banner');
  const bannerText = element('banner-text');
  const action = button('banner-action');
  const statusbar = element('statusbar');
  const statusConn = element('status-conn');
  const sessionId = element('session-id');
  const lastExit = element('last-exit');
  const message = element('message');
  const openPath = element('open-path');
  const saveState = element('save-state');
  const running = element('running');

  /** @param {Readonly<State>} s */
  function renderConnection(s) {
    const connText = s.conn === 'ended' ? 'disconnected' : s.conn;
    conn.textContent = connText;
    conn.dataset.state = s.conn;
    if (s.conn === 'disconnected') {
      banner.hidden = false;
      bannerText.textContent = `disconnected \u2014 reconnecting in ${s.reconnectIn}s${s.connNote ? ` (${s.connNote})` : ''}`;
      action.textContent = 'Reconnect now';
      action.dataset.action = 'retry';
    } else if (s.conn === 'ended') {
      banner.hidden = false;
      bannerText.textContent = `disconnected \u2014 ${s.connNote}`;
      action.textContent = 'Start a new session';
      action.dataset.action = 'restart';
    } else {
      banner.hidden = true;
    }
    statusbar.dataset.conn = s.conn;
    statusConn.textContent = s.conn === 'disconnected' ? `disconnected \u2014 reconnecting in ${s.reconnectIn}s` : connText;
  }

  /** @param {Readonly<State>} s */
  function renderStatus(s) {
    sessionId.textContent = s.sessionId ? `session ${s.sessionId}` : '';
    if (s.lastExit) {
      lastExit.textContent = formatExit(s.lastExit);
      lastExit.dataset.status = s.lastExit.status;
    } else {
      lastExit.textContent = '';
      delete lastExit.dataset.status;
    }
    message.textContent = s.message;
    openPath.textContent = s.openPath ?? 'no file';
    saveState.dataset.state = s.save;
    saveState.textContent = SAVE_TEXT[s.save];
    running.dataset.state = s.running ?? '';
    running.textContent = s.running ? `\u25CF ${s.running} running` : '';
  }

  action.addEventListener('click', () => {
    if (action.dataset.action === 'retry') onRetry();
    else onRestart();
  });
  store.subscribe(['conn', 'reconnectIn', 'connNote'], renderConnection);
  store.subscribe(['sessionId', 'lastExit', 'message', 'openPath', 'save', 'running'], renderStatus);
  renderConnection(store.get());
  renderStatus(store.get());
}
