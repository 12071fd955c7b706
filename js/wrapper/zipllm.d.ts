// Types of the zipllm npm package (written by hand; scripts/build-wasm.sh copies them next to
// each build, adding init/initSync for the web build).

/** Random-access bytes: a Blob/File, bytes in memory, or an async reader of `length` bytes at `offset`. */
export type ByteSource =
  | Blob
  | ArrayBuffer
  | Uint8Array
  | ((offset: number, length: number) => Uint8Array | ArrayBuffer | Promise<Uint8Array | ArrayBuffer>);

/** Sequential bytes: anything a ByteSource is, or a stream of chunks, or a fetch Response. */
export type StreamSource = ByteSource | ReadableStream<Uint8Array> | Response;

export interface Progress {
  /** "rebuilding" while bytes flow, "done" once the whole file was verified. */
  phase: "rebuilding" | "done";
  /** Delta bytes consumed so far. */
  deltaBytes: number;
  /** Output bytes handed out so far (each chunk verified before). */
  outputBytes: number;
  /** Size of the file being rebuilt. */
  totalBytes: number;
  /** Set when phase is "done": the rebuilt file's sha256 (the hub's LFS oid) and blake3. */
  sha256?: string;
  blake3?: string;
  /** Set when phase is "done": whether sha256 and blake3 were computed over the output (see Summary). */
  fullHashChecked?: boolean;
}

export interface RebuildOptions {
  /** The base model the delta was made against. */
  base: ByteSource;
  /** The base's length, when `base` is a reader function (checked against the delta's record). */
  baseSize?: number;
  /** The delta, possibly still downloading. */
  delta: StreamSource;
  /** Called after every verified chunk, and once at the end. */
  onProgress?: (p: Progress) => void;
  /**
   * Memory for the output, instead of a new Uint8Array per chunk (in Chromium that allocation
   * costs more than a quarter of a rebuild): a Uint8Array at least the file's size, which the
   * stream then yields views of, or `(offset, length) => Uint8Array` returning the buffer to
   * fill for each chunk (so two buffers can take turns).
   */
  into?: Uint8Array | ((offset: number, length: number) => Uint8Array);
  /**
   * `[k, n]`: rebuild only part k of n — the 4 MiB chunks whose index is k modulo n (part 0
   * also the header) — so n Web Workers fed the same delta rebuild the file together. Chunks
   * come out with their file offsets (use `into`); needs `fullHash: false`.
   */
  part?: [number, number];
  /**
   * Also hash the whole output (sha256, blake3) and compare with the delta's record (default
   * true). Every chunk is checked against its blake3 either way; the whole-file sha256 is what
   * ties the output to the hub's LFS oid independently of the delta's own checksums.
   */
  fullHash?: boolean;
  /**
   * The sha256 (64 hex digits) the rebuilt file must have, e.g. the hub's LFS oid: a delta whose
   * manifest promises another file fails with UNEXPECTED_TARGET before anything is decoded, and
   * the output is hashed and compared at the end. Needs `fullHash` (INVALID_INPUT with `false`).
   */
  expectSha256?: string;
}

export interface RangeOptions {
  base: ByteSource;
  /** Random access is needed: bytes, a Blob, or a reader (e.g. fetch with Range). */
  delta: ByteSource;
  /** First byte of the range. */
  start: number;
  /** One past the last byte. */
  end: number;
  /** The base's length, when `base` is a reader function (checked against the delta's record). */
  baseSize?: number;
}

/** As RangeOptions; the range defaults to the whole file. */
export interface RangeStreamOptions extends Omit<RangeOptions, "start" | "end"> {
  start?: number;
  end?: number;
}

export interface EncodeOptions {
  /** zstd level, one of `encodeLevels()` (default 1). */
  level?: number;
  /** "auto" (default), "bitx", "bitx-fields" or "best". */
  strategy?: "auto" | "bitx" | "bitx-fields" | "best";
}

/** The identity of a rebuilt file. */
export interface Summary {
  size: number;
  /** sha256 and blake3 of the output: computed over it when `fullHashChecked`, else the delta's record. */
  sha256: string;
  blake3: string;
  /** Whether the hashes were computed over the output and found equal to the delta's record (false with `fullHash: false`; every chunk was checked either way). */
  fullHashChecked: boolean;
}

/** What a delta rebuilds and from what, read from its manifest alone (see `describe`). */
export interface Description {
  formatVersion: number;
  /** Length, sha256 (the hub's LFS oid) and blake3 of the file the delta rebuilds. */
  targetSize: number;
  targetSha256: string;
  targetBlake3: string;
  /** Length and header-region blake3 of the base it needs. */
  baseSize: number;
  baseHeaderBlake3: string;
  /** Length of the whole delta. */
  deltaSize: number;
  /** Number of independently decodable chunks. */
  chunks: number;
}

/** Bytes before (in the target) and after (in the delta's payload). */
export interface Sizes {
  /** Tensors (or blobs, for methods). */
  count: number;
  before: number;
  after: number;
  /** after / before (0 when before is 0). */
  ratio: number;
}

/** What is inside a delta (see `inspect`). */
export interface InspectReport {
  formatVersion: number;
  /** Length of the delta. */
  deltaBytes: number;
  /** Length of the rebuilt file. */
  targetBytes: number;
  /** deltaBytes / targetBytes. */
  ratio: number;
  targetSha256: string;
  targetBlake3: string;
  /** Length of the base the delta needs, and the blake3 of its header region. */
  baseBytes: number;
  baseHeaderBlake3: string;
  /** Header bytes stored verbatim. */
  headerBytes: number;
  tensors: number;
  pieces: number;
  blobs: number;
  chunks: number;
  /** By tensor kind: "same-as-base", "delta", "standalone", "duplicate". */
  byKind: Record<string, Sizes>;
  /** By dtype name ("BF16", "F32", …). */
  byDtype: Record<string, Sizes>;
  /** Blob bytes by method ("transform+layout", e.g. "diff+sparse-planes"); `before` is the pieces' bytes. */
  byMethod: Record<string, Sizes>;
}

export interface TensorHash { name: string; dtype: string; shape: number[]; bytes: number; blake3: string; }

export interface FileHashes { size: number; sha256: string; blake3: string; }

export interface TensorHashes extends FileHashes { tensors: TensorHash[]; }

/**
 * What a party knows of a model from its header and sampled blocks (see docs/FAMILY.md).
 * Structured-clonable; `matchFamily` also takes one with the snake_case names of older versions.
 */
export interface Fingerprint {
  version: number;
  fileLen: number;
  headerLen: number;
  arch: string;
  bytesRead: number;
  tensors: { name: string; canonical: string; dtype: string; shape: number[]; len: number }[];
  samples: { block: { tensor: number; offset: number; len: number }; bytes: Uint8Array }[];
}

export interface RemoteFingerprintOptions {
  /** Read at most this many bytes (the default and the ceiling: 1% of the file and 2 MiB). */
  maxBytes?: number;
  /** Range requests in flight at a time (default 8, at most 64). */
  concurrency?: number;
}

export interface Verdict {
  candidate: string;
  verdict: "related" | "unrelated" | "incompatible";
  reason: string;
  bitDistance: number | null;
  normalizedDistance: number | null;
  threshold: number;
  errorBound: number;
  confidence: number;
  overlap: number;
  /** By dtype name. */
  perDtype: Record<string, { bitDistance: number; elements: number }>;
  elements: number;
}

/** An Error from zipllm: `code` says what kind. */
export interface ZipllmError extends Error {
  code:
    | "BAD_SAFETENSORS"
    | "CORRUPT_DELTA"
    | "TRUNCATED_DELTA"
    | "UNSUPPORTED_VERSION"
    | "WRONG_BASE"
    | "INVALID_INPUT"
    | "IO"
    | "UNEXPECTED_TARGET"
    | "INTERNAL";
}

/**
 * Rebuilds the fine-tuned file from `base` and a `delta` that may still be arriving. The stream
 * yields the file in order, each 4 MiB chunk only after its checksum passed, and errors (with a
 * ZipllmError) on a wrong base or a corrupt delta instead of yielding bad bytes. Options that
 * cannot work throw at once (INVALID_INPUT).
 */
export function rebuild(options: RebuildOptions): ReadableStream<Uint8Array>;

/** Rebuilds and checks everything without keeping the output. */
export function verify(options: RebuildOptions): Promise<Summary>;

/** Bytes `[start, end)` of the fine-tuned file alone, decoding only the chunks that cover them. */
export function rebuildRange(options: RangeOptions): Promise<Uint8Array>;

/**
 * The same range (the whole file by default) streamed chunk by chunk with bounded memory. The
 * promise settles once the base is checked; a chunk that fails its check errors the stream.
 */
export function rebuildRangeStream(options: RangeStreamOptions): Promise<ReadableStream<Uint8Array>>;

/** What a delta rebuilds and from what, from its manifest alone (two reads). */
export function describe(delta: ByteSource): Promise<Description>;

/** What a delta holds: sizes before and after by tensor kind, dtype and method. */
export function inspect(delta: ByteSource): Promise<InspectReport>;

/** Makes a delta that rebuilds `target` from `base` (whole files in memory). INVALID_INPUT in a decoder-only build. */
export function encode(base: Uint8Array | ArrayBuffer, target: Uint8Array | ArrayBuffer, options?: EncodeOptions): Uint8Array;

/** The zstd levels `encode` offers: 1–22 (C zstd, the published build), [1] with ruzstd, [] decoder-only. */
export function encodeLevels(): number[];

/** sha256 (the hub's LFS oid) and blake3 of a file, streaming. */
export function hashFile(source: StreamSource): Promise<FileHashes>;

/** blake3 of every tensor of a safetensors file, and the file's hashes, streaming. */
export function hashTensors(source: StreamSource): Promise<TensorHashes>;

/** Fingerprints a local safetensors file from its header and a 1% sample. */
export function fingerprint(source: ByteSource): Promise<Fingerprint>;

/** Fingerprints a remote safetensors file with HTTP Range requests (at most 1% of it and 2 MiB). */
export function fingerprintRemote(url: string | URL, options?: RemoteFingerprintOptions): Promise<Fingerprint>;

/** Ranks locally held bases for a fingerprint, reading only the sampled blocks of each. */
export function matchFamily(
  fingerprint: Fingerprint,
  bases: Array<ByteSource | { name: string; source: ByteSource }>,
): Promise<Verdict[]>;

/** The delta format version this build reads and writes. */
export function formatVersion(): number;

/** Bytes of wasm linear memory the module holds now (it only grows: also the peak). */
export function wasmMemoryBytes(): number;
