// The demo's network worker: downloads a delta for the rebuild worker. Its thread does nothing
// else, so it takes the bytes the moment they arrive; the rebuild worker, busy decoding, reads
// them only between chunks, and the page's main thread can be late by tens of milliseconds
// (rendering, collecting garbage), either of which would leave the link idle.
//
// The page sends { id, url, port } (one end of a MessageChannel; the rebuild worker holds the
// other, see deltaFrom in rebuild-worker.js) and hears { id, downloaded: true } when the whole
// body has arrived. Over the port: 'pull' gets everything received since the last pull in one
// buffer (transferred), or { end: true }, or { error }; 'cancel' stops the download.

self.onmessage = ({ data: { id, url, port } }) => {
  const abort = new AbortController();
  const got = [];
  let size = 0;
  let ended = false;
  let failed = null;
  let waiting = false;

  const reply = () => {
    if (size) {
      const all = new Uint8Array(size);
      let at = 0;
      for (const part of got) {
        all.set(part, at);
        at += part.length;
      }
      got.length = 0;
      size = 0;
      port.postMessage({ bytes: all }, [all.buffer]);
    } else if (failed) port.postMessage({ error: failed });
    else if (ended) port.postMessage({ end: true });
    else return; // nothing yet: answer when something comes
    waiting = false;
  };

  port.onmessage = ({ data }) => {
    if (data === 'pull') {
      waiting = true;
      reply();
    } else if (data === 'cancel') {
      abort.abort();
      port.close();
    }
  };

  (async () => {
    try {
      const r = await fetch(url, { cache: 'no-store', signal: abort.signal });
      if (!r.ok) throw Object.assign(new Error(`${url}: HTTP ${r.status}`), { code: 'IO' });
      const reader = r.body.getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        got.push(value);
        size += value.length;
        if (waiting) reply();
      }
      ended = true;
      self.postMessage({ id, downloaded: true });
    } catch (e) {
      if (abort.signal.aborted) return;
      failed = { code: e.code || 'IO', message: `downloading ${url}: ${e.message || e}` };
    }
    if (waiting) reply();
  })();
};
