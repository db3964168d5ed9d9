// The result of a browser.* dispatch (browser.navigate, browser.screenshot), shown
// readably: the page reached (title, URL, status), its screenshot, the requests the
// node's guards blocked, and what became of the profile's state. The screenshot is a
// range of the dispatch's output (the result's screenshot: offset and length): it is
// read page by page with GetDispatch, from its offset to its end whatever the live view
// trimmed, and shown as an image from a Blob URL.
import { useEffect, useMemo, useState } from "react";
import { createClient } from "@connectrpc/connect";
import { useTransport } from "@connectrpc/connect-query";
import { DispatchService } from "../../../gen/ts/palyra/controlplane/v1/dispatch_pb.js";
import { usePermission } from "../session.js";
import { ErrorPanel } from "./ErrorPanel.js";
import { Needs } from "./ListBody.js";
import { count } from "./plural.js";
import styles from "./BrowserResult.module.css";

/** Screenshot is where a browser dispatch's screenshot is in its output. */
interface Screenshot {
  offset: number;
  length: number;
  content_type: string;
  width: number;
  height: number;
  full_page?: boolean;
}

/** Result is the part of a BrowserResult (the node's browser.* result) shown here. */
interface Result {
  url?: string;
  title?: string;
  status?: number;
  text_truncated?: boolean;
  links?: unknown[];
  screenshot?: Screenshot;
  blocked?: { url: string; reason: string }[] | null;
  blocked_count?: number;
  bytes_received?: number;
  state?: { saved?: boolean; cookies?: number; origins?: number; bytes?: number; error?: string };
}

/** isBrowserDispatch says whether a dispatch is of a browser.* capability, whose output
 * is binary (the screenshot) rather than text. */
export function isBrowserDispatch(capability: string | undefined): boolean {
  return capability?.startsWith("browser.") ?? false;
}

/** browserResult reads a browser dispatch's result JSON; undefined if it is none. */
function browserResult(capability: string, resultJson: string): Result | undefined {
  if (!isBrowserDispatch(capability) || !resultJson) return undefined;
  try {
    const r = JSON.parse(resultJson) as unknown;
    return r && typeof r === "object" && !Array.isArray(r) ? (r as Result) : undefined;
  } catch {
    return undefined;
  }
}

/** validShot is the result's screenshot when it is a PNG range that makes sense. */
function validShot(r: Result): Screenshot | undefined {
  const s = r.screenshot;
  if (!s || s.content_type !== "image/png") return undefined;
  const whole = (n: unknown) => typeof n === "number" && Number.isSafeInteger(n) && n >= 0;
  return whole(s.offset) && whole(s.length) && s.length > 0 && whole(s.width) && whole(s.height) ? s : undefined;
}

/** useOutputRange reads the bytes [offset, offset+length) of dispatch id's output, once
 * the dispatch has ended; the bytes, how many the output holds of them when it ends
 * short (truncated at the cap), and the error of a failed read. */
function useOutputRange(id: string, range: Screenshot | undefined, enabled: boolean) {
  const transport = useTransport();
  const client = useMemo(() => createClient(DispatchService, transport), [transport]);
  const [got, setGot] = useState<{ bytes?: Uint8Array; short?: number; error?: unknown }>({});
  const offset = range?.offset;
  const length = range?.length;
  useEffect(() => {
    setGot({});
    if (offset === undefined || length === undefined || !enabled) return;
    const abort = new AbortController();
    const end = offset + length;
    const buf = new Uint8Array(length);
    let filled = 0;
    void (async () => {
      let at = BigInt(offset);
      for (;;) {
        const res = await client.getDispatch({ id, includeOutput: true, outputOffset: at }, { signal: abort.signal });
        for (const c of res.output) {
          const from = Math.max(Number(c.offset), offset);
          const to = Math.min(Number(c.offset) + c.data.length, end);
          if (to <= from) continue;
          buf.set(c.data.subarray(from - Number(c.offset), to - Number(c.offset)), from - offset);
          filled = Math.max(filled, to - offset);
        }
        if (filled >= length || !res.moreOutput || res.nextOutputOffset <= at) break;
        at = res.nextOutputOffset;
      }
      if (!abort.signal.aborted) setGot(filled >= length ? { bytes: buf } : { short: filled });
    })().catch((error: unknown) => {
      if (!abort.signal.aborted) setGot({ error });
    });
    return () => abort.abort();
  }, [client, id, offset, length, enabled]);
  return got;
}

/** useBlobURL is an object URL of bytes as type, revoked when they change. */
function useBlobURL(bytes: Uint8Array | undefined, type: string): string | undefined {
  const [url, setURL] = useState<string>();
  useEffect(() => {
    if (!bytes) return setURL(undefined);
    const u = URL.createObjectURL(new Blob([bytes as Uint8Array<ArrayBuffer>], { type }));
    setURL(u);
    return () => URL.revokeObjectURL(u);
  }, [bytes, type]);
  return url;
}

/** BrowserResult shows the result of a browser.* dispatch (id, of capability, its
 * result JSON, once it ended); nothing for other dispatches. Reading the screenshot
 * needs nodes.dispatch. */
export function BrowserResult({ id, capability, resultJson }: { id: string; capability: string; resultJson: string }) {
  const mayRead = usePermission("nodes.dispatch");
  const r = browserResult(capability, resultJson);
  const shot = r ? validShot(r) : undefined;
  const range = useOutputRange(id, shot, mayRead);
  const url = useBlobURL(range.bytes, "image/png");
  if (!r) return null;
  const blocked = r.blocked ?? [];
  const blockedCount = r.blocked_count ?? blocked.length;
  const page = r.title ? `“${r.title}” (${r.url ?? ""})` : (r.url ?? "the page");
  return (
    <section className={styles.result} aria-label="Page">
      <dl className={styles.facts}>
        <div>
          <dt>Page</dt>
          <dd>
            {r.title ? <strong>{r.title}</strong> : <span className={styles.muted}>no title</span>}
            {r.url ? (
              <>
                {" "}
                <code>{r.url}</code>
              </>
            ) : null}
            {r.status ? <>, HTTP {r.status}</> : null}
          </dd>
        </div>
        <div>
          <dt>Received</dt>
          <dd>
            {count(r.bytes_received ?? 0, "bytes")}
            {r.links ? <>; {count(r.links.length, "links")}</> : null}
            {r.text_truncated ? <>; the text was cut at its limit</> : null}
          </dd>
        </div>
        {r.state ? (
          <div>
            <dt>Profile state</dt>
            <dd>
              {r.state.saved ? (
                <>
                  sent back: {r.state.cookies ?? 0} {r.state.cookies === 1 ? "cookie" : "cookies"}, local storage of {count(r.state.origins ?? 0, "origins")}, {count(r.state.bytes ?? 0, "bytes")}
                </>
              ) : (
                <>not sent back{r.state.error ? `: ${r.state.error}` : ""}</>
              )}
            </dd>
          </div>
        ) : null}
      </dl>
      {shot ? (
        <figure className={styles.figure}>
          {!mayRead ? (
            <Needs permission="nodes.dispatch" what="Reading the screenshot needs" />
          ) : url ? (
            <img src={url} alt={`Screenshot of ${page}, ${shot.width}×${shot.height} pixels`} width={shot.width} height={shot.height} className={styles.shot} />
          ) : range.error ? (
            <ErrorPanel error={range.error} title="The screenshot could not be read" />
          ) : range.short !== undefined ? (
            <p className="field-hint">
              The output holds only {count(range.short, "bytes")} of the screenshot's {count(shot.length, "bytes")}: it went beyond the dispatch's output cap.
            </p>
          ) : (
            <p role="status" className="field-hint">
              Reading the screenshot…
            </p>
          )}
          <figcaption className="field-hint">
            Screenshot{shot.full_page ? " of the whole page" : ""}, {shot.width}×{shot.height} pixels, {count(shot.length, "bytes")} of PNG (output bytes {shot.offset} to{" "}
            {shot.offset + shot.length})
          </figcaption>
        </figure>
      ) : null}
      <div>
        <h4 className={styles.subhead}>Blocked requests ({blockedCount})</h4>
        {blockedCount === 0 ? (
          <p className="field-hint">The guards blocked nothing.</p>
        ) : (
          <>
            <ul className={styles.blocked} aria-label="Blocked requests">
              {blocked.map((b, i) => (
                <li key={i}>
                  <code>{b.url}</code>: {b.reason}
                </li>
              ))}
            </ul>
            {blockedCount > blocked.length ? <p className="field-hint">and {count(blockedCount - blocked.length, "more")} not listed.</p> : null}
          </>
        )}
      </div>
    </section>
  );
}
