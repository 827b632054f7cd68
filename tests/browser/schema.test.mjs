// docs/protocol.schema.json against docs/protocol.md: the schema is valid
// JSON Schema 2020-12, names exactly the message types of the document's
// tables, accepts every message of its example exchange, and rejects
// malformed ones. Needs no server: `node --test tests/browser/`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import Ajv2020 from 'ajv/dist/2020.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const schema = JSON.parse(readFileSync(join(root, 'docs', 'protocol.schema.json'), 'utf8'));
const doc = readFileSync(join(root, 'docs', 'protocol.md'), 'utf8');

const ajv = new Ajv2020({ strict: true, allErrors: true });
const validate = ajv.compile(schema);
const client = ajv.getSchema(`${schema.$id}#/$defs/ClientMessage`);
const server = ajv.getSchema(`${schema.$id}#/$defs/ServerMessage`);

/** The message types in the first column of the table under a heading. */
function tableTypes(heading) {
  const start = doc.indexOf(heading);
  assert.ok(start >= 0, `protocol.md has "${heading}"`);
  const rest = doc.slice(start + heading.length);
  const end = rest.search(/\n#{2,3} /);
  const section = end >= 0 ? rest.slice(0, end) : rest;
  return [...section.matchAll(/^\| `([a-z_]+)` \|/gm)].map((m) => m[1]).sort();
}

const typesOf = (name) => schema.$defs[name].oneOf.map((r) => r.$ref.split('/').pop()).sort();

test('the schema lists exactly the message types of protocol.md', () => {
  assert.deepEqual(typesOf('ClientMessage'), tableTypes('### Client to server'));
  assert.deepEqual(typesOf('ServerMessage'), tableTypes('### Server to client'));
  for (const t of [...typesOf('ClientMessage'), ...typesOf('ServerMessage')]) {
    assert.equal(schema.$defs[t].properties.type.const, t, `$defs.${t} has type "${t}"`);
  }
});

test("the example exchange's messages are valid", () => {
  const example = doc.slice(doc.indexOf('## A complete exchange'));
  let n = 0;
  for (const line of example.split('\n')) {
    const m = /^(<-|->) (\{.*\})/.exec(line);
    if (!m || m[2].includes('...')) continue;
    const msg = JSON.parse(m[2]);
    const v = m[1] === '->' ? client : server;
    assert.ok(v(msg), `${line}\n${JSON.stringify(v.errors, null, 1)}`);
    n += 1;
  }
  assert.ok(n >= 8, `found ${n} example messages`);
});

test('valid messages of every type', () => {
  const good = [
    { type: 'run' }, { type: 'run', rows: 24, cols: 80 }, { type: 'shell', rows: 1, cols: 1000 }, { type: 'repl' },
    { type: 'stdin', data: 'ada\r' }, { type: 'eof' }, { type: 'resize', rows: 50, cols: 132 },
    { type: 'signal', signal: 'INT' }, { type: 'signal', signal: 'KILL' }, { type: 'ping' },
    { type: 'hello', session: 'k3v9x2', language: 'python', seq: 0, running: null },
    { type: 'hello', session: 'k3v9x2', language: 'python', seq: 7, running: 'shell' },
    { type: 'started', seq: 1, kind: 'repl' }, { type: 'output', seq: 2, data: '' }, { type: 'output', seq: 2, data: 'YQ==' },
    { type: 'exit', seq: 3, kind: 'run', status: 'time_limit_wall', exit_code: null, signal: 'SIGKILL', cpu_ms: 1, wall_ms: 15000, memory_bytes: 0 },
    { type: 'files', seq: 4, files: [] }, { type: 'files', seq: 4, files: [{ path: 'src', size: 0, is_dir: true }] },
    { type: 'gap', from: 1, to: 9 }, { type: 'error', code: 'not_running', message: 'no process runs' },
    { type: 'pong' }, { type: 'reconnect', delay_ms: 0 },
  ];
  for (const msg of good) assert.ok(validate(msg), `${JSON.stringify(msg)}: ${JSON.stringify(validate.errors)}`);
});

test('malformed messages are rejected', () => {
  const bad = [
    {}, { type: 'nope' }, { type: 'run', rows: 0 }, { type: 'run', cols: 1001 }, { type: 'run', extra: 1 },
    { type: 'stdin' }, { type: 'stdin', data: 5 }, { type: 'resize', rows: 10 }, { type: 'signal', signal: 'HUP' },
    { type: 'hello', session: 'x', language: 'python', seq: -1, running: null },
    { type: 'hello', session: 'x', language: 'python', seq: 0, running: 'build' },
    { type: 'started', seq: 0, kind: 'run' }, { type: 'output', seq: 1, data: 'not base64!' },
    { type: 'exit', seq: 3, kind: 'run', status: 'fine', exit_code: 0, signal: null, cpu_ms: 1, wall_ms: 1, memory_bytes: 0 },
    { type: 'exit', seq: 3, kind: 'run', status: 'ok', exit_code: 0, signal: null, cpu_ms: 1, wall_ms: 1 },
    { type: 'files', seq: 4, files: [{ path: 'a' }] }, { type: 'gap', from: 0, to: 1 },
    { type: 'error', code: 'Bad Code', message: 'x' }, { type: 'reconnect' }, { type: 'reconnect', delay_ms: -5 },
  ];
  for (const msg of bad) assert.ok(!validate(msg), `accepted ${JSON.stringify(msg)}`);
});
