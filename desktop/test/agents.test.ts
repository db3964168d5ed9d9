// The console's Agents and Runs pages in a real Chromium against a real palyrad serving
// palyra-echo and a real node (`palyra node run`): an agent is created from the form with
// a tool picked from the node's announced capabilities and pinned to that node; an edit
// adds a tool no node offers and shows palyrad's warning; a stale edit shows the conflict
// and is saved over it; a run streams and lands on its timeline with the answer; the runs
// list shows it and filters in the address; the default is set and an agent deleted
// through confirmations; a scripted model's tool call runs on the node and shows in the
// timeline with its result and a link to its dispatch; a run from the form whose call is
// ask shows it waits, linked to its approval, and finishes live on the Runs page once it
// is approved in another tab; a running run is cancelled from its page, and its dispatch
// on the node with it; a principal that may only read agents sees no edit or run actions.
// Each page passes axe and is photographed.
import { hostname } from "node:os";
import { chmodSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createClient, type Transport } from "@connectrpc/connect";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { AccessService, Role } from "../../gen/ts/palyra/access/v1/access_pb.js";
import { FeatureFlagService } from "../../gen/ts/palyra/access/v1/flags_pb.js";
import { AgentService, ApprovalService, ApprovalState, RunState, ToolPolicy } from "../../gen/ts/palyra/agents/v1/agents_pb.js";
import { DispatchService, DispatchState } from "../../gen/ts/palyra/controlplane/v1/dispatch_pb.js";
import { NodeInventoryService } from "../../gen/ts/palyra/controlplane/v1/nodes_pb.js";
import { bearer, eventually, startPalyrad, WAIT, type Palyrad } from "./palyrad.js";
import { checkAccessibility, launch, newContext, screenshot, signIn, watchConsole } from "./browser.js";
import { MODEL, pairNode, serveModel, startModel, type PairedNode, type ScriptedModel } from "./fleet.js";

let daemon: Palyrad;
let browser: Browser;
let scratch: string;
let transport: Transport;
let node: PairedNode | undefined;
let nodeId: string;
let model: ScriptedModel | undefined;

before(async () => {
  daemon = await startPalyrad("agents-console-test", "--compat-model", "palyra-echo");
  browser = await launch();
  scratch = mkdtempSync(join(tmpdir(), "palyra-agents-"));
  chmodSync(scratch, 0o755);
  transport = bearer(daemon, daemon.token);
  await createClient(FeatureFlagService, transport).setFlag({ key: "compat_api", enabled: true });
  node = await pairNode(daemon, transport, scratch, "agent-node", '[shell]\nallow = ["/usr/bin/sleep"]\ntimeout = "10m"\n');
  nodeId = node.id;
  model = await startModel();
  await serveModel(transport, model.url, "agents console test");
});

after(async () => {
  await node?.stop();
  await browser?.close();
  model?.close();
  await daemon?.stop();
  rmSync(scratch, { recursive: true, force: true });
});

/** open goes to a page through the navigation, as a user would. */
async function open(page: Page, title: string) {
  await page.getByRole("navigation", { name: "Console" }).getByRole("link", { name: title, exact: true }).click();
  await page.getByRole("heading", { level: 1, name: title }).waitFor();
}

/** look checks the page with axe and saves its screenshot. */
async function look(page: Page, name: string) {
  await checkAccessibility(page, name);
  await screenshot(page, name);
}

describe("agents and runs, as the owner", () => {
  let ctx: BrowserContext;
  let page: Page;
  let consoleErrors: string[];
  let agentId: string;
  let runId: string;

  before(async () => {
    ctx = await newContext(browser);
    page = await signIn(ctx, daemon.baseUrl, daemon.token);
    consoleErrors = watchConsole(page);
  });

  after(async () => {
    await ctx.close();
  });

  it("creates an agent from the form, with a tool picked from the node's capabilities", async () => {
    await open(page, "Agents");
    await page.getByText("No agents.").waitFor();
    await look(page, "agents-empty");
    await page.getByRole("link", { name: "New agent" }).click();
    await page.getByRole("heading", { level: 1, name: "New agent" }).waitFor();
    const form = page.getByRole("form", { name: "New agent" });
    await form.getByLabel("Name", { exact: true }).fill("helper");
    // The model picker lists the compat models.
    await form.getByLabel("Model", { exact: true }).selectOption("palyra-echo");
    await form.getByLabel("Description", { exact: true }).fill("Answers about the fleet");
    await form.getByLabel("System prompt").fill("You are terse.");
    await form.getByLabel("Labels (one key=value a line)").fill("team=ops");
    await form.getByRole("button", { name: "Add a tool" }).click();
    const tool = form.getByRole("group", { name: /^Tool 1/ });
    // The picker offers what the node announces, with the description and schema.
    await tool.getByLabel("Capability", { exact: true }).selectOption("system.info");
    const { nodes } = await createClient(NodeInventoryService, transport).listNodes({});
    const info = nodes[0].capabilities.find((c) => c.name === "system.info")!;
    await tool.getByText(info.description, { exact: true }).waitFor();
    if (info.inputSchema) await tool.getByText("Parameters offered to the model").waitFor();
    await tool.getByLabel("Runs on").selectOption("node");
    await tool.getByLabel("Node", { exact: true }).selectOption(nodeId);
    await tool.getByLabel("Policy").selectOption({ label: "auto: run at once" });
    await form.getByLabel("Max steps (model calls)").fill("4");
    await look(page, "agents-new");
    await form.getByRole("button", { name: "Create agent" }).click();

    await page.getByRole("heading", { level: 1, name: "Agent helper" }).waitFor({ timeout: WAIT });
    await page.getByRole("status", { name: "Saved" }).getByText("Agent created.").waitFor();
    const tools = page.getByRole("region", { name: "Tools" });
    const row = tools.getByRole("row", { name: /system_info/ });
    assert.match(await row.innerText(), new RegExp(`system_info\\s+system\\.info\\s+node ${nodeId}\\s+auto`));
    const definition = await page.getByRole("region", { name: "Definition" }).innerText();
    assert.match(definition, /palyra-echo/);
    assert.match(definition, /4 steps, 16 tool calls/);
    assert.match(definition, /team=ops/);
    const { agent } = await createClient(AgentService, transport).getAgent({ agent: { case: "name", value: "helper" } });
    agentId = agent!.id;
    assert.equal(agent!.spec?.tools[0]?.target.case, "nodeId");
    await look(page, "agents-created");
  });

  it("adds a tool no node offers and shows palyrad's warning after the save", async () => {
    await page.getByRole("button", { name: "Edit", exact: true }).click();
    const form = page.getByRole("form", { name: "Edit agent helper" });
    await form.getByRole("button", { name: "Add a tool" }).click();
    const tool = form.getByRole("group", { name: /^Tool 2/ });
    await tool.getByLabel("Capability", { exact: true }).selectOption({ label: "Another capability…" });
    await tool.getByLabel("Capability", { exact: true }).fill("camera.capture");
    await tool.getByLabel("Policy").selectOption({ label: "ask: a human approves each call" });
    await tool.getByText("No paired node announces it.").waitFor();
    await form.getByRole("button", { name: "Save agent" }).click();
    const saved = page.getByRole("status", { name: "Saved" });
    await saved.getByText("Saved as revision 2, with warnings:").waitFor({ timeout: WAIT });
    assert.match(await saved.innerText(), /camera\.capture/);
    assert.match(await page.getByRole("region", { name: "Tools" }).getByRole("row", { name: /camera_capture/ }).innerText(), /ask/);
    await look(page, "agents-saved-warning");
  });

  it("shows a stale edit's conflict, and saves over it", async () => {
    await page.getByRole("button", { name: "Edit", exact: true }).click();
    const form = page.getByRole("form", { name: "Edit agent helper" });
    await form.getByLabel("Description", { exact: true }).fill("Mine: answers about the fleet");
    // Meanwhile, someone else makes revision 3.
    const agents = createClient(AgentService, transport);
    const { agent } = await agents.getAgent({ agent: { case: "id", value: agentId } });
    await agents.updateAgent({ agent: { case: "id", value: agentId }, spec: { ...agent!.spec!, systemPrompt: "Changed elsewhere." }, expectedRevision: 2n });
    await form.getByRole("button", { name: "Save agent" }).click();
    const conflict = form.getByRole("alert", { name: "Conflict" });
    await conflict.getByText(/You edited revision 2; it is now revision 3/).waitFor({ timeout: WAIT });
    await conflict.getByText("System prompt: Changed elsewhere. → You are terse.").waitFor({ timeout: WAIT });
    await conflict.getByText(/Description: Answers about the fleet → Mine: answers about the fleet/).waitFor();
    await look(page, "agents-conflict");
    await conflict.getByRole("button", { name: "Save mine over revision 3" }).click();
    await page.getByRole("status", { name: "Saved" }).getByText(/Saved as revision 4/).waitFor({ timeout: WAIT });
    const { agent: now } = await agents.getAgent({ agent: { case: "id", value: agentId } });
    assert.equal(now!.revision, 4n);
    assert.equal(now!.spec?.description, "Mine: answers about the fleet");
  });

  it("runs the agent and lands on the run's timeline with the answer", async () => {
    const prompt = "hello from the console";
    const run = page.getByRole("region", { name: "Run" });
    await run.getByLabel("Prompt").fill(prompt);
    await run.getByRole("button", { name: "Run" }).click();
    await page.getByRole("heading", { level: 1, name: "Runs" }).waitFor({ timeout: WAIT });
    runId = new URL(page.url()).searchParams.get("id") ?? "";
    assert.match(runId, /^[0-9A-Z]{26}$/);
    const detail = page.getByRole("region", { name: `Run ${runId}` });
    await detail.getByLabel("Run state").getByText("succeeded").waitFor({ timeout: WAIT });
    const timeline = detail.getByRole("list", { name: "Timeline" });
    await timeline.getByLabel("Answer").getByText(prompt).waitFor({ timeout: WAIT });
    assert.match(await timeline.getByRole("listitem", { name: "Step 1" }).innerText(), /Model call\s+palyra-echo/);
    assert.match(await timeline.getByRole("listitem", { name: "Step 1" }).innerText(), /prompt \+ \d+ completion tokens, finished: stop/);
    assert.match(await detail.innerText(), /helper at revision 4/);
    assert.equal(await detail.getByRole("button", { name: "Cancel run" }).count(), 0, "an ended run has no cancel");
    await look(page, "runs-detail");
  });

  it("lists the run, and filters by state and agent in the address", async () => {
    const all = page.getByRole("region", { name: "All runs" });
    const row = all.getByRole("row", { name: new RegExp(runId) });
    await row.waitFor();
    assert.match(await row.innerText(), /helper\s+rev\. 4\s+succeeded/);
    await all.getByText("The only run is shown.").waitFor();
    await page.getByLabel("State", { exact: true }).selectOption("FAILED");
    await page.getByRole("button", { name: "Apply filters" }).click();
    await all.getByText("No runs.").waitFor();
    assert.match(page.url(), /state=FAILED/);
    await page.getByLabel("State", { exact: true }).selectOption("");
    await page.getByLabel("Agent", { exact: true }).fill("helper");
    await page.getByRole("button", { name: "Apply filters" }).click();
    await all.getByText("The only run is shown.").waitFor();
    assert.match(page.url(), /agent=helper/);
    await look(page, "runs-list");
  });

  it("makes the agent the default through a confirmation", async () => {
    await open(page, "Agents");
    const row = page.getByRole("row", { name: /helper/ });
    await row.waitFor();
    assert.doesNotMatch(await row.innerText(), /default/);
    await row.getByRole("link", { name: "helper" }).click();
    await page.getByRole("heading", { level: 1, name: "Agent helper" }).waitFor();
    await page.getByRole("button", { name: "Make default…" }).click();
    const dialog = page.getByRole("dialog", { name: "Make helper the default agent?" });
    await look(page, "agents-default-confirm");
    await dialog.getByRole("button", { name: "Make default" }).click();
    await dialog.waitFor({ state: "hidden" });
    await page.getByRole("region", { name: "Definition" }).getByText("default", { exact: true }).waitFor({ timeout: WAIT });
    await open(page, "Agents");
    await page.getByRole("row", { name: /helper/ }).getByText("default", { exact: true }).waitFor({ timeout: WAIT });
    await look(page, "agents-list");
  });

  it("shows a tool call on the node in the timeline, linked to its dispatch", async () => {
    await createClient(AgentService, transport).createAgent({
      spec: { name: "fleet", model: MODEL, tools: [{ capability: "system.info" }] },
    });
    await page.goto(daemon.baseUrl + "/agents?agent=fleet");
    await page.getByRole("heading", { level: 1, name: "Agent fleet" }).waitFor();
    const run = page.getByRole("region", { name: "Run" });
    await run.getByLabel("Prompt").fill("Which host is the node on?");
    await run.getByRole("button", { name: "Run" }).click();
    await page.getByRole("heading", { level: 1, name: "Runs" }).waitFor({ timeout: WAIT });
    const timeline = page.getByRole("list", { name: "Timeline" });
    await timeline.getByLabel("Answer").getByText(`The node's host is ${hostname()}`).waitFor({ timeout: WAIT });
    const call = timeline.getByRole("listitem", { name: "Step 2" });
    await call.getByRole("link", { name: "agent-node" }).waitFor({ timeout: WAIT }); // the node by its name, once read
    const text = await call.innerText();
    assert.match(text, new RegExp(`Tool call\\s+system_info\\s+runs\\s+system\\.info\\s+on node\\s+agent-node\\s+${nodeId}\\s+succeeded`));
    assert.match(await timeline.getByRole("listitem", { name: "Step 1" }).innerText(), /finished: tool_calls/);
    await call.getByText("Result").click();
    await call.getByText(`"hostname": "${hostname()}"`).waitFor();
    await look(page, "runs-tool-call");
    await call.getByRole("link", { name: /^[0-9A-Z]{26}$/ }).last().click();
    await page.getByRole("heading", { level: 1, name: "Dispatches" }).waitFor();
    const dispatchId = new URL(page.url()).searchParams.get("id") ?? "";
    await page.getByRole("region", { name: `Dispatch ${dispatchId}` }).getByText("system.info", { exact: true }).first().waitFor();
    assert.match(await page.getByRole("region", { name: `Dispatch ${dispatchId}` }).innerText(), /idempotency key run:[0-9A-Z]{26}:2/);
  });

  it("deletes an agent after a confirmation; its runs stay", async () => {
    await createClient(AgentService, transport).createAgent({ spec: { name: "scratch", model: "palyra-echo" } });
    await page.goto(daemon.baseUrl + "/agents?agent=scratch");
    await page.getByRole("heading", { level: 1, name: "Agent scratch" }).waitFor();
    await page.getByRole("button", { name: "Delete…" }).click();
    const dialog = page.getByRole("dialog", { name: "Delete agent scratch?" });
    await dialog.getByText(/agent:scratch stops being served/).waitFor();
    await look(page, "agents-delete-confirm");
    await dialog.getByRole("button", { name: "Delete agent" }).click();
    await page.getByRole("heading", { level: 1, name: "Agents" }).waitFor({ timeout: WAIT });
    await page.getByText("All 2 agents shown.").waitFor({ timeout: WAIT });
    assert.equal(await page.getByRole("link", { name: "scratch" }).count(), 0);
  });

  it("shows a run waiting for approval, which finishes live once it is approved", async () => {
    await createClient(AgentService, transport).createAgent({
      spec: { name: "guarded", model: MODEL, tools: [{ capability: "system.info", target: { case: "nodeId", value: nodeId }, policy: ToolPolicy.ASK }] },
    });
    await page.goto(daemon.baseUrl + "/agents?agent=guarded");
    await page.getByRole("heading", { level: 1, name: "Agent guarded" }).waitFor();
    const form = page.getByRole("region", { name: "Run" });
    await form.getByLabel("Prompt").fill("Which host is the node on?");
    await form.getByRole("button", { name: "Run" }).click();
    // The form shows the call waiting, linked to its approval.
    const waiting = form.getByRole("link", { name: "approval" });
    await waiting.waitFor({ timeout: WAIT });
    await form.getByRole("link", { name: "agent-node" }).waitFor({ timeout: WAIT });
    assert.match(await form.innerText(), new RegExp(`Tool\\s+system_info\\s+on node\\s+agent-node\\s+${nodeId}\\s+running\\s+waiting for\\s+approval`));
    const runId = await form.getByRole("link", { name: /^[0-9A-Z]{26}$/ }).innerText();
    const { approvals } = await createClient(ApprovalService, transport).listApprovals({ runId, state: ApprovalState.PENDING });
    assert.equal(approvals.length, 1);
    const approvalId = approvals[0].id;
    assert.equal(await waiting.getAttribute("href"), `/approvals?id=${approvalId}`);
    await look(page, "agents-run-waiting");

    // On the Runs page: waiting, the step linked to the approval.
    await form.getByRole("link", { name: runId }).click();
    await page.getByRole("heading", { level: 1, name: "Runs" }).waitFor();
    const detail = page.getByRole("region", { name: `Run ${runId}` });
    await detail.getByLabel("Run state").getByText("waiting approval").waitFor({ timeout: WAIT });
    const step = detail.getByRole("list", { name: "Timeline" }).getByRole("listitem", { name: "Step 2" });
    assert.equal(await step.getByRole("link", { name: approvalId }).getAttribute("href"), `/approvals?id=${approvalId}`);
    await look(page, "runs-waiting-approval");

    // Approved in another tab, through the link; the run finishes here, live.
    const other = await ctx.newPage();
    await other.goto(daemon.baseUrl + "/runs?id=" + runId);
    await other.getByRole("listitem", { name: "Step 2" }).getByRole("link", { name: approvalId }).click();
    const one = other.getByRole("region", { name: `Approval ${approvalId}` });
    await one.getByRole("article", { name: /guarded wants to run system_info$/ }).getByRole("button", { name: "Approve…" }).click();
    await other.getByRole("dialog", { name: "Approve system_info on agent-node?" }).getByRole("button", { name: "Approve", exact: true }).click();
    await one.getByRole("article", { name: /guarded asked to run system_info$/ }).getByText("approved", { exact: true }).waitFor({ timeout: WAIT });
    await other.close();
    await detail.getByLabel("Run state").getByText("succeeded").waitFor({ timeout: WAIT });
    await detail.getByLabel("Answer").getByText(`The node's host is ${hostname()}`).waitFor({ timeout: WAIT });
    assert.match(await step.innerText(), /succeeded/);
  });

  it("cancels a running run from its page, and with it its dispatch on the node", async () => {
    await createClient(AgentService, transport).createAgent({
      spec: { name: "sleeper", model: MODEL, tools: [{ capability: "shell.execute", target: { case: "nodeId", value: nodeId } }] },
    });
    await page.goto(daemon.baseUrl + "/agents?agent=sleeper");
    await page.getByRole("heading", { level: 1, name: "Agent sleeper" }).waitFor();
    const form = page.getByRole("region", { name: "Run" });
    await form.getByLabel("Prompt").fill('call shell_execute {"argv": ["sleep", "600"]}');
    await form.getByRole("button", { name: "Run" }).click();
    const runLink = form.getByRole("link", { name: /^[0-9A-Z]{26}$/ });
    await runLink.waitFor({ timeout: WAIT });
    const runId = await runLink.innerText();
    await runLink.click();
    const detail = page.getByRole("region", { name: `Run ${runId}` });
    const step = detail.getByRole("list", { name: "Timeline" }).getByRole("listitem", { name: "Step 2" });
    const dispatchLink = step.getByRole("link", { name: /^[0-9A-Z]{26}$/ }).last();
    await dispatchLink.waitFor({ timeout: WAIT });
    const dispatchId = await dispatchLink.innerText();
    const dispatches = createClient(DispatchService, transport);
    await eventually("the sleep running on the node", async () => {
      assert.equal((await dispatches.getDispatch({ id: dispatchId })).dispatch?.state, DispatchState.RUNNING);
    });

    await detail.getByRole("button", { name: "Cancel run" }).click();
    const dialog = page.getByRole("dialog", { name: "Cancel this run?" });
    await dialog.getByLabel("Reason (recorded)").fill("too slow");
    await look(page, "runs-cancel-confirm");
    await dialog.getByRole("button", { name: "Cancel run" }).click();
    await detail.getByLabel("Run state").getByText("cancelled").waitFor({ timeout: WAIT });
    assert.match(await detail.getByLabel("Run state").innerText(), /too slow/);
    await step.getByText("cancelled", { exact: true }).waitFor({ timeout: WAIT });
    assert.equal(await detail.getByRole("button", { name: "Cancel run" }).count(), 0);
    await eventually("the dispatch cancelled on the node", async () => {
      assert.equal((await dispatches.getDispatch({ id: dispatchId })).dispatch?.state, DispatchState.CANCELLED);
    });
    await page.getByRole("region", { name: "All runs" }).getByRole("row", { name: new RegExp(runId) }).getByText("cancelled").waitFor({ timeout: WAIT });
    await look(page, "runs-cancelled");
    await dispatchLink.click();
    await page.getByRole("region", { name: `Dispatch ${dispatchId}` }).getByText("cancelled").first().waitFor({ timeout: WAIT });
  });

  it("loaded without console errors (no CSP violation)", () => {
    assert.deepEqual(consoleErrors, []);
  });
});

describe("a principal that may only read agents", () => {
  it("sees the agents and runs without their actions", async () => {
    const { secret } = await createClient(AccessService, transport).createToken({ label: "agents-readonly", role: Role.OPERATOR, scopes: ["agents.read"] });
    const ctx = await newContext(browser);
    const page = await signIn(ctx, daemon.baseUrl, secret);
    await open(page, "Agents");
    await page.getByRole("link", { name: "helper" }).waitFor();
    assert.equal(await page.getByRole("link", { name: "New agent" }).count(), 0);
    await page.getByRole("link", { name: "helper" }).click();
    await page.getByRole("heading", { level: 1, name: "Agent helper" }).waitFor();
    await page.getByText("Running agents needs the permission agents.run.").waitFor();
    assert.equal(await page.getByRole("button", { name: /Edit|Delete|Make default|Run/ }).count(), 0);
    await look(page, "agents-read-only");
    await open(page, "Runs");
    const row = page.getByRole("row", { name: /helper/ });
    await row.getByRole("link").first().click();
    await page.getByRole("list", { name: "Timeline" }).getByLabel("Answer").waitFor({ timeout: WAIT });
    assert.equal(await page.getByRole("button", { name: "Cancel run" }).count(), 0);
    await look(page, "runs-read-only");
    await ctx.close();
  });

  it("is refused by palyrad when it tries anyway", async () => {
    const { secret } = await createClient(AccessService, transport).createToken({ label: "agents-readonly-2", role: Role.OPERATOR, scopes: ["agents.read"] });
    const agents = createClient(AgentService, bearer(daemon, secret));
    await assert.rejects(agents.deleteAgent({ agent: { case: "name", value: "helper" } }), /permission_denied|agents\.write/);
    const { runs } = await agents.listRuns({ state: RunState.SUCCEEDED });
    assert.deepEqual(runs.map((r) => r.agentName), ["guarded", "fleet", "helper"], "the cancelled run is not among them");
  });
});
