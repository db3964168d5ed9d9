// The plan of a form generated from a capability's JSON schema (draft 2020-12): which
// fields the schema amounts to, for the subset the built-in capabilities use (see
// SchemaForm), their initial values, and the input object built from what was typed.
// Pure functions, tested without a browser.
import { count } from "./plural.js";

/** JSONSchema is the part of a JSON schema the form reads. */
interface JSONSchema {
  type?: string | string[];
  title?: string;
  description?: string;
  properties?: Record<string, JSONSchema>;
  required?: string[];
  items?: JSONSchema;
  additionalProperties?: boolean | JSONSchema;
  enum?: unknown[];
  default?: unknown;
  minimum?: number;
  maximum?: number;
  minItems?: number;
}

/** Field is one property the form can edit. */
export interface Field {
  name: string;
  kind: "string" | "enum" | "number" | "integer" | "boolean" | "strings" | "stringMap";
  required: boolean;
  description?: string;
  options?: string[];
  minimum?: number;
  maximum?: number;
  minItems?: number;
  default?: unknown;
}

/** FormPlan is what a schema amounts to: the fields of a generated form, or why there is none. */
export type FormPlan = { ok: true; fields: Field[] } | { ok: false; why: string };

function fieldOf(name: string, s: JSONSchema, required: boolean): Field | string {
  const base = { name, required, description: s.description, default: s.default };
  if (Array.isArray(s.enum)) {
    if (s.enum.every((v) => typeof v === "string")) return { ...base, kind: "enum", options: s.enum as string[] };
    return `${name}: an enum of other than strings`;
  }
  switch (s.type) {
    case "string":
      return { ...base, kind: "string" };
    case "number":
    case "integer":
      return { ...base, kind: s.type, minimum: s.minimum, maximum: s.maximum };
    case "boolean":
      return { ...base, kind: "boolean" };
    case "array":
      if (s.items?.type === "string" && !s.items.enum) return { ...base, kind: "strings", minItems: s.minItems };
      return `${name}: an array of other than strings`;
    case "object":
      if (!s.properties && typeof s.additionalProperties === "object" && s.additionalProperties.type === "string") return { ...base, kind: "stringMap" };
      return `${name}: a nested object`;
    default:
      return `${name}: type ${JSON.stringify(s.type ?? "any")}`;
  }
}

/** planForm reads a schema (JSON text; empty: none) into the fields of a form. */
export function planForm(schemaJSON: string): FormPlan {
  if (schemaJSON.trim() === "") return { ok: false, why: "The capability declares no input schema." };
  let schema: JSONSchema;
  try {
    schema = JSON.parse(schemaJSON) as JSONSchema;
  } catch {
    return { ok: false, why: "Its input schema is not valid JSON." };
  }
  if (schema.type !== "object") return { ok: false, why: "Its input is not an object." };
  const required = new Set(schema.required ?? []);
  const fields: Field[] = [];
  for (const [name, prop] of Object.entries(schema.properties ?? {})) {
    const f = fieldOf(name, prop, required.has(name));
    if (typeof f === "string") return { ok: false, why: `The form cannot show ${f}.` };
    fields.push(f);
  }
  return { ok: true, fields };
}

/** Values are the form's raw inputs, by field name. */
export type Values = Record<string, string | boolean>;

/** initialValues gives each field its default. */
export function initialValues(fields: Field[]): Values {
  const v: Values = {};
  for (const f of fields) {
    const d = f.default;
    if (f.kind === "boolean") v[f.name] = d === true;
    else if (f.kind === "strings") v[f.name] = Array.isArray(d) ? d.join("\n") : "";
    else if (f.kind === "stringMap") v[f.name] = d && typeof d === "object" ? Object.entries(d).map(([k, x]) => `${k}=${String(x)}`).join("\n") : "";
    else v[f.name] = d === undefined ? "" : String(d);
  }
  return v;
}

/** buildInput turns the form's values into the input object, leaving out optional
 * fields left empty; it returns the problems instead when there are any. */
export function buildInput(fields: Field[], values: Values): { input: Record<string, unknown> } | { problems: Record<string, string> } {
  const input: Record<string, unknown> = {};
  const problems: Record<string, string> = {};
  for (const f of fields) {
    const raw = values[f.name];
    if (f.kind === "boolean") {
      if (raw === true || f.required || f.default !== undefined) input[f.name] = raw === true;
      continue;
    }
    const text = typeof raw === "string" ? raw : "";
    if (text.trim() === "") {
      if (f.required) problems[f.name] = "Required.";
      continue;
    }
    switch (f.kind) {
      case "string":
      case "enum":
        input[f.name] = text;
        break;
      case "number":
      case "integer": {
        const n = Number(text);
        if (!Number.isFinite(n) || (f.kind === "integer" && !Number.isInteger(n))) problems[f.name] = f.kind === "integer" ? "A whole number." : "A number.";
        else if (f.minimum !== undefined && n < f.minimum) problems[f.name] = `At least ${f.minimum}.`;
        else if (f.maximum !== undefined && n > f.maximum) problems[f.name] = `At most ${f.maximum}.`;
        else input[f.name] = n;
        break;
      }
      case "strings": {
        const items = text.split("\n").filter((line) => line !== "");
        if (f.minItems !== undefined && items.length < f.minItems) problems[f.name] = `At least ${count(f.minItems, "items")}.`;
        else input[f.name] = items;
        break;
      }
      case "stringMap": {
        const map: Record<string, string> = {};
        for (const line of text.split("\n").filter((l) => l.trim() !== "")) {
          const eq = line.indexOf("=");
          if (eq <= 0) {
            problems[f.name] = `"${line}" is not KEY=value.`;
            break;
          }
          map[line.slice(0, eq)] = line.slice(eq + 1);
        }
        input[f.name] = map;
        break;
      }
    }
  }
  return Object.keys(problems).length > 0 ? { problems } : { input };
}
