// Drives Debian's chromium (headless, through playwright-core) through the Trellis web UI, as a
// user would, for crates/trellis/tests/e2e_ui.rs. Everything comes from the environment:
//   UI_URL         https://127.0.0.1:<port> (the management server; its certificate is the
//                  server's own test CA, so certificate errors are ignored)
//   LOGIN          the user to log in as at the test OpenID provider (any password)
//   ISSUER         the provider's URL: an unauthenticated visit must end there
//   FAILED         Kind/namespace/name of a resource whose status is FAILED
//   WHY            text its status message must contain
//   GRAPH_NODES    comma-separated nodes the service graph must draw
//   SHOTS          directory for the screenshots
// Exits 0 when every step held; otherwise prints the step that failed and exits 1.

import { chromium } from 'playwright-core';

const env = name => {
  const value = process.env[name];
  if (!value) { console.error(`browse.mjs: ${name} is not set`); process.exit(2); }
  return value;
};
const ui = env('UI_URL');
const shots = env('SHOTS');
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';

function check(condition, what) {
  if (!condition) throw new Error(what);
  console.log('ok:', what);
}

const browser = await chromium.launch({ executablePath, args: ['--no-sandbox'] });
try {
  // 1. Without login: the page sends the browser to the provider, and the API refuses.
  const anonymous = await browser.newContext({ ignoreHTTPSErrors: true });
  const page0 = await anonymous.newPage();
  await page0.goto(`${ui}/ui/`);
  await page0.waitForURL(url => url.href.startsWith(env('ISSUER')), { timeout: 15000 });
  check(page0.url().startsWith(env('ISSUER')), `an unauthenticated visit lands at the provider (${page0.url()})`);
  const refused = await page0.request.get(`${ui}/api/v1/resources`);
  check(refused.status() === 401, `the API without a session answers ${refused.status()}`);
  await anonymous.close();

  // 2. Login through the provider's own forms, back to the overview.
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1440, height: 900 } });
  const page = await context.newPage();
  await page.goto(`${ui}/ui/`);
  await page.waitForSelector('input[name="login"]', { timeout: 15000 });
  await page.fill('input[name="login"]', env('LOGIN'));
  await page.fill('input[name="password"]', 'any');
  await page.click('button[type="submit"]');
  await page.waitForSelector('button[type="submit"]', { timeout: 15000 });
  await page.click('button[type="submit"]'); // consent
  await page.waitForURL(url => url.href.startsWith(`${ui}/ui/`), { timeout: 15000 });
  await page.waitForSelector('h1:has-text("Overview")', { timeout: 15000 });
  await page.waitForSelector('#who:has-text("oidc:")', { timeout: 10000 });
  check((await page.textContent('#who')).includes(`oidc:${env('LOGIN')}`), 'the header names the logged-in user');
  check((await page.textContent('main')).includes('clusters connected'), 'the overview shows the clusters');
  await page.screenshot({ path: `${shots}/overview.png`, fullPage: true });

  // 3. The FAILED resource, and why.
  const [kind, namespace, name] = env('FAILED').split('/');
  await page.click('nav a[data-page="resources"]');
  await page.selectOption('#f-state', 'FAILED');
  await page.waitForSelector(`tr.link:has-text("${name}")`, { timeout: 10000 });
  await page.click(`tr.link:has-text("${name}")`);
  await page.waitForSelector('#status-message', { timeout: 10000 });
  const why = await page.textContent('#status-message');
  check(why.includes(env('WHY')), `${kind}/${namespace}/${name} says why it FAILED: ${why}`);
  check((await page.textContent('h1')).includes('FAILED'), 'its status badge reads FAILED');
  await page.screenshot({ path: `${shots}/failed-resource.png`, fullPage: true });

  // 4. The insights page lists the FAILED resource with its code and fix.
  await page.click('nav a[data-page="insights"]');
  const insight = await page.waitForSelector(`tr:has-text("TRL0021"):has-text("${name}")`, { timeout: 15000 });
  const row = await insight.textContent();
  check(row.length > `TRL0021${name}`.length + 20, `insights name the FAILED resource with a summary and fix: ${row}`);
  await page.screenshot({ path: `${shots}/insights.png`, fullPage: true });

  // 5. The service graph with live rates, updating without a reload.
  await page.click('nav a[data-page="graph"]');
  for (const node of env('GRAPH_NODES').split(',')) {
    await page.waitForSelector(`#graph text:text-is("${node}")`, { timeout: 60000 });
  }
  const label = await page.waitForSelector('#graph .edge-label', { timeout: 60000 });
  const rate = parseFloat((await label.textContent()).split(' ')[0]);
  check(rate > 0, `an edge shows a live request rate (${await label.textContent()})`);
  const before = await page.textContent('#updated');
  await page.waitForFunction(b => document.querySelector('#updated').textContent !== b, before, { timeout: 15000 });
  check(true, 'the page refreshed itself without a reload');
  await page.screenshot({ path: `${shots}/graph.png`, fullPage: true });

  // 6. Logout ends the session: the API refuses the old cookie.
  await page.goto(`${ui}/ui/logout`);
  const after = await context.request.get(`${ui}/api/v1/resources`);
  check(after.status() === 401, `after logout the API answers ${after.status()}`);
  await context.close();
} catch (error) {
  console.error('FAILED:', error.message);
  process.exitCode = 1;
} finally {
  await browser.close();
}
