// Pairing: create a PIN or QR pairing code (shown once, with the `palyra node run`
// command to copy and, for QR, the code drawn as an image), the pending requests,
// live (WatchPairingRequests), each with what is unusual about it; approve with the fingerprint the
// node printed, typed or pasted and compared (the approval also carries it, so palyrad
// compares it again), or reject with a reason. Below: every request, by state, and the
// pairing codes.
import { useEffect, useId, useMemo, useState, type FormEvent } from "react";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectQueryKey, useMutation, useQuery, useTransport } from "@connectrpc/connect-query";
import { useQueryClient } from "@tanstack/react-query";
import { durationFromMs, timestampDate } from "@bufbuild/protobuf/wkt";
import QRCode from "qrcode";
import { Link } from "react-router";
import {
  PairingCodeState,
  PairingMethod,
  PairingService,
  type CreatePairingCodeResponse,
  type PairingCode,
  type PairingRequest,
} from "../../../gen/ts/palyra/controlplane/v1/pairing_pb.js";
import { DeviceClaim, PairingState } from "../../../gen/ts/palyra/node/v1/node_pb.js";
import { usePermission } from "../session.js";
import { Card, Page } from "../components/Page.js";
import { ErrorPanel } from "../components/ErrorPanel.js";
import { RelativeTime } from "../components/RelativeTime.js";
import { Badge, type Tone } from "../components/Badge.js";
import { CopyButton } from "../components/CopyButton.js";
import { LoadMore, usePagedList } from "../components/paging.js";
import { Confirm } from "../components/Dialog.js";
import { ListBody, Loading, Needs, TableHead } from "../components/ListBody.js";
import { checkFingerprint, groupHex, warningsFor, type Warning } from "./pairingChecks.js";
import styles from "./Pairing.module.css";
import { count } from "../components/plural.js";

/** FALLBACK is how often the request lists are read again while the stream of changes
 * is down; SAFETY, while it is up (it is the authority on changes). */
const FALLBACK = 2_000;
const SAFETY = 30_000;

export default function Pairing() {
  const live = usePairingChanges();
  const refresh = live ? SAFETY : FALLBACK;
  return (
    <Page title="Pairing" description="Pair a node: create a code, run the node with it, then compare its key fingerprint and approve.">
      <CreateCodeCard />
      <PendingCard refresh={refresh} live={live} />
      <RequestsCard refresh={refresh} />
      <CodesCard />
    </Page>
  );
}

/** usePairingChanges follows WatchPairingRequests and reads the pairing lists again at
 * every change (and when the stream says changes were missed). It reconnects with
 * backoff, and says whether the stream is up: while it is not, the lists poll. */
function usePairingChanges(): boolean {
  const transport = useTransport();
  const queryClient = useQueryClient();
  const [live, setLive] = useState(false);
  useEffect(() => {
    const client = createClient(PairingService, transport);
    const abort = new AbortController();
    const refetch = () => queryClient.invalidateQueries({ queryKey: createConnectQueryKey({ schema: PairingService, cardinality: undefined }) });
    void (async () => {
      for (let attempt = 0; !abort.signal.aborted; attempt++) {
        try {
          for await (const _change of client.watchPairingRequests({}, { signal: abort.signal })) {
            attempt = 0;
            setLive(true);
            void refetch();
          }
        } catch (err) {
          if (abort.signal.aborted) return;
          // Without the right or the session, retrying does not help; the lists poll.
          if ([Code.Unauthenticated, Code.PermissionDenied].includes(ConnectError.from(err).code)) {
            setLive(false);
            return;
          }
        }
        setLive(false);
        await new Promise((resolve) => setTimeout(resolve, Math.min(1_000 * 2 ** attempt, 30_000)));
      }
    })();
    return () => abort.abort();
  }, [transport, queryClient]);
  return live;
}

const ttls: [string, number][] = [
  ["10 minutes", 10 * 60_000],
  ["1 hour", 3600_000],
  ["24 hours", 24 * 3600_000],
  ["2 minutes", 2 * 60_000],
];

function CreateCodeCard() {
  const may = usePermission("nodes.pair");
  const id = useId();
  const queryClient = useQueryClient();
  const [method, setMethod] = useState(PairingMethod.PIN);
  const [label, setLabel] = useState("");
  const [ttl, setTtl] = useState(ttls[0][1]);
  const create = useMutation(PairingService.method.createPairingCode, { onSuccess: () => queryClient.invalidateQueries() });
  const [created, setCreated] = useState<CreatePairingCodeResponse>();

  async function submit(e: FormEvent) {
    e.preventDefault();
    setCreated(undefined);
    setCreated(await create.mutateAsync({ method, label: label.trim(), ttl: durationFromMs(ttl) }).catch(() => undefined));
  }

  if (!may) return <Card title="New pairing code"><Needs permission="nodes.pair" what="Creating pairing codes needs" /></Card>;
  return (
    <Card title="New pairing code">
      <form className={styles.createForm} onSubmit={submit}>
        <fieldset className={styles.methods}>
          <legend>Kind of code</legend>
          <label>
            <input type="radio" name={`${id}-method`} checked={method === PairingMethod.PIN} onChange={() => setMethod(PairingMethod.PIN)} /> PIN: digits typed on the node
          </label>
          <label>
            <input type="radio" name={`${id}-method`} checked={method === PairingMethod.QR} onChange={() => setMethod(PairingMethod.QR)} /> QR code: a link scanned or pasted
          </label>
        </fieldset>
        <div className="field">
          <label htmlFor={`${id}-label`}>Label (optional)</label>
          <input id={`${id}-label`} className={styles.input} value={label} maxLength={64} onChange={(e) => setLabel(e.target.value)} placeholder="e.g. build-runner-3" />
        </div>
        <div className="field">
          <label htmlFor={`${id}-ttl`}>Works for</label>
          <select id={`${id}-ttl`} className={styles.input} value={ttl} onChange={(e) => setTtl(Number(e.target.value))}>
            {ttls.map(([name, ms]) => (
              <option key={ms} value={ms}>
                {name}
              </option>
            ))}
          </select>
        </div>
        <div>
          <button type="submit" className="button button-primary" disabled={create.isPending} aria-busy={create.isPending}>
            {create.isPending ? "Creating…" : method === PairingMethod.PIN ? "Create PIN" : "Create QR code"}
          </button>
        </div>
      </form>
      {create.error ? <ErrorPanel error={create.error} title="The code was not created" /> : null}
      {created ? <CreatedCode created={created} /> : null}
    </Card>
  );
}

/** shellQuote quotes a word for a POSIX shell when it needs it. */
function shellQuote(s: string): string {
  return /^[A-Za-z0-9_./:=@+-]+$/.test(s) ? s : `'${s.replaceAll("'", `'\\''`)}'`;
}

function CreatedCode({ created }: { created: CreatePairingCodeResponse }) {
  const code = created.pairingCode;
  const qr = code?.method === PairingMethod.QR;
  const command = qr
    ? `palyra node run --qr-uri ${shellQuote(created.pairingUri)}`
    : `palyra node run --url ${shellQuote(window.location.origin)} --pin ${created.code} --ca-fingerprint ${created.caFingerprint}`;
  return (
    <section className={styles.created} aria-labelledby="created-title">
      <h3 id="created-title" className={styles.createdTitle}>
        {qr ? "QR code" : "PIN"} created{code?.label ? ` for ${code.label}` : ""}: shown this once
      </h3>
      <p className="field-hint">
        It works once, until <RelativeTime value={code?.expireTime} />. Run this on the node; it prints its key fingerprint, which you compare below before approving.
      </p>
      <div className={styles.createdBody}>
        {qr ? <QRImage text={created.pairingUri} /> : <p className={styles.pin} aria-label={`PIN ${created.code.split("").join(" ")}`}>{created.code}</p>}
        <div className={styles.commandBox}>
          <label className={styles.commandLabel} htmlFor="node-command">
            Command for the node
          </label>
          <textarea id="node-command" className={styles.command} readOnly rows={4} value={command} spellCheck={false} />
          <div className={styles.row}>
            <CopyButton text={command} label="Copy command" />
          </div>
          <p className="field-hint">
            palyrad's CA: <code>{created.caFingerprint}</code>
          </p>
        </div>
      </div>
    </section>
  );
}

/** QRImage draws text as a QR code: an SVG of its modules, with the quiet zone. */
function QRImage({ text }: { text: string }) {
  const { size, path } = useMemo(() => {
    const { modules } = QRCode.create(text, { errorCorrectionLevel: "M" });
    let d = "";
    for (let y = 0; y < modules.size; y++) {
      for (let x = 0; x < modules.size; x++) {
        if (modules.get(y, x)) d += `M${x + 4} ${y + 4}h1v1h-1z`;
      }
    }
    return { size: modules.size + 8, path: d };
  }, [text]);
  return (
    <svg className={styles.qr} viewBox={`0 0 ${size} ${size}`} width={size * 5} height={size * 5} role="img" aria-label="QR code of the pairing link" shapeRendering="crispEdges">
      <rect width={size} height={size} fill="#fff" />
      <path d={path} fill="#000" />
    </svg>
  );
}

/** useKnownAddresses is the set of source addresses of approved requests (completed or
 * not yet collected): what "familiar" means. */
function useKnownAddresses(): Set<string> | undefined {
  const completed = useQuery(PairingService.method.listPairingRequests, { state: PairingState.COMPLETED, pageSize: 500 }, { refetchInterval: 30_000 });
  const approved = useQuery(PairingService.method.listPairingRequests, { state: PairingState.APPROVED, pageSize: 500 }, { refetchInterval: 30_000 });
  return useMemo(() => {
    if (!completed.data || !approved.data) return undefined;
    return new Set([...completed.data.pairingRequests, ...approved.data.pairingRequests].map((r) => r.sourceAddress));
  }, [completed.data, approved.data]);
}

function PendingCard({ refresh, live }: { refresh: number; live: boolean }) {
  const list = usePagedList(PairingService.method.listPairingRequests, { state: PairingState.PENDING_APPROVAL, pageSize: 20 }, (p) => p.pairingRequests, { refetchInterval: refresh });
  const known = useKnownAddresses();
  return (
    <Card title="Pending requests" aside={<span className="field-hint">{live ? <Badge tone="ok">live</Badge> : "Reconnecting: refreshed every 2 s"}</span>}>
      {list.error ? <ErrorPanel error={list.error} /> : null}
      {!list.data && !list.error ? <Loading /> : null}
      <div className={styles.requests} aria-live="polite">
        {list.rows.map((r) => (
          <PendingRequest key={r.id} request={r} known={known} />
        ))}
      </div>
      {list.data ? <LoadMore list={list} noun="pending requests" /> : null}
    </Card>
  );
}

const severityTone: Record<Warning["severity"], Tone> = { danger: "danger", warn: "warn" };

function PendingRequest({ request: r, known }: { request: PairingRequest; known: Set<string> | undefined }) {
  const mayDecide = usePermission("nodes.approve");
  const [mode, setMode] = useState<"none" | "approve" | "reject">("none");
  const warnings = warningsFor(r, known, Date.now());
  const headingId = `request-${r.id}`;
  return (
    <article className={styles.request} aria-labelledby={headingId}>
      <div className={styles.requestHead}>
        <h3 id={headingId} className={styles.requestTitle}>
          {r.deviceName}
        </h3>
        <Badge tone="warn">pending</Badge>
      </div>
      <dl className={styles.facts}>
        <div>
          <dt>Platform</dt>
          <dd>
            {r.platform}, agent {r.agentVersion}
          </dd>
        </div>
        <div>
          <dt>From</dt>
          <dd>
            <code>{r.sourceAddress}</code>
          </dd>
        </div>
        <div>
          <dt>Asked</dt>
          <dd>
            <RelativeTime value={r.createTime} />, expires <RelativeTime value={r.expireTime} />
          </dd>
        </div>
        <div>
          <dt>Request</dt>
          <dd>
            <code>{r.id}</code>
          </dd>
        </div>
        <div>
          <dt>Key fingerprint</dt>
          <dd>
            <code className={styles.fingerprint}>{r.publicKeyFingerprint}</code>
          </dd>
        </div>
      </dl>
      {warnings.length > 0 ? (
        <ul className={styles.warnings} aria-label="Warnings">
          {warnings.map((w) => (
            <li key={w.title} className={w.severity === "danger" ? styles.danger : styles.warn}>
              <Badge tone={severityTone[w.severity]}>{w.severity === "danger" ? "danger" : "warning"}</Badge> <strong>{w.title}.</strong> {w.detail}
            </li>
          ))}
        </ul>
      ) : null}
      {!mayDecide ? (
        <Needs permission="nodes.approve" what="Approving or rejecting requests needs" />
      ) : mode === "approve" ? (
        <ApproveForm request={r} onDone={() => setMode("none")} />
      ) : (
        <div className={styles.row}>
          <button type="button" className="button button-primary" onClick={() => setMode("approve")}>
            Review and approve…
          </button>
          <button type="button" className="button" onClick={() => setMode("reject")}>
            Reject…
          </button>
        </div>
      )}
      {mayDecide ? <RejectConfirm request={r} open={mode === "reject"} onClose={() => setMode("none")} /> : null}
    </article>
  );
}

type DeviceChoice = "" | "replace" | "new";

function ApproveForm({ request: r, onDone }: { request: PairingRequest; onDone: () => void }) {
  const id = useId();
  const queryClient = useQueryClient();
  const [typed, setTyped] = useState("");
  const [labels, setLabels] = useState("");
  const [choice, setChoice] = useState<DeviceChoice>("");
  const approve = useMutation(PairingService.method.approvePairingRequest, { onSuccess: () => queryClient.invalidateQueries() });
  const check = checkFingerprint(typed, r.publicKeyFingerprint);
  const needsChoice = r.deviceClaim === DeviceClaim.UNPROVEN || r.deviceClaim === DeviceClaim.REVOKED;
  const parsedLabels = parseLabels(labels);
  const ready = check.kind === "match" && (!needsChoice || choice !== "") && typeof parsedLabels !== "string";

  async function submit(e: FormEvent) {
    e.preventDefault();
    if (!ready || typeof parsedLabels === "string") return;
    await approve
      .mutateAsync({
        id: r.id,
        expectedKeyFingerprint: check.value,
        labels: parsedLabels,
        replaceDeviceId: choice === "replace" ? r.previousDeviceId : "",
        reinstateRevokedDevice: choice === "replace" && r.deviceClaim === DeviceClaim.REVOKED,
        newDevice: choice === "new",
      })
      .then(onDone, () => undefined);
  }

  return (
    <form className={styles.decide} onSubmit={submit} aria-label={`Approve ${r.deviceName}`}>
      <div className="field">
        <label htmlFor={`${id}-fp`}>Key fingerprint the node printed</label>
        <input
          id={`${id}-fp`}
          className={`${styles.input} ${styles.mono}`}
          value={typed}
          onChange={(e) => setTyped(e.target.value)}
          spellCheck={false}
          autoComplete="off"
          autoFocus
          placeholder="sha256:…"
          aria-describedby={`${id}-fp-check`}
          aria-invalid={check.kind === "mismatch" || check.kind === "malformed"}
        />
        <p id={`${id}-fp-check`} role="status" className={check.kind === "match" ? styles.match : check.kind === "empty" ? "field-hint" : styles.mismatch}>
          {check.kind === "empty"
            ? "Type or paste the fingerprint the node shows (“waiting for approval (request …, key sha256:…)”); do not copy it from this page."
            : check.kind === "malformed"
              ? "Not a SHA-256 fingerprint: 64 hexadecimal digits, with or without sha256:."
              : check.kind === "match"
                ? "The fingerprints match."
                : `The fingerprints do not match (they differ from digit ${check.at + 1}): this is not the key of the node you ran. Do not approve; reject the request.`}
        </p>
        {check.kind === "mismatch" ? <FingerprintDiff typed={check.value} expected={r.publicKeyFingerprint} at={check.at} /> : null}
      </div>
      {needsChoice ? (
        <fieldset className={styles.methods}>
          <legend>The node names device {r.previousDeviceId}</legend>
          <label>
            <input type="radio" name={`${id}-choice`} checked={choice === "new"} onChange={() => setChoice("new")} /> Register it as a new device (leave {r.previousDeviceId} alone)
          </label>
          <label>
            <input type="radio" name={`${id}-choice`} checked={choice === "replace"} onChange={() => setChoice("replace")} />{" "}
            {r.deviceClaim === DeviceClaim.REVOKED ? "Reinstate the revoked device and replace it with this node" : "Replace that device with this node (revokes its certificates)"}
          </label>
        </fieldset>
      ) : null}
      <div className="field">
        <label htmlFor={`${id}-labels`}>Labels (optional, one key=value a line)</label>
        <textarea id={`${id}-labels`} className={`${styles.input} ${styles.mono}`} rows={2} value={labels} onChange={(e) => setLabels(e.target.value)} spellCheck={false} />
        {typeof parsedLabels === "string" ? <p className={styles.mismatch}>{parsedLabels}</p> : null}
      </div>
      {approve.error ? <ErrorPanel error={approve.error} title="palyrad refused the approval" /> : null}
      <div className={styles.row}>
        <button type="submit" className="button button-primary" disabled={!ready || approve.isPending} aria-busy={approve.isPending}>
          {approve.isPending ? "Approving…" : "Approve"}
        </button>
        <button type="button" className="button" onClick={onDone}>
          Cancel
        </button>
      </div>
    </form>
  );
}

/** FingerprintDiff shows the two fingerprints digit group by digit group, marking where they part. */
function FingerprintDiff({ typed, expected, at }: { typed: string; expected: string; at: number }) {
  const row = (fp: string) =>
    groupHex(fp).map((g, i) => (
      <span key={i} className={i * 4 + 4 > at ? styles.diffBad : undefined}>
        {g}{" "}
      </span>
    ));
  return (
    <dl className={styles.diff}>
      <div>
        <dt>You typed</dt>
        <dd className={styles.mono}>{row(typed)}</dd>
      </div>
      <div>
        <dt>The request's key</dt>
        <dd className={styles.mono}>{row(expected)}</dd>
      </div>
    </dl>
  );
}

/** parseLabels reads key=value lines; a string is the problem. */
function parseLabels(text: string): Record<string, string> | string {
  const out: Record<string, string> = {};
  for (const line of text.split("\n").map((l) => l.trim()).filter(Boolean)) {
    const eq = line.indexOf("=");
    if (eq <= 0) return `"${line}" is not key=value.`;
    out[line.slice(0, eq).trim()] = line.slice(eq + 1).trim();
  }
  return out;
}

function RejectConfirm({ request: r, open, onClose }: { request: PairingRequest; open: boolean; onClose: () => void }) {
  const queryClient = useQueryClient();
  const reject = useMutation(PairingService.method.rejectPairingRequest, { onSuccess: () => queryClient.invalidateQueries() });
  return (
    <Confirm title={`Reject ${r.deviceName}?`} open={open} onClose={onClose} action="Reject" reason={{ label: "Reason (the node is told)", required: true }} run={(reason) => reject.mutateAsync({ id: r.id, reason })}>
      <p>
        The node is refused and told the reason. Request <code>{r.id}</code> from <code>{r.sourceAddress}</code>.
      </p>
    </Confirm>
  );
}

const stateTone: Record<PairingState, Tone> = {
  [PairingState.UNSPECIFIED]: "neutral",
  [PairingState.PENDING_APPROVAL]: "warn",
  [PairingState.APPROVED]: "ok",
  [PairingState.COMPLETED]: "ok",
  [PairingState.REJECTED]: "danger",
  [PairingState.EXPIRED]: "neutral",
};

/** stateName turns PairingState.PENDING_APPROVAL into "pending approval". */
function stateName(s: PairingState): string {
  return (PairingState[s] ?? String(s)).toLowerCase().replaceAll("_", " ");
}

function RequestsCard({ refresh }: { refresh: number }) {
  const id = useId();
  const [state, setState] = useState(PairingState.UNSPECIFIED);
  const list = usePagedList(PairingService.method.listPairingRequests, { state, pageSize: 20 }, (p) => p.pairingRequests, { refetchInterval: refresh });
  return (
    <Card
      title="All requests"
      aside={
        <span className={styles.filter}>
          <label htmlFor={`${id}-state`}>State</label>
          <select id={`${id}-state`} className={styles.input} value={state} onChange={(e) => setState(Number(e.target.value) as PairingState)}>
            <option value={PairingState.UNSPECIFIED}>all</option>
            {[PairingState.PENDING_APPROVAL, PairingState.APPROVED, PairingState.COMPLETED, PairingState.REJECTED, PairingState.EXPIRED].map((s) => (
              <option key={s} value={s}>
                {stateName(s)}
              </option>
            ))}
          </select>
        </span>
      }
    >
      <ListBody list={list} noun="requests">
        {(rows) => (
          <table className="table">
            <caption className="visually-hidden">Pairing requests, newest first</caption>
            <TableHead columns={["Device", "State", "From", "Asked", "Decided"]} />
            <tbody>
              {rows.map((r) => (
                <tr key={r.id}>
                  <td>
                    {r.deviceName}
                    {r.deviceId ? (
                      <>
                        {" "}
                        → <Link to={`/nodes?node=${r.deviceId}`}>{r.deviceId}</Link>
                      </>
                    ) : null}
                  </td>
                  <td>
                    <Badge tone={stateTone[r.state]}>{stateName(r.state)}</Badge>
                    {r.reason ? <span className="field-hint"> {r.reason}</span> : null}
                  </td>
                  <td>
                    <code>{r.sourceAddress}</code>
                  </td>
                  <td>
                    <RelativeTime value={r.createTime} />
                  </td>
                  <td>{r.decideTime ? <>{r.decidedBy}, <RelativeTime value={r.decideTime} /></> : "—"}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </ListBody>
    </Card>
  );
}

const codeTone: Record<PairingCodeState, Tone> = {
  [PairingCodeState.UNSPECIFIED]: "neutral",
  [PairingCodeState.ACTIVE]: "ok",
  [PairingCodeState.USED]: "neutral",
  [PairingCodeState.EXPIRED]: "neutral",
  [PairingCodeState.BURNED]: "danger",
  [PairingCodeState.DELETED]: "neutral",
};

function CodesCard() {
  const may = usePermission("nodes.pair");
  const id = useId();
  const queryClient = useQueryClient();
  const [activeOnly, setActiveOnly] = useState(true);
  const list = usePagedList(PairingService.method.listPairingCodes, { activeOnly, pageSize: 20 }, (p) => p.pairingCodes, { enabled: may, refetchInterval: 10_000 });
  const withdraw = useMutation(PairingService.method.deletePairingCode, { onSuccess: () => queryClient.invalidateQueries() });
  const [withdrawing, setWithdrawing] = useState<PairingCode>();
  if (!may) return <Card title="Pairing codes"><Needs permission="nodes.pair" what="Seeing pairing codes needs" /></Card>;
  return (
    <Card
      title="Pairing codes"
      aside={
        <span className={styles.filter}>
          <input id={`${id}-active`} type="checkbox" checked={activeOnly} onChange={(e) => setActiveOnly(e.target.checked)} />
          <label htmlFor={`${id}-active`}>Usable only</label>
        </span>
      }
    >
      <ListBody list={list} noun="codes">
        {(rows) => (
          <table className="table">
            <caption className="visually-hidden">Pairing codes, newest first</caption>
            <TableHead columns={["Kind", "Label", "State", "Expires", "By", ""]} />
            <tbody>
              {rows.map((c) => (
                <tr key={c.id}>
                  <td>{c.method === PairingMethod.QR ? "QR" : "PIN"}</td>
                  <td>{c.label || "—"}</td>
                  <td>
                    <Badge tone={codeTone[c.state]}>{(PairingCodeState[c.state] ?? "").toLowerCase()}</Badge>
                    {c.failedAttempts > 0 ? <span className="field-hint"> {count(c.failedAttempts, "wrong attempts")}</span> : null}
                  </td>
                  <td>
                    <RelativeTime value={c.expireTime} />
                  </td>
                  <td>{c.createdBy}</td>
                  <td>
                    {c.state === PairingCodeState.ACTIVE ? (
                      <button type="button" className="button" onClick={() => setWithdrawing(c)} aria-label={`Withdraw the ${c.label || "unlabelled"} code created ${c.createTime ? timestampDate(c.createTime).toLocaleString() : ""}`}>
                        Withdraw
                      </button>
                    ) : null}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </ListBody>
      <Confirm title="Withdraw this pairing code?" open={withdrawing !== undefined} onClose={() => setWithdrawing(undefined)} action="Withdraw code" run={() => withdraw.mutateAsync({ id: withdrawing?.id ?? "" })}>
        <p>
          No node can pair with the {withdrawing?.method === PairingMethod.QR ? "QR code" : "PIN"}
          {withdrawing?.label ? <> labelled <strong>{withdrawing.label}</strong></> : null} from then on.
        </p>
      </Confirm>
    </Card>
  );
}
