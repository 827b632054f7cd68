// @ts-check
// The rust mode (a Lezer grammar), in a chunk of its own: modes.js imports it
// on demand.
export { rust } from '@codemirror/lang-rust';
