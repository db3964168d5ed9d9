// Usage: the tokens the OpenAI-compatible API's calls used (CompatService.GetUsage), per
// API token, UTC day, model and provider, with the totals, each token's daily budget and
// what it spent today. Filters (token, since) live in the URL. GetUsage does not page:
// the page asks for the last 30 days unless told otherwise and shows at most ROW_CAP
// rows, saying so (the totals count every row).
import { useState, type FormEvent } from "react";
import { useSearchParams } from "react-router";
import { useQuery } from "@connectrpc/connect-query";
import { CompatService, type TokenUsage, type UsageTotals } from "../../../../gen/ts/palyra/compat/v1/compat_pb.js";
import { usePermission, useSession } from "../../session.js";
import { Card, Page } from "../../components/Page.js";
import { CompatError } from "./CompatError.js";
import styles from "./compat.module.css";
import { allShown } from "../../components/plural.js";

/** ROW_CAP is the most usage rows the page shows at once. */
export const ROW_CAP = 500;
const DAYS = 30;
const TOKEN_ID = /^[0-9A-HJKMNP-TV-Z]{26}$/;

/** defaultSince is the UTC day DAYS-1 days before today: the last DAYS days. */
function defaultSince(): string {
  return new Date(Date.now() - (DAYS - 1) * 86_400_000).toISOString().slice(0, 10);
}

const n = new Intl.NumberFormat();

export default function Usage() {
  const may = usePermission("compat.usage.read");
  if (!may) {
    return (
      <Page title="Usage">
        <p className="field-hint">
          Needs the permission <code>compat.usage.read</code> (owners and admins).
        </p>
      </Page>
    );
  }
  return <UsageBody />;
}

function UsageBody() {
  const { state } = useSession();
  const myToken = state.kind === "signedIn" ? state.session.principal?.tokenId : undefined;
  const [params, setParams] = useSearchParams();
  const tokenId = params.get("token") ?? "";
  const sinceParam = params.get("since");
  const since = sinceParam === "all" ? "" : sinceParam ?? defaultSince();
  const usage = useQuery(CompatService.method.getUsage, { tokenId, sinceDay: since }, { refetchInterval: 30_000 });

  const [tokenField, setTokenField] = useState(tokenId);
  const [sinceField, setSinceField] = useState(since);
  const tokenInvalid = tokenField !== "" && !TOKEN_ID.test(tokenField.trim());
  const apply = (e: FormEvent) => {
    e.preventDefault();
    if (tokenInvalid) return;
    const next = new URLSearchParams();
    if (tokenField.trim()) next.set("token", tokenField.trim());
    next.set("since", sinceField || "all");
    setParams(next);
  };
  const filterToken = (id: string) => {
    setTokenField(id);
    const next = new URLSearchParams(params);
    next.set("token", id);
    setParams(next);
  };

  const data = usage.data;
  const labels = new Map((data?.tokens ?? []).map((t) => [t.tokenId, t.label]));
  const rows = data?.rows ?? [];
  return (
    <Page title="Usage" description="Tokens used through the OpenAI-compatible API, as the providers counted them, per API token and UTC day.">
      <form className={styles.filters} onSubmit={apply} aria-label="Usage filters">
        <div className="field">
          <label htmlFor="usage-token">API token id</label>
          <input
            id="usage-token"
            value={tokenField}
            onChange={(e) => setTokenField(e.target.value)}
            placeholder="every token"
            spellCheck={false}
            aria-invalid={tokenInvalid}
            aria-describedby="usage-token-hint"
            size={30}
          />
          <p id="usage-token-hint" className="field-hint">
            {tokenInvalid ? "A token id is 26 characters of Crockford base32 (0-9, A-Z without I L O U)." : "Empty: every token."}
          </p>
        </div>
        <div className="field">
          <label htmlFor="usage-since">Since (UTC day)</label>
          <input id="usage-since" type="date" value={sinceField} onChange={(e) => setSinceField(e.target.value)} aria-describedby="usage-since-hint" />
          <p id="usage-since-hint" className="field-hint">Empty: every day.</p>
        </div>
        <div className={styles.filterActions}>
          <button type="submit" className="button button-primary" disabled={tokenInvalid}>
            Apply
          </button>
          {myToken ? (
            <button type="button" className="button" onClick={() => filterToken(myToken)}>
              My token
            </button>
          ) : null}
        </div>
      </form>
      {usage.error ? (
        <CompatError error={usage.error} title="The usage could not be read" />
      ) : !data ? (
        <p role="status" className="field-hint">Loading…</p>
      ) : (
        <>
          <div className={styles.grid}>
            <Card title="Totals">
              <Totals totals={data.totals} />
              <p className="field-hint">
                {tokenId ? <>Token <code>{tokenId}</code></> : "Every token"}, {since ? <>from {since}</> : "every day"}; today is {data.today} (UTC).
              </p>
            </Card>
            <Card title="Budgets and today's spend">
              <Budgets tokens={data.tokens} onFilter={filterToken} />
            </Card>
          </div>
          <Card title="Per token and day">
            {rows.length === 0 ? (
              <p className="field-hint">No usage {since ? `since ${since}` : "recorded"}.</p>
            ) : (
              <>
                <div className={styles.scroll}>
                  <table className="table">
                    <caption className="visually-hidden">Usage per day, API token, model and provider</caption>
                    <thead>
                      <tr>
                        <th scope="col">Day</th>
                        <th scope="col">Token</th>
                        <th scope="col">Model</th>
                        <th scope="col">Provider</th>
                        <th scope="col" className={styles.num}>Requests</th>
                        <th scope="col" className={styles.num}>Prompt</th>
                        <th scope="col" className={styles.num}>Completion</th>
                        <th scope="col" className={styles.num}>Total</th>
                      </tr>
                    </thead>
                    <tbody>
                      {rows.slice(0, ROW_CAP).map((r) => (
                        <tr key={`${r.day}/${r.tokenId}/${r.model}/${r.provider}`}>
                          <td className={styles.nowrap}>{r.day}</td>
                          <td>
                            <button type="button" className={styles.linkButton} onClick={() => filterToken(r.tokenId)} title="Show only this token">
                              {labels.get(r.tokenId) ? <>{labels.get(r.tokenId)} </> : null}
                              <code>{r.tokenId}</code>
                            </button>
                          </td>
                          <td className={styles.nowrap}><code>{r.model}</code></td>
                          <td>{r.provider}</td>
                          <td className={styles.num}>{n.format(r.requests)}</td>
                          <td className={styles.num}>{n.format(r.promptTokens)}</td>
                          <td className={styles.num}>{n.format(r.completionTokens)}</td>
                          <td className={styles.num}>{n.format(r.totalTokens)}</td>
                        </tr>
                      ))}
                    </tbody>
                  </table>
                </div>
                <p className="field-hint" aria-live="polite">
                  {rows.length > ROW_CAP
                    ? `The first ${ROW_CAP} of ${rows.length} rows are shown (the totals count all of them): narrow the days or pick a token.`
                    : allShown(rows.length, "rows")}
                </p>
              </>
            )}
          </Card>
        </>
      )}
    </Page>
  );
}

function Totals({ totals }: { totals: UsageTotals | undefined }) {
  const t = totals ?? { requests: 0n, promptTokens: 0n, completionTokens: 0n, totalTokens: 0n };
  const cells: [string, bigint][] = [
    ["Requests", t.requests],
    ["Prompt tokens", t.promptTokens],
    ["Completion tokens", t.completionTokens],
    ["Total tokens", t.totalTokens],
  ];
  return (
    <dl className={styles.totals}>
      {cells.map(([k, v]) => (
        <div key={k}>
          <dt>{k}</dt>
          <dd>{n.format(v)}</dd>
        </div>
      ))}
    </dl>
  );
}

function Budgets({ tokens, onFilter }: { tokens: TokenUsage[]; onFilter: (id: string) => void }) {
  if (tokens.length === 0) return <p className="field-hint">No tokens in the result.</p>;
  return (
    <table className="table">
      <caption className="visually-hidden">Each token's daily token budget and what it used today</caption>
      <thead>
        <tr>
          <th scope="col">Token</th>
          <th scope="col" className={styles.num}>Spent today</th>
          <th scope="col">Daily budget</th>
        </tr>
      </thead>
      <tbody>
        {tokens.map((t) => {
          const budget = t.dailyTokenBudget;
          const share = budget ? Number(t.spentToday) / Number(budget) : 0;
          return (
            <tr key={t.tokenId}>
              <td>
                <button type="button" className={styles.linkButton} onClick={() => onFilter(t.tokenId)} title="Show only this token">
                  {t.label ? <>{t.label} </> : null}
                  <code>{t.tokenId}</code>
                </button>
              </td>
              <td className={styles.num}>{n.format(t.spentToday)}</td>
              <td>
                {budget === undefined ? (
                  "none"
                ) : (
                  <span className={styles.budget}>
                    <meter min={0} max={Number(budget)} value={Math.min(Number(t.spentToday), Number(budget))} high={Number(budget) * 0.8} optimum={0}
                      aria-label={`${t.label || t.tokenId}: ${Math.round(share * 100)}% of the daily budget spent`} />
                    {n.format(budget)} ({share >= 1 ? "spent: refused until UTC midnight" : `${Math.round(share * 100)}%`})
                  </span>
                )}
              </td>
            </tr>
          );
        })}
      </tbody>
    </table>
  );
}
