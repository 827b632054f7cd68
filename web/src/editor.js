// @ts-check
// The code editor: CodeMirror 6 with a dark theme and the language mode of
// the open file's extension, loaded on demand (modes.js): a file shows at
// once, plain, and is highlighted when its mode has arrived.
import { EditorView, basicSetup } from 'codemirror';
import { EditorState, Compartment } from '@codemirror/state';
import { keymap } from '@codemirror/view';
import { indentWithTab } from '@codemirror/commands';
import { language as languageFacet } from '@codemirror/language';
import { oneDark } from '@codemirror/theme-one-dark';
import { modeLoaderFor } from './modes.js';

/**
 * @typedef {object} EditorHandlers
 * @property {(text: string) => void} onChange an edit by the user (not by open())
 * @property {(mode: string | null) => void} onMode the open file's mode: null when a file opens, its name once loaded
 * @property {(path: string, error: unknown) => void} onModeError a mode's chunk could not be loaded
 */

export class Editor {
  /** @param {HTMLElement} parent @param {EditorHandlers} handlers */
  constructor(parent, handlers) {
    this.handlers = handlers;
    this.lang = new Compartment();
    this.readOnly = new Compartment();
    this.silent = false;
    this.opened = 0; // how many files open() has shown: tells a late mode which file it was for
    this.view = new EditorView({ parent, state: this.makeState('', false) });
  }

  /** @param {string} text @param {boolean} readOnly */
  makeState(text, readOnly) {
    return EditorState.create({
      doc: text,
      extensions: [
        basicSetup,
        keymap.of([indentWithTab]),
        oneDark,
        EditorView.theme({ '&': { height: '100%' }, '.cm-scroller': { overflow: 'auto' } }),
        this.lang.of([]),
        this.readOnly.of([EditorState.readOnly.of(readOnly), EditorView.editable.of(!readOnly)]),
        EditorView.updateListener.of((u) => {
          if (u.docChanged && !this.silent) this.handlers.onChange(u.state.doc.toString());
        }),
      ],
    });
  }

  /**
   * Shows a file (a fresh state: its own undo history), then loads its mode.
   * @param {string} text @param {string | null} path @param {boolean} [readOnly]
   */
  open(text, path, readOnly = false) {
    this.silent = true;
    this.view.setState(this.makeState(text, readOnly));
    this.silent = false;
    const opened = ++this.opened;
    this.handlers.onMode(null);
    const load = modeLoaderFor(path);
    if (!load || !path) return;
    load().then(
      (ext) => {
        // Another file (or the same one again) was opened meanwhile: its own load applies.
        if (opened !== this.opened) return;
        this.view.dispatch({ effects: this.lang.reconfigure(ext) });
        this.handlers.onMode(this.mode());
      },
      (e) => this.handlers.onModeError(path, e),
    );
  }

  /** The open file's mode name (`python`, `c`, ...) or null. */
  mode() {
    return this.view.state.facet(languageFacet)?.name ?? null;
  }

  text() {
    return this.view.state.doc.toString();
  }

  /** Replaces the whole text as an edit (undoable; fires onChange). @param {string} text */
  setText(text) {
    this.view.dispatch({ changes: { from: 0, to: this.view.state.doc.length, insert: text } });
  }

  focus() {
    this.view.focus();
  }
}
