// The browser profile form's model: a BrowserProfileSpec as the form edits it (the
// viewport's sides and the labels as text, the allowed domains as rows), the
// conversions both ways, and where palyrad's field violations go in it. palyrad checks
// the spec; the form only turns text into fields, and says which text it cannot.
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { BrowserProfileSpec, BrowserProfileSpecSchema } from "../../../../gen/ts/palyra/browser/v1/browser_pb.js";
import type { FieldViolation } from "../../components/fieldViolations.js";
import { labelsText, parseLabels } from "../agents/spec.js";

/** Spec is what CreateBrowserProfile and UpdateBrowserProfile take. */
export type Spec = MessageInitShape<typeof BrowserProfileSpecSchema>;

/** DomainRow is one allowed domain of the form. */
export interface DomainRow {
  /** key identifies the row while it is edited. */
  key: number;
  value: string;
}

/** Draft is the whole form. */
export interface Draft {
  name: string;
  description: string;
  userAgent: string;
  /** width and height of the viewport; both empty: palyrad's default. */
  width: string;
  height: string;
  locale: string;
  timeZone: string;
  /** proxy is a secret reference, secret:NAME or secret:NAME@VERSION, or empty. */
  proxy: string;
  domains: DomainRow[];
  /** labels, one key=value a line. */
  labels: string;
}

/** Field is a part of the form a problem can be shown on: a Draft field, or one row of
 * the allowed domains ("domain:KEY"). */
export type Field = Exclude<keyof Draft, "domains"> | "domains" | `domain:${number}`;

let nextKey = 1;

/** newDomain is an allowed domain row. */
export function newDomain(value = ""): DomainRow {
  return { key: nextKey++, value };
}

/** emptyDraft is the form of a new profile: one empty domain row. */
export function emptyDraft(): Draft {
  return { name: "", description: "", userAgent: "", width: "", height: "", locale: "", timeZone: "", proxy: "", domains: [newDomain()], labels: "" };
}

/** fromSpec is the form of a stored definition. */
export function fromSpec(spec: BrowserProfileSpec | undefined): Draft {
  if (!spec) return emptyDraft();
  return {
    name: spec.name,
    description: spec.description,
    userAgent: spec.userAgent,
    width: spec.viewport?.width ? String(spec.viewport.width) : "",
    height: spec.viewport?.height ? String(spec.viewport.height) : "",
    locale: spec.locale,
    timeZone: spec.timeZone,
    proxy: spec.proxy,
    domains: spec.allowedDomains.length > 0 ? spec.allowedDomains.map((d) => newDomain(d)) : [newDomain()],
    labels: labelsText(spec.labels),
  };
}

/** side reads a viewport side ("" is 0, the default); it throws naming the field. */
function side(text: string, what: string): number {
  const t = text.trim();
  if (t === "") return 0;
  if (!/^\d+$/.test(t)) throw new Error(`The viewport's ${what} must be a whole number of pixels.`);
  return Number(t);
}

/** Built is a form turned into a spec, with the domain row of each allowed_domains index. */
export interface Built {
  spec: Spec;
  domainKeys: number[];
}

/** toSpec is the definition a form holds (empty domain rows left out); it throws on text
 * it cannot read. */
export function toSpec(d: Draft): Built {
  const width = side(d.width, "width");
  const height = side(d.height, "height");
  const rows = d.domains.filter((r) => r.value.trim() !== "");
  return {
    spec: {
      name: d.name.trim(),
      description: d.description.trim(),
      userAgent: d.userAgent.trim(),
      viewport: width || height ? { width, height } : undefined,
      locale: d.locale.trim(),
      timeZone: d.timeZone.trim(),
      proxy: d.proxy.trim(),
      allowedDomains: rows.map((r) => r.value.trim()),
      labels: parseLabels(d.labels),
    },
    domainKeys: rows.map((r) => r.key),
  };
}

/** specFields maps the proto paths of BrowserProfileSpec's fields to the form's. */
const specFields: Record<string, Field> = {
  name: "name",
  description: "description",
  user_agent: "userAgent",
  "viewport.width": "width",
  "viewport.height": "height",
  viewport: "width",
  locale: "locale",
  time_zone: "timeZone",
  proxy: "proxy",
  allowed_domains: "domains",
  labels: "labels",
};

/** Problems are the field violations placed on the form, and those it has no place for. */
export interface Problems {
  on: Partial<Record<Field, string>>;
  elsewhere: FieldViolation[];
}

/** placeViolations puts each violation on its field of the form: "spec.allowed_domains[i]"
 * on the row sent at index i, "spec.labels[…]" on the labels. */
export function placeViolations(vs: FieldViolation[], domainKeys: number[]): Problems {
  const p: Problems = { on: {}, elsewhere: [] };
  const add = (f: Field, text: string) => (p.on[f] = p.on[f] ? `${p.on[f]} ${text}` : text);
  for (const v of vs) {
    const path = v.field.replace(/^spec\./, "");
    const row = /^allowed_domains\[(\d+)\]$/.exec(path);
    if (row && domainKeys[Number(row[1])] !== undefined) {
      add(`domain:${domainKeys[Number(row[1])]}`, v.description);
      continue;
    }
    const f = specFields[path] ?? specFields[path.replace(/\[.*$/, "").replace(/\..*$/, "")];
    if (f && v.field.startsWith("spec.")) add(f, v.description);
    else p.elsewhere.push(v);
  }
  return p;
}

/** differences names the parts of a form that differ from a stored definition, as
 * "field: theirs → yours" lines, for the conflict of a stale edit. */
export function differences(current: BrowserProfileSpec | undefined, mine: Draft): string[] {
  const theirs = fromSpec(current);
  const out: string[] = [];
  const fields: [Exclude<keyof Draft, "domains">, string][] = [
    ["name", "Name"],
    ["description", "Description"],
    ["userAgent", "User agent"],
    ["width", "Viewport width"],
    ["height", "Viewport height"],
    ["locale", "Locale"],
    ["timeZone", "Time zone"],
    ["proxy", "Proxy"],
    ["labels", "Labels"],
  ];
  const short = (s: string) => (s.length > 60 ? `${s.slice(0, 57)}…` : s) || "(empty)";
  for (const [k, label] of fields) {
    const a = theirs[k].trim();
    const b = mine[k].trim();
    if (a !== b) out.push(`${label}: ${short(a)} → ${short(b)}`);
  }
  const domains = (d: Draft) => d.domains.map((r) => r.value.trim()).filter(Boolean).join(", ") || "none";
  if (domains(theirs) !== domains(mine)) out.push(`Allowed domains: ${domains(theirs)} → ${domains(mine)}`);
  return out;
}
