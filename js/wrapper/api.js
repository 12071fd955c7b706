// The public API of the npm package over the wasm-bindgen glue (src/wasm/), for every target:
// scripts/build-wasm.sh inlines this file into web/zipllm.js (ES module) and node/zipllm.js
// (CommonJS), which hand `makeApi` their glue.
//
// A Rust panic, or any other fault of the wasm instance, must reach callers as an Error with
// code "INTERNAL" and leave the module usable. The glue's exports never throw: they return
// { value } or { error }, and async work is a Task this file steps. So whatever is thrown out of
// a glue call is a fault. `enter` catches it, and once no wasm call is in progress has the glue
// make a fresh instance of the module (wasm-bindgen's reinit: the panic hook has scheduled it,
// or `__scheduleReinit` does for a trap); calls that were using the old instance then fail
// with INTERNAL too, instead of touching the new one.

function makeApi(glue, isReady = () => true) {
  /** Fresh instances made after faults; state from an older one is gone. */
  let generation = 0;
  /** Glue calls in progress (a callback from wasm may call in again). */
  let depth = 0;
  /** { error, scheduled } once a call faulted, until the module is reinitialized. */
  let fault = null;

  function coded(code, message, cause) {
    const e = new Error(message, cause === undefined ? undefined : { cause });
    e.code = code;
    return e;
  }

  function internal(e) {
    if (e instanceof Error && e.code === 'INTERNAL') return e;
    return coded('INTERNAL', `internal error: the wasm module faulted: ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`, e);
  }

  /** Calls into the glue for work of generation `gen`, turning a fault into INTERNAL. */
  function enter(gen, f) {
    if (!isReady()) throw coded('INVALID_INPUT', 'zipllm: call init() (or initSync()) before anything else');
    if (fault) throw coded('INTERNAL', `internal error: the module faulted during this call (${fault.error.message})`);
    if (gen !== generation) throw coded('INTERNAL', 'internal error: the module was reinitialized after a fault in another call, which ended this one');
    depth++;
    let out;
    try {
      out = f();
    } catch (e) {
      // The panic hook throws a coded INTERNAL error after scheduling the reinit; a trap does not.
      fault ??= { error: internal(e), scheduled: e instanceof Error && e.code === 'INTERNAL' };
    } finally {
      depth--;
    }
    if (fault) {
      const { error } = fault;
      if (depth === 0) reinit();
      throw error;
    }
    return out;
  }

  function reinit() {
    const { scheduled } = fault;
    fault = null;
    generation++;
    try {
      if (!scheduled) glue.__scheduleReinit();
      glue.formatVersion(); // any export: its call makes the glue instantiate the module afresh
    } catch {
      // The next call meets the same fault.
    }
  }

  /** The value of a glue outcome, or its error thrown. */
  function value(out) {
    if ('error' in out) throw out.error;
    return out.value;
  }

  /** A Task or other glue object, freed once only and only in the instance that made it. */
  function held(obj, gen) {
    return {
      obj,
      gen,
      free() {
        const o = this.obj;
        this.obj = null;
        if (o && this.gen === generation && !fault) {
          try {
            enter(this.gen, () => o.free());
          } catch {
            // A fault here was handled by enter; nothing else to free.
          }
        }
      },
    };
  }

  /** Steps `task` to its next outcome: { value }, { error } or { done: true }. */
  function stepper(task) {
    let resume = null;
    const wake = () => {
      const r = resume;
      resume = null;
      r?.();
    };
    // Promises the task awaits settle into a plain object and wake the stepper: no callback
    // into wasm, so a promise settling after a reinit touches nothing.
    const watch = (promise) => {
      const slot = {};
      promise.then(
        (v) => {
          slot.value = v;
          wake();
        },
        (e) => {
          slot.error = e;
          wake();
        },
      );
      return slot;
    };
    return async () => {
      for (;;) {
        const o = task.obj;
        if (!o) return { done: true };
        const out = enter(task.gen, () => o.step(watch));
        if (out !== undefined) return out;
        await new Promise((r) => (resume = r));
      }
    };
  }

  /** The single value of a one-shot Task the glue returns from `start()`. */
  async function settle(start) {
    const gen = generation;
    const task = held(enter(gen, start), gen);
    try {
      return { value: value(await stepper(task)()), gen };
    } finally {
      task.free();
    }
  }

  /** A ReadableStream pulling chunks from a streaming Task. */
  function readable(obj, gen) {
    const task = held(obj, gen);
    const next = stepper(task);
    let cancelled = false;
    return new ReadableStream(
      {
        async pull(controller) {
          let out;
          try {
            out = await next();
          } catch (e) {
            out = { error: e };
          }
          if (cancelled) return;
          if ('error' in out) {
            task.free();
            controller.error(out.error);
          } else if (out.done) {
            task.free();
            controller.close();
          } else {
            controller.enqueue(out.value);
          }
        },
        cancel() {
          cancelled = true;
          task.free();
        },
      },
      // No read-ahead: the chunk after the one being read is made when it is asked for, which
      // is what lets `into` hand out two buffers in turn.
      { highWaterMark: 0 },
    );
  }

  // The core's reports use snake_case field names (the CLI's --json and fingerprint files keep
  // them); objects returned here use camelCase. Keys of these fields are data (dtype names,
  // tensor kinds, methods), not field names.
  const MAPS = new Set(['by_kind', 'by_dtype', 'by_method', 'per_dtype']);

  function camel(v, keepKeys = false) {
    if (Array.isArray(v)) return v.map((x) => camel(x));
    if (v === null || typeof v !== 'object' || ArrayBuffer.isView(v)) return v;
    const out = {};
    for (const [k, x] of Object.entries(v)) {
      out[keepKeys ? k : k.replace(/_([a-z0-9])/g, (_, c) => c.toUpperCase())] = camel(x, !keepKeys && MAPS.has(k));
    }
    return out;
  }

  /** A fingerprint with the core's field names, from either casing (one kept from an older version may be snake_case). */
  function snake(v) {
    if (Array.isArray(v)) return v.map(snake);
    if (v === null || typeof v !== 'object' || ArrayBuffer.isView(v) || v instanceof ArrayBuffer) return v;
    const out = {};
    for (const [k, x] of Object.entries(v)) out[k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)] = snake(x);
    return out;
  }

  const once = async (start) => (await settle(start)).value;

  return {
    rebuild(options) {
      const gen = generation;
      return readable(value(enter(gen, () => glue.rebuild(options))), gen);
    },
    verify: async (options) => camel(await once(() => glue.verify(options))),
    rebuildRange: (options) => once(() => glue.rebuildRange(options)),
    async rebuildRangeStream(options) {
      const { value: task, gen } = await settle(() => glue.rebuildRangeStream(options));
      return readable(task, gen);
    },
    describe: (delta) => once(() => glue.describe(delta)),
    inspect: async (delta) => camel(await once(() => glue.inspect(delta))),
    encode: (base, target, options) => value(enter(generation, () => glue.encode(base, target, options))),
    encodeLevels: () => Array.from(enter(generation, () => glue.encodeLevels())),
    hashFile: (source) => once(() => glue.hashFile(source)),
    hashTensors: (source) => once(() => glue.hashTensors(source)),
    fingerprint: async (source) => camel(await once(() => glue.fingerprint(source))),
    fingerprintRemote: async (url, options) => camel(await once(() => glue.fingerprintRemote(url instanceof URL ? url.href : url, options))),
    matchFamily: async (fingerprint, bases) => camel(await once(() => glue.matchFamily(snake(fingerprint), bases))),
    formatVersion: () => enter(generation, () => glue.formatVersion()),
    wasmMemoryBytes: () => enter(generation, () => glue.wasmMemoryBytes()),
    /** Test hook, not part of the API: "now" panics, "abort" traps, "rebuild"/"encode" arm a panic there. */
    __testPanic: (at) => value(enter(generation, () => glue.__testPanic(at))),
  };
}
