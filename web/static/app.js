// app.js: the live page of a msgnet server. It polls api/sessions and
// api/stats every second (the session table, the rate chart) and, when
// api/features says the server offers it, runs a chat session over
// WebSocket with msgnet.js (the chat panel stays hidden otherwise). The
// chat can also subscribe to a group's stream with acknowledged delivery
// (docs/PROTOCOL.md 6.7): after a reconnect, what the group got meanwhile
// is recovered and marked so, and messages lost to the server's retention
// are said to be. Every URL is relative, so the page works wherever its
// handler is mounted.
// Received text is only ever put in the page as text (textContent), never
// as HTML.
import { Client, groupStream } from './msgnet.js';

const POLL_MS = 1000;
const WINDOW_MS = 60_000; // the chart's span
const MAX_TRANSCRIPT = 500;

const $ = (id) => document.getElementById(id);

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'dataset') Object.assign(e.dataset, v);
    else e[k] = v;
  }
  e.append(...children);
  return e;
}

async function getJSON(path) {
  const r = await fetch(path, { cache: 'no-store', signal: AbortSignal.timeout(5000) });
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}

// every runs fn now and then POLL_MS after each run ends, so slow answers
// never pile up.
function every(fn) {
  const tick = async () => {
    try {
      await fn();
    } catch (e) {
      setPollStatus(false, e);
    }
    setTimeout(tick, POLL_MS);
  };
  tick();
}

function setPollStatus(ok, err) {
  const s = $('poll-status');
  s.dataset.state = ok ? 'open' : 'offline';
  s.textContent = ok ? 'live' : 'offline';
  s.title = err ? String(err.message ?? err) : '';
}

const pad2 = (n) => String(n).padStart(2, '0');
const clock = (d) => `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;

function duration(ms) {
  let s = Math.max(0, Math.floor(ms / 1000));
  const d = Math.floor(s / 86400);
  s -= d * 86400;
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  if (d > 0) return `${d}d ${h}h`;
  if (h > 0) return `${h}h ${m}m`;
  if (m > 0) return `${m}m ${s}s`;
  return `${s}s`;
}

const hostPort = (host, port) => (host.includes(':') ? `[${host}]` : host) + (port ? `:${port}` : '');
const fmtInt = (n) => Number(n).toLocaleString('en-US');

// ---------------------------------------------------------------- sessions

let ownSession = ''; // the chat's session id, highlighted in the table

async function refreshSessions() {
  const data = await getJSON('api/sessions');
  setPollStatus(true);
  $('server-id').textContent = data.server_id;
  const now = Date.parse(data.now);
  const rows = data.sessions.map((s) => {
    const since = new Date(s.connected_at);
    return el('tr', { className: s.id === ownSession ? 'self' : '', dataset: { id: s.id, clientId: s.client_id, transport: s.transport } },
      el('td', { className: 'mono' }, s.id),
      el('td', { className: 'client' }, s.client_id),
      el('td', {}, el('span', { className: `tag ${s.transport}` }, s.transport)),
      el('td', { className: 'mono' }, hostPort(s.remote_addr, s.remote_port)),
      el('td', { title: since.toISOString() }, `${clock(since)} (${duration(now - since.getTime())})`),
      el('td', { className: 'num' }, fmtInt(s.msgs_in)),
      el('td', { className: 'num' }, fmtInt(s.msgs_out)),
      el('td', { className: 'groups' }, s.groups.join(', ')),
    );
  });
  $('sessions').tBodies[0].replaceChildren(...rows);
  $('sessions-empty').hidden = rows.length > 0;
}

// ---------------------------------------------------------------- chart

let last = null; // the previous totals: { t, in, out }
let samples = []; // { t, in, out } rates per second, oldest first

async function refreshStats() {
  const st = await getJSON('api/stats');
  setPollStatus(true);
  const t = Date.parse(st.now);
  $('total-sessions').textContent = fmtInt(st.sessions);
  $('total-in').textContent = fmtInt(st.msgs_in);
  $('total-out').textContent = fmtInt(st.msgs_out);
  $('uptime').textContent = duration(t - Date.parse(st.start));
  if (last && (st.msgs_in < last.in || st.msgs_out < last.out || t <= last.t)) {
    last = null; // another server, or its clock went back: start over
    samples = [];
  }
  if (last) {
    const dt = (t - last.t) / 1000;
    samples.push({ t, in: (st.msgs_in - last.in) / dt, out: (st.msgs_out - last.out) / dt });
    samples = samples.filter((s) => s.t >= t - WINDOW_MS);
  }
  last = { t, in: st.msgs_in, out: st.msgs_out };
  const cur = samples.at(-1);
  $('rate-in').textContent = cur ? cur.in.toFixed(1) : '0';
  $('rate-out').textContent = cur ? cur.out.toFixed(1) : '0';
  drawChart(t);
}

// niceMax rounds up to 1, 2 or 5 times a power of ten.
function niceMax(v) {
  if (v <= 1) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function drawChart(now) {
  const canvas = $('rate-chart');
  const css = getComputedStyle(canvas);
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth;
  const h = canvas.clientHeight;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  const g = canvas.getContext('2d');
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);

  const left = 44;
  const right = 8;
  const top = 8;
  const bottom = 20;
  const pw = w - left - right;
  const ph = h - top - bottom;
  const ymax = niceMax(Math.max(0, ...samples.map((s) => Math.max(s.in, s.out))));
  const x = (t) => left + ((t - (now - WINDOW_MS)) / WINDOW_MS) * pw;
  const y = (v) => top + ph - (v / ymax) * ph;

  g.font = `11px ${css.fontFamily}`;
  g.lineWidth = 1;
  g.strokeStyle = css.getPropertyValue('--grid').trim() || '#ddd';
  g.fillStyle = css.getPropertyValue('--muted').trim() || '#777';
  g.textAlign = 'right';
  g.textBaseline = 'middle';
  for (const v of [0, ymax / 2, ymax]) {
    g.beginPath();
    g.moveTo(left, Math.round(y(v)) + 0.5);
    g.lineTo(left + pw, Math.round(y(v)) + 0.5);
    g.stroke();
    g.fillText(Number.isInteger(v) ? String(v) : v.toFixed(1), left - 6, y(v));
  }
  g.textBaseline = 'alphabetic';
  for (const [sec, align] of [[60, 'left'], [30, 'center'], [0, 'right']]) {
    g.textAlign = align;
    g.fillText(sec === 0 ? 'now' : `-${sec}s`, x(now - sec * 1000), h - 4);
  }

  g.save();
  g.beginPath();
  g.rect(left, top - 2, pw, ph + 4);
  g.clip();
  // In: a solid line over a light area; out: a dashed line, so both show
  // where they are equal (an echo server's are).
  const path = (key) => {
    g.beginPath();
    samples.forEach((s, i) => (i === 0 ? g.moveTo(x(s.t), y(s[key])) : g.lineTo(x(s.t), y(s[key]))));
  };
  g.lineWidth = 2;
  g.lineJoin = 'round';
  if (samples.length > 1) {
    path('in');
    g.lineTo(x(samples.at(-1).t), y(0));
    g.lineTo(x(samples[0].t), y(0));
    g.closePath();
    g.globalAlpha = 0.12;
    g.fillStyle = css.getPropertyValue('--in').trim();
    g.fill();
    g.globalAlpha = 1;
  }
  path('in');
  g.strokeStyle = css.getPropertyValue('--in').trim();
  g.stroke();
  path('out');
  g.setLineDash([6, 4]);
  g.strokeStyle = css.getPropertyValue('--out').trim();
  g.stroke();
  g.setLineDash([]);
  g.restore();
  canvas.dataset.samples = String(samples.length);
}

// ---------------------------------------------------------------- chat

let client = null;
const joined = new Set(); // groups the chat session is in
const subscribed = new Set(); // groups whose streams it is subscribed to
const recovering = new Map(); // stream -> { until, count }: a resumed subscription's replay
let recoveredTotal = 0; // messages recovered after reconnects, for the tests

function wsURL() {
  const u = new URL('ws', location.href);
  u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  return u.href;
}

// say adds a line to the transcript: kind is 'in', 'out' or 'sys' (and
// more classes after it); badges are small labels after the text. It
// returns the line.
function say(kind, text, ...badges) {
  const t = $('transcript');
  const mark = { in: '←', out: '→', sys: '·' }[kind.split(' ')[0]];
  const li = el('li', { className: kind }, el('time', {}, clock(new Date())), el('span', { className: 'dir' }, mark), el('span', { className: 'text' }, text), ...badges);
  t.append(li);
  while (t.children.length > MAX_TRANSCRIPT) t.firstElementChild.remove();
  t.scrollTop = t.scrollHeight;
  return li;
}

const badge = (text, className = '') => el('span', { className: `badge ${className}`.trim() }, text);

function showGroups() {
  const parts = [];
  if (joined.size) parts.push(`in: ${[...joined].sort().join(', ')}`);
  if (subscribed.size) parts.push(`subscribed: ${[...subscribed].sort().join(', ')}`);
  $('groups').textContent = parts.join(' · ');
  const g = $('group').value.trim();
  const sub = $('subscribe');
  sub.textContent = subscribed.has(g) ? 'Unsubscribe' : 'Subscribe';
  sub.toggleAttribute('data-subscribed', subscribed.has(g));
}

// A message of a subscribed stream: replayed ones (what the group got
// while the page was away) are marked recovered, and when a resumed
// subscription's replay is done the count is said.
function showStream(m) {
  const li = say('in stream', m.text(), badge(`${m.stream} #${m.offset}`), ...(m.replayed ? [badge('recovered', 'recovered')] : []));
  li.dataset.offset = String(m.offset);
  if (m.replayed) li.classList.add('recovered');
  const r = recovering.get(m.stream);
  if (r && m.replayed) {
    r.count++;
    recoveredTotal++;
    $('transcript').dataset.recovered = String(recoveredTotal);
    if (m.offset >= r.until) {
      recovering.delete(m.stream);
      say('sys', `recovered ${r.count} message${r.count === 1 ? '' : 's'} of ${m.stream} after reconnect`);
    }
  }
}

function showSubscribed(info) {
  if (!info.resumed) return;
  const n = info.last - info.next + 1;
  if (n > 0) recovering.set(info.stream, { until: info.last, count: 0 });
  else say('sys', `resumed ${info.stream} after reconnect: nothing missed`);
}

function showLost(l) {
  const what = l.missed > 0
    ? `messages ${l.missed} to ${l.next - 1} left the server's retention before they could be delivered`
    : "the stream's log was lost (a new epoch)";
  const li = say('sys lost', `continuity lost on ${l.stream}: ${what}; going on from ${l.next}`);
  li.dataset.missed = String(l.missed);
  li.dataset.next = String(l.next);
}

function toggleSubscription() {
  const g = $('group').value.trim();
  if (!g || !client) return;
  const stream = groupStream(g);
  if (subscribed.has(g)) {
    client.unsubscribe(stream);
    subscribed.delete(g);
    say('sys', `unsubscribed from ${stream}`);
    showGroups();
    return;
  }
  const c = client;
  c.subscribe(stream).then(
    (info) => {
      if (c !== client) return;
      subscribed.add(g);
      say('sys', `subscribed to ${stream} (acknowledged delivery, from #${info.next})`);
      showGroups();
    },
    (e) => {
      if (c === client) say('sys', `not subscribed: ${e.message}`);
    },
  );
}

// publish publishes text to the group's stream; the line says when the
// server has stored it, or why not.
function publish(g, text) {
  const stream = groupStream(g);
  let done;
  try {
    done = client.publish(stream, text);
  } catch (e) {
    say('sys', `not published: ${e.message}`);
    return false;
  }
  const state = badge('publishing…');
  const li = say('out', text, badge(stream), state);
  li.dataset.publish = 'pending';
  done.then(
    () => {
      state.textContent = 'stored';
      li.dataset.publish = 'stored';
    },
    (e) => {
      state.textContent = `failed: ${e.code}`;
      state.title = e.message;
      state.classList.add('failed');
      li.dataset.publish = 'failed';
    },
  );
  return true;
}

function setChatState(state) {
  const open = state === 'open';
  const active = state === 'connecting' || state === 'open' || state === 'reconnecting';
  const s = $('chat-status');
  s.dataset.state = state;
  s.textContent = { idle: 'not connected', connecting: 'connecting…', open: 'connected', reconnecting: 'reconnecting…', closed: 'not connected' }[state] ?? state;
  $('connect').textContent = active ? 'Disconnect' : 'Connect';
  $('client-id').disabled = active;
  for (const id of ['join', 'leave', 'subscribe', 'send']) $(id).disabled = !open;
}

function connect() {
  const id = $('client-id').value.trim();
  const c = new Client(wsURL(), { clientId: id, reconnect: { base: 500, max: 5000 }, reliable: true });
  client = c;
  joined.clear();
  subscribed.clear();
  recovering.clear();
  showGroups();
  c.onstatechange = (state) => {
    if (c === client) setChatState(state);
  };
  c.onopen = (w) => {
    ownSession = w.session_id;
    say('sys', `connected to ${w.server_id} as ${id || w.session_id} (session ${w.session_id})`);
  };
  c.onreconnect = (w) => {
    ownSession = w.session_id;
    say('sys', `reconnected (session ${w.session_id})`);
    for (const g of joined) c.sendText(`JOIN:${g}`); // the new session is in no group yet (subscriptions the client renews itself)
  };
  c.onstream = (m) => {
    if (c === client) showStream(m);
  };
  c.onsubscribed = (info) => {
    if (c === client) showSubscribed(info);
  };
  c.oncontinuitylost = (l) => {
    if (c === client) showLost(l);
  };
  c.onmessage = (m) => {
    const text = m.text();
    say('in', text);
    let g;
    if ((g = /^Joined (.+)$/.exec(text))) joined.add(g[1]);
    else if ((g = /^Left (.+)$/.exec(text))) joined.delete(g[1]);
    showGroups();
  };
  c.onerror = (e) => say('sys', `error ${e.code}${e.message ? ': ' + e.message : ''}`);
  c.onclose = (e) => say('sys', `closed: ${e.reason || e.code}${e.willReconnect ? ', reconnecting…' : ''}`);
  setChatState('connecting');
  c.connect().catch((e) => {
    if (c === client) say('sys', `could not connect: ${e.message}`);
  });
}

function send(text) {
  try {
    client.sendText(text);
    say('out', text);
    return true;
  } catch (e) {
    say('sys', `not sent: ${e.message}`);
    return false;
  }
}

// setupChat shows the chat panel and wires its forms.
function setupChat() {
  $('chat-panel').hidden = false;
  document.body.dataset.chat = 'on';
  $('client-id').value = `web-${Math.random().toString(16).slice(2, 6)}`;
  setChatState('idle');

  $('connect-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    if (client && client.state !== 'closed') {
      client.close('page disconnected');
      client = null;
      ownSession = '';
      subscribed.clear();
      showGroups();
      setChatState('closed');
      return;
    }
    connect();
  });

  $('group-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const g = $('group').value.trim();
    if (g) send(`JOIN:${g}`);
  });
  $('leave').addEventListener('click', () => {
    const g = $('group').value.trim();
    if (g) send(`LEAVE:${g}`);
  });
  $('subscribe').addEventListener('click', toggleSubscription);
  $('group').addEventListener('input', showGroups);

  $('send-mode').addEventListener('change', () => {
    $('to').hidden = $('send-mode').value !== 'private';
  });

  $('send-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const text = $('message').value;
    if (!text || !client) return;
    let out = text;
    switch ($('send-mode').value) {
      case 'group': {
        const g = $('group').value.trim();
        if (!g) return say('sys', 'not sent: no group');
        out = `GROUP:${g}:${text}`;
        break;
      }
      case 'private': {
        const to = $('to').value.trim();
        if (!to) return say('sys', 'not sent: no recipient');
        out = `PRIVATE:${to}:${text}`;
        break;
      }
      case 'publish': {
        const g = $('group').value.trim();
        if (!g) return say('sys', 'not published: no group');
        if (publish(g, text)) $('message').value = '';
        $('message').focus();
        return;
      }
    }
    if (send(out)) $('message').value = '';
    $('message').focus();
  });
}

async function setup() {
  every(refreshSessions);
  every(refreshStats);
  window.addEventListener('resize', () => drawChart(last ? last.t : Date.now()));
  let features;
  try {
    features = await getJSON('api/features');
  } catch (e) {
    setPollStatus(false, e);
    return; // no chat: the server may not offer it
  }
  if (features.chat) setupChat();
}

setup();
