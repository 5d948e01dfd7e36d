// The page of Restaurant Monitor: plain JavaScript, no framework, talking to the API of this origin.
// The token lives in sessionStorage, so it is gone when the tab closes and never shared with other tabs.
'use strict';

// The gateway writes the report statuses of shared_model's ReportStatus here as REPORT_STATUS when it serves this file.
/* REPORT_STATUS */

const TOKEN_KEY = 'restaurant-monitor-token';
const HOUR = 3600e3;
const DAY = 24 * HOUR;
const WEEK = 7 * DAY;
const POLL_EVERY_MS = 1000;

const $ = (id) => document.getElementById(id);
const svgNS = 'http://www.w3.org/2000/svg';

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// --- the API ---

async function api(path, init = {}) {
  const headers = new Headers(init.headers || {});
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.set('Authorization', `Bearer ${token}`);
  let response;
  try {
    response = await fetch(path, { ...init, headers });
  } catch (error) {
    throw new ApiError(0, `cannot reach the API (${error.message})`);
  }
  if (response.ok) return response;
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && typeof body.error === 'string') message = body.error;
  } catch (_) {
    // not JSON: keep the status line
  }
  if (response.status === 401) askForToken(message);
  throw new ApiError(response.status, message);
}

const getJson = async (path, init) => (await api(path, init)).json();

function showError(element, error) {
  element.textContent = error ? error.message || String(error) : '';
  element.hidden = !error;
}

// --- the token ---

let afterToken = null;

function askForToken(message) {
  const section = $('token-section');
  const wasHidden = section.hidden;
  section.hidden = false;
  section.querySelector('p').textContent = sessionStorage.getItem(TOKEN_KEY)
    ? `The API refused the token (${message}). Enter another; it is kept in this tab only.`
    : 'The API needs a token. It is kept in this tab only (session storage) and sent as a bearer header.';
  if (wasHidden) $('token').focus();
}

$('token-form').addEventListener('submit', (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $('token').value.trim());
  $('token').value = '';
  $('token-section').hidden = true;
  const retry = afterToken || loadReports;
  afterToken = null;
  retry();
});

// --- reports ---

function age(iso) {
  const seconds = Math.max(0, Math.round((Date.now() - parseTime(iso)) / 1000));
  if (seconds < 60) return `${seconds} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h`;
  return `${Math.floor(seconds / 86400)} d`;
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

async function loadReports() {
  try {
    const { reports } = await getJson('/reports?limit=20');
    const body = $('reports').tBodies[0];
    body.replaceChildren();
    for (const report of reports) {
      const row = body.insertRow();
      row.dataset.reportId = report.report_id;
      cell(row, report.report_id, 'mono');
      cell(row, report.status, `status ${report.status.toLowerCase()}`);
      cell(row, report.created_at ? age(report.created_at) : '');
      cell(row, report.stores ?? '', 'num');
      cell(row, report.unknown_after_minutes ? `${report.unknown_after_minutes} min` : 'none');
      const actions = row.insertCell();
      if (report.status === REPORT_STATUS.Complete) actions.append(downloadButton(report.report_id));
      else if (report.error) actions.textContent = report.error;
    }
    if (reports.length === 0) cell(body.insertRow(), 'No reports yet.').colSpan = 6;
    showError($('reports-error'), null);
  } catch (error) {
    if (error.status === 401) afterToken = loadReports;
    showError($('reports-error'), error);
  }
}

function downloadButton(id) {
  const button = document.createElement('button');
  button.type = 'button';
  button.className = 'secondary download';
  const wide = document.createElement('span');
  wide.className = 'wide';
  wide.textContent = 'Download ';
  button.append(wide, 'CSV');
  button.setAttribute('aria-label', `Download report ${id} as CSV`);
  button.addEventListener('click', () => download(id));
  return button;
}

// The download needs the bearer header, so it cannot be a plain link: fetch it, then save it from a
// Blob URL.
async function download(id) {
  try {
    const blob = await (await api(`/download/${encodeURIComponent(id)}`)).blob();
    const url = URL.createObjectURL(blob);
    const link = document.createElement('a');
    link.href = url;
    link.download = `report-${id}.csv`;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60e3);
  } catch (error) {
    showError($('reports-error'), error);
  }
}

function horizonOf(input) {
  const text = input.value.trim();
  return text === '' ? null : Number(text);
}

$('trigger-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const horizon = horizonOf($('horizon'));
  const init = { method: 'POST' };
  if (horizon !== null) {
    init.headers = { 'Content-Type': 'application/json' };
    init.body = JSON.stringify({ unknown_after_minutes: horizon });
  }
  showError($('reports-error'), null);
  $('trigger').disabled = true;
  try {
    const { report_id: id } = await getJson('/trigger_report', init);
    await watch(id);
  } catch (error) {
    showError($('reports-error'), error);
  } finally {
    $('trigger').disabled = false;
    loadReports();
  }
});

async function watch(id) {
  const box = $('progress-box');
  const bar = $('progress');
  const text = $('progress-text');
  box.hidden = false;
  box.dataset.status = REPORT_STATUS.Running;
  $('progress-label').textContent = `Report ${id}`;
  bar.value = 0;
  for (;;) {
    const report = await getJson(`/get_report/${encodeURIComponent(id)}`);
    box.dataset.status = report.status;
    if (report.status === REPORT_STATUS.Running) {
      const progress = report.progress || {};
      const { stores_done: done = 0, stores_total: total = 0 } = progress;
      if (total > 0) bar.value = done / total;
      const stores = total > 0 ? `Running: ${done} of ${total} stores` : 'Running: waiting for a worker';
      // Only a report cut into shards says how many of them are stored.
      text.textContent = progress.shards_total === undefined
        ? stores
        : `${stores}, ${progress.shards_done} of ${progress.shards_total} shards stored`;
      await new Promise((resolve) => setTimeout(resolve, POLL_EVERY_MS));
      continue;
    }
    if (report.status === REPORT_STATUS.Complete) {
      bar.value = 1;
      text.textContent = `Complete: ${report.stores} stores as of ${report.as_of}`;
    } else {
      bar.removeAttribute('value');
      text.textContent = `Failed: ${report.error || 'no reason given'}`;
    }
    return;
  }
}

$('refresh').addEventListener('click', loadReports);

// --- a store's week ---

// An RFC 3339 instant to milliseconds (Date.parse takes at most three fractional digits everywhere).
function parseTime(iso) {
  return Date.parse(iso.replace(/(\.\d{3})\d+/, '$1'));
}

// The store's wall clock: an instant to its local date and time, written as if it were UTC.
function wallClock(zone) {
  const format = new Intl.DateTimeFormat('en-US', {
    timeZone: zone, hourCycle: 'h23', year: 'numeric', month: '2-digit', day: '2-digit',
    hour: '2-digit', minute: '2-digit', second: '2-digit',
  });
  const wall = (ms) => {
    const part = {};
    for (const { type, value } of format.formatToParts(new Date(ms))) part[type] = Number(value);
    const whole = Date.UTC(part.year, part.month - 1, part.day, part.hour % 24, part.minute, part.second);
    return whole + (((ms % 1000) + 1000) % 1000);
  };
  // The instant whose wall time is `w` (twice, so an offset change between the guess and `w` is taken).
  const instant = (w) => {
    let ms = w - (wall(w) - w);
    ms = w - (wall(ms) - ms);
    return ms;
  };
  return { wall, instant };
}

// [from, to) cut at the store's local midnights: pieces {day, x0, x1, from, to} with x in ms of the day.
function byLocalDay(clock, from, to) {
  const pieces = [];
  let start = from;
  while (start < to) {
    const w = clock.wall(start);
    const day = Math.floor(w / DAY) * DAY;
    const midnight = clock.instant(day + DAY);
    const end = midnight > start && midnight < to ? midnight : to;
    const x1 = end === midnight ? DAY : Math.min(DAY, clock.wall(end) - day);
    pieces.push({ day, x0: w - day, x1: Math.max(w - day, x1), from: start, to: end });
    start = end;
  }
  return pieces;
}

function svg(name, attributes, parent) {
  const element = document.createElementNS(svgNS, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
  if (parent) parent.append(element);
  return element;
}

function clockText(ms) {
  return new Date(ms).toISOString().slice(11, 16);
}

const LABEL = 76;
const CHART = 480;
const ROW = 26;
const TOP = 18;

function drawTimeline(t) {
  let clock;
  try {
    clock = wallClock(t.timezone);
  } catch (_) {
    clock = wallClock('UTC');
  }
  const asOf = parseTime(t.as_of);
  const first = Math.floor(clock.wall(asOf - WEEK) / DAY) * DAY;
  const last = Math.floor(clock.wall(asOf - 1) / DAY) * DAY;
  const days = Math.round((last - first) / DAY) + 1;
  const x = (ms) => LABEL + (ms / DAY) * CHART;
  const y = (day) => TOP + Math.round((day - first) / DAY) * ROW;
  const root = svg('svg', {
    viewBox: `0 0 ${LABEL + CHART + 18} ${TOP + days * ROW}`, role: 'img', id: 'timeline-svg',
    'aria-label': `Business time of store ${t.store_id} over the week to ${t.as_of}, one row per local day`,
  });
  for (let hour = 0; hour <= 24; hour += 6) {
    svg('line', { x1: x(hour * HOUR), x2: x(hour * HOUR), y1: TOP - 4, y2: TOP + days * ROW, class: 'grid' }, root);
    svg('text', { x: x(hour * HOUR), y: TOP - 6, class: 'hour' }, root).textContent = `${hour}:00`;
  }
  for (let day = first; day <= last; day += DAY) {
    const label = new Date(day).toLocaleDateString('en-GB', { timeZone: 'UTC', weekday: 'short', day: 'numeric', month: 'short' });
    svg('text', { x: 0, y: y(day) + ROW / 2 + 4, class: 'day' }, root).textContent = label;
    svg('rect', { x: x(0), y: y(day) + 3, width: CHART, height: ROW - 6, class: 'closed' }, root);
  }
  const open = t.open_all_the_time ? [{ from: asOf - WEEK, to: asOf }]
    : t.business_intervals.map((b) => ({ from: parseTime(b.from), to: parseTime(b.to) }));
  for (const interval of open) {
    for (const p of byLocalDay(clock, interval.from, interval.to)) {
      svg('rect', { x: x(p.x0), y: y(p.day) + 3, width: x(p.x1) - x(p.x0), height: ROW - 6, class: 'open' }, root);
    }
  }
  for (const segment of t.segments) {
    const from = parseTime(segment.from);
    const to = parseTime(segment.to);
    const pieces = byLocalDay(clock, from, to);
    pieces.forEach((p, i) => {
      const rect = svg('rect', {
        x: x(p.x0), y: y(p.day) + 7, width: Math.max(0.5, x(p.x1) - x(p.x0)), height: ROW - 14,
        class: `segment ${segment.status}`, 'data-status': segment.status,
        // The API's own instants at the segment's ends, so the pieces add up to it exactly.
        'data-from': i === 0 ? segment.from : new Date(p.from).toISOString(),
        'data-to': i === pieces.length - 1 ? segment.to : new Date(p.to).toISOString(),
      }, root);
      svg('title', {}, rect).textContent =
        `${segment.status}, ${clockText(p.day + p.x0)}–${clockText(p.day + p.x1)} local (poll at ${segment.poll})`;
    });
  }
  for (const poll of t.polls) {
    const at = parseTime(poll.at);
    if (at < asOf - WEEK) continue;
    const w = clock.wall(at);
    const day = Math.floor(w / DAY) * DAY;
    const tick = svg('line', {
      x1: x(w - day), x2: x(w - day), y1: y(day) + 1, y2: y(day) + 7,
      class: `tick ${poll.status}${poll.observation ? '' : ' ignored'}`,
    }, root);
    svg('title', {}, tick).textContent = `poll ${poll.at}: ${poll.status}`;
  }
  $('timeline').replaceChildren(root);
}

const FIGURE_NAMES = {
  uptime: 'Uptime', downtime: 'Downtime', unknown: 'Unknown',
  last_hour: 'last hour', last_day: 'last day', last_week: 'last week',
};

function showFigures(t) {
  const body = $('figures').tBodies[0];
  body.replaceChildren();
  // The report's column order (uptime, downtime, unknown; hour, day, week), not the JSON's.
  const rank = (name) => ['uptime', 'downtime', 'unknown'].indexOf(name.split('_')[0]) * 10 +
    ['hour', 'day', 'week'].indexOf(name.split('_').pop());
  const figures = Object.entries(t.figures).sort(([a], [b]) => rank(a) - rank(b));
  for (const [name, value] of figures) {
    const [kind, ...window] = name.split('_');
    const span = window.join('_');
    const row = body.insertRow();
    cell(row, `${FIGURE_NAMES[kind] || kind}, ${FIGURE_NAMES[span] || span}`);
    cell(row, value === null ? '' : value.toFixed(2), 'num').dataset.figure = name;
    cell(row, span === 'last_hour' ? 'min' : 'h');
  }
  const longest = t.outages.longest;
  const zone = t.timezone_str && t.timezone_str !== t.timezone ? `${t.timezone} (data: ${t.timezone_str})` : t.timezone;
  $('store-summary').textContent = [
    `Store ${t.store_id}, zone ${zone}, as of ${t.as_of}.`,
    t.unknown_after_minutes ? `Gap horizon ${t.unknown_after_minutes} min.` : 'No gap horizon.',
    t.open_all_the_time ? 'No business hours: open all the time.' : '',
    `${t.outages.count} outage${t.outages.count === 1 ? '' : 's'}` +
      (longest ? `, the longest ${longest.minutes} min from ${longest.from}.` : '.'),
  ].filter(Boolean).join(' ');
}

$('store-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const lookUp = async () => {
    const id = $('store-id').value.trim();
    const horizon = horizonOf($('store-horizon'));
    const query = horizon === null ? '' : `?unknown_after_minutes=${encodeURIComponent(horizon)}`;
    try {
      const timeline = await getJson(`/stores/${encodeURIComponent(id)}/timeline${query}`);
      showFigures(timeline);
      drawTimeline(timeline);
      $('store-result').hidden = false;
      $('store-result').dataset.storeId = id;
      $('store-result').dataset.asOf = timeline.as_of;
      showError($('store-error'), null);
    } catch (error) {
      if (error.status === 401) afterToken = lookUp;
      $('store-result').hidden = true;
      showError($('store-error'), error);
    }
  };
  await lookUp();
});

loadReports();
