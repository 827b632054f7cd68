// @ts-check
// The editor's language modes, by file extension, each loaded on demand: every
// `import()` below is a chunk of its own (esbuild --splitting), fetched the
// first time a file of that kind is opened, so the first load of the page
// carries only the core.
import { StreamLanguage } from '@codemirror/language';

/** @typedef {import('@codemirror/state').Extension} Extension */
/** @typedef {import('@codemirror/language').StreamParser<unknown>} StreamParser */

/**
 * A legacy (stream) mode, as an extension.
 * @param {Promise<StreamParser>} parser
 * @returns {Promise<Extension>}
 */
const legacy = async (parser) => StreamLanguage.define(await parser);

const python = () => import('./modes/python.js').then((m) => m.python());
/** @param {{jsx?: boolean, typescript?: boolean}} [o] */
const javascript = (o) => import('./modes/javascript.js').then((m) => m.javascript(o));
const cpp = () => import('./modes/cpp.js').then((m) => m.cpp());
const java = () => import('./modes/java.js').then((m) => m.java());
const rust = () => import('./modes/rust.js').then((m) => m.rust());
const go = () => import('./modes/go.js').then((m) => m.go());

const clike = () => import('@codemirror/legacy-modes/mode/clike');
const shell = () => legacy(import('@codemirror/legacy-modes/mode/shell').then((m) => m.shell));
const lisp = () => legacy(import('@codemirror/legacy-modes/mode/commonlisp').then((m) => m.commonLisp));
const scheme = () => legacy(import('@codemirror/legacy-modes/mode/scheme').then((m) => m.scheme));
const fortran = () => legacy(import('@codemirror/legacy-modes/mode/fortran').then((m) => m.fortran));
const cobol = () => legacy(import('@codemirror/legacy-modes/mode/cobol').then((m) => m.cobol));
const perl = () => legacy(import('@codemirror/legacy-modes/mode/perl').then((m) => m.perl));
const kotlin = () => legacy(clike().then((m) => m.kotlin));
const yaml = () => legacy(import('@codemirror/legacy-modes/mode/yaml').then((m) => m.yaml));
const ocaml = () => legacy(import('@codemirror/legacy-modes/mode/mllike').then((m) => m.oCaml));

/** @type {Readonly<Record<string, () => Promise<Extension>>>} */
const BY_EXT = {
  py: python, pyw: python,
  js: javascript, mjs: javascript, cjs: javascript, json: javascript,
  ts: () => javascript({ typescript: true }),
  jsx: () => javascript({ jsx: true }),
  tsx: () => javascript({ jsx: true, typescript: true }),
  c: () => legacy(clike().then((m) => m.c)),
  h: cpp, cc: cpp, cpp: cpp, cxx: cpp, hpp: cpp,
  java, rs: rust, go,
  cs: () => legacy(clike().then((m) => m.csharp)),
  kt: kotlin, kts: kotlin,
  scala: () => legacy(clike().then((m) => m.scala)),
  sh: shell, bash: shell, zsh: shell, fish: shell,
  rb: () => legacy(import('@codemirror/legacy-modes/mode/ruby').then((m) => m.ruby)),
  lua: () => legacy(import('@codemirror/legacy-modes/mode/lua').then((m) => m.lua)),
  pl: perl, pm: perl,
  hs: () => legacy(import('@codemirror/legacy-modes/mode/haskell').then((m) => m.haskell)),
  ml: ocaml, mli: ocaml,
  fs: () => legacy(import('@codemirror/legacy-modes/mode/mllike').then((m) => m.fSharp)),
  clj: () => legacy(import('@codemirror/legacy-modes/mode/clojure').then((m) => m.clojure)),
  lisp, el: lisp,
  scm: scheme, rkt: scheme,
  erl: () => legacy(import('@codemirror/legacy-modes/mode/erlang').then((m) => m.erlang)),
  f90: fortran, f95: fortran, f: fortran,
  pas: () => legacy(import('@codemirror/legacy-modes/mode/pascal').then((m) => m.pascal)),
  r: () => legacy(import('@codemirror/legacy-modes/mode/r').then((m) => m.r)),
  tcl: () => legacy(import('@codemirror/legacy-modes/mode/tcl').then((m) => m.tcl)),
  d: () => legacy(import('@codemirror/legacy-modes/mode/d').then((m) => m.d)),
  groovy: () => legacy(import('@codemirror/legacy-modes/mode/groovy').then((m) => m.groovy)),
  cr: () => legacy(import('@codemirror/legacy-modes/mode/crystal').then((m) => m.crystal)),
  coffee: () => legacy(import('@codemirror/legacy-modes/mode/coffeescript').then((m) => m.coffeeScript)),
  cob: cobol, cbl: cobol,
  m: () => legacy(import('@codemirror/legacy-modes/mode/octave').then((m) => m.octave)),
  bf: () => legacy(import('@codemirror/legacy-modes/mode/brainfuck').then((m) => m.brainfuck)),
  sql: () => legacy(import('@codemirror/legacy-modes/mode/sql').then((m) => m.sqlite)),
  toml: () => legacy(import('@codemirror/legacy-modes/mode/toml').then((m) => m.toml)),
  yaml, yml: yaml,
};

/**
 * The loader of a path's mode, or null when its extension has none.
 * @param {string | null} path
 * @returns {(() => Promise<Extension>) | null}
 */
export function modeLoaderFor(path) {
  const ext = (path || '').split('/').pop()?.split('.').slice(1).pop()?.toLowerCase();
  return (ext && Object.hasOwn(BY_EXT, ext) && BY_EXT[ext]) || null;
}
