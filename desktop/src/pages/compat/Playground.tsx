// Chat playground: a conversation with a model of the OpenAI-compatible API, as the
// signed-in principal (its usage counts for the session's token). The answer streams
// (CompatService.StreamChatCompletion, usage included) and is rendered chunk by chunk as
// it arrives, as text, never HTML; Stop (or Escape) cancels the stream, and the server
// then cancels the provider's request. Without streaming it is one
// CreateChatCompletion. Errors show the server's message and code, and which feature
// flag to turn on when the API or its streaming is off.
import { useEffect, useMemo, useRef, useState, type FormEvent, type KeyboardEvent } from "react";
import { flushSync } from "react-dom";
import { useSearchParams } from "react-router";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { useQuery, useTransport } from "@connectrpc/connect-query";
import { CompatService, type ChatMessageSchema, type Usage } from "../../../../gen/ts/palyra/compat/v1/compat_pb.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { usePermission } from "../../session.js";
import { Card, Page } from "../../components/Page.js";
import { CompatError } from "./CompatError.js";
import styles from "./compat.module.css";
import { count } from "../../components/plural.js";

/** Turn is one message of the conversation. */
interface Turn {
  role: "user" | "assistant";
  content: string;
  /** usage of the answer, when the provider reported it. */
  usage?: Usage;
  /** finish is the answer's finish_reason. */
  finish?: string;
  /** ended says why an answer is partial. */
  ended?: "stopped" | "failed";
}

export default function Playground() {
  if (!usePermission("compat.chat.create")) {
    return (
      <Page title="Chat playground">
        <p className="field-hint">
          Needs the permission <code>compat.chat.create</code>.
        </p>
      </Page>
    );
  }
  return <PlaygroundBody />;
}

function PlaygroundBody() {
  const transport = useTransport();
  const client = useMemo(() => createClient(CompatService, transport), [transport]);
  const mayModels = usePermission("compat.models.read");
  const models = useQuery(CompatService.method.listModels, {}, { enabled: mayModels });
  const [params] = useSearchParams();
  const [model, setModel] = useState(params.get("model") ?? "");
  const [system, setSystem] = useState("");
  const [stream, setStream] = useState(true);
  const [turns, setTurns] = useState<Turn[]>([]);
  const [draft, setDraft] = useState("");
  const [live, setLive] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [announce, setAnnounce] = useState("");
  const abort = useRef<AbortController | null>(null);
  const busy = live !== null;

  // The first listed model until one is picked.
  const listed = models.data?.models ?? [];
  useEffect(() => {
    if (!model && listed.length > 0) setModel(listed[0].id);
  }, [model, listed]);
  // A stream in flight ends with the page.
  useEffect(() => () => abort.current?.abort(), []);

  async function send(e?: FormEvent) {
    e?.preventDefault();
    const text = draft.trim();
    if (!text || !model || busy) return;
    const history: Turn[] = [...turns, { role: "user", content: text }];
    const messages: MessageInitShape<typeof ChatMessageSchema>[] = [
      ...(system.trim() ? [{ role: "system", content: system }] : []),
      ...history.filter((t) => t.content !== "").map((t) => ({ role: t.role, content: t.content })),
    ];
    setTurns(history);
    setDraft("");
    setError(null);
    setAnnounce("Answering…");
    setLive("");
    const controller = new AbortController();
    abort.current = controller;
    let answer = "";
    let usage: Usage | undefined;
    let finish = "";
    const done = (turn: Partial<Turn>, message: string) => {
      setTurns([...history, { role: "assistant", content: answer, usage, finish, ...turn }]);
      setLive(null);
      setAnnounce(message);
      abort.current = null;
    };
    try {
      if (stream) {
        for await (const { chunk } of client.streamChatCompletion({ model, messages, includeUsage: true }, { signal: controller.signal })) {
          if (chunk?.usage) usage = chunk.usage;
          const choice = chunk?.choices[0];
          if (choice?.finishReason) finish = choice.finishReason;
          const delta = choice?.delta?.content ?? "";
          if (delta) {
            answer += delta;
            // Each chunk is on the screen before the next is read: the answer is
            // rendered as it arrives, not in one batch at its end.
            const now = answer;
            flushSync(() => setLive(now));
          }
        }
      } else {
        const { completion } = await client.createChatCompletion({ model, messages }, { signal: controller.signal });
        const choice = completion?.choices[0];
        answer = choice?.message?.content ?? "";
        finish = choice?.finishReason ?? "";
        usage = completion?.usage;
      }
      done({}, "The answer is complete.");
    } catch (err) {
      if (controller.signal.aborted || ConnectError.from(err).code === Code.Canceled) {
        done({ ended: "stopped" }, "Stopped.");
        return;
      }
      setError(err);
      if (answer) done({ ended: "failed" }, "The answer failed.");
      else {
        // Nothing was answered: the message goes back to the composer, to send again.
        setTurns(turns);
        setDraft(text);
        setLive(null);
        setAnnounce("The call failed.");
        abort.current = null;
      }
    }
  }

  function stop() {
    abort.current?.abort();
  }

  function composerKeys(e: KeyboardEvent<HTMLTextAreaElement>) {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) void send();
    if (e.key === "Escape" && busy) stop();
  }

  const canSend = Boolean(model && draft.trim()) && !busy;
  return (
    <Page title="Chat playground" description="Talk to a model of the OpenAI-compatible API with your session's token; the calls count in its usage and are audited (without their text).">
      <div className={styles.playground}>
        <Card title="Settings">
          <div className={styles.settings}>
            <div className="field">
              <label htmlFor="pg-model">Model</label>
              {mayModels && listed.length > 0 ? (
                <select id="pg-model" value={model} onChange={(e) => setModel(e.target.value)} disabled={busy}>
                  {listed.map((m) => (
                    <option key={m.id} value={m.id}>
                      {m.id} ({m.ownedBy})
                    </option>
                  ))}
                  {model && !listed.some((m) => m.id === model) ? <option value={model}>{model} (not listed)</option> : null}
                </select>
              ) : (
                <input id="pg-model" value={model} onChange={(e) => setModel(e.target.value)} disabled={busy} spellCheck={false} placeholder="palyra-echo" />
              )}
              {models.error ? <CompatError error={models.error} title="The models could not be listed" /> : null}
            </div>
            <div className="field">
              <label htmlFor="pg-system">System prompt</label>
              <textarea id="pg-system" rows={4} value={system} onChange={(e) => setSystem(e.target.value)} disabled={busy} placeholder="Optional" />
            </div>
            <div>
              <label className={styles.check}>
                <input type="checkbox" checked={stream} onChange={(e) => setStream(e.target.checked)} disabled={busy} aria-describedby="pg-stream-hint" />
                Stream the answer
              </label>
              <p id="pg-stream-hint" className="field-hint">
                Needs the <code>compat_streaming</code> flag; unticked, the answer comes whole.
              </p>
            </div>
            <button type="button" className="button" onClick={() => { setTurns([]); setError(null); setAnnounce("The conversation is cleared."); }} disabled={busy || turns.length === 0}>
              Clear the conversation
            </button>
          </div>
        </Card>
        <Card title="Conversation">
          <ol className={styles.conversation} aria-label="Conversation">
            {turns.map((t, i) => (
              <TurnView key={i} turn={t} />
            ))}
            {live !== null ? (
              <li className={`${styles.message} ${styles.assistant}`} aria-busy="true">
                <span className={styles.role}>assistant</span>
                <p id="live-answer" className={styles.text}>{live}</p>
                <p className={styles.meta} role="status">Answering…</p>
              </li>
            ) : null}
          </ol>
          {turns.length === 0 && live === null ? <p className="field-hint">No messages yet.</p> : null}
          {error ? <div className={styles.error}><CompatError error={error} title="The model did not answer" /></div> : null}
          <p className="visually-hidden" aria-live="polite">{announce}</p>
          <form className={styles.composer} onSubmit={(e) => void send(e)}>
            <div className="field">
              <label htmlFor="pg-message">Message</label>
              <textarea id="pg-message" rows={3} value={draft} onChange={(e) => setDraft(e.target.value)} onKeyDown={composerKeys} aria-describedby="pg-message-hint" />
              <p id="pg-message-hint" className="field-hint">
                <kbd>Ctrl</kbd>+<kbd>Enter</kbd> sends; <kbd>Escape</kbd> stops an answer.
              </p>
            </div>
            <div className={styles.composerActions}>
              <button type="submit" className="button button-primary" disabled={!canSend}>
                Send
              </button>
              <button type="button" className="button" onClick={stop} disabled={!busy}>
                Stop
              </button>
            </div>
          </form>
        </Card>
      </div>
    </Page>
  );
}

function TurnView({ turn }: { turn: Turn }) {
  const u = turn.usage;
  return (
    <li className={`${styles.message} ${turn.role === "assistant" ? styles.assistant : ""}`} data-role={turn.role}>
      <span className={styles.role}>{turn.role}</span>
      <p className={styles.text}>{turn.content}</p>
      {turn.role === "assistant" ? (
        <p className={styles.meta}>
          {turn.ended === "stopped" ? "Stopped. " : turn.ended === "failed" ? "Failed before its end. " : null}
          {turn.finish ? <>Finished: {turn.finish}. </> : null}
          {u ? (
            <>
              Usage: {String(u.promptTokens)} prompt + {String(u.completionTokens)} completion = {count(u.totalTokens, "tokens")}.
            </>
          ) : (
            "No usage reported."
          )}
        </p>
      ) : null}
    </li>
  );
}
