// The pure parts of the pages: the fingerprint comparison and the warnings of a pairing
// request, the form generated from a JSON schema (with the built-in capabilities' own
// schemas, read from their Go sources), an agent's browser tools in the agent form, and
// counts in words.
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { PairingRequestSchema } from "../../gen/ts/palyra/controlplane/v1/pairing_pb.js";
import { DeviceClaim } from "../../gen/ts/palyra/node/v1/node_pb.js";
import { checkFingerprint, groupHex, normalizeFingerprint, warningsFor } from "../src/pages/pairingChecks.js";
import { buildInput, initialValues, planForm } from "../src/components/schemaPlan.js";
import { allShown, count, singular } from "../src/components/plural.js";
import { AgentSpecSchema } from "../../gen/ts/palyra/agents/v1/agents_pb.js";
import { differences, fromSpec, newTool, placeToolViolations, toSpec } from "../src/pages/agents/spec.js";

const fp = "sha256:" + "0123456789abcdef".repeat(4);

describe("the fingerprint check", () => {
  it("reads what a person pastes", () => {
    assert.equal(normalizeFingerprint(fp), fp);
    assert.equal(normalizeFingerprint(" SHA256:" + (fp.slice(7).toUpperCase().match(/../g) ?? []).join(":") + "\n"), fp);
    assert.equal(normalizeFingerprint(fp.slice(7).replace(/(.{4})/g, "$1 ")), fp);
    assert.equal(normalizeFingerprint("sha256:0123"), undefined);
    assert.equal(normalizeFingerprint(fp.replace("a", "g")), undefined);
  });

  it("compares, and says where two differ", () => {
    assert.deepEqual(checkFingerprint("", fp), { kind: "empty" });
    assert.deepEqual(checkFingerprint("nonsense", fp), { kind: "malformed" });
    assert.deepEqual(checkFingerprint(fp.toUpperCase(), fp), { kind: "match", value: fp });
    const wrong = fp.slice(0, 7 + 10) + "f" + fp.slice(7 + 11);
    assert.deepEqual(checkFingerprint(wrong, fp), { kind: "mismatch", value: wrong, at: 10 });
    assert.equal(groupHex(fp).length, 16);
  });
});

describe("the warnings of a pairing request", () => {
  const now = Date.parse("2026-01-02T03:04:05Z");
  const request = (init: object) =>
    create(PairingRequestSchema, { id: "01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8", sourceAddress: "10.0.0.7", createTime: timestampFromMs(now - 30_000), deviceClaim: DeviceClaim.NEW, ...init });
  const titles = (r: ReturnType<typeof request>, known?: Set<string>) => warningsFor(r, known, now).map((w) => `${w.severity}: ${w.title}`);

  it("has none for a new device from a known address, asked just now", () => {
    assert.deepEqual(titles(request({}), new Set(["10.0.0.7"])), []);
    assert.deepEqual(titles(request({})), [], "unknown addresses (not loaded) are not flagged");
  });

  it("flags a replaced, revoked or re-paired device, an unfamiliar address and an old request", () => {
    assert.deepEqual(titles(request({ deviceClaim: DeviceClaim.UNPROVEN, previousDeviceId: "01JD5ZJ8Q0W1X2Y3Z4A5B6C7D9" }), new Set(["10.0.0.7"])), ["danger: Replaces an existing device"]);
    assert.deepEqual(titles(request({ deviceClaim: DeviceClaim.REVOKED }), new Set(["10.0.0.7"])), ["danger: Names a revoked device"]);
    assert.deepEqual(titles(request({ deviceClaim: DeviceClaim.PROVEN }), new Set(["10.0.0.7"])), ["warn: Re-pairs an existing device with a new key"]);
    assert.deepEqual(titles(request({}), new Set(["10.0.0.8"])), ["warn: Unfamiliar source address"]);
    assert.deepEqual(titles(request({ createTime: timestampFromMs(now - 6 * 60_000) }), new Set(["10.0.0.7"])), ["warn: Old request"]);
  });
});

/** builtinSchema reads a built-in capability's schema constant from its Go source. */
function builtinSchema(file: string, name: string): string {
  const src = readFileSync(new URL(`../../cli/internal/node/capability/${file}`, import.meta.url), "utf8");
  const m = src.match(new RegExp(`const ${name} = \`([^\`]*)\``));
  assert.ok(m, `${name} in ${file}`);
  return m[1]!;
}

describe("the form generated from a schema", () => {
  it("covers every built-in capability's schema", () => {
    for (const [file, name] of [["sysinfo.go", "systemInfoSchema"], ["shell.go", "shellExecuteSchema"], ["fsread.go", "filesystemReadSchema"], ["llm.go", "llmChatSchema"], ["llm.go", "llmEmbedSchema"]] as const) {
      const plan = planForm(builtinSchema(file, name));
      // The LLM capabilities take OpenAI requests, which nest: they get the JSON editor.
      if (file === "llm.go") assert.equal(plan.ok, false, name);
      else assert.ok(plan.ok, `${name}: ${plan.ok ? "" : plan.why}`);
    }
  });

  it("builds shell.execute's input, leaving out what was not given", () => {
    const plan = planForm(builtinSchema("shell.go", "shellExecuteSchema"));
    assert.ok(plan.ok);
    const values = initialValues(plan.fields);
    assert.deepEqual(buildInput(plan.fields, values), { problems: { argv: "Required." } });
    assert.deepEqual(buildInput(plan.fields, { ...values, argv: "/bin/echo\nhello world", env: "LANG=C\nX=a=b", timeout_seconds: "5" }), {
      input: { argv: ["/bin/echo", "hello world"], env: { LANG: "C", X: "a=b" }, timeout_seconds: 5 },
    });
    assert.deepEqual(buildInput(plan.fields, { ...values, argv: "x", timeout_seconds: "0" }), { problems: { timeout_seconds: "At least 1." } });
    assert.deepEqual(buildInput(plan.fields, { ...values, argv: "x", timeout_seconds: "1.5" }), { problems: { timeout_seconds: "A whole number." } });
    assert.deepEqual(buildInput(plan.fields, { ...values, argv: "x", env: "novalue" }), { problems: { env: '"novalue" is not KEY=value.' } });
  });

  it("reads enums, booleans and defaults, and refuses what it cannot show", () => {
    const plan = planForm(
      JSON.stringify({
        type: "object",
        properties: { mode: { enum: ["fast", "slow"], default: "slow" }, dry: { type: "boolean", default: true }, n: { type: "number", maximum: 2 } },
        required: ["mode"],
      }),
    );
    assert.ok(plan.ok);
    const values = initialValues(plan.fields);
    assert.deepEqual(values, { mode: "slow", dry: true, n: "" });
    assert.deepEqual(buildInput(plan.fields, values), { input: { mode: "slow", dry: true } });
    assert.deepEqual(buildInput(plan.fields, { ...values, n: "3" }), { problems: { n: "At most 2." } });
    assert.equal(planForm("").ok, false);
    assert.equal(planForm("{").ok, false);
    assert.equal(planForm(JSON.stringify({ type: "array" })).ok, false);
    assert.deepEqual(planForm(JSON.stringify({ type: "object", properties: { o: { type: "object", properties: {} } } })), { ok: false, why: "The form cannot show o: a nested object." });
  });
});

describe("an agent's browser tools in the agent form", () => {
  const stored = create(AgentSpecSchema, {
    name: "shopper",
    model: "m",
    tools: [{ name: "info", capability: "system.info" }, { name: "browse", capability: "browser.navigate", browserProfile: "shop" }],
  });

  it("keeps a browser tool's profile both ways, and sends none for another capability", () => {
    const draft = fromSpec(stored);
    assert.equal(draft.tools[1].browserProfile, "shop");
    assert.deepEqual(toSpec(draft).tools?.map((t) => t.browserProfile), ["", "shop"]);
    // A profile left on a row whose capability is no longer a browser one is not sent.
    draft.tools[1] = { ...draft.tools[1], capability: "system.info", name: "info2" };
    assert.deepEqual(toSpec(draft).tools?.map((t) => t.browserProfile), ["", ""]);
  });

  it("says when a browser tool's profile changed meanwhile", () => {
    const mine = fromSpec(stored);
    mine.tools[1] = { ...mine.tools[1], browserProfile: "other" };
    assert.deepEqual(differences(stored, mine), [
      "Tools: info (system.info on any node, auto), browse (browser.navigate with profile shop on any node, auto) → info (system.info on any node, auto), browse (browser.navigate with profile other on any node, auto)",
    ]);
  });

  it("puts palyrad's field violations of a tool on that row's field", () => {
    const tools = [newTool("system.info"), newTool("browser.navigate")];
    const problems = placeToolViolations(
      [
        { field: "spec.tools[1].browser_profile", description: "name one" },
        { field: "spec.tools[0].node_id", description: "no such node" },
        { field: "spec.model", description: "not a tool's" },
        { field: "spec.tools[7].name", description: "no such row" },
      ],
      tools,
    );
    assert.deepEqual(problems.get(tools[1].key), { browserProfile: "name one" });
    assert.deepEqual(problems.get(tools[0].key), { nodeId: "no such node" });
    assert.equal(problems.size, 2);
  });
});

describe("counts in words", () => {
  it("says one in the singular and the rest in the plural", () => {
    assert.equal(count(1, "events"), "1 event");
    assert.equal(count(0, "events"), "0 events");
    assert.equal(count(2n, "bytes"), "2 bytes");
    assert.equal(count(1n, "bytes"), "1 byte");
    assert.equal(count(1, "wrong attempts"), "1 wrong attempt");
    assert.equal(singular("dispatches"), "dispatch");
    assert.equal(singular("entries"), "entry");
    assert.equal(singular("codes"), "code");
    assert.equal(singular("pending requests"), "pending request");
  });

  it("ends a complete list without 'All 1 … shown'", () => {
    assert.equal(allShown(0, "pending requests"), "No pending requests.");
    assert.equal(allShown(1, "pending requests"), "The only pending request is shown.");
    assert.equal(allShown(2, "dispatches"), "All 2 dispatches shown.");
  });
});
