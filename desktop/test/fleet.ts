// What the browser tests of agents share: a scripted OpenAI-compatible model served on
// loopback, palyrad's compat provider pointed at it, and a real node (`palyra node run`,
// built by `make build`) paired through the RPCs.
import { spawn, type ChildProcess } from "node:child_process";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import assert from "node:assert/strict";
import { createClient, type Transport } from "@connectrpc/connect";
import { ConfigService } from "../../gen/ts/palyra/controlplane/v1/config_pb.js";
import { SecretService } from "../../gen/ts/palyra/controlplane/v1/secrets_pb.js";
import { NodeInventoryService, Presence } from "../../gen/ts/palyra/controlplane/v1/nodes_pb.js";
import { PairingMethod, PairingService } from "../../gen/ts/palyra/controlplane/v1/pairing_pb.js";
import { PairingState } from "../../gen/ts/palyra/node/v1/node_pb.js";
import { eventually, type Palyrad } from "./palyrad.js";

const palyra = process.env.PALYRA ?? new URL("../../bin/palyra", import.meta.url).pathname;

/** MODEL is the scripted model's id, served by the provider "scripted". */
export const MODEL = "scripted-model";

/** A scripted model's server. */
export interface ScriptedModel {
  /** url is its base URL, ".../v1". */
  url: string;
  close(): void;
}

/** CALL is the prompt form that makes the scripted model call a given tool with given
 * arguments: "call TOOL {json}". */
const CALL = /^call (\S+) (.*)$/s;

/** startModel serves a scripted OpenAI-compatible model (streamed chat completions).
 * Without a tool message yet, it calls a tool: the one the last user message names as
 * "call TOOL {json arguments}", else the first it is offered, with "{}". Given the
 * tool's result, it answers: "The node's host is H" when the result holds a
 * "hostname", else "The tool said: " and the tool message as it is. */
export function startModel(): Promise<ScriptedModel> {
  const server = createServer((req, res) => {
    let body = "";
    req.on("data", (c: Buffer) => (body += c.toString()));
    req.on("end", () => {
      const r = JSON.parse(body) as { messages: { role: string; content?: string }[]; tools?: { function: { name: string } }[] };
      const result = r.messages.find((m) => m.role === "tool");
      const base = { id: "chatcmpl-scripted", object: "chat.completion.chunk", created: 1700000000, model: MODEL };
      const send = (delta: object, finish: string | null = null) =>
        res.write(`data: ${JSON.stringify({ ...base, choices: [{ index: 0, delta, finish_reason: finish }] })}\n\n`);
      res.setHeader("Content-Type", "text/event-stream");
      if (!result) {
        const prompt = r.messages.filter((m) => m.role === "user").at(-1)?.content ?? "";
        const asked = CALL.exec(prompt);
        const name = asked?.[1] ?? r.tools?.[0]?.function.name ?? "none";
        send({ role: "assistant", tool_calls: [{ index: 0, id: "call_1", type: "function", function: { name, arguments: "" } }] });
        send({ tool_calls: [{ index: 0, function: { arguments: asked?.[2] ?? "{}" } }] });
        send({}, "tool_calls");
      } else {
        const host = /"hostname":\s*"([^"]+)"/.exec(result.content ?? "")?.[1];
        send({ role: "assistant", content: "" });
        if (host) {
          send({ content: "The node's host is " });
          send({ content: host });
        } else send({ content: `The tool said: ${result.content}` });
        send({}, "stop");
      }
      res.write(`data: ${JSON.stringify({ ...base, choices: [], usage: { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 } })}\n\n`);
      res.end("data: [DONE]\n\n");
    });
  });
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve({ url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`, close: () => server.close() })),
  );
}

/** serveModel configures palyrad's compat provider "scripted" (its key a secret) to
 * serve MODEL from url. */
export async function serveModel(transport: Transport, url: string, reason: string): Promise<void> {
  await createClient(SecretService, transport).putSecret({ name: "scripted", value: new TextEncoder().encode("sk-scripted") });
  const text = (value: string) => ({ kind: { case: "text" as const, value } });
  const config = createClient(ConfigService, transport);
  const { revision } = await config.getConfig({});
  await config.updateConfig({
    change: { set: [
      { key: "compat.providers.scripted.base_url", value: text(url) },
      { key: "compat.providers.scripted.api_key", value: text("secret:scripted") },
      { key: "compat.providers.scripted.models", value: text(MODEL) },
    ] },
    expectedRevision: revision,
    reason,
  });
}

/** A node paired for a test. */
export interface PairedNode {
  id: string;
  /** log is what the node wrote on stderr so far. */
  log(): string;
  /** stop ends it with SIGTERM. */
  stop(): Promise<void>;
}

/** pairNode starts `palyra node run` named name, its state under dir (with nodeToml as
 * its node.toml, if given), pairs it through the RPCs and waits for it online with
 * system.info. It must be the only node pairing and the only one online. */
export async function pairNode(daemon: Palyrad, transport: Transport, dir: string, name: string, nodeToml?: string): Promise<PairedNode> {
  const stateDir = join(dir, "node");
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  if (nodeToml) writeFileSync(join(stateDir, "node.toml"), nodeToml, { mode: 0o600 });
  writeFileSync(join(dir, "ca.pem"), daemon.ca);
  const pairing = createClient(PairingService, transport);
  const { code } = await pairing.createPairingCode({ method: PairingMethod.PIN, label: name });
  let log = "";
  const node: ChildProcess = spawn(palyra, ["node", "run", "--url", daemon.baseUrl, "--pin", code, "--ca-file", join(dir, "ca.pem"), "--state-dir", stateDir, "--name", name], {
    env: { HOME: dir, PATH: process.env.PATH },
    stdio: ["ignore", "ignore", "pipe"],
  });
  node.stderr!.on("data", (b: Buffer) => (log += b.toString()));
  const stop = async () => {
    if (node.exitCode !== null || node.signalCode !== null) return;
    const exited = new Promise((r) => node.once("exit", r));
    node.kill("SIGTERM");
    await exited;
  };
  try {
    const request = await eventually("a pending pairing request", async () => {
      const { pairingRequests } = await pairing.listPairingRequests({ state: PairingState.PENDING_APPROVAL });
      assert.equal(pairingRequests.length, 1, log);
      return pairingRequests[0];
    });
    await pairing.approvePairingRequest({ id: request.id, expectedKeyFingerprint: request.publicKeyFingerprint });
    const id = await eventually("the node online with system.info", async () => {
      const { nodes } = await createClient(NodeInventoryService, transport).listNodes({ presence: Presence.ONLINE });
      assert.equal(nodes.length, 1, log);
      assert.ok(nodes[0].capabilities.some((c) => c.name === "system.info" && c.available), log);
      return nodes[0].id;
    });
    return { id, log: () => log, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
