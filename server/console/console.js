'use strict';
// fedge console: the operators' web console. It talks to the coordinator's JSON API with the
// operator token the user pasted (kept in sessionStorage) and shows the jobs, one job's rounds
// (live, from the job's Server-Sent Events stream) and the devices. Everything that comes from
// the server goes into the DOM as text (textContent), never as HTML: device strings are
// untrusted. Chart.js is optional: without it the page shows tables only.

const TOKEN_KEY = 'fedge-token';
const REFRESH_MS = 5000;   // polling period of the page on screen
const STALL_MS = 30000;    // an event stream silent this long (not even a keepalive) is reopened
const COLORS = ['#1f6fb4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b', '#e377c2', '#17becf'];

const $ = (id) => document.getElementById(id);
const enc = encodeURIComponent;
const session = { token: sessionStorage.getItem(TOKEN_KEY) || '', me: null, page: null };

// ---------------------------------------------------------------------------------------
// Small helpers: DOM building and number formatting
// ---------------------------------------------------------------------------------------

// el('td', {class: 'acc', text: '0.9'}, child...) — strings among the children become text nodes.
function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null || v === false || v === '') continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k === 'data') Object.assign(e.dataset, v);
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined && c !== false) e.append(c);
  return e;
}
const td = (cls, text, title) => el('td', { class: cls, text: String(text), title });

// int64 fields arrive as strings, doubles as numbers; both go through num().
const num = (x) => { const n = Number(x); return Number.isFinite(n) ? n : 0; };
const fixed = (x, digits) => num(x).toFixed(digits);
const mb = (bytes, digits) => (num(bytes) / 1e6).toFixed(digits);  // MB = 10^6 bytes, as fedgectl
const eps = (x) => (num(x) > 0 ? String(Number(num(x).toPrecision(4))) : '-');
// "JOB_STATE_RUNNING" → "running"
const short = (name, prefix) => String(name || '-').replace(prefix, '').toLowerCase().replace(/_/g, ' ');
const isRunning = (job) => !!job && job.state === 'JOB_STATE_RUNNING';
const isOperator = () => session.me?.role === 'operator';
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function absTime(ms) {
  return num(ms) > 0 ? new Date(num(ms)).toLocaleString() : '';
}
function ago(ms) {
  if (num(ms) <= 0) return 'never';
  const s = Math.max(0, (Date.now() - num(ms)) / 1000);
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

// A table with a header row and an empty body; `cols` are [class, label, numeric?].
function makeTable(id, cols) {
  const table = el('table', { id }, el('thead'), el('tbody'));
  setHead(table, cols);
  return el('div', { class: 'scroll' }, table, el('p', { class: 'empty', hidden: true }));
}
function setHead(table, cols) {
  table.tHead.replaceChildren(el('tr', {}, ...cols.map(([, label, n]) => el('th', { class: n ? 'num' : '', text: label }))));
}
function setRows(table, rows, emptyText) {
  table.tBodies[0].replaceChildren(...rows);
  const empty = table.parentElement.querySelector('.empty');
  empty.textContent = emptyText;
  empty.hidden = rows.length > 0;
}

// ---------------------------------------------------------------------------------------
// API
// ---------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(message, status, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function errorOf(res) {
  let message = `${res.status} ${res.statusText}`.trim();
  let code = '';
  try {
    const body = await res.json();
    if (body && body.error) message = String(body.error);
    if (body && body.code) code = String(body.code);
  } catch { /* not JSON: keep the status line */ }
  return new ApiError(message, res.status, code);
}

const authHeaders = () => ({ Authorization: `Bearer ${session.token}` });

async function api(path, { method = 'GET', body, signal } = {}) {
  const headers = authHeaders();
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, {
      method, headers, signal, cache: 'no-store',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    if (err.name === 'AbortError') throw err;
    throw new ApiError(`cannot reach the coordinator (${err.message})`, 0, 'UNAVAILABLE');
  }
  if (!res.ok) throw await errorOf(res);
  return res.json();
}

// ---------------------------------------------------------------------------------------
// Banners, sign-in and sign-out
// ---------------------------------------------------------------------------------------

function showBanner(id, message) {
  const b = $(id);
  b.textContent = message;
  b.hidden = !message;
}
const showError = (message) => showBanner('error', message);
const notify = (message) => showBanner('notice', message);

// What every failed call ends in: a bad token signs out, anything else shows in the banner.
function fail(err) {
  if (!err || err.name === 'AbortError') return;
  if (err.status === 401) signOut(err.message);
  else showError(err.message || String(err));
}

function showLogin(message) {
  closePage();
  $('main').hidden = true;
  $('session').hidden = true;
  $('login-view').hidden = false;
  $('login-error').textContent = message || '';
  $('token').focus();
}

function signOut(message) {
  session.token = '';
  session.me = null;
  sessionStorage.removeItem(TOKEN_KEY);
  $('whoami').textContent = '';
  showBanner('error', '');
  showBanner('notice', '');
  showLogin(message);
}

async function signIn(token) {
  session.token = token;
  try {
    session.me = await api('/api/whoami');
  } catch (err) {
    if (err.status === 401 || err.status === 403) signOut(err.message);
    else showLogin(err.message);  // e.g. coordinator unreachable: keep the token, let them retry
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  $('whoami').textContent = `${session.me.name} (${session.me.role})`;
  $('login-view').hidden = true;
  $('session').hidden = false;
  $('main').hidden = false;
  route();
}

// ---------------------------------------------------------------------------------------
// Pages and routing. A page owns its timers, its fetches (one AbortController) and, on the
// job page, its event stream and charts; closePage() ends all of them.
// ---------------------------------------------------------------------------------------

function newPage(name) {
  closePage();
  const page = { name, closed: false, timer: 0, abort: new AbortController(), refresh: null };
  session.page = page;
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.route === name);
  return page;
}

function closePage() {
  const page = session.page;
  if (!page) return;
  page.closed = true;
  clearInterval(page.timer);
  page.abort.abort();
  for (const chart of Object.values(page.charts || {})) chart.destroy();
  session.page = null;
  setLive(null, false);
}

// Runs page.refresh now and every REFRESH_MS while the page is shown and the tab visible.
function poll(page) {
  page.refresh();
  page.timer = setInterval(() => { if (!document.hidden && !page.closed) page.refresh(); }, REFRESH_MS);
}

function route() {
  if (!session.me) return;
  showBanner('error', '');
  showBanner('notice', '');
  const hash = location.hash || '#/jobs';
  const m = hash.match(/^#\/jobs\/(.+)$/);
  let id = m?.[1];
  try { id = id && decodeURIComponent(id); } catch { /* a malformed escape: use it as it is */ }
  if (id) openJob(id);
  else if (hash === '#/devices') openDevices();
  else openJobs();
}

function stopButton(job, id) {
  if (!isOperator() || !isRunning(job)) return null;
  return el('button', {
    id, class: 'stop', type: 'button', text: 'Stop', data: { jobId: job.job_id },
    onclick: () => stopJob(job.job_id),
  });
}

async function stopJob(jobId) {
  if (!window.confirm(`Stop job ${jobId}?`)) return;
  try {
    const job = await api(`/api/jobs/${enc(jobId)}/stop`, { method: 'POST', body: { reason: 'stopped from the console' } });
    notify(`Job ${job.job_id || jobId}: ${short(job.state, 'JOB_STATE_')}.`);
  } catch (err) {
    fail(err);
  }
  session.page?.refresh?.();
}

// ---------------------------------------------------------------------------------------
// #/jobs
// ---------------------------------------------------------------------------------------

const JOB_COLS = [['id', 'job'], ['name', 'name'], ['state', 'state'], ['rounds', 'rounds', 1],
  ['acc', 'accuracy', 1], ['eps', 'ε spent', 1], ['actions', '']];

function openJobs() {
  const page = newPage('jobs');
  $('main').replaceChildren(el('h1', { text: 'Jobs' }), makeTable('jobs', JOB_COLS));
  let shown = '';
  page.refresh = async () => {
    try {
      const data = await api('/api/jobs', { signal: page.abort.signal });
      const jobs = data.jobs || [];
      const sig = JSON.stringify([jobs, session.me?.role]);
      if (page.closed || sig === shown) return;  // unchanged: keep the rows (and their buttons)
      shown = sig;
      setRows($('jobs'), jobs.map(jobRow), 'No jobs yet.');
    } catch (err) {
      fail(err);
    }
  };
  poll(page);
}

function jobRow(job) {
  const c = job.config || {};
  const m = job.latest_metrics || {};
  const st = short(job.state, 'JOB_STATE_');
  return el('tr', { data: { jobId: job.job_id } },
    el('td', { class: 'id' }, el('a', { href: `#/jobs/${enc(job.job_id)}`, text: job.job_id })),
    td('name', c.name || ''),
    td(`state st-${st}`, st, job.message),
    td('rounds', `${num(job.completed_rounds)}/${num(c.rounds)}`),
    td('acc', m.evaluated ? fixed(m.test_accuracy, 4) : '-'),
    td('eps', eps(m.epsilon)),
    el('td', { class: 'actions' }, stopButton(job)));
}

// ---------------------------------------------------------------------------------------
// #/jobs/ID
// ---------------------------------------------------------------------------------------

const ROUND_COLS = [['round', 'round', 1], ['state', 'state'], ['acc', 'accuracy', 1], ['loss', 'test loss', 1],
  ['clients', 'clients', 1], ['dropped', 'dropped', 1], ['rejected', 'rejected', 1],
  ['train-loss', 'train loss', 1], ['seconds', 'seconds', 1], ['up', 'up MB', 1], ['down', 'down MB', 1],
  ['eps', 'ε', 1]];
const SECAGG_COL = ['secagg', 'secagg U1/U2/U3/unmasked', 1];
const NOTES_COL = ['notes', 'notes'];
const ROUND_CLIENT_COLS = [['id', 'device'], ['tier', 'tier'], ['outcome', 'outcome'], ['reason', 'reason'],
  ['examples', 'examples', 1], ['train-loss', 'train loss', 1], ['seconds', 'seconds', 1],
  ['rss', 'peak RSS MB', 1], ['up', 'up MB', 1], ['down', 'down MB', 1]];

function openJob(id) {
  const page = newPage('jobs');
  Object.assign(page, {
    id, job: null, rounds: [], charts: {}, live: false, streaming: false,
    buffer: null, reloadAgain: false,  // see loadRounds
  });
  const charts = typeof Chart === 'undefined'
    ? el('p', { class: 'muted', text: 'Charts are unavailable (chart.js did not load); the tables below are complete.' })
    : el('div', { class: 'charts' },
      chartBox('acc-chart', 'Accuracy and test loss'),
      chartBox('time-chart', 'Round time (s)'),
      chartBox('bytes-chart', 'Traffic per round (MB)'));
  $('main').replaceChildren(
    el('p', { class: 'crumbs' }, el('a', { href: '#/jobs', text: '← all jobs' })),
    el('section', { id: 'job-header' }, el('h1', { text: id })),
    charts,
    el('h2', { text: 'Rounds' }),
    makeTable('rounds', ROUND_COLS.concat([NOTES_COL])),
    el('h2', { id: 'round-clients-title', text: 'Devices in the latest round' }),
    makeTable('round-clients', ROUND_CLIENT_COLS));
  initCharts(page);
  page.refresh = () => {
    loadJob(page);
    // The stream keeps the rounds current while it is up; an ended job's rounds do not change.
    if (!page.live && (isRunning(page.job) || !page.roundsLoaded)) loadRounds(page);
  };
  poll(page);
}

async function loadJob(page) {
  try {
    const job = await api(`/api/jobs/${enc(page.id)}`, { signal: page.abort.signal });
    if (!page.closed) setJob(page, job);
  } catch (err) {
    fail(err);
  }
}

function setJob(page, job) {
  // A late GET must not undo a newer job_changed event.
  if (page.job && num(job.updated_unix_ms) < num(page.job.updated_unix_ms)) return;
  const sig = JSON.stringify(job);
  if (sig !== page.jobSig) {
    page.jobSig = sig;
    page.job = job;
    renderHeader(page);
  }
  if (isRunning(job) && !page.streaming && !page.noStream) runStream(page);
}

// Loads every round record. Events that arrive while the request is in flight are kept in
// page.buffer and applied on top of its answer, so that none is lost; a call made while
// another is in flight makes that one run again (its answer may predate what it must cover).
async function loadRounds(page) {
  if (page.buffer) { page.reloadAgain = true; return; }
  try {
    do {
      page.reloadAgain = false;
      page.buffer = [];
      const data = await api(`/api/jobs/${enc(page.id)}/rounds`, { signal: page.abort.signal });
      if (page.closed) return;
      page.rounds = data.rounds || [];
      for (const rec of page.buffer) upsertRound(page.rounds, rec);
    } while (page.reloadAgain);
    page.roundsLoaded = true;
  } catch (err) {
    fail(err);
  } finally {
    page.buffer = null;
  }
  if (!page.closed) renderRounds(page);
}

// Puts a record from the stream in place: it replaces the open record of its round, or the
// same attempt (same start time); a retried round number (after a FAILED attempt) is appended.
function upsertRound(list, rec) {
  for (let i = list.length - 1; i >= 0; i--) {
    const r = list[i];
    if (num(r.round) !== num(rec.round)) continue;
    const open = r.state === 'ROUND_STATE_OPEN';
    if (open || num(r.started_unix_ms) === num(rec.started_unix_ms)) {
      if (!open && rec.state === 'ROUND_STATE_OPEN') return;  // stale: that attempt closed already
      list[i] = rec;
      return;
    }
    break;  // the latest record of this round number is an earlier attempt
  }
  list.push(rec);
  list.sort((a, b) => num(a.round) - num(b.round));  // stable: attempts keep their order
}

// ---- live updates: the job's Server-Sent Events, read with fetch (EventSource cannot send
// the Authorization header) ----

function setLive(page, on) {
  if (page) {
    page.live = on;
    if (page !== session.page) return;
  }
  $('live').textContent = on ? 'live' : 'offline';
  $('live').className = on ? 'on' : 'off';
}

async function runStream(page) {
  page.streaming = true;
  let delay = 1000;
  try {
    while (!page.closed && isRunning(page.job)) {
      const ctl = new AbortController();
      const abort = () => ctl.abort();
      page.abort.signal.addEventListener('abort', abort);
      let watchdog = 0;
      const pet = () => { clearTimeout(watchdog); watchdog = setTimeout(abort, STALL_MS); };
      try {
        pet();
        const res = await fetch(`/api/jobs/${enc(page.id)}/events`, {
          headers: { ...authHeaders(), Accept: 'text/event-stream' }, signal: ctl.signal, cache: 'no-store',
        });
        if (!res.ok) throw await errorOf(res);
        setLive(page, true);
        delay = 1000;
        loadJob(page);     // catch up with what happened while not connected
        loadRounds(page);
        await readEvents(res.body, pet, (type, data) => onStreamEvent(page, type, data));
      } catch (err) {
        if (page.closed) return;
        if (err.status === 401) return fail(err);
        if (err.status >= 400 && err.status < 500 && err.status !== 408 && err.status !== 429) {
          page.noStream = true;  // will not get better by retrying; polling carries on
          return showError(`Live updates unavailable: ${err.message}`);
        }
      } finally {
        clearTimeout(watchdog);
        page.abort.signal.removeEventListener('abort', abort);
        setLive(page, false);
      }
      if (page.closed || !isRunning(page.job)) break;
      await sleep(delay);  // dropped while the job runs: reconnect after 1 s, then every 2 s
      delay = 2000;
      if (!page.closed) await loadJob(page);
    }
  } finally {
    page.streaming = false;
  }
  if (!page.closed) { loadJob(page); loadRounds(page); }  // the job ended: its final records
}

// Parses the text/event-stream body: "event: x" and "data: y" lines, a blank line ends an
// event, lines starting with ":" are comments (keepalives). Resolves when the stream ends.
async function readEvents(body, onChunk, onEvent) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  let type = '';
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    onChunk();
    buf += decoder.decode(value, { stream: true });
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl).replace(/\r$/, '');
      buf = buf.slice(nl + 1);
      if (line === '') {
        if (data.length) onEvent(type || 'message', data.join('\n'));
        type = '';
        data = [];
      } else if (!line.startsWith(':')) {
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        const val = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
        if (field === 'event') type = val;
        else if (field === 'data') data.push(val);
      }
    }
  }
}

function onStreamEvent(page, type, text) {
  if (page.closed) return;
  let msg;
  try { msg = JSON.parse(text); } catch { return; }
  if (type === 'round_opened' || type === 'round_closed') {
    upsertRound(page.rounds, msg);
    if (page.buffer) page.buffer.push(msg);
    renderRounds(page);
    if (type === 'round_closed') loadJob(page);
  } else if (type === 'job_changed') {
    setJob(page, msg);
  }
}

// ---- rendering ----

function renderHeader(page) {
  const job = page.job;
  const c = job.config || {};
  const m = job.latest_metrics || {};
  const p = c.privacy || {};
  const st = short(job.state, 'JOB_STATE_');
  let rounds = `${num(job.completed_rounds)}/${num(c.rounds)}`;
  if (num(job.current_round) > 0) rounds += ` (round ${num(job.current_round)} in flight)`;
  const privacy = [];
  if (num(p.noise_multiplier) > 0) privacy.push(`DP z=${num(p.noise_multiplier)} S=${num(p.clip_norm)} δ=${num(p.delta)}`);
  if (num(p.secure_aggregation_threshold) > 0) {
    privacy.push(`SecAgg${p.secure_aggregation_plus ? '+' : ''} t=${num(p.secure_aggregation_threshold)}`);
  }
  let epsText = eps(m.epsilon);
  if (num(p.epsilon_budget) > 0) epsText += ` of ${num(p.epsilon_budget)}`;
  const fact = (label, value, id, cls) => [el('dt', { text: label }), el('dd', { id, class: cls, text: String(value) })];
  $('job-header').replaceChildren(
    el('div', { class: 'title' },
      el('h1', { id: 'job-name', text: c.name || job.job_id }),
      el('span', { class: 'muted', text: job.job_id }),
      stopButton(job, 'stop-job')),
    el('dl', { class: 'facts' },
      ...fact('state', st, 'job-state', `state st-${st}`),
      ...fact('architecture', c.architecture || c.model_spec?.name || '-', 'job-arch'),
      ...fact('rounds', rounds, 'job-rounds'),
      ...fact('accuracy', m.evaluated ? fixed(m.test_accuracy, 4) : '-', 'job-acc'),
      ...fact('ε spent', epsText, 'job-eps'),
      ...fact('privacy', privacy.join(', ') || 'off'),
      ...fact('created', absTime(job.created_unix_ms) || '-'),
      ...fact('updated', absTime(job.updated_unix_ms) || '-')),
    ...(job.message ? [el('p', { class: 'message', text: job.message })] : []));
}

function renderRounds(page) {
  if (page.closed) return;
  const withSecagg = num(page.job?.config?.privacy?.secure_aggregation_threshold) > 0 ||
    page.rounds.some((r) => num(r.metrics?.secure_aggregation?.advertised) > 0);
  const sig = JSON.stringify([page.rounds, withSecagg]);
  if (sig === page.roundsSig) return;  // nothing new: keep the DOM and the charts as they are
  page.roundsSig = sig;
  const table = $('rounds');
  setHead(table, ROUND_COLS.concat(withSecagg ? [SECAGG_COL, NOTES_COL] : [NOTES_COL]));
  setRows(table, page.rounds.map((r) => roundRow(r, withSecagg)), 'No rounds yet.');

  const latest = page.rounds.filter((r) => r.state === 'ROUND_STATE_COMPLETED').pop();
  const clients = latest?.metrics?.clients || [];
  $('round-clients-title').textContent = latest
    ? `Devices in the latest round (round ${num(latest.round)})` : 'Devices in the latest round';
  setRows($('round-clients'), clients.map(roundClientRow), latest ? 'No devices in that round.' : 'No completed round yet.');
  updateCharts(page);
}

function roundRow(r, withSecagg) {
  const m = r.metrics || {};
  const st = short(r.state, 'ROUND_STATE_');
  const has = r.state === 'ROUND_STATE_COMPLETED' || num(m.sampled) > 0;  // open rounds have no metrics
  const v = (text) => (has ? text : '-');
  const started = absTime(r.started_unix_ms);
  const cells = [
    td('round', num(r.round)),
    td('state', st, started && `started ${started}` + (num(r.closed_unix_ms) > 0 ? `, closed ${absTime(r.closed_unix_ms)}` : '')),
    td('acc', has && m.evaluated ? fixed(m.test_accuracy, 4) : '-'),
    td('loss', has && m.evaluated ? fixed(m.test_loss, 4) : '-'),
    td('clients', v(`${num(m.participants)}/${num(m.sampled)}`)),
    td('dropped', v(num(m.dropped))),
    td('rejected', v(num(m.rejected))),
    td('train-loss', v(fixed(m.train_loss, 4))),
    td('seconds', v(fixed(m.round_seconds, 1))),
    td('up', v(mb(m.bytes_up, 2))),
    td('down', v(mb(m.bytes_down, 2))),
    td('eps', v(eps(m.epsilon))),
  ];
  const sa = m.secure_aggregation || {};
  if (withSecagg) {
    cells.push(num(sa.advertised) > 0
      ? td('secagg', `${num(sa.advertised)}/${num(sa.shared)}/${num(sa.masked)}/${num(sa.unmasked_by)}`,
        `${sa.plus ? 'SecAgg+' : 'SecAgg'} k=${num(sa.num_neighbors)}: keys ${num(sa.advertised)}, ` +
        `shares ${num(sa.shared)}, masked ${num(sa.masked)}, unmasked by ${num(sa.unmasked_by)}; ` +
        `unmasking ${fixed(sa.unmask_seconds, 3)} s, protocol ${(num(sa.protocol_bytes) / 1e3).toFixed(1)} kB`)
      : td('secagg', '-'));
  }
  // What the hostile-update bounds and the protocols did, only when they did something.
  const b = m.robustness || {};
  const notes = [];
  if (num(b.clipped) > 0) notes.push(`${num(b.clipped)} clipped (norm ${Number(num(b.norm_bound).toPrecision(4))})`);
  if (num(b.weight_capped) > 0) notes.push(`${num(b.weight_capped)} weight-capped`);
  if (num(b.excluded) > 0) notes.push(`${num(b.excluded)} excluded by direction`);
  if (sa.failure) notes.push(`secagg failed: ${sa.failure}`);
  if (num(m.fed_cg?.clients_evaluated) > 0) notes.push(`client acc ${fixed(m.fed_cg.client_accuracy, 4)}`);
  cells.push(td('notes', notes.join('; ')));
  return el('tr', { data: { round: String(num(r.round)), state: st } }, ...cells);
}

function roundClientRow(c) {
  const outcome = short(c.outcome, 'OUTCOME_');
  return el('tr', { data: { clientId: c.client_id } },
    td('id', c.client_id),
    td('tier', c.tier || '-'),
    td(`outcome oc-${outcome}`, outcome),
    td('reason', c.reason || '', c.reason),
    td('examples', num(c.num_examples)),
    td('train-loss', fixed(c.train_loss, 4)),
    td('seconds', fixed(c.train_seconds, 1)),
    td('rss', num(c.peak_rss_bytes) > 0 ? mb(c.peak_rss_bytes, 1) : '-'),
    td('up', mb(c.bytes_up, 2)),
    td('down', mb(c.bytes_down, 2)));
}

// ---- charts (only when Chart.js loaded; any failure leaves the tables alone) ----

function chartBox(id, title) {
  return el('figure', { class: 'chart' }, el('figcaption', { text: title }),
    el('div', { class: 'chart-box' }, el('canvas', { id })));
}

function initCharts(page) {
  if (typeof Chart === 'undefined') return;
  const make = (id, scales) => new Chart($(id), {
    type: 'line',
    data: { labels: [], datasets: [] },
    options: {
      animation: false, responsive: true, maintainAspectRatio: false,
      interaction: { mode: 'index', intersect: false },
      plugins: { legend: { labels: { boxWidth: 12, font: { size: 11 } } } },
      scales: { x: { title: { display: true, text: 'round' } }, ...scales },
    },
  });
  try {
    page.charts.acc = make('acc-chart', {
      y: { title: { display: true, text: 'accuracy' } },
      y1: { position: 'right', title: { display: true, text: 'test loss' }, grid: { drawOnChartArea: false } },
    });
    page.charts.time = make('time-chart', { y: { beginAtZero: true, title: { display: true, text: 's' } } });
    page.charts.bytes = make('bytes-chart', { y: { beginAtZero: true, title: { display: true, text: 'MB' } } });
  } catch (err) {
    console.warn('charts disabled:', err);
  }
}

const series = (label, data, color, extra = {}) => ({
  label, data, borderColor: COLORS[color % COLORS.length], backgroundColor: COLORS[color % COLORS.length],
  borderWidth: 1.5, pointRadius: 2, spanGaps: true, ...extra,
});

// New data into a chart; datasets keep their identity (and legend toggles) by label.
function setChart(chart, labels, sets) {
  if (!chart) return;
  chart.data.labels = labels;
  chart.data.datasets = sets.map((s) => {
    const old = chart.data.datasets.find((d) => d.label === s.label);
    if (!old) return s;
    old.data = s.data;
    return old;
  });
  chart.update();
}

function updateCharts(page) {
  if (!page.charts.acc) return;
  try {
    const done = page.rounds.filter((r) => r.state === 'ROUND_STATE_COMPLETED');
    const labels = done.map((r) => String(num(r.round)));
    const ms = done.map((r) => r.metrics || {});
    const tiers = [...new Set(ms.flatMap((m) => (m.tiers || []).map((t) => t.tier)))];
    const tierAcc = (m, name) => {
      const t = (m.tiers || []).find((x) => x.tier === name);
      return t && t.evaluated ? num(t.test_accuracy) : null;
    };
    setChart(page.charts.acc, labels, [
      series('accuracy', ms.map((m) => (m.evaluated ? num(m.test_accuracy) : null)), 0),
      series('test loss', ms.map((m) => (m.evaluated ? num(m.test_loss) : null)), 1, { yAxisID: 'y1' }),
      ...tiers.map((t, i) => series(`accuracy ${t}`, ms.map((m) => tierAcc(m, t)), 2 + i, { borderDash: [4, 3] })),
    ]);
    setChart(page.charts.time, labels, [series('round seconds', ms.map((m) => num(m.round_seconds)), 0)]);
    setChart(page.charts.bytes, labels, [
      series('up', ms.map((m) => num(m.bytes_up) / 1e6), 2),
      series('down', ms.map((m) => num(m.bytes_down) / 1e6), 4),
    ]);
  } catch (err) {
    console.warn('chart update failed:', err);
  }
}

// ---------------------------------------------------------------------------------------
// #/devices
// ---------------------------------------------------------------------------------------

const DEVICE_COLS = [['id', 'device'], ['platform', 'platform'], ['version', 'version'], ['tier', 'tier'],
  ['state', 'state'], ['last-seen', 'last seen', 1], ['rounds', 'rounds', 1], ['examples', 'examples', 1],
  ['declined', 'declined'], ['outcome', 'latest outcome'], ['rss', 'peak RSS MB', 1]];

function openDevices() {
  const page = newPage('devices');
  $('main').replaceChildren(
    el('h1', { text: 'Devices' }),
    el('p', { id: 'devices-summary', class: 'muted' }),
    makeTable('devices', DEVICE_COLS));
  page.refresh = async () => {
    try {
      const opts = { signal: page.abort.signal };
      const [clients, jobs] = await Promise.all([
        api('/api/clients?include_inactive=1', opts),
        api('/api/jobs', opts).catch((err) => (err.status === 401 ? Promise.reject(err) : { jobs: [] })),
      ]);
      if (!page.closed) renderDevices(clients.clients || [], (jobs.jobs || [])[0]);
    } catch (err) {
      fail(err);
    }
  };
  poll(page);
}

function renderDevices(clients, job) {
  // The most recent job's latest round says how each of its devices did.
  const m = job?.latest_metrics || {};
  const latest = new Map((m.clients || []).map((c) => [c.client_id, c]));
  const active = clients.filter((c) => c.state === 'CLIENT_STATE_ACTIVE').length;
  let summary = `${clients.length} device(s), ${active} active.`;
  if (job && num(m.round) > 0) summary += ` Outcome and RSS: job ${job.job_id} (${job.config?.name || ''}), round ${num(m.round)}.`;
  $('devices-summary').textContent = summary;

  setRows($('devices'), clients.map((c) => {
    const p = c.profile || {};
    const st = short(c.state, 'CLIENT_STATE_');
    const r = latest.get(c.client_id);
    const outcome = r ? short(r.outcome, 'OUTCOME_') : '';
    const budget = num(p.memory_budget_bytes) > 0 ? `${mb(p.memory_budget_bytes, 0)} MB` : 'unknown';
    return el('tr', { data: { clientId: c.client_id } },
      td('id', c.client_id,
        `compute ${short(p.compute_class, 'COMPUTE_CLASS_')}, memory budget ${budget}, enrolled ${absTime(c.enrolled_unix_ms) || '-'}`),
      td('platform', p.platform || ''),
      td('version', p.client_version || ''),
      td('tier', c.tier || '-'),
      td(`state st-${st}`, st),
      td('last-seen', ago(c.last_seen_unix_ms), absTime(c.last_seen_unix_ms)),
      td('rounds', num(c.rounds_participated)),
      td('examples', num(p.num_examples)),
      td('declined', c.declined_reason || '', c.declined_reason),
      td(outcome ? `outcome oc-${outcome}` : 'outcome', outcome, r?.reason),
      td('rss', r && num(r.peak_rss_bytes) > 0 ? mb(r.peak_rss_bytes, 1) : ''));
  }), 'No devices have enrolled.');
}

// ---------------------------------------------------------------------------------------
// Start-up
// ---------------------------------------------------------------------------------------

$('login-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const token = $('token').value.trim();
  $('token').value = '';
  if (!token) { $('login-error').textContent = 'Paste an operator token.'; return; }
  if (!/^[\x21-\x7e]+$/.test(token)) { $('login-error').textContent = 'That is not a token (unexpected characters).'; return; }
  $('login-error').textContent = '';
  signIn(token);
});
$('logout').addEventListener('click', () => signOut(''));
for (const id of ['error', 'notice']) $(id).addEventListener('click', () => showBanner(id, ''));
window.addEventListener('hashchange', route);
document.addEventListener('visibilitychange', () => {
  if (!document.hidden) session.page?.refresh?.();
});

if (session.token) signIn(session.token);
else showLogin('');
