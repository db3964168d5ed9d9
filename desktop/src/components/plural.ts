// Counts in words: "1 event", "2 events", "The only event is shown." Nouns are given in
// the plural (as the lists name what they hold) and made singular by the regular
// English rules, which every noun the console counts follows.

/** singular turns the last word of a regular plural into the singular: "dispatches" →
 * "dispatch", "entries" → "entry", "pending requests" → "pending request". */
export function singular(plural: string): string {
  if (/ies$/.test(plural)) return plural.slice(0, -3) + "y";
  if (/(ch|sh|ss|x)es$/.test(plural)) return plural.slice(0, -2);
  return plural.replace(/s$/, "");
}

/** count says n of a noun: "1 event", "0 events", "12 events". */
export function count(n: number | bigint, plural: string): string {
  return `${String(n)} ${n == 1 ? singular(plural) : plural}`;
}

/** allShown is the footer of a complete list of n rows. */
export function allShown(n: number, plural: string): string {
  if (n === 0) return `No ${plural}.`;
  if (n === 1) return `The only ${singular(plural)} is shown.`;
  return `All ${n} ${plural} shown.`;
}
