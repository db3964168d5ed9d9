// Paging for every list RPC of palyrad (page_size, page_token → next_page_token): a hook
// over connect-query's useInfiniteQuery that flattens the pages, and the "Load more"
// control that goes with it.
import type { DescMessage, DescMethodUnary, MessageInitShape, MessageShape } from "@bufbuild/protobuf";
import { useInfiniteQuery } from "@connectrpc/connect-query";
import { allShown } from "./plural.js";

/** usePagedList loads a list page by page; items picks the rows out of a page. The
 * request must have page_token and the response next_page_token, as every list RPC of
 * palyrad does. */
export function usePagedList<I extends DescMessage, O extends DescMessage, T>(
  method: DescMethodUnary<I, O>,
  input: MessageInitShape<I>,
  items: (page: MessageShape<O>) => T[],
  options: { enabled?: boolean; refetchInterval?: number } = {},
) {
  // connect-query types the page parameter from the request's fields, which a generic
  // request cannot show; the casts stand for "has page_token".
  const query = useInfiniteQuery(method as never, { ...input, pageToken: "" } as never, {
    pageParamKey: "pageToken",
    getNextPageParam: (last: { nextPageToken?: string }) => last.nextPageToken || undefined,
    enabled: options.enabled ?? true,
    refetchInterval: options.refetchInterval,
  } as never);
  const pages = (query.data as { pages: MessageShape<O>[] } | undefined)?.pages ?? [];
  const rows = pages.flatMap((p) => items(p));
  return { ...query, rows };
}

/** LoadMore continues a paged list; it says when the list is complete. */
export function LoadMore({ list, noun }: { list: { hasNextPage: boolean; isFetchingNextPage: boolean; fetchNextPage: () => unknown; rows: unknown[] }; noun: string }) {
  if (!list.hasNextPage) {
    return <p className="field-hint" aria-live="polite">{allShown(list.rows.length, noun)}</p>;
  }
  return (
    <button type="button" className="button" onClick={() => list.fetchNextPage()} disabled={list.isFetchingNextPage} aria-busy={list.isFetchingNextPage}>
      {list.isFetchingNextPage ? "Loading…" : `Load more ${noun}`}
    </button>
  );
}
