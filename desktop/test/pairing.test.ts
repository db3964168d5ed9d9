// The console's done-when path in a real Chromium, against a real palyrad and a real
// `palyra node run`, with no terminal on the administrator's side: create a QR code and
// a PIN on the Pairing page, and withdraw the QR code (a confirmation that Escape
// closes first); the node pairs with the PIN from the CLI; its request
// appears without a reload (the page follows WatchPairingRequests); a wrong fingerprint
// is refused (by the page, and by palyrad when sent anyway) and the one the node printed
// approves; the node shows online; system.info runs from the generated form; a long
// shell.execute streams its output and is cancelled; the certificate is rotated; the
// device is revoked and goes offline. Every state is checked with axe-core and saved as
// a screenshot.
import { spawn, type ChildProcess } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { AccessService, Role } from "../../gen/ts/palyra/access/v1/access_pb.js";
import { startPalyrad, type Palyrad } from "./palyrad.js";
import { checkAccessibility, launch, newContext, screenshot, signIn, watchConsole } from "./browser.js";

const palyra = process.env.PALYRA ?? new URL("../../bin/palyra", import.meta.url).pathname;
/** WAIT bounds every wait for something a process or the page does by itself. */
const WAIT = 90_000;

/** NodeProcess is a running `palyra node run` whose stderr is read line by line. */
interface NodeProcess {
  child: ChildProcess;
  /** line resolves with the first line of stderr (past or future) matching re. */
  line(re: RegExp): Promise<RegExpMatchArray>;
  /** stderr is what it wrote so far. */
  stderr(): string;
  stop(): Promise<void>;
}

function startNode(args: string[], env: NodeJS.ProcessEnv): NodeProcess {
  const child = spawn(palyra, ["node", "run", ...args], { env, stdio: ["ignore", "ignore", "pipe"] });
  const lines: string[] = [];
  const waiters: { re: RegExp; resolve: (m: RegExpMatchArray) => void }[] = [];
  createInterface({ input: child.stderr! }).on("line", (l) => {
    lines.push(l);
    for (const w of [...waiters]) {
      const m = l.match(w.re);
      if (m) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(m);
      }
    }
  });
  return {
    child,
    line(re) {
      for (const l of lines) {
        const m = l.match(re);
        if (m) return Promise.resolve(m);
      }
      return new Promise((resolve, reject) => {
        waiters.push({ re, resolve });
        setTimeout(() => reject(new Error(`palyra node run wrote no line matching ${re} within ${WAIT / 1000} s; stderr:\n${lines.join("\n")}`)), WAIT);
      });
    },
    stderr: () => lines.join("\n"),
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGTERM");
      await exited;
    },
  };
}

let daemon: Palyrad;
let browser: Browser;
let scratch: string;
let node: NodeProcess | undefined;

before(async () => {
  daemon = await startPalyrad("pairing-test");
  browser = await launch();
  scratch = mkdtempSync(join(tmpdir(), "palyra-pairing-"));
});

after(async () => {
  await node?.stop();
  await browser?.close();
  await daemon?.stop();
  rmSync(scratch, { recursive: true, force: true });
});

/** rpc calls a procedure from the page's context, with the session's CSRF token. */
async function rpc(page: Page, procedure: string, body: object) {
  return page.evaluate(
    async ({ procedure, body }) => {
      const csrf = (JSON.parse(localStorage.getItem("palyra.console.csrf") ?? "{}") as { token?: string }).token ?? "";
      const res = await fetch(procedure, { method: "POST", headers: { "Content-Type": "application/json", "X-Palyra-CSRF": csrf }, body: JSON.stringify(body) });
      return { status: res.status, body: (await res.json()) as { code?: string; message?: string } };
    },
    { procedure, body },
  );
}

/** look checks the page with axe and saves its screenshot. */
async function look(page: Page, name: string) {
  await checkAccessibility(page, name);
  await screenshot(page, name);
}

describe("pairing, invoking and revoking a node from the console", () => {
  let ctx: BrowserContext;
  let page: Page;
  let consoleErrors: string[];
  let pinCommand: string;
  let keyFingerprint: string;
  let requestId: string;
  const ticker = () => join(scratch, "ticker");

  before(async () => {
    ctx = await newContext(browser);
    await ctx.grantPermissions(["clipboard-read", "clipboard-write"], { origin: daemon.baseUrl });
    page = await signIn(ctx, daemon.baseUrl, daemon.token);
    consoleErrors = watchConsole(page);
  });

  after(async () => {
    await ctx.close();
  });

  it("creates a QR code, drawn as an image, and a PIN with the command to copy", async () => {
    await page.getByRole("navigation", { name: "Console" }).getByRole("link", { name: /^Pairing/ }).click();
    await page.getByRole("heading", { level: 1, name: "Pairing" }).waitFor();
    const pending = page.getByRole("region", { name: "Pending requests" });
    await pending.getByText("No pending requests.").waitFor();
    // The page follows WatchPairingRequests.
    await pending.getByText("live", { exact: true }).waitFor({ timeout: WAIT });
    await look(page, "pairing-empty");

    await page.getByLabel("QR code: a link scanned or pasted").check();
    await page.getByLabel("Label (optional)").fill("scanned-node");
    await page.getByRole("button", { name: "Create QR code" }).click();
    const qr = page.getByRole("img", { name: "QR code of the pairing link" });
    await qr.waitFor();
    const qrCommand = await page.getByLabel("Command for the node").inputValue();
    assert.match(qrCommand, /^palyra node run --qr-uri 'palyra:\/\/pair\?.*code=.*'$/);
    const box = await qr.boundingBox();
    assert.ok(box && box.width > 100 && box.height === box.width, `the QR code is drawn square: ${JSON.stringify(box)}`);
    await look(page, "pairing-qr");

    await page.getByLabel("PIN: digits typed on the node").check();
    await page.getByLabel("Label (optional)").fill("console-node");
    await page.getByRole("button", { name: "Create PIN" }).click();
    await page.getByRole("heading", { name: /PIN created for console-node/ }).waitFor();
    pinCommand = await page.getByLabel("Command for the node").inputValue();
    assert.match(pinCommand, new RegExp(`^palyra node run --url ${daemon.baseUrl} --pin \\d{8} --ca-fingerprint sha256:[0-9a-f]{64}$`));
    await page.getByRole("button", { name: "Copy command" }).click();
    await page.getByText("Copied.").waitFor();
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), pinCommand);
    // Both codes are listed, usable, without their secrets.
    const codes = page.getByRole("region", { name: "Pairing codes" });
    await codes.getByText("scanned-node").waitFor();
    await codes.getByText("console-node").waitFor();
    assert.ok(!(await codes.innerText()).includes(pinCommand.split(" ")[6]), "the PIN is not in the list");
    await look(page, "pairing-pin");
  });

  it("withdraws a code after a confirmation that Escape closes, giving the focus back", async () => {
    const codes = page.getByRole("region", { name: "Pairing codes" });
    const withdraw = codes.getByRole("button", { name: /^Withdraw the scanned-node code/ });
    await withdraw.focus();
    await page.keyboard.press("Enter");
    const dialog = page.getByRole("dialog", { name: "Withdraw this pairing code?" });
    await dialog.getByText("labelled scanned-node").waitFor();
    // The focus starts on Cancel, the safe choice; Escape closes and the focus returns.
    assert.equal(await dialog.getByRole("button", { name: "Cancel" }).evaluate((el) => el === document.activeElement), true, "Cancel has the focus");
    await look(page, "pairing-withdraw-confirm");
    await page.keyboard.press("Escape");
    await dialog.waitFor({ state: "hidden" });
    assert.equal(await withdraw.evaluate((el) => el === document.activeElement), true, "the focus returns to Withdraw");
    await codes.getByText("scanned-node").waitFor();

    await page.keyboard.press("Enter");
    await dialog.getByRole("button", { name: "Withdraw code" }).press("Enter");
    await dialog.waitFor({ state: "hidden" });
    await codes.getByText("scanned-node").waitFor({ state: "detached", timeout: WAIT });
    await codes.getByText("The only code is shown.").waitFor();
  });

  it("shows the node's request live, with its warnings", async () => {
    // The node: shell.execute may run one script, which ticks until it is stopped.
    writeFileSync(ticker(), '#!/bin/sh\ni=0\nwhile true; do i=$((i+1)); echo "tick $i"; sleep 0.3; done\n', { mode: 0o755 });
    const stateDir = join(scratch, "node");
    mkdirSync(stateDir, { mode: 0o700 });
    chmodSync(stateDir, 0o700);
    writeFileSync(join(stateDir, "node.toml"), `[shell]\nallow = ["${ticker()}"]\n`, { mode: 0o600 });
    const args = pinCommand.split(" ").slice(3);
    node = startNode([...args, "--state-dir", stateDir, "--name", "console-node"], { HOME: scratch, PATH: process.env.PATH });
    const waiting = await node.line(/waiting for approval \(request (\w+), key (sha256:[0-9a-f]{64})\)/);
    requestId = waiting[1]!;
    keyFingerprint = waiting[2]!;

    // No reload: the page finds the request by itself.
    const request = page.getByRole("article", { name: "console-node" });
    await request.waitFor({ timeout: WAIT });
    const text = await request.innerText();
    assert.ok(text.includes(keyFingerprint), "the request shows the key fingerprint");
    assert.ok(text.includes(requestId));
    assert.match(text, /127\.0\.0\.1/);
    assert.match(text, /Unfamiliar source address/, "no request was approved from 127.0.0.1 before");
    await look(page, "pairing-pending");
  });

  it("refuses a wrong fingerprint, in the page and at palyrad, and approves the right one", async () => {
    const request = page.getByRole("article", { name: "console-node" });
    await request.getByRole("button", { name: "Review and approve…" }).click();
    const field = request.getByLabel("Key fingerprint the node printed");
    // The field has the focus: the approval is made with the keyboard.
    assert.equal(await page.evaluate(() => document.activeElement?.getAttribute("placeholder")), "sha256:…");
    const last = keyFingerprint.at(-1) === "0" ? "1" : "0";
    const wrong = keyFingerprint.slice(0, -1) + last;
    await page.keyboard.type(wrong);
    await request.getByText(/The fingerprints do not match \(they differ from digit 64\)/).waitFor();
    assert.equal(await request.getByRole("button", { name: "Approve" }).isDisabled(), true, "approval is refused in the page");
    await page.keyboard.press("Enter");
    await look(page, "pairing-fingerprint-mismatch");

    // Sent anyway, palyrad refuses it and the request stays pending.
    const refused = await rpc(page, "/palyra.controlplane.v1.PairingService/ApprovePairingRequest", { id: requestId, expectedKeyFingerprint: wrong });
    assert.equal(refused.status, 400, JSON.stringify(refused.body));
    assert.equal(refused.body.code, "failed_precondition");
    assert.match(refused.body.message ?? "", /do not approve a key the node does not show/);
    const still = await rpc(page, "/palyra.controlplane.v1.PairingService/GetPairingRequest", { id: requestId });
    assert.equal((still.body as { pairingRequest?: { state?: string } }).pairingRequest?.state, "PAIRING_STATE_PENDING_APPROVAL");

    // Pasted as a person may copy it (colons, upper case), it matches.
    await field.fill("");
    const pasted = "SHA256:" + (keyFingerprint.slice(7).toUpperCase().match(/../g) ?? []).join(":");
    await field.fill(pasted);
    await request.getByText("The fingerprints match.").waitFor();
    await look(page, "pairing-fingerprint-match");
    await field.press("Enter");
    await request.waitFor({ state: "detached", timeout: WAIT });
    await page.getByRole("region", { name: "Pending requests" }).getByText("No pending requests.").waitFor();
    await node!.line(/paired as device \w+/);
    await page.getByRole("region", { name: "All requests" }).getByRole("cell").getByText(/^(approved|completed)$/).first().waitFor({ timeout: WAIT });
    await look(page, "pairing-approved");
  });

  it("shows the node online, with its capabilities and schemas", async () => {
    await page.getByRole("navigation", { name: "Console" }).getByRole("link", { name: /^Nodes/ }).click();
    await page.getByRole("heading", { level: 1, name: "Nodes" }).waitFor();
    const row = page.getByRole("row").filter({ has: page.getByRole("link", { name: "console-node" }) });
    await row.getByText("online").waitFor({ timeout: WAIT });
    await look(page, "nodes-online");
    await row.getByRole("link", { name: "console-node" }).click();
    await page.getByRole("heading", { level: 1, name: "Node console-node" }).waitFor();
    assert.match(new URL(page.url()).search, /^\?node=\w{26}$/);
    const caps = page.getByRole("region", { name: "Capabilities" });
    await caps.getByText("shell.execute", { exact: true }).waitFor({ timeout: WAIT });
    await caps.getByText("Input schema").first().click();
    await caps.getByText('"required"').first().waitFor();
    await look(page, "node-detail");
  });

  it("invokes system.info from the generated form and shows the result", async () => {
    const invoke = page.getByRole("region", { name: "Invoke" });
    await invoke.getByLabel("Capability", { exact: true }).selectOption("system.info");
    await invoke.getByText("This capability takes no input.").waitFor();
    await invoke.getByRole("button", { name: "Run system.info" }).click();
    await invoke.getByText("The dispatch succeeded.").waitFor({ timeout: WAIT });
    const result = await invoke.getByLabel("Result").innerText();
    const info = JSON.parse(result) as { hostname?: string; os?: string; cpus?: number };
    assert.equal(info.os, "linux");
    assert.ok((info.cpus ?? 0) >= 1);
    await look(page, "node-invoke-system-info");
  });

  it("streams a long shell.execute's output live, then cancels it", async () => {
    const invoke = page.getByRole("region", { name: "Invoke" });
    await invoke.getByLabel("Capability", { exact: true }).selectOption("shell.execute");
    const run = invoke.getByRole("button", { name: "Run shell.execute" });
    // argv is required: the form says so and does not send.
    await invoke.getByText("Required.").waitFor();
    assert.equal(await run.isDisabled(), true);
    await invoke.getByLabel(/argv/).fill(ticker());
    await invoke.getByLabel("Timeout (seconds)").fill("600");
    await run.click();
    const output = invoke.getByRole("log", { name: "Output" });
    await output.getByText("tick 3").waitFor({ timeout: WAIT });
    // More comes while it runs, into the same view (no reload, no second call).
    await output.getByText("tick 6").waitFor({ timeout: WAIT });
    await invoke.getByText("The dispatch is running.").waitFor();
    await look(page, "node-invoke-streaming");
    // Cancelling asks first; Escape closes the question and gives the focus back.
    const cancel = invoke.getByRole("button", { name: "Cancel dispatch" });
    await cancel.click();
    const dialog = page.getByRole("dialog", { name: "Cancel this dispatch?" });
    await dialog.getByLabel(/Reason/).waitFor();
    await page.keyboard.press("Escape");
    await dialog.waitFor({ state: "hidden" });
    assert.equal(await cancel.evaluate((el) => el === document.activeElement), true, "the focus returns to the button");
    await invoke.getByText("The dispatch is running.").waitFor();
    await cancel.press("Enter");
    await dialog.getByLabel(/Reason/).fill("console test");
    await dialog.getByRole("button", { name: "Cancel dispatch" }).click();
    await invoke.getByText("The dispatch was cancelled.").waitFor({ timeout: WAIT });
    const ticks = (await output.innerText()).match(/tick \d+/g) ?? [];
    assert.ok(ticks.length >= 6, `ticks seen: ${ticks.length}`);
    await look(page, "node-invoke-cancelled");
  });

  it("rotates the node's certificate after a confirmation", async () => {
    const identity = page.getByRole("region", { name: "Identity" });
    await identity.getByRole("button", { name: "Rotate certificate…" }).click();
    const dialog = page.getByRole("dialog", { name: "Rotate the certificate?" });
    await dialog.getByLabel("Grace period").selectOption({ label: "10 minutes" });
    await look(page, "node-rotate-confirm");
    await dialog.getByRole("button", { name: "Rotate certificate", exact: true }).click();
    await identity.getByText(/Rotation asked for/).waitFor({ timeout: WAIT });
    await dialog.waitFor({ state: "hidden" });
    // The current certificate is to be revoked when the grace period ends.
    await identity.getByRole("row").nth(1).getByText("in 10 minutes").first().waitFor({ timeout: WAIT });
  });

  it("revokes the node after a confirmation, and sees it go offline", async () => {
    const identity = page.getByRole("region", { name: "Identity" });
    await identity.getByRole("button", { name: "Revoke device…" }).click();
    const dialog = page.getByRole("dialog", { name: "Revoke this device?" });
    const revoke = dialog.getByRole("button", { name: "Revoke device" });
    assert.equal(await revoke.isDisabled(), true, "a reason is needed");
    // The dialog takes the focus, and Tab moves within it: the reason, then Cancel.
    const reason = dialog.getByLabel("Reason (recorded)");
    assert.equal(await reason.evaluate((el) => el === document.activeElement), true, "the reason has the focus");
    await page.keyboard.press("Tab");
    assert.equal(await dialog.getByRole("button", { name: "Cancel" }).evaluate((el) => el === document.activeElement), true, "Tab reaches Cancel");
    await reason.fill("console test");
    await look(page, "node-revoke-confirm");
    await revoke.click();
    await identity.getByText(/Revoked .*: console test/).waitFor({ timeout: WAIT });
    const presence = page.getByRole("status", { name: "Presence" });
    await presence.getByText("offline, revoked").waitFor({ timeout: WAIT });
    await look(page, "node-revoked");
    await page.getByRole("link", { name: "All nodes" }).click();
    await page.getByRole("heading", { level: 1, name: "Nodes" }).waitFor();
    await page.getByText("No nodes.").waitFor();
    await page.getByLabel("Include revoked").check();
    const row = page.getByRole("row").filter({ has: page.getByRole("link", { name: "console-node" }) });
    await row.getByText("revoked").waitFor({ timeout: WAIT });
    await row.getByText("offline").waitFor();
    await look(page, "nodes-revoked");
  });

  it("loaded without console errors (no CSP violation)", () => {
    assert.deepEqual(consoleErrors, []);
  });
});

describe("a principal that may only read nodes", () => {
  it("sees the pairing and nodes pages without their actions", async () => {
    const bearer: Interceptor = (next) => (req) => {
      req.header.set("Authorization", `Bearer ${daemon.token}`);
      return next(req);
    };
    const access = createClient(AccessService, createConnectTransport({ baseUrl: daemon.baseUrl, httpVersion: "2", nodeOptions: { ca: daemon.ca }, interceptors: [bearer] }));
    const { secret } = await access.createToken({ label: "pairing-readonly", role: Role.OPERATOR, scopes: ["nodes.read"] });
    const ctx = await newContext(browser);
    const page = await signIn(ctx, daemon.baseUrl, secret);
    await page.getByRole("navigation", { name: "Console" }).getByRole("link", { name: /^Pairing/ }).click();
    await page.getByText("Creating pairing codes needs the permission nodes.pair.").waitFor();
    assert.equal(await page.getByRole("button", { name: /Create/ }).count(), 0);
    await look(page, "pairing-read-only");
    await page.getByRole("navigation", { name: "Console" }).getByRole("link", { name: /^Nodes/ }).click();
    await page.getByLabel("Include revoked").check();
    await page.getByRole("link", { name: "console-node" }).click();
    await page.getByText("Invoking needs the permission nodes.dispatch.").waitFor();
    await page.getByText("Revoking and rotating need the permission nodes.revoke.").waitFor();
    assert.equal(await page.getByRole("button", { name: /Revoke|Rotate|Run/ }).count(), 0);
    await look(page, "node-read-only");
    await ctx.close();
  });
});
