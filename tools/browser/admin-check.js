// admin-check.js: the admin page in a real browser (headless Chromium
// driven by playwright-core), for spec/25-admin_browser_spec.lua, which
// starts the pools and the admin server, runs this script as a child
// process and checks what it reports.
//
//   node tools/browser/admin-check.js CONFIG_JSON
//
// CONFIG: {url, token, evil, pools: {work, xss, mail}, xssName, xssError,
// mailDead: [ids]}.  It prints "release" when it wants the spec to end
// one of the work pool's blocked ops, progress lines starting with "# ",
// and one last line "RESULT {...}" with what it saw.  Every wait is
// bounded; a failed step is reported in the result ("error"), not
// thrown, so that the spec shows what happened before it.
'use strict';
const http = require('http');
const { chromium } = require('playwright-core');

const cfg = JSON.parse(process.argv[2]);
const WAIT = 20000;
const out = {
  consoleErrors: [], pageErrors: [], dialogs: [], csp: [], steps: [],
};

function say(line) { process.stdout.write(line + '\n'); }
function step(name) { out.steps.push(name); say('# ' + name); }

// post sends a POST with Node's own client (no browser rules apply).
function post(url, headers) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'POST', headers }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    });
    req.on('error', reject);
    req.end();
  });
}

// injected counts what a successful injection would have left behind.
async function injected(page) {
  return page.evaluate(() => {
    const withOn = Array.from(document.querySelectorAll('*')).filter(
      (e) => Array.from(e.attributes).some((a) => /^on/i.test(a.name)));
    return {
      scripts: document.querySelectorAll('script').length,
      imgs: document.querySelectorAll('img').length,
      svgOnload: document.querySelectorAll('svg[onload]').length,
      injectedBold: Array.from(document.querySelectorAll('b'))
        .filter((b) => b.textContent === 't').length,
      onAttributes: withOn.length,
      xssRan: window.__xss === true,
    };
  });
}

async function run(browser) {
  const context = await browser.newContext({
    viewport: { width: 1400, height: 1000 },
  });
  const page = await context.newPage();
  page.on('console', (m) => {
    if (m.type() === 'error') out.consoleErrors.push(m.text());
  });
  page.on('pageerror', (e) => out.pageErrors.push(String(e)));
  page.on('dialog', async (d) => {
    out.dialogs.push(d.type() + ': ' + d.message());
    await d.dismiss();
  });
  // The page's own Content-Security-Policy reports go here too.
  await page.addInitScript(() => {
    window.__csp = [];
    document.addEventListener('securitypolicyviolation', (e) => {
      window.__csp.push(e.violatedDirective + ' ' + e.blockedURI);
    });
  });

  step('load');
  await page.goto(cfg.url);
  await page.waitForFunction(
    (n) => document.querySelectorAll('tr.pool-row').length === n, 3,
    { timeout: WAIT });
  out.poolNames = await page.$$eval('.pool-name',
                                    (els) => els.map((e) => e.textContent));
  out.title = await page.title();
  out.injectedAtLoad = await injected(page);

  step('xss pool');
  const xssRow = `tr.pool-row[data-id="${cfg.pools.xss}"]`;
  out.xssRowClass = await page.getAttribute(xssRow, 'class');
  out.xssLastFailure = await page.textContent(`${xssRow} td.clip .msg`);
  await page.click(`${xssRow} .pool-name`);
  await page.waitForFunction(
    (want) => Array.from(document.querySelectorAll('#failures summary'))
      .some((s) => s.textContent === want), cfg.xssError, { timeout: WAIT });
  out.xssDetailName = await page.textContent('#d-name');
  out.xssFailures = await page.$$eval('#failures tbody tr', (rows) =>
    rows.map((r) => Array.from(r.children).map((c) => c.textContent)));
  out.xssDead = await page.$$eval('#dead tbody tr.dead-row', (rows) =>
    rows.map((r) => Array.from(r.children).slice(0, 6)
      .map((c) => c.textContent)));
  out.injectedAfterXss = await injected(page);

  step('in flight');
  await page.click(`tr.pool-row[data-id="${cfg.pools.work}"] .pool-name`);
  await page.waitForFunction(() => document.querySelectorAll(
    '#inflight tbody tr[data-id]').length === 3, null, { timeout: WAIT });
  const ages = () => page.$$eval('#inflight tbody tr[data-id]', (rows) =>
    rows.map((r) => ({ id: Number(r.dataset.id),
                       age: Number(r.querySelector('td.age').dataset.age),
                       text: r.querySelector('td.age').textContent })));
  out.agesBefore = await ages();
  await page.waitForFunction((before) => {
    const now = {};
    document.querySelectorAll('#inflight tbody tr[data-id]').forEach((r) => {
      now[r.dataset.id] = Number(r.querySelector('td.age').dataset.age);
    });
    return before.every((b) => now[b.id] > b.age);
  }, out.agesBefore, { timeout: WAIT });
  out.agesAfter = await ages();
  out.inflightCountBefore = await page.textContent('#if-count');
  say('release');
  await page.waitForFunction(() => document.querySelectorAll(
    '#inflight tbody tr[data-id]').length === 2, null, { timeout: WAIT });
  await page.waitForFunction(() =>
    document.querySelector('#if-count').textContent === '2', null,
    { timeout: WAIT });
  out.inflightCountAfter = await page.textContent('#if-count');
  out.agesReleased = await ages();

  step('retry');
  const mailRow = `tr.pool-row[data-id="${cfg.pools.mail}"]`;
  await page.click(`${mailRow} .pool-name`);
  await page.waitForFunction((n) => document.querySelectorAll(
    '#dead tbody tr.dead-row').length === n, cfg.mailDead.length,
    { timeout: WAIT });
  out.retryButtonsBeforeUnlock = await page.$$eval('button.retry',
    (bs) => bs.map((b) => b.disabled));
  out.queuedBefore = await page.textContent(`${mailRow} td:nth-child(4) .num`);
  out.deadCountBefore = await page.textContent('#d-count');
  await page.fill('#token', cfg.token);
  await page.click('#unlock');
  await page.waitForFunction(() => document.querySelector('#authstate')
    .textContent === 'actions unlocked', null, { timeout: WAIT });
  out.tokenInHtml = (await page.content()).includes(cfg.token);
  out.tokenInStorage = await page.evaluate(() =>
    sessionStorage.getItem('tether.admin.token'));
  const target = cfg.mailDead[0];
  await page.waitForSelector(
    `button.retry[data-id="${target}"]:not([disabled])`, { timeout: WAIT });
  await page.click(`button.retry[data-id="${target}"]`);
  await page.waitForFunction((id) => !document.querySelector(
    `#dead tbody tr.dead-row[data-id="${id}"]`), target, { timeout: WAIT });
  await page.waitForFunction((want) => document.querySelector(
    '#d-count').textContent === want, String(cfg.mailDead.length - 1),
    { timeout: WAIT });
  await page.waitForFunction((sel) => document.querySelector(sel)
    .textContent === '1', `${mailRow} td:nth-child(4) .num`,
    { timeout: WAIT });
  out.queuedAfter = await page.textContent(`${mailRow} td:nth-child(4) .num`);
  out.deadCountAfter = await page.textContent('#d-count');
  out.toast = await page.textContent('#toast');
  out.deadLeft = await page.$$eval('#dead tbody tr.dead-row',
    (rows) => rows.map((r) => Number(r.dataset.id)));

  step('refusals');
  const other = cfg.mailDead[1];
  const action = `${cfg.url}api/pools/${cfg.pools.mail}/dead/${other}/retry`;
  out.noToken = await post(action, {});
  out.foreignOrigin = await post(action, {
    Authorization: 'Bearer ' + cfg.token, Origin: 'http://evil.example',
  });
  // A page of another origin, in the same browser: its form POST carries
  // the browser's Origin; its fetch with the token needs a preflight
  // that the admin never grants.
  const evil = await context.newPage();
  await evil.goto(cfg.evil);
  const [nav] = await Promise.all([
    evil.waitForNavigation({ timeout: WAIT }),
    evil.click('#go'),
  ]);
  out.evilForm = nav ? nav.status() : null;
  await evil.goto(cfg.evil);
  out.evilFetch = await evil.evaluate(async ([u, t]) => {
    try {
      const r = await fetch(u, { method: 'POST',
                                 headers: { Authorization: 'Bearer ' + t } });
      return 'status ' + r.status;
    } catch (e) {
      return 'blocked';
    }
  }, [action, cfg.token]);
  await evil.close();

  step('drain');
  await page.click(`tr.pool-row[data-id="${cfg.pools.work}"] .pool-name`);
  await page.waitForFunction((id) => document.querySelector('#d-facts')
    .textContent.startsWith('#' + id + ' '), cfg.pools.work,
    { timeout: WAIT });
  await page.click('#drain');
  await page.waitForSelector('#drain-confirm', { state: 'visible',
                                                timeout: WAIT });
  out.drainQuestion = await page.textContent('#drain-q');
  await page.click('#drain-yes');
  await page.waitForFunction(() => document.querySelector('#d-status')
    .textContent === 'draining', null, { timeout: WAIT });
  out.drainStatus = await page.textContent('#d-status');

  step('done');
  out.injectedAtEnd = await injected(page);
  out.csp = await page.evaluate(() => window.__csp);
}

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--headless=new'],
  });
  try {
    await run(browser);
  } catch (e) {
    out.error = String(e && e.stack ? e.stack : e);
  } finally {
    await browser.close();
  }
  say('RESULT ' + JSON.stringify(out));
})().catch((e) => {
  say('RESULT ' + JSON.stringify({ error: String(e) }));
  process.exit(1);
});
