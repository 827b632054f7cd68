// Browser test of the evald IDE (issue 4): Debian's chromium, driven by
// playwright-core, against a real `evald serve`.
//
//   apt-get install -y chromium              # /usr/bin/chromium (never downloaded)
//   cargo build --release -p evald           # target/release/evald
//   (cd tests/browser && npm ci)
//   node --test tests/browser/
//
// Environment: EVALD_BIN (default target/release/evald), CHROMIUM (default
// /usr/bin/chromium), EVALD_BROWSER_MOCK=1 to test against
// tests/browser/mock-server.mjs instead of the real server (development only).
// Artifacts: target/artifacts/ide.png (and ide-failure.png, browser-server.log).
// Every wait is a condition wait with a bounded timeout; there is no fixed sleep.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer, connect } from 'node:net';
import { mkdirSync, mkdtempSync, rmSync, openSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..', '..');
const artifacts = join(root, 'target', 'artifacts');
const MOCK = process.env.EVALD_BROWSER_MOCK === '1';
const BIN = process.env.EVALD_BIN || join(root, 'target', 'release', 'evald');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const STATE_DIR = `/tmp/evald-browser-${process.pid}`;

const T = {
  ready: 60_000, // server start (language detection included)
  ui: 20_000, // page reacts
  run: 30_000, // a program starts and prints
  reconnect: 30_000, // backoff is at most 15.5 s per attempt
};

const PROGRAM = 'name = input("name? ")\nprint(f"hello, {name}!")\n';

let server = null;
let serverExit = null;
let base = null; // the server, through the proxy
let proxy = null;
let browser = null;
let userDataDir = null;

/**
 * A TCP proxy between the browser and the server, so that the test can cut
 * every connection like a network failure without restarting the server
 * (whose workspaces do not outlive the process).
 */
function startProxy(targetPort) {
  const pairs = new Set();
  const proxy = createServer((client) => {
    const upstream = connect(targetPort, '127.0.0.1');
    const pair = { client, upstream };
    pairs.add(pair);
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  return new Promise((ok) =>
    proxy.listen(0, '127.0.0.1', () =>
      ok({
        port: proxy.address().port,
        /** Resets every open connection (the browser sees them die). */
        cut() {
          const n = pairs.size;
          for (const { client, upstream } of pairs) {
            client.resetAndDestroy();
            upstream.destroy();
          }
          pairs.clear();
          return n;
        },
        close: () => new Promise((r) => proxy.close(r)),
      }),
    ),
  );
}

function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.unref();
    s.on('error', fail);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

/** Polls `check` (async, truthy = done) until it holds or `ms` pass. */
async function until(what, ms, check) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what} (last: ${last})`);
    // Wait for the next poll, or for the server to die (whichever is first).
    await Promise.race([new Promise((r) => setTimeout(r, 100)), serverExit ?? new Promise(() => {})]);
    if (server && server.exitCode !== null) throw new Error(`the server exited (${server.exitCode}) while waiting for ${what}`);
  }
}

before(async () => {
  mkdirSync(artifacts, { recursive: true });
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  const log = openSync(join(artifacts, 'browser-server.log'), 'w');
  if (MOCK) {
    server = spawn(process.execPath, [join(here, 'mock-server.mjs'), `127.0.0.1:${port}`], { stdio: ['ignore', log, log] });
  } else {
    assert.ok(existsSync(BIN), `${BIN} is missing: cargo build --release first (or set EVALD_BIN)`);
    mkdirSync(STATE_DIR, { recursive: true });
    server = spawn(BIN, ['serve', '--listen', `127.0.0.1:${port}`], {
      stdio: ['ignore', log, log],
      env: {
        ...process.env,
        EVALD_INSTANCE: `browser-${process.pid}`,
        EVALD_STATE_DIR: STATE_DIR,
        EVALD_LANGUAGES: join(root, 'languages'),
      },
    });
  }
  serverExit = new Promise((r) => server.once('exit', r));
  await until('GET /healthz/ready = 200', T.ready, async () => (await fetch(`${base}/healthz/ready`)).status === 200);
  proxy = await startProxy(port);
  base = `http://127.0.0.1:${proxy.port}`;

  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install chromium`);
  userDataDir = mkdtempSync(join(tmpdir(), 'evald-chromium-'));
  browser = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    viewport: { width: 1280, height: 800 },
  });
});

after(async () => {
  if (browser) await browser.close().catch(() => {});
  if (proxy) await proxy.close();
  if (server && server.exitCode === null) {
    server.kill('SIGTERM');
    const t = setTimeout(() => server.kill('SIGKILL'), 10_000);
    await serverExit;
    clearTimeout(t);
  }
  if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
  try {
    rmSync(STATE_DIR, { recursive: true, force: true });
  } catch {
    /* a mount the server left behind; the next run uses another pid */
  }
});

const termText = (page) => page.evaluate(() => window.__evald.terminalText());

/** Waits until the terminal shows `text`. */
async function terminalShows(page, text, ms = T.run) {
  try {
    await page.waitForFunction((t) => window.__evald?.terminalText().includes(t), text, { timeout: ms });
  } catch (e) {
    throw new Error(`the terminal did not show ${JSON.stringify(text)} within ${ms} ms; it shows:\n${await termText(page)}`);
  }
}

/** Clicks Run and waits until that run has started (the terminal is cleared on start). */
async function run(page) {
  const before = await page.evaluate(() => window.__evald.started);
  await page.locator('#run:not([disabled])').click({ timeout: T.ui });
  await page.waitForFunction((n) => window.__evald.started > n, before, { timeout: T.run });
}

/** Waits until #conn has one of the states. */
async function connIs(page, states, ms) {
  try {
    await page.waitForFunction((s) => s.includes(document.getElementById('conn')?.dataset.state), states, { timeout: ms });
  } catch (e) {
    const now = await page.locator('#conn').textContent();
    throw new Error(`#conn did not become ${states.join('/')} within ${ms} ms (it is ${now})`);
  }
}

const step = (what) => console.log(`${new Date().toISOString().slice(11, 23)} ${what}`);

test('the IDE: edit, run interactively, files, reload, reconnect', { timeout: 240_000 }, async () => {
  const page = browser.pages()[0] ?? (await browser.newPage());
  const consoleErrors = [];
  page.on('pageerror', (e) => consoleErrors.push(String(e)));
  try {
    step('open the IDE');
    // Open the IDE: a session is created and the socket connects.
    await page.goto(`${base}/`);
    await connIs(page, ['connected'], T.ui);
    await page.locator('#files [data-path="main.py"]').waitFor({ timeout: T.ui });
    const sessionId = await page.evaluate(() => window.__evald.state.sessionId);
    assert.ok(sessionId, 'a session id');
    assert.equal(new URL(page.url()).hash, `#s=${sessionId}`);

    step('pick python');
    // Pick Python (the default already, but through the picker as a user would).
    await page.locator('#language option[value="python"]').waitFor({ state: 'attached', timeout: T.ui });
    await page.selectOption('#language', 'python');
    await page.waitForFunction(() => window.__evald.state.openPath === 'main.py', null, { timeout: T.ui });

    step('type the program');
    // Type the program into the editor, replacing the starter.
    await page.locator('#editor .cm-content').click();
    await page.keyboard.press('Control+A');
    await page.keyboard.press('Delete');
    await page.keyboard.insertText(PROGRAM);
    assert.equal(await page.evaluate(() => window.__evald.editorText()), PROGRAM);

    step('run');
    // Run; the program prompts; type the name into the terminal; the greeting.
    await run(page);
    await terminalShows(page, 'name? ');
    await page.locator('#terminal').click();
    await page.keyboard.type('ada');
    await page.keyboard.press('Enter');
    await terminalShows(page, 'hello, ada!');
    await page.waitForFunction(() => document.getElementById('last-exit').dataset.status === 'ok', null, { timeout: T.run });
    assert.match(await page.locator('#last-exit').textContent(), /exit: ok · code 0/);

    step('new file');
    // A second file through the inline new-file input.
    await page.locator('#new-file').click();
    await page.locator('#new-file-name').fill('notes.txt');
    await page.locator('#new-file-name').press('Enter');
    await page.locator('#files [data-path="notes.txt"]').waitFor({ timeout: T.ui });
    await page.waitForFunction(() => window.__evald.state.openPath === 'notes.txt', null, { timeout: T.ui });

    step('reload');
    // Reload: the same session, both files, the program as saved.
    await page.reload();
    await connIs(page, ['connected'], T.ui);
    assert.equal(await page.evaluate(() => window.__evald.state.sessionId), sessionId);
    await page.locator('#files [data-path="main.py"]').waitFor({ timeout: T.ui });
    await page.locator('#files [data-path="notes.txt"]').waitFor({ timeout: T.ui });
    await page.waitForFunction((p) => window.__evald.editorText() === p, PROGRAM, { timeout: T.ui });

    step('offline');
    // Drop the connection (the browser goes offline): the page says so, then
    // reconnects by itself once the network is back, resuming the output.
    const seqBefore = await page.evaluate(() => window.__evald.lastSeq);
    await browser.setOffline(true);
    await connIs(page, ['disconnected', 'reconnecting'], T.ui);
    await page.locator('#banner').waitFor({ state: 'visible', timeout: T.ui });
    assert.match(await page.locator('#banner-text').textContent(), /disconnected — reconnecting in \d+s/);
    step('online');
    await browser.setOffline(false);
    await connIs(page, ['connected'], T.reconnect);
    assert.ok((await page.evaluate(() => window.__evald.lastSeq)) >= seqBefore, 'resumed from the last sequence number');

    // A real drop: every TCP connection of the page is reset under it.
    step('cut the connection');
    const logBefore = (await page.evaluate(() => window.__evald.connLog())).length;
    assert.ok(proxy.cut() >= 1, 'the page had a connection to cut');
    await page.waitForFunction((n) => window.__evald.connLog().slice(n).some((e) => e.state === 'disconnected'), logBefore, {
      timeout: T.ui,
    });
    await page.waitForFunction(
      (n) => {
        const log = window.__evald.connLog().slice(n);
        return log.length >= 2 && log[log.length - 1].state === 'connected';
      },
      logBefore,
      { timeout: T.reconnect },
    );
    await connIs(page, ['connected'], T.ui);
    await terminalShows(page, 'hello, ada!'); // the output is still there (nothing replayed twice)
    assert.equal((await termText(page)).split('hello, ada!').length - 1, 1, 'the greeting once');

    step('run again');
    // The reconnected session works: run again.
    await run(page);
    await terminalShows(page, 'name? ');
    await page.locator('#terminal').click();
    await page.keyboard.type('bob');
    await page.keyboard.press('Enter');
    await terminalShows(page, 'hello, bob!');

    step('screenshot');
    await page.screenshot({ path: join(artifacts, 'ide.png') });
    assert.deepEqual(consoleErrors, [], 'no uncaught page errors');
  } catch (e) {
    await page.screenshot({ path: join(artifacts, 'ide-failure.png') }).catch(() => {});
    throw e;
  }
});

test('editor modes load on demand; invalid server messages are counted and ignored', { timeout: 120_000 }, async () => {
  const page = await browser.newPage();
  const pageErrors = [];
  const warnings = [];
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  page.on('console', (m) => {
    if (m.type() === 'warning') warnings.push(m.text());
  });
  // Every request reaches the network (no cache from the first test), in order.
  const cdp = await browser.newCDPSession(page);
  await cdp.send('Network.enable');
  await cdp.send('Network.setCacheDisabled', { cacheDisabled: true });
  // Scripts requested, in order (recorded synchronously, so before the page can use them).
  const scripts = [];
  page.on('request', (request) => {
    const path = new URL(request.url()).pathname;
    if (path.endsWith('.js')) scripts.push({ path, request, status: null });
  });
  page.on('response', (response) => {
    const s = scripts.find((e) => e.request === response.request());
    if (s) s.status = response.status();
  });
  try {
    step('open the IDE (a Python file)');
    await page.goto(`${base}/`);
    await connIs(page, ['connected'], T.ui);
    await page.waitForFunction(() => window.__evald.state.openPath === 'main.py', null, { timeout: T.ui });
    await page.waitForFunction(() => window.__evald.editorMode() === 'python', null, { timeout: T.ui });
    // The first load: the core (app.js and the chunks it imports) and Python's mode, no other mode.
    const initial = scripts.map((e) => e.path);
    assert.ok(initial.includes('/app.js'), `app.js loaded: ${initial}`);
    assert.ok(initial.some((p) => /^\/python-[A-Z0-9]{8}\.js$/.test(p)), `the Python mode loaded: ${initial}`);
    for (const p of initial) assert.match(p, /^\/(app|chunk-[A-Z0-9]{8}|python-[A-Z0-9]{8})\.js$/, 'only the core and Python at first');
    await highlighted(page, '^(print|"name\\? ")$'); // PROGRAM, as the first test left it

    step('open a C file');
    const mark = scripts.length;
    await page.locator('#new-file').click();
    await page.locator('#new-file-name').fill('main.c');
    await page.locator('#new-file-name').press('Enter');
    await page.waitForFunction(() => window.__evald.state.openPath === 'main.c', null, { timeout: T.ui });
    await page.waitForFunction(() => window.__evald.editorMode() === 'c', null, { timeout: T.ui });
    await page.evaluate(() => window.__evald.setEditorText('#include <stdio.h>\n\nint main(void) {\n    return 0;\n}\n'));
    await highlighted(page, '^(int|return)$');
    const later = scripts.slice(mark);
    assert.ok(!scripts.slice(0, mark).some((e) => e.path.startsWith('/clike-')), 'no C mode before a C file was opened');
    const paths = (list) => list.map((e) => `${e.path} ${e.status}`).join(', ');
    assert.ok(
      later.some((e) => /^\/clike-[A-Z0-9]{8}\.js$/.test(e.path) && e.status === 200),
      `the C mode's chunk fetched on opening main.c: ${paths(later)}`,
    );

    step('invalid server messages');
    const seen = () =>
      page.evaluate(() => ({
        invalid: window.__evald.invalidMessages,
        lastSeq: window.__evald.lastSeq,
        lastExit: document.getElementById('last-exit').textContent,
        message: document.getElementById('message').textContent,
      }));
    const before = await seen();
    const frames = [
      // cpu_ms must be a whole number; the seq is far ahead (it would move lastSeq if it were used).
      { type: 'exit', seq: 1e9, kind: 'run', status: 'ok', exit_code: 0, signal: null, cpu_ms: 1.5, wall_ms: 2, memory_bytes: 0 },
      { type: 'error', code: 'Bad Code', message: 'an invalid message' }, // not a code of the schema
      { type: 'output', seq: 1e9, data: 'not base64!' },
      { type: 'hello', session: 'x', language: 'c', seq: 0, running: 'build' },
    ];
    for (const f of frames) await page.evaluate((t) => window.__evald.receive(t), JSON.stringify(f));
    await page.evaluate(() => window.__evald.receive('not JSON'));
    const after = await seen();
    assert.deepEqual(after, { ...before, invalid: before.invalid + frames.length + 1 }, 'counted, and nothing else changed');
    assert.equal(await page.evaluate(() => window.__evald.state.language), 'python', 'the invalid hello did not switch the language');
    assert.equal(warnings.filter((w) => w.includes('invalid server message')).length, frames.length + 1, warnings.join('\n'));

    // A valid message through the same hook is acted on.
    await page.evaluate(() => window.__evald.receive('{"type":"error","code":"busy","message":"a valid message"}'));
    assert.equal(await page.locator('#message').textContent(), 'busy: a valid message');
    assert.equal(await page.evaluate(() => window.__evald.invalidMessages), after.invalid);
    assert.deepEqual(pageErrors, [], 'no uncaught page errors');
  } catch (e) {
    await page.screenshot({ path: join(artifacts, 'modes-failure.png') }).catch(() => {});
    throw e;
  } finally {
    await page.close();
  }
});

/** Waits until the editor shows a token matching `pattern` highlighted (coloured unlike plain text). */
async function highlighted(page, pattern) {
  try {
    await page.waitForFunction(
      (p) => {
        const content = document.querySelector('#editor .cm-content');
        const plain = content && getComputedStyle(content).color;
        return [...document.querySelectorAll('#editor .cm-line span')].some(
          (s) => new RegExp(p).test(s.textContent) && getComputedStyle(s).color !== plain,
        );
      },
      pattern,
      { timeout: T.ui },
    );
  } catch {
    const html = await page.locator('#editor .cm-content').innerHTML();
    throw new Error(`the editor did not highlight /${pattern}/: ${html.slice(0, 2000)}`);
  }
}
