// What the Pairing page checks before an approval: the fingerprint a person typed or
// pasted against the request's, and the warnings a request deserves (a replaced or
// re-paired device, an unfamiliar source address, an old request). Pure functions, so
// that they are tested without a browser; palyrad stays the authority (the approval
// carries expected_key_fingerprint, which it compares itself).
import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { PairingRequest } from "../../../gen/ts/palyra/controlplane/v1/pairing_pb.js";
import { DeviceClaim } from "../../../gen/ts/palyra/node/v1/node_pb.js";

/** normalizeFingerprint reads a SHA-256 fingerprint as a person may paste it (any case,
 * with or without "sha256:", colons or spaces between the digits) as "sha256:<hex>";
 * undefined when it is not 64 hexadecimal digits. */
export function normalizeFingerprint(text: string): string | undefined {
  let s = text.trim().toLowerCase();
  if (s.startsWith("sha256:")) s = s.slice("sha256:".length);
  s = s.replace(/[\s:]/g, "");
  return /^[0-9a-f]{64}$/.test(s) ? `sha256:${s}` : undefined;
}

/** FingerprintCheck is how a typed fingerprint compares with the request's. */
export type FingerprintCheck =
  | { kind: "empty" }
  | { kind: "malformed" }
  | { kind: "match"; value: string }
  | { kind: "mismatch"; value: string; at: number };

/** checkFingerprint compares what a person typed with the request's fingerprint; a
 * mismatch says at which hex digit (0-based) the two first differ. */
export function checkFingerprint(typed: string, expected: string): FingerprintCheck {
  if (typed.trim() === "") return { kind: "empty" };
  const value = normalizeFingerprint(typed);
  if (!value) return { kind: "malformed" };
  if (value === expected) return { kind: "match", value };
  const a = value.slice(7);
  const b = expected.replace(/^sha256:/, "");
  let at = 0;
  while (at < a.length && a[at] === b[at]) at++;
  return { kind: "mismatch", value, at };
}

/** groupHex splits a fingerprint's digits into groups of four, for reading aloud. */
export function groupHex(fingerprint: string): string[] {
  return fingerprint.replace(/^sha256:/, "").match(/.{1,4}/g) ?? [];
}

/** OLD_REQUEST is the age from which a pending request is flagged as old: a node that
 * asked that long ago may not be the one the approver is looking at. */
export const OLD_REQUEST_MS = 5 * 60_000;

/** Warning is one thing unusual about a request. */
export interface Warning {
  /** severity: danger needs an explicit choice or is a likely attack; warn asks to look twice. */
  severity: "danger" | "warn";
  title: string;
  detail: string;
}

/** warningsFor lists what is unusual about a pending request. knownAddresses are the
 * source addresses of requests approved before (undefined: not known, say for lack
 * of permission or while loading). */
export function warningsFor(r: PairingRequest, knownAddresses: Set<string> | undefined, nowMs: number): Warning[] {
  const out: Warning[] = [];
  switch (r.deviceClaim) {
    case DeviceClaim.UNPROVEN:
      out.push({
        severity: "danger",
        title: "Replaces an existing device",
        detail: `The node says it is device ${r.previousDeviceId} but did not prove it holds that device's key. Approving it as that device revokes the device's certificates and sends its dispatches to this node. Unless you have just reinstalled that machine, register it as a new device or reject it.`,
      });
      break;
    case DeviceClaim.REVOKED:
      out.push({
        severity: "danger",
        title: "Names a revoked device",
        detail: `The node says it is device ${r.previousDeviceId}, which was revoked. Approving it under that id lifts the revocation.`,
      });
      break;
    case DeviceClaim.PROVEN:
      out.push({
        severity: "warn",
        title: "Re-pairs an existing device with a new key",
        detail: `The node proved it holds the key of device ${r.previousDeviceId} (certificate ${r.possessionCertificateFingerprint}); approval replaces that device's certificates with one for the new key.`,
      });
      break;
  }
  if (knownAddresses && r.sourceAddress && !knownAddresses.has(r.sourceAddress)) {
    out.push({
      severity: "warn",
      title: "Unfamiliar source address",
      detail: `No request from ${r.sourceAddress} was approved before. Make sure this is the machine you are pairing.`,
    });
  }
  if (r.createTime && nowMs - timestampDate(r.createTime).getTime() >= OLD_REQUEST_MS) {
    out.push({
      severity: "warn",
      title: "Old request",
      detail: "The node asked more than five minutes ago. Make sure it is still waiting, and that it is the node in front of you.",
    });
  }
  return out;
}
