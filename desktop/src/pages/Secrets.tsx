// Secrets: the vault's metadata (never a value) page by page, one secret's versions,
// setting a value (a new version), and revealing one with a reason (owner only:
// secrets.read). A revealed value is a mutation's answer, not a query's: it is never
// cached, and it stays masked until the user asks to see it.
import { useId, useState, type FormEvent } from "react";
import { useSearchParams } from "react-router";
import { createConnectQueryKey, useMutation, useQuery } from "@connectrpc/connect-query";
import { useQueryClient } from "@tanstack/react-query";
import { SecretService, type Secret } from "../../../gen/ts/palyra/controlplane/v1/secrets_pb.js";
import { usePermission } from "../session.js";
import { Card, Page } from "../components/Page.js";
import { ErrorPanel } from "../components/ErrorPanel.js";
import { RelativeTime } from "../components/RelativeTime.js";
import { Badge } from "../components/Badge.js";
import { Dialog } from "../components/Dialog.js";
import { usePagedList } from "../components/paging.js";
import { ListBody, Loading, TableHead } from "../components/ListBody.js";
import styles from "./admin.module.css";
import { allShown } from "../components/plural.js";
import { Labels } from "../components/Labels.js";

export default function Secrets() {
  const mayList = usePermission("secrets.list");
  const mayWrite = usePermission("secrets.write");
  const [params, setParams] = useSearchParams();
  const name = params.get("name") ?? "";
  const [deleted, setDeleted] = useState(false);
  const list = usePagedList(SecretService.method.listSecrets, { includeDeleted: deleted, pageSize: 50 }, (p) => p.secrets, { enabled: mayList });
  const select = (n: string) => setParams(n ? { name: n } : {});
  return (
    <Page title="Secrets" description="The vault: values encrypted under the master key, referred to by settings as secret:NAME. Values are never listed.">
      {mayWrite ? <PutSecret onSaved={select} /> : null}
      {name ? <SecretDetail name={name} onClose={() => select("")} /> : null}
      <Card
        title="All secrets"
        aside={
          <label className={styles.row}>
            <input type="checkbox" checked={deleted} onChange={(e) => setDeleted(e.target.checked)} /> Include deleted
          </label>
        }
      >
        <ListBody list={list} noun="secrets" needs={mayList ? undefined : "secrets.list"}>
          {(rows) => (
            <table className="table">
              <caption className="visually-hidden">Secrets by name</caption>
              <TableHead columns={["Name", "Latest version", "Updated", "Last read"]} />
              <tbody>
                {rows.map((s) => (
                  <tr key={s.id} className={s.name === name ? styles.selected : undefined}>
                    <td>
                      <button type="button" className="button button-small" onClick={() => select(s.name)} aria-current={s.name === name ? "true" : undefined}>
                        {s.name}
                      </button>
                      {s.deleteTime ? <> <Badge tone="danger">deleted</Badge></> : null}
                      {s.description ? <div className={styles.muted}>{s.description}</div> : null}
                      <Labels labels={s.labels} />
                    </td>
                    <td>{String(s.latestVersion)}</td>
                    <td>
                      <RelativeTime value={s.updateTime} /> by {s.updatedBy}
                    </td>
                    <td>
                      <RelativeTime value={s.lastReadTime} />
                      {s.lastReadBy ? <> by {s.lastReadBy}</> : null}
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

function invalidate(queryClient: ReturnType<typeof useQueryClient>) {
  return queryClient.invalidateQueries({ queryKey: createConnectQueryKey({ schema: SecretService, cardinality: undefined }) });
}

/** PutSecret stores a value under a name: a new secret, or a new version of one. */
function PutSecret({ onSaved, secret }: { onSaved: (name: string) => void; secret?: Secret }) {
  const id = useId();
  const queryClient = useQueryClient();
  const [name, setName] = useState(secret?.name ?? "");
  const [value, setValue] = useState("");
  const [description, setDescription] = useState("");
  const put = useMutation(SecretService.method.putSecret, { onSettled: () => invalidate(queryClient) });
  async function submit(e: FormEvent) {
    e.preventDefault();
    try {
      const res = await put.mutateAsync({
        name: name.trim(),
        value: new TextEncoder().encode(value),
        description: description.trim() ? description.trim() : undefined,
        // A new version of a shown secret must follow the version shown.
        expectedVersion: secret ? secret.latestVersion : undefined,
      });
      setValue("");
      setDescription("");
      put.reset();
      onSaved(res.secret?.name ?? name.trim());
    } catch {
      // put.error shows it.
    }
  }
  return (
    <Card title={secret ? `Set a new version of ${secret.name}` : "Set a secret"}>
      <form onSubmit={submit} className={styles.stack}>
        <div className={styles.filters}>
          {secret ? null : (
            <div className="field">
              <label htmlFor={`${id}-name`}>Name</label>
              <input id={`${id}-name`} value={name} onChange={(e) => setName(e.target.value)} required maxLength={128} pattern="[A-Za-z0-9][A-Za-z0-9._\-]*" spellCheck={false} />
            </div>
          )}
          <div className="field">
            <label htmlFor={`${id}-value`}>Value</label>
            <input id={`${id}-value`} type="password" autoComplete="off" value={value} onChange={(e) => setValue(e.target.value)} required />
          </div>
          <div className="field">
            <label htmlFor={`${id}-description`}>Description (optional)</label>
            <input id={`${id}-description`} value={description} onChange={(e) => setDescription(e.target.value)} maxLength={1024} />
          </div>
        </div>
        <p className="field-hint">Setting a name that exists adds a version; the value is encrypted before it is stored and never shown again here unless revealed.</p>
        {put.error ? <ErrorPanel error={put.error} title="The secret was not set" /> : null}
        <div>
          <button type="submit" className="button button-primary" disabled={put.isPending || !value || !name.trim()} aria-busy={put.isPending}>
            {put.isPending ? "Saving…" : "Set secret"}
          </button>
        </div>
      </form>
    </Card>
  );
}

function SecretDetail({ name, onClose }: { name: string; onClose: () => void }) {
  const mayReveal = usePermission("secrets.read");
  const mayWrite = usePermission("secrets.write");
  const got = useQuery(SecretService.method.getSecret, { name });
  const s = got.data?.secret;
  return (
    <Card
      title={`Secret ${name}`}
      aside={
        <button type="button" className="button button-small" onClick={onClose}>
          Close
        </button>
      }
    >
      {got.error ? (
        <ErrorPanel error={got.error} />
      ) : !s ? (
        <Loading />
      ) : (
        <div className={styles.stack}>
          <dl className={styles.facts}>
            <div>
              <dt>Description</dt>
              <dd>{s.description || <span className={styles.muted}>none</span>}</dd>
            </div>
            <div>
              <dt>Created</dt>
              <dd>
                <RelativeTime value={s.createTime} /> by {s.createdBy}
              </dd>
            </div>
            <div>
              <dt>Last read</dt>
              <dd>
                <RelativeTime value={s.lastReadTime} />
                {s.lastReadBy ? <> by {s.lastReadBy}</> : null}
              </dd>
            </div>
            {s.deleteTime ? (
              <div>
                <dt>Deleted</dt>
                <dd>
                  <RelativeTime value={s.deleteTime} /> by {s.deletedBy}
                </dd>
              </div>
            ) : null}
          </dl>
          {mayReveal ? <Reveal name={s.name} versions={s.versions.filter((v) => !v.destroyTime).map((v) => v.version)} /> : null}
          <table className="table">
            <caption>Versions</caption>
            <TableHead columns={["Version", "Created", "Key", "State"]} />
            <tbody>
              {s.versions.map((v) => (
                <tr key={String(v.version)}>
                  <td>
                    {String(v.version)}
                    {v.version === s.latestVersion ? <> <Badge tone="ok">latest</Badge></> : null}
                  </td>
                  <td>
                    <RelativeTime value={v.createTime} /> by {v.createdBy}
                  </td>
                  <td>
                    <code>{v.kekId}</code>
                  </td>
                  <td>
                    {v.destroyTime ? (
                      <>
                        <Badge tone="danger">destroyed</Badge> <RelativeTime value={v.destroyTime} /> by {v.destroyedBy}
                      </>
                    ) : (
                      <Badge tone="ok">stored</Badge>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
          <p className="field-hint">{allShown(s.versions.length, "versions")}</p>
          {mayWrite && !s.deleteTime ? <PutSecret key={String(s.latestVersion)} secret={s} onSaved={() => undefined} /> : null}
        </div>
      )}
    </Card>
  );
}

/** decode shows a value as text when it is UTF-8, else as hex. */
function decode(bytes: Uint8Array): { text: string; binary: boolean } {
  try {
    return { text: new TextDecoder("utf-8", { fatal: true }).decode(bytes), binary: false };
  } catch {
    return { text: Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(""), binary: true };
  }
}

/** Reveal asks for a reason (audited) and a version, then shows the value masked until
 * asked; Hide forgets it. gcTime 0: the answer leaves the mutation cache as soon as
 * nothing shows it. */
function Reveal({ name, versions }: { name: string; versions: bigint[] }) {
  const id = useId();
  const queryClient = useQueryClient();
  const [asking, setAsking] = useState(false);
  const [reason, setReason] = useState("");
  const [version, setVersion] = useState("0");
  const [visible, setVisible] = useState(false);
  const reveal = useMutation(SecretService.method.revealSecret, { gcTime: 0, onSettled: () => invalidate(queryClient) });
  const value = reveal.data ? decode(reveal.data.value) : undefined;
  function hide() {
    reveal.reset();
    setVisible(false);
  }
  async function submit(e: FormEvent) {
    e.preventDefault();
    try {
      await reveal.mutateAsync({ name, version: BigInt(version), reason: reason.trim() });
      setVisible(false);
      setReason("");
      setAsking(false);
    } catch {
      // reveal.error shows it.
    }
  }
  return (
    <div className={styles.stack}>
      {reveal.data && value ? (
        <div className={styles.stack}>
          <p className="field-hint">
            Version {String(reveal.data.version)}
            {value.binary ? " (not text: shown as hex)" : ""}. The reveal is in the audit log.
          </p>
          <code className={styles.secret} aria-label="Secret value" data-testid="secret-value">
            {visible ? value.text : "•".repeat(Math.min(24, Math.max(8, value.text.length)))}
          </code>
          <div className={styles.row}>
            <button type="button" className="button" onClick={() => setVisible(!visible)} aria-pressed={visible}>
              {visible ? "Mask value" : "Show value"}
            </button>
            <button type="button" className="button" onClick={() => void navigator.clipboard.writeText(value.text)}>
              Copy value
            </button>
            <button type="button" className="button" onClick={hide}>
              Forget value
            </button>
          </div>
        </div>
      ) : (
        <div>
          <button type="button" className="button" onClick={() => setAsking(true)}>
            Reveal value…
          </button>
        </div>
      )}
      <Dialog title={`Reveal ${name}`} open={asking} onClose={() => setAsking(false)}>
        <form onSubmit={submit} className={styles.stack}>
          <p>The value is shown masked until you ask; the reveal and its reason are audited.</p>
          <div className="field">
            <label htmlFor={`${id}-reason`}>Reason</label>
            <input id={`${id}-reason`} value={reason} onChange={(e) => setReason(e.target.value)} required maxLength={256} data-autofocus />
          </div>
          <div className="field">
            <label htmlFor={`${id}-version`}>Version</label>
            <select id={`${id}-version`} value={version} onChange={(e) => setVersion(e.target.value)}>
              <option value="0">latest</option>
              {versions.map((v) => (
                <option key={String(v)} value={String(v)}>
                  {String(v)}
                </option>
              ))}
            </select>
          </div>
          {reveal.error ? <ErrorPanel error={reveal.error} title="palyrad refused the reveal" /> : null}
          <div className={styles.row}>
            <button type="button" className="button" onClick={() => setAsking(false)}>
              Cancel
            </button>
            <button type="submit" className="button button-primary" disabled={reveal.isPending || !reason.trim()} aria-busy={reveal.isPending}>
              Reveal
            </button>
          </div>
        </form>
      </Dialog>
    </div>
  );
}
