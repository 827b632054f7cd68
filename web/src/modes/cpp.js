// @ts-check
// The cpp mode (a Lezer grammar), in a chunk of its own: modes.js imports it
// on demand.
export { cpp } from '@codemirror/lang-cpp';
