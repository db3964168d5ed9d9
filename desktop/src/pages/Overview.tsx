// Overview: how this palyrad stands (version, replicas, database, CA), the nodes by
// presence, pending pairing approvals and recent dispatches and failures, refreshed
// every 10 seconds. Each card needs its permission and says so when it is missing.
import type { ReactNode } from "react";
import { useQuery } from "@connectrpc/connect-query";
import { durationMs, type Duration } from "@bufbuild/protobuf/wkt";
import { StatusService, DatabaseState } from "../../../gen/ts/palyra/controlplane/v1/status_pb.js";
import { MasterKeyService, type ReplicaKeys } from "../../../gen/ts/palyra/controlplane/v1/masterkey_pb.js";
import { NodeInventoryService, Presence } from "../../../gen/ts/palyra/controlplane/v1/nodes_pb.js";
import { PairingService } from "../../../gen/ts/palyra/controlplane/v1/pairing_pb.js";
import { DispatchService, DispatchState, type Dispatch } from "../../../gen/ts/palyra/controlplane/v1/dispatch_pb.js";
import { PairingState } from "../../../gen/ts/palyra/node/v1/node_pb.js";
import { usePermission } from "../session.js";
import { Card, Page } from "../components/Page.js";
import { ErrorPanel } from "../components/ErrorPanel.js";
import { RelativeTime } from "../components/RelativeTime.js";
import { Badge, type Tone } from "../components/Badge.js";
import { LoadMore, usePagedList } from "../components/paging.js";
import { DispatchStateBadge } from "../components/DispatchStateBadge.js";
import styles from "./Overview.module.css";

const REFRESH = 10_000;
/** COUNT_LIMIT is the most rows a count reads; beyond it the count says "500+". */
const COUNT_LIMIT = 500;

export default function Overview() {
  return (
    <Page title="Overview" description="This palyrad, its nodes and their work.">
      <div className={styles.grid}>
        <StatusCard />
        <NodesCard />
        <PendingCard />
      </div>
      <DispatchesCard />
    </Page>
  );
}

/** Needs says what a card needs when the principal lacks it. */
function Needs({ permission }: { permission: string }) {
  return (
    <p className="field-hint">
      Needs the permission <code>{permission}</code>.
    </p>
  );
}

function Loading() {
  return <p role="status" className="field-hint">Loading…</p>;
}

function Facts({ rows }: { rows: [string, ReactNode][] }) {
  return (
    <dl className={styles.facts}>
      {rows.map(([k, v]) => (
        <div key={k}>
          <dt>{k}</dt>
          <dd>{v}</dd>
        </div>
      ))}
    </dl>
  );
}

function formatDuration(d: Duration | undefined): string {
  if (!d) return "unknown";
  const ms = durationMs(d);
  return ms < 1 ? `${(ms * 1000).toFixed(0)} µs` : `${ms.toFixed(1)} ms`;
}

/** Replicas lists the replicas palyrad knows of (GetMasterKeyStatus: those running or
 * seen in the last day): the live ones first, then the others, marked. */
function Replicas({ replicas, self }: { replicas: ReplicaKeys[]; self: string }) {
  const live = replicas.filter((r) => r.live);
  const gone = replicas.filter((r) => !r.live);
  const item = (r: ReplicaKeys) => (
    <li key={r.replicaId}>
      <code>{r.replicaId}</code> on {r.hostname || "an unknown host"}, <code>{r.version || "unknown version"}</code>, seen{" "}
      <RelativeTime value={r.lastSeenTime} />
      {r.replicaId === self ? <> <Badge tone="neutral">this one</Badge></> : null}
      {r.live ? null : <> <Badge tone="warn">not live</Badge></>}
    </li>
  );
  return (
    <>
      {live.length} live{gone.length > 0 ? `, ${gone.length} seen in the last day` : ""}
      <ul className={styles.list} aria-label="Replicas">
        {live.map(item)}
        {gone.map(item)}
      </ul>
    </>
  );
}

function StatusCard() {
  const may = usePermission("status.read");
  const status = useQuery(StatusService.method.getStatus, {}, { enabled: may, refetchInterval: REFRESH });
  const keys = useQuery(MasterKeyService.method.getMasterKeyStatus, {}, { enabled: may, refetchInterval: REFRESH });
  if (!may) return <Card title="Status"><Needs permission="status.read" /></Card>;
  if (status.error) return <Card title="Status"><ErrorPanel error={status.error} /></Card>;
  const s = status.data;
  if (!s) return <Card title="Status"><Loading /></Card>;
  const db = s.database;
  const ca = s.certificateAuthority;
  const dbTone: Tone = db?.state === DatabaseState.AVAILABLE ? "ok" : "danger";
  return (
    <Card title="Status">
      <Facts
        rows={[
          ["Version", <code>{s.version}</code>],
          ["Replica", <><code>{s.replicaId}</code> on {s.hostname}, up since <RelativeTime value={s.startTime} /></>],
          [
            "Replicas seen",
            keys.error ? <ErrorPanel error={keys.error} /> : keys.data ? <Replicas replicas={keys.data.replicas} self={s.replicaId} /> : <Loading />,
          ],
          [
            "Database",
            <>
              <Badge tone={dbTone}>{db?.state === DatabaseState.AVAILABLE ? "available" : "unavailable"}</Badge>{" "}
              {db?.embedded ? "embedded" : "external"} PostgreSQL {db?.serverVersion}, schema {String(db?.schemaVersion ?? "?")}, ping {formatDuration(db?.pingLatency)}
              {db?.error ? <span className={styles.error}> {db.error}</span> : null}
            </>,
          ],
          ["CA fingerprint", <code className={styles.fingerprint}>{ca?.fingerprint}</code>],
          ["CA expires", <RelativeTime value={ca?.notAfter} />],
        ]}
      />
    </Card>
  );
}

function NodeCount({ presence, label, tone }: { presence: Presence; label: string; tone: Tone }) {
  const q = useQuery(NodeInventoryService.method.listNodes, { presence, pageSize: COUNT_LIMIT }, { refetchInterval: REFRESH });
  const n = q.data ? `${q.data.nodes.length}${q.data.nextPageToken ? "+" : ""}` : "…";
  return (
    <div className={styles.stat}>
      <span className={styles.statValue}>{q.error ? "?" : n}</span>
      <Badge tone={tone}>{label}</Badge>
    </div>
  );
}

function NodesCard() {
  if (!usePermission("nodes.read")) return <Card title="Nodes"><Needs permission="nodes.read" /></Card>;
  return (
    <Card title="Nodes">
      <div className={styles.stats}>
        <NodeCount presence={Presence.ONLINE} label="online" tone="ok" />
        <NodeCount presence={Presence.STALE} label="stale" tone="warn" />
        <NodeCount presence={Presence.OFFLINE} label="offline" tone="neutral" />
      </div>
    </Card>
  );
}

function PendingCard() {
  const may = usePermission("nodes.read");
  const list = usePagedList(
    PairingService.method.listPairingRequests,
    { state: PairingState.PENDING_APPROVAL, pageSize: 5 },
    (page) => page.pairingRequests,
    { enabled: may, refetchInterval: REFRESH },
  );
  if (!may) return <Card title="Pending approvals"><Needs permission="nodes.read" /></Card>;
  if (list.error) return <Card title="Pending approvals"><ErrorPanel error={list.error} /></Card>;
  if (!list.data) return <Card title="Pending approvals"><Loading /></Card>;
  return (
    <Card title="Pending approvals">
      {list.rows.length > 0 ? (
        <ul className={styles.list}>
          {list.rows.map((r) => (
            <li key={r.id}>
              <strong>{r.deviceName}</strong> ({r.platform}) from <code>{r.sourceAddress}</code>, <RelativeTime value={r.createTime} />
              {r.previousDeviceId ? <> <Badge tone="warn">replaces a device</Badge></> : null}
            </li>
          ))}
        </ul>
      ) : null}
      <LoadMore list={list} noun="pending requests" />
    </Card>
  );
}

function DispatchTable({ rows, caption }: { rows: Dispatch[]; caption: string }) {
  if (rows.length === 0) return <p className="field-hint">None.</p>;
  return (
    <table className="table">
      <caption className="visually-hidden">{caption}</caption>
      <thead>
        <tr>
          <th scope="col">Capability</th>
          <th scope="col">Node</th>
          <th scope="col">State</th>
          <th scope="col">Created</th>
          <th scope="col">By</th>
        </tr>
      </thead>
      <tbody>
        {rows.map((d) => (
          <tr key={d.id}>
            <td><code>{d.capability}</code></td>
            <td><code>{d.nodeId}</code></td>
            <td>
              <DispatchStateBadge state={d.state} />
              {d.error ? <span className={styles.error}> {d.error}</span> : null}
            </td>
            <td><RelativeTime value={d.createTime} /></td>
            <td>{d.createdBy}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function DispatchesCard() {
  const may = usePermission("nodes.dispatch");
  const recent = useQuery(DispatchService.method.listDispatches, { pageSize: 10 }, { enabled: may, refetchInterval: REFRESH });
  const failed = useQuery(DispatchService.method.listDispatches, { state: DispatchState.FAILED, pageSize: 5 }, { enabled: may, refetchInterval: REFRESH });
  const timedOut = useQuery(DispatchService.method.listDispatches, { state: DispatchState.TIMED_OUT, pageSize: 5 }, { enabled: may, refetchInterval: REFRESH });
  if (!may) return <Card title="Dispatches"><Needs permission="nodes.dispatch" /></Card>;
  const error = recent.error ?? failed.error ?? timedOut.error;
  const failures = [...(failed.data?.dispatches ?? []), ...(timedOut.data?.dispatches ?? [])]
    .sort((a, b) => Number((b.createTime?.seconds ?? 0n) - (a.createTime?.seconds ?? 0n)))
    .slice(0, 5);
  return (
    <div className={styles.grid}>
      <Card title="Recent dispatches">
        {error ? <ErrorPanel error={error} /> : recent.data ? <DispatchTable rows={recent.data.dispatches} caption="The ten newest dispatches" /> : <Loading />}
      </Card>
      <Card title="Recent failures">
        {error ? <ErrorPanel error={error} /> : failed.data && timedOut.data ? <DispatchTable rows={failures} caption="The newest failed or timed-out dispatches" /> : <Loading />}
      </Card>
    </div>
  );
}
