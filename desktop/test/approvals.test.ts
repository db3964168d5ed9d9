// The console's Approvals page in a real Chromium against a real palyrad, a real node
// (`palyra node run`) and a scripted model: runs of an agent whose shell tools are ask
// raise real pending approvals, which show live (WatchApprovals) with the agent, the run,
// the tool, the node (by name, with its id; marked when revoked; the bare id to one who
// may not read nodes) and the exact input; the owner approves one for the run (the run
// goes on: the call runs on the node, and the answer carries its output) and denies
// another with a reason through the Confirm dialog (the model is told the reason; nothing
// reaches the node); the decided ones are listed and filtered; one is shown alone by its
// id in the address, where the run's timeline links (an unknown id is "not found"); an
// operator sees them without the buttons. Every state is checked with axe-core and saved
// as a screenshot.
import { hostname } from "node:os";
import { chmodSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createClient, type Transport } from "@connectrpc/connect";
import type { Browser, Page } from "playwright-core";
import { AccessService, Role } from "../../gen/ts/palyra/access/v1/access_pb.js";
import {
  AgentService, ApprovalService, ApprovalScope, ApprovalState, RunState, ToolCallOutcome, ToolPolicy, type Run,
} from "../../gen/ts/palyra/agents/v1/agents_pb.js";
import { DeviceService } from "../../gen/ts/palyra/controlplane/v1/devices_pb.js";
import { DispatchService, DispatchState } from "../../gen/ts/palyra/controlplane/v1/dispatch_pb.js";
import { bearer, eventually, startPalyrad, WAIT, type Palyrad } from "./palyrad.js";
import { checkAccessibility, launch, newContext, screenshot, signIn, watchConsole } from "./browser.js";
import { MODEL, pairNode, serveModel, startModel, type PairedNode, type ScriptedModel } from "./fleet.js";

let daemon: Palyrad;
let browser: Browser;
let scratch: string;
let transport: Transport;
let node: PairedNode | undefined;
let model: ScriptedModel | undefined;

before(async () => {
  daemon = await startPalyrad("approvals-test");
  browser = await launch();
  scratch = mkdtempSync(join(tmpdir(), "palyra-approvals-"));
  chmodSync(scratch, 0o755);
  transport = bearer(daemon, daemon.token);
  node = await pairNode(daemon, transport, scratch, "approvals-node", '[shell]\nallow = ["/usr/bin/uname"]\n');
  model = await startModel();
  await serveModel(transport, model.url, "approvals console test");
  // Two ask tools on the node: the scripted model calls the one a prompt names.
  const ask = (name: string) => ({ name, capability: "shell.execute", target: { case: "nodeId" as const, value: node!.id }, policy: ToolPolicy.ASK });
  await createClient(AgentService, transport).createAgent({ spec: { name: "ops", model: MODEL, tools: [ask("shell"), ask("shell_rm")] } });
});

after(async () => {
  await node?.stop();
  await browser?.close();
  model?.close();
  await daemon?.stop();
  rmSync(scratch, { recursive: true, force: true });
});

/** start runs the agent ops on prompt through AgentService.Run and returns the run's id
 * once it started, and the run as it finished (the stream is read to its end). */
async function start(prompt: string): Promise<{ run: string; finished: Promise<Run> }> {
  const stream = createClient(AgentService, transport).run({ agent: { case: "name", value: "ops" }, prompt })[Symbol.asyncIterator]();
  const first = await stream.next();
  assert.ok(!first.done && first.value.event.case === "started", "a run's first event is started");
  const run = first.value.event.value.id;
  const finished = (async () => {
    for (let ev = await stream.next(); !ev.done; ev = await stream.next()) {
      if (ev.value.event.case === "finished") return ev.value.event.value;
    }
    throw new Error(`the stream of run ${run} ended without finished`);
  })();
  finished.catch(() => {}); // awaited by the test that needs it
  return { run, finished };
}

/** approvalOf waits for the pending approval of run and returns its id. */
function approvalOf(run: string): Promise<string> {
  return eventually(`a pending approval of run ${run}`, async () => {
    const { approvals } = await createClient(ApprovalService, transport).listApprovals({ runId: run, state: ApprovalState.PENDING });
    assert.equal(approvals.length, 1);
    return approvals[0].id;
  });
}

/** look checks the page with axe and saves its screenshot. */
async function look(page: Page, name: string) {
  await checkAccessibility(page, name);
  await screenshot(page, name);
}

describe("the Approvals page", () => {
  it("shows pending approvals live, approves for the run and denies with a reason", async () => {
    const NODE = node!.id;
    const ctx = await newContext(browser);
    const page = await signIn(ctx, daemon.baseUrl, daemon.token);
    const consoleErrors = watchConsole(page);
    await page.getByRole("navigation", { name: "Console" }).getByRole("link", { name: /^Approvals/ }).click();
    await page.getByRole("heading", { level: 1, name: "Approvals" }).waitFor();
    const waiting = page.getByRole("region", { name: "Waiting for a decision" });
    await waiting.getByText("No pending approvals.").waitFor();
    await waiting.getByText("live", { exact: true }).waitFor({ timeout: WAIT });
    await look(page, "approvals-empty");

    // Asked while the page is open: they appear without a reload.
    const uname = await start('call shell {"argv": ["uname", "-n"], "timeout_seconds": 30}');
    const rm = await start('call shell_rm {"argv": ["rm", "-rf", "/srv/cache"]}');
    const unameId = await approvalOf(uname.run);
    const rmId = await approvalOf(rm.run);
    const unameCard = waiting.getByRole("article", { name: /ops wants to run shell$/ });
    await unameCard.waitFor({ timeout: WAIT });
    const text = await unameCard.innerText();
    for (const want of ["approvals-node", NODE, uname.run, unameId, "shell.execute", '"argv": [', '"uname"', '"-n"', '"timeout_seconds": 30']) {
      assert.ok(text.includes(want), `the pending approval shows ${want}:\n${text}`);
    }
    await look(page, "approvals-pending");

    await unameCard.getByRole("button", { name: "Approve…" }).click();
    const approveDialog = page.getByRole("dialog", { name: "Approve shell on approvals-node?" });
    await approveDialog.getByLabel(/every call of/).check();
    assert.match(await approveDialog.innerText(), new RegExp(`to node approvals-node ${NODE} with the input shown`));
    await look(page, "approvals-approve-dialog");
    await approveDialog.getByRole("button", { name: "Approve", exact: true }).click();
    await unameCard.waitFor({ state: "detached", timeout: WAIT });

    const rmCard = waiting.getByRole("article", { name: /ops wants to run shell_rm$/ });
    await rmCard.getByRole("button", { name: "Deny…" }).click();
    const denyDialog = page.getByRole("dialog", { name: "Deny shell_rm on approvals-node?" });
    assert.ok(await denyDialog.getByRole("button", { name: "Deny", exact: true }).isDisabled(), "denying needs a reason");
    await denyDialog.getByLabel("Reason (the model is told)").fill("never delete caches by hand");
    await denyDialog.getByRole("button", { name: "Deny", exact: true }).click();
    await rmCard.waitFor({ state: "detached", timeout: WAIT });
    await waiting.getByText("No pending approvals.").waitFor();

    const approvals = createClient(ApprovalService, transport);
    const approved = (await approvals.getApproval({ id: unameId })).approval;
    assert.equal(approved?.state, ApprovalState.APPROVED);
    assert.equal(approved?.scope, ApprovalScope.RUN);
    const denied = (await approvals.getApproval({ id: rmId })).approval;
    assert.equal(denied?.state, ApprovalState.DENIED);
    assert.equal(denied?.reason, "never delete caches by hand");

    // The approved call ran on the node, and the model answered with its output.
    const agents = createClient(AgentService, transport);
    const ran = await uname.finished;
    assert.equal(ran.state, RunState.SUCCEEDED, ran.reason);
    assert.match(ran.answer, new RegExp(`^The tool said: .*${hostname()}`, "s"));
    const ranCall = (await agents.getRun({ id: uname.run })).steps.find((s) => s.detail.case === "toolCall")!.detail.value as { outcome: ToolCallOutcome; dispatchId: string; approvalId: string };
    assert.equal(ranCall.outcome, ToolCallOutcome.SUCCEEDED);
    assert.equal(ranCall.approvalId, unameId);
    const { dispatch } = await createClient(DispatchService, transport).getDispatch({ id: ranCall.dispatchId });
    assert.equal(dispatch?.state, DispatchState.SUCCEEDED);
    assert.equal(dispatch?.nodeId, NODE);
    assert.equal(dispatch?.idempotencyKey, `run:${uname.run}:2`);

    // The denied call never reached the node; the model was told why.
    const told = await rm.finished;
    assert.equal(told.state, RunState.SUCCEEDED, told.reason);
    assert.match(told.answer, /^The tool said: .*a human denied the call: never delete caches by hand/s);
    const deniedCall = (await agents.getRun({ id: rm.run })).steps.find((s) => s.detail.case === "toolCall")!.detail.value as { outcome: ToolCallOutcome; dispatchId: string };
    assert.equal(deniedCall.outcome, ToolCallOutcome.DENIED);
    assert.equal(deniedCall.dispatchId, "");
    const { dispatches } = await createClient(DispatchService, transport).listDispatches({ nodeId: NODE });
    assert.deepEqual(dispatches.map((d) => d.idempotencyKey), [`run:${uname.run}:2`], "the denied call has no dispatch");

    // The decided ones, filtered by state and by run.
    const all = page.getByRole("region", { name: "All approvals" });
    await all.getByRole("row").filter({ hasText: "never delete caches by hand" }).waitFor({ timeout: WAIT });
    assert.match(await all.getByRole("row").filter({ hasText: "never delete caches by hand" }).innerText(), new RegExp(`approvals-node\\s+${NODE}`));
    await all.getByLabel("State").selectOption({ label: "approved" });
    await all.getByRole("row").filter({ hasText: "for the run" }).waitFor({ timeout: WAIT });
    assert.equal(await all.getByRole("row").filter({ hasText: "never delete caches" }).count(), 0, "the denied one is filtered out");
    await all.getByLabel("State").selectOption({ label: "all" });
    await all.getByLabel("Run").fill(rm.run);
    await all.getByRole("row").filter({ hasText: "denied" }).waitFor({ timeout: WAIT });
    assert.equal(await all.getByRole("row").filter({ hasText: uname.run }).count(), 0, "another run's approval is filtered out");
    await look(page, "approvals-decided");

    // The denied call's step in the run's timeline links to its approval, shown alone by
    // its id in the address; the answer shows what the model was told.
    await page.goto(`${daemon.baseUrl}/runs?id=${rm.run}`);
    const timeline = page.getByRole("list", { name: "Timeline" });
    await timeline.getByLabel("Answer").getByText(/a human denied the call: never delete caches by hand/).waitFor({ timeout: WAIT });
    await timeline.getByRole("listitem", { name: "Step 2" }).getByRole("link", { name: rmId }).click();
    await page.getByRole("heading", { level: 1, name: "Approvals" }).waitFor();
    assert.equal(new URL(page.url()).searchParams.get("id"), rmId);
    const one = page.getByRole("region", { name: `Approval ${rmId}` }).getByRole("article", { name: /ops asked to run shell_rm$/ });
    await one.waitFor({ timeout: WAIT });
    assert.match(await one.innerText(), /Decided\s+denied by \S+, .*: never delete caches by hand/s);
    assert.equal(await one.getByRole("button").count(), 0, "a decided approval has no buttons");
    await look(page, "approvals-one");
    await page.goto(`${daemon.baseUrl}/approvals?id=${unameId}`);
    await page.getByRole("region", { name: `Approval ${unameId}` }).getByText(/approved for the run by/).waitFor({ timeout: WAIT });

    // An unknown id says so.
    const unknown = "01JD5ZJ8Q0W1X2Y3Z4A5B6C7N1";
    await page.goto(`${daemon.baseUrl}/approvals?id=${unknown}`);
    await page.getByRole("region", { name: `Approval ${unknown}` }).getByRole("alert").getByText(/No approval has the id .*: it was not found/).waitFor({ timeout: WAIT });
    await look(page, "approvals-not-found");
    assert.deepEqual(consoleErrors, []);
    await ctx.close();
  });

  it("shows an operator the approvals without the buttons", async () => {
    const { secret } = await createClient(AccessService, transport).createToken({ label: "console-operator", role: Role.OPERATOR });
    const { run, finished } = await start('call shell {"argv": ["uname", "-a"]}');
    const id = await approvalOf(run);
    const ctx = await newContext(browser);
    const page = await signIn(ctx, daemon.baseUrl, secret);
    await page.getByRole("navigation", { name: "Console" }).getByRole("link", { name: /^Approvals/ }).click();
    const card = page.getByRole("region", { name: "Waiting for a decision" }).getByRole("article", { name: /ops wants to run shell$/ });
    await card.waitFor({ timeout: WAIT });
    await card.getByText("approvals.decide").waitFor();
    assert.equal(await card.getByRole("button").count(), 0, "no decision buttons without approvals.decide");
    await look(page, "approvals-operator");
    await assert.rejects(createClient(ApprovalService, bearer(daemon, secret)).decideApproval({ id, approve: true }), /approvals\.decide|permission_denied/);
    await ctx.close();
    await createClient(ApprovalService, transport).decideApproval({ id, approve: false, reason: "only a test" });
    assert.equal((await finished).state, RunState.SUCCEEDED);
  });

  it("marks a revoked node, and shows the bare id to one who may not read nodes", async () => {
    const NODE = node!.id;
    await createClient(DeviceService, transport).revokeDevice({ id: NODE, reason: "approvals test" });
    const ctx = await newContext(browser);
    const page = await signIn(ctx, daemon.baseUrl, daemon.token);
    await page.goto(`${daemon.baseUrl}/approvals`);
    const row = page.getByRole("region", { name: "All approvals" }).getByRole("row").filter({ hasText: "never delete caches by hand" });
    await row.getByRole("link", { name: "approvals-node" }).waitFor({ timeout: WAIT });
    assert.match(await row.innerText(), new RegExp(`approvals-node\\s+${NODE}\\s+\\(revoked\\)`));
    await ctx.close();

    const { secret } = await createClient(AccessService, transport).createToken({ label: "approvals-only", role: Role.OPERATOR, scopes: ["approvals.read"] });
    const blind = await newContext(browser);
    const other = await signIn(blind, daemon.baseUrl, secret);
    await other.goto(`${daemon.baseUrl}/approvals`);
    const bare = other.getByRole("region", { name: "All approvals" }).getByRole("row").filter({ hasText: "never delete caches by hand" });
    await bare.getByText(NODE, { exact: true }).waitFor({ timeout: WAIT });
    assert.equal(await bare.getByRole("link", { name: "approvals-node" }).count(), 0, "no name without nodes.read");
    await look(other, "approvals-without-nodes");
    await blind.close();
  });
});
