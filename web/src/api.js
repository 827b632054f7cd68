// The HTTP side of docs/protocol.md: sessions, files, languages.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || code || `HTTP ${status}`);
    this.status = status;
    this.code = code;
  }
}

async function request(method, path, { json, body, expect = 'json' } = {}) {
  const init = { method, headers: {} };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers['content-type'] = 'application/json';
  } else if (body !== undefined) {
    init.body = body;
    init.headers['content-type'] = 'application/octet-stream';
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, 'network', `network error: ${e.message}`);
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

/** Encodes a workspace path for a URL, component by component. */
export function encodePath(path) {
  return path.split('/').map(encodeURIComponent).join('/');
}

const S = '/api/v1/sessions';

export const api = {
  languages: () => request('GET', '/api/v1/languages'),
  createSession: (language, files) => request('POST', S, { json: files ? { language, files } : { language } }),
  /** The session, or null when it does not exist (any more). */
  getSession: async (id) => {
    try {
      return await request('GET', `${S}/${encodeURIComponent(id)}`);
    } catch (e) {
      if (e.status === 404) return null;
      throw e;
    }
  },
  patchSession: (id, language) => request('PATCH', `${S}/${encodeURIComponent(id)}`, { json: { language } }),
  listFiles: (id) => request('GET', `${S}/${encodeURIComponent(id)}/files`),
  readFile: (id, path) => request('GET', `${S}/${encodeURIComponent(id)}/files/${encodePath(path)}`, { expect: 'bytes' }),
  writeFile: (id, path, content) =>
    request('PUT', `${S}/${encodeURIComponent(id)}/files/${encodePath(path)}`, {
      body: typeof content === 'string' ? new TextEncoder().encode(content) : content,
      expect: 'none',
    }),
  deleteFile: (id, path) =>
    request('DELETE', `${S}/${encodeURIComponent(id)}/files/${encodePath(path)}`, { expect: 'none' }),
  rename: (id, from, to) => request('POST', `${S}/${encodeURIComponent(id)}/rename`, { json: { from, to }, expect: 'none' }),
};

/** The batch path rules (docs/protocol.md): relative, no `..`, `.` or empty components, no NUL, <= 1024 bytes. */
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
