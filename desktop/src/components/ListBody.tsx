// The states of a part of a page that loads: what it needs when the principal lacks a
// permission, loading, the server's error, and for a paged list its rows and the
// "Load more" that continues it.
import type { ReactNode } from "react";
import { ErrorPanel } from "./ErrorPanel.js";
import { LoadMore } from "./paging.js";

/** Needs says which permission a part of a page needs. */
export function Needs({ permission, what = "Needs" }: { permission: string; what?: string }) {
  return (
    <p className="field-hint">
      {what} the permission <code>{permission}</code>.
    </p>
  );
}

/** Loading is the placeholder of what has not arrived yet. */
export function Loading({ what = "Loading…" }: { what?: string }) {
  return (
    <p role="status" className="field-hint">
      {what}
    </p>
  );
}

/** PagedList is what ListBody needs of usePagedList. */
export interface PagedList<T> {
  error: unknown;
  data: unknown;
  rows: T[];
  hasNextPage: boolean;
  isFetchingNextPage: boolean;
  fetchNextPage: () => unknown;
}

/** ListBody shows a paged list: its error, loading, or children(rows) (when there are
 * any) and LoadMore; needs names the permission the principal lacks, if it does. */
export function ListBody<T>({ list, noun, needs, children }: { list: PagedList<T>; noun: string; needs?: string; children: (rows: T[]) => ReactNode }) {
  if (needs) return <Needs permission={needs} />;
  if (list.error) return <ErrorPanel error={list.error} />;
  if (!list.data) return <Loading />;
  return (
    <>
      {list.rows.length > 0 ? children(list.rows) : null}
      <LoadMore list={list} noun={noun} />
    </>
  );
}

/** TableHead is a table's header row; a column named "" holds the rows' actions. */
export function TableHead({ columns }: { columns: string[] }) {
  return (
    <thead>
      <tr>
        {columns.map((c, i) => (
          <th key={i} scope="col">
            {c || <span className="visually-hidden">Actions</span>}
          </th>
        ))}
      </tr>
    </thead>
  );
}
