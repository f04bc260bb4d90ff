// Bad input from clients and files: every malformed request gets an
// OpenAI error object, the daemon stays up, and bad start-up arguments
// end the process with a clear message and a non-zero status.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { spawnSync } from 'node:child_process';
import { writeFileSync, readFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  startServer, createKey, sql, BIN, MODEL, MODEL_ID,
} from './harness.mjs';

let server;
let key;

before(async () => {
  server = await startServer(['--max-body', '65536']);
  key = createKey(server.db, 'fuzz');
});

after(async () => {
  assert.equal(await server.stop(), 0);
});

async function post(path, body, headers = {}) {
  const res = await fetch(`${server.baseURL}${path}`, {
    method: 'POST',
    headers: {
      Authorization: `Bearer ${key}`, 'Content-Type': 'application/json',
      ...headers,
    },
    body,
  });
  const text = await res.text();
  return { status: res.status, text };
}

function assertErrorShape(text, context) {
  let parsed;
  assert.doesNotThrow(() => { parsed = JSON.parse(text); },
    `${context}: body is JSON: ${text.slice(0, 200)}`);
  assert.equal(typeof parsed.error, 'object', context);
  assert.equal(typeof parsed.error.message, 'string', context);
  assert.ok(parsed.error.message.length > 0, context);
  assert.ok('type' in parsed.error, context);
  assert.ok('param' in parsed.error, context);
  assert.ok('code' in parsed.error, context);
}

test('malformed bodies get 400 with an error object', async () => {
  const bodies = [
    '', 'null', '[]', '"text"', '42', '{', '{"model":}', '{"model": "x"',
    '{"model": 5, "prompt": "a"}',
    `{"model": "${MODEL_ID}"}`,
    `{"model": "${MODEL_ID}", "prompt": {"a": 1}}`,
    `{"model": "${MODEL_ID}", "prompt": [[1, 2], "mixed"]}`,
    `{"model": "${MODEL_ID}", "prompt": [1.5]}`,
    `{"model": "${MODEL_ID}", "prompt": [-1]}`,
    `{"model": "${MODEL_ID}", "prompt": "a", "max_tokens": 1e308}`,
    `{"model": "${MODEL_ID}", "prompt": "a", "max_tokens": "5"}`,
    `{"model": "${MODEL_ID}", "prompt": "a", "seed": 1.5}`,
    `{"model": "${MODEL_ID}", "prompt": "a", "stream": "yes"}`,
    `{"model": "${MODEL_ID}", "prompt": "a", "stream_options": {}}`,
    `{"model": "${MODEL_ID}", "prompt": "a", "stop": ""}`,
    `{"model": "${MODEL_ID}", "prompt": "a", "stop": [1]}`,
    `{"model": "${MODEL_ID}", "prompt": "a", "logit_bias": {"x": 1}}`,
    `{"model": "${MODEL_ID}", "prompt": "a", "logit_bias": [1]}`,
    `{"model": "${MODEL_ID}", "prompt": "a", "n": 100}`,
    `{"model": "${MODEL_ID}", "prompt": "a\\u0000 the cat"}`,
    `{"model": "${MODEL_ID}", "prompt": "a", "stop": ["x", "\\u0000abc"]}`,
    '['.repeat(30000) + ']'.repeat(30000),
  ];
  for (const body of bodies) {
    const r = await post('/completions', body);
    assert.equal(r.status, 400, `status for ${body.slice(0, 80)}`);
    assertErrorShape(r.text, body.slice(0, 80));
  }

  const chatBodies = [
    `{"model": "${MODEL_ID}"}`,
    `{"model": "${MODEL_ID}", "messages": []}`,
    `{"model": "${MODEL_ID}", "messages": "hi"}`,
    `{"model": "${MODEL_ID}", "messages": [1]}`,
    `{"model": "${MODEL_ID}", "messages": [{"content": "x"}]}`,
    `{"model": "${MODEL_ID}", "messages": [{"role": "wizard", "content": "x"}]}`,
    `{"model": "${MODEL_ID}", "messages": [{"role": "user", "content": 5}]}`,
    `{"model": "${MODEL_ID}", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}`,
    `{"model": "${MODEL_ID}", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}`,
    `{"model": "${MODEL_ID}", "messages": [{"role": "user", "content": "x"}], "functions": [{"name": "f"}]}`,
    `{"model": "${MODEL_ID}", "messages": [{"role": "user"}]}`,
    `{"model": "${MODEL_ID}", "messages": [{"role": "user", "content": null}]}`,
  ];
  for (const body of chatBodies) {
    const r = await post('/chat/completions', body);
    assert.equal(r.status, 400, `status for ${body}`);
    assertErrorShape(r.text, body);
  }
});

test('random bytes never take the server down', async () => {
  let seed = 12345;
  const next = () => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed;
  };
  for (let i = 0; i < 200; i++) {
    const n = next() % 2000;
    const bytes = Buffer.alloc(n);
    for (let j = 0; j < n; j++) bytes[j] = next() & 0xff;
    const path = i % 2 ? '/chat/completions' : '/completions';
    const r = await post(path, bytes);
    assert.ok(r.status === 400, `random body ${i}: status ${r.status}`);
    assertErrorShape(r.text, `random body ${i}`);
  }
  const health = await fetch(`http://127.0.0.1:${server.port}/health`);
  assert.equal(health.status, 200);
});

test('invalid UTF-8 in a prompt is handled', async () => {
  const body = Buffer.concat([
    Buffer.from(`{"model": "${MODEL_ID}", "max_tokens": 3, "prompt": "a`),
    Buffer.from([0xff, 0xfe, 0xc3]),
    Buffer.from('"}'),
  ]);
  const r = await post('/completions', body);
  assert.ok([200, 400].includes(r.status), `status ${r.status}`);
  JSON.parse(r.text);
});

test('garbage and half requests on raw sockets', async () => {
  const payloads = [
    'GARBAGE\r\n\r\n',
    'POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"a"',
    'GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \r\n\r\n',
    `GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: ${'B'.repeat(9000)}\r\n\r\n`,
    'POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\n',
  ];
  for (const p of payloads) {
    await new Promise((resolve) => {
      const s = net.connect(server.port, '127.0.0.1', () => s.end(p));
      s.setTimeout(2000, () => s.destroy());
      s.on('data', () => {});
      s.on('close', resolve);
      s.on('error', resolve);
    });
  }
  const r = await fetch(`${server.baseURL}/models`, {
    headers: { Authorization: `Bearer ${key}` },
  });
  assert.equal(r.status, 200);
});

test('body over --max-body gets 413', async () => {
  const r = await post('/completions', JSON.stringify({
    model: MODEL_ID, prompt: 'x'.repeat(70000),
  }));
  assert.equal(r.status, 413);
  assertErrorShape(r.text, '413');
});

test('method not allowed and unknown routes', async () => {
  let r = await fetch(`${server.baseURL}/completions`, {
    headers: { Authorization: `Bearer ${key}` },
  });
  assert.equal(r.status, 405);
  assertErrorShape(await r.text(), '405');
  r = await fetch(`${server.baseURL}/embeddings/x`, { method: 'DELETE' });
  assert.equal(r.status, 404);
  assertErrorShape(await r.text(), '404');
});

test('failed requests are in the ledger with their status', async () => {
  const rows = sql(server.db,
    "SELECT http_status, COUNT(*) AS n FROM usage GROUP BY http_status");
  const byStatus = Object.fromEntries(rows.map((r) => [r.http_status, r.n]));
  assert.ok(byStatus[400] >= 30, JSON.stringify(byStatus));
});

test('serve rejects a corrupt model with a clear message', () => {
  const dir = mkdtempSync(join(tmpdir(), 'taphouse-bad-'));
  try {
    const bad = join(dir, 'broken.gguf');
    writeFileSync(bad, readFileSync(MODEL).subarray(0, 4000));
    const r = spawnSync(BIN, ['serve', '--model', bad, '--port', '0',
      '--db', join(dir, 'x.db')], { encoding: 'utf8', timeout: 20000 });
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /broken\.gguf/);

    const missing = spawnSync(BIN, ['serve', '--model', join(dir, 'nope.gguf'),
      '--port', '0', '--db', join(dir, 'x.db')],
    { encoding: 'utf8', timeout: 20000 });
    assert.notEqual(missing.status, 0);
    assert.match(missing.stderr, /nope\.gguf/);

    writeFileSync(join(dir, 'file'), 'x');
    const baddb = spawnSync(BIN, ['serve', '--model', MODEL, '--port', '0',
      '--db', join(dir, 'file', 'sub', 'x.db')],
    { encoding: 'utf8', timeout: 20000 });
    assert.notEqual(baddb.status, 0);
    assert.match(baddb.stderr, /database/);

    const badflag = spawnSync(BIN, ['serve', '--model', MODEL, '--port',
      'eighty'], { encoding: 'utf8', timeout: 20000 });
    assert.equal(badflag.status, 2);
    assert.match(badflag.stderr, /--port/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('full queue answers 503 overloaded', async () => {
  const small = await startServer(['--parallel', '1', '--max-queue', '1']);
  try {
    const k = createKey(small.db, 'crowd');
    const body = JSON.stringify({
      model: MODEL_ID, prompt: 'Once upon a time', max_tokens: 400,
      temperature: 0, logit_bias: { 2: -100 },
    });
    const send = () => fetch(`${small.baseURL}/completions`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${k}`, 'Content-Type': 'application/json' },
      body,
    }).then(async (r) => ({ status: r.status, body: await r.json() }));
    // One request with more sequences than the queue limit still runs.
    const wide = await fetch(`${small.baseURL}/completions`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${k}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ model: MODEL_ID, prompt: 'a', n: 3, max_tokens: 3 }),
    });
    assert.equal(wide.status, 200);
    assert.equal((await wide.json()).choices.length, 3);

    const results = await Promise.all(Array.from({ length: 8 }, send));
    const statuses = results.map((r) => r.status);
    assert.ok(statuses.includes(200), statuses.join(','));
    const rejected = results.filter((r) => r.status === 503);
    assert.ok(rejected.length >= 1, statuses.join(','));
    assert.equal(rejected[0].body.error.code, 'overloaded');
    // Served and rejected requests are both in the ledger.
    const rows = sql(small.db, 'SELECT http_status FROM usage');
    assert.equal(rows.length, 9);
  } finally {
    assert.equal(await small.stop(), 0);
  }
});

// Read a whole streamed completion over raw HTTP; resolves to its body.
function streamRaw(port, k, payload) {
  const body = JSON.stringify(payload);
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: '127.0.0.1', port, path: '/v1/completions', method: 'POST',
      headers: {
        Authorization: `Bearer ${k}`, 'Content-Type': 'application/json',
        'Content-Length': Buffer.byteLength(body),
      },
    }, (res) => {
      let text = '';
      res.on('data', (d) => { text += d; });
      res.on('end', () => resolve(text));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

test('shutdown lets running requests finish', async () => {
  const s = await startServer(['--shutdown-timeout', '30']);
  const k = createKey(s.db, 'drain');
  const pending = streamRaw(s.port, k, {
    model: MODEL_ID, prompt: 'Once upon a time', max_tokens: 300,
    temperature: 0, stream: true, logit_bias: { 2: -100 },
  });
  await new Promise((r) => setTimeout(r, 30));
  s.child.kill('SIGTERM');
  const text = await pending;
  assert.match(text, /"finish_reason":"length"/);
  assert.ok(text.endsWith('data: [DONE]\n\n'));
  if (s.child.exitCode === null) {
    await new Promise((r) => s.child.once('exit', r));
  }
  assert.equal(s.child.exitCode, 0);
  const rows = sql(s.db, 'SELECT http_status, completion_tokens FROM usage');
  assert.deepEqual(rows, [{ http_status: 200, completion_tokens: 300 }]);
  await s.stop();
});

test('shutdown timeout aborts streams with an error event', async () => {
  const s = await startServer(['--shutdown-timeout', '0', '--threads', '1']);
  const k = createKey(s.db, 'abort');
  // Enough sequences that generation outlasts the signal.
  const pending = streamRaw(s.port, k, {
    model: MODEL_ID, prompt: ['Once upon a time', 'The dog'], n: 8,
    max_tokens: 500, temperature: 0, stream: true, logit_bias: { 2: -100 },
  });
  await new Promise((r) => setTimeout(r, 100));
  s.child.kill('SIGTERM');
  const text = await pending;
  assert.match(text, /"type":"server_error"/);
  assert.match(text, /shutting down/);
  assert.ok(text.endsWith('data: [DONE]\n\n'), text.slice(-200));
  const rows = sql(s.db, 'SELECT http_status, finish_reason, '
    + 'completion_tokens FROM usage');
  assert.equal(rows.length, 1);
  assert.equal(rows[0].http_status, 503);
  assert.equal(rows[0].finish_reason, 'aborted');
  assert.ok(rows[0].completion_tokens > 0);
  assert.ok(rows[0].completion_tokens < 16 * 500);
  assert.equal(await s.stop(), 0);
});

test('per-address connection limit and idle timeout', async () => {
  const s = await startServer(['--max-connections-per-ip', '2',
    '--idle-timeout', '2']);
  try {
    const open = () => new Promise((resolve) => {
      const sock = net.connect(s.port, '127.0.0.1', () => resolve(sock));
      sock.on('error', () => resolve(sock));
    });
    // Resolves to the milliseconds until SOCK closed, or -1 after 4 s.
    const closed = (sock) => new Promise((resolve) => {
      const t0 = Date.now();
      if (sock.destroyed) resolve(0);
      sock.on('close', () => resolve(Date.now() - t0));
      setTimeout(() => resolve(-1), 4000);
    });
    const a = await open();
    const b = await open();
    await new Promise((r) => setTimeout(r, 100));
    // A third connection from the same address is closed at once.
    const c = await open();
    const cMs = await closed(c);
    assert.ok(cMs >= 0, 'third connection is closed');
    assert.ok(cMs < 1000, `third connection closed after ${cMs} ms`);
    // Idle connections are closed after the idle timeout.
    assert.ok(await closed(a) >= 0);
    assert.ok(await closed(b) >= 0);
    const r = await fetch(`http://127.0.0.1:${s.port}/health`);
    assert.equal(r.status, 200);
  } finally {
    assert.equal(await s.stop(), 0);
  }
});
