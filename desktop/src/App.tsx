// The console's routes: /handoff (the sign-in link of `palyra console`) whatever the
// session, sign-in while signed out, and every page of the registry in the app shell.
import { lazy, Suspense, useMemo } from "react";
import { Route, Routes } from "react-router";
import { useSession } from "./session.js";
import { pages } from "./pages/registry.js";
import { Shell } from "./components/Shell.js";
import Handoff from "./pages/Handoff.js";
import NotFound from "./pages/NotFound.js";
import SignIn from "./pages/SignIn.js";

export function App() {
  const { state } = useSession();
  const routes = useMemo(
    () =>
      pages.map((p) => {
        const Component = lazy(p.load);
        return { path: p.path, element: <Component /> };
      }),
    [],
  );
  let body;
  switch (state.kind) {
    case "loading":
      body = (
        <p role="status" className="visually-hidden">
          Loading the console…
        </p>
      );
      break;
    case "signedOut":
      body = <SignIn />;
      break;
    case "signedIn":
      body = (
        <Shell>
          <Suspense fallback={<p role="status">Loading…</p>}>
            <Routes>
              {routes.map((r) => (
                <Route key={r.path} path={r.path} element={r.element} />
              ))}
              <Route path="*" element={<NotFound />} />
            </Routes>
          </Suspense>
        </Shell>
      );
  }
  return (
    <Routes>
      <Route path="/handoff" element={<Handoff />} />
      <Route path="*" element={body} />
    </Routes>
  );
}
