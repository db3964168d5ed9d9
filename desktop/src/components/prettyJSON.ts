/** prettyJSON indents a JSON text, or returns it as it is when it is not JSON. */
export function prettyJSON(text: string): string {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}
