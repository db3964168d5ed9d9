// Dialog is a modal <dialog> (the browser traps the focus, Escape closes it, the focus
// returns to what opened it) with a title, a body and the form's actions; on opening,
// the focus goes to the element marked data-autofocus, else the browser's choice (the
// first that can take it). Confirm is the dialog of a destructive action: it names what
// happens, and may ask for a reason; the focus starts on the reason, or on Cancel.
import { useEffect, useId, useRef, useState, type FormEvent, type ReactNode } from "react";
import { ErrorPanel } from "./ErrorPanel.js";
import styles from "./Dialog.module.css";

export function Dialog({ title, open, onClose, children }: { title: string; open: boolean; onClose: () => void; children: ReactNode }) {
  const ref = useRef<HTMLDialogElement>(null);
  const id = useId();
  useEffect(() => {
    const d = ref.current;
    if (!d) return;
    if (open && !d.open) {
      d.showModal();
      // React's autoFocus runs before the dialog is shown, when nothing in it can take the focus.
      d.querySelector<HTMLElement>("[data-autofocus]")?.focus();
    }
    if (!open && d.open) d.close();
  }, [open]);
  return (
    <dialog ref={ref} className={styles.dialog} aria-labelledby={id} onClose={onClose}>
      {open ? (
        <>
          <h2 id={id} className={styles.title}>
            {title}
          </h2>
          {children}
        </>
      ) : null}
    </dialog>
  );
}

/** Confirm asks before a destructive action; run may throw, and its error is shown. */
export function Confirm({
  title,
  open,
  onClose,
  action,
  children,
  reason,
  run,
}: {
  title: string;
  open: boolean;
  onClose: () => void;
  /** action labels the confirming button, e.g. "Revoke token". */
  action: string;
  children: ReactNode;
  /** reason, when set, asks for a reason with this label (optional unless required). */
  reason?: { label: string; required?: boolean };
  run: (reason: string) => Promise<unknown>;
}) {
  const [text, setText] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>();
  const reasonId = useId();
  useEffect(() => {
    if (open) {
      setText("");
      setError(undefined);
    }
  }, [open]);
  async function submit(e: FormEvent) {
    e.preventDefault();
    setBusy(true);
    setError(undefined);
    try {
      await run(text.trim());
      onClose();
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  }
  return (
    <Dialog title={title} open={open} onClose={onClose}>
      <form onSubmit={submit} className={styles.body}>
        <div>{children}</div>
        {reason ? (
          <div className="field">
            <label htmlFor={reasonId}>{reason.label}</label>
            <input id={reasonId} value={text} onChange={(e) => setText(e.target.value)} required={reason.required} maxLength={256} data-autofocus />
          </div>
        ) : null}
        {error ? <ErrorPanel error={error} /> : null}
        <div className={styles.actions}>
          <button type="button" className="button" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" className="button button-danger" disabled={busy || (reason?.required === true && text.trim() === "")} aria-busy={busy}>
            {busy ? "Working…" : action}
          </button>
        </div>
      </form>
    </Dialog>
  );
}
