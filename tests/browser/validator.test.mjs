// The IDE's generated validator (web/src/validate.gen.js, compiled from
// docs/protocol.schema.json by web/scripts/gen-protocol.mjs) gives ajv's
// verdict on every message: the valid ones of every type, and each of them
// broken one field at a time in every way a JSON value can be wrong. Needs no
// server or browser: `node --test tests/browser/`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import Ajv2020 from 'ajv/dist/2020.js';
import { validateServerMessage } from '../../web/src/validate.gen.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const schema = JSON.parse(readFileSync(join(root, 'docs', 'protocol.schema.json'), 'utf8'));
const ajv = new Ajv2020({ strict: true, allErrors: true });
ajv.addSchema(schema);
const reference = ajv.getSchema(`${schema.$id}#/$defs/ServerMessage`);

const VALID = [
  { type: 'hello', session: 'k3v9x2', language: 'python', seq: 0, running: null },
  { type: 'hello', session: 'k3v9x2', language: 'python', seq: 7, running: 'shell' },
  { type: 'started', seq: 1, kind: 'repl' },
  { type: 'output', seq: 2, data: '' },
  { type: 'output', seq: 2, data: 'YWRhDQpoaSBhZGENCg==' },
  { type: 'exit', seq: 4, kind: 'run', status: 'ok', exit_code: 0, signal: null, cpu_ms: 11, wall_ms: 2130, memory_bytes: 9437184 },
  { type: 'exit', seq: 3, kind: 'run', status: 'time_limit_wall', exit_code: null, signal: 'SIGKILL', cpu_ms: 1, wall_ms: 15000, memory_bytes: 0 },
  { type: 'files', seq: 5, files: [] },
  { type: 'files', seq: 5, files: [{ path: 'src', size: 0, is_dir: true }, { path: 'src/main.py', size: 35, is_dir: false }] },
  { type: 'gap', from: 1, to: 9 },
  { type: 'error', code: 'not_running', message: 'no process runs' },
  { type: 'pong' },
  { type: 'reconnect', delay_ms: 0 },
];

/** Values a field may wrongly hold (and some right ones: the verdicts must agree either way). */
const REPLACEMENTS = [
  null, true, false, 0, 1, -1, 1.5, 2 ** 53, '', 'x', 'ok', 'run', 'SIGKILL', 'YQ==', 'not base64!', 'a'.repeat(1025),
  'é', '😀', [], [1], [{ path: 'a', size: 1, is_dir: false }], [{ path: '', size: 1, is_dir: false }],
  [{ path: 'a', size: -1, is_dir: false }], [{ path: 'a', size: 1, is_dir: false, x: 1 }], {}, { a: 1 },
];

/** Every message broken (or changed) in one place. */
function* variants(msg) {
  yield msg;
  for (const key of Object.keys(msg)) {
    const { [key]: _, ...without } = msg;
    yield without;
    for (const v of REPLACEMENTS) yield { ...msg, [key]: v };
  }
  yield { ...msg, extra: 1 };
  if (Array.isArray(msg.files) && msg.files.length) {
    for (const v of REPLACEMENTS) yield { ...msg, files: [{ ...msg.files[0], path: v }] };
  }
}

test('the generated validator agrees with ajv on every variant of every message', () => {
  let n = 0;
  let accepted = 0;
  for (const msg of VALID) {
    assert.ok(reference(msg), `the reference accepts ${JSON.stringify(msg)}`);
    for (const v of variants(msg)) {
      const ours = validateServerMessage(v);
      assert.equal(ours.ok, reference(v), `${JSON.stringify(v)}: ours ${JSON.stringify(ours)}, ajv ${JSON.stringify(reference.errors)}`);
      if (ours.ok) accepted += 1;
      n += 1;
    }
  }
  assert.ok(n > 1000 && accepted >= VALID.length, `${n} variants, ${accepted} valid`);
});

test('non-objects and unknown types are rejected with a reason', () => {
  for (const v of [null, 1, 'hello', [], {}, { type: 'nope' }, { type: 'run' }, { type: 'ping' }]) {
    const r = validateServerMessage(v);
    assert.equal(r.ok, false, JSON.stringify(v));
    assert.equal(reference(v), false, JSON.stringify(v));
    assert.ok(!r.ok && r.errors.length > 0);
  }
});

test('a rejection names the field that is wrong', () => {
  const r = validateServerMessage({ ...VALID[5], cpu_ms: 1.5 });
  assert.equal(r.ok, false);
  assert.ok(!r.ok && r.errors.includes('/cpu_ms: must be integer'), JSON.stringify(r));
  const e = validateServerMessage({ type: 'error', code: 'Bad Code', message: 'x' });
  assert.ok(!e.ok && e.errors.some((m) => m.startsWith('/code: must be one of busy')), JSON.stringify(e));
});
