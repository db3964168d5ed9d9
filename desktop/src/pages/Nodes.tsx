// Nodes: the inventory with live presence (read again every 3 s), filtered by presence
// and capability; and a node's detail (/nodes?node=<id>): what it is, its certificates,
// its capabilities with their input schemas, invoking one from a form generated from
// its schema (a browser profile chosen from the list) with the dispatch's output
// streaming live, and revoking the device or rotating its certificate, each after a
// confirmation.
import { useId, useMemo, useState, type FormEvent } from "react";
import { Link, useSearchParams } from "react-router";
import { useMutation, useQuery } from "@connectrpc/connect-query";
import { useQueryClient } from "@tanstack/react-query";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { NodeInventoryService, Presence, type Node } from "../../../gen/ts/palyra/controlplane/v1/nodes_pb.js";
import { DeviceService } from "../../../gen/ts/palyra/controlplane/v1/devices_pb.js";
import { DispatchService } from "../../../gen/ts/palyra/controlplane/v1/dispatch_pb.js";
import type { Capability } from "../../../gen/ts/palyra/node/v1/node_pb.js";
import { usePermission } from "../session.js";
import { Card, Page } from "../components/Page.js";
import { ErrorPanel } from "../components/ErrorPanel.js";
import { RelativeTime } from "../components/RelativeTime.js";
import { Badge, type Tone } from "../components/Badge.js";
import { usePagedList } from "../components/paging.js";
import { SchemaForm } from "../components/SchemaForm.js";
import { DispatchLive } from "../components/DispatchLive.js";
import { Confirm } from "../components/Dialog.js";
import { ListBody, Loading, Needs, TableHead } from "../components/ListBody.js";
import { prettyJSON } from "../components/prettyJSON.js";
import styles from "./Nodes.module.css";
import { Labels } from "../components/Labels.js";
import { isBrowser, useProfileChoices } from "./browser/profiles.js";

/** LIVE is how often presence is read again. */
const LIVE = 3_000;

export default function Nodes() {
  const [params] = useSearchParams();
  const id = params.get("node");
  return id ? <NodeDetail id={id} /> : <NodeList />;
}

const presenceTone: Record<Presence, Tone> = {
  [Presence.UNSPECIFIED]: "neutral",
  [Presence.ONLINE]: "ok",
  [Presence.STALE]: "warn",
  [Presence.OFFLINE]: "neutral",
};

function presenceName(p: Presence): string {
  return (Presence[p] ?? "unknown").toLowerCase();
}

function PresenceBadge({ node }: { node: Node }) {
  return (
    <span className={styles.badges}>
      <Badge tone={presenceTone[node.presence]}>{presenceName(node.presence)}</Badge>
      {node.revoked ? <Badge tone="danger">revoked</Badge> : null}
    </span>
  );
}

function NodeList() {
  const id = useId();
  const [presence, setPresence] = useState(Presence.UNSPECIFIED);
  const [includeRevoked, setIncludeRevoked] = useState(false);
  const [capability, setCapability] = useState("");
  const [applied, setApplied] = useState("");
  const list = usePagedList(NodeInventoryService.method.listNodes, { presence, includeRevoked, capability: applied, pageSize: 50 }, (p) => p.nodes, { refetchInterval: LIVE });
  function apply(e: FormEvent) {
    e.preventDefault();
    setApplied(capability.trim());
  }
  return (
    <Page title="Nodes" description={<>Paired nodes and whether they are attached, refreshed every 3 s. Pair a new one on the <Link to="/pairing">Pairing</Link> page.</>}>
      <Card title="Inventory">
        <form className={styles.filters} onSubmit={apply} aria-label="Filter nodes">
          <div className="field">
            <label htmlFor={`${id}-presence`}>Presence</label>
            <select id={`${id}-presence`} className={styles.input} value={presence} onChange={(e) => setPresence(Number(e.target.value) as Presence)}>
              <option value={Presence.UNSPECIFIED}>any</option>
              <option value={Presence.ONLINE}>online</option>
              <option value={Presence.STALE}>stale</option>
              <option value={Presence.OFFLINE}>offline</option>
            </select>
          </div>
          <div className="field">
            <label htmlFor={`${id}-cap`}>Capability</label>
            <input id={`${id}-cap`} className={styles.input} value={capability} onChange={(e) => setCapability(e.target.value)} placeholder="e.g. shell.execute" />
          </div>
          <label className={styles.check}>
            <input type="checkbox" checked={includeRevoked} onChange={(e) => setIncludeRevoked(e.target.checked)} /> Include revoked
          </label>
          <button type="submit" className="button">
            Filter
          </button>
        </form>
        <ListBody list={list} noun="nodes">
          {(rows) => (
            <table className="table">
              <caption className="visually-hidden">Nodes, newest first</caption>
              <TableHead columns={["Name", "Presence", "Platform", "Last seen", "Capabilities", "Certificate expires"]} />
              <tbody>
                {rows.map((n) => (
                  <tr key={n.id}>
                    <td>
                      <Link to={`/nodes?node=${n.id}`}>{n.name}</Link>
                      <div className="field-hint">
                        <code>{n.id}</code>
                      </div>
                    </td>
                    <td>
                      <PresenceBadge node={n} />
                      {n.attachedReplica ? <span className="field-hint"> on {n.attachedReplica}</span> : null}
                    </td>
                    <td>
                      {n.platform} {n.agentVersion ? <span className="field-hint">agent {n.agentVersion}</span> : null}
                    </td>
                    <td>
                      <RelativeTime value={n.lastSeenTime} />
                    </td>
                    <td>{n.capabilities.filter((c) => c.available).map((c) => c.name).join(", ") || "—"}</td>
                    <td>
                      <RelativeTime value={n.certificateExpireTime} never="none valid" />
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </ListBody>
      </Card>
    </Page>
  );
}

function NodeDetail({ id }: { id: string }) {
  const node = useQuery(NodeInventoryService.method.getNode, { id }, { refetchInterval: LIVE });
  const n = node.data?.node;
  return (
    <Page
      title={n ? `Node ${n.name}` : "Node"}
      description={
        <>
          <Link to="/nodes">All nodes</Link> · <code>{id}</code>
        </>
      }
    >
      {node.error ? <ErrorPanel error={node.error} title="The node could not be read" /> : null}
      {!n && !node.error ? <Loading /> : null}
      {n ? (
        <>
          <div className={styles.grid}>
            <Card title="Node" aside={<PresenceBadge node={n} />}>
              <dl className={styles.facts}>
                <div>
                  <dt>Presence</dt>
                  <dd>
                    <span role="status" aria-label="Presence">{presenceName(n.presence)}{n.revoked ? ", revoked" : ""}</span>
                    {n.attachedReplica ? <> on replica <code>{n.attachedReplica}</code></> : null}, last seen <RelativeTime value={n.lastSeenTime} />
                  </dd>
                </div>
                <div>
                  <dt>Platform</dt>
                  <dd>
                    {n.platform}, agent {n.agentVersion}, protocol {n.protocolVersion}
                  </dd>
                </div>
                <div>
                  <dt>Paired</dt>
                  <dd>
                    <RelativeTime value={n.createTime} />
                  </dd>
                </div>
                <div>
                  <dt>Labels</dt>
                  <dd>
                    <Labels labels={n.labels} none="none" />
                  </dd>
                </div>
                <div>
                  <dt>Reported labels</dt>
                  <dd>
                    <Labels labels={n.reportedLabels} none="none" />
                  </dd>
                </div>
              </dl>
            </Card>
            <DeviceCard id={id} revoked={n.revoked} />
          </div>
          <CapabilitiesCard node={n} />
          <InvokeCard node={n} />
        </>
      ) : null}
    </Page>
  );
}

function DeviceCard({ id, revoked }: { id: string; revoked: boolean }) {
  const device = useQuery(DeviceService.method.getDevice, { id }, { refetchInterval: 15_000 });
  const mayRevoke = usePermission("nodes.revoke");
  const [confirm, setConfirm] = useState<"none" | "revoke" | "rotate">("none");
  const [grace, setGrace] = useState(graces[0][1]);
  const graceId = useId();
  const queryClient = useQueryClient();
  const revoke = useMutation(DeviceService.method.revokeDevice, { onSuccess: () => queryClient.invalidateQueries() });
  const rotate = useMutation(DeviceService.method.rotateDeviceCertificate, { onSuccess: () => queryClient.invalidateQueries() });
  const d = device.data?.device;
  return (
    <Card title="Identity">
      {device.error ? <ErrorPanel error={device.error} /> : null}
      {d ? (
        <>
          {d.revokeTime ? (
            <p className={styles.revoked}>
              Revoked <RelativeTime value={d.revokeTime} />: {d.revokeReason}
            </p>
          ) : null}
          {d.rotateTime ? (
            <p className="field-hint">
              Rotation asked for <RelativeTime value={d.rotateTime} />.
            </p>
          ) : null}
          <table className="table">
            <caption className="visually-hidden">Certificates, newest first</caption>
            <TableHead columns={["Certificate", "Valid until", "Revoked"]} />
            <tbody>
              {d.certificates.map((c) => (
                <tr key={c.fingerprint}>
                  <td>
                    <code className={styles.fingerprint} title={c.fingerprint}>
                      {c.fingerprint.slice(0, 23)}…
                    </code>
                  </td>
                  <td>
                    <RelativeTime value={c.notAfter} />
                  </td>
                  <td>{c.revokeTime ? <><RelativeTime value={c.revokeTime} />{c.revokeReason ? `: ${c.revokeReason}` : ""}</> : "—"}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </>
      ) : null}
      {!mayRevoke ? (
        <Needs permission="nodes.revoke" what="Revoking and rotating need" />
      ) : revoked ? null : (
        <div className={styles.row}>
          <button type="button" className="button" onClick={() => setConfirm("rotate")}>
            Rotate certificate…
          </button>
          <button type="button" className="button button-danger" onClick={() => setConfirm("revoke")}>
            Revoke device…
          </button>
        </div>
      )}
      <Confirm
        title="Revoke this device?"
        open={confirm === "revoke"}
        onClose={() => setConfirm("none")}
        action="Revoke device"
        reason={{ label: "Reason (recorded)", required: true }}
        run={(reason) => revoke.mutateAsync({ id, reason })}
      >
        <p>
          Revoking ends the node's connections on every replica within a second and refuses its certificates from then on. It cannot pair again under this id unless
          an approver reinstates it.
        </p>
      </Confirm>
      <Confirm title="Rotate the certificate?" open={confirm === "rotate"} onClose={() => setConfirm("none")} action="Rotate certificate" run={() => rotate.mutateAsync({ id, grace: durationFromMs(grace) })}>
        <p>The node's current certificates stop working after the grace period: it must renew, with a new key, before then.</p>
        <div className="field">
          <label htmlFor={graceId}>Grace period</label>
          <select id={graceId} className={styles.input} value={grace} onChange={(e) => setGrace(Number(e.target.value))}>
            {graces.map(([name, ms]) => (
              <option key={ms} value={ms}>
                {name}
              </option>
            ))}
          </select>
        </div>
      </Confirm>
    </Card>
  );
}

const graces: [string, number][] = [
  ["1 hour", 3600_000],
  ["10 minutes", 600_000],
  ["1 day", 86_400_000],
  ["7 days", 7 * 86_400_000],
  ["none: at once", 0],
];

function CapabilitiesCard({ node }: { node: Node }) {
  return (
    <Card title="Capabilities">
      {node.capabilities.length === 0 ? <p className="field-hint">The node has reported none{node.lastSeenTime ? "" : ": it never attached"}.</p> : null}
      <ul className={styles.capabilities}>
        {node.capabilities.map((c) => (
          <li key={c.name}>
            <div className={styles.row}>
              <code className={styles.capName}>{c.name}</code>
              <Badge tone={c.available ? "ok" : "neutral"}>{c.available ? "available" : "not configured"}</Badge>
            </div>
            <p className={styles.capDescription}>{c.description}</p>
            {c.models.length > 0 ? <p className="field-hint">Models: {c.models.join(", ")}</p> : null}
            {c.inputSchema ? (
              <details>
                <summary>Input schema</summary>
                <pre className={styles.schema} tabIndex={0}>
                  {prettyJSON(c.inputSchema)}
                </pre>
              </details>
            ) : (
              <p className="field-hint">No input schema.</p>
            )}
          </li>
        ))}
      </ul>
    </Card>
  );
}

/** useInputChoices are the values the invoke form offers for a capability's input
 * fields: a browser.* capability's profile is chosen among the browser profiles, when
 * the principal may list them. */
function useInputChoices(capability: string): Record<string, string[]> {
  const { profiles } = useProfileChoices(isBrowser(capability));
  return useMemo((): Record<string, string[]> => (profiles ? { profile: profiles.map((p) => p.spec?.name ?? "") } : {}), [profiles]);
}

function InvokeCard({ node }: { node: Node }) {
  const may = usePermission("nodes.dispatch");
  const id = useId();
  const available = node.capabilities.filter((c) => c.available);
  const [name, setName] = useState(available[0]?.name ?? "");
  const [input, setInput] = useState<string | undefined>("{}");
  const [timeout, setTimeoutSeconds] = useState("60");
  const [dispatchId, setDispatchId] = useState<string>();
  const create = useMutation(DispatchService.method.createDispatch);
  // The first available capability until one is chosen (the node may report them late).
  const capability: Capability | undefined = available.find((c) => c.name === name) ?? available[0];
  const choices = useInputChoices(capability?.name ?? "");
  const seconds = Number(timeout);
  const timeoutOK = Number.isInteger(seconds) && seconds >= 1 && seconds <= 86_400;

  async function submit(e: FormEvent) {
    e.preventDefault();
    if (input === undefined || !capability || !timeoutOK) return;
    const res = await create.mutateAsync({ nodeId: node.id, capability: capability.name, inputJson: input, timeout: durationFromMs(seconds * 1000) }).catch(() => undefined);
    if (res?.dispatch) setDispatchId(res.dispatch.id);
  }

  if (!may) return <Card title="Invoke"><Needs permission="nodes.dispatch" what="Invoking needs" /></Card>;
  return (
    <Card title="Invoke">
      {available.length === 0 ? (
        <p className="field-hint">The node offers no capability it can run now.</p>
      ) : (
        <form className={styles.invoke} onSubmit={submit} aria-label="Invoke a capability">
          <div className="field">
            <label htmlFor={`${id}-cap`}>Capability</label>
            <select id={`${id}-cap`} className={styles.input} value={capability?.name} onChange={(e) => setName(e.target.value)}>
              {available.map((c) => (
                <option key={c.name} value={c.name}>
                  {c.name}
                </option>
              ))}
            </select>
            {capability ? <p className="field-hint">{capability.description}</p> : null}
          </div>
          {capability ? <SchemaForm key={capability.name} schema={capability.inputSchema} onChange={setInput} choices={choices} /> : null}
          <div className="field">
            <label htmlFor={`${id}-timeout`}>Timeout (seconds)</label>
            <input id={`${id}-timeout`} className={styles.input} type="number" min={1} max={86400} step={1} value={timeout} onChange={(e) => setTimeoutSeconds(e.target.value)} aria-invalid={!timeoutOK} />
          </div>
          {create.error ? <ErrorPanel error={create.error} title="The dispatch was not created" /> : null}
          <div className={styles.row}>
            <button type="submit" className="button button-primary" disabled={input === undefined || !timeoutOK || create.isPending || node.revoked} aria-busy={create.isPending}>
              {create.isPending ? "Sending…" : `Run ${capability?.name ?? ""}`}
            </button>
            {node.presence !== Presence.ONLINE && !node.revoked ? <span className="field-hint">The node is not online: the dispatch waits for it until its deadline.</span> : null}
          </div>
        </form>
      )}
      {dispatchId ? <DispatchLive key={dispatchId} id={dispatchId} /> : null}
    </Card>
  );
}
