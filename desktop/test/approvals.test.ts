// The console's Approvals page in a real Chromium against a real palyrad: the pending
// approvals show live (WatchApprovals) with the agent, the run, the tool, the node and
// the exact input; the owner approves one for the run and denies another with a reason
// through the Confirm dialog; the decided ones are listed and filtered; an operator sees
// them without the buttons. Every state is checked with axe-core and saved as a
// screenshot.
//
// A fixture: the approvals are rows written with psql into palyrad's embedded database
// (issue 15 leaves moving them to a real run, with a node and a scripted model, open).
// Their run is on a live replica, so that the agents' reaper leaves it alone.
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import type { Browser, Page } from "playwright-core";
import { AccessService, Role } from "../../gen/ts/palyra/access/v1/access_pb.js";
import { ApprovalService, ApprovalScope, ApprovalState } from "../../gen/ts/palyra/agents/v1/agents_pb.js";
import { startPalyrad, type Palyrad } from "./palyrad.js";
import { checkAccessibility, launch, newContext, screenshot, signIn, watchConsole } from "./browser.js";

/** WAIT bounds every wait for something the page does by itself. */
const WAIT = 60_000;
const NODE = "01JD5ZJ8Q0W1X2Y3Z4A5B6C7N1";

let daemon: Palyrad;
let browser: Browser;
let transport: Transport;

before(async () => {
  daemon = await startPalyrad("approvals-test");
  browser = await launch();
  const auth: Interceptor = (next) => (req) => {
    req.header.set("Authorization", `Bearer ${daemon.token}`);
    return next(req);
  };
  transport = createConnectTransport({ baseUrl: daemon.baseUrl, httpVersion: "2", nodeOptions: { ca: daemon.ca }, interceptors: [auth] });
});

after(async () => {
  await browser?.close();
  await daemon?.stop();
});

/** ulid makes an id of the ULID form (time first, so that later ones sort after). */
function ulid(): string {
  const alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
  let t = Date.now();
  let time = "";
  for (let i = 0; i < 10; i++, t = Math.floor(t / 32)) time = alphabet[t % 32] + time;
  return time + Array.from(randomBytes(16), (b) => alphabet[b % 32]).join("");
}

/** sql runs statements on palyrad's embedded database. */
function sql(statements: string) {
  const url = `postgres://postgres@/palyra?host=${encodeURIComponent(daemon.dataDir + "/pg")}&port=5432`;
  execFileSync("psql", [url, "-v", "ON_ERROR_STOP=1", "-q", "-c", statements], { stdio: ["ignore", "ignore", "inherit"] });
}

/** pending stores a pending approval of tool on a new run and returns its id and run's. */
function pending(tool: string, input: object): { id: string; run: string } {
  const run = ulid();
  const id = ulid();
  const json = JSON.stringify(input).replaceAll("'", "''");
  sql(`insert into agent_runs (id, agent_id, agent_name, agent_revision, agent, input, started_by, replica_id, created_at, deadline)
         values ('${run}', '01JD5ZJ8Q0W1X2Y3Z4A5B6C7A1', 'ops', 1, '{}', '[]', 'token:runner', (select id from replicas where stopped_at is null order by last_seen_at desc limit 1), now(), now() + interval '1 hour');
       insert into agent_run_steps (run_id, seq, kind, started_at) values ('${run}', 1, 'tool_call', now());
       insert into approvals (id, run_id, step_seq, agent_id, agent_name, tool, capability, node_id, input, requested_by, created_at, expire_at)
         values ('${id}', '${run}', 1, '01JD5ZJ8Q0W1X2Y3Z4A5B6C7A1', 'ops', '${tool}', 'shell.execute', '${NODE}', '${json}', 'token:runner', now(), now() + interval '1 hour');`);
  return { id, run };
}

/** look checks the page with axe and saves its screenshot. */
async function look(page: Page, name: string) {
  await checkAccessibility(page, name);
  await screenshot(page, name);
}

describe("the Approvals page", () => {
  it("shows pending approvals live, approves for the run and denies with a reason", async () => {
    const ctx = await newContext(browser);
    const page = await signIn(ctx, daemon.baseUrl, daemon.token);
    const consoleErrors = watchConsole(page);
    await page.getByRole("navigation", { name: "Console" }).getByRole("link", { name: /^Approvals/ }).click();
    await page.getByRole("heading", { level: 1, name: "Approvals" }).waitFor();
    const waiting = page.getByRole("region", { name: "Waiting for a decision" });
    await waiting.getByText("No pending approvals.").waitFor();
    await waiting.getByText("live", { exact: true }).waitFor({ timeout: WAIT });
    await look(page, "approvals-empty");

    // Created while the page is open: it appears without a reload.
    const df = pending("shell", { argv: ["sh", "-c", "df -h /"], timeout_ms: 5000 });
    const rm = pending("shell_rm", { argv: ["rm", "-rf", "/srv/cache"] });
    const dfCard = waiting.getByRole("article", { name: /ops wants to run shell$/ });
    await dfCard.waitFor({ timeout: WAIT });
    const text = await dfCard.innerText();
    for (const want of [NODE, df.run, "shell.execute", '"argv": [', '"df -h /"', '"timeout_ms": 5000']) {
      assert.ok(text.includes(want), `the pending approval shows ${want}:\n${text}`);
    }
    await look(page, "approvals-pending");

    await dfCard.getByRole("button", { name: "Approve…" }).click();
    const approveDialog = page.getByRole("dialog", { name: `Approve shell on ${NODE}?` });
    await approveDialog.getByLabel(/every call of/).check();
    await look(page, "approvals-approve-dialog");
    await approveDialog.getByRole("button", { name: "Approve", exact: true }).click();
    await dfCard.waitFor({ state: "detached", timeout: WAIT });

    const rmCard = waiting.getByRole("article", { name: /ops wants to run shell_rm$/ });
    await rmCard.getByRole("button", { name: "Deny…" }).click();
    const denyDialog = page.getByRole("dialog", { name: `Deny shell_rm on ${NODE}?` });
    assert.ok(await denyDialog.getByRole("button", { name: "Deny", exact: true }).isDisabled(), "denying needs a reason");
    await denyDialog.getByLabel("Reason (the model is told)").fill("never delete caches by hand");
    await denyDialog.getByRole("button", { name: "Deny", exact: true }).click();
    await rmCard.waitFor({ state: "detached", timeout: WAIT });
    await waiting.getByText("No pending approvals.").waitFor();

    const client = createClient(ApprovalService, transport);
    const approved = (await client.getApproval({ id: df.id })).approval;
    assert.equal(approved?.state, ApprovalState.APPROVED);
    assert.equal(approved?.scope, ApprovalScope.RUN);
    const denied = (await client.getApproval({ id: rm.id })).approval;
    assert.equal(denied?.state, ApprovalState.DENIED);
    assert.equal(denied?.reason, "never delete caches by hand");

    // The decided ones, filtered by state and by run.
    const all = page.getByRole("region", { name: "All approvals" });
    await all.getByRole("row").filter({ hasText: "never delete caches by hand" }).waitFor({ timeout: WAIT });
    await all.getByLabel("State").selectOption({ label: "approved" });
    await all.getByRole("row").filter({ hasText: "for the run" }).waitFor({ timeout: WAIT });
    assert.equal(await all.getByRole("row").filter({ hasText: "never delete caches" }).count(), 0, "the denied one is filtered out");
    await all.getByLabel("State").selectOption({ label: "all" });
    await all.getByLabel("Run").fill(rm.run);
    await all.getByRole("row").filter({ hasText: "denied" }).waitFor({ timeout: WAIT });
    assert.equal(await all.getByRole("row").filter({ hasText: df.run }).count(), 0, "another run's approval is filtered out");
    await look(page, "approvals-decided");
    assert.deepEqual(consoleErrors, []);
    await ctx.close();
  });

  it("shows an operator the approvals without the buttons", async () => {
    const { secret } = await createClient(AccessService, transport).createToken({ label: "console-operator", role: Role.OPERATOR });
    pending("shell", { argv: ["uptime"] });
    const ctx = await newContext(browser);
    const page = await signIn(ctx, daemon.baseUrl, secret);
    await page.getByRole("navigation", { name: "Console" }).getByRole("link", { name: /^Approvals/ }).click();
    const card = page.getByRole("region", { name: "Waiting for a decision" }).getByRole("article", { name: /ops wants to run shell$/ });
    await card.waitFor({ timeout: WAIT });
    await card.getByText("approvals.decide").waitFor();
    assert.equal(await card.getByRole("button").count(), 0, "no decision buttons without approvals.decide");
    await look(page, "approvals-operator");
    await ctx.close();
  });
});
