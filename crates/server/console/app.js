// The Shardlog console. It talks to the server only through what every
// client has: the Kinesis API (POST / with X-Amz-Target), the consumer-groups
// extension and GET /metrics. There is no framework and no build step: a small
// DOM helper, routing on the URL fragment, and charts drawn as SVG by hand.
// Text from the server is only ever inserted as text nodes, never as HTML.

const KINESIS = 'Kinesis_20131202.';
const GROUPS = 'ShardlogGroups_20261126.';
const HASH_SPACE = 1n << 128n;
const SAMPLE_MS = 3000;
// Five minutes of history at one sample every three seconds.
const SAMPLES_KEPT = 100;
// Distinguishable on white and on the dark bar text; a shard keeps its colour
// on every chart because the colour comes from its number.
const PALETTE = ['#1f5fa8', '#b4531d', '#2b7a3d', '#8a3fa0', '#a3243b', '#0f7580', '#6b5a00', '#4a4fbf'];

// ---------------------------------------------------------------- API calls

class ApiError extends Error {
  constructor(type, message) {
    super(message);
    this.type = type;
  }
}

// One Kinesis (or groups) operation. The console header lets the server's
// auth layer recognise the console's read-only calls.
async function api(op, body = {}, prefix = KINESIS) {
  const r = await fetch('/', {
    method: 'POST',
    headers: {
      'X-Amz-Target': prefix + op,
      'Content-Type': 'application/x-amz-json-1.1',
      'X-Shardlog-Console': '1',
    },
    body: JSON.stringify(body),
  });
  const text = await r.text();
  let v = {};
  try {
    v = text ? JSON.parse(text) : {};
  } catch {
    v = { message: text };
  }
  if (!r.ok) throw new ApiError(v.__type || `HTTP ${r.status}`, v.message || v.Message || r.statusText);
  return v;
}

async function listStreams() {
  let names = [];
  let body = {};
  for (;;) {
    const v = await api('ListStreams', body);
    names = names.concat(v.StreamNames || []);
    if (!v.HasMoreStreams || names.length === 0) return names;
    body = v.NextToken ? { NextToken: v.NextToken } : { ExclusiveStartStreamName: names[names.length - 1] };
  }
}

async function listShards(name) {
  let shards = [];
  let token;
  do {
    const v = await api('ListShards', token ? { NextToken: token } : { StreamName: name });
    shards = shards.concat(v.Shards || []);
    token = v.NextToken;
  } while (token);
  return shards.map((s) => ({
    ...s,
    start: BigInt(s.HashKeyRange.StartingHashKey),
    end: BigInt(s.HashKeyRange.EndingHashKey),
    open: !s.SequenceNumberRange.EndingSequenceNumber,
    parents: [s.ParentShardId, s.AdjacentParentShardId].filter(Boolean),
  }));
}

// After a reshard or a create the stream is briefly UPDATING or CREATING;
// the next action would be refused, so wait (a few seconds at most).
async function waitActive(name) {
  for (let i = 0; i < 40; i++) {
    try {
      const v = await api('DescribeStreamSummary', { StreamName: name });
      if (v.StreamDescriptionSummary.StreamStatus === 'ACTIVE') return;
    } catch (e) {
      if (e.type !== 'ResourceNotFoundException') throw e;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

// A deleted stream lingers as DELETING while its files go; the list should
// not show it again, so wait until the server no longer knows it.
async function waitGone(name) {
  for (let i = 0; i < 40; i++) {
    try {
      await api('DescribeStreamSummary', { StreamName: name });
    } catch (e) {
      if (e.type === 'ResourceNotFoundException') return;
      throw e;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

// ------------------------------------------------------------- DOM helpers

const $ = (sel) => document.querySelector(sel);

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'testid') el.setAttribute('data-testid', v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
}

function kids(el, children) {
  el.append(...children.flat(Infinity).filter((c) => c != null && c !== false).map((c) => (c instanceof Node ? c : String(c))));
  return el;
}

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  return kids(el, children);
}

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  setAttrs(el, attrs);
  return kids(el, children);
}

function section(title, testid, ...children) {
  const id = `h-${testid}`;
  return h('section', { 'aria-labelledby': id, testid }, h('h2', { id }, title), ...children);
}

function table(testid, head, rows) {
  return h(
    'table',
    { testid },
    h('thead', {}, h('tr', {}, head.map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', {}, rows),
  );
}

// ---------------------------------------------------------------- formatting

function fmtBytes(n) {
  if (n == null) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i && n < 10 ? 1 : 0)} ${units[i]}`;
}

function fmtNum(n) {
  if (n == null) return '–';
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}k`;
  return n >= 10 || n === 0 ? n.toFixed(0) : n.toFixed(1);
}

function fmtTime(seconds) {
  return seconds == null ? '–' : new Date(seconds * 1000).toISOString().replace('T', ' ').replace('Z', ' UTC');
}

const shortId = (id) => id.replace(/^shardId-0*/, '') || '0';
const colour = (id) => PALETTE[Number(shortId(id)) % PALETTE.length];
const frac = (k) => Number((k * 1000000n) / HASH_SPACE) / 1e6;
const pct = (k) => `${(frac(k) * 100).toFixed(2)}%`;

// ------------------------------------------------------------------ errors

function showError(e) {
  const box = $('#error');
  box.replaceChildren(
    h('strong', { testid: 'error-type' }, e.type || e.name || 'Error'),
    ': ',
    h('span', { testid: 'error-message' }, e.message),
    h('button', { class: 'link', type: 'button', 'aria-label': 'Dismiss error', onclick: clearError }, 'Dismiss'),
  );
  box.hidden = false;
}

function clearError() {
  $('#error').hidden = true;
}

// Asks for confirmation (and optionally a few values) in a modal dialog.
// Resolves to the values, or null when cancelled.
function ask(title, text, fields = []) {
  const dlg = $('#confirm');
  $('#confirm-title').textContent = title;
  $('#confirm-text').textContent = text;
  const inputs = fields.map((f) =>
    h('input', { id: `field-${f.name}`, name: f.name, value: f.value, required: true, testid: `confirm-${f.name}`, inputmode: f.numeric ? 'numeric' : null }),
  );
  $('#confirm-fields').replaceChildren(...fields.map((f, i) => h('p', {}, h('label', { for: `field-${f.name}` }, f.label), inputs[i])));
  dlg.returnValue = '';
  dlg.showModal();
  // With nothing to fill in, a stray Enter should not confirm a deletion.
  if (!fields.length) $('[data-testid=confirm-cancel]').focus();
  return new Promise((resolve) => {
    dlg.addEventListener(
      'close',
      () => resolve(dlg.returnValue === 'ok' ? Object.fromEntries(fields.map((f, i) => [f.name, inputs[i].value.trim()])) : null),
      { once: true },
    );
  });
}

// An operator action: confirm, run, report errors, then re-render the page.
async function act(title, text, fields, run) {
  const values = await ask(title, text, fields);
  if (!values) return;
  clearError();
  try {
    await run(values);
    await route();
  } catch (e) {
    showError(e);
  }
}

// ----------------------------------------------------------------- metrics

const samples = [];
let onSample = null;

function parseProm(text) {
  const rows = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    for (const l of (m[2] || '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) {
      labels[l[1]] = l[2].replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
    }
    rows.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return rows;
}

async function sample() {
  try {
    const r = await fetch('/metrics', { headers: { 'X-Shardlog-Console': '1' } });
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    samples.push({ t: Date.now(), rows: parseProm(await r.text()) });
    if (samples.length > SAMPLES_KEPT) samples.shift();
    $('#live').textContent = `live · ${new Date().toLocaleTimeString()}`;
    if (onSample) onSample();
  } catch (e) {
    $('#live').textContent = `metrics unavailable (${e.message})`;
  }
  setTimeout(sample, SAMPLE_MS);
}

// Which samples belong to a stream: its name, and its account and region
// (from its ARN) where the metric carries them.
function scopeOf(name, arn) {
  const p = (arn || '').split(':');
  return { stream: name, region: p[3], account: p[4] };
}

function valueIn(smp, metric, scope, shard) {
  let sum = null;
  for (const r of smp.rows) {
    const l = r.labels;
    if (r.name !== metric || l.stream !== scope.stream) continue;
    if ((l.account && scope.account && l.account !== scope.account) || (l.region && scope.region && l.region !== scope.region)) continue;
    if (shard === undefined ? l.shard : shard !== '*' && l.shard !== shard) continue;
    sum = (sum || 0) + r.value;
  }
  return sum;
}

// Per-second rate of a counter between samples i-1 and i.
function rateAt(i, metric, scope, shard) {
  if (i < 1) return null;
  const a = valueIn(samples[i - 1], metric, scope, shard);
  const b = valueIn(samples[i], metric, scope, shard);
  if (a == null || b == null) return null;
  return Math.max(0, b - a) / ((samples[i].t - samples[i - 1].t) / 1000);
}

const latest = () => samples.length - 1;

// ------------------------------------------------------------------ charts

// A line chart of a few series of [time ms, value] over the sampled window.
function lineChart(title, testid, series, fmt) {
  const W = 560;
  const H = 150;
  const L = 52;
  const B = 20;
  const t1 = samples.length ? samples[latest()].t : Date.now();
  const t0 = Math.min(samples.length ? samples[0].t : t1, t1 - 60000);
  const max = Math.max(1, ...series.flatMap((sr) => sr.points.map((p) => p[1]))) * 1.1;
  const x = (t) => L + ((t - t0) / (t1 - t0 || 1)) * (W - L - 8);
  const y = (v) => 6 + (1 - v / max) * (H - B - 6);
  const grid = [0, max / 2, max].map((v) => [
    s('line', { x1: L, x2: W - 8, y1: y(v), y2: y(v), class: 'grid' }),
    s('text', { x: L - 6, y: y(v) + 4, class: 'axis', 'text-anchor': 'end' }, fmt(v)),
  ]);
  const minutes = Math.round((t1 - t0) / 60000);
  const lines = series
    .filter((sr) => sr.points.length)
    .map((sr) =>
      s('polyline', {
        points: sr.points.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(' '),
        stroke: sr.colour,
        class: 'series',
        testid: 'chart-line',
        'data-series': sr.label,
      }),
    );
  return h(
    'figure',
    { class: 'chart', testid },
    s(
      'svg',
      { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': `${title}, last ${minutes} minute(s)` },
      grid,
      s('text', { x: L, y: H - 4, class: 'axis' }, `−${minutes} min`),
      s('text', { x: W - 8, y: H - 4, class: 'axis', 'text-anchor': 'end' }, 'now'),
      lines,
    ),
    h(
      'figcaption',
      {},
      h('strong', {}, title),
      ' ',
      series.map((sr) =>
        h('span', { class: 'key' }, s('svg', { width: 10, height: 10, 'aria-hidden': 'true' }, s('rect', { width: 10, height: 10, fill: sr.colour })), ` ${sr.label}`),
      ),
    ),
  );
}

function chartsFor(scope, openIds) {
  // Shard series exist once enhanced monitoring turns them on; until then
  // the stream's own series stand in. Closed shards take no writes, so only
  // open ones get a line.
  const shardIds = new Set();
  for (const smp of samples) {
    for (const r of smp.rows) if (r.name === 'kinesis_incoming_records_total' && r.labels.stream === scope.stream && openIds.has(r.labels.shard)) shardIds.add(r.labels.shard);
  }
  const keys = shardIds.size ? [...shardIds].sort() : [undefined];
  const series = (fn) =>
    keys.map((k) => ({
      label: k ? shortId(k) : 'stream',
      colour: k ? colour(k) : PALETTE[0],
      points: samples.map((smp, i) => [smp.t, fn(i, k)]).filter((p) => p[1] != null),
    }));
  return [
    lineChart('Incoming records/s', 'chart-records', series((i, k) => rateAt(i, 'kinesis_incoming_records_total', scope, k)), fmtNum),
    lineChart('Incoming bytes/s', 'chart-bytes', series((i, k) => rateAt(i, 'kinesis_incoming_bytes_total', scope, k)), fmtBytes),
    lineChart('Iterator age (ms)', 'chart-age', series((i, k) => valueIn(samples[i], 'kinesis_get_records_iterator_age_milliseconds', scope, k)), fmtNum),
  ];
}

// The hash-key space as a bar: open shards on top, closed ones faded below.
// Closed shards overlap (a parent and its children cover the same keys), so
// they are packed into as many lanes as it takes for none to hide another.
function shardBar(name, shards) {
  const W = 1000;
  const lanes = [];
  const placed = [];
  for (const sh of [...shards].sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0))) {
    if (sh.open) {
      placed.push({ sh, y: 0, h: 40 });
      continue;
    }
    let lane = lanes.findIndex((end) => end < sh.start);
    if (lane < 0) lane = lanes.push(0n) - 1;
    lanes[lane] = sh.end;
    placed.push({ sh, y: 54 + lane * 30, h: 24 });
  }
  const bottom = 54 + lanes.length * 30;
  const rects = placed.map(({ sh, y, h: height }) => {
    const state = sh.open ? 'open' : 'closed';
    const x = frac(sh.start) * W;
    const w = Math.max(2, frac(sh.end + 1n) * W - x);
    return s(
      'a',
      { href: `#/stream/${encodeURIComponent(name)}/records?shard=${encodeURIComponent(sh.ShardId)}`, 'aria-label': `${sh.ShardId}, ${state}, keys ${pct(sh.start)} to ${pct(sh.end + 1n)}` },
      s('title', {}, `${sh.ShardId} (${state})\n${sh.start} – ${sh.end}`),
      s('rect', {
        x: x + 1,
        y,
        width: Math.max(1, w - 2),
        height,
        rx: 3,
        fill: colour(sh.ShardId),
        class: sh.open ? 'shard' : 'shard closed',
        testid: 'shard-rect',
        'data-shard-id': sh.ShardId,
        'data-state': state,
      }),
      w > 40 ? s('text', { x: x + w / 2, y: y + height / 2 + 5, class: 'bar-label', 'text-anchor': 'middle' }, shortId(sh.ShardId)) : null,
    );
  });
  const ticks = ['0', '2¹²⁸·¼', '2¹²⁸·½', '2¹²⁸·¾', '2¹²⁸'].map((label, q) =>
    s('text', { x: (q / 4) * W, y: bottom + 14, class: 'axis', 'text-anchor': q === 0 ? 'start' : q === 4 ? 'end' : 'middle' }, label),
  );
  return s('svg', { viewBox: `0 0 ${W} ${bottom + 18}`, class: 'bar', testid: 'shard-bar', role: 'group', 'aria-label': 'Hash-key space by shard' }, rects, ticks);
}

// Splits and merges as a graph: one column per generation, each shard drawn
// over the part of the hash-key space it owns, edges from parents to children.
// Shards of one generation never overlap in key range (overlap means one
// descends from the other), so the boxes of a column never collide.
function lineage(shards) {
  const byId = new Map(shards.map((sh) => [sh.ShardId, sh]));
  const depth = new Map();
  const depthOf = (sh) => {
    if (!depth.has(sh.ShardId)) {
      const ps = sh.parents.map((p) => byId.get(p)).filter(Boolean);
      depth.set(sh.ShardId, ps.length ? 1 + Math.max(...ps.map(depthOf)) : 0);
    }
    return depth.get(sh.ShardId);
  };
  shards.forEach(depthOf);
  const cols = 1 + Math.max(0, ...depth.values());
  const colW = 150;
  const boxW = 96;
  const H = 240;
  const W = cols * colW;
  const box = (sh) => {
    const y0 = frac(sh.start) * H;
    const y1 = Math.max(y0 + 18, frac(sh.end + 1n) * H);
    return { x: 8 + depth.get(sh.ShardId) * colW, y: y0 + 1, w: boxW, h: y1 - y0 - 2 };
  };
  const edges = shards.flatMap((child) =>
    child.parents
      .filter((p) => byId.has(p))
      .map((p) => {
        const a = box(byId.get(p));
        const b = box(child);
        const ya = Math.max(a.y, Math.min(a.y + a.h, b.y + b.h / 2));
        const yb = b.y + b.h / 2;
        const mx = (a.x + a.w + b.x) / 2;
        return s('path', { d: `M${a.x + a.w},${ya} C${mx},${ya} ${mx},${yb} ${b.x},${yb}`, class: 'edge', testid: 'lineage-edge', 'data-from': p, 'data-to': child.ShardId, 'marker-end': 'url(#arrow)' });
      }),
  );
  const nodes = shards.map((sh) => {
    const b = box(sh);
    return s(
      'g',
      {},
      s('title', {}, `${sh.ShardId} (${sh.open ? 'open' : 'closed'})${sh.parents.length ? `\nfrom ${sh.parents.join(' + ')}` : ''}`),
      s('rect', { x: b.x, y: b.y, width: b.w, height: b.h, rx: 4, fill: colour(sh.ShardId), class: sh.open ? 'node' : 'node closed', testid: 'lineage-node', 'data-shard-id': sh.ShardId, 'data-state': sh.open ? 'open' : 'closed' }),
      s('text', { x: b.x + b.w / 2, y: b.y + b.h / 2 + 5, class: 'bar-label', 'text-anchor': 'middle' }, shortId(sh.ShardId)),
    );
  });
  const arrow = s('defs', {}, s('marker', { id: 'arrow', viewBox: '0 0 8 8', refX: 8, refY: 4, markerWidth: 7, markerHeight: 7, orient: 'auto' }, s('path', { d: 'M0,0 L8,4 L0,8 z', class: 'arrowhead' })));
  return s('svg', { viewBox: `0 0 ${W} ${H}`, class: 'lineage', testid: 'lineage', role: 'img', 'aria-label': `Shard lineage: ${edges.length} parent-to-child edges`, width: W, height: H }, arrow, edges, nodes);
}

// ------------------------------------------------------------------- pages

async function streamsPage() {
  const names = await listStreams();
  const infos = await Promise.all(
    names.map(async (name) => {
      const d = (await api('DescribeStreamSummary', { StreamName: name })).StreamDescriptionSummary;
      // A stream being created has no shards to list yet.
      const shards = await listShards(name).catch(() => []);
      return { name, d, shards, scope: scopeOf(name, d.StreamARN) };
    }),
  );
  const live = [];
  const rows = infos.map(({ name, d, shards, scope }) => {
    const cells = { disk: h('td', { testid: 'stream-disk', class: 'num' }), rps: h('td', { testid: 'stream-rps', class: 'num' }), bps: h('td', { testid: 'stream-bps', class: 'num' }) };
    live.push({ scope, cells });
    return h(
      'tr',
      { testid: 'stream-row', 'data-stream': name },
      h('th', { scope: 'row' }, h('a', { href: `#/stream/${encodeURIComponent(name)}`, testid: 'stream-link' }, name)),
      h('td', {}, h('span', { class: `status ${d.StreamStatus.toLowerCase()}` }, d.StreamStatus)),
      h('td', { class: 'num', testid: 'stream-open' }, d.OpenShardCount),
      h('td', { class: 'num', testid: 'stream-closed' }, shards.filter((sh) => !sh.open).length),
      h('td', { class: 'num' }, d.RetentionPeriodHours),
      h('td', {}, d.StreamModeDetails?.StreamMode || '–'),
      h('td', {}, d.EncryptionType || 'NONE'),
      cells.disk,
      cells.rps,
      cells.bps,
      h('td', { class: 'num' }, d.ConsumerCount ?? 0),
    );
  });
  const tick = () => {
    const i = latest();
    for (const { scope, cells } of live) {
      cells.disk.textContent = i < 0 ? '…' : fmtBytes(valueIn(samples[i], 'shardlog_shard_bytes', scope, '*') ?? 0);
      const rps = rateAt(i, 'kinesis_incoming_records_total', scope);
      const bps = rateAt(i, 'kinesis_incoming_bytes_total', scope);
      cells.rps.textContent = rps == null ? '…' : fmtNum(rps);
      cells.bps.textContent = bps == null ? '…' : `${fmtBytes(bps)}/s`;
    }
  };
  tick();
  const form = h(
    'form',
    { testid: 'create-form', class: 'inline' },
    h('label', { for: 'new-name' }, 'Name'),
    h('input', { id: 'new-name', name: 'name', required: true, maxlength: 128, pattern: '[a-zA-Z0-9_.\\-]+', testid: 'create-name', autocomplete: 'off' }),
    h('label', { for: 'new-shards' }, 'Shards'),
    h('input', { id: 'new-shards', name: 'shards', type: 'number', min: 1, value: 1, required: true, testid: 'create-shards' }),
    h('label', { for: 'new-mode' }, 'Capacity mode'),
    h('select', { id: 'new-mode', name: 'mode', testid: 'create-mode' }, h('option', {}, 'PROVISIONED'), h('option', {}, 'ON_DEMAND')),
    h('button', { type: 'submit', testid: 'create-submit' }, 'Create stream…'),
  );
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const f = new FormData(form);
    const name = f.get('name');
    const mode = f.get('mode');
    act('Create stream', `Create stream “${name}” (${mode === 'ON_DEMAND' ? 'on demand' : `${f.get('shards')} shard(s)`})?`, [], async () => {
      const body = { StreamName: name, StreamModeDetails: { StreamMode: mode } };
      if (mode === 'PROVISIONED') body.ShardCount = Number(f.get('shards'));
      await api('CreateStream', body);
      await waitActive(name);
    });
  });
  const head = ['Stream', 'Status', 'Open shards', 'Closed shards', 'Retention (h)', 'Mode', 'Encryption', 'On disk', 'Records/s in', 'Bytes/s in', 'Consumers'];
  return {
    title: [],
    el: h(
      'div',
      {},
      h('h1', {}, 'Streams'),
      infos.length ? h('div', { class: 'scroll' }, table('streams-table', head, rows)) : h('p', { testid: 'no-streams' }, 'No streams yet. Create one below.'),
      section('Create stream', 'create', form),
    ),
    tick,
  };
}

async function streamPage(name) {
  const d = (await api('DescribeStreamSummary', { StreamName: name })).StreamDescriptionSummary;
  // A stream still being created has no shards to list yet.
  const shards = await listShards(name).catch(() => []);
  const scope = scopeOf(name, d.StreamARN);
  // Consumers and groups are extras: if either cannot be read, the rest of
  // the page still shows and the section says why.
  const [consumers, groups] = await Promise.all([
    api('ListStreamConsumers', { StreamARN: d.StreamARN }).then((v) => v.Consumers || [], (e) => e),
    api('ListGroups', { StreamName: name }, GROUPS).then(
      (v) => Promise.all((v.ApplicationNames || []).map((app) => api('DescribeGroup', { StreamName: name, ApplicationName: app }, GROUPS))),
    ).catch((e) => e),
  ]);
  const unreadable = (e) => h('p', { class: 'note', testid: 'section-error' }, `Could not read: ${e.type || e.name}: ${e.message}`);
  const open = shards.filter((sh) => sh.open).sort((a, b) => (a.start < b.start ? -1 : 1));
  const adjacent = open.slice(1).map((b, i) => [open[i], b]).filter(([a, b]) => a.end + 1n === b.start);
  const enc = encodeURIComponent(name);
  const diskCells = new Map();
  const shardRows = shards.map((sh) => {
    const disk = h('td', { class: 'num', testid: 'shard-disk' });
    diskCells.set(sh.ShardId, disk);
    const mid = (sh.start + sh.end + 1n) / 2n;
    return h(
      'tr',
      { testid: 'shard-row', 'data-shard-id': sh.ShardId, 'data-state': sh.open ? 'open' : 'closed' },
      h('th', { scope: 'row' }, h('code', {}, sh.ShardId)),
      h('td', {}, sh.open ? 'open' : 'closed'),
      h('td', {}, `${pct(sh.start)} – ${pct(sh.end + 1n)}`),
      h('td', {}, sh.parents.length ? sh.parents.map(shortId).join(' + ') : '–'),
      disk,
      h(
        'td',
        { class: 'actions' },
        h('a', { href: `#/stream/${enc}/records?shard=${encodeURIComponent(sh.ShardId)}`, testid: 'records-link' }, 'Records'),
        sh.open
          ? h(
              'button',
              {
                type: 'button',
                testid: 'split-button',
                'data-shard-id': sh.ShardId,
                onclick: () =>
                  act(`Split ${sh.ShardId}`, 'The shard closes and two new shards take over its keys. Records already written stay readable in the parent.', [{ name: 'key', label: 'New starting hash key (default: the midpoint)', value: mid.toString(), numeric: true }], async (v) => {
                    await api('SplitShard', { StreamName: name, ShardToSplit: sh.ShardId, NewStartingHashKey: v.key });
                    await waitActive(name);
                  }),
              },
              'Split…',
            )
          : null,
      ),
    );
  });
  const mergeSelect = h('select', { id: 'merge-pair', testid: 'merge-pair' }, adjacent.map(([a, b], i) => h('option', { value: i }, `${a.ShardId} + ${b.ShardId}`)));
  const actions = h(
    'div',
    { class: 'toolbar', role: 'group', 'aria-label': 'Stream actions' },
    h('a', { class: 'button', href: `#/stream/${enc}/records`, testid: 'browse-records' }, 'Browse records'),
    h('button', { type: 'button', testid: 'refresh', onclick: () => route() }, 'Refresh'),
    h('button', {
      type: 'button',
      testid: 'scale-button',
      onclick: () =>
        act('Scale stream', 'UpdateShardCount splits or merges shards uniformly to reach the target.', [{ name: 'count', label: 'Target open shards', value: String(open.length), numeric: true }], async (v) => {
          await api('UpdateShardCount', { StreamName: name, TargetShardCount: Number(v.count), ScalingType: 'UNIFORM_SCALING' });
          await waitActive(name);
        }),
    }, 'Scale…'),
    h('button', {
      type: 'button',
      testid: 'retention-button',
      onclick: () =>
        act('Change retention', `Records older than this are deleted. Now ${d.RetentionPeriodHours} hours.`, [{ name: 'hours', label: 'Retention (hours)', value: String(d.RetentionPeriodHours), numeric: true }], async (v) => {
          const hours = Number(v.hours);
          if (hours === d.RetentionPeriodHours) return;
          const op = hours > d.RetentionPeriodHours ? 'IncreaseStreamRetentionPeriod' : 'DecreaseStreamRetentionPeriod';
          await api(op, { StreamName: name, RetentionPeriodHours: hours });
        }),
    }, 'Retention…'),
    h('button', {
      type: 'button',
      class: 'danger',
      testid: 'delete-button',
      onclick: async () => {
        if (!(await ask('Delete stream', `Delete “${name}” and every record in it? This cannot be undone.`))) return;
        try {
          await api('DeleteStream', { StreamName: name, EnforceConsumerDeletion: true });
          await waitGone(name);
          location.hash = '#/';
        } catch (e) {
          showError(e);
        }
      },
    }, 'Delete stream…'),
  );
  const merge = h(
    'form',
    { class: 'inline', testid: 'merge-form' },
    h('label', { for: 'merge-pair' }, 'Adjacent open shards'),
    mergeSelect,
    h('button', { type: 'submit', testid: 'merge-button', disabled: adjacent.length === 0 }, 'Merge…'),
  );
  merge.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const [a, b] = adjacent[Number(mergeSelect.value)];
    act('Merge shards', `${a.ShardId} and ${b.ShardId} close and one new shard takes over both key ranges.`, [], async () => {
      await api('MergeShards', { StreamName: name, ShardToMerge: a.ShardId, AdjacentShardToMerge: b.ShardId });
      await waitActive(name);
    });
  });
  const shardMetrics = (d.EnhancedMonitoring || []).flatMap((m) => m.ShardLevelMetrics || []);
  const charts = h('div', { class: 'charts', testid: 'charts' });
  const chartNote = shardMetrics.length
    ? null
    : h(
        'p',
        { class: 'note' },
        'Per-shard series need shard-level metrics (enhanced monitoring); the charts show the whole stream until then. ',
        h('button', { type: 'button', testid: 'enable-metrics', onclick: () => api('EnableEnhancedMonitoring', { StreamName: name, ShardLevelMetrics: ['ALL'] }).then(route, showError) }, 'Enable shard-level metrics'),
      );
  const tick = () => {
    charts.replaceChildren(...chartsFor(scope, new Set(open.map((sh) => sh.ShardId))));
    if (samples.length) for (const [id, cell] of diskCells) cell.textContent = fmtBytes(valueIn(samples[latest()], 'shardlog_shard_bytes', scope, id));
  };
  tick();
  const facts = [
    ['Status', h('span', { class: `status ${d.StreamStatus.toLowerCase()}`, testid: 'stream-status' }, d.StreamStatus)],
    ['Mode', d.StreamModeDetails?.StreamMode || '–'],
    ['Open / closed shards', `${open.length} / ${shards.length - open.length}`],
    ['Retention', `${d.RetentionPeriodHours} hours`],
    ['Encryption', d.EncryptionType || 'NONE'],
    ['Created', fmtTime(d.StreamCreationTimestamp)],
    ['ARN', h('code', {}, d.StreamARN)],
  ];
  return {
    title: [[name, `#/stream/${enc}`]],
    el: h(
      'div',
      {},
      h('h1', { testid: 'stream-name' }, name),
      h('dl', { class: 'facts' }, facts.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])),
      actions,
      section('Hash-key space', 'keyspace', h('p', { class: 'note' }, 'Each shard owns a range of the 128-bit hash-key space; open shards on top, closed ones (kept until retention removes their records) below. Select a shard to browse its records.'), shardBar(name, shards)),
      section('Shards', 'shards', h('div', { class: 'scroll' }, table('shards-table', ['Shard', 'State', 'Hash keys', 'Parents', 'On disk', 'Actions'], shardRows)), merge),
      section('Lineage', 'lineage-section', h('p', { class: 'note' }, 'Generations left to right; a split has two children, a merge two parents.'), h('div', { class: 'scroll' }, lineage(shards))),
      section('Throughput and iterator age', 'metrics', chartNote, charts),
      section(
        'Consumers',
        'consumers',
        consumers instanceof Error
          ? unreadable(consumers)
          : consumers.length
          ? table('consumers-table', ['Name', 'Status', 'Registered'], consumers.map((c) => h('tr', { testid: 'consumer-row' }, h('th', { scope: 'row' }, c.ConsumerName), h('td', {}, c.ConsumerStatus), h('td', {}, fmtTime(c.ConsumerCreationTimestamp)))))
          : h('p', {}, 'No enhanced fan-out consumers.'),
      ),
      section(
        'Consumer groups',
        'groups',
        groups instanceof Error
          ? unreadable(groups)
          : groups.length
          ? groups.map((g) =>
              h(
                'div',
                { testid: 'group', 'data-group': g.ApplicationName },
                h('h3', {}, g.ApplicationName, ' ', h('small', {}, `${(g.Workers || []).length} worker(s)`)),
                table('group-table', ['Shard', 'Owner', 'Checkpoint', 'Records behind', 'Finished'], (g.Shards || []).map((x) =>
                  h('tr', {}, h('th', { scope: 'row' }, h('code', {}, x.ShardId)), h('td', {}, x.Owner || '–'), h('td', {}, h('code', {}, x.Checkpoint || '–')), h('td', { class: 'num', testid: 'group-lag' }, x.RecordsBehind ?? '–'), h('td', {}, x.Finished ? 'yes' : 'no')),
                )),
              ),
            )
          : h('p', {}, 'No consumer groups.'),
      ),
    ),
    tick,
  };
}

// Data as the producer wrote it: pretty JSON, text when it is clean UTF-8,
// hex otherwise (control characters mean it is not meant as text).
function decodeData(b64) {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  try {
    const text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    // eslint-disable-next-line no-control-regex
    if (!/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/.test(text)) {
      try {
        const j = JSON.parse(text);
        if (j !== null && typeof j === 'object') return { kind: 'json', text: JSON.stringify(j, null, 2), size: bytes.length };
      } catch {
        // Not JSON: shown as text.
      }
      return { kind: 'text', text, size: bytes.length };
    }
  } catch {
    // Not UTF-8: shown as hex.
  }
  const hex = [];
  for (let i = 0; i < bytes.length; i += 16) hex.push(Array.from(bytes.slice(i, i + 16), (b) => b.toString(16).padStart(2, '0')).join(' '));
  return { kind: 'hex', text: hex.join('\n'), size: bytes.length };
}

async function recordsPage(name, params) {
  const shards = await listShards(name);
  const enc = encodeURIComponent(name);
  const field = (id, label, input) => h('p', { class: 'field' }, h('label', { for: id }, label), input);
  const shardSel = h('select', { id: 'rec-shard', testid: 'rec-shard' }, shards.map((sh) => h('option', { value: sh.ShardId, selected: sh.ShardId === params.get('shard') }, `${sh.ShardId} (${sh.open ? 'open' : 'closed'})`)));
  const typeSel = h('select', { id: 'rec-type', testid: 'rec-type' }, ['TRIM_HORIZON', 'LATEST', 'AT_SEQUENCE_NUMBER', 'AFTER_SEQUENCE_NUMBER', 'AT_TIMESTAMP'].map((t) => h('option', {}, t)));
  const seq = h('input', { id: 'rec-seq', testid: 'rec-seq', inputmode: 'numeric', autocomplete: 'off' });
  const ts = h('input', { id: 'rec-ts', testid: 'rec-ts', type: 'datetime-local', step: 1 });
  const limit = h('input', { id: 'rec-limit', testid: 'rec-limit', type: 'number', min: 1, max: 10000, value: 25 });
  const seqField = field('rec-seq', 'Sequence number', seq);
  const tsField = field('rec-ts', 'Timestamp (local time)', ts);
  const sync = () => {
    seqField.hidden = !typeSel.value.includes('SEQUENCE');
    tsField.hidden = typeSel.value !== 'AT_TIMESTAMP';
  };
  typeSel.addEventListener('change', sync);
  sync();
  const status = h('p', { testid: 'rec-status', 'aria-live': 'polite' });
  const tbody = h('tbody', {});
  let next = null;
  let page = 0;
  const nextBtn = h('button', { type: 'button', testid: 'rec-next', disabled: true }, 'Next page');
  const show = async (iterator) => {
    clearError();
    const v = await api('GetRecords', { ShardIterator: iterator, Limit: Number(limit.value) || 25 });
    page++;
    next = v.NextShardIterator || null;
    nextBtn.disabled = !next;
    tbody.replaceChildren(
      ...(v.Records || []).map((r) => {
        const data = decodeData(r.Data);
        return h(
          'tr',
          { testid: 'record-row' },
          h('td', {}, h('code', { testid: 'record-seq' }, r.SequenceNumber)),
          h('td', {}, fmtTime(r.ApproximateArrivalTimestamp)),
          h('td', { testid: 'record-key' }, r.PartitionKey),
          h('td', {}, h('pre', { testid: 'record-data', 'data-kind': data.kind }, data.text), h('small', {}, `${data.kind}, ${data.size} bytes`)),
        );
      }),
    );
    const n = (v.Records || []).length;
    const end = next ? '' : ` End of a closed shard${(v.ChildShards || []).length ? `; continues in ${v.ChildShards.map((c) => c.ShardId).join(' and ')}` : ''}.`;
    status.textContent = `Page ${page}: ${n} record(s), ${fmtNum(v.MillisBehindLatest ?? 0)} ms behind the tip.${end}`;
  };
  nextBtn.addEventListener('click', () => show(next).catch(showError));
  const form = h(
    'form',
    { testid: 'rec-form', class: 'grid-form' },
    field('rec-shard', 'Shard', shardSel),
    field('rec-type', 'Start at', typeSel),
    seqField,
    tsField,
    field('rec-limit', 'Records per page', limit),
    h('p', { class: 'field' }, h('button', { type: 'submit', testid: 'rec-read' }, 'Read')),
  );
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const body = { StreamName: name, ShardId: shardSel.value, ShardIteratorType: typeSel.value };
    if (!seqField.hidden) body.StartingSequenceNumber = seq.value.trim();
    if (!tsField.hidden) body.Timestamp = new Date(ts.value).getTime() / 1000;
    page = 0;
    try {
      const it = await api('GetShardIterator', body);
      await show(it.ShardIterator);
    } catch (e) {
      showError(e);
    }
  });
  return {
    title: [[name, `#/stream/${enc}`], ['Records', `#/stream/${enc}/records`]],
    el: h(
      'div',
      {},
      h('h1', {}, `Records of ${name}`),
      form,
      status,
      h('div', { class: 'scroll' }, h('table', { testid: 'records-table', class: 'records' }, h('thead', {}, h('tr', {}, ['Sequence number', 'Arrival', 'Partition key', 'Data'].map((c) => h('th', { scope: 'col' }, c)))), tbody)),
      h('p', {}, nextBtn),
    ),
  };
}

// ------------------------------------------------------------------ routing

let routeToken = 0;

async function route() {
  const [path, query] = (location.hash || '#/').slice(1).split('?');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  const token = ++routeToken;
  onSample = null;
  let view;
  try {
    if (parts[0] === 'stream' && parts[1]) {
      view = parts[2] === 'records' ? await recordsPage(parts[1], new URLSearchParams(query || '')) : await streamPage(parts[1]);
    } else {
      view = await streamsPage();
    }
  } catch (e) {
    if (token !== routeToken) return;
    showError(e);
    view = { title: [], el: h('p', { testid: 'load-failed' }, 'This page could not be loaded. ', h('a', { href: '#/' }, 'Back to the streams.')) };
  }
  // A later navigation started while this one loaded: it wins.
  if (token !== routeToken) return;
  const crumbs = [['Streams', '#/'], ...view.title];
  $('#crumbs').replaceChildren(...crumbs.map(([label, href], i) => h('li', {}, i === crumbs.length - 1 ? h('span', { 'aria-current': 'page' }, label) : h('a', { href }, label))));
  document.title = `${crumbs[crumbs.length - 1][0]} · Shardlog console`;
  $('#main').replaceChildren(view.el);
  $('#main').setAttribute('data-page', parts[2] || parts[0] || 'streams');
  onSample = view.tick || null;
}

// A path below /console (a deep link such as /console/stream/NAME) names the
// same view as the fragment #/stream/NAME; move it there so links and the
// back button work on one scheme.
if (!location.hash && location.pathname.startsWith('/console/') && location.pathname.length > '/console/'.length) {
  history.replaceState(null, '', `/console#${location.pathname.slice('/console'.length)}`);
}

window.addEventListener('hashchange', () => {
  clearError();
  route().then(() => $('#main').focus());
});
route();
sample();
