// The console's admin pages in a real Chromium against a real palyrad and a real node
// agent (`palyra node run`): dispatches (filters, live output, cancel), API tokens (the
// secret shown once, rotate, revoke, paging), feature flags (a refused toggle shows the
// server's reason), the audit log (filters, paging, verify chain), configuration (an
// edit, a stale edit's conflict and its re-application, rollback) and secrets (set, and
// reveal as the owner; an admin does not see reveal). Each page passes axe and is
// photographed.
import { spawn, type ChildProcess } from "node:child_process";
import { appendFileSync, chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createClient, type Transport } from "@connectrpc/connect";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { AccessService, Role } from "../../gen/ts/palyra/access/v1/access_pb.js";
import { ConfigService } from "../../gen/ts/palyra/controlplane/v1/config_pb.js";
import { DispatchService, DispatchState } from "../../gen/ts/palyra/controlplane/v1/dispatch_pb.js";
import { NodeInventoryService, Presence } from "../../gen/ts/palyra/controlplane/v1/nodes_pb.js";
import { PairingMethod, PairingService } from "../../gen/ts/palyra/controlplane/v1/pairing_pb.js";
import { PairingState } from "../../gen/ts/palyra/node/v1/node_pb.js";
import { bearer, eventually, startPalyrad, WAIT, type Palyrad } from "./palyrad.js";
import { checkAccessibility, launch, newContext, screenshot, signIn, watchConsole } from "./browser.js";

const palyra = process.env.PALYRA ?? new URL("../../bin/palyra", import.meta.url).pathname;

let daemon: Palyrad;
let browser: Browser;
let scratch: string;
let transport: Transport;

before(async () => {
  daemon = await startPalyrad("admin-test");
  browser = await launch();
  scratch = mkdtempSync(join(tmpdir(), "palyra-admin-"));
  chmodSync(scratch, 0o755);
  transport = bearer(daemon, daemon.token);
});

after(async () => {
  await browser?.close();
  await daemon?.stop();
  rmSync(scratch, { recursive: true, force: true });
});

/** open goes to a page through the navigation, as a user would. */
async function open(page: Page, title: string) {
  await page.getByRole("navigation", { name: "Console" }).getByRole("link", { name: new RegExp(`^${title}`) }).click();
  await page.getByRole("heading", { level: 1, name: title }).waitFor();
}

/** rowOf is the table row whose text includes text. */
function rowOf(page: Page, text: string) {
  return page.getByRole("row").filter({ hasText: text }).first();
}

describe("the admin pages, as the owner", () => {
  let ctx: BrowserContext;
  let page: Page;
  let consoleErrors: string[];

  before(async () => {
    ctx = await newContext(browser);
    await ctx.grantPermissions(["clipboard-read", "clipboard-write"], { origin: daemon.baseUrl });
    page = await signIn(ctx, daemon.baseUrl, daemon.token);
    consoleErrors = watchConsole(page);
  });

  after(async () => {
    await ctx.close();
  });

  describe("dispatches, on a real node", () => {
    let agent: ChildProcess;
    let agentLog = "";
    let nodeId: string;
    const file = () => join(scratch, "follow.txt");

    before(async () => {
      const stateDir = join(scratch, "node");
      mkdirSync(stateDir, { recursive: true, mode: 0o700 });
      writeFileSync(join(stateDir, "node.toml"), '[shell]\nallow = ["/usr/bin/tail"]\ntimeout = "30m"\n', { mode: 0o600 });
      writeFileSync(file(), "line one\n");
      writeFileSync(join(scratch, "ca.pem"), daemon.ca);
      const { code } = await createClient(PairingService, transport).createPairingCode({ method: PairingMethod.PIN, label: "admin-test" });
      agent = spawn(palyra, ["node", "run", "--url", daemon.baseUrl, "--pin", code, "--ca-file", join(scratch, "ca.pem"), "--state-dir", stateDir, "--name", "admin-node"], {
        env: { HOME: scratch, PATH: process.env.PATH },
        stdio: ["ignore", "ignore", "pipe"],
      });
      agent.stderr!.on("data", (b: Buffer) => (agentLog += b.toString()));
      const pairing = createClient(PairingService, transport);
      const request = await eventually("a pending pairing request", async () => {
        const { pairingRequests } = await pairing.listPairingRequests({ state: PairingState.PENDING_APPROVAL });
        assert.equal(pairingRequests.length, 1, agentLog);
        return pairingRequests[0];
      });
      await pairing.approvePairingRequest({ id: request.id, expectedKeyFingerprint: request.publicKeyFingerprint });
      nodeId = await eventually("the node online", async () => {
        const { nodes } = await createClient(NodeInventoryService, transport).listNodes({ presence: Presence.ONLINE });
        assert.equal(nodes.length, 1, agentLog);
        return nodes[0].id;
      });
    });

    after(async () => {
      if (agent && agent.exitCode === null) {
        const exited = new Promise((r) => agent.once("exit", r));
        agent.kill("SIGTERM");
        await exited;
      }
    });

    it("lists and filters dispatches, streams one's output live and cancels it", async () => {
      const dispatches = createClient(DispatchService, transport);
      const info = await dispatches.executeCapability({ nodeId, capability: "system.info", timeout: { seconds: 120n } });
      assert.equal(info.dispatch?.state, DispatchState.SUCCEEDED, info.dispatch?.error);
      const { dispatch: follow } = await dispatches.createDispatch({
        nodeId,
        capability: "shell.execute",
        inputJson: JSON.stringify({ argv: ["/usr/bin/tail", "-n", "+1", "-f", file()] }),
        timeout: { seconds: 1800n },
      });
      await open(page, "Dispatches");
      const all = page.getByRole("region", { name: "All dispatches" });
      await rowOf(page, follow!.id).waitFor();
      await rowOf(page, info.dispatch!.id).waitFor();
      await all.getByText("All 2 dispatches shown.").waitFor();

      // Filters, in the address.
      await page.getByLabel("Capability").fill("shell.execute");
      await page.getByLabel("Created", { exact: true }).selectOption("1h");
      await page.getByRole("button", { name: "Apply filters" }).click();
      await all.getByText("The only dispatch is shown.").waitFor();
      assert.match(page.url(), /capability=shell.execute/);
      assert.match(page.url(), /since=1h/);
      await page.getByLabel("Capability").fill("");
      await page.getByLabel("State").selectOption("SUCCEEDED");
      await page.getByLabel("Node ID").fill(nodeId);
      await page.getByRole("button", { name: "Apply filters" }).click();
      await all.getByText("The only dispatch is shown.").waitFor();
      await rowOf(page, info.dispatch!.id).waitFor();
      assert.equal(await rowOf(page, follow!.id).count(), 0);
      // A bad filter shows the server's message and code.
      await page.getByLabel("Node ID").fill("not-a-node");
      await page.getByRole("button", { name: "Apply filters" }).click();
      const refused = all.getByRole("alert");
      await refused.waitFor();
      assert.match(await refused.innerText(), /invalid_argument/);
      assert.match(await refused.innerText(), /node_id/);
      await page.goto(daemon.baseUrl + "/dispatches");
      await page.getByRole("heading", { level: 1, name: "Dispatches" }).waitFor();

      // The detail, by keyboard: the output streams live.
      await page.getByRole("link", { name: follow!.id }).press("Enter");
      const detail = page.getByRole("region", { name: `Dispatch ${follow!.id}` });
      const output = detail.getByTestId("dispatch-output");
      await output.getByText("line one").waitFor({ timeout: WAIT });
      await detail.getByText("running").first().waitFor({ timeout: WAIT });
      appendFileSync(file(), "line two, appended later\n");
      await output.getByText("line two, appended later").waitFor({ timeout: WAIT });
      await checkAccessibility(page, "dispatch detail");
      await screenshot(page, "admin-dispatch-live");

      // Cancel, after a confirmation with a reason.
      await detail.getByRole("button", { name: "Cancel dispatch" }).click();
      const dialog = page.getByRole("dialog", { name: "Cancel this dispatch?" });
      await dialog.getByLabel(/Reason/).fill("done watching");
      await dialog.getByRole("button", { name: "Cancel dispatch" }).click();
      await detail.getByText("cancelled").first().waitFor({ timeout: WAIT });
      await detail.getByText("Output (complete)").waitFor({ timeout: WAIT });
      const ended = await dispatches.getDispatch({ id: follow!.id });
      assert.equal(ended.dispatch?.state, DispatchState.CANCELLED);
      await checkAccessibility(page, "dispatches");
      await screenshot(page, "admin-dispatches");
    });
  });

  it("creates a token and shows its secret once", async () => {
    await open(page, "API tokens");
    const create = page.getByRole("region", { name: "Create a token" });
    await create.getByLabel("Label").fill("ci-deploy");
    await create.getByLabel("Role").selectOption({ label: "operator" });
    await create.getByLabel(/Scopes/).fill("nodes.read, status.read");
    await create.getByRole("button", { name: "Create token" }).click();
    const secret = (await page.getByTestId("token-secret").innerText()).trim();
    assert.match(secret, /^plr_/);
    await page.getByText("This is the only time the secret").waitFor();
    // The secret works, with the scopes given.
    const { principal } = await createClient(AccessService, bearer(daemon, secret)).whoAmI({});
    assert.deepEqual([...principal!.permissions].sort(), ["nodes.read", "status.read"]);
    await page.getByRole("button", { name: "Copy secret" }).click();
    await page.getByText("Copied to the clipboard.").waitFor();
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), secret);
    await rowOf(page, "ci-deploy").waitFor();
    await checkAccessibility(page, "token created");
    await screenshot(page, "admin-token-created");

    // Gone after navigation, and nowhere in the page's storage.
    await open(page, "Overview");
    await open(page, "API tokens");
    await rowOf(page, "ci-deploy").waitFor();
    assert.equal(await page.getByTestId("token-secret").count(), 0);
    assert.ok(!(await page.content()).includes(secret), "the secret is not shown again");
    const stored = await page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }));
    assert.ok(!stored.includes(secret));
  });

  it("rotates and revokes a token with the keyboard, after a confirmation", async () => {
    await page.getByRole("button", { name: "Rotate ci-deploy" }).press("Enter");
    const rotate = page.getByRole("dialog", { name: /Rotate token/ });
    await rotate.getByRole("button", { name: "Rotate token" }).press("Enter");
    const rotated = (await page.getByTestId("token-secret").innerText()).trim();
    assert.match(rotated, /^plr_/);
    await page.getByRole("region", { name: "Token rotated" }).waitFor();
    await page.getByRole("button", { name: "I have saved it" }).press("Enter");
    assert.equal(await page.getByTestId("token-secret").count(), 0);

    await page.getByRole("button", { name: "Revoke ci-deploy" }).press("Enter");
    const revoke = page.getByRole("dialog", { name: /Revoke token/ });
    // The focus is in the reason; Enter submits.
    await page.keyboard.type("rotated in a test");
    await page.keyboard.press("Enter");
    await revoke.waitFor({ state: "hidden" });
    await eventually("the revoked token leaves the active list", async () => assert.equal(await page.getByRole("button", { name: "Revoke ci-deploy" }).count(), 0));
    await page.getByLabel("Show tokens").selectOption({ label: "Revoked" });
    await rowOf(page, "rotated in a test").waitFor();
    await assert.rejects(createClient(AccessService, bearer(daemon, rotated)).whoAmI({}), /unauthenticated|invalid credentials/i);
  });

  it("pages the token list", async () => {
    const access = createClient(AccessService, transport);
    for (let i = 0; i < 55; i++) await access.createToken({ label: `bulk-${i}`, role: Role.OPERATOR });
    await page.getByLabel("Show tokens").selectOption({ label: "Active" });
    await page.reload();
    await page.getByRole("heading", { level: 1, name: "API tokens" }).waitFor();
    const more = page.getByRole("button", { name: "Load more tokens" });
    await more.waitFor();
    assert.equal(await page.getByRole("region", { name: "Tokens" }).getByRole("row").count(), 51, "a header and 50 rows");
    await more.click();
    await page.getByText(/^All 5\d tokens shown\.$/).waitFor();
    await checkAccessibility(page, "tokens");
    await screenshot(page, "admin-tokens");
  });

  it("toggles a flag, and a refused toggle shows the server's reason", async () => {
    await open(page, "Feature flags");
    const streaming = page.getByRole("switch", { name: "compat_streaming" });
    const api = page.getByRole("switch", { name: "compat_api" });
    assert.equal(await api.getAttribute("aria-checked"), "false");
    await streaming.click();
    const refused = page.getByRole("alert");
    await refused.waitFor();
    assert.match(await refused.innerText(), /failed_precondition/);
    assert.match(await refused.innerText(), /cannot enable compat_streaming: it depends on compat_api, which is off/);
    assert.equal(await streaming.getAttribute("aria-checked"), "false");

    await api.click();
    await eventually("compat_api on", async () => assert.equal(await api.getAttribute("aria-checked"), "true"));
    await streaming.click();
    await eventually("compat_streaming on", async () => assert.equal(await streaming.getAttribute("aria-checked"), "true"));
    assert.equal(await page.getByRole("alert").count(), 0, "the refusal is gone");
    await api.click();
    await page.getByRole("alert").getByText("cannot disable compat_api: compat_streaming is on and depends on it").waitFor();
    await page.getByRole("row").filter({ has: streaming }).getByText("compat_api: on").waitFor();
    await checkAccessibility(page, "flags");
    await screenshot(page, "admin-flags");
  });

  it("filters and pages the audit log and verifies its chain", async () => {
    await open(page, "Audit log");
    await page.getByRole("button", { name: "Verify chain" }).click();
    const verdict = page.getByText("Intact.");
    await verdict.waitFor();
    assert.match((await page.getByRole("region", { name: "Chain" }).innerText()) ?? "", /\d+ events checked; head #\d+/);

    await page.getByLabel("Procedure").fill("/palyra.access.v1.AccessService/CreateToken");
    await page.getByRole("button", { name: "Apply filters" }).click();
    const events = page.getByRole("region", { name: "Events" });
    await page.getByRole("button", { name: "Load more events" }).click();
    await events.getByText(/^All 5\d events shown\.$/).waitFor();
    const procedures = await events.locator("tbody tr td:nth-child(4) code").allInnerTexts();
    assert.ok(procedures.length >= 56);
    assert.deepEqual([...new Set(procedures)], ["/palyra.access.v1.AccessService/CreateToken"]);
    // A time window that ended before the daemon started holds nothing.
    await page.getByLabel("Until").fill("2020-01-01T00:00");
    await page.getByRole("button", { name: "Apply filters" }).click();
    await events.getByText("No events.").waitFor();
    await checkAccessibility(page, "audit log");
    await screenshot(page, "admin-audit");
  });

  it("changes a setting, and a stale edit shows the conflict and re-applies", async () => {
    const config = createClient(ConfigService, transport);
    await open(page, "Configuration");
    await page.getByRole("button", { name: "Edit pairing.pin_digits" }).click();
    await page.getByLabel("New value of pairing.pin_digits").fill("9");
    await page.getByLabel("Reason (recorded)").fill("longer codes");
    await page.getByRole("button", { name: "Save", exact: true }).click();
    const row = rowOf(page, "pairing.pin_digits");
    await row.getByText("database").waitFor();
    await row.getByText("revision 1").waitFor();
    assert.match(await row.innerText(), /\b9\b/);

    // Another change lands while this edit is open.
    await page.getByRole("button", { name: "Edit pairing.pin_digits" }).click();
    await config.updateConfig({ change: { set: [{ key: "pairing.request_ttl", value: { kind: { case: "text", value: "20m" } } }] }, expectedRevision: 1n, reason: "changed elsewhere" });
    await page.getByLabel("New value of pairing.pin_digits").fill("10");
    await page.getByRole("button", { name: "Save", exact: true }).click();
    const conflict = page.getByRole("region", { name: /configuration changed meanwhile/ });
    await conflict.getByText("You edited revision 1; it is now revision 2.").waitFor();
    await conflict.getByText("pairing.request_ttl").waitFor();
    await conflict.getByText(/changed elsewhere/).waitFor();
    await checkAccessibility(page, "configuration conflict");
    await screenshot(page, "admin-config-conflict");
    await conflict.getByRole("button", { name: "Re-apply my change on revision 2" }).click();
    await conflict.waitFor({ state: "hidden" });
    await row.getByText("revision 3").waitFor();
    assert.match(await row.innerText(), /\b10\b/);
    const { settings } = await config.getConfig({ key: "pairing.request_ttl" });
    assert.equal(settings[0].value?.kind.value, "20m0s", "the other change stays");

    // History and rollback.
    const history = page.getByRole("region", { name: "History" });
    await history.getByRole("button", { name: "1 change" }).first().click();
    await page.getByRole("button", { name: "Roll back to revision 1" }).click();
    const dialog = page.getByRole("dialog", { name: "Roll back to revision 1?" });
    await dialog.getByLabel("Reason (recorded)").fill("back to nine");
    await dialog.getByRole("button", { name: "Roll back" }).click();
    await row.getByText("revision 4").waitFor();
    assert.match(await row.innerText(), /\b9\b/);
    await history.getByText("rollback to revision 1").waitFor();
    await checkAccessibility(page, "configuration");
    await screenshot(page, "admin-config");
  });

  it("sets a secret and reveals it, masked until asked, as the owner", async () => {
    const value = "s3cret-value-for-the-console";
    await open(page, "Secrets");
    const set = page.getByRole("region", { name: "Set a secret" });
    await set.getByLabel("Name").fill("db-password");
    await set.getByLabel("Value").fill(value);
    await set.getByLabel(/Description/).fill("the database's password");
    await set.getByRole("button", { name: "Set secret" }).click();
    const detail = page.getByRole("region", { name: "Secret db-password" });
    await detail.getByRole("table", { name: "Versions" }).getByText("latest").waitFor();
    assert.ok(!(await page.content()).includes(value));

    await detail.getByRole("button", { name: "Reveal value…" }).click();
    const dialog = page.getByRole("dialog", { name: "Reveal db-password" });
    await dialog.getByLabel("Reason").fill("checking the console");
    await dialog.getByRole("button", { name: "Reveal" }).click();
    const shown = detail.getByTestId("secret-value");
    await shown.waitFor();
    assert.match(await shown.innerText(), /^•+$/, "masked until asked");
    assert.ok(!(await page.content()).includes(value));
    await checkAccessibility(page, "secret revealed, masked");
    await detail.getByRole("button", { name: "Show value" }).click();
    assert.equal(await shown.innerText(), value);
    await screenshot(page, "admin-secrets");
    await detail.getByRole("button", { name: "Forget value" }).click();
    assert.equal(await shown.count(), 0);
    assert.ok(!(await page.content()).includes(value));
    // Left and come back to: nothing cached.
    await open(page, "Overview");
    await page.goBack();
    await page.getByRole("region", { name: "Secret db-password" }).waitFor();
    assert.equal(await page.getByTestId("secret-value").count(), 0);
    await checkAccessibility(page, "secrets");

    // The reveal is audited, with the owner as its principal.
    await page.goto(daemon.baseUrl + "/access/audit?procedure=%2Fpalyra.controlplane.v1.SecretService%2FRevealSecret");
    await page.getByRole("region", { name: "Events" }).getByText("The only event is shown.").waitFor();
  });

  it("loaded without console errors (no CSP violation)", () => {
    assert.deepEqual(consoleErrors, []);
  });
});

describe("the admin pages, as an admin", () => {
  it("hides reveal and configuration edits, which the server refuses too", async () => {
    const { secret } = await createClient(AccessService, transport).createToken({ label: "console-admin", role: Role.ADMIN });
    const ctx = await newContext(browser);
    const page = await signIn(ctx, daemon.baseUrl, secret);
    await page.goto(daemon.baseUrl + "/secrets?name=db-password");
    const detail = page.getByRole("region", { name: "Secret db-password" });
    await detail.getByRole("table", { name: "Versions" }).waitFor();
    assert.equal(await page.getByRole("button", { name: /Reveal/ }).count(), 0, "no reveal for an admin");
    await page.getByRole("region", { name: "Set a secret" }).waitFor();
    await checkAccessibility(page, "secrets, admin");
    await screenshot(page, "admin-secrets-as-admin");
    // The server stays the authority.
    const csrf = await page.evaluate(() => (JSON.parse(localStorage.getItem("palyra.console.csrf") ?? "{}") as { token?: string }).token ?? "");
    const refused = await page.evaluate(
      async (csrf) => {
        const res = await fetch("/palyra.controlplane.v1.SecretService/RevealSecret", {
          method: "POST",
          headers: { "Content-Type": "application/json", "X-Palyra-CSRF": csrf },
          body: JSON.stringify({ name: "db-password", reason: "curious" }),
        });
        return { status: res.status, body: (await res.json()) as { code?: string } };
      },
      csrf,
    );
    assert.deepEqual([refused.status, refused.body.code], [403, "permission_denied"]);

    await open(page, "Configuration");
    await rowOf(page, "pairing.pin_digits").waitFor();
    assert.equal(await page.getByRole("button", { name: /^Edit / }).count(), 0);
    assert.equal(await page.getByRole("button", { name: /^Roll back/ }).count(), 0);
    await page.getByText("needs the permission config.write (owner only)", { exact: false }).waitFor();
    await ctx.close();
  });
});
