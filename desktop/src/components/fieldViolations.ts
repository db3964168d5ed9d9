// The fields a palyrad error names, so that a form shows each problem on its field: a
// domain error's google.rpc.BadRequest detail (read from its wire bytes, as errorInfo
// reads ErrorInfo) and protovalidate's buf.validate.Violations, both as dotted paths of
// the request's proto field names, e.g. "spec.allowed_domains[2]".
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import { ConnectError } from "@connectrpc/connect";
import { ViolationsSchema, type FieldPath } from "../../../gen/ts/buf/validate/validate_pb.js";

/** FieldViolation is one field at fault and what is wrong with it. */
export interface FieldViolation {
  field: string;
  description: string;
}

const BAD_REQUEST = "google.rpc.BadRequest";

/** fieldViolations returns the fields err names, in its order. */
export function fieldViolations(err: unknown): FieldViolation[] {
  const ce = ConnectError.from(err);
  const out: FieldViolation[] = [];
  for (const d of ce.details) {
    if ("type" in d && d.type === BAD_REQUEST) out.push(...decodeBadRequest(d.value));
  }
  for (const v of ce.findDetails(ViolationsSchema).flatMap((vs) => vs.violations)) {
    if (v.field) out.push({ field: fieldPath(v.field), description: v.message || v.ruleId });
  }
  return out;
}

/** fieldPath writes a protovalidate path as "a.b[0].c". */
function fieldPath(p: FieldPath): string {
  let s = "";
  for (const e of p.elements) {
    s += (s ? "." : "") + e.fieldName;
    if (e.subscript.case === "index") s += `[${e.subscript.value}]`;
    else if (e.subscript.case !== undefined) s += `[${String(e.subscript.value)}]`;
  }
  return s;
}

/** decodeBadRequest decodes the wire bytes of a google.rpc.BadRequest. */
export function decodeBadRequest(bytes: Uint8Array): FieldViolation[] {
  const out: FieldViolation[] = [];
  const r = new BinaryReader(bytes);
  while (r.pos < r.len) {
    const [field, wire] = r.tag();
    if (field !== 1 || wire !== WireType.LengthDelimited) {
      r.skip(wire);
      continue;
    }
    const v: FieldViolation = { field: "", description: "" };
    const m = new BinaryReader(r.bytes());
    while (m.pos < m.len) {
      const [f, w] = m.tag();
      if (f === 1 && w === WireType.LengthDelimited) v.field = m.string();
      else if (f === 2 && w === WireType.LengthDelimited) v.description = m.string();
      else m.skip(w);
    }
    out.push(v);
  }
  return out;
}
