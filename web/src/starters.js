// @ts-check
// The starter of a new workspace: a language's main file and hello program
// (starters.gen.js, generated from languages/*.toml).
import { STARTERS } from './starters.gen.js';

/**
 * @param {string | null} languageId
 * @returns {{main: string, content: string}}
 */
export function starterOf(languageId) {
  const s = languageId !== null && Object.hasOwn(STARTERS, languageId) ? STARTERS[languageId] : undefined;
  if (s) return { main: s.main, content: s.hello ?? '' };
  return { main: 'main.txt', content: '' };
}
