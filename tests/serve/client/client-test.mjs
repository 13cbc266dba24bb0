// Drives `gsa serve` on loopback with the official openai client (issue 13 item 4): completion, chat, streaming,
// stop sequences, seeds, usage, API errors as the client's APIError; the text equals `gsa generate` with the
// same settings; raw HTTP for what a client library never sends (bad JSON, invalid UTF-8, oversized bodies).
// usage: node client-test.mjs GSA_BINARY REPO_ROOT
import { spawn, execFile } from "node:child_process";
import { promisify } from "node:util";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import assert from "node:assert/strict";
import OpenAI from "openai";

const [gsa, root] = process.argv.slice(2);
const demo = path.join(root, "models/demo/gsa");
const key = "test-key";
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "gsa-serve-"));
const servers = [];

// A copy of the demo model whose tokenizer_config.json has a simple chat template.
const chatDir = path.join(tmp, "demo-chat");
fs.mkdirSync(chatDir);
for (const f of ["config.json", "model.safetensors", "tokenizer.json"]) fs.symlinkSync(path.join(demo, f), path.join(chatDir, f));
const tc = JSON.parse(fs.readFileSync(path.join(demo, "tokenizer_config.json"), "utf8"));
tc.chat_template = "{% for message in messages %}{{ message['role'] }}:{{ message['content'] }}\n{% endfor %}" +
  "{% if add_generation_prompt %}assistant:{% endif %}";
fs.writeFileSync(path.join(chatDir, "tokenizer_config.json"), JSON.stringify(tc));
const render = (msgs) => msgs.map((m) => `${m.role}:${m.content}\n`).join("") + "assistant:";

function startServer(args) {
  return new Promise((resolve, reject) => {
    const p = spawn(gsa, ["serve", "--port", "0", ...args], { stdio: ["ignore", "pipe", "pipe"] });
    servers.push(p);
    let out = "", err = "";
    p.stdout.on("data", (d) => {
      out += d;
      const m = out.match(/listening on (http:\/\/[0-9.]+:[0-9]+) .*\n/);
      if (m) resolve({ url: m[1], line: m[0], proc: p, stderr: () => err });
    });
    p.stderr.on("data", (d) => (err += d));
    p.on("exit", (code) => reject(new Error(`gsa serve exited with ${code} before listening:\n${err}`)));
  });
}

// `gsa generate` with the prompt as its context (prefilled, BOS per the tokenizer), as the server prefills a prompt.
// Asynchronous: a blocked event loop would let the client reuse a keep-alive connection the server closed meanwhile.
async function generate(prompt, opts) {
  const f = path.join(tmp, "prompt.txt");
  fs.writeFileSync(f, prompt);
  const args = ["generate", "--model", demo, "--method", "gsa", "--context-file", f, "--prompt", "", "--json",
    "--max-tokens", String(opts.max_tokens), "--temperature", String(opts.temperature ?? 0)];
  if (opts.seed !== undefined) args.push("--seed", String(opts.seed));
  if (opts.top_p !== undefined) args.push("--top-p", String(opts.top_p));
  const { stdout } = await promisify(execFile)(gsa, args, { encoding: "utf8" });
  return JSON.parse(stdout);
}

async function expectApiError(promise, status, code) {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof OpenAI.APIError, `not an APIError: ${e}`);
    assert.equal(e.status, status, e.message);
    if (code) assert.equal(e.code, code, e.message);
    return e;
  }
  assert.fail(`expected an APIError ${status}`);
}

async function raw(url, pathname, init = {}) {
  const r = await fetch(url + pathname, { ...init, headers: { authorization: `Bearer ${key}`, ...(init.headers ?? {}) } });
  const text = await r.text();
  let body = null;
  try { body = JSON.parse(text); } catch { /* not JSON */ }
  return { status: r.status, text, body };
}

const tests = [];
const test = (name, fn) => tests.push({ name, fn });

let main, plain, client;

test("models", async () => {
  const list = await client.models.list();
  assert.deepEqual(list.data.map((m) => m.id), ["demo"]);
});

test("completion equals gsa generate (greedy), usage right", async () => {
  const prompt = "Once upon a time there was a";
  const r = await client.completions.create({ model: "demo", prompt, max_tokens: 24, temperature: 0, gsa: { reuse: false } });
  const ref = await generate(prompt, { max_tokens: 24 });
  assert.equal(r.choices[0].text, ref.text);
  assert.equal(r.choices[0].finish_reason, "length");
  assert.equal(r.usage.prompt_tokens, ref.context_tokens);
  assert.equal(r.usage.completion_tokens, ref.ids.length);
  assert.equal(r.usage.total_tokens, ref.context_tokens + ref.ids.length);
  assert.equal(r.object, "text_completion");
});

test("same seed, same text; equals gsa generate with that seed", async () => {
  const req = { model: "demo", prompt: "The little dog", max_tokens: 20, temperature: 0.9, top_p: 0.95, seed: 123, gsa: { reuse: false } };
  const a = await client.completions.create(req);
  const b = await client.completions.create(req);
  assert.equal(a.choices[0].text, b.choices[0].text);
  const ref = await generate(req.prompt, { max_tokens: 20, temperature: 0.9, top_p: 0.95, seed: 123 });
  assert.equal(a.choices[0].text, ref.text);
});

test("streaming completion: chunks add up to the whole text, usage chunk, [DONE]", async () => {
  const req = { model: "demo", prompt: "In the morning the sun", max_tokens: 30, temperature: 0, gsa: { reuse: false } };
  const whole = await client.completions.create(req);
  const stream = await client.completions.create({ ...req, stream: true, stream_options: { include_usage: true } });
  let text = "", finish = null, usage = null, chunks = 0;
  for await (const c of stream) {
    chunks++;
    if (c.usage) usage = c.usage;
    for (const ch of c.choices) {
      text += ch.text;
      if (ch.finish_reason) finish = ch.finish_reason;
    }
  }
  assert.ok(chunks > 2, `only ${chunks} chunks`);
  assert.equal(text, whole.choices[0].text);
  assert.equal(finish, "length");
  assert.deepEqual(usage, whole.usage);
  // The raw stream ends with data: [DONE].
  const r = await raw(main.url, "/v1/completions", { method: "POST", body: JSON.stringify({ ...req, stream: true }) });
  assert.match(r.text, /data: \[DONE\]\n\n$/);
});

test("stop sequences (plain and streamed)", async () => {
  const req = { model: "demo", prompt: "She opened the door and", max_tokens: 40, temperature: 0, gsa: { reuse: false } };
  const full = (await client.completions.create(req)).choices[0].text;
  const stop = full.slice(6, 9);
  const want = full.slice(0, full.indexOf(stop));
  const r = await client.completions.create({ ...req, stop: [stop, "\u0000never"] });
  assert.equal(r.choices[0].text, want);
  assert.equal(r.choices[0].finish_reason, "stop");
  const stream = await client.completions.create({ ...req, stop, stream: true });
  let text = "";
  for await (const c of stream) text += c.choices[0]?.text ?? "";
  assert.equal(text, want);
});

test("n = 3: three choices, choice i sampled with seed + i; streamed choices carry their index", async () => {
  // One session at a time: every choice decodes alone, so it equals the n = 1 request with its seed bit for bit
  // (in a batch of M the matmuls round in M-row GEMMs).
  const one_at_a_time = await startServer(["--model", demo, "--model-name", "demo", "--max-sessions", "1"]);
  const client = new OpenAI({ baseURL: one_at_a_time.url + "/v1", apiKey: "unused", maxRetries: 0 });
  const req = { model: "demo", prompt: "The little dog", max_tokens: 12, temperature: 0.9, seed: 40, gsa: { reuse: false } };
  const r = await client.completions.create({ ...req, n: 3 });
  assert.deepEqual(r.choices.map((c) => c.index), [0, 1, 2]);
  let tokens = 0;
  for (let i = 0; i < 3; i++) {
    const one = await client.completions.create({ ...req, seed: 40 + i });
    assert.equal(r.choices[i].text, one.choices[0].text, `choice ${i}`);
    assert.equal(r.choices[i].finish_reason, one.choices[0].finish_reason, `choice ${i}`);
    assert.equal(r.usage.prompt_tokens, one.usage.prompt_tokens);
    tokens += one.usage.completion_tokens;
  }
  assert.equal(r.usage.completion_tokens, tokens);
  const stream = await client.completions.create({ ...req, n: 3, stream: true, stream_options: { include_usage: true } });
  const texts = ["", "", ""], finish = [null, null, null];
  let usage = null;
  for await (const c of stream) {
    if (c.usage) usage = c.usage;
    for (const ch of c.choices) {
      texts[ch.index] += ch.text;
      if (ch.finish_reason) finish[ch.index] = ch.finish_reason;
    }
  }
  assert.deepEqual(texts, r.choices.map((c) => c.text));
  assert.deepEqual(finish, r.choices.map((c) => c.finish_reason));
  assert.deepEqual(usage, r.usage);
  const main_client = new OpenAI({ baseURL: main.url + "/v1", apiKey: key, maxRetries: 0 });
  const chat = await main_client.chat.completions.create({ model: "demo", messages: [{ role: "user", content: "Hi" }], max_tokens: 4, n: 2, seed: 1 });
  assert.equal(chat.choices.length, 2);
  assert.equal(chat.choices[1].message.role, "assistant");
  assert.ok(chat.usage.completion_tokens >= 2 && chat.usage.completion_tokens <= 8, `${chat.usage.completion_tokens} tokens`);
});

test("chat: equals the completion of the rendered template; streamed deltas; follow-up turn", async () => {
  assert.ok(main.line.includes(", chat template"), main.line);
  const messages = [{ role: "system", content: "Be kind." }, { role: "user", content: "Tell me a story" }];
  const c = await client.chat.completions.create({ model: "demo", messages, max_tokens: 20, temperature: 0, gsa: { reuse: false } });
  const ref = await client.completions.create({ model: "demo", prompt: render(messages), max_tokens: 20, temperature: 0, gsa: { reuse: false } });
  assert.equal(c.object, "chat.completion");
  assert.equal(c.choices[0].message.role, "assistant");
  assert.equal(c.choices[0].message.content, ref.choices[0].text);
  assert.equal(c.usage.prompt_tokens, ref.usage.prompt_tokens);
  const stream = await client.chat.completions.create({ model: "demo", messages, max_tokens: 20, temperature: 0, stream: true, gsa: { reuse: false } });
  let text = "", role = null;
  for await (const ch of stream) {
    role = role ?? ch.choices[0]?.delta?.role;
    text += ch.choices[0]?.delta?.content ?? "";
  }
  assert.equal(role, "assistant");
  assert.equal(text, c.choices[0].message.content);
  const turn2 = [...messages, { role: "assistant", content: c.choices[0].message.content }, { role: "user", content: "And then?" }];
  const f = await client.chat.completions.create({ model: "demo", messages: turn2, max_tokens: 8, temperature: 0, gsa: { stats: true } });
  assert.equal(f.usage.completion_tokens, 8);
  // The held session of turn 1 (its prompt and reply but the last token, never run) is continued, not prefilled.
  assert.equal(f.gsa.prompt_tokens_reused, c.usage.prompt_tokens + c.usage.completion_tokens - 1);
  console.log(`    follow-up turn: ${f.gsa.prompt_tokens_reused} of ${f.usage.prompt_tokens} prompt tokens reused from the held session`);
});

test("a model without a chat template: 400 on chat, completions still served", async () => {
  const c = new OpenAI({ baseURL: plain.url + "/v1", apiKey: "unused", maxRetries: 0 });
  const e = await expectApiError(c.chat.completions.create({ model: "gsa", messages: [{ role: "user", content: "Hi" }] }), 400, "no_chat_template");
  assert.match(e.message, /model has no chat_template/);
  const r = await c.completions.create({ model: "gsa", prompt: "Hello", max_tokens: 3 });
  assert.equal(r.usage.completion_tokens, 3);
});

test("the gsa extension object", async () => {
  const r = await client.completions.create({ model: "demo", prompt: "a ".repeat(200) + "the end", max_tokens: 6, gsa: { stats: true } });
  assert.equal(r.gsa.method, "gsa");
  assert.equal(r.gsa.steps.length, 5);
  assert.ok(r.gsa.steps.every((s) => s.attended_tokens > 0 && Array.isArray(s.unfolded)));
  assert.ok(r.gsa.kv_bytes.memory > 0);
});

test("API errors surface as APIError with the right status", async () => {
  await expectApiError(client.completions.create({ model: "nope", prompt: "x" }), 404, "model_not_found");
  await expectApiError(client.completions.create({ model: "demo", prompt: "x", max_tokens: -1 }), 400, "invalid_value");
  await expectApiError(client.completions.create({ model: "demo", prompt: "x", max_tokens: 1e9 }), 400, "context_length_exceeded");
  await expectApiError(client.completions.create({ model: "demo", prompt: "word ".repeat(600) }), 400, "context_length_exceeded");
  await expectApiError(client.completions.create({ model: "demo", prompt: "x", n: 17 }), 400, "invalid_value");
  await expectApiError(client.completions.create({ model: "demo", prompt: "x", temperature: "hot" }), 400, "invalid_type");
  const wrong = new OpenAI({ baseURL: main.url + "/v1", apiKey: "wrong", maxRetries: 0 });
  await expectApiError(wrong.completions.create({ model: "demo", prompt: "x" }), 401, "invalid_api_key");
  await expectApiError(wrong.models.list(), 401);
});

test("raw HTTP: bad JSON, invalid UTF-8, oversized body, routes, auth", async () => {
  const post = (body, headers) => raw(main.url, "/v1/completions", { method: "POST", body, headers });
  let r = await post("{\"model\": \"demo\", ");
  assert.equal(r.status, 400);
  assert.equal(r.body.error.code, "invalid_json");
  assert.equal(r.body.error.type, "invalid_request_error");
  r = await post(Buffer.from([...Buffer.from('{"model":"demo","prompt":"a'), 0xff, ...Buffer.from('"}')]));
  assert.equal(r.status, 400);
  assert.equal(r.body.error.code, "invalid_utf8");
  r = await post(JSON.stringify({ model: "demo", prompt: "x".repeat(70000) }));
  assert.equal(r.status, 413);
  assert.equal(r.body.error.code, "body_too_large");
  r = await raw(main.url, "/v1/nothing");
  assert.equal(r.status, 404);
  assert.equal(r.body.error.code, "not_found");
  r = await fetch(main.url + "/health");
  assert.equal(r.status, 200);
  r = await fetch(main.url + "/metrics");
  assert.equal(r.status, 401);
  r = await raw(main.url, "/metrics");
  assert.equal(r.status, 200);
  for (const m of ["gsa_requests_total{endpoint=\"/v1/completions\",status=\"200\"}", "gsa_request_duration_seconds_bucket",
    "gsa_time_to_first_token_seconds_count", "gsa_completion_tokens_total", "gsa_sessions{state=\"idle\"}",
    "gsa_kv_bytes{tier=\"memory\"}", "gsa_sessions_evicted_total{action=\"dropped\"}"])
    assert.ok(r.text.includes(m), `metrics lack ${m}`);
  // Still serving after all that.
  const ok = await client.completions.create({ model: "demo", prompt: "Still", max_tokens: 2 });
  assert.equal(ok.usage.completion_tokens, 2);
});

test("concurrent requests all succeed", async () => {
  const rs = await Promise.all([...Array(8).keys()].map((i) =>
    client.completions.create({ model: "demo", prompt: `Story number ${i}:`, max_tokens: 10 + i, temperature: 0.5, seed: i })));
  rs.forEach((r, i) => assert.equal(r.usage.completion_tokens, 10 + i));
});

const cancelledCount = async () => {
  const m = await raw(main.url, "/metrics");
  return Number((m.text.match(/gsa_generations_total\{reason="cancelled"\} ([0-9]+)/) ?? [0, 0])[1]);
};

test("a client that disconnects cancels its generation (plain and streamed)", async () => {
  const before = await cancelledCount();
  const plainAbort = new AbortController();
  const pending = client.completions.create({ model: "demo", prompt: "Endless", max_tokens: 500 }, { signal: plainAbort.signal });
  setTimeout(() => plainAbort.abort(), 100);
  await assert.rejects(pending);
  const ac = new AbortController();
  const stream = await client.completions.create({ model: "demo", prompt: "Forever", max_tokens: 400, stream: true }, { signal: ac.signal });
  try {
    for await (const c of stream) { ac.abort(); }
  } catch { /* aborted */ }
  let cancelled = 0;
  for (let i = 0; i < 100 && cancelled < 2; i++) {  // wait for the scheduler's next steps, at most 10 s
    cancelled = (await cancelledCount()) - before;
    if (cancelled < 2) await new Promise((res) => setTimeout(res, 100));
  }
  assert.equal(cancelled, 2, "both generations should have been cancelled");
});

let failed = 0;
try {
  main = await startServer(["--model", chatDir, "--model-name", "demo", "--api-key", key, "--max-sessions", "4",
    "--max-context", "512", "--max-body", "65536"]);
  plain = await startServer(["--model", demo]);
  client = new OpenAI({ baseURL: main.url + "/v1", apiKey: key, maxRetries: 0 });
  for (const t of tests) {
    try {
      await t.fn();
      console.log(`ok   ${t.name}`);
    } catch (e) {
      failed++;
      console.log(`FAIL ${t.name}\n${e.stack}`);
    }
  }
  if (failed) console.log(`--- server log ---\n${main.stderr().slice(-4000)}`);
} finally {
  for (const p of servers) p.kill("SIGTERM");
  fs.rmSync(tmp, { recursive: true, force: true });
}
console.log(failed ? `${failed} of ${tests.length} failed` : `all ${tests.length} passed`);
process.exit(failed ? 1 : 0);
