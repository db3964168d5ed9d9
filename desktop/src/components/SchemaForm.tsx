// SchemaForm is a form generated from a capability's JSON schema (draft 2020-12), for
// the subset the built-in capabilities use: an object whose properties are strings
// (an enum becomes a choice), numbers and integers (with minimum and maximum),
// booleans, arrays of strings (one item per line) and objects of strings (KEY=value
// lines); required properties, defaults and descriptions. A string field whose values
// the page knows (choices, e.g. the browser profiles' names) is a choice of them. A
// schema outside that subset, or a person who prefers it, gets a raw JSON editor; the
// node's schema stays the authority (palyrad validates every input against it).
import { useEffect, useId, useMemo, useState } from "react";
import { buildInput, initialValues, planForm, type Field, type Values } from "./schemaPlan.js";
import styles from "./SchemaForm.module.css";

/** SchemaForm edits a capability's input; onChange gets the input as JSON text, or
 * undefined while the form has problems. choices, by field name, are the values a
 * string field may take (an empty list: any text). */
export function SchemaForm({ schema, onChange, choices = {} }: { schema: string; onChange: (inputJSON: string | undefined) => void; choices?: Record<string, string[]> }) {
  const plan = useMemo(() => planForm(schema), [schema]);
  const [raw, setRaw] = useState(!plan.ok);
  const [values, setValues] = useState<Values>(() => (plan.ok ? initialValues(plan.fields) : {}));
  const [text, setText] = useState("{}");
  const [textError, setTextError] = useState<string>();
  const id = useId();

  const built = plan.ok ? buildInput(plan.fields, values) : undefined;
  const problems = built && "problems" in built ? built.problems : {};

  function update(next: Values) {
    setValues(next);
    if (!plan.ok) return;
    const b = buildInput(plan.fields, next);
    onChange("input" in b ? JSON.stringify(b.input) : undefined);
  }

  function updateText(next: string) {
    setText(next);
    try {
      JSON.parse(next);
      setTextError(undefined);
      onChange(next);
    } catch (err) {
      setTextError(err instanceof Error ? err.message : String(err));
      onChange(undefined);
    }
  }

  // The parent learns the initial input (the defaults) at once.
  useEffect(() => {
    if (raw) updateText(text);
    else update(values);
  }, []); // once, on mount

  function switchTo(toRaw: boolean) {
    if (toRaw) {
      const start = built && "input" in built ? JSON.stringify(built.input, null, 2) : "{}";
      setRaw(true);
      updateText(start);
    } else {
      setRaw(false);
      update(values);
    }
  }

  return (
    <div className={styles.form}>
      {plan.ok ? (
        <div className={styles.mode} role="group" aria-label="Input editor">
          <label>
            <input type="radio" name={`${id}-mode`} checked={!raw} onChange={() => switchTo(false)} /> Form
          </label>
          <label>
            <input type="radio" name={`${id}-mode`} checked={raw} onChange={() => switchTo(true)} /> JSON
          </label>
        </div>
      ) : (
        <p className="field-hint">{plan.why} Give the input as JSON.</p>
      )}
      {raw ? (
        <div className="field">
          <label htmlFor={`${id}-json`}>Input (JSON)</label>
          <textarea
            id={`${id}-json`}
            className={styles.code}
            rows={8}
            spellCheck={false}
            value={text}
            onChange={(e) => updateText(e.target.value)}
            aria-invalid={textError !== undefined}
            aria-describedby={textError ? `${id}-json-error` : undefined}
          />
          {textError ? (
            <p id={`${id}-json-error`} className={styles.problem}>
              Not JSON: {textError}
            </p>
          ) : null}
        </div>
      ) : plan.ok && plan.fields.length === 0 ? (
        <p className="field-hint">This capability takes no input.</p>
      ) : plan.ok ? (
        plan.fields.map((f) => <FieldInput key={f.name} id={`${id}-${f.name}`} field={f} choices={choices[f.name]} value={values[f.name]} problem={problems[f.name]} onChange={(v) => update({ ...values, [f.name]: v })} />)
      ) : null}
    </div>
  );
}

function FieldInput({ id, field: f, choices, value, problem, onChange }: { id: string; field: Field; choices?: string[]; value: string | boolean | undefined; problem?: string; onChange: (v: string | boolean) => void }) {
  const hintId = `${id}-hint`;
  const problemId = `${id}-problem`;
  const describedBy = [f.description ? hintId : "", problem ? problemId : ""].filter(Boolean).join(" ") || undefined;
  const common = { id, "aria-describedby": describedBy, "aria-invalid": problem !== undefined, "aria-required": f.required };
  const text = typeof value === "string" ? value : "";
  let input;
  switch (f.kind) {
    case "boolean":
      return (
        <div className={styles.check}>
          <input {...common} type="checkbox" checked={value === true} onChange={(e) => onChange(e.target.checked)} />
          <label htmlFor={id}>
            <code>{f.name}</code>
          </label>
          {f.description ? <p id={hintId} className="field-hint">{f.description}</p> : null}
        </div>
      );
    case "enum":
      input = (
        <select {...common} value={text} onChange={(e) => onChange(e.target.value)}>
          {f.required ? null : <option value="">(not set)</option>}
          {f.options!.map((o) => (
            <option key={o} value={o}>
              {o}
            </option>
          ))}
        </select>
      );
      break;
    case "number":
    case "integer":
      input = <input {...common} type="number" step={f.kind === "integer" ? 1 : "any"} min={f.minimum} max={f.maximum} value={text} onChange={(e) => onChange(e.target.value)} />;
      break;
    case "strings":
    case "stringMap":
      input = <textarea {...common} className={styles.code} rows={3} spellCheck={false} value={text} onChange={(e) => onChange(e.target.value)} />;
      break;
    case "string":
      if (choices && choices.length > 0) {
        input = (
          <select {...common} value={text} onChange={(e) => onChange(e.target.value)}>
            <option value="">{f.required ? "Choose one" : "(not set)"}</option>
            {text && !choices.includes(text) ? <option value={text}>{text}</option> : null}
            {choices.map((o) => (
              <option key={o} value={o}>
                {o}
              </option>
            ))}
          </select>
        );
        break;
      }
      input = <input {...common} type="text" spellCheck={false} value={text} onChange={(e) => onChange(e.target.value)} />;
      break;
    default:
      input = <input {...common} type="text" spellCheck={false} value={text} onChange={(e) => onChange(e.target.value)} />;
  }
  const shape = f.kind === "strings" ? " (one per line)" : f.kind === "stringMap" ? " (KEY=value lines)" : "";
  return (
    <div className="field">
      <label htmlFor={id}>
        <code>{f.name}</code>
        {shape}
        {f.required ? <span className={styles.required}> required</span> : null}
      </label>
      {input}
      {f.description ? <p id={hintId} className="field-hint">{f.description}</p> : null}
      {problem ? (
        <p id={problemId} className={styles.problem}>
          {problem}
        </p>
      ) : null}
    </div>
  );
}
