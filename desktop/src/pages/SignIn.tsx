// Sign-in with an API token: the token opens a console session (CreateSession) and is
// then dropped; the form field is cleared and never stored. A message says why the
// page is here (signed out, session ended).
import { useState, type FormEvent } from "react";
import { useSession } from "../session.js";
import { ErrorPanel } from "../components/ErrorPanel.js";
import styles from "./SignIn.module.css";

export default function SignIn() {
  const { state, signIn } = useSession();
  const [token, setToken] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>();
  const message = state.kind === "signedOut" ? state.message : undefined;

  async function submit(e: FormEvent) {
    e.preventDefault();
    setBusy(true);
    setError(undefined);
    try {
      await signIn(token);
    } catch (err) {
      setError(err);
    } finally {
      setToken("");
      setBusy(false);
    }
  }

  return (
    <main className={styles.wrap}>
      <form className={styles.card} onSubmit={submit} aria-labelledby="signin-title">
        <div className={styles.brand}>
          <img src="/icons/icon.svg" alt="" width={40} height={40} />
          <h1 id="signin-title">Sign in to Palyra</h1>
        </div>
        {message ? (
          <p className={styles.message} role="status">
            {message}
          </p>
        ) : null}
        <div className="field">
          <label htmlFor="token">API token</label>
          <input
            id="token"
            name="token"
            type="password"
            autoComplete="off"
            spellCheck={false}
            required
            value={token}
            onChange={(e) => setToken(e.target.value)}
            aria-describedby="token-hint"
          />
          <p id="token-hint" className="field-hint">
            A token <code>plr_…</code>: the bootstrap token in palyrad's data directory, or one from <code>palyra auth tokens create</code>. It
            opens a session and is not kept by this page. <code>palyra console</code> signs you in without one.
          </p>
        </div>
        {error ? <ErrorPanel error={error} title="Sign-in failed" /> : null}
        <button type="submit" className="button button-primary" disabled={busy || token.trim() === ""} aria-busy={busy}>
          {busy ? "Signing in…" : "Sign in"}
        </button>
      </form>
    </main>
  );
}
