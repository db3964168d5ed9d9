// The console in a real Chromium against a real palyrad (bin/palyrad, which embeds the
// console `make build` built): sign-in, the overview, every page of the navigation with
// the axe-core check and a screenshot, CSRF, the hand-off link of `palyra console`,
// session expiry and sign-out.
import { X509Certificate } from "node:crypto";
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { AccessService, Role } from "../../gen/ts/palyra/access/v1/access_pb.js";
import { pages } from "../src/pages/registry.js";
import { startPalyrad, type Palyrad } from "./palyrad.js";
import { checkAccessibility, launch, newContext, screenshot, signIn, watchConsole } from "./browser.js";

const palyra = process.env.PALYRA ?? new URL("../../bin/palyra", import.meta.url).pathname;
/** The longest the tests wait for something the page does by itself (a refetch). */
const WAIT = 60_000;

let daemon: Palyrad;
let browser: Browser;
let scratch: string;

before(async () => {
  daemon = await startPalyrad("console-test");
  browser = await launch();
  scratch = mkdtempSync(join(tmpdir(), "palyra-console-"));
});

after(async () => {
  await browser?.close();
  await daemon?.stop();
  rmSync(scratch, { recursive: true, force: true });
});

/** api is a connect-node client of palyrad with an API token. */
function api(token: string) {
  const bearer: Interceptor = (next) => (req) => {
    req.header.set("Authorization", `Bearer ${token}`);
    return next(req);
  };
  return createClient(AccessService, createConnectTransport({ baseUrl: daemon.baseUrl, httpVersion: "2", nodeOptions: { ca: daemon.ca }, interceptors: [bearer] }));
}

/** rpc calls a procedure from the page's context with fetch, as a script in the page
 * could: the browser adds the session cookie; headers are the caller's. */
async function rpc(page: Page, procedure: string, body: object, headers: Record<string, string> = {}) {
  return page.evaluate(
    async ({ procedure, body, headers }) => {
      const res = await fetch(procedure, { method: "POST", headers: { "Content-Type": "application/json", ...headers }, body: JSON.stringify(body) });
      return { status: res.status, body: (await res.json()) as { code?: string; message?: string } };
    },
    { procedure, body, headers },
  );
}

describe("the console", () => {
  it("is served at / with its Content-Security-Policy", async () => {
    const ctx = await newContext(browser);
    const page = await ctx.newPage();
    const res = await page.goto(daemon.baseUrl + "/nodes");
    assert.equal(res?.status(), 200);
    assert.match(res?.headers()["content-security-policy"] ?? "", /script-src 'self'/);
    assert.equal(res?.headers()["cache-control"], "no-cache");
    const manifest = await page.evaluate(async () => (await fetch("/manifest.webmanifest")).json());
    assert.equal(manifest.display, "standalone");
    const sw = await page.evaluate(async () => {
      const r = await fetch("/sw.js");
      return { status: r.status, cache: r.headers.get("cache-control") };
    });
    assert.deepEqual(sw, { status: 200, cache: "no-cache" });
    await page.getByRole("heading", { level: 1, name: "Sign in to Palyra" }).waitFor();
    await checkAccessibility(page, "sign-in");
    await screenshot(page, "sign-in");
    await ctx.close();
  });

  it("refuses a wrong token with the server's message and code", async () => {
    const ctx = await newContext(browser);
    const page = await ctx.newPage();
    await page.goto(daemon.baseUrl + "/");
    await page.getByLabel("API token").fill("plr_01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8_wrong");
    await page.getByRole("button", { name: "Sign in" }).click();
    const alert = page.getByRole("alert");
    await alert.waitFor();
    assert.match(await alert.innerText(), /unauthenticated/);
    assert.match(await alert.innerText(), /missing or invalid credentials/);
    assert.equal(await page.getByLabel("API token").inputValue(), "", "the field is cleared");
    await checkAccessibility(page, "sign-in refused");
    await screenshot(page, "sign-in-refused");
    await ctx.close();
  });

  describe("signed in with the bootstrap token", () => {
    let ctx: BrowserContext;
    let page: Page;
    let consoleErrors: string[];

    before(async () => {
      ctx = await newContext(browser);
      page = await ctx.newPage();
      consoleErrors = watchConsole(page);
      await signIn(ctx, daemon.baseUrl, daemon.token, page);
    });

    after(async () => {
      await ctx.close();
    });

    it("shows the status on the overview", async () => {
      const fingerprint = "sha256:" + new X509Certificate(daemon.ca).fingerprint256.replaceAll(":", "").toLowerCase();
      const status = page.getByRole("region", { name: "Status" });
      await status.getByText(fingerprint).waitFor();
      // The replicas palyrad knows of (GetMasterKeyStatus): this one, live.
      await status.getByText("1 live").waitFor();
      const replicas = await status.getByRole("list", { name: "Replicas" }).innerText();
      assert.match(replicas, /console-test.*this one/s, "this replica, marked");
      assert.doesNotMatch(replicas, /not live/);
      const text = await status.innerText();
      assert.match(text, /console-test/, "the replica id");
      assert.match(text, /available/, "the database");
      assert.match(text, /embedded PostgreSQL/);
      await page.getByRole("region", { name: "Nodes" }).getByText("online").waitFor();
      await page.getByRole("region", { name: "Pending approvals" }).getByText("No pending requests.").waitFor();
      await page.getByRole("region", { name: "Recent dispatches" }).getByText("None.").waitFor();
      // A relative time carries the absolute one.
      const time = status.locator("time").first();
      assert.match((await time.getAttribute("title")) ?? "", /\d{4}/);
      assert.match(await page.getByRole("banner").innerText(), /Signed in as owner/);
      // The token is nowhere in the page's storage; the session cookie is HttpOnly.
      const stored = await page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }) + document.cookie);
      assert.ok(!stored.includes(daemon.token), "the API token is not stored by the page");
      assert.ok(!stored.includes("palyra_session"), "the session cookie is not readable by the page");
      await checkAccessibility(page, "overview");
      await screenshot(page, "overview");
    });

    it("navigates every page with the keyboard, each passing axe", async () => {
      await page.keyboard.press("Tab");
      assert.equal(await page.evaluate(() => document.activeElement?.textContent), "Skip to content");
      // From the overview through every other page and back.
      for (const p of [...pages.slice(1), pages[0]]) {
        await page.getByRole("navigation", { name: "Console" }).getByRole("link", { name: new RegExp(`^${p.title}`) }).press("Enter");
        const heading = page.getByRole("heading", { level: 1, name: p.title });
        await heading.waitFor();
        assert.equal(new URL(page.url()).pathname, p.path);
        // The focus moves to the new page's heading.
        assert.equal(await page.evaluate(() => document.activeElement?.tagName), "H1");
        await checkAccessibility(page, p.title);
        await screenshot(page, "page" + (p.path === "/" ? "-overview" : p.path.replaceAll("/", "-")));
      }
    });

    it("shows a client route on reload, and dark mode follows the system", async () => {
      await page.goto(daemon.baseUrl + "/nodes");
      await page.getByRole("heading", { level: 1, name: "Nodes" }).waitFor();
      const dark = await newContext(browser, "dark");
      const darkPage = await signIn(dark, daemon.baseUrl, daemon.token);
      const bg = await darkPage.evaluate(() => getComputedStyle(document.body).backgroundColor);
      assert.equal(bg, "rgb(21, 23, 28)", "the dark background");
      await checkAccessibility(darkPage, "overview, dark");
      await screenshot(darkPage, "overview-dark");
      await dark.close();
    });

    it("installs a service worker that caches the shell and never an API answer", async () => {
      const cached = await page.evaluate(async () => {
        const reg = await navigator.serviceWorker.ready;
        // Calls made after the worker took over go through its fetch handler.
        await fetch("/palyra.access.v1.AccessService/WhoAmI", { method: "POST", headers: { "Content-Type": "application/json" }, body: "{}" });
        const urls: string[] = [];
        for (const name of await caches.keys()) {
          for (const req of await (await caches.open(name)).keys()) urls.push(new URL(req.url).pathname);
        }
        return { active: Boolean(reg.active), controlled: Boolean(navigator.serviceWorker.controller), urls };
      });
      assert.ok(cached.active, "the service worker is active");
      assert.ok(cached.urls.includes("/"), `the shell is cached: ${cached.urls}`);
      assert.deepEqual(cached.urls.filter((u) => u.split("/")[1]?.includes(".") && !/\.(svg|png|webmanifest)$/.test(u) || u.startsWith("/v1/")), [], "no API answer is cached");
    });

    it("refuses a state change without the CSRF header, from the page's context", async () => {
      const setFlag = "/palyra.access.v1.FeatureFlagService/SetFlag";
      const refused = await rpc(page, setFlag, { key: "compat_api", enabled: true });
      assert.equal(refused.status, 403);
      assert.equal(refused.body.code, "permission_denied");
      assert.match(refused.body.message ?? "", /X-Palyra-CSRF/);
      const csrf = await page.evaluate(() => (JSON.parse(localStorage.getItem("palyra.console.csrf") ?? "{}") as { token?: string }).token ?? "");
      const allowed = await rpc(page, setFlag, { key: "compat_api", enabled: true }, { "X-Palyra-CSRF": csrf });
      assert.equal(allowed.status, 200, JSON.stringify(allowed.body));
      // A read needs no CSRF token.
      assert.equal((await rpc(page, "/palyra.access.v1.AccessService/WhoAmI", {})).status, 200);
    });

    it("loaded without console errors (no CSP violation)", () => {
      assert.deepEqual(consoleErrors, []);
    });

    it("signs out back to sign-in", async () => {
      await page.getByRole("button", { name: "Sign out" }).click();
      await page.getByText("You have signed out.").waitFor();
      const who = await rpc(page, "/palyra.access.v1.AccessService/WhoAmI", {});
      assert.equal(who.status, 401, "the session is over");
      await page.reload();
      await page.getByRole("heading", { level: 1, name: "Sign in to Palyra" }).waitFor();
    });
  });

  it("hides what the principal may not do", async () => {
    const { secret } = await api(daemon.token).createToken({ label: "console-narrow", role: Role.OPERATOR, scopes: ["status.read", "nodes.read"] });
    const ctx = await newContext(browser);
    const page = await signIn(ctx, daemon.baseUrl, secret);
    assert.match(await page.getByRole("banner").innerText(), /role operator/);
    const nav = page.getByRole("navigation", { name: "Console" });
    await nav.getByRole("link", { name: /^Nodes/ }).waitFor();
    for (const hidden of ["Dispatches", "API tokens", "Audit log", "Configuration", "Secrets"]) {
      assert.equal(await nav.getByRole("link", { name: new RegExp(`^${hidden}`) }).count(), 0, `${hidden} is hidden`);
    }
    await page.getByRole("region", { name: "Dispatches" }).getByText("Needs the permission nodes.dispatch.").waitFor();
    await page.getByRole("region", { name: "Status" }).getByText("console-test").first().waitFor();
    await checkAccessibility(page, "overview, narrow token");
    await screenshot(page, "overview-narrow-token");
    await ctx.close();
  });

  it("returns to sign-in with a message when the session ends under it", async () => {
    const { token, secret } = await api(daemon.token).createToken({ label: "console-expiry", role: Role.ADMIN });
    const ctx = await newContext(browser);
    const page = await signIn(ctx, daemon.baseUrl, secret);
    await api(daemon.token).revokeToken({ id: token!.id });
    // The overview refreshes by itself; its next call is Unauthenticated.
    await page.getByText("Your session has ended").waitFor({ timeout: WAIT });
    await page.getByRole("heading", { level: 1, name: "Sign in to Palyra" }).waitFor();
    await checkAccessibility(page, "session ended");
    await screenshot(page, "session-ended");
    await ctx.close();
  });

  it("opens signed in from palyra console's link, once", async () => {
    const caFile = join(scratch, "ca.pem");
    writeFileSync(caFile, daemon.ca);
    const { stdout, stderr } = await promisify(execFile)(palyra, ["console", "--no-browser"], {
      env: { PALYRA_URL: daemon.baseUrl, PALYRA_CA_FILE: caFile, PALYRA_TOKEN: daemon.token, HOME: scratch, PATH: process.env.PATH },
    });
    const link = stdout.trim();
    assert.match(link, new RegExp(`^${daemon.baseUrl}/handoff#code=[0-9A-Z]{26}\\.[a-z2-7]+$`));
    assert.ok(!link.includes(daemon.token), "the link carries no API token");
    assert.match(stderr, /works once/);

    const first = await newContext(browser);
    const page = await first.newPage();
    // The page asks at once whether it has a session (GetSession, without a cookie yet).
    // When palyrad answers it only after the claim, its Unauthenticated (about the time
    // before the claim) must not end the session the claim opened. The browser would
    // send a held request with the new cookie, so the late answer is the one palyrad
    // gives a call without one.
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let answeredLate = false;
    await page.route((url) => url.pathname.endsWith("SessionService/GetSession"), async (route) => {
      await released;
      await route.fulfill({ status: 401, contentType: "application/json", body: JSON.stringify({ code: "unauthenticated", message: "missing or invalid credentials" }) });
      answeredLate = true;
    });
    await page.goto(link);
    await page.getByRole("heading", { level: 1, name: "Overview" }).waitFor();
    release();
    await released;
    await page.getByRole("navigation", { name: "Console" }).getByRole("link", { name: /^Nodes/ }).click();
    await page.getByRole("heading", { level: 1, name: "Nodes" }).waitFor();
    assert.ok(answeredLate, "GetSession was answered after the claim");
    assert.equal(await page.getByText("Your session has ended").count(), 0);
    assert.ok(!page.url().includes("code="), "the code left the address bar");
    await first.close();

    const second = await newContext(browser);
    const again = await second.newPage();
    await again.goto(link);
    const alert = again.getByRole("alert");
    await alert.waitFor();
    assert.match(await alert.innerText(), /unauthenticated/);
    await again.getByText("This sign-in link does not work").waitFor();
    await checkAccessibility(again, "hand-off refused");
    await screenshot(again, "handoff-refused");
    await second.close();
  });
});
