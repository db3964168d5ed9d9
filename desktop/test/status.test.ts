// Proves the generated TypeScript client against a real palyrad: the test starts
// bin/palyrad (built by `make build`) on its embedded PostgreSQL in a fresh data
// directory and calls it with connect-node over TLS, with the Connect and the gRPC
// protocols.
import { X509Certificate } from "node:crypto";
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { Code, ConnectError, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { DatabaseState } from "../../gen/ts/palyra/controlplane/v1/status_pb.js";
import { palyraClients } from "../src/api.js";
import { startPalyrad, type Palyrad } from "./palyrad.js";

let daemon: Palyrad;
let baseUrl: string;
let ca: Buffer;
let token: string;

/** Sends the owner's API token (from the bootstrap file) with every call. */
const bearer: Interceptor = (next) => (req) => {
  req.header.set("Authorization", `Bearer ${token}`);
  return next(req);
};

/** The "sha256:<hex>" fingerprint of a PEM certificate, as palyrad reports it. */
function fingerprint(pem: Buffer): string {
  return "sha256:" + new X509Certificate(pem).fingerprint256.replaceAll(":", "").toLowerCase();
}

before(async () => {
  daemon = await startPalyrad("ts-test");
  ({ baseUrl, ca, token } = daemon);
});

after(async () => {
  await daemon.stop();
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
