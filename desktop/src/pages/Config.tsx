// Configuration: every setting with its effective value, its source and the revision
// that stored it; editing a runtime setting (owner only) against the revision the page
// read, so that a change made meanwhile is never overwritten unseen: palyrad refuses a
// stale revision (Aborted, ErrorInfo STALE_REVISION with current_revision) and the page
// then shows the revisions made since and lets the user re-apply the edit on top of
// them. Below, the history of revisions, each with its changes, and rollback.
import { useId, useState, type FormEvent } from "react";
import { createConnectQueryKey, useMutation, useQuery } from "@connectrpc/connect-query";
import { useQueryClient } from "@tanstack/react-query";
import type { MessageInitShape } from "@bufbuild/protobuf";
import {
  ConfigService,
  ConfigSource,
  type ConfigChange,
  type ConfigChangeSpecSchema,
  type ConfigRevision,
  type ConfigValue,
  type Setting,
} from "../../../gen/ts/palyra/controlplane/v1/config_pb.js";
import { usePermission } from "../session.js";
import { Card, Page } from "../components/Page.js";
import { ErrorPanel } from "../components/ErrorPanel.js";
import { RelativeTime } from "../components/RelativeTime.js";
import { Badge, type Tone } from "../components/Badge.js";
import { Confirm } from "../components/Dialog.js";
import { usePagedList } from "../components/paging.js";
import { ListBody, Loading, TableHead } from "../components/ListBody.js";
import { errorInfo } from "../components/errorInfo.js";
import styles from "./admin.module.css";
import { allShown, count } from "../components/plural.js";

type Spec = MessageInitShape<typeof ConfigChangeSpecSchema>;

/** STALE_REVISION is the ErrorInfo reason of a stale expected_revision. */
const STALE_REVISION = "STALE_REVISION";
/** CONFLICT_SHOWN is the most revisions a conflict lists one by one. */
const CONFLICT_SHOWN = 10;

const sourceTones: Record<ConfigSource, Tone> = {
  [ConfigSource.UNSPECIFIED]: "neutral",
  [ConfigSource.DEFAULT]: "neutral",
  [ConfigSource.FILE]: "neutral",
  [ConfigSource.ENVIRONMENT]: "warn",
  [ConfigSource.FLAG]: "warn",
  [ConfigSource.DATABASE]: "ok",
};

function sourceName(s: ConfigSource): string {
  return (ConfigSource[s] ?? String(s)).toLowerCase();
}

/** show renders a value as text. */
export function show(v: ConfigValue | undefined): string {
  if (!v) return "";
  if (v.kind.case === "text") return v.kind.value;
  if (v.kind.case === "list") return v.kind.value.items.join(", ");
  return "";
}

function invalidate(queryClient: ReturnType<typeof useQueryClient>) {
  return queryClient.invalidateQueries({ queryKey: createConnectQueryKey({ schema: ConfigService, cardinality: undefined }) });
}

/** Conflict is an edit refused as stale: the revision it was made against, the current
 * one, and the edit to re-apply. */
interface Conflict {
  base: bigint;
  current: bigint;
  spec: Spec;
  reason: string;
  what: string;
}

export default function Config() {
  const mayWrite = usePermission("config.write");
  const config = useQuery(ConfigService.method.getConfig, {});
  const [conflict, setConflict] = useState<Conflict>();
  return (
    <Page title="Configuration" description="Every setting, where its value comes from, and the revisions of the runtime settings stored in the database.">
      {conflict ? <ConflictPanel conflict={conflict} onDone={() => setConflict(undefined)} onStaleAgain={setConflict} /> : null}
      <Card title="Settings" aside={config.data ? <span className="field-hint">Revision {String(config.data.revision)}</span> : undefined}>
        {!mayWrite ? (
          <p className="field-hint">
            Changing settings needs the permission <code>config.write</code> (owner only).
          </p>
        ) : null}
        {config.error ? (
          <ErrorPanel error={config.error} />
        ) : !config.data ? (
          <Loading />
        ) : (
          <table className="table">
            <caption className="visually-hidden">Settings</caption>
            <TableHead columns={["Setting", "Value", "Source", ""]} />
            <tbody>
              {config.data.settings.map((s) => (
                <SettingRow key={s.key} setting={s} base={config.data.revision} mayWrite={mayWrite} onConflict={setConflict} />
              ))}
            </tbody>
          </table>
        )}
        {config.data ? <p className="field-hint">{allShown(config.data.settings.length, "settings")}</p> : null}
      </Card>
      <History current={config.data?.revision} mayWrite={mayWrite} />
    </Page>
  );
}

function SettingRow({ setting: s, base, mayWrite, onConflict }: { setting: Setting; base: bigint; mayWrite: boolean; onConflict: (c: Conflict) => void }) {
  const [editing, setEditing] = useState(false);
  return (
    <>
      <tr>
        <td>
          <code>{s.key}</code> <span className={styles.muted}>({s.type})</span>
          <div className={styles.muted}>{s.description}</div>
          {s.runtime ? null : <div className={styles.muted}>Set at start-up: {s.changeHint}</div>}
        </td>
        <td>
          {s.secret ? (
            <span className={styles.muted}>{s.isSet ? "set (secret, not shown)" : "not set"}</span>
          ) : (
            <code>{show(s.value) || <span className={styles.muted}>empty</span>}</code>
          )}
          {s.secretReference ? <div className={styles.muted}>a reference to a secret of the vault</div> : null}
        </td>
        <td>
          <Badge tone={sourceTones[s.source]}>{sourceName(s.source)}</Badge>
          {s.source === ConfigSource.DATABASE ? <div className={styles.muted}>revision {String(s.revision)}</div> : null}
        </td>
        <td>
          {s.runtime ? (
            mayWrite ? (
              <button type="button" className="button button-small" onClick={() => setEditing(!editing)} aria-expanded={editing} aria-label={`Edit ${s.key}`}>
                Edit
              </button>
            ) : null
          ) : null}
        </td>
      </tr>
      {editing ? (
        <tr>
          <td colSpan={4}>
            <EditSetting setting={s} base={base} onDone={() => setEditing(false)} onConflict={onConflict} />
          </td>
        </tr>
      ) : null}
    </>
  );
}

/** useUpdate is UpdateConfig, turning a stale revision into a Conflict. */
function useUpdate(onConflict: (c: Conflict) => void) {
  const queryClient = useQueryClient();
  const update = useMutation(ConfigService.method.updateConfig, { onSettled: () => invalidate(queryClient) });
  async function run(spec: Spec, base: bigint, reason: string, what: string): Promise<boolean> {
    try {
      await update.mutateAsync({ change: spec, expectedRevision: base, reason });
      return true;
    } catch (err) {
      const info = errorInfo(err);
      if (info?.reason === STALE_REVISION && info.metadata.current_revision) {
        onConflict({ base, current: BigInt(info.metadata.current_revision), spec, reason, what });
        return false;
      }
      throw err;
    }
  }
  return { run, update };
}

function EditSetting({ setting: s, base: shown, onDone, onConflict }: { setting: Setting; base: bigint; onDone: () => void; onConflict: (c: Conflict) => void }) {
  const id = useId();
  // The edit is made against the revision shown when it began, even if the page
  // refreshes meanwhile: a change made since is then a conflict, not overwritten unseen.
  const [base] = useState(shown);
  const isList = s.value?.kind.case === "list";
  const [value, setValue] = useState(s.secret ? "" : isList ? (s.value?.kind.value as { items: string[] }).items.join("\n") : show(s.value));
  const [reason, setReason] = useState("");
  const [error, setError] = useState<unknown>();
  const { run, update } = useUpdate((c) => {
    onConflict(c);
    onDone();
  });

  async function save(spec: Spec, what: string) {
    setError(undefined);
    try {
      if (await run(spec, base, reason.trim(), what)) onDone();
    } catch (err) {
      setError(err);
    }
  }
  function submit(e: FormEvent) {
    e.preventDefault();
    const v: MessageInitShape<typeof ConfigChangeSpecSchema>["set"] = [
      {
        key: s.key,
        value: isList ? { kind: { case: "list", value: { items: value.split("\n").map((x) => x.trim()).filter(Boolean) } } } : { kind: { case: "text", value: value.trim() } },
      },
    ];
    void save({ set: v }, `${s.key} = ${isList ? value.split("\n").filter(Boolean).join(", ") : value.trim()}`);
  }

  return (
    <form onSubmit={submit} className={styles.stack} aria-label={`Edit ${s.key}`}>
      <div className={styles.filters}>
        <div className="field">
          <label htmlFor={`${id}-value`}>
            New value of {s.key}
            {isList ? " (one item a line)" : ""}
          </label>
          {isList ? (
            <textarea id={`${id}-value`} value={value} onChange={(e) => setValue(e.target.value)} rows={4} spellCheck={false} />
          ) : (
            <input id={`${id}-value`} value={value} onChange={(e) => setValue(e.target.value)} spellCheck={false} autoFocus />
          )}
        </div>
        <div className="field">
          <label htmlFor={`${id}-reason`}>Reason (recorded)</label>
          <input id={`${id}-reason`} value={reason} onChange={(e) => setReason(e.target.value)} maxLength={512} />
        </div>
      </div>
      <p className="field-hint">{s.description}. Saved against revision {String(base)}.</p>
      {error ? <ErrorPanel error={error} title="palyrad refused the change" /> : null}
      <div className={styles.row}>
        <button type="submit" className="button button-primary" disabled={update.isPending} aria-busy={update.isPending}>
          Save
        </button>
        {s.source === ConfigSource.DATABASE ? (
          <button type="button" className="button" onClick={() => void save({ unset: [s.key] }, `unset ${s.key}`)} disabled={update.isPending}>
            Remove the stored value
          </button>
        ) : null}
        <button type="button" className="button" onClick={onDone}>
          Cancel
        </button>
      </div>
    </form>
  );
}

/** ConflictPanel shows the revisions made since the edit's base and re-applies it. */
function ConflictPanel({ conflict, onDone, onStaleAgain }: { conflict: Conflict; onDone: () => void; onStaleAgain: (c: Conflict) => void }) {
  const [error, setError] = useState<unknown>();
  const { run, update } = useUpdate(onStaleAgain);
  const revisions: bigint[] = [];
  for (let r = conflict.current; r > conflict.base && revisions.length < CONFLICT_SHOWN; r--) revisions.push(r);
  const more = conflict.current - conflict.base - BigInt(revisions.length);
  async function reapply() {
    setError(undefined);
    try {
      if (await run(conflict.spec, conflict.current, conflict.reason, conflict.what)) onDone();
    } catch (err) {
      setError(err);
    }
  }
  return (
    <Card title="Your change was not saved: the configuration changed meanwhile">
      <div className={styles.stack} role="alert">
        <p className={styles.notice}>
          You edited revision {String(conflict.base)}; it is now revision {String(conflict.current)}. Your change <code>{conflict.what}</code> was not
          applied. These changes were made since:
        </p>
      </div>
      <div className={styles.stack}>
        {revisions.map((r) => (
          <RevisionChanges key={String(r)} revision={r} />
        ))}
        {more > 0n ? <p className="field-hint">And {String(more)} earlier revisions, in the history below.</p> : null}
        {error ? <ErrorPanel error={error} title="palyrad refused the change" /> : null}
        <div className={styles.row}>
          <button type="button" className="button button-primary" onClick={() => void reapply()} disabled={update.isPending} aria-busy={update.isPending}>
            Re-apply my change on revision {String(conflict.current)}
          </button>
          <button type="button" className="button" onClick={onDone}>
            Discard my change
          </button>
        </div>
      </div>
    </Card>
  );
}

/** RevisionChanges lists one revision's changes. */
function RevisionChanges({ revision }: { revision: bigint }) {
  const q = useQuery(ConfigService.method.getConfigRevision, { revision });
  if (q.error) return <ErrorPanel error={q.error} />;
  if (!q.data) return <Loading what={`Loading revision ${revision}…`} />;
  const r = q.data.revision;
  return (
    <div>
      <p className={styles.muted}>
        Revision {String(revision)} by {r?.actor}, <RelativeTime value={r?.createTime} />
        {r?.reason ? <>: “{r.reason}”</> : null}
        {r?.rollbackOf ? <> (rollback to revision {String(r.rollbackOf)})</> : null}
      </p>
      <Changes changes={q.data.changes} />
    </div>
  );
}

function Changes({ changes }: { changes: ConfigChange[] }) {
  return (
    <ul className={styles.diff}>
      {changes.map((c) => (
        <li key={c.key}>
          <code>{c.key}</code>:{" "}
          {c.oldValue ? <del>{show(c.oldValue)}</del> : <span className={styles.muted}>not stored</span>} →{" "}
          {c.op === "unset" ? <span className={styles.muted}>unset</span> : <ins>{show(c.newValue)}</ins>}
        </li>
      ))}
    </ul>
  );
}

function History({ current, mayWrite }: { current: bigint | undefined; mayWrite: boolean }) {
  const list = usePagedList(ConfigService.method.listConfigRevisions, { pageSize: 20 }, (p) => p.revisions);
  const [open, setOpen] = useState<bigint>();
  const [rollback, setRollback] = useState<ConfigRevision>();
  const queryClient = useQueryClient();
  const roll = useMutation(ConfigService.method.rollbackConfig, { onSettled: () => invalidate(queryClient) });
  return (
    <Card title="History">
      <ListBody list={list} noun="revisions">
        {(rows) => (
          <table className="table">
            <caption className="visually-hidden">Configuration revisions, newest first</caption>
            <TableHead columns={["Revision", "Made", "Reason", "Changes", ""]} />
            <tbody>
              {rows.map((r) => (
                <tr key={String(r.revision)}>
                  <td>
                    {String(r.revision)}
                    {r.revision === current ? <> <Badge tone="ok">current</Badge></> : null}
                  </td>
                  <td>
                    <RelativeTime value={r.createTime} /> by {r.actor}
                  </td>
                  <td>
                    {r.reason || <span className={styles.muted}>none given</span>}
                    {r.rollbackOf ? <div className={styles.muted}>rollback to revision {String(r.rollbackOf)}</div> : null}
                  </td>
                  <td>
                    <button type="button" className="button button-small" aria-expanded={open === r.revision} onClick={() => setOpen(open === r.revision ? undefined : r.revision)}>
                      {count(r.changeCount, "changes")}
                    </button>
                    {open === r.revision ? <RevisionChanges revision={r.revision} /> : null}
                  </td>
                  <td>
                    {mayWrite && r.revision !== current ? (
                      <button type="button" className="button button-small" onClick={() => setRollback(r)}>
                        Roll back to revision {String(r.revision)}
                      </button>
                    ) : null}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </ListBody>
      <Confirm
        title={`Roll back to revision ${rollback?.revision}?`}
        open={Boolean(rollback)}
        onClose={() => setRollback(undefined)}
        action="Roll back"
        reason={{ label: "Reason (recorded)" }}
        run={(reason) => roll.mutateAsync({ revision: rollback!.revision, expectedRevision: current ?? 0n, reason })}
      >
        <p>
          A new revision restores the stored values of revision {String(rollback?.revision)}, made <RelativeTime value={rollback?.createTime} /> by{" "}
          {rollback?.actor}. It is refused if the configuration changed since this page read revision {String(current)}.
        </p>
      </Confirm>
    </Card>
  );
}
