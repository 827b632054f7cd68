// @ts-check
// The session WebSocket's messages (docs/protocol.md): the types generated
// from docs/protocol.schema.json, and the one gate every incoming frame
// passes before any code acts on it.
import { validateServerMessage } from './validate.gen.js';

/** @typedef {import('./protocol.gen').ServerMessage} ServerMessage */
/** @typedef {import('./protocol.gen').ClientMessage} ClientMessage */

/**
 * @typedef {{ok: true, message: ServerMessage} | {ok: false, errors: string[]}} Parsed
 */

/**
 * Parses one text frame and validates it against the schema's ServerMessage.
 * @param {unknown} data the frame (a string for a text frame)
 * @returns {Parsed}
 */
export function parseServerMessage(data) {
  if (typeof data !== 'string') return { ok: false, errors: ['not a text frame'] };
  let value;
  try {
    value = JSON.parse(data);
  } catch (e) {
    return { ok: false, errors: [`not JSON: ${e instanceof Error ? e.message : String(e)}`] };
  }
  return validateServerMessage(value);
}
