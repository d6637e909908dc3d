// jobq's dashboard: plain script, no dependencies. Every value from the API is put on the page as
// text (textContent), never as HTML.
'use strict';

const API = location.pathname.replace(/\/(index\.html)?$/, '') + '/api/';
const state = {
  token: sessionStorage.getItem('jobq.token') || '',
  name: sessionStorage.getItem('jobq.name') || '',
  refresh: null,
  // The reads of the view being shown: a new route aborts them, so that a slow answer for a view
  // left behind never draws over the one the user went to.
  reads: new AbortController(),
};

// ------------------------------------------------------------------------------------------------
// Helpers

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else if (key === 'class') node.className = value;
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function show(...nodes) {
  const view = document.getElementById('view');
  view.replaceChildren(...nodes);
}

function say(text, isError) {
  const box = document.getElementById('message');
  box.textContent = text;
  box.className = isError ? 'error' : '';
  box.hidden = !text;
}

async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (state.token) headers.Authorization = 'Bearer ' + state.token;
  if (state.name) headers['X-Jobq-Actor'] = state.name;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  // Writes are never aborted: the user asked for them, wherever the page has gone since.
  const signal = method === 'GET' ? state.reads.signal : undefined;
  const send = () => fetch(API + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
  });
  let response = await send();
  // A read that met a server error is tried once more: reads change nothing, and a proxy or the
  // local Lambda emulator now and then answers a 5xx of its own. Writes are never repeated.
  if (method === 'GET' && response.status >= 500) {
    await new Promise((resolve) => setTimeout(resolve, 300));
    response = await send();
  }
  let data = null;
  try {
    data = await response.json();
  } catch (_) {
    data = null;
  }
  if (!response.ok) {
    const error = new Error((data && data.error && data.error.message) || response.statusText);
    error.status = response.status;
    throw error;
  }
  return data;
}

function when(text) {
  if (!text) return '';
  const at = new Date(text);
  return isNaN(at) ? text : at.toLocaleString();
}

function age(seconds) {
  if (seconds === null || seconds === undefined) return '';
  if (seconds < 90) return seconds.toFixed(1) + ' s';
  if (seconds < 5400) return (seconds / 60).toFixed(1) + ' min';
  return (seconds / 3600).toFixed(1) + ' h';
}

function short(text, max) {
  if (!text) return '';
  return text.length > max ? text.slice(0, max) + '…' : text;
}

function query(params) {
  const parts = [];
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && String(value).trim() !== '') {
      parts.push(encodeURIComponent(key) + '=' + encodeURIComponent(String(value).trim()));
    }
  }
  return parts.length ? '?' + parts.join('&') : '';
}

// Completed jobs per minute, as bars.
function bars(perMinute) {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  const width = 4 * perMinute.length;
  svg.setAttribute('class', 'bars');
  svg.setAttribute('width', String(width));
  svg.setAttribute('height', '20');
  const top = Math.max(1, ...perMinute.map((m) => m.completed));
  perMinute.forEach((minute, i) => {
    const height = Math.round((18 * minute.completed) / top);
    const rect = document.createElementNS(ns, 'rect');
    rect.setAttribute('x', String(i * 4));
    rect.setAttribute('y', String(20 - height));
    rect.setAttribute('width', '3');
    rect.setAttribute('height', String(height));
    const title = document.createElementNS(ns, 'title');
    title.textContent = minute.minute + ': ' + minute.completed + ' completed';
    rect.append(title);
    svg.append(rect);
  });
  return svg;
}

function jobLink(id) {
  return el('a', { href: '#job/' + id }, el('code', {}, id));
}

function failed(error) {
  if (error.name === 'AbortError') return; // a read of a view the user has left
  if (error.status === 401) say('The token is missing or wrong: enter the dashboard token above.', true);
  else say(error.message, true);
}

// ------------------------------------------------------------------------------------------------
// Views

async function overview() {
  const data = await api('GET', 'queues');
  const setPaused = async (name, paused) => {
    try {
      await api('PUT', 'queues/' + encodeURIComponent(name), { paused });
      say(`${paused ? 'Paused' : 'Resumed'} queue ${name}.`);
      route();
    } catch (error) {
      failed(error);
    }
  };
  // The concurrency limit typed next to a queue: a whole number from 1, or nothing for none.
  const setLimit = async (name, text) => {
    const typed = text.trim();
    const concurrency = typed === '' ? null : Number(typed);
    if (concurrency !== null && !(Number.isInteger(concurrency) && concurrency >= 1 && concurrency <= 1000000)) {
      say(`The limit of ${name} is a whole number from 1 to 1000000, or nothing for none.`, true);
      return;
    }
    try {
      await api('PUT', 'queues/' + encodeURIComponent(name), { concurrency });
      say(concurrency === null ? `Queue ${name} has no concurrency limit now.`
        : `Queue ${name} runs at most ${concurrency} at once now.`);
      route();
    } catch (error) {
      failed(error);
    }
  };
  const rows = data.queues.map((q) =>
    el('tr', { 'data-queue': q.name },
      el('td', {}, el('a', { href: '#jobs/queue=' + encodeURIComponent(q.name) }, q.name),
        q.paused ? el('span', { class: 'muted' }, ' (paused)') : null,
        q.concurrency ? el('span', { class: 'muted', title: 'concurrency limit, fleet-wide' }, ` (max ${q.concurrency})`) : null,
        q.rateLimit ? el('span', { class: 'muted', title: 'rate limit, fleet-wide' + (q.rateLimit.key ? ', per ' + q.rateLimit.key : '') },
          ` (${q.rateLimit.limit} per ${q.rateLimit.periodMs} ms)`) : null),
      el('td', { class: 'num' }, q.counts.PENDING),
      el('td', { class: 'num' }, q.ready ?? ''),
      el('td', { class: 'num' }, q.counts.BLOCKED),
      el('td', { class: 'num' }, q.counts.IN_PROGRESS),
      el('td', { class: 'num' }, q.counts.COMPLETED),
      el('td', { class: 'num' }, q.counts.FAILED),
      el('td', { class: 'num' }, q.counts.CANCELLED),
      el('td', { class: 'num' }, age(q.oldestPendingAgeSeconds)),
      el('td', { class: 'num' }, q.dlqDepth),
      el('td', {}, bars(q.throughput.perMinute), ' ',
        `${q.throughput.completed} done, ${q.throughput.retried} retried, ${q.throughput.dead} dead`),
      el('td', {}, el('button', { class: 'secondary pause', onclick: () => setPaused(q.name, !q.paused) },
        q.paused ? 'Resume' : 'Pause')),
      el('td', { class: 'limit' },
        el('input', { class: 'limit', type: 'number', min: 1, size: 5, placeholder: 'none', value: q.concurrency ?? undefined,
          'data-queue': q.name, 'aria-label': 'concurrency limit of ' + q.name }),
        ' ',
        el('button', { class: 'secondary set-limit', 'data-queue': q.name,
          onclick: (event) => setLimit(q.name, event.target.parentNode.querySelector('input').value) }, 'Set limit')),
    ));
  show(
    el('h2', {}, 'Queues'),
    el('table', {},
      el('thead', {}, el('tr', {}, ['queue', 'pending', 'ready', 'blocked', 'running', 'completed', 'dead',
        'cancelled', 'oldest pending', 'DLQ', `last ${data.queues[0] ? data.queues[0].throughput.minutes : 15} min`, '',
        'at most running']
        .map((h) => el('th', {}, h)))),
      el('tbody', {}, rows.length ? rows : el('tr', {}, el('td', { colspan: 14, class: 'muted' }, 'No queue has a job yet.')))),
    el('p', { class: 'muted' }, 'Counts over ', String(data.countBound), ' jobs in one status are estimates. Refreshed every 5 s.'),
  );
  // Refreshed every 5 s, but never under a limit being typed.
  const again = () => {
    const editing = [...document.querySelectorAll('input.limit')]
      .some((input) => input === document.activeElement || input.value !== input.defaultValue);
    if (editing) state.refresh = setTimeout(again, 5000);
    else route();
  };
  state.refresh = setTimeout(again, 5000);
}

const FILTERS = ['status', 'queue', 'type', 'payload', 'error', 'createdAfter', 'createdBefore'];

function filterForm(values, onSubmit, extra) {
  const inputs = {};
  const field = (name, node) => { inputs[name] = node; return el('label', {}, name, node); };
  const status = el('select', {},
    ['', 'PENDING', 'BLOCKED', 'IN_PROGRESS', 'COMPLETED', 'FAILED', 'CANCELLED'].map((s) =>
      el('option', { value: s, selected: values.status === s }, s || 'any')));
  const form = el('form', { class: 'filters' },
    field('status', status),
    ...FILTERS.slice(1).map((name) => field(name, el('input', {
      name, value: values[name] || '', size: name === 'payload' ? 24 : 14,
      placeholder: name === 'payload' ? '{"userId":123}' : (name.startsWith('created') ? '2026-12-01T00:00:00Z' : ''),
    }))),
    el('button', { type: 'submit' }, 'Search'),
    extra || null);
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const picked = {};
    for (const [name, input] of Object.entries(inputs)) picked[name] = input.value;
    onSubmit(picked);
  });
  return form;
}

function decode(params) {
  const values = {};
  for (const part of (params || '').split('&')) {
    if (!part) continue;
    const [key, value] = part.split('=');
    values[decodeURIComponent(key)] = decodeURIComponent(value || '');
  }
  return values;
}

async function jobs(params) {
  const values = decode(params);
  const data = await api('GET', 'jobs' + query(values));
  const rows = data.items.map((job) =>
    el('tr', { 'data-job-id': job.jobId },
      el('td', {}, jobLink(job.jobId)),
      el('td', {}, job.type),
      el('td', {}, job.queue),
      el('td', { class: 'status-' + job.status }, job.status),
      el('td', { class: 'num' }, `${job.attempts}/${job.maxAttempts}`),
      el('td', {}, when(job.createdAt)),
      el('td', {}, short(job.lastError, 80))));
  const next = data.nextCursor
    ? el('button', { class: 'secondary', onclick: () => { location.hash = 'jobs/' + query({ ...values, cursor: data.nextCursor }).slice(1); } }, 'Next page')
    : null;
  show(
    el('h2', {}, 'Jobs'),
    filterForm(values, (picked) => { location.hash = 'jobs/' + query(picked).slice(1); }),
    el('table', {},
      el('thead', {}, el('tr', {}, ['id', 'type', 'queue', 'status', 'attempts', 'created', 'last error'].map((h) => el('th', {}, h)))),
      el('tbody', {}, rows.length ? rows : el('tr', {}, el('td', { colspan: 7, class: 'muted' }, 'No job matches.')))),
    next);
}

async function job(id) {
  const data = await api('GET', 'jobs/' + encodeURIComponent(id));
  const act = async (what, path) => {
    try {
      await api('POST', path);
      say(`${what}: done.`);
      route();
    } catch (error) {
      failed(error);
    }
  };
  const buttons = [];
  if (data.status === 'PENDING' || data.status === 'BLOCKED' || data.status === 'IN_PROGRESS') {
    buttons.push(el('button', { id: 'cancel', onclick: () => act('Cancel', `jobs/${id}/cancel`) }, 'Cancel'));
  }
  if (data.status === 'FAILED') {
    buttons.push(el('button', { id: 'requeue', onclick: () => act('Requeue', `dlq/${id}/requeue`) }, 'Requeue'));
  }
  const fields = [['id', data.jobId], ['type', data.type], ['queue', data.queue], ['status', data.status],
    ['attempts', `${data.attempts} of ${data.maxAttempts}`], ['priority', data.priority], ['runAt', when(data.runAt)],
    ['createdAt', when(data.createdAt)], ['updatedAt', when(data.updatedAt)], ['completedAt', when(data.completedAt)],
    ['idempotencyKey', data.idempotencyKey], ['traceparent', data.traceparent], ['lastError', data.lastError],
    ['schedule', data.schedule ? `${data.schedule.name}, tick ${when(data.schedule.tick)}` : null],
    ['waitingOn', data.waitingOn ? data.waitingOn.map((w) => `${w.jobId} (${w.status ?? 'deleted'})`).join(', ') : null]];
  show(
    el('h2', {}, 'Job ', el('code', {}, data.jobId)),
    el('div', {}, buttons),
    el('table', { id: 'job' }, el('tbody', {}, fields.map(([k, v]) =>
      el('tr', {}, el('th', {}, k), el('td', { class: k === 'status' ? 'status-' + v : '' }, v ?? ''))))),
    el('h2', {}, 'Payload'),
    el('pre', {}, JSON.stringify(data.payload, null, 2)),
    el('h2', {}, 'Attempts'),
    el('table', { id: 'attempts' },
      el('thead', {}, el('tr', {}, ['#', 'worker', 'started', 'finished', 'outcome', 'error'].map((h) => el('th', {}, h)))),
      el('tbody', {}, (data.history || []).map((a) => el('tr', {},
        el('td', { class: 'num' }, a.attempt), el('td', {}, a.workerId), el('td', {}, when(a.startedAt)),
        el('td', {}, when(a.finishedAt)), el('td', {}, a.outcome), el('td', {}, short(a.error, 200)))))));
}

async function dlq(params) {
  const values = decode(params);
  const data = await api('GET', 'dlq' + query({ cursor: values.cursor }));
  const requeue = async (id) => {
    try {
      await api('POST', `dlq/${id}/requeue`);
      say(`Requeued ${id}.`);
      route();
    } catch (error) {
      failed(error);
    }
  };
  const rows = data.items.map((job) =>
    el('tr', { 'data-job-id': job.jobId },
      el('td', {}, jobLink(job.jobId)), el('td', {}, job.type), el('td', {}, job.queue),
      el('td', {}, when(job.completedAt)), el('td', {}, short(job.lastError, 80)),
      el('td', {}, el('button', { class: 'requeue', 'data-job-id': job.jobId, onclick: () => requeue(job.jobId) }, 'Requeue'))));

  // Requeue everything that matches: the exact count first, then the operation and its progress.
  const result = el('span', { id: 'bulk-result', class: 'muted' });
  const bulk = filterForm({}, async (picked) => {
    const filter = { status: 'FAILED' };
    for (const name of ['queue', 'type', 'error', 'createdAfter', 'createdBefore']) {
      if (picked[name] && picked[name].trim()) filter[name] = picked[name].trim();
    }
    if (picked.payload && picked.payload.trim()) {
      try {
        filter.payload = JSON.parse(picked.payload);
      } catch (_) {
        say('payload must be JSON, such as {"userId":123}', true);
        return;
      }
    }
    try {
      const dry = await api('POST', 'jobs/bulk', { filter, action: 'requeue', dryRun: true });
      result.replaceChildren(`${dry.count} dead ${dry.count === 1 ? 'job matches' : 'jobs match'}. `,
        el('button', { id: 'bulk-go', disabled: dry.count === 0, onclick: () => run(filter, dry.count) }, `Requeue ${dry.count}`));
    } catch (error) {
      failed(error);
    }
  });
  bulk.querySelector('label').remove(); // the status is FAILED here
  bulk.querySelector('button[type=submit]').textContent = 'Count';
  const run = async (filter, count) => {
    try {
      let op = await api('POST', 'jobs/bulk', { filter, action: 'requeue' });
      const bar = el('progress', { max: Math.max(1, count), value: op.processed });
      result.replaceChildren(bar, ' ', el('span', { id: 'bulk-progress' }, `${op.processed} of ${op.total}`));
      while (op.state !== 'DONE') {
        await new Promise((resolve) => setTimeout(resolve, 500));
        op = await api('GET', 'operations/' + op.id);
        bar.value = op.processed + op.skipped;
        result.querySelector('#bulk-progress').textContent = `${op.processed} of ${op.total}`;
      }
      say(`Requeued ${op.processed} ${op.processed === 1 ? 'job' : 'jobs'} (${op.skipped} had moved on).`);
      setTimeout(route, 300);
    } catch (error) {
      failed(error);
    }
  };
  const next = data.nextCursor
    ? el('button', { class: 'secondary', onclick: () => { location.hash = 'dlq/' + query({ cursor: data.nextCursor }).slice(1); } }, 'Next page')
    : null;
  show(
    el('h2', {}, 'Dead jobs'),
    el('table', { id: 'dlq' },
      el('thead', {}, el('tr', {}, ['id', 'type', 'queue', 'died', 'last error', ''].map((h) => el('th', {}, h)))),
      el('tbody', {}, rows.length ? rows : el('tr', {}, el('td', { colspan: 6, class: 'muted' }, 'The DLQ is empty.')))),
    next,
    el('div', { class: 'panel' }, el('h2', {}, 'Requeue everything that matches'), bulk, result));
}

async function audit(params) {
  const values = decode(params);
  const data = await api('GET', 'audit' + query({ cursor: values.cursor }));
  const rows = data.items.map((entry) => el('tr', {},
    el('td', {}, when(entry.at)), el('td', {}, entry.actor), el('td', {}, entry.onBehalfOf ?? ''),
    el('td', {}, entry.action),
    el('td', {}, entry.jobId ? jobLink(entry.jobId) : el('code', {}, JSON.stringify(entry.filter))),
    el('td', { class: 'num' }, entry.count)));
  const next = data.nextCursor
    ? el('button', { class: 'secondary', onclick: () => { location.hash = 'audit/' + query({ cursor: data.nextCursor }).slice(1); } }, 'Next page')
    : null;
  show(
    el('h2', {}, 'Audit log'),
    el('table', {},
      el('thead', {}, el('tr', {}, ['when', 'who', 'on behalf of', 'action', 'job or filter', 'jobs'].map((h) => el('th', {}, h)))),
      el('tbody', {}, rows.length ? rows : el('tr', {}, el('td', { colspan: 6, class: 'muted' }, 'Nothing yet.')))),
    next);
}

async function schedules(params) {
  const values = decode(params);
  const data = await api('GET', 'schedules' + query({ cursor: values.cursor }));
  const put = async (schedule, paused) => {
    const body = { cron: schedule.cron, timezone: schedule.timezone, job: schedule.job, paused,
      missedFires: schedule.missedFires, overlap: schedule.overlap };
    try {
      await api('PUT', 'schedules/' + encodeURIComponent(schedule.name), body);
      say(`${paused ? 'Paused' : 'Resumed'} ${schedule.name}.`);
      route();
    } catch (error) {
      failed(error);
    }
  };
  const remove = async (schedule) => {
    if (!window.confirm(`Delete the schedule ${schedule.name}? The jobs it fired stay.`)) return;
    try {
      await api('DELETE', 'schedules/' + encodeURIComponent(schedule.name));
      say(`Deleted ${schedule.name}.`);
      route();
    } catch (error) {
      failed(error);
    }
  };
  const rows = data.items.map((s) =>
    el('tr', { 'data-schedule': s.name },
      el('td', {}, s.name), el('td', {}, el('code', {}, s.cron)), el('td', {}, s.timezone),
      el('td', {}, s.job && s.job.type), el('td', {}, s.job && (s.job.queue || 'default')),
      el('td', { class: s.paused ? 'status-CANCELLED' : '' }, s.paused ? 'paused' : when(s.nextTick)),
      el('td', {}, s.lastJobId ? el('a', { href: '#job/' + s.lastJobId }, when(s.lastTick)) : ''),
      el('td', { class: 'num' }, s.lagMs === null ? '' : s.lagMs + ' ms'),
      el('td', { class: 'num' }, s.fired), el('td', { class: 'num' }, s.skipped),
      el('td', {}, short(s.lastError, 80)),
      el('td', {},
        el('button', { class: s.paused ? 'resume' : 'pause', 'data-schedule': s.name, onclick: () => put(s, !s.paused) },
          s.paused ? 'Resume' : 'Pause'),
        ' ',
        el('button', { class: 'delete secondary', 'data-schedule': s.name, onclick: () => remove(s) }, 'Delete'))));
  const next = data.nextCursor
    ? el('button', { class: 'secondary', onclick: () => { location.hash = 'schedules/' + query({ cursor: data.nextCursor }).slice(1); } }, 'Next page')
    : null;
  show(
    el('h2', {}, 'Schedules'),
    el('table', { id: 'schedules' },
      el('thead', {}, el('tr', {}, ['name', 'cron', 'zone', 'type', 'queue', 'next tick', 'last tick', 'lag', 'fired',
        'skipped', 'last error', ''].map((h) => el('th', {}, h)))),
      el('tbody', {}, rows.length ? rows
        : el('tr', {}, el('td', { colspan: 12, class: 'muted' }, 'No schedules: PUT /schedules/{name} makes one.')))),
    next);
}

// ------------------------------------------------------------------------------------------------
// Routing

const VIEWS = { overview, jobs, job, dlq, schedules, audit };

async function route() {
  clearTimeout(state.refresh);
  state.reads.abort();
  state.reads = new AbortController();
  const hash = location.hash.replace(/^#/, '') || 'overview';
  const slash = hash.indexOf('/');
  const name = slash < 0 ? hash : hash.slice(0, slash);
  const arg = slash < 0 ? '' : hash.slice(slash + 1);
  for (const link of document.querySelectorAll('nav a')) {
    link.classList.toggle('active', link.getAttribute('href') === '#' + name);
  }
  const view = VIEWS[name] || overview;
  try {
    await view(arg);
  } catch (error) {
    if (error.name === 'AbortError') return; // another route took over
    failed(error);
    show(el('p', { class: 'muted' }, 'Nothing to show.'));
  }
}

document.addEventListener('DOMContentLoaded', () => {
  const token = document.getElementById('token');
  const name = document.getElementById('name');
  token.value = state.token;
  name.value = state.name;
  document.getElementById('signin').addEventListener('submit', (event) => {
    event.preventDefault();
    state.token = token.value.trim();
    state.name = name.value.trim();
    sessionStorage.setItem('jobq.token', state.token);
    sessionStorage.setItem('jobq.name', state.name);
    say('');
    route();
  });
  window.addEventListener('hashchange', () => { say(''); route(); });
  route();
});
