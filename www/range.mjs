// HTTP Range parsing shared by the demo server and the edge worker (plain JS, no Node APIs).

/**
 * Parses a `Range` header against a file of `size` bytes: `null` to serve the whole file (no
 * header, several ranges, another unit, or a syntactically invalid one — RFC 9110 says to
 * ignore those), `'invalid'` when it cannot be satisfied (416), else `{ start, end }` with
 * `end` inclusive.
 */
export function parseRange(header, size) {
  if (!header) return null;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return null;
  if (m[1] === '') {
    const n = Number(m[2]);
    if (n === 0 || size === 0) return 'invalid';
    return { start: Math.max(0, size - n), end: size - 1 };
  }
  const start = Number(m[1]);
  if (m[2] !== '' && Number(m[2]) < start) return null;
  if (start >= size) return 'invalid';
  return { start, end: m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1) };
}
