// End-to-end test of the web console in a real headless Chromium.
//
//   node tests/console/e2e.mjs http://127.0.0.1:4567
//
// The server must hold the stream crates/cli/tests/cli/console.rs seeds:
// SHARDLOG_STREAM (default console-demo), created with two shards, shard 0
// split and the upper child merged with shard 1, and four records in shard 0
// (JSON, binary, text, JSON). The script checks the pages against that;
// splits an open shard and merges two of the new shards, raises retention
// to 48 hours and creates and deletes a stream, all through the UI; and
// prints {"split": "<shard id>", "merged": [a, b]} as its last line so the
// caller can check the changes through the API.
// SHARDLOG_SCREENSHOTS=DIR saves streams.png, stream.png and records.png.

import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const base = process.argv[2];
if (!base) {
  console.error('usage: node e2e.mjs http://HOST:PORT');
  process.exit(2);
}
const stream = process.env.SHARDLOG_STREAM || 'console-demo';
const recordsShard = 'shardId-000000000000';
const shots = process.env.SHARDLOG_SCREENSHOTS;
const chromiumPath = process.env.SHARDLOG_CHROMIUM || '/usr/bin/chromium';

function check(cond, message) {
  if (!cond) throw new Error(`check failed: ${message}`);
}

const tid = (id, extra = '') => `[data-testid="${id}"]${extra}`;

const userDir = mkdtempSync(join(tmpdir(), 'shardlog-console-'));
const context = await chromium.launchPersistentContext(userDir, {
  executablePath: chromiumPath,
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  viewport: { width: 1280, height: 900 },
});
// Script errors and CSP violations fail the test; failed API calls (the 400
// this test provokes on purpose) are part of the page's normal life.
const problems = [];
const page = context.pages()[0] || (await context.newPage());
page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
page.on('console', (m) => {
  if (m.type() === 'error' && /Content Security Policy|SyntaxError|TypeError|ReferenceError/.test(m.text())) problems.push(`console: ${m.text()}`);
});
const shot = async (name) => {
  if (!shots) return;
  mkdirSync(shots, { recursive: true });
  await page.screenshot({ path: join(shots, name), fullPage: true });
};

try {
  // 1. Streams list.
  await page.goto(`${base}/console`);
  const row = page.locator(tid('stream-row', `[data-stream="${stream}"]`));
  await row.waitFor();
  check((await row.locator(tid('stream-open')).textContent()) === '2', 'two open shards listed');
  check((await row.locator(tid('stream-closed')).textContent()) === '3', 'three closed shards listed');
  // Rates need two /metrics samples; wait for them before the screenshot.
  await page.waitForFunction((name) => {
    const cell = document.querySelector(`[data-testid="stream-row"][data-stream="${name}"] [data-testid="stream-rps"]`);
    return cell && cell.textContent !== '…' && cell.textContent !== '';
  }, stream);
  check(/\d/.test(await row.locator(tid('stream-disk')).textContent()), 'bytes on disk shown');
  await shot('streams.png');

  // API errors reach the page: creating a stream that exists.
  await page.fill(tid('create-name'), stream);
  await page.click(tid('create-submit'));
  await page.click(tid('confirm-ok'));
  await page.locator(tid('error-type')).waitFor();
  check((await page.locator(tid('error-type')).textContent()) === 'ResourceInUseException', 'error type shown');
  check((await page.locator(tid('error-message')).textContent()).length > 0, 'error message shown');

  // 2. Stream page: the bar and the lineage show one split and one merge.
  await row.locator(tid('stream-link')).click();
  await page.locator(tid('shard-bar')).waitFor();
  check((await page.locator(tid('error')).isHidden()), 'navigation clears the error');
  const rects = page.locator(tid('shard-rect'));
  check((await rects.count()) === 5, `five shards in the bar, got ${await rects.count()}`);
  check((await page.locator(tid('shard-rect', '[data-state=open]')).count()) === 2, 'two open shards in the bar');
  check((await page.locator(tid('shard-rect', '[data-state=closed]')).count()) === 3, 'three closed shards in the bar');
  const edges = await page.locator(tid('lineage-edge')).evaluateAll((els) => els.map((e) => [e.dataset.from, e.dataset.to]));
  check(edges.length === 4, `four lineage edges, got ${JSON.stringify(edges)}`);
  const count = (i) => edges.reduce((m, e) => m.set(e[i], (m.get(e[i]) || 0) + 1), new Map());
  check([...count(0).values()].includes(2), `a parent with two children (the split): ${JSON.stringify(edges)}`);
  check([...count(1).values()].includes(2), `a child with two parents (the merge): ${JSON.stringify(edges)}`);
  check(count(0).get(recordsShard) === 2, 'shard 0 is the split parent');
  check((await page.locator(tid('lineage-node')).count()) === 5, 'five lineage nodes');
  // Throughput charts fill in from /metrics while the page is open.
  // A flat line has no area, so wait for it to exist rather than be visible.
  await page.locator(tid('chart-records', ` ${tid('chart-line')}`)).first().waitFor({ state: 'attached' });
  // Screenshots for the docs wait for half a minute of chart history.
  await page.waitForTimeout(shots ? 30000 : 3500);
  await shot('stream.png');

  // 3. Record browser on shard 0: pretty JSON, hex for binary, text, paging.
  await page.click(`${tid('shard-row', `[data-shard-id="${recordsShard}"]`)} ${tid('records-link')}`);
  await page.locator(tid('rec-form')).waitFor();
  check((await page.inputValue(tid('rec-shard'))) === recordsShard, 'shard preselected from the link');
  await page.fill(tid('rec-limit'), '3');
  await page.click(tid('rec-read'));
  await page.locator(tid('record-row')).nth(2).waitFor();
  const kinds = await page.locator(tid('record-data')).evaluateAll((els) => els.map((e) => e.dataset.kind));
  check(JSON.stringify(kinds) === '["json","hex","text"]', `kinds of the first page: ${kinds}`);
  const datas = await page.locator(tid('record-data')).allTextContents();
  check(datas[0].includes('"user": "ada"') && datas[0].includes('\n'), `pretty JSON: ${datas[0]}`);
  check(datas[1] === '00 9f 92 96 ff', `binary as hex: ${datas[1]}`);
  check(datas[2] === 'héllo wörld', `UTF-8 text: ${datas[2]}`);
  const seqs = await page.locator(tid('record-seq')).allTextContents();
  await shot('records.png');
  await page.click(tid('rec-next'));
  await page.waitForFunction(() => document.querySelector('[data-testid="rec-status"]').textContent.startsWith('Page 2'));
  const page2 = await page.locator(tid('record-data')).allTextContents();
  check(page2.length === 1 && page2[0].includes('"user": "grace"'), `second page: ${page2}`);
  // AFTER_SEQUENCE_NUMBER of the binary record starts at the text one.
  await page.selectOption(tid('rec-type'), 'AFTER_SEQUENCE_NUMBER');
  await page.fill(tid('rec-seq'), seqs[1]);
  await page.fill(tid('rec-limit'), '1');
  await page.click(tid('rec-read'));
  await page.waitForFunction(() => document.querySelector('[data-testid="rec-status"]').textContent.startsWith('Page 1'));
  check((await page.locator(tid('record-data')).allTextContents())[0] === 'héllo wörld', 'AFTER_SEQUENCE_NUMBER position');

  // 4. Split an open shard through the UI, with its confirmation; the page
  // is opened by a deep link this time. A key outside the shard is refused
  // first, and the API's error shows in the page.
  await page.goto(`${base}/console/stream/${encodeURIComponent(stream)}`);
  const splitButton = page.locator(tid('split-button')).first();
  await splitButton.waitFor();
  const target = await splitButton.getAttribute('data-shard-id');
  await splitButton.click();
  await page.fill(tid('confirm-key'), '0');
  await page.click(tid('confirm-ok'));
  await page.locator(tid('error-type')).waitFor();
  check((await page.locator(tid('error-type')).textContent()) === 'InvalidArgumentException', 'a bad split key is refused');
  await splitButton.click();
  await page.locator(tid('confirm-dialog')).waitFor();
  check(/^\d+$/.test(await page.inputValue(tid('confirm-key'))), 'midpoint proposed');
  await page.click(tid('confirm-ok'));
  await page.waitForFunction(() => document.querySelectorAll('[data-testid="shard-rect"]').length === 7);
  check((await page.locator(tid('shard-rect', `[data-shard-id="${target}"]`)).getAttribute('data-state')) === 'closed', 'split shard drawn closed');

  // 5. Merge the two new children (adjacent) with the merge form.
  const pair = await page.locator(`${tid('merge-pair')} option`).evaluateAll((opts) => opts.map((o) => o.textContent.split(' + ')));
  const merged = pair.find(([a, b]) => a !== target && b !== target);
  check(merged, `an adjacent pair to merge: ${JSON.stringify(pair)}`);
  await page.selectOption(tid('merge-pair'), { label: merged.join(' + ') });
  await page.click(tid('merge-button'));
  await page.click(tid('confirm-ok'));
  await page.waitForFunction(() => document.querySelectorAll('[data-testid="shard-rect"]').length === 8);

  // 6. Retention, and a cancelled deletion that deletes nothing.
  await page.click(tid('retention-button'));
  await page.fill(tid('confirm-hours'), '48');
  await page.click(tid('confirm-ok'));
  await page.waitForFunction(() => document.querySelector('main .facts').textContent.includes('48 hours'));
  // The keyboard alone: Enter on a focused button opens the dialog with the
  // focus in its field; Escape closes it and changes nothing.
  await page.focus(tid('scale-button'));
  await page.keyboard.press('Enter');
  await page.locator(tid('confirm-dialog')).waitFor();
  check(await page.evaluate(() => document.activeElement.dataset.testid === 'confirm-count'), 'focus in the dialog field');
  await page.keyboard.press('Escape');
  await page.locator(tid('confirm-dialog')).waitFor({ state: 'hidden' });
  await page.click(tid('delete-button'));
  check(await page.evaluate(() => document.activeElement.dataset.testid === 'confirm-cancel'), 'a deletion dialog starts on Cancel');
  await page.click(tid('confirm-cancel'));
  await page.goto(`${base}/console#/`);
  await row.waitFor();

  // 7. Create a stream with the form, then delete it from its page.
  await page.fill(tid('create-name'), 'console-made');
  await page.fill(tid('create-shards'), '3');
  await page.click(tid('create-submit'));
  await page.click(tid('confirm-ok'));
  const made = page.locator(tid('stream-row', '[data-stream="console-made"]'));
  await made.waitFor();
  check((await made.locator(tid('stream-open')).textContent()) === '3', 'created with three shards');
  await made.locator(tid('stream-link')).click();
  await page.click(tid('delete-button'));
  await page.click(tid('confirm-ok'));
  await row.waitFor();
  check((await made.count()) === 0, 'deleted stream gone from the list');

  check(problems.length === 0, problems.join('\n'));
  console.log(JSON.stringify({ split: target, merged }));
} finally {
  await context.close();
  rmSync(userDir, { recursive: true, force: true });
}
