// Drives the demo page in Debian's Chromium through playwright-core: what the end-to-end test
// and the time-to-model measurement (www/measure.mjs) share.
import fs from 'node:fs';
import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

export async function launch() {
  if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: scripts/setup-system.sh installs it`);
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

/** Opens the demo and waits until it is ready (on a first visit: the default base cached). */
export async function visit(context, url) {
  const page = await context.newPage();
  page.on('pageerror', (e) => console.error('page error:', e));
  await page.goto(url);
  await page.waitForFunction(() => document.body.dataset.ready, null, { timeout: 120_000, polling: 100 });
  const ready = await page.evaluate(() => document.body.dataset.ready);
  if (ready !== 'true') throw new Error(`the demo did not start: ${await page.textContent('body')}`);
  return page;
}

/** Picks the fine-tune at `path`, waits for the rebuild and returns what the page shows. */
export async function getModel(page, path) {
  const idle = () => page.waitForFunction(() => !document.body.classList.contains('busy'), null, { timeout: 120_000, polling: 100 });
  await idle();
  await page.click(`#finetunes li[data-path="${path}"] button.get`);
  await page.waitForFunction(() => ['done', 'failed'].includes(document.getElementById('result').dataset.state), null, { timeout: 120_000, polling: 100 });
  await idle(); // the file is kept in the cache and the lists are refreshed
  return page.evaluate(() => ({
    state: document.getElementById('result').dataset.state,
    verdict: document.getElementById('verdict').textContent,
    shaExpected: document.getElementById('sha-expected').textContent,
    shaGot: document.getElementById('sha-got').textContent,
    downloaded: document.getElementById('downloaded').value,
    rebuilt: document.getElementById('rebuilt').value,
    timeToModel: Number(document.getElementById('result').dataset.timeToModel),
    timings: JSON.parse(document.getElementById('result').dataset.timings || '{}'),
    steps: [...document.querySelectorAll('#steps li')].map((li) => li.textContent),
    cachedBases: [...document.querySelectorAll('#bases li[data-cached="true"]')].map((li) => li.dataset.path),
  }));
}

/** Clicks "time the full download" and returns { fullMs, ratio } as the page shows them. */
export async function timeFullDownload(page) {
  const runs = await page.evaluate(() => Number(document.getElementById('compare').dataset.runs || 0));
  await page.click('#compare');
  await page.waitForFunction((n) => Number(document.getElementById('compare').dataset.runs || 0) > n, runs, { timeout: 120_000, polling: 100 });
  return page.evaluate(() => {
    const d = document.getElementById('chart-time').dataset;
    return { fullMs: Number(d.fullMs), ratio: Number(d.ratio) };
  });
}
