// RelativeTime shows a time relative to now ("3 minutes ago", "in 20 seconds"), with the
// absolute time on hover and for assistive technology (the <time> element's title and
// dateTime). Every instance re-renders from one shared 15-second tick.
import { useSyncExternalStore } from "react";
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";

const listeners = new Set<() => void>();
let now = Date.now();
let timer: ReturnType<typeof setInterval> | undefined;

function subscribe(listener: () => void) {
  listeners.add(listener);
  if (!timer) {
    timer = setInterval(() => {
      now = Date.now();
      listeners.forEach((l) => l());
    }, 15_000);
  }
  return () => {
    listeners.delete(listener);
    if (listeners.size === 0 && timer) {
      clearInterval(timer);
      timer = undefined;
    }
  };
}

const units: [Intl.RelativeTimeFormatUnit, number][] = [
  ["year", 365 * 24 * 3600],
  ["month", 30 * 24 * 3600],
  ["day", 24 * 3600],
  ["hour", 3600],
  ["minute", 60],
  ["second", 1],
];
const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
const absolute = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "long" });

/** formatRelative says how far date is from nowMs, in the largest whole unit. */
export function formatRelative(date: Date, nowMs: number): string {
  const seconds = Math.round((date.getTime() - nowMs) / 1000);
  if (Math.abs(seconds) < 10) return "just now";
  for (const [unit, size] of units) {
    if (Math.abs(seconds) >= size || unit === "second") return relative.format(Math.trunc(seconds / size), unit);
  }
  return relative.format(seconds, "second");
}

/** RelativeTime renders a protobuf Timestamp or a Date; nothing becomes "never". */
export function RelativeTime({ value, never = "never" }: { value: Timestamp | Date | undefined; never?: string }) {
  const current = useSyncExternalStore(subscribe, () => now);
  if (!value) return <span>{never}</span>;
  const date = value instanceof Date ? value : timestampDate(value);
  const full = absolute.format(date);
  return (
    <time dateTime={date.toISOString()} title={full} aria-label={`${formatRelative(date, Math.max(current, Date.now()))} (${full})`}>
      {formatRelative(date, Math.max(current, Date.now()))}
    </time>
  );
}
