// Files the tests make: safetensors headers, damaged deltas, and large synthetic
// base/fine-tune pairs for the bounded-memory tests.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** The header region of a safetensors file describing `obj` (8-byte length, padded JSON). */
export function safetensorsHeader(obj) {
  let json = JSON.stringify(obj);
  while (json.length % 8) json += ' ';
  const out = new Uint8Array(8 + json.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(new TextEncoder().encode(json), 8);
  return out;
}

/** A copy of ft-a's delta with 64 bytes flipped in its last chunk's blobs: the first chunks decode. */
export function corruptLastChunk(delta) {
  const bad = Buffer.from(delta);
  for (let i = 0; i < 64; i++) bad[bad.length - 300_000 + i * 997] ^= 0x5a;
  return bad;
}

function run(cmd, args) {
  const r = spawnSync(cmd, args, { cwd: root, stdio: ['ignore', 'inherit', 'inherit'] });
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')} failed`);
}

/**
 * Made once by `examples/synth_model.rs` and encoded by the native CLI, then reused from `dir`:
 * returns { base, delta, target } paths of a pair of about `gib` GiB in `dir`, making it when
 * missing. With `keepTarget: false` the fine-tune itself is deleted once encoded (`target` is
 * then null).
 */
export function syntheticPair(dir, gib, { keepTarget }) {
  const files = {
    base: path.join(dir, 'base.safetensors'),
    delta: path.join(dir, 'delta.zld'),
    target: path.join(dir, 'target.safetensors'),
  };
  const ready = fs.existsSync(files.base) && fs.existsSync(files.delta) && (!keepTarget || fs.existsSync(files.target));
  if (!ready) {
    fs.mkdirSync(dir, { recursive: true });
    run('cargo', ['run', '--quiet', '--release', '--example', 'synth_model', '--', files.base, files.target, String(gib)]);
    run(path.join(root, 'target/release/zipllm'), ['encode', '--base', files.base, '--target', files.target, '-o', files.delta]);
    if (!keepTarget) fs.rmSync(files.target);
  }
  return keepTarget ? files : { ...files, target: null };
}
