// The audit log: events newest first, filtered by principal, procedure, outcome and time
// (all in the address), page by page; and "Verify chain", which has palyrad check the
// hash chain of the whole log and shows its verdict.
import { useState, type FormEvent } from "react";
import { useSearchParams } from "react-router";
import { useMutation } from "@connectrpc/connect-query";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { AuditOutcome, AuditService, type AuditEvent } from "../../../gen/ts/palyra/access/v1/audit_pb.js";
import { usePermission } from "../session.js";
import { Card, Page } from "../components/Page.js";
import { ErrorPanel } from "../components/ErrorPanel.js";
import { RelativeTime } from "../components/RelativeTime.js";
import { Badge } from "../components/Badge.js";
import { usePagedList } from "../components/paging.js";
import { ListBody, Needs, TableHead } from "../components/ListBody.js";
import styles from "./admin.module.css";
import { count } from "../components/plural.js";

const keys = ["principal", "procedure", "outcome", "since", "until"] as const;

/** toTimestamp reads a datetime-local value (the browser's time zone). */
function toTimestamp(local: string) {
  if (!local) return undefined;
  const d = new Date(local);
  return Number.isNaN(d.getTime()) ? undefined : timestampFromDate(d);
}

export default function Audit() {
  const may = usePermission("audit.read");
  const [params, setParams] = useSearchParams();
  const filter = Object.fromEntries(keys.map((k) => [k, params.get(k) ?? ""])) as Record<(typeof keys)[number], string>;
  const [draft, setDraft] = useState(filter);
  const outcome = AuditOutcome[filter.outcome as keyof typeof AuditOutcome] ?? AuditOutcome.UNSPECIFIED;
  const list = usePagedList(
    AuditService.method.listAuditEvents,
    { principal: filter.principal, procedure: filter.procedure, outcome, since: toTimestamp(filter.since), until: toTimestamp(filter.until), pageSize: 50 },
    (p) => p.events,
    { enabled: may },
  );

  function apply(e: FormEvent) {
    e.preventDefault();
    setParams(() => {
      const p = new URLSearchParams();
      for (const k of keys) if (draft[k].trim()) p.set(k, draft[k].trim());
      return p;
    });
  }

  const field = (k: (typeof keys)[number], label: string, props: Record<string, string> = {}) => (
    <div className="field">
      <label htmlFor={`a-${k}`}>{label}</label>
      <input id={`a-${k}`} value={draft[k]} onChange={(e) => setDraft({ ...draft, [k]: e.target.value })} spellCheck={false} {...props} />
    </div>
  );

  return (
    <Page title="Audit log" description="Every call that changed state, and every refused one, in a hash chain.">
      {may ? <VerifyChain /> : null}
      <Card title="Events">
        {!may ? (
          <Needs permission="audit.read" />
        ) : (
          <>
            <form className={styles.filters} onSubmit={apply} aria-label="Filter audit events">
              {field("principal", "Principal", { placeholder: "e.g. token:01J…" })}
              {field("procedure", "Procedure", { placeholder: "e.g. /palyra.access.v1.AccessService/CreateToken" })}
              <div className="field">
                <label htmlFor="a-outcome">Outcome</label>
                <select id="a-outcome" value={draft.outcome} onChange={(e) => setDraft({ ...draft, outcome: e.target.value })}>
                  <option value="">Any</option>
                  <option value="SUCCESS">success</option>
                  <option value="FAILURE">failure</option>
                </select>
              </div>
              {field("since", "Since", { type: "datetime-local" })}
              {field("until", "Until", { type: "datetime-local" })}
              <button type="submit" className="button">
                Apply filters
              </button>
            </form>
            <ListBody list={list} noun="events">
              {(rows) => <Events rows={rows} />}
            </ListBody>
          </>
        )}
      </Card>
    </Page>
  );
}

function Events({ rows }: { rows: AuditEvent[] }) {
  return (
    <table className="table">
      <caption className="visually-hidden">Audit events, newest first</caption>
      <TableHead columns={["#", "Time", "Principal", "Procedure and target", "Outcome", "From"]} />
      <tbody>
        {rows.map((e) => (
          <tr key={e.id}>
            <td>{String(e.sequence)}</td>
            <td>
              <RelativeTime value={e.time} />
            </td>
            <td>
              <code>{e.principal}</code>
            </td>
            <td>
              <code>{e.procedure}</code>
              {e.target ? <div className={styles.muted}>{e.target}</div> : null}
              {e.summary ? (
                <div className={styles.muted}>
                  {count(e.summary.count, "events")} since <RelativeTime value={e.summary.firstTime} />: {e.summary.procedures.join(", ")}
                </div>
              ) : null}
            </td>
            <td>
              {e.outcome === AuditOutcome.SUCCESS ? <Badge tone="ok">success</Badge> : <Badge tone="danger">{`failure${e.code ? `: ${e.code}` : ""}`}</Badge>}
            </td>
            <td>
              <code>{e.remoteAddress}</code>
              <div className={styles.muted}>
                replica <code>{e.replicaId}</code>
                {e.requestId ? (
                  <>
                    , request <code title={`request id from the ${e.requestIdSource === 1 ? "client" : "replica"}`}>{e.requestId}</code>
                  </>
                ) : null}
              </div>
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

/** VerifyChain asks palyrad to check the whole chain (a mutation: an answer of its
 * moment, asked for by a click, never refetched behind the user's back). */
function VerifyChain() {
  const verify = useMutation(AuditService.method.verifyAuditLog);
  const v = verify.data;
  return (
    <Card
      title="Chain"
      aside={
        <button type="button" className="button" onClick={() => verify.mutate({})} disabled={verify.isPending} aria-busy={verify.isPending}>
          {verify.isPending ? "Verifying…" : "Verify chain"}
        </button>
      }
    >
      <div aria-live="polite">
        {verify.error ? (
          <ErrorPanel error={verify.error} />
        ) : v ? (
          v.intact ? (
            <p className={styles.ok}>
              <strong>Intact.</strong> {count(v.eventsChecked, "events")} checked; head #{String(v.headSequence)} <code>{v.headHash}</code>.
            </p>
          ) : (
            <p className={`${styles.notice} ${styles.error}`}>
              <strong>Broken</strong> at event #{String(v.firstBrokenSequence)}: {v.problem} ({count(v.eventsChecked, "events")} checked).
            </p>
          )
        ) : (
          <p className="field-hint">Each event holds the hash of the one before; verifying recomputes the chain from the first event to the head.</p>
        )}
      </div>
    </Card>
  );
}
