// The console's Browser profiles page and browser dispatches in a real Chromium against
// a real palyrad and a real node (`palyra node run`, which launches Debian's chromium
// itself) allowed to browse loopback: a profile is created from the form (a bad domain
// first refused on its row), edited (a stale edit shows the conflict and is saved over
// it), listed and filtered by label; browser.navigate is invoked from the node's page
// with the profile picked from the list against a site the test serves on 127.0.0.1
// (a login that sets a cookie and a page that shows it): the result shows the page,
// its screenshot (an image as large as the profile's viewport) and its blocked
// requests, never the PNG as text, on the Nodes and the Dispatches pages; the profile
// then holds state version 1, which a confirmed reset drops (the next visit is signed
// out); an agent is given a browser.navigate tool with the profile picked in the agent
// editor (a save without one refused on the field, an unknown one refused by palyrad on
// the field), which its page shows linked to the profile's after a reload; an operator
// sees the profiles without their actions, and a principal that may write agents but
// not read profiles names the profile as text. Each page passes axe and is photographed.
import { chmodSync, mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createClient, type Transport } from "@connectrpc/connect";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { AccessService, Role } from "../../gen/ts/palyra/access/v1/access_pb.js";
import { FeatureFlagService } from "../../gen/ts/palyra/access/v1/flags_pb.js";
import { AgentService } from "../../gen/ts/palyra/agents/v1/agents_pb.js";
import { BrowserProfileService } from "../../gen/ts/palyra/browser/v1/browser_pb.js";
import { DispatchService, DispatchState } from "../../gen/ts/palyra/controlplane/v1/dispatch_pb.js";
import { NodeInventoryService } from "../../gen/ts/palyra/controlplane/v1/nodes_pb.js";
import { bearer, eventually, startPalyrad, WAIT, type Palyrad } from "./palyrad.js";
import { checkAccessibility, launch, newContext, screenshot, signIn, watchConsole } from "./browser.js";
import { pairNode, type PairedNode } from "./fleet.js";

let daemon: Palyrad;
let browser: Browser;
let scratch: string;
let transport: Transport;
let node: PairedNode | undefined;
let site: Server | undefined;
let siteURL: string;

/** serveSite serves a tiny site on loopback: /login sets the cookie "user=alice" and
 * redirects to /account, which greets the user its cookie names, or says it is signed
 * out; /account also loads an image from a host no profile allows. */
function serveSite(): Promise<Server> {
  const server = createServer((req, res) => {
    const page = (title: string, body: string) => {
      res.setHeader("Content-Type", "text/html; charset=utf-8");
      res.end(`<!doctype html><html><head><title>${title}</title></head><body style="background:#fff"><h1>${body}</h1><img src="http://blocked.example/pixel.png" alt=""></body></html>`);
    };
    if (req.url === "/login") {
      res.writeHead(302, { "Set-Cookie": "user=alice; Path=/; Max-Age=3600; HttpOnly", Location: "/account" });
      res.end();
    } else if (req.url === "/account") {
      const user = /(?:^|;\s*)user=([^;]+)/.exec(req.headers.cookie ?? "")?.[1];
      page("Account", user ? `Signed in as ${user}` : "Signed out");
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

before(async () => {
  daemon = await startPalyrad("browser-profiles-console-test", "--compat-model", "palyra-echo");
  browser = await launch();
  scratch = mkdtempSync(join(tmpdir(), "palyra-browser-"));
  chmodSync(scratch, 0o755);
  transport = bearer(daemon, daemon.token);
  // The agent editor's model picker lists the compat models.
  await createClient(FeatureFlagService, transport).setFlag({ key: "compat_api", enabled: true });
  site = await serveSite();
  siteURL = `http://127.0.0.1:${(site.address() as AddressInfo).port}`;
  node = await pairNode(daemon, transport, scratch, "browser-node", '[browser]\nenabled = true\nexecutable = "/usr/bin/chromium"\nallow_networks = ["127.0.0.0/8"]\n');
  await eventually("the node offers browser.navigate", async () => {
    const { nodes } = await createClient(NodeInventoryService, transport).listNodes({});
    assert.ok(nodes[0].capabilities.some((c) => c.name === "browser.navigate" && c.available), node!.log());
  });
});

after(async () => {
  await node?.stop();
  await browser?.close();
  site?.close();
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

/** shownImage is the natural size of the screenshot image in scope, once it loaded. */
async function shownImage(page: Page, scope: ReturnType<Page["getByRole"]>) {
  const img = scope.getByRole("img", { name: /^Screenshot of “Account” \(http:\/\/127\.0\.0\.1:\d+\/account\), 800×600 pixels$/ });
  await img.waitFor({ timeout: WAIT });
  await page.waitForFunction((el) => (el as HTMLImageElement).complete && (el as HTMLImageElement).naturalWidth > 0, await img.elementHandle(), { timeout: WAIT });
  return img.evaluate((el) => ({ width: (el as HTMLImageElement).naturalWidth, height: (el as HTMLImageElement).naturalHeight, src: (el as HTMLImageElement).src }));
}

describe("browser profiles, as the owner", () => {
  let ctx: BrowserContext;
  let page: Page;
  let consoleErrors: string[];
  let dispatchId: string;

  before(async () => {
    ctx = await newContext(browser);
    page = await signIn(ctx, daemon.baseUrl, daemon.token);
    consoleErrors = watchConsole(page);
  });

  after(async () => {
    await ctx.close();
  });

  it("creates a profile from the form, a bad domain refused on its row", async () => {
    await open(page, "Browser profiles");
    await page.getByText("No browser profiles.").waitFor();
    await look(page, "browser-profiles-empty");
    await page.getByRole("link", { name: "New profile" }).click();
    await page.getByRole("heading", { level: 1, name: "New browser profile" }).waitFor();
    const form = page.getByRole("form", { name: "New browser profile" });
    await form.getByLabel("Name", { exact: true }).fill("shop");
    await form.getByLabel("Description", { exact: true }).fill("The test shop");
    await form.getByLabel("Width").fill("800");
    await form.getByLabel("Height").fill("600");
    await form.getByLabel("Locale").fill("en-GB");
    await form.getByLabel("Time zone").fill("Europe/London");
    await form.getByLabel("Domain 1", { exact: true }).fill("127.0.0.1");
    await form.getByRole("button", { name: "Add a domain" }).click();
    await form.getByLabel("Domain 2", { exact: true }).fill("https://shop.example/");
    await form.getByLabel("Labels (one key=value a line)").fill("team=web");
    await form.getByRole("button", { name: "Create profile" }).click();

    // palyrad names the row at fault; the form shows it there, and nothing is stored.
    const bad = form.getByLabel("Domain 2", { exact: true });
    await page.waitForFunction((el) => el?.getAttribute("aria-invalid") === "true", await bad.elementHandle(), { timeout: WAIT });
    const problem = await bad.evaluate((el) => document.getElementById(el.getAttribute("aria-describedby") ?? "")?.textContent ?? "");
    assert.match(problem, /not a domain/);
    assert.equal(await form.getByLabel("Domain 1", { exact: true }).getAttribute("aria-invalid"), "false");
    await page.getByRole("alert").getByText("invalid_argument").waitFor();
    const { profiles } = await createClient(BrowserProfileService, transport).listBrowserProfiles({});
    assert.deepEqual(profiles, []);
    await look(page, "browser-profile-invalid");

    await form.getByRole("button", { name: /^Remove domain 2/ }).click();
    await form.getByRole("button", { name: "Create profile" }).click();
    await page.getByRole("heading", { level: 1, name: "Browser profile shop" }).waitFor({ timeout: WAIT });
    await page.getByRole("status", { name: "Saved" }).getByText(/^Browser profile created/).waitFor();
    const definition = await page.getByRole("region", { name: "Definition" }).innerText();
    assert.match(definition, /127\.0\.0\.1/);
    assert.match(definition, /800×600/);
    assert.match(definition, /Europe\/London/);
    assert.match(definition, /team=web/);
    assert.equal(await page.getByTestId("profile-state").innerText(), "none");
    await look(page, "browser-profile-created");
  });

  it("shows a stale edit's conflict, and saves over it", async () => {
    await page.getByRole("button", { name: "Edit" }).click();
    const form = page.getByRole("form", { name: "Edit browser profile shop" });
    await form.getByLabel("Description", { exact: true }).fill("The shop, mine");
    // Someone else saves revision 2 meanwhile.
    const profiles = createClient(BrowserProfileService, transport);
    const { profile } = await profiles.getBrowserProfile({ profile: { case: "name", value: "shop" } });
    await profiles.updateBrowserProfile({ profile: { case: "id", value: profile!.id }, spec: { ...profile!.spec!, description: "The shop, theirs" }, expectedRevision: 1n });
    await form.getByRole("button", { name: "Save profile" }).click();
    const conflict = form.getByRole("alert", { name: "Conflict" });
    await conflict.getByText(/You edited revision 1; it is now revision 2/).waitFor({ timeout: WAIT });
    await conflict.getByText("Description: The shop, theirs → The shop, mine").waitFor();
    await look(page, "browser-profile-conflict");
    await conflict.getByRole("button", { name: "Save mine over revision 2" }).click();
    await page.getByRole("status", { name: "Saved" }).getByText("Saved as revision 3.").waitFor({ timeout: WAIT });
    assert.match(await page.getByRole("region", { name: "Definition" }).innerText(), /The shop, mine/);
  });

  it("lists the profile, filtered by a label selector", async () => {
    await page.getByRole("link", { name: "All browser profiles" }).click();
    await page.getByRole("heading", { level: 1, name: "Browser profiles" }).waitFor();
    const row = page.getByRole("row", { name: /shop/ });
    assert.match(await row.innerText(), /shop\s+The shop, mine\s+127\.0\.0\.1\s+800×600\s+none\s+team=web\s+3,/);
    await page.getByLabel("Label selector").fill("team=ops");
    await page.getByRole("button", { name: "Filter" }).click();
    await page.getByText("No browser profiles.").waitFor();
    assert.match(page.url(), /selector=team%3Dops/);
    await page.getByLabel("Label selector").fill("team=web");
    await page.getByRole("button", { name: "Filter" }).click();
    await row.waitFor();
    await look(page, "browser-profiles");
  });

  it("invokes browser.navigate with the profile, and shows the screenshot and the result", async () => {
    await open(page, "Nodes");
    await page.getByRole("link", { name: "browser-node" }).click();
    await page.getByRole("heading", { level: 1, name: "Node browser-node" }).waitFor();
    const invoke = page.getByRole("region", { name: "Invoke" });
    await invoke.getByLabel("Capability", { exact: true }).selectOption("browser.navigate");
    await invoke.getByLabel(/^url/).fill(`${siteURL}/login`);
    // The profile is chosen among the profiles palyrad lists.
    const profile = invoke.getByLabel(/^profile/);
    await invoke.locator("option", { hasText: "shop" }).waitFor({ state: "attached", timeout: WAIT });
    assert.equal(await profile.evaluate((el) => el.tagName), "SELECT");
    await profile.selectOption("shop");
    await invoke.getByLabel("screenshot", { exact: true }).check();
    await look(page, "browser-invoke-form");
    await invoke.getByRole("button", { name: "Run browser.navigate" }).click();
    await invoke.getByText("The dispatch succeeded.").waitFor({ timeout: WAIT });

    const live = invoke.getByRole("region", { name: /^Dispatch / });
    dispatchId = (await live.getAttribute("aria-label"))!.replace("Dispatch ", "");
    const result = JSON.parse(await invoke.getByLabel("Result").innerText()) as { title: string; text: string; screenshot: { width: number; height: number } };
    assert.equal(result.title, "Account");
    assert.match(result.text, /Signed in as alice/);
    const shown = await shownImage(page, invoke);
    assert.deepEqual({ width: shown.width, height: shown.height }, { width: 800, height: 600 });
    assert.equal(result.screenshot.width, 800);
    assert.match(shown.src, /^blob:/);
    const facts = await invoke.getByRole("region", { name: "Page" }).innerText();
    assert.match(facts, /Account\s+http:\/\/127\.0\.0\.1:\d+\/account, HTTP 200/);
    assert.match(facts, /sent back: 1 cookie/);
    // The guards blocked the image of a host the profile does not allow, and say so.
    const blocked = invoke.getByRole("list", { name: "Blocked requests" });
    assert.match(await blocked.innerText(), /blocked\.example/);
    // The PNG is not printed as text.
    const output = await invoke.getByRole("log", { name: "Output" }).innerText();
    assert.match(output, /bytes of binary output/);
    assert.doesNotMatch(output, /PNG|IHDR/);
    await look(page, "browser-invoke-result");
  });

  it("shows the screenshot on the Dispatches page too", async () => {
    await page.goto(`${daemon.baseUrl}/dispatches?id=${dispatchId}`);
    const detail = page.getByRole("region", { name: `Dispatch ${dispatchId}` });
    const shown = await shownImage(page, detail);
    assert.deepEqual({ width: shown.width, height: shown.height }, { width: 800, height: 600 });
    assert.doesNotMatch(await detail.getByTestId("dispatch-output").innerText(), /PNG|IHDR/);
    await look(page, "browser-dispatch-detail");
  });

  it("shows the state the dispatch saved, and resets it through a confirmation", async () => {
    await open(page, "Browser profiles");
    await page.getByRole("link", { name: "shop" }).click();
    await page.getByRole("heading", { level: 1, name: "Browser profile shop" }).waitFor();
    const state = page.getByTestId("profile-state");
    await page.waitForFunction(() => document.querySelector('[data-testid="profile-state"]')?.textContent?.startsWith("version 1,"), undefined, { timeout: WAIT });
    assert.match(await state.innerText(), /^version 1, \d+ bytes, saved /);
    await look(page, "browser-profile-state");
    await page.getByRole("button", { name: "Reset state…" }).click();
    const dialog = page.getByRole("dialog", { name: "Reset the state of shop?" });
    await look(page, "browser-profile-reset");
    await dialog.getByRole("button", { name: "Reset state" }).click();
    await page.getByRole("status", { name: "State reset" }).getByText(/1 stored version dropped/).waitFor({ timeout: WAIT });
    await page.waitForFunction(() => document.querySelector('[data-testid="profile-state"]')?.textContent === "none", undefined, { timeout: WAIT });

    // The next visit starts signed out.
    const { dispatch } = await createClient(DispatchService, transport).executeCapability({
      nodeId: node!.id,
      capability: "browser.navigate",
      inputJson: JSON.stringify({ url: `${siteURL}/account`, profile: "shop" }),
      timeout: durationFromMs(WAIT),
    });
    assert.equal(dispatch?.state, DispatchState.SUCCEEDED, dispatch?.error);
    assert.match(JSON.parse(dispatch!.resultJson).text as string, /Signed out/);
  });

  it("gives an agent a browser.navigate tool with the profile picked in the editor", async () => {
    await open(page, "Agents");
    await page.getByRole("link", { name: "New agent" }).click();
    const form = page.getByRole("form", { name: "New agent" });
    await form.getByLabel("Name", { exact: true }).fill("shopper");
    await form.getByLabel("Model", { exact: true }).selectOption("palyra-echo");
    await form.getByRole("button", { name: "Add a tool" }).click();
    const tool = form.getByRole("group", { name: /^Tool 1/ });
    await tool.getByLabel("Capability", { exact: true }).selectOption("system.info");
    assert.equal(await tool.getByLabel("Browser profile").count(), 0, "no profile for another capability");
    await tool.getByLabel("Capability", { exact: true }).selectOption("browser.navigate");
    const profile = tool.getByLabel("Browser profile", { exact: true });
    await tool.locator("option", { hasText: "shop" }).waitFor({ state: "attached", timeout: WAIT });
    assert.equal(await profile.evaluate((el) => el.tagName), "SELECT");

    // Without a profile the save is refused on the field, and nothing is sent.
    await form.getByRole("button", { name: "Create agent" }).click();
    assert.ok(await profile.evaluate((el) => el.matches(":invalid")));
    assert.notEqual(await profile.evaluate((el) => (el as HTMLSelectElement).validationMessage), "");
    await page.getByRole("heading", { level: 1, name: "New agent" }).waitFor();

    await profile.selectOption("shop");
    assert.equal(await profile.evaluate((el) => el.matches(":invalid")), false);
    await tool.getByText("It may visit 127.0.0.1; every call of the tool browses with it.").waitFor();
    await look(page, "agents-browser-tool-new");
    await form.getByRole("button", { name: "Create agent" }).click();
    await page.getByRole("heading", { level: 1, name: "Agent shopper" }).waitFor({ timeout: WAIT });
    await page.getByRole("status", { name: "Saved" }).getByText(/^Agent created/).waitFor();

    // palyrad stores it (the refused save sent nothing: this is the first revision).
    const { agent } = await createClient(AgentService, transport).getAgent({ agent: { case: "name", value: "shopper" } });
    assert.equal(agent!.revision, 1n);
    assert.equal(agent!.spec?.tools[0]?.capability, "browser.navigate");
    assert.equal(agent!.spec?.tools[0]?.browserProfile, "shop");

    // The agent's page shows it after a reload, linked to the profile's page.
    await page.reload();
    await page.getByRole("heading", { level: 1, name: "Agent shopper" }).waitFor({ timeout: WAIT });
    const row = page.getByRole("region", { name: "Tools" }).getByRole("row", { name: /browser_navigate/ });
    assert.match(await row.innerText(), /browser_navigate\s+browser\.navigate\s+profile shop\s+any node offering it\s+auto/);
    assert.equal(await row.getByRole("link", { name: "shop" }).getAttribute("href"), "/browser?profile=shop");
    await look(page, "agents-browser-tool");
  });

  it("shows an edited agent's profile, clears it with the capability, and shows palyrad's refusal on the field", async () => {
    const profiles = createClient(BrowserProfileService, transport);
    await profiles.createBrowserProfile({ spec: { name: "gone", allowedDomains: ["127.0.0.1"] } });
    await page.getByRole("button", { name: "Edit", exact: true }).click();
    const form = page.getByRole("form", { name: "Edit agent shopper" });
    const tool = form.getByRole("group", { name: /^Tool 1/ });
    const profile = tool.getByLabel("Browser profile", { exact: true });
    assert.equal(await profile.inputValue(), "shop");
    await tool.locator("option", { hasText: "gone" }).waitFor({ state: "attached", timeout: WAIT });

    // Another capability drops the profile; back to browser.navigate, it is to choose again.
    await tool.getByLabel("Capability", { exact: true }).selectOption("system.info");
    assert.equal(await profile.count(), 0);
    await tool.getByLabel("Capability", { exact: true }).selectOption("browser.navigate");
    assert.equal(await profile.inputValue(), "");

    // A profile deleted after it was picked: palyrad refuses the save, on the field.
    await profile.selectOption("gone");
    await profiles.deleteBrowserProfile({ profile: { case: "name", value: "gone" } });
    await form.getByRole("button", { name: "Save agent" }).click();
    await page.waitForFunction((el) => el?.getAttribute("aria-invalid") === "true", await profile.elementHandle(), { timeout: WAIT });
    const problem = await profile.evaluate((el) => (el.getAttribute("aria-describedby") ?? "").split(" ").map((id) => document.getElementById(id)?.textContent ?? "").join(" "));
    assert.match(problem, /there is no browser profile "gone"/);
    // The profiles are read again: the field says the profile is gone.
    await tool.getByText("palyrad lists no browser profile “gone”: the tool's calls are refused until it exists.").waitFor({ timeout: WAIT });
    await tool.locator("option", { hasText: "gone (no such profile)" }).waitFor({ state: "attached" });
    await form.getByRole("alert").getByText("invalid_argument").waitFor();
    await look(page, "agents-browser-tool-refused");
    const { agent } = await createClient(AgentService, transport).getAgent({ agent: { case: "name", value: "shopper" } });
    assert.equal(agent!.revision, 1n);
    await form.getByRole("button", { name: "Cancel" }).click();
  });

  it("loaded without console errors (no CSP violation)", () => {
    assert.deepEqual(consoleErrors, []);
  });
});

describe("an operator", () => {
  it("sees the profiles without their actions", async () => {
    const { secret } = await createClient(AccessService, transport).createToken({ label: "browser-operator", role: Role.OPERATOR });
    const ctx = await newContext(browser);
    const page = await signIn(ctx, daemon.baseUrl, secret);
    await open(page, "Browser profiles");
    await page.getByText("Creating and changing browser profiles needs the permission browser.write.").waitFor();
    assert.equal(await page.getByRole("link", { name: "New profile" }).count(), 0);
    await page.getByRole("link", { name: "shop" }).click();
    await page.getByRole("heading", { level: 1, name: "Browser profile shop" }).waitFor();
    await page.getByRole("region", { name: "Definition" }).waitFor();
    assert.equal(await page.getByRole("button", { name: /Edit|Reset|Delete/ }).count(), 0);
    await look(page, "browser-profile-operator");
    await assert.rejects(
      createClient(BrowserProfileService, bearer(daemon, secret)).resetBrowserProfileState({ profile: { case: "name", value: "shop" } }),
      /permission_denied|browser\.write/,
    );
    await ctx.close();
  });
});

describe("a principal that may write agents but not read browser profiles", () => {
  it("is told why, and names the profile as text", async () => {
    const { secret } = await createClient(AccessService, transport).createToken({
      label: "agents-no-browser",
      role: Role.ADMIN,
      scopes: ["status.read", "nodes.read", "compat.models.read", "agents.read", "agents.write"],
    });
    const ctx = await newContext(browser);
    const page = await signIn(ctx, daemon.baseUrl, secret);
    await page.goto(daemon.baseUrl + "/agents?agent=shopper");
    await page.getByRole("heading", { level: 1, name: "Agent shopper" }).waitFor();
    // The profile is named, not linked to a page it may not open.
    const row = page.getByRole("region", { name: "Tools" }).getByRole("row", { name: /browser_navigate/ });
    await row.getByText("shop", { exact: true }).waitFor();
    assert.equal(await row.getByRole("link", { name: "shop" }).count(), 0);
    await page.getByRole("button", { name: "Edit", exact: true }).click();
    const form = page.getByRole("form", { name: "Edit agent shopper" });
    const tool = form.getByRole("group", { name: /^Tool 1/ });
    await tool.getByText("Choosing among the browser profiles needs the permission browser.read: name the profile the tool browses with.").waitFor();
    const profile = tool.getByLabel("Browser profile", { exact: true });
    assert.equal(await profile.evaluate((el) => el.tagName), "INPUT");
    assert.equal(await profile.inputValue(), "shop");
    await look(page, "agents-browser-tool-no-read");
    // A name palyrad does not know is refused on the field.
    await profile.fill("nonesuch");
    await form.getByRole("button", { name: "Save agent" }).click();
    await page.waitForFunction((el) => el?.getAttribute("aria-invalid") === "true", await profile.elementHandle(), { timeout: WAIT });
    await tool.getByText('there is no browser profile "nonesuch" (palyra browser profiles list)').waitFor();
    await profile.fill("shop");
    await form.getByRole("button", { name: "Save agent" }).click();
    await page.getByRole("status", { name: "Saved" }).getByText(/^Saved as revision 2/).waitFor({ timeout: WAIT });
    await ctx.close();
  });
});
