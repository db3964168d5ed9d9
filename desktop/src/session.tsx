// The console session: signing in with an API token (CreateSession) or a hand-off code
// (ClaimHandoff, from `palyra console`), signing out (DeleteSession), and returning to
// sign-in with a message when any call answers Unauthenticated (an expired or ended
// session, a revoked token). The API token is sent once, in the Authorization header of
// CreateSession, and never stored; the session cookie is HttpOnly. The CSRF token is kept
// in localStorage, bound to its session id, so that a reload or another tab of the same
// session can still change state.
import { createContext, useCallback, useContext, useEffect, useMemo, useRef, useState, type ReactNode } from "react";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { TransportProvider } from "@connectrpc/connect-query";
import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { SessionService, type Session } from "../../gen/ts/palyra/controlplane/v1/sessions_pb.js";
import { consoleTransport } from "./transport.js";

/** SessionState is where the console stands. */
export type SessionState =
  | { kind: "loading" }
  | { kind: "signedOut"; message?: string }
  | { kind: "signedIn"; session: Session; csrf: string };

/** SessionApi is what useSession gives the pages. */
export interface SessionApi {
  state: SessionState;
  /** signIn opens a session with an API token; the token is not kept. */
  signIn(token: string): Promise<void>;
  /** claimHandoff opens a session with a hand-off code of `palyra console`. */
  claimHandoff(code: string): Promise<void>;
  /** signOut ends the session. */
  signOut(): Promise<void>;
}

const SessionContext = createContext<SessionApi | null>(null);

/** useSession returns the console session. */
export function useSession(): SessionApi {
  const api = useContext(SessionContext);
  if (!api) throw new Error("useSession outside SessionProvider");
  return api;
}

/** usePermission says whether the signed-in principal holds a permission, e.g.
 * usePermission("nodes.revoke"). Pages hide or disable what it may not do; the server
 * stays the authority. */
export function usePermission(permission: string): boolean {
  const { state } = useSession();
  return state.kind === "signedIn" && (state.session.principal?.permissions.includes(permission) ?? false);
}

/** EXPIRED is the message of a session that ended under the page. */
export const EXPIRED =
  "Your session has ended: it expired after 30 minutes without use, was signed out elsewhere, or its API token was revoked or expired. Sign in again.";

const CSRF_KEY = "palyra.console.csrf";

interface StoredCSRF {
  session: string;
  token: string;
}

function loadCSRF(session: string): string | undefined {
  try {
    const stored = JSON.parse(localStorage.getItem(CSRF_KEY) ?? "null") as StoredCSRF | null;
    return stored?.session === session ? stored.token : undefined;
  } catch {
    return undefined;
  }
}

function saveCSRF(value: StoredCSRF | null) {
  if (value) localStorage.setItem(CSRF_KEY, JSON.stringify(value));
  else localStorage.removeItem(CSRF_KEY);
}

/** SessionProvider owns the transport, the query cache and the session state. */
export function SessionProvider({ children }: { children: ReactNode }) {
  const [state, setState] = useState<SessionState>({ kind: "loading" });
  const stateRef = useRef(state);
  stateRef.current = state;
  const queryClient = useMemo(
    () =>
      new QueryClient({
        defaultOptions: {
          queries: {
            // Unauthenticated and PermissionDenied do not get better by retrying.
            retry: (failures, err) =>
              failures < 2 && ![Code.Unauthenticated, Code.PermissionDenied, Code.InvalidArgument, Code.NotFound].includes(ConnectError.from(err).code),
            staleTime: 5_000,
          },
        },
      }),
    [],
  );
  const transport: Transport = useMemo(
    () =>
      consoleTransport({
        csrfToken: () => (stateRef.current.kind === "signedIn" ? stateRef.current.csrf : undefined),
        unauthenticated: (sentWith) => {
          const current = stateRef.current;
          // Signing in (the form shows the error), or a call made before this session.
          if (current.kind !== "signedIn" || sentWith !== current.csrf) return;
          saveCSRF(null);
          queryClient.clear();
          setState({ kind: "signedOut", message: EXPIRED });
        },
      }),
    [queryClient],
  );
  const clients = useMemo(() => ({ session: createClient(SessionService, transport) }), [transport]);

  useEffect(() => {
    let cancelled = false;
    clients.session.getSession({}).then(
      ({ session }) => {
        // A hand-off or a sign-in may have settled the state meanwhile.
        if (cancelled || !session || stateRef.current.kind !== "loading") return;
        const csrf = loadCSRF(session.id);
        setState(
          csrf
            ? { kind: "signedIn", session, csrf }
            : { kind: "signedOut", message: "This browser no longer holds the session's CSRF token. Sign in again." },
        );
      },
      (err) => {
        if (cancelled || stateRef.current.kind !== "loading") return;
        const ce = ConnectError.from(err);
        // No session (Unauthenticated), or a bearer-only call (FailedPrecondition): sign in.
        const quiet = ce.code === Code.Unauthenticated || ce.code === Code.FailedPrecondition;
        setState({ kind: "signedOut", message: quiet ? undefined : `palyrad could not be asked about the session: ${ce.rawMessage} (${Code[ce.code]})` });
      },
    );
    return () => {
      cancelled = true;
    };
  }, [clients]);

  const open = useCallback(
    (session: Session | undefined, csrf: string) => {
      if (!session) throw new Error("palyrad opened no session");
      saveCSRF({ session: session.id, token: csrf });
      queryClient.clear();
      setState({ kind: "signedIn", session, csrf });
    },
    [queryClient],
  );

  const api: SessionApi = useMemo(
    () => ({
      state,
      async signIn(token) {
        const res = await clients.session.createSession({}, { headers: { Authorization: `Bearer ${token.trim()}` } });
        open(res.session, res.csrfToken);
      },
      async claimHandoff(code) {
        const res = await clients.session.claimHandoff({ code });
        open(res.session, res.csrfToken);
      },
      async signOut() {
        try {
          await clients.session.deleteSession({});
        } catch (err) {
          // An already ended session is signed out all the same.
          if (ConnectError.from(err).code !== Code.Unauthenticated) throw err;
        }
        saveCSRF(null);
        queryClient.clear();
        setState({ kind: "signedOut", message: "You have signed out." });
      },
    }),
    [state, clients, open, queryClient],
  );

  return (
    <SessionContext.Provider value={api}>
      <TransportProvider transport={transport}>
        <QueryClientProvider client={queryClient}>{children}</QueryClientProvider>
      </TransportProvider>
    </SessionContext.Provider>
  );
}
