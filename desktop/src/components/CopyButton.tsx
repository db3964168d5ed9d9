// CopyButton copies a text to the clipboard and says so ("Copied", announced), or says
// that the browser refused (the text stays selectable beside it).
import { useState } from "react";

export function CopyButton({ text, label = "Copy" }: { text: string; label?: string }) {
  const [done, setDone] = useState<"copied" | "failed">();
  async function copy() {
    try {
      await navigator.clipboard.writeText(text);
      setDone("copied");
    } catch {
      setDone("failed");
    }
  }
  return (
    <>
      <button type="button" className="button" onClick={() => void copy()}>
        {label}
      </button>
      <span role="status" className="field-hint">
        {done === "copied" ? "Copied." : done === "failed" ? "The browser did not allow copying: select the text instead." : ""}
      </span>
    </>
  );
}
