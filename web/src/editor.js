// The code editor: CodeMirror 6 with a dark theme and a language chosen by
// the open file's extension.
import { EditorView, basicSetup } from 'codemirror';
import { EditorState, Compartment } from '@codemirror/state';
import { keymap } from '@codemirror/view';
import { indentWithTab } from '@codemirror/commands';
import { StreamLanguage } from '@codemirror/language';
import { oneDark } from '@codemirror/theme-one-dark';
import { python } from '@codemirror/lang-python';
import { javascript } from '@codemirror/lang-javascript';
import { cpp } from '@codemirror/lang-cpp';
import { java } from '@codemirror/lang-java';
import { rust } from '@codemirror/lang-rust';
import { go } from '@codemirror/lang-go';
import { c, csharp, kotlin, scala } from '@codemirror/legacy-modes/mode/clike';
import { shell } from '@codemirror/legacy-modes/mode/shell';
import { ruby } from '@codemirror/legacy-modes/mode/ruby';
import { lua } from '@codemirror/legacy-modes/mode/lua';
import { perl } from '@codemirror/legacy-modes/mode/perl';
import { haskell } from '@codemirror/legacy-modes/mode/haskell';
import { oCaml, fSharp } from '@codemirror/legacy-modes/mode/mllike';
import { clojure } from '@codemirror/legacy-modes/mode/clojure';
import { commonLisp } from '@codemirror/legacy-modes/mode/commonlisp';
import { scheme } from '@codemirror/legacy-modes/mode/scheme';
import { erlang } from '@codemirror/legacy-modes/mode/erlang';
import { fortran } from '@codemirror/legacy-modes/mode/fortran';
import { pascal } from '@codemirror/legacy-modes/mode/pascal';
import { r } from '@codemirror/legacy-modes/mode/r';
import { tcl } from '@codemirror/legacy-modes/mode/tcl';
import { d } from '@codemirror/legacy-modes/mode/d';
import { groovy } from '@codemirror/legacy-modes/mode/groovy';
import { crystal } from '@codemirror/legacy-modes/mode/crystal';
import { coffeeScript } from '@codemirror/legacy-modes/mode/coffeescript';
import { cobol } from '@codemirror/legacy-modes/mode/cobol';
import { octave } from '@codemirror/legacy-modes/mode/octave';
import { brainfuck } from '@codemirror/legacy-modes/mode/brainfuck';
import { forth } from '@codemirror/legacy-modes/mode/forth';
import { sqlite } from '@codemirror/legacy-modes/mode/sql';
import { toml } from '@codemirror/legacy-modes/mode/toml';
import { yaml } from '@codemirror/legacy-modes/mode/yaml';

const legacy = (mode) => () => StreamLanguage.define(mode);

const BY_EXT = {
  py: python, pyw: python,
  js: javascript, mjs: javascript, cjs: javascript, ts: () => javascript({ typescript: true }),
  jsx: () => javascript({ jsx: true }), tsx: () => javascript({ jsx: true, typescript: true }),
  json: javascript,
  c: legacy(c), h: cpp, cc: cpp, cpp: cpp, cxx: cpp, hpp: cpp,
  java: java, rs: rust, go: go,
  cs: legacy(csharp), kt: legacy(kotlin), kts: legacy(kotlin), scala: legacy(scala),
  sh: legacy(shell), bash: legacy(shell), zsh: legacy(shell), fish: legacy(shell),
  rb: legacy(ruby), lua: legacy(lua), pl: legacy(perl), pm: legacy(perl),
  hs: legacy(haskell), ml: legacy(oCaml), mli: legacy(oCaml), fs: legacy(fSharp),
  clj: legacy(clojure), lisp: legacy(commonLisp), el: legacy(commonLisp),
  scm: legacy(scheme), rkt: legacy(scheme), erl: legacy(erlang),
  f90: legacy(fortran), f95: legacy(fortran), f: legacy(fortran),
  pas: legacy(pascal), r: legacy(r), tcl: legacy(tcl), d: legacy(d),
  groovy: legacy(groovy), cr: legacy(crystal), coffee: legacy(coffeeScript),
  cob: legacy(cobol), cbl: legacy(cobol), m: legacy(octave), bf: legacy(brainfuck),
  sql: legacy(sqlite), toml: legacy(toml), yaml: legacy(yaml), yml: legacy(yaml),
};

export function languageFor(path) {
  const ext = (path || '').split('/').pop().split('.').slice(1).pop()?.toLowerCase();
  const make = ext && BY_EXT[ext];
  return make ? make() : [];
}

export class Editor {
  /** @param {HTMLElement} parent @param {(text: string) => void} onChange */
  constructor(parent, onChange) {
    this.onChange = onChange;
    this.lang = new Compartment();
    this.readOnly = new Compartment();
    this.silent = false;
    this.view = new EditorView({ parent, state: this.makeState('', null, false) });
  }

  makeState(text, path, readOnly) {
    return EditorState.create({
      doc: text,
      extensions: [
        basicSetup,
        keymap.of([indentWithTab]),
        oneDark,
        EditorView.theme({ '&': { height: '100%' }, '.cm-scroller': { overflow: 'auto' } }),
        this.lang.of(languageFor(path)),
        this.readOnly.of([EditorState.readOnly.of(readOnly), EditorView.editable.of(!readOnly)]),
        EditorView.updateListener.of((u) => {
          if (u.docChanged && !this.silent) this.onChange(u.state.doc.toString());
        }),
      ],
    });
  }

  /** Shows a file (a fresh state: its own undo history). */
  open(text, path, readOnly = false) {
    this.silent = true;
    this.view.setState(this.makeState(text, path, readOnly));
    this.silent = false;
  }

  text() {
    return this.view.state.doc.toString();
  }

  /** Replaces the whole text as an edit (undoable; fires onChange). */
  setText(text) {
    this.view.dispatch({ changes: { from: 0, to: this.view.state.doc.length, insert: text } });
  }

  focus() {
    this.view.focus();
  }
}
