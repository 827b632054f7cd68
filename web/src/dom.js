// @ts-check
// The page's elements (index.html), looked up by id and checked for their kind.

/**
 * @template {HTMLElement} T
 * @param {string} id
 * @param {new () => T} kind
 * @returns {T}
 */
export function byId(id, kind) {
  const el = document.getElementById(id);
  if (!(el instanceof kind)) throw new Error(`index.html: #${id} is missing or not a ${kind.name}`);
  return el;
}

/** @param {string} id */
export const element = (id) => byId(id, HTMLElement);
/** @param {string} id */
export const button = (id) => byId(id, HTMLButtonElement);
