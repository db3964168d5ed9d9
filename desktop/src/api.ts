// The console's view of palyrad: typed clients for every service, built on the
// generated code in gen/ts. A transport is supplied by the caller: connect-web in the
// browser, connect-node in tests.
import { createClient, type Client, type Transport } from "@connectrpc/connect";
import { AccessService } from "../../gen/ts/palyra/access/v1/access_pb.js";
import { AuditService } from "../../gen/ts/palyra/access/v1/audit_pb.js";
import { FeatureFlagService } from "../../gen/ts/palyra/access/v1/flags_pb.js";
import { CompatService } from "../../gen/ts/palyra/compat/v1/compat_pb.js";
import { StatusService } from "../../gen/ts/palyra/controlplane/v1/status_pb.js";
import { NodeService } from "../../gen/ts/palyra/node/v1/node_pb.js";

/** The clients of palyrad's services. */
export interface PalyraClients {
  status: Client<typeof StatusService>;
  node: Client<typeof NodeService>;
  access: Client<typeof AccessService>;
  featureFlag: Client<typeof FeatureFlagService>;
  audit: Client<typeof AuditService>;
  compat: Client<typeof CompatService>;
}

/** Returns a client for each of palyrad's services over one transport. */
export function palyraClients(transport: Transport): PalyraClients {
  return {
    status: createClient(StatusService, transport),
    node: createClient(NodeService, transport),
    access: createClient(AccessService, transport),
    featureFlag: createClient(FeatureFlagService, transport),
    audit: createClient(AuditService, transport),
    compat: createClient(CompatService, transport),
  };
}
