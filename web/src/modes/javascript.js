// @ts-check
// The javascript mode (a Lezer grammar), in a chunk of its own: modes.js imports it
// on demand.
export { javascript } from '@codemirror/lang-javascript';
