// The parts of a page that edits revisioned definitions (agents, browser profiles):
// what a save answered (SavedNotice, with palyrad's warnings), the warnings about a
// definition as things stand (WarningsNote), and the conflict of a stale edit
// (StaleConflict: what changed meanwhile, and saving over it or taking the new revision);
// and the facts of a stored one (RevisionFacts: labels, revision, id).
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { ErrorPanel } from "./ErrorPanel.js";
import { Labels } from "./Labels.js";
import { RelativeTime } from "./RelativeTime.js";
import admin from "../pages/admin.module.css";

/** Saved is what a save answered, as a page is told it (the router's location state). */
export interface SavedState {
  saved?: { revision: string; warnings: string[]; created: boolean };
}

/** SavedNotice says a definition was saved (created says so for a new one), with its warnings. */
export function SavedNotice({ saved, created }: { saved: NonNullable<SavedState["saved"]>; created: string }) {
  const warned = saved.warnings.length > 0;
  return (
    <div className={warned ? admin.notice : admin.ok} role="status" aria-label="Saved">
      <p>
        {saved.created ? created : `Saved as revision ${saved.revision}`}
        {warned ? ", with warnings:" : "."}
      </p>
      {warned ? (
        <ul>
          {saved.warnings.map((w) => (
            <li key={w}>{w}</li>
          ))}
        </ul>
      ) : null}
    </div>
  );
}

/** WarningsNote lists palyrad's warnings about a definition as things stand now. */
export function WarningsNote({ warnings }: { warnings: string[] }) {
  if (warnings.length === 0) return null;
  return (
    <div className={admin.notice} role="note" aria-label="Warnings">
      <p>As things stand now:</p>
      <ul>
        {warnings.map((w) => (
          <li key={w}>{w}</li>
        ))}
      </ul>
    </div>
  );
}

/** Conflict is an edit refused as stale: its base and the revision that is current. */
export interface Conflict {
  base: bigint;
  current: bigint;
}

/** Revisioned is what StaleConflict shows of the current revision. */
interface Revisioned {
  revision: bigint;
  updatedBy: string;
  updateTime?: Timestamp;
}

/** Stored is a stored definition, as RevisionFacts shows it. */
interface Stored extends Revisioned {
  id: string;
  createdBy: string;
  createTime?: Timestamp;
}

/** RevisionFacts are the rows of a definition list with a stored definition's labels,
 * its revision (who made it and when, who created it and when) and its id. */
export function RevisionFacts({ labels, of: s }: { labels: Record<string, string>; of: Stored }) {
  return (
    <>
      <div>
        <dt>Labels</dt>
        <dd>
          <Labels labels={labels} none="none" />
        </dd>
      </div>
      <div>
        <dt>Revision</dt>
        <dd>
          {String(s.revision)}, made <RelativeTime value={s.updateTime} /> by {s.updatedBy}; created <RelativeTime value={s.createTime} /> by {s.createdBy}
        </dd>
      </div>
      <div>
        <dt>ID</dt>
        <dd>
          <code>{s.id}</code>
        </dd>
      </div>
    </>
  );
}

/** StaleConflict says an edit of what (e.g. "agent") was refused as stale, and how the
 * current revision (theirs, once read; error if it could not be) differs from it. */
export function StaleConflict({
  what,
  conflict,
  theirs,
  differences,
  error,
  busy,
  onSaveOver,
  onTakeTheirs,
}: {
  what: string;
  conflict: Conflict;
  theirs?: Revisioned;
  differences: () => string[];
  error: unknown;
  busy: boolean;
  onSaveOver: () => void;
  onTakeTheirs: () => void;
}) {
  return (
    <div className={admin.notice} role="alert" aria-label="Conflict">
      <p>
        <strong>Your changes were not saved: the {what} changed meanwhile.</strong> You edited revision {String(conflict.base)}; it is now revision{" "}
        {String(conflict.current)}
        {theirs ? (
          <>
            , made by {theirs.updatedBy} <RelativeTime value={theirs.updateTime} />
          </>
        ) : null}
        .
      </p>
      {theirs ? (
        <>
          <p>Revision {String(theirs.revision)} compared with yours:</p>
          <ul className={admin.diff}>
            {differences().map((d) => (
              <li key={d}>{d}</li>
            ))}
          </ul>
        </>
      ) : error ? (
        <ErrorPanel error={error} />
      ) : null}
      <div className={admin.row}>
        <button type="button" className="button button-primary" disabled={busy || !theirs} onClick={onSaveOver}>
          Save mine over revision {String(conflict.current)}
        </button>
        <button type="button" className="button" disabled={!theirs} onClick={onTakeTheirs}>
          Discard mine, edit revision {String(conflict.current)}
        </button>
      </div>
    </div>
  );
}
