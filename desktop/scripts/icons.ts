// Generates the console's icons (public/icons/): the SVG and its PNG renderings, drawn
// from the same few shapes, so that nothing is downloaded. Run after changing the mark:
//   node --import tsx scripts/icons.ts
import { writeFileSync } from "node:fs";
import { deflateSync } from "node:zlib";

const dir = new URL("../public/icons/", import.meta.url).pathname;
const background = [0x43, 0x38, 0xca] as const; // indigo 700
const white = [0xff, 0xff, 0xff] as const;

/** The mark on a 100×100 canvas: a ring (the control plane) and three nodes. */
const ring = { cx: 50, cy: 50, r: 22, width: 7 };
const nodes = [0, 120, 240].map((deg) => {
  const a = ((deg - 90) * Math.PI) / 180;
  return { cx: 50 + 22 * Math.cos(a), cy: 50 + 22 * Math.sin(a), r: 9 };
});
const hub = { cx: 50, cy: 50, r: 7 };

/** inMark says whether a point of the 100×100 canvas is white. */
function inMark(x: number, y: number): boolean {
  const d = Math.hypot(x - ring.cx, y - ring.cy);
  if (Math.abs(d - ring.r) <= ring.width / 2) return true;
  if (Math.hypot(x - hub.cx, y - hub.cy) <= hub.r) return true;
  return nodes.some((n) => Math.hypot(x - n.cx, y - n.cy) <= n.r);
}

/** inTile says whether a point is inside the rounded square (radius 22). */
function inTile(x: number, y: number, full: boolean): boolean {
  if (full) return true;
  const r = 22;
  const qx = Math.max(r - x, x - (100 - r), 0);
  const qy = Math.max(r - y, y - (100 - r), 0);
  return Math.hypot(qx, qy) <= r;
}

/** png renders the icon at size×size; maskable fills the square and shrinks the mark into the safe zone. */
function png(size: number, maskable: boolean): Buffer {
  const ss = 4;
  const rows: Buffer[] = [];
  for (let py = 0; py < size; py++) {
    const row = Buffer.alloc(1 + size * 4);
    for (let px = 0; px < size; px++) {
      let tile = 0;
      let mark = 0;
      for (let sy = 0; sy < ss; sy++) {
        for (let sx = 0; sx < ss; sx++) {
          const x = ((px + (sx + 0.5) / ss) / size) * 100;
          const y = ((py + (sy + 0.5) / ss) / size) * 100;
          if (!inTile(x, y, maskable)) continue;
          tile++;
          const scale = maskable ? 0.8 : 1;
          if (inMark(50 + (x - 50) / scale, 50 + (y - 50) / scale)) mark++;
        }
      }
      const n = ss * ss;
      const o = 1 + px * 4;
      const m = tile ? mark / tile : 0;
      for (let c = 0; c < 3; c++) row[o + c] = Math.round(background[c] * (1 - m) + white[c] * m);
      row[o + 3] = Math.round((255 * tile) / n);
    }
    rows.push(row);
  }
  const chunk = (type: string, data: Buffer) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(type, "ascii"), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(body));
    return Buffer.concat([len, body, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(size, 0);
  ihdr.writeUInt32BE(size, 4);
  ihdr.set([8, 6, 0, 0, 0], 8); // 8-bit RGBA
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", ihdr),
    chunk("IDAT", deflateSync(Buffer.concat(rows), { level: 9 })),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}

function crc32(buf: Buffer): number {
  let c = ~0;
  for (const b of buf) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0xedb88320 & -(c & 1));
  }
  return ~c >>> 0;
}

const hex = (c: readonly number[]) => "#" + c.map((v) => v.toString(16).padStart(2, "0")).join("");
const svg = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 100 100" role="img" aria-label="Palyra">
  <rect width="100" height="100" rx="22" fill="${hex(background)}"/>
  <circle cx="${ring.cx}" cy="${ring.cy}" r="${ring.r}" fill="none" stroke="#fff" stroke-width="${ring.width}"/>
  <circle cx="${hub.cx}" cy="${hub.cy}" r="${hub.r}" fill="#fff"/>
${nodes.map((n) => `  <circle cx="${n.cx.toFixed(2)}" cy="${n.cy.toFixed(2)}" r="${n.r}" fill="#fff"/>`).join("\n")}
</svg>
`;

writeFileSync(dir + "icon.svg", svg);
writeFileSync(dir + "icon-192.png", png(192, false));
writeFileSync(dir + "icon-512.png", png(512, false));
writeFileSync(dir + "icon-maskable-512.png", png(512, true));
