// The filters of a list kept in the address, so that a filtered list can be linked:
// useAddressFilter gives the applied values, the draft the form edits and apply (the
// form's submit, which puts the draft's non-empty values in the address); TextFilter and
// StateFilter are the form's fields; withParam links from a row while keeping them.
import { useState, type FormEvent } from "react";
import { useSearchParams } from "react-router";

/** useAddressFilter reads the filters keys from the address. */
export function useAddressFilter<K extends string>(keys: readonly K[]) {
  const [params, setParams] = useSearchParams();
  const filter = Object.fromEntries(keys.map((k) => [k, params.get(k) ?? ""])) as Record<K, string>;
  const [draft, setDraft] = useState(filter);
  function apply(e: FormEvent) {
    e.preventDefault();
    setParams((p) => {
      for (const [k, v] of Object.entries<string>(draft)) {
        if (v.trim()) p.set(k, v.trim());
        else p.delete(k);
      }
      return p;
    });
  }
  /** edit changes some of the draft's values. */
  const edit = (change: Partial<Record<K, string>>) => setDraft((d) => ({ ...d, ...change }));
  return { params, filter, draft, edit, apply };
}

/** withParam is the address of params with key set to value, e.g. a row's id. */
export function withParam(params: URLSearchParams, key: string, value: string): string {
  const p = new URLSearchParams(params);
  p.set(key, value);
  return `?${p.toString()}`;
}

/** TextFilter is a free-text field of a filter form. */
export function TextFilter({ id, label, value, onChange, placeholder }: { id: string; label: string; value: string; onChange: (v: string) => void; placeholder: string }) {
  return (
    <div className="field">
      <label htmlFor={id}>{label}</label>
      <input id={id} value={value} onChange={(e) => onChange(e.target.value)} placeholder={placeholder} spellCheck={false} />
    </div>
  );
}

/** StateFilter picks one value of a generated enum of states (by its name, as the
 * address keeps it), or any; name says a value in words. */
export function StateFilter({ id, value, onChange, states, name }: { id: string; value: string; onChange: (v: string) => void; states: Record<string, string | number>; name: (v: number) => string }) {
  const values = Object.values(states).filter((v): v is number => typeof v === "number" && v !== 0);
  return (
    <div className="field">
      <label htmlFor={id}>State</label>
      <select id={id} value={value} onChange={(e) => onChange(e.target.value)}>
        <option value="">Any state</option>
        {values.map((v) => (
          <option key={v} value={String(states[v])}>
            {name(v)}
          </option>
        ))}
      </select>
    </div>
  );
}
