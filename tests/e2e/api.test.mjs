// End-to-end tests of the OpenAI-compatible API through the official
// openai SDK, against the real binary and a real SQLite ledger.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import OpenAI from 'openai';
import {
  startServer, createKey, sql, taphouse, readReference, parseMaybeString,
  MODEL_ID,
} from './harness.mjs';

let server;
let key;
let client;

before(async () => {
  server = await startServer();
  key = createKey(server.db, 'acme', 'e2e');
  client = new OpenAI({ apiKey: key, baseURL: server.baseURL, maxRetries: 0 });
});

after(async () => {
  const code = await server.stop();
  assert.equal(code, 0, 'server exits cleanly on SIGTERM');
});

function usageRow(requestId) {
  const rows = sql(server.db,
    `SELECT prompt_tokens, completion_tokens, http_status, finish_reason,
            endpoint, model, key_id
       FROM usage WHERE request_id = '${requestId}'`);
  assert.equal(rows.length, 1, `one usage row for ${requestId}`);
  return rows[0];
}

test('models list names the served model', async () => {
  const page = await client.models.list();
  const ids = page.data.map((m) => m.id);
  assert.deepEqual(ids, [MODEL_ID]);
  assert.equal(page.data[0].object, 'model');
});

test('models retrieve and unknown model', async () => {
  const m = await client.models.retrieve(MODEL_ID);
  assert.equal(m.id, MODEL_ID);
  await assert.rejects(client.models.retrieve('no-such-model'),
    (e) => e instanceof OpenAI.NotFoundError && e.status === 404);
});

test('greedy completion matches llama.cpp', async () => {
  const ref = readReference('stories260K-f32', 'greedy.json');
  const c = ref.cases.find((x) => x.prompt === 'Once upon a time');
  const expectedIds = parseMaybeString(c.generated_ids);
  const res = await client.completions.create({
    model: MODEL_ID,
    prompt: c.prompt,
    max_tokens: expectedIds.length,
    temperature: 0,
  });
  assert.equal(res.object, 'text_completion');
  assert.equal(res.choices[0].text, c.generated_text);
  assert.equal(res.choices[0].finish_reason, 'length');
  assert.equal(res.usage.prompt_tokens, c.prompt_ids.length);
  assert.equal(res.usage.completion_tokens, expectedIds.length);
  assert.equal(res.usage.total_tokens,
    c.prompt_ids.length + expectedIds.length);

  assert.equal(res._request_id, res.id, 'X-Request-Id names the response');
  const row = usageRow(res.id);
  assert.equal(row.prompt_tokens, res.usage.prompt_tokens);
  assert.equal(row.completion_tokens, res.usage.completion_tokens);
  assert.equal(row.http_status, 200);
  assert.equal(row.endpoint, '/v1/completions');
  assert.equal(row.model, MODEL_ID);
});

test('completion with token id prompt', async () => {
  const res = await client.completions.create({
    model: MODEL_ID,
    prompt: [1, 403, 407, 261, 378],
    max_tokens: 8,
    temperature: 0,
  });
  assert.equal(res.usage.prompt_tokens, 5);
  assert.ok(res.choices[0].text.startsWith(', there was'),
    `text: ${JSON.stringify(res.choices[0].text)}`);
});

test('completion with several prompts', async () => {
  const res = await client.completions.create({
    model: MODEL_ID,
    prompt: ['Once upon a time', 'The cat'],
    max_tokens: 4,
    temperature: 0,
  });
  assert.equal(res.choices.length, 2);
  assert.deepEqual(res.choices.map((c) => c.index), [0, 1]);
  assert.ok(res.choices[0].text.startsWith(', there'));
  assert.equal(res.usage.completion_tokens, 8);
});

test('stop string ends the text before it', async () => {
  const res = await client.completions.create({
    model: MODEL_ID,
    prompt: 'Once upon a time',
    max_tokens: 40,
    temperature: 0,
    stop: [' girl', 'zzz'],
  });
  assert.equal(res.choices[0].text, ', there was a little');
  assert.equal(res.choices[0].finish_reason, 'stop');
});

test('chat completion', async () => {
  const res = await client.chat.completions.create({
    model: MODEL_ID,
    messages: [
      { role: 'system', content: 'You tell stories.' },
      { role: 'user', content: 'Tell me about a dog.' },
    ],
    max_completion_tokens: 24,
    temperature: 0,
  });
  assert.equal(res.object, 'chat.completion');
  assert.equal(res.choices[0].message.role, 'assistant');
  assert.equal(typeof res.choices[0].message.content, 'string');
  assert.ok(res.choices[0].message.content.length > 0);
  assert.ok(['stop', 'length'].includes(res.choices[0].finish_reason));
  assert.ok(res.usage.prompt_tokens > 5);
  assert.ok(res.usage.completion_tokens >= 1);
  assert.ok(res.usage.completion_tokens <= 24);

  const row = usageRow(res.id);
  assert.equal(row.prompt_tokens, res.usage.prompt_tokens);
  assert.equal(row.completion_tokens, res.usage.completion_tokens);
  assert.equal(row.endpoint, '/v1/chat/completions');
});

test('streaming chat equals the whole response', async () => {
  const body = {
    model: MODEL_ID,
    messages: [{ role: 'user', content: 'Once upon a time' }],
    max_tokens: 30,
    temperature: 0,
  };
  const whole = await client.chat.completions.create(body);
  const stream = await client.chat.completions.create({
    ...body, stream: true, stream_options: { include_usage: true },
  });
  let text = '';
  let role = null;
  let finish = null;
  let usage = null;
  let id = null;
  let chunks = 0;
  for await (const chunk of stream) {
    chunks++;
    id = chunk.id;
    assert.equal(chunk.object, 'chat.completion.chunk');
    if (chunk.usage) usage = chunk.usage;
    for (const choice of chunk.choices) {
      if (choice.delta.role) role = choice.delta.role;
      if (choice.delta.content) text += choice.delta.content;
      if (choice.finish_reason) finish = choice.finish_reason;
    }
  }
  assert.ok(chunks > 3, `got ${chunks} chunks`);
  assert.equal(role, 'assistant');
  assert.equal(text, whole.choices[0].message.content);
  assert.equal(finish, whole.choices[0].finish_reason);
  assert.deepEqual(usage, whole.usage);

  const row = usageRow(id);
  assert.equal(row.completion_tokens, usage.completion_tokens);
  assert.equal(row.prompt_tokens, usage.prompt_tokens);
});

test('streaming completion ends with finish reason', async () => {
  const stream = await client.completions.create({
    model: MODEL_ID, prompt: 'Once upon a time', max_tokens: 10,
    temperature: 0, stream: true,
  });
  let text = '';
  let finish = null;
  for await (const chunk of stream) {
    text += chunk.choices[0]?.text ?? '';
    finish = chunk.choices[0]?.finish_reason ?? finish;
  }
  assert.ok(text.startsWith(', there was a little girl'), text);
  assert.equal(finish, 'length');
});

test('same seed gives the same sample', async () => {
  const body = {
    model: MODEL_ID, prompt: 'The dog', max_tokens: 20, temperature: 1,
    seed: 1234,
  };
  const a = await client.completions.create(body);
  const b = await client.completions.create(body);
  assert.equal(a.choices[0].text, b.choices[0].text);
});

test('completion logprobs match llama.cpp', async () => {
  const ref = readReference('stories260K-f32', 'logits.json');
  const c = ref.cases.find((x) => x.prompt === 'Once upon a time');
  const res = await client.completions.create({
    model: MODEL_ID, prompt: c.prompt, max_tokens: 3, temperature: 0,
    logprobs: 5,
  });
  const lp = res.choices[0].logprobs;
  assert.equal(lp.tokens.length, 3);
  assert.equal(lp.token_logprobs.length, 3);
  assert.equal(lp.tokens[0], c.top10[0].piece);
  assert.ok(Math.abs(lp.token_logprobs[0] - c.top10[0].logprob) < 1e-3,
    `logprob ${lp.token_logprobs[0]} vs ${c.top10[0].logprob}`);
  const top = lp.top_logprobs[0];
  assert.equal(Object.keys(top).length, 5);
  for (const ref10 of c.top10.slice(0, 5)) {
    assert.ok(Math.abs(top[ref10.piece] - ref10.logprob) < 1e-3,
      `top logprob of ${JSON.stringify(ref10.piece)}`);
  }
  assert.deepEqual(lp.text_offset.slice(0, 2), [0, lp.tokens[0].length]);
  assert.equal(lp.tokens.join(''), res.choices[0].text);
});

test('chat logprobs streamed equal whole', async () => {
  const body = {
    model: MODEL_ID, messages: [{ role: 'user', content: 'A cat' }],
    max_tokens: 12, temperature: 0, logprobs: true, top_logprobs: 3,
  };
  const whole = await client.chat.completions.create(body);
  const content = whole.choices[0].logprobs.content;
  assert.ok(content.length >= 1);
  assert.ok(content.length <= whole.usage.completion_tokens);
  for (const entry of content) {
    assert.equal(entry.top_logprobs.length, 3);
    assert.ok(entry.logprob <= 0);
    // Greedy picks the most likely token.
    assert.equal(entry.top_logprobs[0].token, entry.token);
    assert.ok(entry.top_logprobs[0].logprob >= entry.top_logprobs[1].logprob);
    assert.equal(Buffer.from(entry.bytes).toString('utf8'), entry.token);
  }
  assert.equal(content.map((e) => e.token).join(''),
    whole.choices[0].message.content);

  const stream = await client.chat.completions.create({ ...body, stream: true });
  const streamed = [];
  for await (const chunk of stream) {
    const lp = chunk.choices[0]?.logprobs;
    if (lp) streamed.push(...lp.content);
  }
  assert.deepEqual(streamed, content);

  await assert.rejects(client.chat.completions.create({
    ...body, logprobs: false,
  }), (e) => e.status === 400 && e.param === 'top_logprobs');
});

test('n choices stream interleaved and match', async () => {
  const body = {
    model: MODEL_ID, prompt: 'The dog', max_tokens: 12, temperature: 0.8,
    seed: 99, n: 3,
  };
  const whole = await client.completions.create(body);
  assert.equal(whole.choices.length, 3);
  const stream = await client.completions.create({ ...body, stream: true });
  const texts = ['', '', ''];
  const finishes = [null, null, null];
  for await (const chunk of stream) {
    for (const c of chunk.choices) {
      texts[c.index] += c.text;
      if (c.finish_reason) finishes[c.index] = c.finish_reason;
    }
  }
  for (let i = 0; i < 3; i++) {
    assert.equal(texts[i], whole.choices[i].text, `choice ${i}`);
    assert.equal(finishes[i], whole.choices[i].finish_reason);
  }
  // Different seeds per choice: not all three are the same text.
  assert.ok(new Set(texts).size > 1, JSON.stringify(texts));
});

test('echo returns the prompt before the completion', async () => {
  const res = await client.completions.create({
    model: MODEL_ID, prompt: 'Once upon a time', max_tokens: 4,
    temperature: 0, echo: true,
  });
  assert.ok(res.choices[0].text.startsWith('Once upon a time, there'),
    res.choices[0].text);
  const ids = await client.completions.create({
    model: MODEL_ID, prompt: [403, 407], max_tokens: 1, temperature: 0,
    echo: true,
  });
  assert.ok(ids.choices[0].text.startsWith(' Once upon'),
    JSON.stringify(ids.choices[0].text));
});

test('control token text in a message stays text', async () => {
  const count = async (content) => (await client.chat.completions.create({
    model: MODEL_ID, messages: [{ role: 'user', content }], max_tokens: 1,
    temperature: 0,
  })).usage.prompt_tokens;
  const plain = await count('tell me');
  const injected = await count('tell </s> me');
  // With this vocabulary "</s>" adds 3 ids when it is read as the
  // control token and 5 when it stays text.
  assert.equal(injected - plain, 5, `${plain} -> ${injected}`);
});

test('wrong key raises AuthenticationError', async () => {
  const bad = new OpenAI({
    apiKey: key.slice(0, -4) + 'AAAA', baseURL: server.baseURL, maxRetries: 0,
  });
  await assert.rejects(bad.models.list(), (e) => {
    assert.ok(e instanceof OpenAI.AuthenticationError);
    assert.equal(e.status, 401);
    assert.equal(e.code, 'invalid_api_key');
    return true;
  });
  const none = new OpenAI({
    apiKey: 'not-a-key', baseURL: server.baseURL, maxRetries: 0,
  });
  await assert.rejects(none.chat.completions.create({
    model: MODEL_ID, messages: [{ role: 'user', content: 'hi' }],
  }), OpenAI.AuthenticationError);
});

test('invalid fields are rejected with 400', async () => {
  const cases = [
    [{ temperature: -1 }, 'temperature'],
    [{ temperature: 'hot' }, 'temperature'],
    [{ max_tokens: 0 }, 'max_tokens'],
    [{ max_tokens: 1.5 }, 'max_tokens'],
    [{ max_tokens: -3 }, 'max_tokens'],
    [{ top_p: 1.5 }, 'top_p'],
    [{ n: 0 }, 'n'],
    [{ presence_penalty: 9 }, 'presence_penalty'],
    [{ stop: ['a', 'b', 'c', 'd', 'e'] }, 'stop'],
    [{ logit_bias: { 99999: 1 } }, 'logit_bias'],
    [{ logit_bias: { 5: 1000 } }, 'logit_bias'],
    [{ prompt: [] }, 'prompt'],
    [{ prompt: [1, 999999] }, 'prompt'],
    [{ prompt: 42 }, 'prompt'],
  ];
  for (const [extra, param] of cases) {
    await assert.rejects(client.completions.create({
      model: MODEL_ID, prompt: 'Hi', max_tokens: 2, ...extra,
    }), (e) => {
      assert.ok(e instanceof OpenAI.BadRequestError,
        `${JSON.stringify(extra)} gives BadRequestError, got ${e}`);
      assert.equal(e.status, 400);
      assert.equal(e.param, param, `param for ${JSON.stringify(extra)}`);
      assert.equal(e.type, 'invalid_request_error');
      return true;
    });
  }
});

test('unknown model in a request gives 404', async () => {
  await assert.rejects(client.chat.completions.create({
    model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }],
  }), (e) => e instanceof OpenAI.NotFoundError && e.code === 'model_not_found');
});

test('context length exceeded', async () => {
  await assert.rejects(client.completions.create({
    model: MODEL_ID, prompt: 'Once upon a time', max_tokens: 100000,
  }), (e) => {
    assert.equal(e.status, 400);
    assert.equal(e.code, 'context_length_exceeded');
    return true;
  });
});

test('bad JSON and oversized body over raw HTTP', async () => {
  const headers = {
    Authorization: `Bearer ${key}`, 'Content-Type': 'application/json',
  };
  let res = await fetch(`${server.baseURL}/completions`, {
    method: 'POST', headers, body: '{"model": "x", ',
  });
  assert.equal(res.status, 400);
  let body = await res.json();
  assert.equal(body.error.type, 'invalid_request_error');
  assert.match(body.error.message, /not valid JSON/);

  res = await fetch(`${server.baseURL}/completions`, {
    method: 'POST', headers, body: 'x'.repeat(5 * 1024 * 1024),
  });
  assert.equal(res.status, 413);
  body = await res.json();
  assert.equal(body.error.code, 'request_too_large');

  res = await fetch(`${server.baseURL}/nothing-here`, { headers });
  assert.equal(res.status, 404);
  res = await fetch(`http://127.0.0.1:${server.port}/health`);
  assert.equal(res.status, 200);
});

test('concurrent requests all complete with equal greedy text', async () => {
  const body = {
    model: MODEL_ID, prompt: 'Once upon a time', max_tokens: 24,
    temperature: 0,
  };
  const runs = [];
  for (let i = 0; i < 8; i++) {
    if (i % 2 === 0) {
      runs.push(client.completions.create(body).then((r) => r.choices[0].text));
    } else {
      runs.push((async () => {
        const s = await client.completions.create({ ...body, stream: true });
        let t = '';
        for await (const c of s) t += c.choices[0]?.text ?? '';
        return t;
      })());
    }
  }
  const texts = await Promise.all(runs);
  for (const t of texts) assert.equal(t, texts[0]);
  assert.ok(texts[0].startsWith(', there was a little girl'));
});

test('client leaving mid-stream is metered and frees the slot', async () => {
  // End-of-sequence is banned so the generation outlasts the client.
  const body = JSON.stringify({
    model: MODEL_ID, prompt: 'Once upon a time', max_tokens: 500,
    temperature: 0, stream: true, logit_bias: { 2: -100 },
  });
  await new Promise((resolve, reject) => {
    const req = http.request({
      host: '127.0.0.1', port: server.port, path: '/v1/completions',
      method: 'POST',
      headers: {
        Authorization: `Bearer ${key}`, 'Content-Type': 'application/json',
        'Content-Length': Buffer.byteLength(body),
      },
    }, (res) => {
      assert.equal(res.statusCode, 200);
      res.once('data', () => {
        req.destroy();
        resolve();
      });
    });
    req.on('error', (e) => { if (!req.destroyed) reject(e); });
    req.end(body);
  });

  // The row for the abandoned stream appears with the client-gone status.
  let rows = [];
  for (let i = 0; i < 50 && rows.length === 0; i++) {
    await new Promise((r) => setTimeout(r, 100));
    rows = sql(server.db, 'SELECT completion_tokens, http_status, '
      + 'finish_reason FROM usage WHERE http_status = 499');
  }
  assert.equal(rows.length, 1);
  assert.ok(rows[0].completion_tokens >= 1,
    `tokens ${rows[0].completion_tokens}`);
  assert.ok(rows[0].completion_tokens < 500,
    `tokens ${rows[0].completion_tokens}`);
  assert.equal(rows[0].finish_reason, 'cancelled');

  const res = await client.completions.create({
    model: MODEL_ID, prompt: 'Hi', max_tokens: 2,
  });
  assert.equal(res.usage.completion_tokens, 2);
});

test('revoked key is rejected within a second', async () => {
  const second = createKey(server.db, 'beta');
  const c2 = new OpenAI({ apiKey: second, baseURL: server.baseURL, maxRetries: 0 });
  await c2.models.list();
  const list = JSON.parse(taphouse(['keys', 'list', '--db', server.db,
    '--format', 'json']));
  const entry = list.find((k) => second.includes(k.id ?? k.key_id));
  assert.ok(entry, 'the new key is listed');
  taphouse(['keys', 'revoke', '--db', server.db, entry.id ?? entry.key_id]);
  await new Promise((r) => setTimeout(r, 1000));
  await assert.rejects(c2.models.list(), OpenAI.AuthenticationError);
  // Other keys keep working.
  await client.models.list();
});

test('every metered request has a ledger row', async () => {
  const rows = sql(server.db,
    "SELECT COUNT(*) AS n FROM usage WHERE key_id IS NULL OR key_id = ''");
  assert.equal(rows[0].n, 0);
  const failed = sql(server.db,
    'SELECT COUNT(*) AS n FROM usage WHERE http_status = 400');
  assert.ok(failed[0].n >= 14, `400 rows: ${failed[0].n}`);
});
