/* xorrent web UI. Talks only the legacy Transmission RPC (POST /transmission/rpc),
 * so there is no second API to keep in step with the daemon.
 *
 * DOM contract (tests/web/browser.py and the daemon's tests rely on it):
 *  - #list holds one element per torrent: class "torrent", data-hash="<40-hex info-hash>",
 *    data-id="<rpc id>", containing .name (text = torrent name), .progress[data-percent]
 *    (floor(percentDone*100), 0..100), .state ("Downloading", "Seeding", "Paused", "Checking",
 *    "Queued", "Error: ..."), and buttons [data-action=pause|resume|remove|details]
 *    (pause is hidden while stopped, resume while running).
 *  - Remove opens <dialog id="remove-dialog"> with [data-action=remove-keep],
 *    [data-action=remove-delete] (deletes data) and [data-action=remove-cancel].
 *  - Add: #magnet + #add-magnet; #torrent-file (multiple, adds on change); dropping .torrent
 *    files or magnet text anywhere; pasting a magnet link outside an input.
 *  - Limits: #limit-down / #limit-up (KiB/s, empty or 0 = unlimited) + #apply-limits.
 *    Totals in #totals.
 *  - #details (hidden when closed): #d-files rows with input.wanted[data-index], #d-peers,
 *    #d-trackers; [data-action=close-details] closes it.
 * Every string that comes from a torrent, peer or tracker is set with textContent/value only.
 */
'use strict';

// location.origin never carries user:pass@, which fetch() would refuse.
const RPC_URL = location.origin + '/transmission/rpc';
const POLL_MS = 2000, HIDDEN_POLL_MS = 10000;
const LIST_FIELDS = ['id', 'name', 'hashString', 'status', 'percentDone', 'totalSize', 'sizeWhenDone',
  'leftUntilDone', 'rateDownload', 'rateUpload', 'peersConnected', 'eta', 'uploadRatio', 'error',
  'errorString', 'magnetLink', 'addedDate', 'metadataPercentComplete', 'recheckProgress'];
const DETAIL_FIELDS = ['id', 'hashString', 'files', 'fileStats', 'wanted', 'peers', 'trackerStats',
  'downloadDir', 'downloadedEver', 'uploadedEver'];

const $ = (sel, root = document) => root.querySelector(sel);
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text != null) e.textContent = text;
  return e;
}
// Skip identical writes so a 2 s poll does not churn layout or selection.
function setText(node, s) {
  s = String(s);
  if (node.textContent !== s) node.textContent = s;
}

/* ---------- formatting ---------- */
const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
function fmtBytes(n) {
  if (!Number.isFinite(n) || n < 0) return '–';
  let i = 0;
  while (n >= 1024 && i < UNITS.length - 1) { n /= 1024; i++; }
  return `${i ? n.toFixed(n < 10 ? 2 : n < 100 ? 1 : 0) : n} ${UNITS[i]}`;
}
const fmtRate = n => (n > 0 ? `${fmtBytes(n)}/s` : '–');
function fmtEta(s) {
  if (s === -2) return '∞';           // unknown: no peers sending
  if (!(s >= 0)) return '–';          // -1: not available
  const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  return m ? `${m}m ${s % 60}s` : `${s}s`;
}
function fmtRatio(r) {
  if (r === -2) return '∞';
  if (typeof r !== 'number' || r < 0) return '–';
  return r.toFixed(r < 10 ? 2 : 1);
}
const plural = (n, w) => `${n} ${w}${n === 1 ? '' : 's'}`;
const pctFloor = p => Math.max(0, Math.min(100, Math.floor((p || 0) * 100 + 1e-9)));
function fmtPct(p) {
  p = p || 0;
  return p >= 1 ? '100%' : `${(Math.floor(p * 1000) / 10).toFixed(1)}%`;
}

// Transmission status codes -> [label, css class]. Only local errors (error 3) replace the
// state: tracker warnings/errors (1, 2) are shown as a hint, the torrent still runs.
function stateOf(t) {
  if (t.error === 3) return [`Error: ${t.errorString || 'unknown'}`, 'err'];
  switch (t.status) {
    case 0: return ['Paused', 'stopped'];
    case 1: return ['Queued to check', 'check'];
    case 2: return [t.recheckProgress > 0 ? `Checking ${fmtPct(t.recheckProgress)}` : 'Checking', 'check'];
    case 3: return ['Queued', 'queued'];
    case 4: return [t.metadataPercentComplete < 1 ? 'Fetching metadata' : 'Downloading', 'down'];
    case 5: return ['Queued', 'queued'];
    case 6: return ['Seeding', 'seed'];
    default: return ['Unknown', 'stopped'];
  }
}

/* ---------- RPC ---------- */
let sessionId = '';
let idWait = null;  // while a request is finding out the session id: resolves when it has
class RpcError extends Error {}

async function rpc(method, args) {
  const body = JSON.stringify(args ? { method, arguments: args } : { method });
  // Before the session id is known, one request finds it out (its 409 carries it) and those
  // made meanwhile wait for that answer instead of each paying a 409 round trip: at start the
  // session info and the first poll go out together right after a single handshake.
  while (!sessionId && idWait) await idWait;
  let found = null;
  if (!sessionId) idWait = new Promise(resolve => { found = resolve; });
  for (let attempt = 0; ; attempt++) {
    const headers = { 'Content-Type': 'application/json' };
    if (sessionId) headers['X-Transmission-Session-Id'] = sessionId;
    let res;
    try {
      res = await fetch(RPC_URL, { method: 'POST', headers, body, credentials: 'same-origin', cache: 'no-store' });
    } catch {
      throw new RpcError('cannot reach the daemon');
    } finally {
      // CSRF handshake: a 409 carries the id to use. Waiting requests may go on now.
      if (res && res.status === 409) sessionId = res.headers.get('X-Transmission-Session-Id') || '';
      if (found) { idWait = null; found(); found = null; }
    }
    if (res.status === 409 && attempt < 2) continue;  // retry with the new id
    if (res.status === 401) throw new RpcError('not authorized (reload the page to log in)');
    if (!res.ok) throw new RpcError(`HTTP ${res.status}`);
    let data;
    try { data = await res.json(); } catch { throw new RpcError('malformed response'); }
    if (data.result !== 'success') throw new RpcError(String(data.result || 'request failed'));
    return data.arguments || {};
  }
}

/* ---------- status line and toast ---------- */
let toastTimer = 0;
function toast(msg, isError = false) {
  const t = $('#toast');
  t.textContent = msg;
  t.className = isError ? 'err' : '';
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, isError ? 8000 : 3500);
}

let online = null;
function setConn(ok, why = '') {
  const c = $('#conn');
  c.className = `conn ${ok ? 'ok' : 'bad'}`;
  setText(c, ok ? 'Connected' : `Disconnected: ${why}; retrying…`);
  // After an outage the daemon may have restarted with other settings.
  if (ok && online === false) loadSession();
  online = ok;
}

/* ---------- session: info and global limits ---------- */
async function loadSession() {
  try {
    const s = await rpc('session-get');
    const parts = [s.version ? `Daemon ${s.version}` : '', s['download-dir'] ? `Saving to ${s['download-dir']}` : ''];
    setText($('#session-info'), parts.filter(Boolean).join(' · '));
    fillLimit($('#limit-down'), s['speed-limit-down-enabled'], s['speed-limit-down']);
    fillLimit($('#limit-up'), s['speed-limit-up-enabled'], s['speed-limit-up']);
  } catch (e) {
    toast(`Could not read session: ${e.message}`, true);
  }
}
function fillLimit(input, enabled, value) {
  if (document.activeElement === input) return; // don't fight the user's typing
  input.value = enabled && value > 0 ? value : '';
}
function parseLimit(v) {
  v = v.trim();
  if (v === '') return 0;
  return /^\d+$/.test(v) ? Number(v) : null;
}
$('#limits-form').addEventListener('submit', async e => {
  e.preventDefault();
  const down = parseLimit($('#limit-down').value), up = parseLimit($('#limit-up').value);
  if (down === null || up === null) return toast('Limits are whole KiB/s; leave empty for unlimited', true);
  const args = { 'speed-limit-down-enabled': down > 0, 'speed-limit-up-enabled': up > 0 };
  if (down > 0) args['speed-limit-down'] = down;  // keep the stored value when only disabling
  if (up > 0) args['speed-limit-up'] = up;
  try {
    await rpc('session-set', args);
    const show = n => (n > 0 ? `${n} KiB/s` : 'unlimited');
    toast(`Limits set: ↓ ${show(down)}, ↑ ${show(up)}`);
    document.activeElement.blur();
    loadSession();
  } catch (err) {
    toast(`Could not set limits: ${err.message}`, true);
  }
});

/* ---------- torrent list ----------
 * Sized for thousands of torrents (1000 rows is a normal seedbox):
 *  - the first render builds every row off-document and appends them in one DocumentFragment;
 *  - building a row is one cloneNode plus positional lookups (no selector queries, no
 *    classList/dataset wrappers): with 1000 rows every DOM call per row counts;
 *  - a poll writes only what changed: a row whose polled fields all equal last poll's is
 *    skipped outright, and in a changed row only the texts/attributes whose rendered value
 *    differs are written (each write dirties style/layout for its row);
 *  - nothing here reads layout, so writes never force a synchronous reflow;
 *  - rows off screen skip style, layout and paint (content-visibility in style.css);
 *  - clicks are handled by one delegated listener on #list, not per row.
 */
const rows = new Map();   // hashString -> row: { el, q: cached nodes, t: last torrent, v: last view, cls }
let byId = new Map();     // id -> torrent, from the last poll
const listEl = $('#list');
const rowTpl = $('#row-tpl').content.firstElementChild;
const TEXT_CELLS = ['name', 'size', 'pct', 'state', 'down', 'up', 'peers', 'eta', 'ratio'];

function makeRow() {
  const el = rowTpl.cloneNode(true);
  // Cells by position, in the order of #row-tpl in index.html (keep the two in step).
  const [name, size, progress, state, down, up, peers, eta, ratio, actions] = el.children;
  const [pause, resume] = actions.children;
  const q = { name, size, progress, fill: progress.firstElementChild.firstElementChild,
    pct: progress.lastElementChild, state, down, up, peers, eta, ratio, pause, resume };
  return { el, q, t: null, v: null, cls: '' };
}

// What a row shows, as strings (and one boolean); updateRow compares it with the last one.
function rowView(t) {
  const [label, cls] = stateOf(t);
  const warn = t.error === 1 || t.error === 2;
  const size = t.sizeWhenDone || t.totalSize;
  return {
    cls: `torrent row st-${cls}${warn ? ' warn' : ''}`,  // + ' selected', see rowClass
    hash: t.hashString, id: String(t.id),
    name: t.name || t.hashString, nameTitle: t.name || '',
    size: size > 0 ? fmtBytes(size) : '–',
    percent: String(pctFloor(t.percentDone)),
    bar: `translateX(${Math.min(100, (t.percentDone || 0) * 100) - 100}%)`,  // see .progress .fill
    pct: fmtPct(t.percentDone),
    state: label, stateTitle: warn ? `Tracker: ${t.errorString}` : label,
    down: fmtRate(t.rateDownload), up: fmtRate(t.rateUpload),
    peers: String(t.peersConnected ?? 0),
    eta: t.status === 4 ? fmtEta(t.eta) : '–',
    ratio: fmtRatio(t.uploadRatio),
    running: t.status !== 0,
  };
}

// The row's class list: its state classes plus "selected" while its details are open.
function rowClass(r) {
  const c = detail && detail.id === r.t.id ? `${r.v.cls} selected` : r.v.cls;
  if (c !== r.cls) { r.el.className = c; r.cls = c; }
}

// rowView reads only polled fields, so equal polled fields mean an identical row.
const samePolled = (a, b) => LIST_FIELDS.every(f => a[f] === b[f]);

function updateRow(r, t) {
  const o = r.t && samePolled(r.t, t) ? null : r.v || {};
  r.t = t;
  if (o) {  // something polled changed (or a new row): write the parts that render differently
    const v = rowView(t), { el: e, q } = r;
    r.v = v;
    if (v.hash !== o.hash) e.setAttribute('data-hash', v.hash);
    if (v.id !== o.id) e.setAttribute('data-id', v.id);
    // textContent on a cell holding one Text node just updates that node.
    for (const k of TEXT_CELLS) if (v[k] !== o[k]) q[k].textContent = v[k];
    if (v.nameTitle !== o.nameTitle) q.name.title = v.nameTitle;
    if (v.stateTitle !== o.stateTitle) q.state.title = v.stateTitle;
    if (v.percent !== o.percent) q.progress.setAttribute('data-percent', v.percent);
    if (v.bar !== o.bar) q.fill.style.transform = v.bar;
    if (v.running !== o.running) { q.pause.hidden = !v.running; q.resume.hidden = v.running; }
  }
  rowClass(r);
}

function renderList(list) {
  // Newest first; id breaks ties so the order never flickers between polls.
  list.sort((a, b) => (b.addedDate || 0) - (a.addedDate || 0) || b.id - a.id);
  const seen = new Set(), fresh = listEl.firstElementChild === null;
  const order = list.map(t => {
    seen.add(t.hashString);
    let r = rows.get(t.hashString);
    if (!r) { r = makeRow(); rows.set(t.hashString, r); }
    updateRow(r, t);
    return r;
  });
  for (const [hash, r] of rows) if (!seen.has(hash)) { r.el.remove(); rows.delete(hash); }
  if (fresh) {
    // First render (or the list was empty): one insertion for all rows.
    const frag = document.createDocumentFragment();
    for (const r of order) frag.append(r.el);
    listEl.append(frag);
  } else {
    // Walk the shown rows alongside the wanted order and move only nodes out of place, so
    // focus and hover survive a poll and an unchanged order costs no DOM write at all.
    let cur = listEl.firstElementChild;
    for (const r of order) {
      if (r.el === cur) cur = cur.nextElementSibling;
      else listEl.insertBefore(r.el, cur);
    }
  }
  byId = new Map(list.map(t => [t.id, t]));
  const empty = $('#empty');
  if (empty.hidden !== list.length > 0) empty.hidden = list.length > 0;
  document.body.classList.toggle('has-torrents', list.length > 0);
  if (detail && !byId.has(detail.id)) closeDetails();
}

function renderTotals(s) {
  const down = fmtBytes(s.downloadSpeed || 0), up = fmtBytes(s.uploadSpeed || 0);
  setText($('#total-down'), `↓ ${down}/s`);
  setText($('#total-up'), `↑ ${up}/s`);
  setText($('#total-count'), `${plural(s.torrentCount || 0, 'torrent')} · ${s.activeTorrentCount || 0} active`);
  const cum = s['cumulative-stats'];
  if (cum) setText($('#cumulative'), `All time: ↓ ${fmtBytes(cum.downloadedBytes || 0)} ↑ ${fmtBytes(cum.uploadedBytes || 0)}`);
  const title = s.downloadSpeed || s.uploadSpeed ? `↓ ${down}/s ↑ ${up}/s · xorrent` : 'xorrent';
  if (document.title !== title) document.title = title;
}

/* ---------- polling ---------- */
let timer = 0, inflight = null, again = false, gen = 0, staleUpTo = 0;
// After a change, results of polls that started before it completed would undo it on screen.
const changed = () => { staleUpTo = gen; };

async function refresh() {
  clearTimeout(timer);
  if (inflight) { again = true; return; }  // coalesce: one more poll after the current one
  const my = ++gen, want = detail && detail.id;
  inflight = (async () => {
    try {
      const jobs = [rpc('torrent-get', { fields: LIST_FIELDS }), rpc('session-stats')];
      if (want != null) jobs.push(rpc('torrent-get', { ids: [want], fields: DETAIL_FIELDS }));
      const [tg, stats, dg] = await Promise.all(jobs);
      if (my <= staleUpTo) return;
      renderList(tg.torrents || []);
      renderTotals(stats);
      if (dg && detail && detail.id === want) renderDetail((dg.torrents || [])[0], my);
      setConn(true);
    } catch (e) {
      setConn(false, e.message);
    }
  })();
  await inflight;
  inflight = null;
  if (again) { again = false; return refresh(); }
  timer = setTimeout(refresh, document.hidden ? HIDDEN_POLL_MS : POLL_MS);
}
document.addEventListener('visibilitychange', () => { if (!document.hidden) refresh(); });

/* ---------- row actions ---------- */
async function act(method, t) {
  try {
    await rpc(method, { ids: [t.id] });
    changed();
  } catch (e) {
    toast(`${method} failed: ${e.message}`, true);
  }
  refresh();
}

listEl.addEventListener('click', e => {
  const row = e.target.closest('.torrent');
  const t = row && rows.get(row.dataset.hash)?.t;
  if (!t) return;
  const btn = e.target.closest('[data-action]');
  const action = btn ? btn.dataset.action : e.target.closest('.name') ? 'details' : '';
  if (action === 'pause') act('torrent-stop', t);
  else if (action === 'resume') act('torrent-start', t);
  else if (action === 'remove') askRemove(t);
  else if (action === 'details') detail && detail.id === t.id ? closeDetails() : openDetails(t);
});

/* ---------- remove dialog ---------- */
const dlg = $('#remove-dialog');
let removeTarget = null;
function askRemove(t) {
  removeTarget = t;
  $('#remove-name').textContent = t.name || t.hashString;
  dlg.returnValue = '';
  dlg.showModal();
}
dlg.addEventListener('close', async () => {
  const t = removeTarget, how = dlg.returnValue;
  removeTarget = null;
  if (!t || (how !== 'keep' && how !== 'delete')) return;
  try {
    await rpc('torrent-remove', { ids: [t.id], 'delete-local-data': how === 'delete' });
    changed();
    const r = rows.get(t.hashString);  // drop it now rather than on the next poll
    if (r) { r.el.remove(); rows.delete(t.hashString); }
    if (detail && detail.id === t.id) closeDetails();
    $('#empty').hidden = rows.size > 0;
    toast(how === 'delete' ? `Removed ${t.name} and its data` : `Removed ${t.name}`);
  } catch (e) {
    toast(`Remove failed: ${e.message}`, true);
  }
  refresh();
});

/* ---------- adding ---------- */
async function addTorrent(args, label) {
  try {
    const r = await rpc('torrent-add', args);
    changed();
    const dup = r['torrent-duplicate'], t = r['torrent-added'] || dup;
    toast(dup ? `Already added: ${dup.name || label}` : `Added ${(t && t.name) || label}`);
    refresh();
    return true;
  } catch (e) {
    toast(`Could not add ${label}: ${e.message}`, true);
    return false;
  }
}

function readBase64(file) {
  return new Promise((resolve, reject) => {
    const fr = new FileReader();
    fr.onload = () => resolve(String(fr.result).slice(String(fr.result).indexOf(',') + 1));
    fr.onerror = () => reject(fr.error);
    fr.readAsDataURL(file);
  });
}

async function addFiles(files) {
  for (const f of Array.from(files)) {
    try {
      await addTorrent({ metainfo: await readBase64(f) }, f.name);
    } catch (e) {
      toast(`Could not read ${f.name}: ${e.message}`, true);
    }
  }
}

// Accepts text holding one or more links (drops and pastes can carry several lines).
function addLinks(text) {
  const links = String(text).split(/\s+/).filter(s => /^(magnet:|https?:\/\/)/i.test(s));
  if (!links.length) return toast('Nothing to add: use a magnet link or a .torrent file', true);
  links.forEach(l => addTorrent({ filename: l }, 'link'));
}

$('#add-form').addEventListener('submit', async e => {
  e.preventDefault();
  const input = $('#magnet'), link = input.value.trim();
  if (!link) { input.focus(); return toast('Paste a magnet link first', true); }
  if (await addTorrent({ filename: link }, 'link')) input.value = '';
});

$('#torrent-file').addEventListener('change', async e => {
  const input = e.target;
  await addFiles(input.files);
  input.value = '';  // so choosing the same file again fires change
});

// Drag and drop anywhere. A depth counter because dragenter/leave fire for every child.
const dropEl = $('#drop');
let dragDepth = 0;
const droppable = e => Array.from(e.dataTransfer?.types || []).some(t => t === 'Files' || t.startsWith('text/'));
document.addEventListener('dragenter', e => {
  if (!droppable(e)) return;
  e.preventDefault();
  dragDepth++;
  dropEl.hidden = false;
});
document.addEventListener('dragover', e => {
  if (!droppable(e)) return;
  e.preventDefault();
  e.dataTransfer.dropEffect = 'copy';
});
document.addEventListener('dragleave', () => {
  if (--dragDepth <= 0) { dragDepth = 0; dropEl.hidden = true; }
});
document.addEventListener('drop', e => {
  e.preventDefault();
  dragDepth = 0;
  dropEl.hidden = true;
  const dt = e.dataTransfer;
  if (dt.files && dt.files.length) return addFiles(dt.files);
  addLinks(dt.getData('text/uri-list').replace(/^#.*$/gm, '').trim() || dt.getData('text/plain'));
});
document.addEventListener('paste', e => {
  if (e.target.closest && e.target.closest('input, textarea')) return;
  const text = e.clipboardData?.getData('text') || '';
  if (/^\s*magnet:/i.test(text)) { e.preventDefault(); addLinks(text); }
});

/* ---------- details panel ---------- */
const panel = $('#details');
let detail = null;  // { id, hash, fileRows: [] }

function openDetails(t) {
  detail = { id: t.id, hash: t.hashString, fileRows: [] };
  for (const id of ['d-files', 'd-peers', 'd-trackers']) $(`#${id}`).replaceChildren(el('p', 'muted', 'Loading…'));
  for (const id of ['d-files-n', 'd-peers-n', 'd-trackers-n']) setText($(`#${id}`), '');
  $('#d-summary').replaceChildren();
  setText($('#d-name'), t.name || t.hashString);
  panel.hidden = false;
  document.body.classList.add('details-open');
  for (const r of rows.values()) rowClass(r);
  refresh();
}

function closeDetails() {
  detail = null;
  panel.hidden = true;
  document.body.classList.remove('details-open');
  for (const r of rows.values()) rowClass(r);
}
panel.addEventListener('click', e => { if (e.target.closest('[data-action=close-details]')) closeDetails(); });
document.addEventListener('keydown', e => { if (e.key === 'Escape' && detail && !dlg.open) closeDetails(); });

function summaryItem(dl, term, value, cls) {
  dl.append(el('dt', '', term));
  const dd = el('dd', cls || '');
  if (value instanceof Node) dd.append(value); else dd.textContent = value;
  dl.append(dd);
}

function renderDetail(d, my) {
  if (!d) return closeDetails();
  const t = byId.get(d.id) || {};
  setText($('#d-name'), t.name || d.hashString);

  const dl = el('dl', 'summary');
  dl.id = 'd-summary';
  summaryItem(dl, 'State', stateOf(t)[0], t.error === 3 ? 'bad' : '');
  if (t.error === 1 || t.error === 2) summaryItem(dl, 'Tracker', t.errorString, 'warn');
  const size = t.sizeWhenDone || t.totalSize || 0;
  summaryItem(dl, 'Have', `${fmtPct(t.percentDone)} of ${fmtBytes(size)}`);
  summaryItem(dl, 'Transfer', `↓ ${fmtBytes(d.downloadedEver || 0)} · ↑ ${fmtBytes(d.uploadedEver || 0)} · ratio ${fmtRatio(t.uploadRatio)}`);
  if (t.addedDate) summaryItem(dl, 'Added', new Date(t.addedDate * 1000).toLocaleString());
  if (d.downloadDir) summaryItem(dl, 'Location', d.downloadDir, 'mono');
  summaryItem(dl, 'Hash', d.hashString || t.hashString || '', 'mono');
  if (t.magnetLink) {
    const m = el('input', 'magnet-out');
    m.readOnly = true;
    m.value = t.magnetLink;
    m.addEventListener('focus', () => m.select());
    summaryItem(dl, 'Magnet', m);
  }
  // Keep the old summary while the magnet field is focused so a selection is not lost.
  const old = $('#d-summary');
  if (!old.contains(document.activeElement)) old.replaceWith(dl);

  renderFiles(d, t, my);
  renderPeers(d.peers || []);
  renderTrackers(d.trackerStats || []);
}

function renderFiles(d, t, my) {
  const files = d.files || [], stats = d.fileStats || [], box = $('#d-files');
  setText($('#d-files-n'), files.length ? `(${files.length})` : '');
  if (!files.length) {
    box.replaceChildren(el('p', 'muted', t.metadataPercentComplete < 1 ? 'Waiting for metadata…' : 'No files'));
    detail.fileRows = [];
    return;
  }
  if (detail.fileRows.length !== files.length) {
    detail.fileRows = files.map((f, i) => {
      const row = el('label', 'file');
      const cb = el('input', 'wanted');
      cb.type = 'checkbox';
      cb.dataset.index = i;
      const name = el('span', 'fname'), meta = el('span', 'fmeta num');
      const bar = el('span', 'mini'), fill = el('span', 'fill');
      bar.append(fill);
      row.append(cb, name, meta, bar);
      return { row, cb, name, meta, fill };
    });
    box.replaceChildren(...detail.fileRows.map(r => r.row));
  }
  // Multi-file names start with the torrent's folder; showing it on every row is noise.
  const prefix = t.name ? `${t.name}/` : '';
  files.forEach((f, i) => {
    const r = detail.fileRows[i], st = stats[i] || {};
    const path = prefix && f.name.startsWith(prefix) ? f.name.slice(prefix.length) : f.name;
    setText(r.name, path);
    r.name.title = f.name;
    const done = st.bytesCompleted ?? f.bytesCompleted ?? 0, p = f.length ? done / f.length : 1;
    setText(r.meta, `${fmtPct(p)} of ${fmtBytes(f.length)}`);
    r.fill.style.width = `${p * 100}%`;
    const wanted = st.wanted ?? (d.wanted ? d.wanted[i] : true);
    // A toggle in flight wins over polls that started before the daemon applied it.
    if (!(Number(r.cb.dataset.after) >= my)) r.cb.checked = Boolean(wanted);
    r.row.classList.toggle('skipped', !r.cb.checked);
  });
}

$('#d-files').addEventListener('change', async e => {
  const cb = e.target;
  if (!cb.matches('input.wanted') || !detail) return;
  cb.dataset.after = Infinity;
  cb.closest('.file').classList.toggle('skipped', !cb.checked);
  try {
    await rpc('torrent-set', { ids: [detail.id], [cb.checked ? 'files-wanted' : 'files-unwanted']: [Number(cb.dataset.index)] });
  } catch (err) {
    cb.checked = !cb.checked;
    toast(`Could not change file selection: ${err.message}`, true);
  }
  cb.dataset.after = gen;  // polls started from now on reflect the change
  refresh();
});

function gridRows(box, countEl, items, empty, cells) {
  setText(countEl, items.length ? `(${items.length})` : '');
  if (!items.length) return box.replaceChildren(el('p', 'muted', empty));
  box.replaceChildren(...items.map(it => {
    const row = el('div', 'gl-row');
    for (const [cls, text, title] of cells(it)) {
      const c = el('span', cls, text);
      if (title) c.title = title;
      row.append(c);
    }
    return row;
  }));
}

function renderPeers(peers) {
  peers.sort((a, b) => (b.rateToClient + b.rateToPeer) - (a.rateToClient + a.rateToPeer));
  gridRows($('#d-peers'), $('#d-peers-n'), peers, 'No connected peers', p => [
    ['addr mono', p.address?.includes(':') ? `[${p.address}]:${p.port}` : `${p.address}:${p.port}`],
    ['client', p.clientName || 'unknown client', p.flagStr ? `flags ${p.flagStr}` : ''],
    ['num', fmtPct(p.progress)],
    ['num', `↓ ${fmtRate(p.rateToClient)}`],
    ['num', `↑ ${fmtRate(p.rateToPeer)}`],
  ]);
}

function renderTrackers(trackers) {
  const count = n => (n >= 0 ? n : '?');
  gridRows($('#d-trackers'), $('#d-trackers-n'), trackers, 'No trackers', tr => [
    ['addr', tr.host || tr.announce, tr.announce],
    ['client', tr.lastAnnounceResult || (tr.hasAnnounced ? '' : 'Not announced yet'), tr.lastAnnounceResult],
    ['num', `${count(tr.seederCount)} seeds`],
    ['num', `${count(tr.leecherCount)} peers`],
    ['num', `tier ${tr.tier ?? 0}`],
  ]);
}

/* ---------- start ---------- */
// Both at once: rpc() holds the poll back until the session request's 409 has handed out the
// id, so there is one handshake and no serial session-get before the list.
loadSession();
refresh();
