// k6 scenarios for aiorch: the Locust scenarios (loadtest/locustfile.py) as open-loop load.
//
//   k6 run loadtest/k6/orchestrator.js
//   k6 run -e BASE_URL=http://127.0.0.1:8000 -e RATE=50 -e DURATION=10m loadtest/k6/orchestrator.js
//
// Every scenario uses the constant-arrival-rate executor: requests start on schedule whether or
// not earlier ones have finished, so a slow server shows up as latency instead of silently
// lowering the load (no coordinated omission). RATE (requests/s, all scenarios together) is split
// by the weights below. Thresholds are the SLOs: p95 < 60 s for Kimi-routed requests, p95 < 15 s
// for Qwen-routed ones (by the `service` tag, set from the query type's route), and fewer than
// 1 % failed requests. Environment: BASE_URL, RATE, DURATION, API_KEY, UNIQUE (share of queries
// tagged so that they miss the cache, default 0.3), QUERIES (a JSONL mix, default
// ../queries.jsonl).

import http from 'k6/http';
import { check } from 'k6';

const BASE_URL = (__ENV.BASE_URL || 'http://127.0.0.1:8000').replace(/\/$/, '');
const RATE = Number(__ENV.RATE || 10);
const DURATION = __ENV.DURATION || '5m';
const UNIQUE = Number(__ENV.UNIQUE || 0.3);
const POPULAR = 'What is the difference between a process and a thread?';

// Where each query type goes by default (src/aiorch/config.py): the SLO that applies to it.
const ROUTE = {
  code: 'qwen',
  testing: 'qwen',
  general: 'qwen',
  reasoning: 'kimi',
  requirements: 'kimi',
  unknown: 'multi',
  auto: 'auto',
};

function loadQueries(text) {
  const pools = {};
  for (const line of text.split('\n')) {
    const trimmed = line.trim();
    if (!trimmed || trimmed.startsWith('#')) continue;
    const entry = JSON.parse(trimmed);
    const kind = entry.query_type || 'auto';
    const weight = Math.max(1, Math.round(Number(entry.weight || 1)));
    pools[kind] = pools[kind] || [];
    for (let i = 0; i < weight; i++) pools[kind].push(entry.query);
  }
  return pools;
}

const QUERIES = loadQueries(open(__ENV.QUERIES || '../queries.jsonl'));

// name -> [weight, function to run]; the weights match the Locust tasks.
const WEIGHTS = {
  code: 4,
  reasoning: 2,
  requirements: 1,
  testing: 1,
  general: 1,
  unknown: 1,
  auto: 1,
  popular: 2,
  chat: 1,
  chat_stream: 2,
};
const TOTAL_WEIGHT = Object.values(WEIGHTS).reduce((a, b) => a + b, 0);

function scenario(name) {
  const rate = Math.max(1, Math.round((RATE * WEIGHTS[name]) / TOTAL_WEIGHT));
  return {
    executor: 'constant-arrival-rate',
    exec: name,
    rate: rate,
    timeUnit: '1s',
    duration: DURATION,
    // A thinking model answers in tens of seconds: enough VUs for rate x p95 in flight.
    preAllocatedVUs: Math.max(2, rate * 5),
    maxVUs: Math.max(10, rate * 70),
    tags: { scenario_name: name },
  };
}

export const options = {
  scenarios: Object.fromEntries(Object.keys(WEIGHTS).map((name) => [name, scenario(name)])),
  thresholds: {
    'http_req_duration{service:kimi}': ['p(95)<60000'],
    'http_req_duration{service:qwen}': ['p(95)<15000'],
    'http_req_duration{service:multi}': ['p(95)<60000'],
    http_req_failed: ['rate<0.01'],
    checks: ['rate>0.99'],
  },
  summaryTrendStats: ['min', 'avg', 'med', 'p(95)', 'p(99)', 'p(99.9)', 'max'],
};

const HEADERS = { 'Content-Type': 'application/json' };
if (__ENV.API_KEY) HEADERS.Authorization = `Bearer ${__ENV.API_KEY}`;

function pick(kind) {
  const pool = QUERIES[kind] || QUERIES.code;
  let text = pool[Math.floor(Math.random() * pool.length)];
  if (Math.random() < UNIQUE) text += ` (ticket ${Math.random().toString(16).slice(2, 10)})`;
  return text;
}

function ask(kind, text) {
  const body = { query: text };
  const queryType = kind === 'popular' ? 'general' : kind;
  if (kind !== 'auto') body.query_type = queryType;
  const service = ROUTE[queryType];
  const response = http.post(`${BASE_URL}/api/ai/query`, JSON.stringify(body), {
    headers: HEADERS,
    tags: { name: `/api/ai/query [${kind}]`, query_type: kind, service: service },
    timeout: '600s',
  });
  check(response, {
    'status is 2xx': (r) => r.status >= 200 && r.status < 300,
    'has an answer': (r) => {
      try {
        return typeof r.json('answer') === 'string';
      } catch (e) {
        return false;
      }
    },
  });
}

export function code() {
  ask('code', pick('code'));
}
export function reasoning() {
  ask('reasoning', pick('reasoning'));
}
export function requirements() {
  ask('requirements', pick('requirements'));
}
export function testing() {
  ask('testing', pick('testing'));
}
export function general() {
  ask('general', pick('general'));
}
export function unknown() {
  ask('unknown', pick('unknown'));
}
export function auto() {
  ask('auto', pick('auto'));
}
export function popular() {
  // The same question every time, as `general` (Qwen): a cache hit after the first.
  ask('popular', POPULAR);
}

export function chat() {
  const body = { model: 'auto', messages: [{ role: 'user', content: pick('code') }] };
  const response = http.post(`${BASE_URL}/v1/chat/completions`, JSON.stringify(body), {
    headers: HEADERS,
    tags: { name: '/v1/chat/completions', service: 'qwen' },
    timeout: '600s',
  });
  check(response, {
    'status is 2xx': (r) => r.status >= 200 && r.status < 300,
    'is a chat completion': (r) => {
      try {
        return typeof r.json('choices.0.message.content') === 'string';
      } catch (e) {
        return false;
      }
    },
  });
}

export function chat_stream() {
  // k6 reads the whole SSE body; the checks look for the end marker and for error events.
  const model = ['auto', 'kimi', 'qwen'][Math.floor(Math.random() * 3)];
  const body = {
    model: model,
    stream: true,
    messages: [{ role: 'user', content: pick(model === 'kimi' ? 'reasoning' : 'code') }],
  };
  const response = http.post(`${BASE_URL}/v1/chat/completions`, JSON.stringify(body), {
    headers: HEADERS,
    tags: {
      name: `/v1/chat/completions [stream ${model}]`,
      service: model === 'kimi' ? 'kimi' : 'qwen',
    },
    timeout: '600s',
  });
  check(response, {
    'status is 2xx': (r) => r.status >= 200 && r.status < 300,
    'stream ends with [DONE]': (r) => typeof r.body === 'string' && r.body.includes('data: [DONE]'),
    'no error event': (r) => typeof r.body === 'string' && !/^data: \{"error"/m.test(r.body),
  });
}
