// @ts-check
// The python mode (a Lezer grammar), in a chunk of its own: modes.js imports it
// on demand.
export { python } from '@codemirror/lang-python';
