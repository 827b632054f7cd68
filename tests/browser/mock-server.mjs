// A stand-in for `evald serve` that speaks docs/protocol.md well enough to
// develop the IDE and its browser test without the real server: it serves
// web/dist/, the languages list (python, bash) and sessions whose processes
// run UNSANDBOXED on a PTY made by python3's pty module. For development on
// a trusted machine only; the browser test uses the real server unless
// EVALD_BROWSER_MOCK=1.
//
//   node tests/browser/mock-server.mjs 127.0.0.1:8090
import http from 'node:http';
import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, writeFileSync, rmSync, readdirSync, statSync, renameSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname, extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { WebSocketServer } from 'ws';

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, '..', '..', 'web', 'dist');
const LANGS = [
  { id: 'python', name: 'Python', version: '3.11.2', aliases: ['py'], compiled: false, repl: true, main: 'main.py', run: ['python3', '-u', 'main.py'], replCmd: ['python3', '-q', '-i'] },
  { id: 'bash', name: 'Bash', version: '5.2.15', aliases: ['sh'], compiled: false, repl: false, main: 'main.sh', run: ['bash', 'main.sh'] },
];
const PTY = 'import os,pty,sys\nos.environ["TERM"]="xterm-256color"\nsys.exit(os.waitstatus_to_exitcode(pty.spawn(sys.argv[1:])))';
const REPLAY_BYTES = 256 * 1024;

const sessions = new Map();

function err(res, status, code, message) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ error: { code, message } }));
}
function json(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}
function body(req) {
  return new Promise((ok) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => ok(Buffer.concat(chunks)));
  });
}
function badPath(p) {
  return !p || p.startsWith('/') || p.includes('\0') || p.split('/').some((c) => c === '' || c === '.' || c === '..');
}
function listFiles(dir, prefix = '') {
  const out = [];
  for (const name of readdirSync(join(dir, prefix)).sort()) {
    const rel = prefix ? `${prefix}/${name}` : name;
    const st = statSync(join(dir, rel));
    out.push({ path: rel, size: st.isDirectory() ? 0 : st.size, is_dir: st.isDirectory() });
    if (st.isDirectory()) out.push(...listFiles(dir, rel));
  }
  return out;
}

class Session {
  constructor(language) {
    this.id = randomBytes(6).toString('hex');
    this.language = language;
    this.dir = mkdtempSync(join(tmpdir(), 'evald-mock-'));
    this.seq = 0;
    this.events = []; // [{seq, json, bytes}]
    this.bytes = 0;
    this.dropped = 0; // highest seq dropped
    this.clients = new Set();
    this.proc = null;
    this.kind = null;
  }
  info() {
    return { id: this.id, language: this.language, running: this.kind, clients: this.clients.size, expires_in_s: 86400 };
  }
  emit(msg) {
    msg.seq = ++this.seq;
    const text = JSON.stringify(msg);
    this.events.push({ seq: msg.seq, text });
    this.bytes += text.length;
    while (this.bytes > REPLAY_BYTES && this.events.length > 1) {
      const e = this.events.shift();
      this.bytes -= e.text.length;
      this.dropped = e.seq;
    }
    for (const ws of this.clients) ws.send(text);
  }
  filesEvent() {
    this.emit({ type: 'files', files: listFiles(this.dir) });
  }
  start(kind, rows = 24, cols = 80) {
    const lang = LANGS.find((l) => l.id === this.language);
    const cmd = kind === 'run' ? lang.run : kind === 'shell' ? ['bash', '-i'] : lang.replCmd;
    const started = Date.now();
    // (rows and cols are ignored: pty.spawn keeps the default size)
    const q = spawn('python3', ['-c', PTY, ...cmd], { cwd: this.dir, stdio: 'pipe' });
    this.proc = q;
    this.kind = kind;
    this.emit({ type: 'started', kind });
    q.stdout.on('data', (d) => this.emit({ type: 'output', data: d.toString('base64') }));
    q.stderr.on('data', (d) => this.emit({ type: 'output', data: d.toString('base64') }));
    q.on('exit', (code, signal) => {
      this.proc = null;
      this.kind = null;
      this.emit({
        type: 'exit', kind, status: code === 0 ? 'ok' : 'runtime_error', exit_code: signal ? null : code,
        signal: signal || null, cpu_ms: 1, wall_ms: Date.now() - started, memory_bytes: 0,
      });
      this.filesEvent();
    });
  }
}

/** web/dist/ as evald serves it: `/` and every file by its name. */
function staticFile(res, path) {
  const name = path === '/' ? 'index.html' : path.slice(1);
  const file = join(dist, name);
  if (!/^[A-Za-z0-9_-][A-Za-z0-9._-]*$/.test(name) || !existsSync(file)) return err(res, 404, 'not_found', 'no such page');
  const type = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.css': 'text/css' }[extname(file)] ?? 'application/octet-stream';
  res.writeHead(200, { 'content-type': type });
  res.end(readFileSync(file));
}

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, 'http://x');
  const p = url.pathname;
  if (p === '/healthz/ready') return json(res, 200, { ready: true });
  if (p === '/api/v1/languages') return json(res, 200, LANGS.map(({ id, name, version, aliases, compiled, repl }) => ({ id, name, version, aliases, compiled, repl })));
  if (p === '/api/v1/sessions' && req.method === 'POST') {
    const b = JSON.parse((await body(req)).toString() || '{}');
    if (!LANGS.some((l) => l.id === b.language)) return err(res, 400, 'unknown_language', 'unknown language');
    const s = new Session(b.language);
    for (const f of b.files || []) {
      mkdirSync(dirname(join(s.dir, f.path)), { recursive: true });
      writeFileSync(join(s.dir, f.path), f.encoding === 'base64' ? Buffer.from(f.content, 'base64') : f.content);
    }
    sessions.set(s.id, s);
    return json(res, 201, { id: s.id, language: s.language, expires_in_s: 86400 });
  }
  const m = /^\/api\/v1\/sessions\/([^/]+)(\/files(?:\/(.*))?|\/rename)?$/.exec(p);
  if (!m) return staticFile(res, p);
  const s = sessions.get(m[1]);
  if (!s) return err(res, 404, 'session_not_found', 'no such session');
  if (!m[2]) {
    if (req.method === 'GET') return json(res, 200, s.info());
    if (req.method === 'PATCH') {
      const b = JSON.parse((await body(req)).toString());
      s.language = b.language;
      return json(res, 200, s.info());
    }
    if (req.method === 'DELETE') {
      sessions.delete(s.id);
      rmSync(s.dir, { recursive: true, force: true });
      res.writeHead(204).end();
      return;
    }
  }
  if (m[2] === '/rename') {
    const b = JSON.parse((await body(req)).toString());
    if (badPath(b.from) || badPath(b.to)) return err(res, 400, 'bad_path', 'bad path');
    mkdirSync(dirname(join(s.dir, b.to)), { recursive: true });
    renameSync(join(s.dir, b.from), join(s.dir, b.to));
    res.writeHead(204).end();
    return s.filesEvent();
  }
  if (m[2] === '/files') return json(res, 200, listFiles(s.dir));
  const fp = decodeURIComponent(m[3] || '');
  if (badPath(fp)) return err(res, 400, 'bad_path', 'bad path');
  const full = join(s.dir, fp);
  if (req.method === 'GET') {
    if (!existsSync(full)) return err(res, 404, 'file_not_found', 'no such file');
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    return res.end(readFileSync(full));
  }
  if (req.method === 'PUT') {
    const b = await body(req);
    mkdirSync(dirname(full), { recursive: true });
    writeFileSync(full, b);
    res.writeHead(204).end();
    return s.filesEvent();
  }
  if (req.method === 'DELETE') {
    rmSync(full, { force: true });
    res.writeHead(204).end();
    return s.filesEvent();
  }
  err(res, 405, 'method_not_allowed', 'method not allowed');
});

const wss = new WebSocketServer({ noServer: true });
server.on('upgrade', (req, socket, head) => {
  const url = new URL(req.url, 'http://x');
  const m = /^\/api\/v1\/sessions\/([^/]+)\/ws$/.exec(url.pathname);
  const s = m && sessions.get(m[1]);
  wss.handleUpgrade(req, socket, head, (ws) => {
    if (!s) return ws.close(4404, 'session not found');
    s.clients.add(ws);
    ws.on('close', () => s.clients.delete(ws));
    ws.send(JSON.stringify({ type: 'hello', session: s.id, language: s.language, seq: s.seq, running: s.kind }));
    const last = url.searchParams.has('last_seq') ? Number(url.searchParams.get('last_seq')) : s.seq;
    if (last < s.dropped) ws.send(JSON.stringify({ type: 'gap', from: last + 1, to: s.dropped }));
    for (const e of s.events) if (e.seq > last) ws.send(e.text);
    ws.on('message', (raw) => {
      let msg;
      try {
        msg = JSON.parse(raw.toString());
      } catch {
        return ws.close(4400, 'not JSON');
      }
      const error = (code, message) => ws.send(JSON.stringify({ type: 'error', code, message }));
      switch (msg.type) {
        case 'ping': return ws.send('{"type":"pong"}');
        case 'run': case 'shell': case 'repl':
          if (s.proc) return error('busy', 'a process is running');
          return s.start(msg.type, msg.rows, msg.cols);
        case 'stdin': if (!s.proc) return error('not_running', 'nothing runs'); return s.proc.stdin.write(msg.data);
        case 'eof': if (!s.proc) return error('not_running', 'nothing runs'); return s.proc.stdin.write('\x04');
        case 'resize': if (!s.proc) return error('not_running', 'nothing runs'); return;
        case 'signal':
          if (!s.proc) return error('not_running', 'nothing runs');
          if (msg.signal === 'INT') return s.proc.stdin.write('\x03');
          return s.proc.kill(`SIG${msg.signal}`);
        default: return ws.close(4400, 'unknown type');
      }
    });
  });
});

const [host, port] = (process.argv[2] || '127.0.0.1:8090').split(':');
server.listen(Number(port), host, () => console.log(`mock evald on http://${host}:${port}/`));
