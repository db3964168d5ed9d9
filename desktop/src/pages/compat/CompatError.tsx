// CompatError shows a failed call of the OpenAI-compatible API as ErrorPanel does (the
// server's message and code) and, when the API or its streaming is switched off
// (reason feature_disabled), names the feature flag to turn on, with a link to the
// flags for whoever may set them.
import { ConnectError } from "@connectrpc/connect";
import { Link } from "react-router";
import { ErrorPanel } from "../../components/ErrorPanel.js";
import { errorInfo } from "../../components/errorInfo.js";
import { usePermission } from "../../session.js";

/** disabledFlag is the feature flag a feature_disabled error asks to turn on. */
export function disabledFlag(error: unknown): string | undefined {
  if (errorInfo(error)?.reason !== "feature_disabled") return undefined;
  return /\b(compat_[a-z_]+) feature flag/.exec(ConnectError.from(error).rawMessage)?.[1] ?? "compat_api";
}

export function CompatError({ error, title }: { error: unknown; title?: string }) {
  const flag = disabledFlag(error);
  const mayFlags = usePermission("flags.manage");
  return (
    <div>
      <ErrorPanel error={error} title={title} />
      {flag ? (
        <p className="field-hint" role="note">
          Turn on the <code>{flag}</code> feature flag
          {mayFlags ? <> on the <Link to="/access/flags">Feature flags</Link> page</> : " (ask an owner or admin)"}, or run{" "}
          <code>palyra flags set {flag} on</code>.
        </p>
      ) : null}
    </div>
  );
}
