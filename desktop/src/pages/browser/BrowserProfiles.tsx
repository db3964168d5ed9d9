// Browser profiles: the list (by name, filtered by a label selector in the address), a
// new profile (?new), and one profile (?profile=NAME): its definition, its state's
// version, size and when it was saved (never the state itself), and the warnings
// palyrad gives about it; editing it as a new revision, resetting its state and
// deleting it after a confirmation (browser.write; hidden without it, and palyrad
// decides).
import { useEffect, useId, useState, type FormEvent } from "react";
import { Link, useLocation, useNavigate, useSearchParams } from "react-router";
import { useMutation, useQuery } from "@connectrpc/connect-query";
import { BrowserProfileService, type BrowserProfile } from "../../../../gen/ts/palyra/browser/v1/browser_pb.js";
import { usePermission } from "../../session.js";
import { Card, Page } from "../../components/Page.js";
import { ErrorPanel } from "../../components/ErrorPanel.js";
import { RelativeTime } from "../../components/RelativeTime.js";
import { Labels } from "../../components/Labels.js";
import { Confirm } from "../../components/Dialog.js";
import { RevisionFacts, SavedNotice, WarningsNote, type SavedState } from "../../components/Revisions.js";
import { usePagedList } from "../../components/paging.js";
import { ListBody, Loading, Needs, TableHead } from "../../components/ListBody.js";
import { count } from "../../components/plural.js";
import { ProfileEditor, type Saved } from "./ProfileEditor.js";
import { profileLink, useInvalidateProfiles } from "./profiles.js";
import admin from "../admin.module.css";

export default function BrowserProfiles() {
  const [params] = useSearchParams();
  const name = params.get("profile");
  if (params.has("new")) return <NewProfile />;
  return name ? <ProfileDetail name={name} /> : <ProfileList />;
}

/** useLandOnSaved goes to a saved profile's page, telling it what the save answered. */
function useLandOnSaved() {
  const navigate = useNavigate();
  return (s: Saved) =>
    navigate(profileLink(s.profile.spec?.name ?? ""), {
      state: { saved: { revision: String(s.profile.revision), warnings: s.warnings, created: s.created } } satisfies SavedState,
    });
}

/** stateSummary says what state a profile holds, in a phrase. */
function StateSummary({ p }: { p: BrowserProfile }) {
  if (p.stateVersion === 0n) return <>none</>;
  return (
    <>
      version {String(p.stateVersion)}, {count(Number(p.stateSizeBytes), "bytes")}, saved <RelativeTime value={p.stateSaveTime} />
    </>
  );
}

/** viewportText is "1280×800". */
function viewportText(p: BrowserProfile): string {
  const v = p.spec?.viewport;
  return v ? `${v.width}×${v.height}` : "1280×800";
}

function NewProfile() {
  const may = usePermission("browser.write");
  const land = useLandOnSaved();
  const navigate = useNavigate();
  return (
    <Page title="New browser profile" description={<Link to="/browser">All browser profiles</Link>}>
      {may ? <ProfileEditor onSaved={land} onCancel={() => navigate("/browser")} /> : <Needs permission="browser.write" what="Creating browser profiles needs" />}
    </Page>
  );
}

function ProfileList() {
  const id = useId();
  const may = usePermission("browser.write");
  const [params, setParams] = useSearchParams();
  const selector = params.get("selector") ?? "";
  const [draft, setDraft] = useState(selector);
  const list = usePagedList(BrowserProfileService.method.listBrowserProfiles, { labelSelector: selector, pageSize: 50 }, (p) => p.profiles);
  function apply(e: FormEvent) {
    e.preventDefault();
    setParams((p) => (draft.trim() ? p.set("selector", draft.trim()) : p.delete("selector"), p));
  }
  return (
    <Page
      title="Browser profiles"
      description={
        <>
          Browser identities nodes browse with (<code>browser.navigate</code>, <code>browser.screenshot</code>): user agent, viewport, locale, time zone, proxy, the domains
          they may visit, and their cookies and local storage, kept sealed by palyrad and never shown.
        </>
      }
      actions={
        may ? (
          <Link className="button button-primary" to="/browser?new">
            New profile
          </Link>
        ) : null
      }
    >
      <Card title="All browser profiles">
        <form className={admin.filters} onSubmit={apply} aria-label="Filter browser profiles">
          <div className="field">
            <label htmlFor={`${id}-selector`}>Label selector</label>
            <input id={`${id}-selector`} value={draft} onChange={(e) => setDraft(e.target.value)} placeholder="e.g. team=web" spellCheck={false} />
          </div>
          <button type="submit" className="button">
            Filter
          </button>
        </form>
        {!may ? <p className="field-hint">Creating and changing browser profiles needs the permission <code>browser.write</code>.</p> : null}
        <ListBody list={list} noun="browser profiles">
          {(rows) => (
            <table className="table">
              <caption className="visually-hidden">Browser profiles, by name</caption>
              <TableHead columns={["Profile", "Allowed domains", "Viewport", "State", "Labels", "Revision"]} />
              <tbody>
                {rows.map((p) => (
                  <tr key={p.id}>
                    <td>
                      <Link to={profileLink(p.spec?.name ?? "")}>{p.spec?.name}</Link>
                      {p.spec?.description ? <div className={admin.muted}>{p.spec.description}</div> : null}
                    </td>
                    <td>{p.spec?.allowedDomains.join(", ")}</td>
                    <td>{viewportText(p)}</td>
                    <td>
                      <StateSummary p={p} />
                    </td>
                    <td>
                      <Labels labels={p.spec?.labels ?? {}} none="none" />
                    </td>
                    <td>
                      {String(p.revision)}, <RelativeTime value={p.updateTime} />
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

function ProfileDetail({ name }: { name: string }) {
  const mayWrite = usePermission("browser.write");
  const location = useLocation();
  const navigate = useNavigate();
  const land = useLandOnSaved();
  const invalidate = useInvalidateProfiles();
  const got = useQuery(BrowserProfileService.method.getBrowserProfile, { profile: { case: "name", value: name } }, { refetchInterval: 10_000 });
  const [editing, setEditing] = useState(false);
  const [confirm, setConfirm] = useState<"none" | "delete" | "reset">("none");
  const [reset, setReset] = useState<bigint>();
  const remove = useMutation(BrowserProfileService.method.deleteBrowserProfile);
  const resetState = useMutation(BrowserProfileService.method.resetBrowserProfileState);
  const saved = (location.state as SavedState | null)?.saved;
  const p = got.data?.profile;
  const spec = p?.spec;
  useEffect(() => setEditing(false), [name]);

  return (
    <Page
      title={`Browser profile ${name}`}
      description={
        <>
          <Link to="/browser">All browser profiles</Link> · <Link to="/dispatches?capability=browser.navigate">Dispatches of browser.navigate</Link>
        </>
      }
      actions={
        p && mayWrite && !editing ? (
          <>
            <button type="button" className="button" onClick={() => setEditing(true)}>
              Edit
            </button>
            <button type="button" className="button" onClick={() => setConfirm("reset")} disabled={p.stateVersion === 0n}>
              Reset state…
            </button>
            <button type="button" className="button button-danger" onClick={() => setConfirm("delete")}>
              Delete…
            </button>
          </>
        ) : null
      }
    >
      {saved && p && String(p.revision) === saved.revision ? <SavedNotice saved={saved} created="Browser profile created" /> : null}
      {reset !== undefined ? (
        <div className={admin.ok} role="status" aria-label="State reset">
          <p>The state was reset: {count(Number(reset), "stored versions")} dropped. The next dispatch starts with no cookies and no local storage.</p>
        </div>
      ) : null}
      {got.error ? <ErrorPanel error={got.error} title="The browser profile could not be read" /> : null}
      {!p && !got.error ? <Loading /> : null}
      {p && editing ? (
        <ProfileEditor
          profile={p}
          onSaved={(s) => {
            setEditing(false);
            setReset(undefined);
            land(s);
          }}
          onCancel={() => setEditing(false)}
        />
      ) : null}
      {p && spec && !editing ? (
        <>
          {got.data && !saved ? <WarningsNote warnings={got.data.warnings} /> : null}
          <Card title="Definition">
            <dl className={admin.facts}>
              <div>
                <dt>Description</dt>
                <dd>{spec.description || <span className={admin.muted}>none</span>}</dd>
              </div>
              <div>
                <dt>Allowed domains</dt>
                <dd>
                  <ul className={admin.chips} aria-label="Allowed domains">
                    {spec.allowedDomains.map((d) => (
                      <li key={d}>
                        <code>{d}</code>
                      </li>
                    ))}
                  </ul>
                </dd>
              </div>
              <div>
                <dt>User agent</dt>
                <dd>{spec.userAgent ? <code>{spec.userAgent}</code> : <span className={admin.muted}>Chromium's own</span>}</dd>
              </div>
              <div>
                <dt>Viewport</dt>
                <dd>{viewportText(p)} CSS pixels</dd>
              </div>
              <div>
                <dt>Locale</dt>
                <dd>{spec.locale ? <code>{spec.locale}</code> : <span className={admin.muted}>Chromium's own</span>}</dd>
              </div>
              <div>
                <dt>Time zone</dt>
                <dd>{spec.timeZone ? <code>{spec.timeZone}</code> : <span className={admin.muted}>the node's</span>}</dd>
              </div>
              <div>
                <dt>Proxy</dt>
                <dd>{spec.proxy ? <code>{spec.proxy}</code> : <span className={admin.muted}>none</span>}</dd>
              </div>
              <RevisionFacts labels={spec.labels} of={p} />
            </dl>
          </Card>
          <Card title="State">
            <dl className={admin.facts}>
              <div>
                <dt>State</dt>
                <dd data-testid="profile-state">
                  <StateSummary p={p} />
                </dd>
              </div>
            </dl>
            <p className="field-hint">
              The cookies and local storage the last dispatch with this profile left, sealed by palyrad and sent only to the node of the next dispatch; never shown here.
            </p>
          </Card>
        </>
      ) : null}
      <Confirm
        title={`Delete browser profile ${name}?`}
        open={confirm === "delete"}
        onClose={() => setConfirm("none")}
        action="Delete profile"
        run={async () => {
          await remove.mutateAsync({ profile: { case: "id", value: p!.id }, expectedRevision: p!.revision });
          await invalidate();
          navigate("/browser");
        }}
      >
        <p>
          The profile and every version of its state are deleted. Dispatches naming it that were not sent yet fail; the state a running one sends back is discarded.
          Refused if the profile changed since revision {String(p?.revision)}.
        </p>
      </Confirm>
      <Confirm
        title={`Reset the state of ${name}?`}
        open={confirm === "reset"}
        onClose={() => setConfirm("none")}
        action="Reset state"
        run={async () => {
          const res = await resetState.mutateAsync({ profile: { case: "id", value: p!.id }, expectedRevision: p!.revision });
          setReset(res.droppedVersions);
          await invalidate();
        }}
      >
        <p>
          Every stored version of its cookies and local storage is dropped: the next dispatch with {name} starts signed out of everything. Its definition stays.
        </p>
      </Confirm>
    </Page>
  );
}
