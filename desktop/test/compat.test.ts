// The console's Compat pages in a real Chromium against a real palyrad serving
// palyra-echo and an upstream provider played by a server on loopback that holds its
// stream open: the feature flags' refusals naming the flag, the models with their
// owners, the playground streaming an answer chunk by chunk and stopping one, the usage
// of the session's token, and an operator who reads no usage. Each page passes the
// axe-core check and is saved as a screenshot.
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { AccessService, Role } from "../../gen/ts/palyra/access/v1/access_pb.js";
import { FeatureFlagService } from "../../gen/ts/palyra/access/v1/flags_pb.js";
import { ConfigService } from "../../gen/ts/palyra/controlplane/v1/config_pb.js";
import { SecretService } from "../../gen/ts/palyra/controlplane/v1/secrets_pb.js";
import { startPalyrad, type Palyrad } from "./palyrad.js";
import { checkAccessibility, launch, newContext, screenshot, signIn, watchConsole } from "./browser.js";

let daemon: Palyrad;
let browser: Browser;
let upstream: Server;
/** held counts the upstream streams opened; closed those the client went away from. */
const held = { opened: 0, closed: 0 };

/** startUpstream serves an OpenAI-compatible chat stream that sends its first word and
 * then holds the stream open until the client goes away. */
function startUpstream(): Promise<string> {
  upstream = createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      held.opened++;
      res.setHeader("Content-Type", "text/event-stream");
      const base = { id: "chatcmpl-held", object: "chat.completion.chunk", created: 1700000000, model: "held-model" };
      res.write(`data: ${JSON.stringify({ ...base, choices: [{ index: 0, delta: { role: "assistant", content: "" }, finish_reason: null }] })}\n\n`);
      res.write(`data: ${JSON.stringify({ ...base, choices: [{ index: 0, delta: { content: "waiting" }, finish_reason: null }] })}\n\n`);
      res.on("close", () => held.closed++);
    });
  });
  return new Promise((resolve) => upstream.listen(0, "127.0.0.1", () => resolve(`http://127.0.0.1:${(upstream.address() as AddressInfo).port}/v1`)));
}

/** transport calls palyrad with the owner's API token. */
function ownerTransport() {
  const bearer: Interceptor = (next) => (req) => {
    req.header.set("Authorization", `Bearer ${daemon.token}`);
    return next(req);
  };
  return createConnectTransport({ baseUrl: daemon.baseUrl, httpVersion: "2", nodeOptions: { ca: daemon.ca }, interceptors: [bearer] });
}

/** until waits for cond, polling: a generous deadline, no assumption about speed. */
async function until(cond: () => boolean, what: string, ms = 60_000) {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

before(async () => {
  daemon = await startPalyrad("compat-console-test", "--compat-model", "palyra-echo");
  const upstreamUrl = await startUpstream();
  const transport = ownerTransport();
  await createClient(SecretService, transport).putSecret({ name: "held", value: new TextEncoder().encode("sk-held-key") });
  const text = (value: string) => ({ kind: { case: "text" as const, value } });
  await createClient(ConfigService, transport).updateConfig({
    change: { set: [
      { key: "compat.providers.held.base_url", value: text(upstreamUrl) },
      { key: "compat.providers.held.api_key", value: text("secret:held") },
      { key: "compat.providers.held.models", value: text("held-model") },
    ] },
    expectedRevision: 0n,
    reason: "console compat test",
  });
  browser = await launch();
});

after(async () => {
  await browser?.close();
  upstream?.close();
  await daemon?.stop();
});

/** openPage follows the navigation's link to a page. */
async function openPage(page: Page, title: string) {
  await page.getByRole("navigation", { name: "Console" }).getByRole("link", { name: title, exact: true }).click();
  await page.getByRole("heading", { level: 1, name: title }).waitFor();
}

describe("the console's Compat pages", () => {
  let ctx: BrowserContext;
  let page: Page;
  let errors: string[];
  const flags = () => createClient(FeatureFlagService, ownerTransport());

  before(async () => {
    ctx = await newContext(browser);
    page = await signIn(ctx, daemon.baseUrl, daemon.token);
    errors = watchConsole(page);
  });

  after(async () => {
    assert.deepEqual(errors, [], "no uncaught exception or CSP violation");
    await ctx.close();
  });

  it("says which feature flag to turn on while the API or its streaming is off", async () => {
    await openPage(page, "Models");
    const alert = page.getByRole("alert");
    await alert.waitFor();
    assert.match(await alert.innerText(), /failed_precondition/);
    assert.match(await alert.innerText(), /compat_api/);
    const hint = page.getByRole("note");
    assert.match(await hint.innerText(), /Turn on the compat_api feature flag on the Feature flags page/);
    await checkAccessibility(page, "models, API off");
    await screenshot(page, "compat-models-off");

    await flags().setFlag({ key: "compat_api", enabled: true });
    await openPage(page, "Chat playground");
    await page.getByLabel("Model").selectOption("palyra-echo");
    await page.getByLabel("Message").fill("hello");
    await page.getByRole("button", { name: "Send" }).click();
    await page.getByRole("note").getByText("compat_streaming", { exact: true }).waitFor();
    assert.match(await page.getByRole("alert").innerText(), /failed_precondition[\s\S]*compat_streaming feature flag/);
    assert.equal(await page.getByLabel("Message").inputValue(), "hello", "the unanswered message is back in the composer");
    await checkAccessibility(page, "playground, streaming off");
    await screenshot(page, "compat-playground-streaming-off");
    await flags().setFlag({ key: "compat_streaming", enabled: true });
  });

  it("lists the models with who serves them", async () => {
    await openPage(page, "Models");
    const table = page.getByRole("table", { name: /Models of the OpenAI-compatible API/ });
    const echo = table.getByRole("row", { name: /palyra-echo/ });
    await echo.waitFor();
    assert.match(await echo.innerText(), /palyra\s+served by palyrad/);
    assert.match(await table.getByRole("row", { name: /held-model/ }).innerText(), /held\s+provider held/);
    await checkAccessibility(page, "models");
    await screenshot(page, "compat-models");
  });

  it("streams the echo's answer chunk by chunk, then shows its usage", async () => {
    // From a model's row to the playground with that model picked.
    await page.getByRole("link", { name: "Chat with palyra-echo" }).click();
    await page.getByRole("heading", { level: 1, name: "Chat playground" }).waitFor();
    assert.equal(await page.getByLabel("Model").inputValue(), "palyra-echo");
    await page.getByLabel("System prompt").fill("Answer in kind.");
    const message = "the quick brown fox jumps over the lazy dog <b>twice</b>";
    // Every text the conversation showed, recorded as the page changes it.
    await page.evaluate(() => {
      const states: string[] = [];
      (window as unknown as { answerStates: string[] }).answerStates = states;
      const list = document.querySelector('[aria-label="Conversation"]')!;
      new MutationObserver(() => {
        const live = document.getElementById("live-answer");
        if (live) states.push(live.textContent ?? "");
      }).observe(list, { subtree: true, childList: true, characterData: true });
    });
    await page.getByLabel("Message").fill(message);
    await page.getByLabel("Message").press("Control+Enter");
    const answer = page.locator('[data-role="assistant"]').last();
    await answer.getByText(/Usage: 13 prompt \+ 10 completion = 23 tokens\./).waitFor();
    assert.equal(await answer.locator("p").first().textContent(), message, "the answer, as text: no HTML rendered");
    assert.equal(await answer.locator("b").count(), 0);
    assert.match(await answer.innerText(), /Finished: stop\./);
    const states = await page.evaluate(() => (window as unknown as { answerStates: string[] }).answerStates);
    const partial = states.filter((s) => s.length > 0 && s.length < message.length);
    assert.ok(partial.length > 0, `a partial answer was shown before the whole: ${JSON.stringify(states)}`);
    for (const s of partial) assert.ok(message.startsWith(s), `each partial state is a prefix of the answer: ${s}`);
    await checkAccessibility(page, "playground");
    await screenshot(page, "compat-playground");
  });

  it("stops a stream, which cancels the provider's request", async () => {
    await page.getByLabel("Model").selectOption("held-model");
    await page.getByLabel("Message").fill("hold on");
    await page.getByRole("button", { name: "Send" }).click();
    await page.locator("#live-answer").getByText("waiting").waitFor();
    assert.equal(held.closed, held.opened - 1, "the provider's stream is open");
    await checkAccessibility(page, "playground, answering");
    await screenshot(page, "compat-playground-answering");
    await page.getByRole("button", { name: "Stop" }).click();
    const answer = page.locator('[data-role="assistant"]').last();
    await answer.getByText(/^Stopped\./).waitFor();
    assert.equal(await answer.locator("p").first().textContent(), "waiting", "the partial answer stays");
    await until(() => held.closed === held.opened, "the provider's request to be cancelled");
    assert.ok(await page.getByRole("button", { name: "Send" }).isDisabled(), "nothing to send");
    assert.ok(await page.getByRole("button", { name: "Stop" }).isDisabled(), "nothing to stop");
  });

  it("shows the session token's usage after the chat", async () => {
    const tokenId = daemon.token.split("_")[1];
    await openPage(page, "Usage");
    const rows = page.getByRole("table", { name: /Usage per day/ });
    const echo = rows.getByRole("row", { name: /palyra-echo/ });
    await echo.waitFor();
    const today = new Date().toISOString().slice(0, 10);
    assert.match(await echo.innerText(), new RegExp(`${today}\\s+bootstrap\\s+${tokenId}\\s+palyra-echo\\s+palyra\\s+1\\s+13\\s+10\\s+23`));
    assert.match(await page.getByRole("region", { name: "Totals" }).innerText(), /Total tokens\s+23/);
    assert.match(await page.getByRole("region", { name: "Budgets and today's spend" }).innerText(), new RegExp(`${tokenId}\\s+23\\s+none`));
    // The token filter, from the URL.
    await page.getByRole("button", { name: "My token" }).click();
    await page.waitForURL((u) => u.searchParams.get("token") === tokenId);
    await echo.waitFor();
    // A malformed token id is refused by the form, not sent.
    await page.getByLabel("API token id").fill("not-a-token");
    assert.ok(await page.getByRole("button", { name: "Apply" }).isDisabled());
    await checkAccessibility(page, "usage");
    await screenshot(page, "compat-usage");
  });
});

describe("an operator's session", () => {
  it("chats but reads no usage", async () => {
    const { secret } = await createClient(AccessService, ownerTransport()).createToken({ label: "console operator", role: Role.OPERATOR });
    const ctx = await newContext(browser);
    const page = await signIn(ctx, daemon.baseUrl, secret);
    const nav = page.getByRole("navigation", { name: "Console" });
    await nav.getByRole("link", { name: "Chat playground" }).waitFor();
    assert.equal(await nav.getByRole("link", { name: "Usage", exact: true }).count(), 0, "no usage in the navigation");
    await page.goto(daemon.baseUrl + "/compat/usage");
    await page.getByRole("heading", { level: 1, name: "Usage" }).waitFor();
    assert.match(await page.getByRole("main").innerText(), /Needs the permission compat\.usage\.read/);
    await checkAccessibility(page, "usage, operator");
    await screenshot(page, "compat-usage-operator");
    await ctx.close();
  });
});
