// The page in headless chromium (run by deploy/browser-test.sh, which starts the system and sets API,
// TOKEN, MODULES, CLI_CSV, SHOTS and OUT). Each check prints ok or FAIL; the last line counts them.
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

const { API, TOKEN, MODULES, CLI_CSV, SHOTS, OUT } = process.env;
const { chromium } = createRequire(join(MODULES, 'noop.js'))('playwright-core');

let passed = 0;
let failed = 0;
function check(ok, what, detail = '') {
  if (ok) passed += 1;
  else failed += 1;
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}${!ok && detail ? `: ${detail}` : ''}`);
  return ok;
}

const WINDOWS = { last_hour: [3600, 60], last_day: [86400, 3600], last_week: [604800, 3600] };
const STATUS = { uptime: 'up', downtime: 'down', unknown: 'unknown' };
// An RFC 3339 instant with up to six fractional digits, in microseconds.
function micros(iso) {
  const match = /^(.*?)(?:\.(\d+))?Z$/.exec(iso);
  return Date.parse(`${match[1]}Z`) * 1000 + Number((match[2] || '').padEnd(6, '0').slice(0, 6));
}

// The drawn segments against the figures the page shows: per figure, the business time of its status
// in its window, from the SVG's data attributes.
async function segmentsMatchFigures(page, label) {
  const drawn = await page.$$eval('#timeline-svg rect.segment', (rects) =>
    rects.map((r) => ({ status: r.dataset.status, from: r.dataset.from, to: r.dataset.to })));
  const shown = await page.$$eval('#figures td[data-figure]', (cells) =>
    cells.map((c) => ({ name: c.dataset.figure, value: Number(c.textContent) })));
  const asOf = micros(await page.getAttribute('#store-result', 'data-as-of'));
  check(drawn.length > 0, `${label}: the timeline draws segments`, `${drawn.length}`);
  let worst = 0;
  for (const { name, value } of shown) {
    const [kind, ...rest] = name.split('_');
    const [seconds, unit] = WINDOWS[rest.join('_')];
    const start = asOf - seconds * 1e6;
    const total = drawn
      .filter((s) => s.status === STATUS[kind])
      .reduce((sum, s) => sum + Math.max(0, Math.min(micros(s.to), asOf) - Math.max(micros(s.from), start)), 0);
    // The figure is the exact sum rounded to two decimals; the drawn ends are written to the microsecond.
    worst = Math.max(worst, Math.abs(total / 1e6 / unit - value));
  }
  check(worst <= 0.005 + 1e-6, `${label}: the segments add up to the ${shown.length} figures shown`, `off by ${worst}`);
  return shown.length;
}

const errors = [];
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, acceptDownloads: true });
  const page = await context.newPage();
  page.on('console', (message) => {
    if (message.type() === 'error') errors.push({ text: message.text(), url: message.location().url || '' });
  });
  page.on('pageerror', (error) => errors.push({ text: `uncaught: ${error.message}`, url: '' }));
  page.setDefaultTimeout(30e3);

  const answer = await page.goto(`${API}/`);
  check(answer.status() === 200, 'GET / answers 200');
  check(/script-src 'self'/.test(answer.headers()['content-security-policy'] || ''), 'the page has its policy');

  // No token yet: the API answers 401 and the page asks for one.
  await page.waitForSelector('#token-section:not([hidden])');
  check(await page.evaluate(() => document.activeElement.id === 'token'), 'the token field has the focus');
  await page.keyboard.type(TOKEN);
  await page.keyboard.press('Enter');
  await page.waitForSelector('#token-section', { state: 'hidden' });
  check(await page.evaluate(() => sessionStorage.getItem('restaurant-monitor-token') !== null), 'the token is in sessionStorage');
  check(await page.evaluate(() => localStorage.length === 0), 'nothing in localStorage');

  // Trigger from the keyboard, with no horizon: the report the CLI computes.
  await page.focus('#horizon');
  await page.keyboard.press('Enter');
  await page.waitForSelector('#progress-box:not([hidden])');
  await page.waitForSelector('#progress-box[data-status="Complete"], #progress-box[data-status="Failed"]', { timeout: 120e3 });
  const status = await page.getAttribute('#progress-box', 'data-status');
  const bar = await page.$eval('#progress', (p) => p.value);
  const text = await page.textContent('#progress-text');
  check(status === 'Complete' && bar === 1, 'the progress bar reaches Complete', `${status}, ${bar}, ${text}`);
  const id = (await page.textContent('#progress-label')).replace('Report ', '');

  const row = `#reports tr[data-report-id="${id}"]`;
  await page.waitForSelector(`${row} button.download`);
  check((await page.textContent(`${row} td.status`)) === 'Complete', 'the report is listed as Complete');
  const [download] = await Promise.all([page.waitForEvent('download'), page.click(`${row} button.download`)]);
  const csv = readFileSync(await download.path(), 'utf8');
  const cli = readFileSync(CLI_CSV, 'utf8');
  check(download.suggestedFilename() === `report-${id}.csv`, 'the download is named after the report', download.suggestedFilename());
  check(csv === cli, 'the downloaded CSV equals the offline CLI\'s report', `${csv.length} vs ${cli.length} bytes`);

  // A store with downtime and uptime last week, so every colour has something to draw.
  const header = cli.split('\n')[0].split(',');
  const rows = cli.trim().split('\n').slice(1).map((line) => line.split(','));
  const col = (name) => header.indexOf(name);
  const store = rows.find((r) => Number(r[col('downtime_last_week')]) > 3 && Number(r[col('uptime_last_week')]) > 20)[0];
  await page.fill('#store-id', store);
  await page.click('#store-form button[type="submit"]');
  await page.waitForSelector('#store-result:not([hidden])');
  check((await segmentsMatchFigures(page, 'no horizon')) === 6, 'six figures without a horizon');

  await page.fill('#store-horizon', '40');
  await page.press('#store-horizon', 'Enter');
  await page.waitForFunction(() => document.querySelectorAll('#figures td[data-figure]').length === 9);
  check((await segmentsMatchFigures(page, 'horizon 40 min')) === 9, 'nine figures with a horizon');
  const timeline = await (await fetch(`${API}/stores/${store}/timeline?unknown_after_minutes=40`, {
    headers: { Authorization: `Bearer ${TOKEN}` },
  })).json();
  const weekStart = micros(timeline.as_of) - 604800e6;
  const polls = timeline.polls.filter((p) => micros(p.at) >= weekStart).length;
  check(await page.$$eval('#timeline-svg line.tick', (t) => t.length) === polls, 'a tick per poll of the week', `${polls}`);
  check(await page.$$eval('#timeline-svg rect.open', (r) => r.length) > 0, 'business hours are shaded');
  const days = await page.$$eval('#timeline-svg text.day', (t) => t.length);
  check(days >= 7 && days <= 8, 'one row per local day', `${days}`);
  await page.screenshot({ path: join(SHOTS, 'page-1280.png'), fullPage: true });

  await page.setViewportSize({ width: 360, height: 800 });
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  const outside = await page.evaluate(() => [...document.querySelectorAll('body *')]
    .filter((e) => e.getBoundingClientRect().right > 360 && !e.closest('.scroll, #timeline'))
    .map((e) => `${e.tagName.toLowerCase()}${e.id ? `#${e.id}` : ''}.${e.className.baseVal ?? e.className}`).slice(0, 8));
  check(width <= 360, 'nothing sticks out at 360 px (wide tables and the timeline scroll in their box)',
    `${width} px wide: ${outside.join(', ')}`);
  await page.screenshot({ path: join(SHOTS, 'page-360.png'), fullPage: true });

  // The API's error sentence, shown as it is.
  await page.fill('#store-id', 'no-such-store');
  await page.fill('#store-horizon', '');
  await page.click('#store-form button[type="submit"]');
  await page.waitForSelector('#store-error:not([hidden])');
  const error = await page.textContent('#store-error');
  check(error.includes('no poll of store "no-such-store"'), 'an unknown store shows the API\'s error', error);

  // Two failed requests are by design, and chromium logs each as a failed resource: the first call
  // without a token (that is how the page learns it needs one) and the unknown store. Nothing else.
  const expected = (e) => /Failed to load resource: the server responded with a status of (401|404)/.test(e.text) &&
    (e.url.endsWith('/reports?limit=20') || e.url.includes('/stores/no-such-store/'));
  const unexpected = errors.filter((e) => !expected(e)).map((e) => `${e.text} (${e.url})`);
  check(unexpected.length === 0, 'no other console or page errors', unexpected.join('\n'));
  await context.close();
} catch (error) {
  // Where it stopped, and what the page said: a screenshot and the errors it logged.
  check(false, 'the run went through', error.message.split('\n')[0]);
  const [page] = browser.contexts().flatMap((c) => c.pages());
  if (page) {
    await page.screenshot({ path: join(OUT, 'failure.png'), fullPage: true }).catch(() => {});
    console.log(`(screenshot of the failure: ${OUT}/failure.png)`);
  }
  for (const e of errors) console.log(`  logged: ${e.text} (${e.url})`);
} finally {
  await browser.close();
}
console.log(`(screenshots: ${SHOTS}/page-1280.png, ${SHOTS}/page-360.png; work files in ${OUT})`);
console.log(`browser: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
