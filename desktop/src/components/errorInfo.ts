// The google.rpc.ErrorInfo detail of a palyrad error (its reason and metadata, e.g.
// STALE_REVISION with current_revision), read from the error's wire bytes: the console
// needs only this one detail, so it decodes its three fields rather than shipping the
// googleapis descriptors.
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import { ConnectError } from "@connectrpc/connect";

/** ErrorInfo is google.rpc.ErrorInfo. */
export interface ErrorInfo {
  reason: string;
  domain: string;
  metadata: Record<string, string>;
}

const TYPE = "google.rpc.ErrorInfo";

/** errorInfo returns the ErrorInfo detail of err, if it carries one. */
export function errorInfo(err: unknown): ErrorInfo | undefined {
  for (const d of ConnectError.from(err).details) {
    if ("type" in d && d.type === TYPE) return decodeErrorInfo(d.value);
  }
  return undefined;
}

/** decodeErrorInfo decodes the wire bytes of a google.rpc.ErrorInfo. */
export function decodeErrorInfo(bytes: Uint8Array): ErrorInfo {
  const info: ErrorInfo = { reason: "", domain: "", metadata: {} };
  const r = new BinaryReader(bytes);
  while (r.pos < r.len) {
    const [field, wire] = r.tag();
    if (field === 1 && wire === WireType.LengthDelimited) info.reason = r.string();
    else if (field === 2 && wire === WireType.LengthDelimited) info.domain = r.string();
    else if (field === 3 && wire === WireType.LengthDelimited) {
      // A map entry: key = 1, value = 2.
      const entry = new BinaryReader(r.bytes());
      let key = "";
      let value = "";
      while (entry.pos < entry.len) {
        const [f, w] = entry.tag();
        if (f === 1 && w === WireType.LengthDelimited) key = entry.string();
        else if (f === 2 && w === WireType.LengthDelimited) value = entry.string();
        else entry.skip(w);
      }
      info.metadata[key] = value;
    } else r.skip(wire);
  }
  return info;
}
