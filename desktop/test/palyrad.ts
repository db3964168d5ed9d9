// Starts bin/palyrad (built by `make build`) for the tests: on its embedded PostgreSQL in
// a fresh data directory, on a random loopback port, with its log as JSON lines; a
// transport to it with an API token; and the tests' bounded wait.
import { spawn, type ChildProcess } from "node:child_process";
import { chmodSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import assert from "node:assert/strict";
import type { Interceptor, Transport } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";

const palyrad = process.env.PALYRAD ?? new URL("../../bin/palyrad", import.meta.url).pathname;

/** A running palyrad. */
export interface Palyrad {
  /** baseUrl is "https://127.0.0.1:<port>". */
  baseUrl: string;
  /** ca is the PEM of its certificate authority. */
  ca: Buffer;
  /** token is the owner's API token from the bootstrap file. */
  token: string;
  /** dataDir is its data directory; its embedded PostgreSQL listens in dataDir/pg. */
  dataDir: string;
  /** stop stops it (SIGTERM, which must end it cleanly) and removes its data. */
  stop(): Promise<void>;
}

/** Starts palyrad with extra flags and resolves once it logs "palyrad ready". */
export async function startPalyrad(replicaId: string, ...args: string[]): Promise<Palyrad> {
  // The embedded cluster runs as the postgres user when tests run as root: the data
  // directory must be reachable by it.
  const dataDir = mkdtempSync(join(tmpdir(), "palyra-ts-"));
  chmodSync(dataDir, 0o755);
  const daemon: ChildProcess = spawn(palyrad, ["--data-dir", dataDir, "--listen", "127.0.0.1:0", "--log-format", "json", "--replica-id", replicaId, ...args], {
    stdio: ["ignore", "inherit", "pipe"],
  });
  const listen = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("palyrad did not become ready within 60 s")), 60_000);
    daemon.once("exit", (code) => reject(new Error(`palyrad exited early with code ${code}`)));
    createInterface({ input: daemon.stderr! }).on("line", (line) => {
      const entry = JSON.parse(line) as { msg?: string; listen?: string };
      if (entry.msg === "palyrad ready" && entry.listen) {
        clearTimeout(timer);
        resolve(entry.listen);
      }
    });
  });
  return {
    baseUrl: `https://${listen}`,
    ca: readFileSync(join(dataDir, "ca.pem")),
    token: readFileSync(join(dataDir, "bootstrap-token"), "utf8").trim(),
    dataDir,
    async stop() {
      if (daemon.exitCode === null) {
        const exited = new Promise<number | null>((resolve) => daemon.once("exit", (code) => resolve(code)));
        daemon.kill("SIGTERM");
        assert.equal(await exited, 0, "palyrad stops cleanly on SIGTERM");
      }
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** WAIT bounds every wait for something that happens by itself. */
export const WAIT = 60_000;

/** bearer is a connect-node transport to daemon with an API token. */
export function bearer(daemon: Palyrad, token: string): Transport {
  const auth: Interceptor = (next) => (req) => {
    req.header.set("Authorization", `Bearer ${token}`);
    return next(req);
  };
  return createConnectTransport({ baseUrl: daemon.baseUrl, httpVersion: "2", nodeOptions: { ca: daemon.ca }, interceptors: [auth] });
}

/** eventually retries check until it stops throwing, for at most WAIT. */
export async function eventually<T>(what: string, check: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + WAIT;
  for (;;) {
    try {
      return await check();
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`${what}: not within ${WAIT / 1000} s: ${String(err)}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}
