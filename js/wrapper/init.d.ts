
/** What `init` can load the module from: a URL (default: zipllm_bg.wasm next to this file), a Response, bytes, or a compiled module (workerd). */
export type InitInput = RequestInfo | URL | Response | BufferSource | WebAssembly.Module;

/** Loads the module; call it (or `initSync`) before anything else. */
export default function init(options?: { module_or_path: InitInput | Promise<InitInput> }): Promise<void>;

/** Loads the module synchronously from bytes or a compiled module. */
export function initSync(options: { module: BufferSource | WebAssembly.Module }): void;
