// @ts-check
// The HTTP side of docs/protocol.md: sessions, files, languages. The answers'
// types are declared, not validated (only the WebSocket's messages are).

/** @typedef {import('./state.js').Language} Language */
/** @typedef {import('./protocol.gen').FileEntry} FileEntry */
/** @typedef {import('./protocol.gen').ProcessKind} ProcessKind */
/** @typedef {{id: string, language: string, running?: ProcessKind | null, clients?: number, expires_in_s?: number}} SessionInfo */
/** @typedef {{path: string, content: string}} NewFile */

export class ApiError extends Error {
  /** @param {number} status @param {string} code @param {string} [message] */
  constructor(status, code, message) {
    super(message || code || `HTTP ${status}`);
    this.status = status;
    this.code = code;
  }
}

/**
 * @param {string} method
 * @param {string} path
 * @param {{json?: unknown, body?: Uint8Array, expect?: 'json' | 'bytes' | 'none'}} [options]
 * @returns {Promise<any>} the JSON answer (untyped here; each caller below declares its type), bytes, or null
 */
async function request(method, path, { json, body, expect = 'json' } = {}) {
  /** @type {RequestInit & {headers: Record<string, string>}} */
  const init = { method, headers: {} };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers['content-type'] = 'application/json';
  } else if (body !== undefined) {
    init.body = /** @type {BodyInit} */ (body);
    init.headers['content-type'] = 'application/octet-stream';
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, 'network', `network error: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (!res.ok) {
    let code = `http_${res.status}`;
    let message = `${method} ${path}: HTTP ${res.status}`;
    try {
      const j = await res.json();
      if (j && j.error) {
        code = j.error.code || code;
        message = j.error.message || message;
      }
    } catch {
      /* not JSON */
    }
    throw new ApiError(res.status, code, message);
  }
  if (expect === 'json') return res.status === 204 ? null : res.json();
  if (expect === 'bytes') return new Uint8Array(await res.arrayBuffer());
  return null;
}

/** Encodes a workspace path for a URL, component by component. @param {string} path */
export function encodePath(path) {
  return path.split('/').map(encodeURIComponent).join('/');
}

const S = '/api/v1/sessions';
/** @param {string} id */
const sess = (id) => `${S}/${encodeURIComponent(id)}`;

export const api = {
  /** @returns {Promise<Language[]>} */
  languages: () => request('GET', '/api/v1/languages'),
  /** @param {string} language @param {NewFile[]} [files] @returns {Promise<SessionInfo>} */
  createSession: (language, files) => request('POST', S, { json: files ? { language, files } : { language } }),
  /**
   * The session, or null when it does not exist (any more).
   * @param {string} id
   * @returns {Promise<SessionInfo | null>}
   */
  getSession: async (id) => {
    try {
      return await request('GET', sess(id));
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) return null;
      throw e;
    }
  },
  /** @param {string} id @param {string} language @returns {Promise<SessionInfo>} */
  patchSession: (id, language) => request('PATCH', sess(id), { json: { language } }),
  /** @param {string} id @returns {Promise<FileEntry[]>} */
  listFiles: (id) => request('GET', `${sess(id)}/files`),
  /** @param {string} id @param {string} path @returns {Promise<Uint8Array>} */
  readFile: (id, path) => request('GET', `${sess(id)}/files/${encodePath(path)}`, { expect: 'bytes' }),
  /** @param {string} id @param {string} path @param {string | Uint8Array} content @returns {Promise<void>} */
  writeFile: (id, path, content) =>
    request('PUT', `${sess(id)}/files/${encodePath(path)}`, {
      body: typeof content === 'string' ? new TextEncoder().encode(content) : content,
      expect: 'none',
    }),
  /** @param {string} id @param {string} path @returns {Promise<void>} */
  deleteFile: (id, path) => request('DELETE', `${sess(id)}/files/${encodePath(path)}`, { expect: 'none' }),
  /** @param {string} id @param {string} from @param {string} to @returns {Promise<void>} */
  rename: (id, from, to) => request('POST', `${sess(id)}/rename`, { json: { from, to }, expect: 'none' }),
};

/** @typedef {typeof api} Api */

/**
 * The batch path rules (docs/protocol.md): relative, no `..`, `.` or empty
 * components, no NUL, <= 1024 bytes.
 * @param {string} path
 * @returns {string | null} what is wrong, or null
 */
export function checkPath(path) {
  if (!path) return 'empty name';
  if (path.startsWith('/')) return 'must be relative';
  if (path.includes('\0')) return 'contains NUL';
  if (new TextEncoder().encode(path).length > 1024) return 'longer than 1024 bytes';
  for (const c of path.split('/')) {
    if (c === '' || c === '.' || c === '..') return 'no empty, "." or ".." parts';
  }
  return null;
}

/** The message of a caught value. @param {unknown} e */
export function errorMessage(e) {
  return e instanceof Error ? e.message : String(e);
}
