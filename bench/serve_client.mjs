// Load generator and report table for bench/bench_server.sh.
//
//   node bench/serve_client.mjs load --url URL --model NAME [options]
//     Sends POST /v1/completions from --concurrency clients until
//     --requests requests have been sent or --time-limit seconds have
//     passed, then prints one JSON object with throughput and latency.
//   node bench/serve_client.mjs table DIR
//     Reads DIR/*.json written by the load mode (named
//     SERVER.TEST.ROUND.json) and prints the markdown comparison table.
//
// Uses Node's built-in fetch (Node 18 or later) and nothing else.
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

// A fixed prompt of 108 tokens in the Llama 2 vocabulary.
const PROMPT =
  'Every morning before the market opened, the baker on Mill Street lit ' +
  'the ovens, weighed the flour for forty loaves and set the dough to ' +
  'rise under linen cloths. By seven the first customers were waiting at ' +
  'the door: a nurse coming off the night shift, two builders on their ' +
  'way to the new school, and an old man who always asked for the ' +
  'smallest rye loaf and paid in coins he had counted the evening ' +
  'before. The baker knew each of them by name.';

// Token 2 is </s> in the Llama 2 vocabulary. Biasing it away makes every
// request generate exactly max_tokens tokens on both servers.
const EOS_BIAS = { 2: -100 };

function printUsage() {
  console.error('usage: serve_client.mjs load --url URL --model NAME ' +
    '[--key KEY] [--concurrency N] [--requests N] [--max-tokens N] ' +
    '[--stream] [--extra JSON] [--time-limit SEC] [--request-timeout SEC]\n' +
    '       serve_client.mjs table DIR');
  process.exit(2);
}

// Nearest-rank percentile of an ascending array.
function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1];
}

function summarize(values) {
  const sorted = [...values].sort((a, b) => a - b);
  if (sorted.length === 0) return { mean: null, p50: null, p95: null };
  const mean = sorted.reduce((s, v) => s + v, 0) / sorted.length;
  return { mean, p50: percentile(sorted, 50), p95: percentile(sorted, 95) };
}

// Reads a server-sent event stream and returns the time of the first
// token event (a choice that has no finish_reason yet) and the usage
// object of the final chunk.
async function readStream(response, start) {
  const decoder = new TextDecoder();
  let buffer = '';
  let firstTokenMs = null;
  let usageObject = null;
  let done = false;
  for await (const bytes of response.body) {
    buffer += decoder.decode(bytes, { stream: true });
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of event.split('\n')) {
        if (!line.startsWith('data:')) continue;
        const data = line.slice(5).trim();
        if (data === '[DONE]') {
          done = true;
          continue;
        }
        const chunk = JSON.parse(data);
        const choice = chunk.choices && chunk.choices[0];
        if (firstTokenMs === null && choice && choice.finish_reason == null) {
          firstTokenMs = performance.now() - start;
        }
        if (chunk.usage) usageObject = chunk.usage;
      }
    }
  }
  if (!done) throw new Error('stream ended without data: [DONE]');
  return { firstTokenMs, usageObject };
}

async function sendOne(opts, body) {
  const headers = { 'Content-Type': 'application/json' };
  if (opts.key) headers.Authorization = `Bearer ${opts.key}`;
  const start = performance.now();
  const response = await fetch(`${opts.url}/v1/completions`, {
    method: 'POST',
    headers,
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(opts.requestTimeoutS * 1000),
  });
  if (!response.ok) {
    const text = await response.text();
    throw new Error(`HTTP ${response.status}: ${text.slice(0, 200)}`);
  }
  let firstTokenMs = null;
  let usageObject;
  if (body.stream) {
    ({ firstTokenMs, usageObject } = await readStream(response, start));
  } else {
    usageObject = (await response.json()).usage;
  }
  const latencyMs = performance.now() - start;
  if (!usageObject) throw new Error('response has no usage object');
  return { latencyMs, firstTokenMs, usage: usageObject };
}

async function runLoad(opts) {
  const body = {
    model: opts.model,
    prompt: PROMPT,
    max_tokens: opts.maxTokens,
    temperature: 0,
    logit_bias: EOS_BIAS,
    ...opts.extra,
  };
  if (opts.stream) {
    body.stream = true;
    body.stream_options = { include_usage: true };
  }

  const results = [];
  const errors = [];
  const deadline = performance.now() + opts.timeLimitS * 1000;
  let issued = 0;
  let timedOut = false;

  // Each client sends its next request as soon as the previous one
  // returns, so --concurrency requests stay in flight until the planned
  // requests run out.
  async function client() {
    while (issued < opts.requests) {
      if (performance.now() > deadline) {
        timedOut = true;
        return;
      }
      issued++;
      try {
        results.push(await sendOne(opts, body));
      } catch (err) {
        errors.push(String(err.message || err));
      }
    }
  }

  const start = performance.now();
  await Promise.all(Array.from({ length: opts.concurrency }, client));
  const wallS = (performance.now() - start) / 1000;

  const completionTokens = results.map((r) => r.usage.completion_tokens);
  const sumTokens = completionTokens.reduce((s, v) => s + v, 0);
  const ttfts = results.map((r) => r.firstTokenMs).filter((v) => v !== null);
  const cached = results.map(
    (r) => (r.usage.prompt_tokens_details || {}).cached_tokens || 0);
  return {
    concurrency: opts.concurrency,
    stream: opts.stream,
    requests_planned: opts.requests,
    max_tokens: opts.maxTokens,
    requests_ok: results.length,
    errors: errors.length,
    first_error: errors[0] || null,
    timed_out: timedOut,
    wall_s: wallS,
    completion_tokens: sumTokens,
    tokens_per_s: wallS > 0 ? sumTokens / wallS : 0,
    wrong_length: completionTokens.filter((n) => n !== opts.maxTokens).length,
    prompt_tokens: [...new Set(results.map((r) => r.usage.prompt_tokens))],
    max_cached_tokens: Math.max(0, ...cached),
    latency_ms: summarize(results.map((r) => r.latencyMs)),
    ttft_ms: summarize(ttfts),
  };
}

async function loadMain(argv) {
  const { values } = parseArgs({
    args: argv,
    options: {
      url: { type: 'string' },
      model: { type: 'string' },
      key: { type: 'string' },
      concurrency: { type: 'string', default: '1' },
      requests: { type: 'string', default: '8' },
      'max-tokens': { type: 'string', default: '64' },
      stream: { type: 'boolean', default: false },
      extra: { type: 'string', default: '{}' },
      'time-limit': { type: 'string', default: '60' },
      'request-timeout': { type: 'string', default: '60' },
    },
  });
  if (!values.url || !values.model) printUsage();
  const opts = {
    url: values.url.replace(/\/$/, ''),
    model: values.model,
    key: values.key || process.env.BENCH_API_KEY || '',
    concurrency: Number(values.concurrency),
    requests: Number(values.requests),
    maxTokens: Number(values['max-tokens']),
    stream: values.stream,
    extra: JSON.parse(values.extra),
    timeLimitS: Number(values['time-limit']),
    requestTimeoutS: Number(values['request-timeout']),
  };
  for (const name of ['concurrency', 'requests', 'maxTokens']) {
    if (!Number.isInteger(opts[name]) || opts[name] < 1) {
      console.error(`serve_client: invalid ${name}: must be a positive integer`);
      process.exit(2);
    }
  }
  const result = await runLoad(opts);
  console.log(JSON.stringify(result));
  if (result.errors > 0) {
    console.error(`serve_client: ${result.errors} of ${result.requests_ok + result.errors}` +
      ` requests failed; first error: ${result.first_error}`);
  }
  if (result.wrong_length > 0) {
    console.error(`serve_client: ${result.wrong_length} responses had` +
      ` completion_tokens other than ${opts.maxTokens}`);
  }
}

// The table keeps, for each server and test, the round with the best
// figure (highest tokens/s, or lowest median time to first token), and
// shows every round's figure so the spread is visible.
const SERVERS = [['peer', 'llama-server'], ['ours', 'taphouse']];

function fmt(v, digits = 1) {
  return v === null || v === undefined ? 'n/a' : v.toFixed(digits);
}

function ratio(ours, peer) {
  if (ours === null || peer === null || !peer) return 'n/a';
  return (ours / peer).toFixed(2);
}

function tableMain(dir) {
  const runs = {};
  for (const file of readdirSync(dir)) {
    const m = file.match(/^(peer|ours)\.([a-z0-9]+)\.(\d+)\.json$/);
    if (!m) continue;
    const [, server, test, round] = m;
    const data = JSON.parse(readFileSync(join(dir, file), 'utf8'));
    ((runs[test] ||= {})[server] ||= []).push({ round: Number(round), ...data });
  }
  for (const test of Object.values(runs)) {
    for (const list of Object.values(test)) list.sort((a, b) => a.round - b.round);
  }

  const rows = [];
  const addRow = (label, metric, peer, ours, peerAll, oursAll, digits) => {
    rows.push(`| ${label} | ${metric} | ${fmt(peer, digits)} | ${fmt(ours, digits)} ` +
      `| ${ratio(ours, peer)} | ${peerAll.map((v) => fmt(v, digits)).join(' ')} ` +
      `| ${oursAll.map((v) => fmt(v, digits)).join(' ')} |`);
  };
  const pick = (list, better) => list.reduce(
    (best, r) => (best === null || better(r, best) ? r : best), null);

  const tests = Object.keys(runs).sort((a, b) => {
    const key = (t) => [t.startsWith('s') ? 1 : 0, Number(t.replace(/\D/g, ''))];
    const [ka, kb] = [key(a), key(b)];
    return ka[0] - kb[0] || ka[1] - kb[1];
  });
  const notes = [];
  for (const test of tests) {
    const peerList = runs[test].peer || [];
    const oursList = runs[test].ours || [];
    const streaming = test.startsWith('s');
    const clients = Number(test.replace(/\D/g, ''));
    const label = `${streaming ? 'stream' : 'non-stream'}, ` +
      `${clients} client${clients === 1 ? '' : 's'}`;
    for (const [server, name] of SERVERS) {
      for (const r of runs[test][server] || []) {
        if (r.errors || r.wrong_length || r.timed_out || r.max_cached_tokens) {
          notes.push(`${name}, ${label}, round ${r.round}: ${r.requests_ok} ok, ` +
            `${r.errors} failed, ${r.wrong_length} with other than ` +
            `${r.max_tokens} completion tokens, ` +
            `timed out: ${r.timed_out}, max cached prompt tokens: ${r.max_cached_tokens}`);
        }
      }
    }
    if (!streaming) {
      const better = (a, b) => a.tokens_per_s > b.tokens_per_s;
      const bp = pick(peerList, better);
      const bo = pick(oursList, better);
      const tps = (r) => (r ? r.tokens_per_s : null);
      const lat = (r, k) => (r ? r.latency_ms[k] : null);
      addRow(label, 'generated t/s', tps(bp), tps(bo),
        peerList.map(tps), oursList.map(tps), 1);
      for (const k of ['mean', 'p50', 'p95']) {
        addRow(label, `latency ${k} ms`, lat(bp, k), lat(bo, k),
          peerList.map((r) => lat(r, k)), oursList.map((r) => lat(r, k)), 0);
      }
    } else {
      const better = (a, b) => a.ttft_ms.p50 < b.ttft_ms.p50;
      const bp = pick(peerList, better);
      const bo = pick(oursList, better);
      const ttft = (r, k) => (r ? r.ttft_ms[k] : null);
      for (const k of ['p50', 'p95']) {
        addRow(label, `first token ${k} ms`, ttft(bp, k), ttft(bo, k),
          peerList.map((r) => ttft(r, k)), oursList.map((r) => ttft(r, k)), 0);
      }
      const lat = (r) => (r ? r.latency_ms.p50 : null);
      addRow(label, 'latency p50 ms', lat(bp), lat(bo),
        peerList.map(lat), oursList.map(lat), 0);
    }
  }

  // Peak RSS of each server process, written by bench_server.sh.
  const rss = {};
  for (const file of readdirSync(dir)) {
    const m = file.match(/^(peer|ours)\.rss\.(\d+)$/);
    if (m) (rss[m[1]] ||= []).push(Number(readFileSync(join(dir, file), 'utf8')) / 1024);
  }
  if (rss.peer || rss.ours) {
    const max = (l) => (l && l.length ? Math.max(...l) : null);
    addRow('all', 'peak RSS MiB', max(rss.peer), max(rss.ours),
      rss.peer || [], rss.ours || [], 0);
  }

  console.log('| test | metric | llama-server | taphouse | taphouse/llama-server ' +
    '| llama-server rounds | taphouse rounds |');
  console.log('|---|---|---:|---:|---:|---|---|');
  for (const row of rows) console.log(row);
  console.log();
  if (notes.length === 0) {
    console.log('Every request succeeded with max_tokens completion tokens ' +
      'and no cached prompt tokens.');
  } else {
    console.log('Problems:');
    for (const note of notes) console.log(`- ${note}`);
  }
}

const [mode, ...rest] = process.argv.slice(2);
if (mode === 'load') {
  await loadMain(rest);
} else if (mode === 'table' && rest.length === 1) {
  tableMain(rest[0]);
} else {
  printUsage();
}
