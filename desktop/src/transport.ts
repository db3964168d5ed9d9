// The console's one transport to palyrad: the Connect protocol (JSON) over fetch, same
// origin, carried by the session cookie the browser holds (HttpOnly: the page never
// sees it). Two interceptors: every call that may change state carries the session's
// CSRF token in X-Palyra-CSRF, and an Unauthenticated answer from any call reports the
// session as ended.
import { Code, ConnectError, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { MethodOptions_IdempotencyLevel } from "@bufbuild/protobuf/wkt";

/** CSRF_HEADER carries the session's CSRF token (access.CSRFHeader on the server). */
export const CSRF_HEADER = "X-Palyra-CSRF";

/** TransportHooks connect the transport to the session state. */
export interface TransportHooks {
  /** csrfToken is the signed-in session's CSRF token, if any. */
  csrfToken(): string | undefined;
  /** unauthenticated is told of every Unauthenticated answer, with the CSRF token of
   * the session the call was made in (undefined: none), so that the answer to a call
   * made before a sign-in does not end the session opened since. */
  unauthenticated(sentWith: string | undefined, err: ConnectError): void;
}

/** csrfInterceptor sends the CSRF token with every call not declared NO_SIDE_EFFECTS. */
export function csrfInterceptor(hooks: TransportHooks): Interceptor {
  return (next) => (req) => {
    const token = hooks.csrfToken();
    if (token && req.method.idempotency !== MethodOptions_IdempotencyLevel.NO_SIDE_EFFECTS) {
      req.header.set(CSRF_HEADER, token);
    }
    return next(req);
  };
}

/** expiryInterceptor reports Unauthenticated answers (an ended or expired session), of
 * unary calls and of streams, whose error arrives with their end. */
export function expiryInterceptor(hooks: TransportHooks): Interceptor {
  return (next) => async (req) => {
    const sentWith = hooks.csrfToken();
    const report = (err: unknown) => {
      const ce = ConnectError.from(err);
      if (ce.code === Code.Unauthenticated) hooks.unauthenticated(sentWith, ce);
    };
    let res;
    try {
      res = await next(req);
    } catch (err) {
      report(err);
      throw err;
    }
    if (!res.stream) return res;
    const messages = res.message;
    async function* watched() {
      try {
        yield* messages;
      } catch (err) {
        report(err);
        throw err;
      }
    }
    return { ...res, message: watched() };
  };
}

/** consoleTransport is the transport of the page, to the palyrad that served it. */
export function consoleTransport(hooks: TransportHooks): Transport {
  return createConnectTransport({
    baseUrl: window.location.origin,
    useBinaryFormat: false,
    fetch: (input, init) => globalThis.fetch(input, { ...init, credentials: "same-origin" }),
    interceptors: [expiryInterceptor(hooks), csrfInterceptor(hooks)],
  });
}
