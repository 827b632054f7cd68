// @ts-check
// The java mode (a Lezer grammar), in a chunk of its own: modes.js imports it
// on demand.
export { java } from '@codemirror/lang-java';
