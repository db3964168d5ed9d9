// Chromium for the console's browser tests: Debian's /usr/bin/chromium driven by
// playwright-core (no browser download), the axe-core accessibility check injected into
// a page, and screenshots saved as test artifacts under desktop/test-results/screenshots/
// (PALYRA_SCREENSHOTS overrides the directory).
import { createRequire } from "node:module";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import assert from "node:assert/strict";
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";

const require = createRequire(import.meta.url);
const axeSource = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");

/** screenshotDir is where the screenshots of the pages go. */
export const screenshotDir =
  process.env.PALYRA_SCREENSHOTS ?? new URL("../test-results/screenshots/", import.meta.url).pathname;

/** launch starts headless Chromium. */
export async function launch(): Promise<Browser> {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    // As root Chromium needs --no-sandbox; palyrad's CA is private, and a service worker
    // registers only where the certificate is trusted; the rest keep it off the network.
    args: ["--no-sandbox", "--ignore-certificate-errors", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
}

/** newContext is a fresh browser profile that trusts palyrad's self-signed chain. */
export async function newContext(browser: Browser, colorScheme: "light" | "dark" = "light"): Promise<BrowserContext> {
  return browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 860 }, colorScheme });
}

/** watchConsole collects the page's uncaught exceptions and Content-Security-Policy
 * violations. (Chromium also logs every non-2xx answer as an error: those are the
 * tests' business, a 401 of the boot session check for one.) */
export function watchConsole(page: Page): string[] {
  const errors: string[] = [];
  page.on("console", (m) => {
    if (m.type() === "error" && /Content Security Policy/i.test(m.text())) errors.push(m.text());
  });
  page.on("pageerror", (e) => errors.push(String(e)));
  return errors;
}

/** checkAccessibility runs axe-core on the page and fails on serious or critical
 * violations. axe is evaluated through the DevTools protocol, which the page's CSP
 * (scripts from the same origin only) does not govern. */
export async function checkAccessibility(page: Page, what: string): Promise<void> {
  await page.evaluate(axeSource);
  const violations = await page.evaluate(async () => {
    const axe = (window as unknown as { axe: { run(ctx: Document, opts: object): Promise<{ violations: { id: string; impact: string; help: string; nodes: { target: string[] }[] }[] }> } }).axe;
    const res = await axe.run(document, { resultTypes: ["violations"] });
    return res.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, targets: v.nodes.map((n) => n.target.join(" ")) }));
  });
  const bad = violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  assert.deepEqual(bad, [], `${what}: axe-core found serious or critical violations`);
}

/** screenshot saves the page as <name>.png in screenshotDir and returns the file. */
export async function screenshot(page: Page, name: string): Promise<string> {
  mkdirSync(screenshotDir, { recursive: true });
  const file = join(screenshotDir, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

/** signIn opens the console at baseUrl in ctx (in page, or a new one) and signs in with
 * token; it returns the page, at the Overview. */
export async function signIn(ctx: BrowserContext, baseUrl: string, token: string, page?: Page): Promise<Page> {
  page ??= await ctx.newPage();
  await page.goto(baseUrl + "/");
  await page.getByLabel("API token").fill(token);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { level: 1, name: "Overview" }).waitFor();
  return page;
}
