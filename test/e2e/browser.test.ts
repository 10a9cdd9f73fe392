// The README's first command, as a person would use it: `idp serve --demo`, then a real browser
// (Debian's Chromium, driven by playwright-core) opens /demo, signs in on our screens, consents,
// and lands on the demo client's page. Proves the screens work under the strict CSP, with Lax
// cookies and the redirect chain of a real browser.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '../helpers/databases.ts';
import { killAll, startServer } from '../helpers/processes.ts';
import { freePort } from '../helpers/server.ts';

const chromiumPath = '/usr/bin/chromium';

describe('sign-in in a real browser', () => {
  const dir = tempDir('idp-browser-');
  let browser: Browser;
  let issuer: string;

  beforeAll(async () => {
    expect(existsSync(chromiumPath), `${chromiumPath} exists (Debian package chromium)`).toBe(true);
    const port = await freePort();
    issuer = `http://localhost:${port}`;
    const server = startServer(['serve', '--demo'], {
      env: { DATABASE_URL: 'file:./data/idp.db', MASTER_KEY_FILE: join(dir.path, 'master.key'), LOG_LEVEL: 'warn', PORT: String(port), ISSUER: issuer },
      cwd: dir.path,
      url: `http://127.0.0.1:${port}`,
    });
    await server.waitReady();
    await server.waitForOutput(/demo credentials are kept in/);
    browser = await chromium.launch({ executablePath: chromiumPath, args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'] });
  });

  afterAll(async () => {
    await browser?.close();
    await killAll();
    dir.remove();
  });

  it('signs the demo user in to the demo client, with no CSP violation on the way', async () => {
    const demo = JSON.parse(readFileSync(join(dir.path, 'data', 'demo-credentials.json'), 'utf8')) as { email: string; password: string };
    const page = await browser.newPage();
    const violations: string[] = [];
    page.on('console', (message) => {
      if (/Content Security Policy|Refused to/i.test(message.text())) violations.push(message.text());
    });
    await page.goto(`${issuer}/demo`);
    await expect.poll(() => page.locator('h1').textContent()).toBe('Sign in');
    expect(await page.locator('.client strong').textContent()).toBe('Demo application');
    // The stylesheet loaded under the CSP: the card has its styled background.
    // (Runs in the page; typed loosely because the project compiles without the DOM library.)
    const borderRadius = await page.locator('main.card').evaluate((el) => (globalThis as unknown as { getComputedStyle(e: unknown): { borderRadius: string } }).getComputedStyle(el).borderRadius);
    expect(borderRadius).toBe('12px');

    await page.fill('#email', demo.email);
    await page.click('button[type=submit]');
    await page.fill('#password', 'not the password 1');
    await page.click('button[type=submit]');
    expect(await page.locator('.errors').textContent()).toContain('The email address or password is not correct.');
    await page.fill('#password', demo.password);
    await page.click('button[type=submit]');

    await expect.poll(() => page.locator('h1').textContent()).toBe('Allow access');
    expect(await page.locator('.scopes').textContent()).toContain('See your email address');
    await page.click('form[action$="/consent"] button');

    await expect.poll(() => page.locator('h1').textContent()).toBe('Signed in to the demo client');
    expect(new URL(page.url()).pathname).toBe('/demo/callback');
    expect(await page.content()).toContain(demo.email);
    expect(await page.content()).toContain('"amr": [');
    expect(violations).toEqual([]);
  });
});
