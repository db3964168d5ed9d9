// API tokens: the list (by state, page by page), creating one (its secret shown once,
// with a copy button, and gone when the page is left), rotating one (the new secret
// likewise) and revoking one after a confirmation. Secrets live only in this page's
// state: they are never put in the query cache.
import { useId, useMemo, useState, type FormEvent } from "react";
import { createClient } from "@connectrpc/connect";
import { createConnectQueryKey, useTransport } from "@connectrpc/connect-query";
import { useQueryClient } from "@tanstack/react-query";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { AccessService, Role, TokenState, type Token } from "../../../gen/ts/palyra/access/v1/access_pb.js";
import { usePermission, useSession } from "../session.js";
import { Card, Page } from "../components/Page.js";
import { ErrorPanel } from "../components/ErrorPanel.js";
import { RelativeTime } from "../components/RelativeTime.js";
import { Badge, type Tone } from "../components/Badge.js";
import { Confirm } from "../components/Dialog.js";
import { usePagedList } from "../components/paging.js";
import { ListBody, TableHead } from "../components/ListBody.js";
import styles from "./admin.module.css";

const stateTones: Record<TokenState, Tone> = {
  [TokenState.UNSPECIFIED]: "neutral",
  [TokenState.ACTIVE]: "ok",
  [TokenState.EXPIRED]: "neutral",
  [TokenState.REVOKED]: "danger",
};

const expiries = [
  { value: "", label: "Never" },
  { value: "1", label: "In 1 day" },
  { value: "7", label: "In 7 days" },
  { value: "30", label: "In 30 days" },
  { value: "90", label: "In 90 days" },
  { value: "365", label: "In a year" },
];

function roleName(r: Role): string {
  return (Role[r] ?? String(r)).toLowerCase();
}

/** Revealed is a secret being shown once. */
interface Revealed {
  title: string;
  token: Token;
  secret: string;
}

export default function Tokens() {
  const may = usePermission("tokens.manage");
  const transport = useTransport();
  const client = useMemo(() => createClient(AccessService, transport), [transport]);
  const queryClient = useQueryClient();
  const [revealed, setRevealed] = useState<Revealed>();
  const [state, setState] = useState<TokenState>(TokenState.ACTIVE);
  const [rotating, setRotating] = useState<Token>();
  const [revoking, setRevoking] = useState<Token>();
  const list = usePagedList(AccessService.method.listTokens, { state, pageSize: 50 }, (p) => p.tokens, { enabled: may });
  const refresh = () => queryClient.invalidateQueries({ queryKey: createConnectQueryKey({ schema: AccessService.method.listTokens, cardinality: undefined }) });

  return (
    <Page title="API tokens" description="Tokens for the CLI, scripts and the console. A token's secret is shown once, when it is created or rotated.">
      {revealed ? <SecretOnce revealed={revealed} onDone={() => setRevealed(undefined)} /> : null}
      {may ? (
        <CreateToken
          create={async (req) => {
            const res = await client.createToken(req);
            setRevealed({ title: "Token created", token: res.token!, secret: res.secret });
            await refresh();
          }}
        />
      ) : null}
      <Card
        title="Tokens"
        aside={
          <div className="field">
            <label htmlFor="token-state" className="visually-hidden">
              Show tokens
            </label>
            <select id="token-state" value={state} onChange={(e) => setState(Number(e.target.value) as TokenState)}>
              <option value={TokenState.ACTIVE}>Active</option>
              <option value={TokenState.EXPIRED}>Expired</option>
              <option value={TokenState.REVOKED}>Revoked</option>
              <option value={TokenState.UNSPECIFIED}>All</option>
            </select>
          </div>
        }
      >
        <ListBody list={list} noun="tokens" needs={may ? undefined : "tokens.manage"}>
          {(rows) => <TokenTable rows={rows} onRotate={setRotating} onRevoke={setRevoking} />}
        </ListBody>
      </Card>
      <Confirm
        title={`Rotate token “${rotating?.label}”?`}
        open={Boolean(rotating)}
        onClose={() => setRotating(undefined)}
        action="Rotate token"
        run={async () => {
          const res = await client.rotateToken({ id: rotating!.id });
          setRevealed({ title: "Token rotated", token: res.token!, secret: res.secret });
          await refresh();
        }}
      >
        <p>
          A new token with the same role, scopes and rate limit replaces <code>{rotating?.id}</code>, which is revoked. Whatever uses the old secret
          stops working.
        </p>
      </Confirm>
      <Confirm
        title={`Revoke token “${revoking?.label}”?`}
        open={Boolean(revoking)}
        onClose={() => setRevoking(undefined)}
        action="Revoke token"
        reason={{ label: "Reason (recorded)" }}
        run={async (reason) => {
          await client.revokeToken({ id: revoking!.id, reason });
          await refresh();
        }}
      >
        <p>
          <code>{revoking?.id}</code> stops working at once, and so do the console sessions opened with it. This cannot be undone.
        </p>
      </Confirm>
    </Page>
  );
}

function TokenTable({ rows, onRotate, onRevoke }: { rows: Token[]; onRotate: (t: Token) => void; onRevoke: (t: Token) => void }) {
  const { state } = useSession();
  const own = state.kind === "signedIn" ? state.session.principal?.tokenId : undefined;
  return (
    <table className="table">
      <caption className="visually-hidden">API tokens, newest first</caption>
      <TableHead columns={["Label", "Role and scopes", "State", "Created", "Last used", "Expires", ""]} />
      <tbody>
        {rows.map((t) => (
          <tr key={t.id}>
            <td>
              <strong>{t.label}</strong>
              {t.id === own ? <> <Badge tone="neutral">this session</Badge></> : null}
              <br />
              <code className={styles.muted}>{t.id}</code>
            </td>
            <td>
              {roleName(t.role)}
              {t.scopes.length > 0 ? <> · {t.scopes.join(", ")}</> : null}
              <br />
              <span className={styles.muted}>{t.rateLimitPerMinute} calls/min</span>
            </td>
            <td>
              <Badge tone={stateTones[t.state]}>{(TokenState[t.state] ?? "").toLowerCase()}</Badge>
              {t.revokeReason ? <div className={styles.muted}>{t.revokeReason}</div> : null}
            </td>
            <td>
              <RelativeTime value={t.createTime} /> by {t.createdBy}
            </td>
            <td>
              <RelativeTime value={t.lastUseTime} />
            </td>
            <td>
              <RelativeTime value={t.expireTime} />
            </td>
            <td>
              {t.state === TokenState.ACTIVE ? (
                <div className={styles.row}>
                  <button type="button" className="button button-small" onClick={() => onRotate(t)} aria-label={`Rotate ${t.label}`}>
                    Rotate
                  </button>
                  <button type="button" className="button button-small" onClick={() => onRevoke(t)} aria-label={`Revoke ${t.label}`}>
                    Revoke
                  </button>
                </div>
              ) : null}
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function CreateToken({ create }: { create: (req: { label: string; role: Role; scopes: string[]; expireTime?: ReturnType<typeof timestampFromDate>; rateLimitPerMinute?: number }) => Promise<void> }) {
  const id = useId();
  const [label, setLabel] = useState("");
  const [role, setRole] = useState<Role>(Role.OPERATOR);
  const [scopes, setScopes] = useState("");
  const [expiry, setExpiry] = useState("90");
  const [rate, setRate] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>();

  async function submit(e: FormEvent) {
    e.preventDefault();
    setBusy(true);
    setError(undefined);
    try {
      await create({
        label: label.trim(),
        role,
        scopes: scopes.split(/[\s,]+/).filter(Boolean),
        expireTime: expiry ? timestampFromDate(new Date(Date.now() + Number(expiry) * 24 * 3600 * 1000)) : undefined,
        rateLimitPerMinute: rate ? Number(rate) : undefined,
      });
      setLabel("");
      setScopes("");
      setRate("");
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  }

  return (
    <Card title="Create a token">
      <form onSubmit={submit} className={styles.stack}>
        <div className={styles.filters}>
          <div className="field">
            <label htmlFor={`${id}-label`}>Label</label>
            <input id={`${id}-label`} value={label} onChange={(e) => setLabel(e.target.value)} required maxLength={64} />
          </div>
          <div className="field">
            <label htmlFor={`${id}-role`}>Role</label>
            <select id={`${id}-role`} value={role} onChange={(e) => setRole(Number(e.target.value) as Role)}>
              <option value={Role.OPERATOR}>operator</option>
              <option value={Role.ADMIN}>admin</option>
              <option value={Role.OWNER}>owner</option>
            </select>
          </div>
          <div className="field">
            <label htmlFor={`${id}-scopes`}>Scopes (optional)</label>
            <input id={`${id}-scopes`} value={scopes} onChange={(e) => setScopes(e.target.value)} placeholder="e.g. nodes.read status.read" spellCheck={false} aria-describedby={`${id}-scopes-hint`} />
          </div>
          <div className="field">
            <label htmlFor={`${id}-expiry`}>Expires</label>
            <select id={`${id}-expiry`} value={expiry} onChange={(e) => setExpiry(e.target.value)}>
              {expiries.map((x) => (
                <option key={x.value} value={x.value}>
                  {x.label}
                </option>
              ))}
            </select>
          </div>
          <div className="field">
            <label htmlFor={`${id}-rate`}>Calls a minute (optional)</label>
            <input id={`${id}-rate`} value={rate} onChange={(e) => setRate(e.target.value.replace(/\D/g, ""))} inputMode="numeric" placeholder="default" />
          </div>
        </div>
        <p id={`${id}-scopes-hint`} className="field-hint">
          Scopes narrow the role to the permissions named (separated by spaces or commas); none keeps all of the role's. A token never gets more than
          its creator holds.
        </p>
        {error ? <ErrorPanel error={error} title="The token was not created" /> : null}
        <div>
          <button type="submit" className="button button-primary" disabled={busy || !label.trim()} aria-busy={busy}>
            {busy ? "Creating…" : "Create token"}
          </button>
        </div>
      </form>
    </Card>
  );
}

/** SecretOnce shows a new token's secret, with a copy button, until dismissed. */
function SecretOnce({ revealed, onDone }: { revealed: Revealed; onDone: () => void }) {
  const [copied, setCopied] = useState<string>();
  async function copy() {
    try {
      await navigator.clipboard.writeText(revealed.secret);
      setCopied("Copied to the clipboard.");
    } catch (err) {
      setCopied(`The browser refused the clipboard (${String(err)}): select the secret and copy it.`);
    }
  }
  return (
    <Card title={revealed.title}>
      <div className={styles.stack}>
        <p className={styles.notice} role="status">
          This is the only time the secret of <strong>{revealed.token.label}</strong> (<code>{revealed.token.id}</code>) is shown. Copy it now; palyrad
          keeps only its hash.
        </p>
        <code className={styles.secret} aria-label="Token secret" data-testid="token-secret">
          {revealed.secret}
        </code>
        <div className={styles.row}>
          <button type="button" className="button button-primary" onClick={() => void copy()}>
            Copy secret
          </button>
          <button type="button" className="button" onClick={onDone}>
            I have saved it
          </button>
          <span aria-live="polite" className="field-hint">
            {copied}
          </span>
        </div>
      </div>
    </Card>
  );
}
