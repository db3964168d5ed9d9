// Proves the generated TypeScript client against a real palyrad: the test starts
// bin/palyrad (built by `make build`) on its embedded PostgreSQL in a fresh data
// directory and calls it with connect-node over TLS, with the Connect and the gRPC
// protocols.
import { spawn, type ChildProcess } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { chmodSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { Code, ConnectError, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { DatabaseState } from "../../gen/ts/palyra/controlplane/v1/status_pb.js";
import { palyraClients } from "../src/api.js";

const palyrad = process.env.PALYRAD ?? new URL("../../bin/palyrad", import.meta.url).pathname;

let daemon: ChildProcess;
let dataDir: string;
let baseUrl: string;
let ca: Buffer;
let token: string;

/** Sends the owner's API token (from the bootstrap file) with every call. */
const bearer: Interceptor = (next) => (req) => {
  req.header.set("Authorization", `Bearer ${token}`);
  return next(req);
};

/** Starts palyrad and resolves with its listen address once it logs "palyrad ready". */
function startPalyrad(): Promise<string> {
  // The embedded cluster runs as the postgres user when tests run as root: the data
  // directory must be reachable by it.
  dataDir = mkdtempSync(join(tmpdir(), "palyra-ts-"));
  chmodSync(dataDir, 0o755);
  daemon = spawn(palyrad, ["--data-dir", dataDir, "--listen", "127.0.0.1:0", "--log-format", "json", "--replica-id", "ts-test"], {
    stdio: ["ignore", "inherit", "pipe"],
  });
  return new Promise((resolve, reject) => {
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
}

/** The "sha256:<hex>" fingerprint of a PEM certificate, as palyrad reports it. */
function fingerprint(pem: Buffer): string {
  return "sha256:" + new X509Certificate(pem).fingerprint256.replaceAll(":", "").toLowerCase();
}

before(async () => {
  baseUrl = `https://${await startPalyrad()}`;
  ca = readFileSync(join(dataDir, "ca.pem"));
  token = readFileSync(join(dataDir, "bootstrap-token"), "utf8").trim();
});

after(async () => {
  if (daemon.exitCode === null) {
    const exited = new Promise<number | null>((resolve) => daemon.once("exit", (code) => resolve(code)));
    daemon.kill("SIGTERM");
    assert.equal(await exited, 0, "palyrad stops cleanly on SIGTERM");
  }
  rmSync(dataDir, { recursive: true, force: true });
});

const transports: Record<string, (interceptors?: Interceptor[]) => Transport> = {
  connect: (interceptors = [bearer]) => createConnectTransport({ baseUrl, httpVersion: "2", nodeOptions: { ca }, interceptors }),
  grpc: (interceptors = [bearer]) => createGrpcTransport({ baseUrl, nodeOptions: { ca }, interceptors }),
};

for (const [protocol, transport] of Object.entries(transports)) {
  describe(`palyrad over ${protocol}`, () => {
    it("answers GetStatus", async () => {
      const status = await palyraClients(transport()).status.getStatus({});
      assert.equal(status.replicaId, "ts-test");
      assert.equal(status.listenAddress, new URL(baseUrl).host);
      assert.equal(status.database?.state, DatabaseState.AVAILABLE);
      assert.equal(status.database?.embedded, true);
      assert.ok((status.database?.schemaVersion ?? 0n) >= 1n, "schema version is a bigint >= 1");
      assert.equal(status.certificateAuthority?.fingerprint, fingerprint(ca));
    });

    it("refuses a call without a token with Unauthenticated", async () => {
      await assert.rejects(palyraClients(transport([])).status.getStatus({}), (err: unknown) => {
        assert.ok(err instanceof ConnectError);
        assert.equal(err.code, Code.Unauthenticated);
        return true;
      });
    });

    it("says who the caller is", async () => {
      const { access } = palyraClients(transport());
      const { principal } = await access.whoAmI({});
      assert.equal(principal?.user, "owner");
      assert.ok(principal?.permissions.includes("tokens.manage"));
    });

    it("refuses an invalid request with InvalidArgument", async () => {
      const { access } = palyraClients(transport());
      await assert.rejects(access.listPermissions({ prefix: "NODES!" }), (err: unknown) => {
        assert.ok(err instanceof ConnectError);
        assert.equal(err.code, Code.InvalidArgument);
        return true;
      });
    });
  });
}
