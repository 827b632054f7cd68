// Measures what a first load of the IDE downloads, with a Python file open:
// every request of a fresh browser profile (empty cache) until the socket is
// connected, main.py is in the editor and the network has been idle for
// 500 ms (the favicon left out). Prints one line per request and the totals; the figures in
// web/README.md ("Sizes") come from it.
//
//   target/release/evald serve --listen 127.0.0.1:8090 &   # (a server with a languages/ catalogue)
//   node tests/browser/measure-load.mjs http://127.0.0.1:8090
//
// Bytes are Chromium's own counts (DevTools protocol): `body` is the decoded
// body, `wire` what crossed the connection (headers included). The server
// sends no compression.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const base = process.argv[2];
if (!base) {
  console.error('usage: node tests/browser/measure-load.mjs http://127.0.0.1:PORT');
  process.exit(2);
}
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

const profile = mkdtempSync(join(tmpdir(), 'evald-measure-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: CHROMIUM,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update'],
});
try {
  const page = context.pages()[0] ?? (await context.newPage());
  const cdp = await context.newCDPSession(page);
  await cdp.send('Network.enable');
  await cdp.send('Network.setCacheDisabled', { cacheDisabled: true });
  /** @type {Map<string, {url: string, type: string, body: number, wire: number}>} */
  const requests = new Map();
  cdp.on('Network.requestWillBeSent', (e) => {
    requests.set(e.requestId, { url: e.request.url, type: e.type ?? '', body: 0, wire: 0 });
  });
  cdp.on('Network.dataReceived', (e) => {
    const r = requests.get(e.requestId);
    if (r) r.body += e.dataLength;
  });
  cdp.on('Network.loadingFinished', (e) => {
    const r = requests.get(e.requestId);
    if (r) r.wire = e.encodedDataLength;
  });

  await page.goto(`${base}/`);
  await page.waitForFunction(
    () => document.getElementById('conn')?.dataset.state === 'connected' && window.__evald?.state.openPath === 'main.py',
    null,
    { timeout: 60_000 },
  );
  // With modes loaded on demand, wait for Python's too (absent in older builds).
  await page.waitForFunction(() => !window.__evald.editorMode || window.__evald.editorMode() === 'python', null, {
    timeout: 60_000,
  });
  await page.waitForLoadState('networkidle');

  // Chromium asks for /favicon.ico (a 404 here) once or twice, as it pleases: left out.
  const rows = [...requests.values()].filter((r) => !r.url.startsWith('data:') && new URL(r.url).pathname !== '/favicon.ico');
  const isAsset = (r) => !new URL(r.url).pathname.startsWith('/api/');
  let total = { body: 0, wire: 0 };
  let assets = { body: 0, wire: 0 };
  for (const r of rows) {
    console.log(`${String(r.body).padStart(9)} ${String(r.wire).padStart(9)}  ${r.type.padEnd(10)} ${new URL(r.url).pathname}`);
    total = { body: total.body + r.body, wire: total.wire + r.wire };
    if (isAsset(r)) assets = { body: assets.body + r.body, wire: assets.wire + r.wire };
  }
  console.log(`assets (page, scripts, styles): ${rows.filter(isAsset).length} requests, body ${assets.body} bytes, wire ${assets.wire} bytes`);
  console.log(`everything (API calls included): ${rows.length} requests, body ${total.body} bytes, wire ${total.wire} bytes`);
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
