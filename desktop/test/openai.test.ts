// The acceptance of palyrad's OpenAI-compatible REST endpoints with the official
// `openai` npm SDK, unmodified: models, chat completions, responses and embeddings
// against palyra-echo and against an upstream provider played by a fake OpenAI-compatible server on loopback,
// streamed and not, and palyrad's refusals as the SDK's own error classes.
import { request as httpsRequest } from "node:https";
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { Readable } from "node:stream";
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import OpenAI from "openai";
import { createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { Role } from "../../gen/ts/palyra/access/v1/access_pb.js";
import { ConfigService } from "../../gen/ts/palyra/controlplane/v1/config_pb.js";
import { SecretService } from "../../gen/ts/palyra/controlplane/v1/secrets_pb.js";
import { palyraClients } from "../src/api.js";
import { startPalyrad, type Palyrad } from "./palyrad.js";

const upstreamKey = "sk-node-fake-51c2";

let daemon: Palyrad;
let upstream: Server;
/** The requests the fake upstream received, with their Authorization header. */
const received: { body: Record<string, unknown>; auth: string | undefined }[] = [];

/**
 * A fetch that trusts palyrad's CA: the SDK's `fetch` option, since Node's own fetch
 * reads extra CAs only at start (NODE_EXTRA_CA_CERTS, which a script would use).
 */
function tlsFetch(ca: Buffer) {
  return (input: string | URL | Request, init?: RequestInit): Promise<Response> =>
    new Promise((resolve, reject) => {
      const url = new URL(input instanceof Request ? input.url : input.toString());
      const headers = Object.fromEntries(new Headers(init?.headers));
      const req = httpsRequest(url, { method: init?.method ?? "GET", headers, ca }, (res) => {
        const h = new Headers();
        for (const [k, v] of Object.entries(res.headers)) {
          if (v !== undefined) h.set(k, Array.isArray(v) ? v.join(", ") : v);
        }
        resolve(new Response(Readable.toWeb(res) as ReadableStream, { status: res.statusCode, headers: h }));
      });
      req.on("error", reject);
      init?.signal?.addEventListener("abort", () => req.destroy(new Error("aborted")));
      req.end(typeof init?.body === "string" ? init.body : undefined);
    });
}

/** The official client pointed at palyrad with apiKey, without retries. */
function sdk(apiKey: string): OpenAI {
  return new OpenAI({ apiKey, baseURL: `${daemon.baseUrl}/v1`, maxRetries: 0, fetch: tlsFetch(daemon.ca) });
}

/** The fake upstream: answers with the last user message's words reversed. */
function startUpstream(): Promise<string> {
  upstream = createServer((req: IncomingMessage, res) => {
    let raw = "";
    req.on("data", (d: Buffer) => (raw += d));
    req.on("end", () => {
      if (req.url === "/v1/embeddings") {
        const body = JSON.parse(raw) as { model: string; input: string | string[] };
        received.push({ body, auth: req.headers.authorization });
        const inputs = Array.isArray(body.input) ? body.input : [body.input];
        res.setHeader("Content-Type", "application/json");
        res.end(JSON.stringify({ object: "list", model: body.model, usage: { prompt_tokens: 3 * inputs.length, total_tokens: 3 * inputs.length },
          data: inputs.map((text, index) => ({ object: "embedding", index, embedding: [index, text.length, 0.25] })) }));
        return;
      }
      const body = JSON.parse(raw) as { model: string; stream?: boolean; messages: { content: string }[]; stream_options?: { include_usage?: boolean } };
      received.push({ body, auth: req.headers.authorization });
      const words = body.messages[body.messages.length - 1].content.split(" ").reverse();
      const usage = { prompt_tokens: 9, completion_tokens: words.length, total_tokens: 9 + words.length };
      const base = { id: "chatcmpl-node", created: 1700000000, model: body.model };
      if (!body.stream) {
        res.setHeader("Content-Type", "application/json");
        res.end(JSON.stringify({ ...base, object: "chat.completion", usage,
          choices: [{ index: 0, message: { role: "assistant", content: words.join(" ") }, finish_reason: "stop" }] }));
        return;
      }
      res.setHeader("Content-Type", "text/event-stream");
      const send = (chunk: object) => res.write(`data: ${JSON.stringify({ ...base, object: "chat.completion.chunk", ...chunk })}\n\n`);
      send({ choices: [{ index: 0, delta: { role: "assistant", content: "" }, finish_reason: null }] });
      words.forEach((w, i) => send({ choices: [{ index: 0, delta: { content: i ? ` ${w}` : w }, finish_reason: null }] }));
      send({ choices: [{ index: 0, delta: {}, finish_reason: "stop" }] });
      if (body.stream_options?.include_usage) send({ choices: [], usage });
      res.end("data: [DONE]\n\n");
    });
  });
  return new Promise((resolve) => upstream.listen(0, "127.0.0.1", () => resolve(`http://127.0.0.1:${(upstream.address() as AddressInfo).port}/v1`)));
}

let operator: string;
let modelsOnly: string;
let limited: string;

before(async () => {
  daemon = await startPalyrad("ts-openai", "--compat-model", "palyra-echo");
  const upstreamUrl = await startUpstream();
  const bearer: Interceptor = (next) => (req) => {
    req.header.set("Authorization", `Bearer ${daemon.token}`);
    return next(req);
  };
  const transport = createConnectTransport({ baseUrl: daemon.baseUrl, httpVersion: "2", nodeOptions: { ca: daemon.ca }, interceptors: [bearer] });
  await createClient(SecretService, transport).putSecret({ name: "fake", value: new TextEncoder().encode(upstreamKey) });
  const text = (value: string) => ({ kind: { case: "text" as const, value } });
  await createClient(ConfigService, transport).updateConfig({
    change: { set: [
      { key: "compat.providers.fake.base_url", value: text(upstreamUrl) },
      { key: "compat.providers.fake.api_key", value: text("secret:fake") },
      { key: "compat.providers.fake.models", value: text("fake-model,alias=upstream-model") },
    ] },
    expectedRevision: 0n,
    reason: "openai sdk test",
  });
  const { access } = palyraClients(transport);
  operator = (await access.createToken({ label: "sdk", role: Role.OPERATOR })).secret;
  modelsOnly = (await access.createToken({ label: "models", role: Role.OPERATOR, scopes: ["compat.models.read"] })).secret;
  limited = (await access.createToken({ label: "limited", role: Role.OPERATOR, rateLimitPerMinute: 1 })).secret;

  // The API is off until compat_api is on: the SDK's PermissionDeniedError.
  await assert.rejects(sdk(operator).models.list(), (err: unknown) => {
    assert.ok(err instanceof OpenAI.PermissionDeniedError, `got ${err}`);
    assert.equal(err.code, "feature_disabled");
    return true;
  });
  const { featureFlag } = palyraClients(transport);
  await featureFlag.setFlag({ key: "compat_api", enabled: true });
  await featureFlag.setFlag({ key: "compat_streaming", enabled: true });
});

after(async () => {
  upstream?.close();
  await daemon?.stop();
});

/** Reads a stream: the deltas joined, and the usage of the usage chunk. */
async function collect(stream: AsyncIterable<OpenAI.Chat.Completions.ChatCompletionChunk>) {
  let text = "";
  let usage: OpenAI.CompletionUsage | undefined;
  for await (const chunk of stream) {
    for (const choice of chunk.choices) text += choice.delta.content ?? "";
    if (chunk.usage) {
      assert.equal(chunk.choices.length, 0, "the usage chunk has no choices");
      usage = chunk.usage;
    }
  }
  return { text, usage };
}

describe("the openai npm SDK against palyrad", () => {
  it("lists and gets models", async () => {
    const page = await sdk(operator).models.list();
    assert.deepEqual(page.data.map((m) => `${m.id}/${m.owned_by}`), ["palyra-echo/palyra", "fake-model/fake", "alias/fake"]);
    const m = await sdk(operator).models.retrieve("fake-model");
    assert.equal(m.owned_by, "fake");
    assert.equal(m.object, "model");
  });

  it("chats with palyra-echo, streamed and not", async () => {
    const messages = [{ role: "user" as const, content: "the quick  brown fox" }];
    const res = await sdk(operator).chat.completions.create({ model: "palyra-echo", messages });
    assert.equal(res.choices[0].message.content, "the quick  brown fox");
    assert.deepEqual(res.usage, { prompt_tokens: 4, completion_tokens: 4, total_tokens: 8 });
    const stream = await sdk(operator).chat.completions.create({ model: "palyra-echo", messages, stream: true, stream_options: { include_usage: true } });
    const { text, usage } = await collect(stream);
    assert.equal(text, "the quick  brown fox");
    assert.equal(usage?.completion_tokens, 4);
  });

  it("chats with an upstream provider, streamed and not", async () => {
    const messages = [{ role: "user" as const, content: "one two three" }];
    const res = await sdk(operator).chat.completions.create({ model: "alias", messages, temperature: 0.3, top_p: 0.9 });
    assert.equal(res.choices[0].message.content, "three two one");
    const last = received[received.length - 1];
    assert.equal(last.body.model, "upstream-model", "the alias is rewritten");
    assert.equal(last.body.top_p, 0.9, "fields palyrad does not read are passed on");
    assert.equal(last.auth, `Bearer ${upstreamKey}`);
    const stream = await sdk(operator).chat.completions.create({ model: "fake-model", messages, stream: true });
    const { text, usage } = await collect(stream);
    assert.equal(text, "three two one");
    assert.equal(usage, undefined, "no usage chunk unless asked for");
    const withUsage = await collect(await sdk(operator).chat.completions.create({ model: "fake-model", messages, stream: true, stream_options: { include_usage: true } }));
    assert.equal(withUsage.text, "three two one");
    assert.equal(withUsage.usage?.completion_tokens, 3);
  });

  it("refuses with the SDK's error classes", async () => {
    const messages = [{ role: "user" as const, content: "hi" }];
    await assert.rejects(sdk("plr_01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8_abcdefghijkl").models.list(), (err: unknown) => {
      assert.ok(err instanceof OpenAI.AuthenticationError, `got ${err}`);
      assert.equal(err.code, "invalid_api_key");
      return true;
    });
    await assert.rejects(sdk(modelsOnly).chat.completions.create({ model: "palyra-echo", messages }), (err: unknown) => {
      assert.ok(err instanceof OpenAI.PermissionDeniedError, `got ${err}`);
      assert.match(err.message, /compat\.chat\.create/);
      return true;
    });
    await assert.rejects(sdk(operator).models.retrieve("gpt-5"), (err: unknown) => {
      assert.ok(err instanceof OpenAI.NotFoundError, `got ${err}`);
      assert.equal(err.code, "model_not_found");
      return true;
    });
    await assert.rejects(sdk(operator).chat.completions.create({ model: "palyra-echo", messages: [] }), (err: unknown) => {
      assert.ok(err instanceof OpenAI.BadRequestError, `got ${err}`);
      assert.equal(err.param, "messages");
      return true;
    });
    await assert.rejects(sdk(operator).chat.completions.create({ model: "palyra-echo", messages, n: 3 }), (err: unknown) => {
      assert.ok(err instanceof OpenAI.BadRequestError, `got ${err}`);
      assert.equal(err.param, "n");
      return true;
    });
    await assert.rejects(sdk(modelsOnly).embeddings.create({ model: "palyra-echo", input: "x" }), (err: unknown) => {
      assert.ok(err instanceof OpenAI.PermissionDeniedError, `got ${err}`);
      assert.match(err.message, /compat\.embeddings\.create/);
      return true;
    });
    await assert.rejects(sdk(modelsOnly).responses.create({ model: "palyra-echo", input: "x" }), (err: unknown) => {
      assert.ok(err instanceof OpenAI.PermissionDeniedError, `got ${err}`);
      assert.match(err.message, /compat\.responses\.create/);
      return true;
    });
    for (const input of ["", [], ["a", ""], [{ text: "a" }]]) {
      await assert.rejects(sdk(operator).embeddings.create({ model: "palyra-echo", input: input as string[] }), (err: unknown) => {
        assert.ok(err instanceof OpenAI.BadRequestError, `${JSON.stringify(input)}: got ${err}`);
        assert.match(String(err.param), /^input/);
        return true;
      });
    }
    for (const input of ["", [], 42, [{ role: "wizard", content: "x" }]]) {
      await assert.rejects(sdk(operator).responses.create({ model: "palyra-echo", input: input as string }), (err: unknown) => {
        assert.ok(err instanceof OpenAI.BadRequestError, `${JSON.stringify(input)}: got ${err}`);
        assert.match(String(err.param), /^input/);
        return true;
      });
    }
    await sdk(limited).models.list();
    await assert.rejects(sdk(limited).models.list(), (err: unknown) => {
      assert.ok(err instanceof OpenAI.RateLimitError, `got ${err}`);
      assert.ok(Number(err.headers?.get("retry-after")) >= 1, "Retry-After names a wait");
      return true;
    });
  });

  it("embeds with palyra-echo and an upstream, as floats and base64", async () => {
    const f32 = (v: number[]) => v.map(Math.fround);
    // Without encoding_format the SDK asks for base64 and decodes it.
    const b64 = await sdk(operator).embeddings.create({ model: "palyra-echo", input: ["the quick brown fox", "jumps"] });
    const floats = await sdk(operator).embeddings.create({ model: "palyra-echo", input: ["the quick brown fox", "jumps"], encoding_format: "float" });
    assert.equal(b64.data.length, 2);
    assert.equal(floats.data[0].embedding.length, 256);
    assert.deepEqual(f32(b64.data[0].embedding), f32(floats.data[0].embedding));
    assert.notDeepEqual(floats.data[0].embedding, floats.data[1].embedding);
    assert.deepEqual(floats.usage, { prompt_tokens: 5, total_tokens: 5 });
    const norm = floats.data[1].embedding.reduce((s, x) => s + x * x, 0);
    assert.ok(Math.abs(norm - 1) < 1e-4, `unit length: ${norm}`);
    const raw = await sdk(operator).embeddings.create({ model: "palyra-echo", input: "jumps", encoding_format: "base64", dimensions: 8 });
    assert.equal(typeof raw.data[0].embedding, "string", "base64 asked for is left to the caller");
    assert.equal(Buffer.from(raw.data[0].embedding as unknown as string, "base64").length, 8 * 4);

    const up = await sdk(operator).embeddings.create({ model: "alias", input: ["a", "bcd"] });
    assert.deepEqual(up.data.map((d) => d.embedding), [[0, 1, 0.25], [1, 3, 0.25]]);
    const last = received[received.length - 1];
    assert.equal(last.body.model, "upstream-model");
    assert.equal(last.body.encoding_format, "float", "palyrad asks upstreams for floats");
  });

  it("answers responses with palyra-echo and an upstream, streamed and not", async () => {
    const res = await sdk(operator).responses.create({ model: "palyra-echo", instructions: "be brief", input: "the quick  brown fox" });
    assert.equal(res.output_text, "the quick  brown fox");
    assert.equal(res.status, "completed");
    assert.equal(res.usage?.output_tokens, 4);
    assert.equal(res.usage?.input_tokens, 6);

    const stream = await sdk(operator).responses.create({ model: "palyra-echo", input: "the quick  brown fox", stream: true });
    let text = "";
    const types: string[] = [];
    let completed: OpenAI.Responses.Response | undefined;
    for await (const event of stream) {
      if (types[types.length - 1] !== event.type) types.push(event.type);
      if (event.type === "response.output_text.delta") text += event.delta;
      if (event.type === "response.completed") completed = event.response;
    }
    assert.equal(text, "the quick  brown fox");
    assert.deepEqual(types, ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
      "response.output_text.delta", "response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed"]);
    assert.equal(completed?.usage?.output_tokens, 4);

    const up = await sdk(operator).responses.create({ model: "alias", input: [{ role: "user", content: "one two three" }], max_output_tokens: 20 });
    assert.equal(up.output_text, "three two one");
    const last = received[received.length - 1];
    assert.equal(last.body.model, "upstream-model");
    assert.equal(last.body.max_tokens, 20);
    const streamed = await sdk(operator).responses.stream({ model: "fake-model", input: "a b c" });
    const final = await streamed.finalResponse();
    assert.equal(final.output_text, "c b a");
  });
});
