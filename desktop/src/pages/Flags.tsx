// Feature flags: every flag with its stage, what it depends on and what depends on it,
// and a switch to turn it on or off. palyrad refuses a change that would break a
// dependency; the flag then shows the server's reason.
import { useState } from "react";
import { useMutation, useQuery, createConnectQueryKey } from "@connectrpc/connect-query";
import { useQueryClient } from "@tanstack/react-query";
import { FeatureFlagService, FlagStage, type Flag } from "../../../gen/ts/palyra/access/v1/flags_pb.js";
import { usePermission } from "../session.js";
import { Card, Page } from "../components/Page.js";
import { ErrorPanel } from "../components/ErrorPanel.js";
import { RelativeTime } from "../components/RelativeTime.js";
import { Badge, type Tone } from "../components/Badge.js";
import { Loading, Needs, TableHead } from "../components/ListBody.js";
import styles from "./admin.module.css";
import { allShown } from "../components/plural.js";

const stageTones: Record<FlagStage, Tone> = {
  [FlagStage.UNSPECIFIED]: "neutral",
  [FlagStage.EXPERIMENTAL]: "warn",
  [FlagStage.BETA]: "warn",
  [FlagStage.STABLE]: "ok",
};

export default function Flags() {
  const may = usePermission("flags.manage");
  const flags = useQuery(FeatureFlagService.method.listFlags, {});
  const rows = flags.data?.flags ?? [];
  return (
    <Page title="Feature flags" description="Features that are switched on or off for the whole cluster. A flag is on only while what it depends on is on.">
      <Card title="Flags">
        {!may ? <Needs permission="flags.manage" what="Changing a flag needs" /> : null}
        {flags.error ? (
          <ErrorPanel error={flags.error} />
        ) : !flags.data ? (
          <Loading />
        ) : (
          <table className="table">
            <caption className="visually-hidden">Feature flags</caption>
            <TableHead columns={["Flag", "Depends on", "Needed by", "Last change", "State"]} />
            <tbody>
              {rows.map((f) => (
                <FlagRow key={f.key} flag={f} all={rows} may={may} />
              ))}
            </tbody>
          </table>
        )}
        {flags.data ? <p className="field-hint">{allShown(rows.length, "flags")}</p> : null}
      </Card>
    </Page>
  );
}

function FlagRow({ flag, all, may }: { flag: Flag; all: Flag[]; may: boolean }) {
  const queryClient = useQueryClient();
  const [error, setError] = useState<unknown>();
  const set = useMutation(FeatureFlagService.method.setFlag, {
    onSuccess: () => queryClient.invalidateQueries({ queryKey: createConnectQueryKey({ schema: FeatureFlagService.method.listFlags, cardinality: undefined }) }),
    onError: setError,
  });
  const enabled = (key: string) => all.find((f) => f.key === key)?.enabled;
  const dependents = all.filter((f) => f.dependsOn.includes(flag.key));
  const labelId = `flag-${flag.key}`;
  return (
    <tr>
      <td>
        <strong id={labelId}>
          <code>{flag.key}</code>
        </strong>{" "}
        <Badge tone={stageTones[flag.stage]}>{(FlagStage[flag.stage] ?? "").toLowerCase()}</Badge>
        <div className={styles.muted}>{flag.description}</div>
        {flag.enabled !== flag.defaultEnabled ? <div className={styles.muted}>Default: {flag.defaultEnabled ? "on" : "off"}</div> : null}
        {error ? <ErrorPanel error={error} title={`palyrad refused to turn ${flag.key} ${flag.enabled ? "off" : "on"}`} /> : null}
      </td>
      <td>
        <Deps keys={flag.dependsOn} enabled={enabled} />
      </td>
      <td>
        <Deps keys={dependents.map((d) => d.key)} enabled={enabled} />
      </td>
      <td>
        {flag.updatedBy ? (
          <>
            <RelativeTime value={flag.updateTime} /> by {flag.updatedBy}
          </>
        ) : (
          <span className={styles.muted}>never changed</span>
        )}
      </td>
      <td>
        <button
          type="button"
          role="switch"
          aria-checked={flag.enabled}
          aria-labelledby={labelId}
          className={`button button-small ${flag.enabled ? "button-primary" : ""}`}
          disabled={!may || set.isPending}
          aria-busy={set.isPending}
          onClick={() => {
            setError(undefined);
            set.mutate({ key: flag.key, enabled: !flag.enabled });
          }}
        >
          {flag.enabled ? "On" : "Off"}
        </button>
      </td>
    </tr>
  );
}

function Deps({ keys, enabled }: { keys: string[]; enabled: (key: string) => boolean | undefined }) {
  if (keys.length === 0) return <span className={styles.muted}>none</span>;
  return (
    <span className={styles.chips}>
      {keys.map((k) => (
        <Badge key={k} tone={enabled(k) ? "ok" : "neutral"}>{`${k}: ${enabled(k) ? "on" : "off"}`}</Badge>
      ))}
    </span>
  );
}
