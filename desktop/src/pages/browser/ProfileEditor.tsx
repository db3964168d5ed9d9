// The browser profile form, for a new profile and for a new revision of one: its
// identity (user agent, viewport, locale, time zone), its proxy as a reference to a
// secret (the vault's names offered when the principal may list them), the domains it
// may visit as a list of rows, and its labels. palyrad checks the definition and names
// every field at fault; each problem shows on its field. An edit is saved against the
// revision it began from: a stale one is refused (Aborted, ErrorInfo STALE_REVISION)
// and the form then says what changed meanwhile and lets the user save over it or take
// the new revision, as the agent form does.
import { useId, useMemo, useState, type FormEvent, type ReactNode } from "react";
import { useMutation, useQuery } from "@connectrpc/connect-query";
import { BrowserProfileService, type BrowserProfile } from "../../../../gen/ts/palyra/browser/v1/browser_pb.js";
import { SecretService } from "../../../../gen/ts/palyra/controlplane/v1/secrets_pb.js";
import { usePermission } from "../../session.js";
import { Card } from "../../components/Page.js";
import { ErrorPanel } from "../../components/ErrorPanel.js";
import { errorInfo } from "../../components/errorInfo.js";
import { StaleConflict, type Conflict } from "../../components/Revisions.js";
import { fieldViolations } from "../../components/fieldViolations.js";
import { Problem } from "../../components/Problem.js";
import { count } from "../../components/plural.js";
import { useInvalidateProfiles } from "./profiles.js";
import { differences, emptyDraft, fromSpec, newDomain, placeViolations, toSpec, type Draft, type Field, type Problems } from "./profileSpec.js";
import admin from "../admin.module.css";
import styles from "./browser.module.css";

/** STALE_REVISION is the ErrorInfo reason of a stale expected_revision. */
const STALE_REVISION = "STALE_REVISION";
/** MAX_DOMAINS is the most allowed domains a profile has (BrowserProfileSpec.allowed_domains). */
const MAX_DOMAINS = 64;

/** Saved is what a save answered. */
export interface Saved {
  profile: BrowserProfile;
  warnings: string[];
  created: boolean;
}

/** useTimeZones is the IANA names this browser knows, for suggestions. */
function useTimeZones(): string[] {
  return useMemo(() => {
    try {
      return Intl.supportedValuesOf("timeZone");
    } catch {
      return [];
    }
  }, []);
}

export function ProfileEditor({ profile, onSaved, onCancel }: { profile?: BrowserProfile; onSaved: (s: Saved) => void; onCancel: () => void }) {
  const id = useId();
  const [draft, setDraft] = useState<Draft>(() => (profile ? fromSpec(profile.spec) : emptyDraft()));
  // The revision the edit began from, even if the page reads a newer one meanwhile.
  const [base, setBase] = useState(profile?.revision ?? 0n);
  const [conflict, setConflict] = useState<Conflict>();
  const [error, setError] = useState<unknown>();
  const [problems, setProblems] = useState<Problems>({ on: {}, elsewhere: [] });
  const invalidate = useInvalidateProfiles();
  const create = useMutation(BrowserProfileService.method.createBrowserProfile);
  const update = useMutation(BrowserProfileService.method.updateBrowserProfile);
  const current = useMutation(BrowserProfileService.method.getBrowserProfile);
  const maySecrets = usePermission("secrets.list");
  const secrets = useQuery(SecretService.method.listSecrets, { pageSize: 500 }, { enabled: maySecrets });
  const zones = useTimeZones();
  const busy = create.isPending || update.isPending;
  const set = (patch: Partial<Draft>) => setDraft((d) => ({ ...d, ...patch }));

  async function save(expected: bigint) {
    setError(undefined);
    setProblems({ on: {}, elsewhere: [] });
    let built;
    try {
      built = toSpec(draft);
    } catch (err) {
      setError(err);
      return;
    }
    try {
      setConflict(undefined);
      if (!profile) {
        const res = await create.mutateAsync({ spec: built.spec });
        onSaved({ profile: res.profile!, warnings: res.warnings, created: true });
      } else {
        const res = await update.mutateAsync({ profile: { case: "id", value: profile.id }, spec: built.spec, expectedRevision: expected });
        onSaved({ profile: res.profile!, warnings: res.warnings, created: false });
      }
      void invalidate();
    } catch (err) {
      const info = errorInfo(err);
      if (profile && info?.reason === STALE_REVISION && info.metadata.current_revision) {
        setConflict({ base: expected, current: BigInt(info.metadata.current_revision) });
        current.mutate({ profile: { case: "id", value: profile.id } });
        void invalidate();
        return;
      }
      setProblems(placeViolations(fieldViolations(err), built.domainKeys));
      setError(err);
    }
  }

  function submit(e: FormEvent) {
    e.preventDefault();
    void save(base);
  }

  /** takeTheirs drops the edit and starts again from the current revision. */
  function takeTheirs() {
    const p = current.data?.profile;
    if (p) {
      setDraft(fromSpec(p.spec));
      setBase(p.revision);
    }
    setConflict(undefined);
  }

  const on = problems.on;
  const theirs = current.data?.profile;
  const secretNames = (secrets.data?.secrets ?? []).filter((s) => !s.deleteTime).map((s) => s.name);
  const field = (f: Field) => ({ problem: on[f], id: `${id}-${f}` });
  return (
    <Card title={profile ? `Edit ${profile.spec?.name}` : "Definition"}>
      <form onSubmit={submit} className={admin.stack} aria-label={profile ? `Edit browser profile ${profile.spec?.name}` : "New browser profile"} noValidate>
        {conflict ? (
          <StaleConflict
            what="profile"
            conflict={conflict}
            theirs={theirs}
            differences={() => differences(theirs?.spec, draft)}
            error={current.error}
            busy={busy}
            onSaveOver={() => void save(conflict.current)}
            onTakeTheirs={takeTheirs}
          />
        ) : null}
        <div className={styles.grid}>
          <TextField {...field("name")} label="Name" value={draft.name} onChange={(name) => set({ name })} required maxLength={63} hint={<>Lower-case letters, digits and “-”; dispatches name it as <code>"profile": "{draft.name || "NAME"}"</code>.</>} />
          <TextField {...field("locale")} label="Locale" value={draft.locale} onChange={(locale) => set({ locale })} maxLength={35} placeholder="Chromium's own, e.g. en-GB" />
          <TextField {...field("timeZone")} label="Time zone" value={draft.timeZone} onChange={(timeZone) => set({ timeZone })} maxLength={64} placeholder="the node's, e.g. Europe/London" suggestions={zones} />
        </div>
        <TextField {...field("description")} label="Description" value={draft.description} onChange={(description) => set({ description })} maxLength={1024} />
        <TextField {...field("userAgent")} label="User agent" value={draft.userAgent} onChange={(userAgent) => set({ userAgent })} maxLength={512} placeholder="Chromium's own" />
        <fieldset className={styles.fieldset}>
          <legend>Viewport (CSS pixels; empty: 1280×800)</legend>
          <div className={styles.grid}>
            <TextField {...field("width")} label="Width" value={draft.width} onChange={(width) => set({ width: width.replace(/\D/g, "") })} inputMode="numeric" placeholder="1280, 100 to 7680" />
            <TextField {...field("height")} label="Height" value={draft.height} onChange={(height) => set({ height: height.replace(/\D/g, "") })} inputMode="numeric" placeholder="800, 100 to 4320" />
          </div>
        </fieldset>
        <TextField
          {...field("proxy")}
          label="Proxy"
          value={draft.proxy}
          onChange={(proxy) => set({ proxy })}
          maxLength={128}
          placeholder="none, or secret:NAME"
          suggestions={secretNames.map((n) => `secret:${n}`)}
          hint={
            <>
              A reference to the secret holding the proxy's URL with its credentials, <code>secret:NAME</code> or <code>secret:NAME@VERSION</code>, resolved at each dispatch.
              {maySecrets ? (secretNames.length > 0 ? ` Suggested: the vault's ${count(secretNames.length, "secrets")}.` : " The vault holds no secret yet.") : " Listing the vault's secrets needs the permission secrets.list."}
            </>
          }
        />
        <DomainsField draft={draft} onChange={(domains) => set({ domains })} problems={problems} />
        <div className="field">
          <label htmlFor={`${id}-labels`}>Labels (one key=value a line)</label>
          <textarea
            id={`${id}-labels`}
            value={draft.labels}
            onChange={(e) => set({ labels: e.target.value })}
            rows={3}
            spellCheck={false}
            aria-invalid={on.labels !== undefined}
            aria-describedby={on.labels ? `${id}-labels-problem` : undefined}
          />
          <Problem id={`${id}-labels-problem`} text={on.labels} />
        </div>
        {profile ? <p className="field-hint">Saved as a new revision against revision {String(base)}; its state stays, and dispatches not yet sent browse with the new definition.</p> : null}
        {error ? <ErrorPanel error={error} title="palyrad refused the browser profile" /> : null}
        {problems.elsewhere.length > 0 ? (
          <ul className={admin.error}>
            {problems.elsewhere.map((v) => (
              <li key={v.field + v.description}>
                <code>{v.field}</code>: {v.description}
              </li>
            ))}
          </ul>
        ) : null}
        <div className={admin.row}>
          <button type="submit" className="button button-primary" disabled={busy} aria-busy={busy}>
            {busy ? "Saving…" : profile ? "Save profile" : "Create profile"}
          </button>
          <button type="button" className="button" onClick={onCancel}>
            Cancel
          </button>
        </div>
      </form>
    </Card>
  );
}

function TextField({
  id,
  label,
  value,
  onChange,
  problem,
  hint,
  suggestions,
  ...rest
}: {
  id: string;
  label: string;
  value: string;
  onChange: (v: string) => void;
  problem?: string;
  hint?: ReactNode;
  suggestions?: string[];
  required?: boolean;
  maxLength?: number;
  placeholder?: string;
  inputMode?: "numeric";
}) {
  const describedBy = [hint ? `${id}-hint` : "", problem ? `${id}-problem` : ""].filter(Boolean).join(" ") || undefined;
  return (
    <div className="field">
      <label htmlFor={id}>{label}</label>
      <input
        id={id}
        value={value}
        onChange={(e) => onChange(e.target.value)}
        spellCheck={false}
        aria-invalid={problem !== undefined}
        aria-describedby={describedBy}
        list={suggestions && suggestions.length > 0 ? `${id}-list` : undefined}
        {...rest}
      />
      {suggestions && suggestions.length > 0 ? (
        <datalist id={`${id}-list`}>
          {suggestions.map((s) => (
            <option key={s} value={s} />
          ))}
        </datalist>
      ) : null}
      {hint ? (
        <p id={`${id}-hint`} className="field-hint">
          {hint}
        </p>
      ) : null}
      <Problem id={`${id}-problem`} text={problem} />
    </div>
  );
}

function DomainsField({ draft, onChange, problems }: { draft: Draft; onChange: (rows: Draft["domains"]) => void; problems: Problems }) {
  const id = useId();
  const rows = draft.domains;
  const edit = (key: number, value: string) => onChange(rows.map((r) => (r.key === key ? { ...r, value } : r)));
  const whole = problems.on.domains;
  return (
    <fieldset className={styles.fieldset} aria-describedby={`${id}-hint${whole ? ` ${id}-problem` : ""}`}>
      <legend>Allowed domains ({count(rows.filter((r) => r.value.trim()).length, "domains")})</legend>
      <p id={`${id}-hint`} className="field-hint">
        The hosts the browser may load anything from, at least one: a domain name allows itself and its subdomains, an IP address only itself; any port. No scheme, port, path or wildcard.
      </p>
      <Problem id={`${id}-problem`} text={whole} />
      {rows.map((r, i) => {
        const problem = problems.on[`domain:${r.key}`];
        return (
          <div key={r.key} className={styles.domain}>
            <div className="field">
              <label htmlFor={`${id}-${r.key}`}>Domain {i + 1}</label>
              <input
                id={`${id}-${r.key}`}
                value={r.value}
                onChange={(e) => edit(r.key, e.target.value)}
                placeholder="e.g. example.com"
                spellCheck={false}
                maxLength={253}
                aria-invalid={problem !== undefined}
                aria-describedby={problem ? `${id}-${r.key}-problem` : undefined}
              />
              <Problem id={`${id}-${r.key}-problem`} text={problem} />
            </div>
            <button type="button" className="button button-small" onClick={() => onChange(rows.length > 1 ? rows.filter((x) => x.key !== r.key) : [newDomain()])} aria-label={`Remove domain ${i + 1}${r.value ? ` (${r.value})` : ""}`}>
              Remove
            </button>
          </div>
        );
      })}
      <div>
        <button type="button" className="button" disabled={rows.length >= MAX_DOMAINS} onClick={() => onChange([...rows, newDomain()])}>
          Add a domain
        </button>
      </div>
    </fieldset>
  );
}
