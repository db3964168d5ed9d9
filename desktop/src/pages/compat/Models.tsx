// Models: the models the OpenAI-compatible API serves (CompatService.ListModels), each
// with who serves it: palyrad itself (palyra-echo), an upstream provider
// (compat.providers.<name>) or the online nodes that announce it.
import { useQuery } from "@connectrpc/connect-query";
import { Link } from "react-router";
import { CompatService, type Model } from "../../../../gen/ts/palyra/compat/v1/compat_pb.js";
import { usePermission } from "../../session.js";
import { Card, Page } from "../../components/Page.js";
import { Badge } from "../../components/Badge.js";
import { CompatError } from "./CompatError.js";

/** owner says who serves a model, from its owned_by. */
export function owner(m: Model): { kind: "palyra" | "node" | "provider"; label: string } {
  if (m.ownedBy === "palyra") return { kind: "palyra", label: "served by palyrad" };
  if (m.ownedBy === "node") return { kind: "node", label: "served by a node" };
  return { kind: "provider", label: `provider ${m.ownedBy}` };
}

export default function Models() {
  const mayChat = usePermission("compat.chat.create");
  const models = useQuery(CompatService.method.listModels, {}, { refetchInterval: 30_000 });
  let body;
  if (models.error) body = <CompatError error={models.error} title="The models could not be listed" />;
  else if (!models.data) body = <p role="status" className="field-hint">Loading…</p>;
  else if (models.data.models.length === 0)
    body = (
      <p className="field-hint">
        No models: list some in <code>compat.models</code>, configure a provider (<code>compat.providers.&lt;name&gt;</code>) or run a
        node that serves <code>llm.chat</code>.
      </p>
    );
  else
    body = (
      <table className="table">
        <caption className="visually-hidden">Models of the OpenAI-compatible API, in configuration order</caption>
        <thead>
          <tr>
            <th scope="col">Model</th>
            <th scope="col">Owner</th>
            <th scope="col">Served by</th>
            {mayChat ? <th scope="col"><span className="visually-hidden">Actions</span></th> : null}
          </tr>
        </thead>
        <tbody>
          {models.data.models.map((m) => {
            const o = owner(m);
            return (
              <tr key={m.id}>
                <td><code>{m.id}</code></td>
                <td><code>{m.ownedBy}</code></td>
                <td><Badge tone={o.kind === "palyra" ? "ok" : "neutral"}>{o.label}</Badge></td>
                {mayChat ? (
                  <td>
                    <Link to={`/compat/playground?model=${encodeURIComponent(m.id)}`} aria-label={`Chat with ${m.id}`}>
                      Chat
                    </Link>
                  </td>
                ) : null}
              </tr>
            );
          })}
        </tbody>
      </table>
    );
  return (
    <Page title="Models" description="The models of the OpenAI-compatible API (/v1 and CompatService), and who serves each.">
      <Card title="Models">{body}</Card>
    </Page>
  );
}
