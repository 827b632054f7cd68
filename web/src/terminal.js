// @ts-check
// The terminal: xterm.js sized to its container by the fit addon.
import { Terminal } from '@xterm/xterm';
import { FitAddon } from '@xterm/addon-fit';

export class Term {
  /**
   * @param {HTMLElement} parent
   * @param {{onData: (s: string) => void, onResize: (rows: number, cols: number) => void}} handlers
   */
  constructor(parent, { onData, onResize }) {
    this.term = new Terminal({
      cursorBlink: true,
      convertEol: false,
      fontFamily: 'ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", monospace',
      fontSize: 13,
      scrollback: 5000,
      theme: {
        background: '#111318',
        foreground: '#d7dae0',
        cursor: '#e5c07b',
        selectionBackground: '#3e4451',
      },
    });
    this.fit = new FitAddon();
    this.term.loadAddon(this.fit);
    this.term.open(parent);
    this.term.onData(onData);
    this.term.onResize(({ rows, cols }) => onResize(rows, cols));
    this.refit();
    let pending = false;
    const schedule = () => {
      if (pending) return;
      pending = true;
      requestAnimationFrame(() => {
        pending = false;
        this.refit();
      });
    };
    window.addEventListener('resize', schedule);
    if (typeof ResizeObserver !== 'undefined') new ResizeObserver(schedule).observe(parent);
  }

  refit() {
    try {
      this.fit.fit();
    } catch {
      /* not visible yet */
    }
  }

  get rows() {
    return this.term.rows;
  }

  get cols() {
    return this.term.cols;
  }

  /** @param {string | Uint8Array} data */
  write(data) {
    this.term.write(data);
  }

  /** A dim notice on a line of its own. @param {string} text @param {string} [color] an SGR colour */
  notice(text, color = '90') {
    this.term.write(`\r\n\x1b[${color}m${text}\x1b[0m\r\n`);
  }

  reset() {
    this.term.reset();
  }

  focus() {
    this.term.focus();
  }

  /** The whole buffer (scrollback included) as text, lines trimmed on the right. */
  text() {
    const buf = this.term.buffer.active;
    const lines = [];
    for (let i = 0; i < buf.length; i++) lines.push(buf.getLine(i)?.translateToString(true) ?? '');
    while (lines.length && lines[lines.length - 1] === '') lines.pop();
    return lines.join('\n');
  }
}

/** Base64 to bytes. @param {string} s */
export function fromBase64(s) {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}
