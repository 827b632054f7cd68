// @ts-check
// The go mode (a Lezer grammar), in a chunk of its own: modes.js imports it
// on demand.
export { go } from '@codemirror/lang-go';
