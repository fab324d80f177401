// screenshot.js: `make screenshots` -- a screenshot of the admin page under
// load, for the README (docs/admin.png).  It runs examples/25-admin.lua
// (a mixed workload on four pools), lets the page gather some seconds of
// history, unlocks the actions with the run's token, picks the failing
// pool and saves the page.  Not part of the tests.
//
//   node tools/browser/screenshot.js OUT.png [SECONDS_OF_HISTORY]
'use strict';
const { spawn } = require('child_process');
const readline = require('readline');
const path = require('path');
const { chromium } = require('playwright-core');

const out = process.argv[2] || 'docs/admin.png';
const warm = Number(process.argv[3] || 20);
const root = path.resolve(__dirname, '..', '..');

function startExample() {
  const env = Object.assign({}, process.env);
  delete env.TETHER_ADMIN_TOKEN;   // the example makes one up and prints it
  const child = spawn('lua5.4', ['examples/25-admin.lua',
                                 String(warm + 60)],
                      { cwd: root, env, stdio: ['ignore', 'pipe', 'ignore'] });
  return new Promise((resolve, reject) => {
    const got = {};
    const timer = setTimeout(() => reject(new Error('no URL in 20 s')),
                             20000);
    readline.createInterface({ input: child.stdout }).on('line', (line) => {
      let m = /^admin page: (\S+)/.exec(line);
      if (m) got.url = m[1];
      m = /^token \(made up for this run\): (\S+)/.exec(line);
      if (m) got.token = m[1];
      if (got.url && got.token) {
        clearTimeout(timer);
        resolve(Object.assign(got, { child }));
      }
    });
    child.on('exit', (code) => reject(new Error('example ended: ' + code)));
  });
}

(async () => {
  const ex = await startExample();
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--headless=new'],
  });
  try {
    const page = await browser.newPage({
      viewport: { width: 1440, height: 900 }, deviceScaleFactor: 1,
      colorScheme: process.env.COLOR_SCHEME || 'light',
    });
    await page.goto(ex.url);
    await page.fill('#token', ex.token);
    await page.click('#unlock');
    await page.waitForSelector('tr.pool-row.failing', { timeout: 30000 });
    await page.waitForTimeout(warm * 1000);
    await page.click('tr.pool-row[data-id="2"] .pool-name');
    await page.waitForSelector('#dead tbody tr.dead-row', { timeout: 10000 });
    await page.waitForTimeout(1500);
    await page.screenshot({ path: out, fullPage: true });
    console.log('wrote ' + out);
  } finally {
    await browser.close();
    ex.child.kill('SIGTERM');
  }
})().catch((e) => {
  console.error(e.stack || String(e));
  process.exit(1);
});
