// What every browser flow of the web console shares (issue 22): Debian's
// Chromium launched through playwright-core, trusting the collector's
// fleet CA by its key, signing in, watching for script that should never
// run, screenshots, and skipping.
//
// The flows are started by tests/tests/web_browser.rs, which starts a real
// collector and real agents on loopback and passes what the flows need in
// environment variables (DESKPULSE_URL and the rest, see each flow).
"use strict";

import { createHash, X509Certificate } from "node:crypto";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

/// An environment variable the Rust test must have set.
export function env(name) {
  const value = process.env[name];
  if (value === undefined || value === "") {
    throw new Error(`${name} is not set: run this flow through tests/tests/web_browser.rs`);
  }
  return value;
}

export const url = () => env("DESKPULSE_URL");

/// The SHA-256 of the fleet CA's public key (its SubjectPublicKeyInfo),
/// base64, as Chromium's --ignore-certificate-errors-spki-list wants it.
function caKeyPin() {
  const pem = readFileSync(env("DESKPULSE_CA_FILE"), "utf8");
  const spki = new X509Certificate(pem).publicKey.export({ type: "spki", format: "der" });
  return createHash("sha256").update(spki).digest("base64");
}

/// Launches Debian's Chromium, headless. The collector's certificate chains
/// to the fleet CA, which no browser trusts. Chromium takes no CA file, and
/// importing the CA would mean writing an NSS database into the user's
/// home; so the browser is told to accept a chain only when it holds the
/// fleet CA's key (--ignore-certificate-errors-spki-list, pinned to that one
/// key), not to ignore every certificate error (ignoreHTTPSErrors): another
/// certificate, or a name the certificate does not carry, still fails.
export async function launch() {
  return chromium.launch({
    executablePath: env("DESKPULSE_CHROMIUM"),
    headless: true,
    args: [`--ignore-certificate-errors-spki-list=${caKeyPin()}`],
  });
}

/// A fresh context (its own cookies) and page. A laptop screen; the time
/// zone is not UTC, so local times differ from the UTC title.
export async function newPage(browser, options = {}) {
  const context = await browser.newContext({
    viewport: { width: 1366, height: 900 },
    timezoneId: "Europe/Berlin",
    locale: "en-GB",
    ...options,
  });
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  return { context, page };
}

/// Records what must never happen on a console page: a dialog opened (the
/// payloads call alert), a page error, or a Content-Security-Policy
/// violation (a console script the policy blocked would be a defect too).
export function watch(page) {
  const seen = { dialogs: [], errors: [], csp: [] };
  page.on("dialog", async (dialog) => {
    seen.dialogs.push(dialog.message());
    await dialog.dismiss();
  });
  page.on("pageerror", (error) => seen.errors.push(String(error)));
  page.on("console", (message) => {
    if (message.type() === "error" && /Content.Security.Policy/i.test(message.text())) {
      seen.csp.push(message.text());
    }
  });
  return seen;
}

/// Fails when `watch` saw anything.
export function expectQuiet(seen, where) {
  if (seen.dialogs.length) throw new Error(`${where}: a dialog opened: ${seen.dialogs.join(" | ")}`);
  if (seen.errors.length) throw new Error(`${where}: page errors: ${seen.errors.join(" | ")}`);
  if (seen.csp.length) throw new Error(`${where}: CSP violations: ${seen.csp.join(" | ")}`);
}

/// Signs in on the local-account form; lands on the queue.
export async function signInWithPassword(page, name, password) {
  await page.goto(`${url()}/sign-in`);
  const form = page.locator("form", { has: page.locator('input[name="method"][value="password"]') });
  await form.locator('input[name="name"]').fill(name);
  await form.locator('input[name="password"]').fill(password);
  await Promise.all([page.waitForURL(`${url()}/`), form.locator('button[type="submit"]').click()]);
  await expectVisible(page.locator("h1", { hasText: "Queue" }), "the queue after sign-in");
}

/// Signs in on the API-token form; lands on the queue.
export async function signInWithToken(page, token) {
  await page.goto(`${url()}/sign-in`);
  const form = page.locator("form", { has: page.locator('input[name="method"][value="token"]') });
  await form.locator('input[name="token"]').fill(token);
  await Promise.all([page.waitForURL(`${url()}/`), form.locator('button[type="submit"]').click()]);
  await expectVisible(page.locator("h1", { hasText: "Queue" }), "the queue after sign-in");
}

/// Waits until `locator` is visible, failing with `what`.
export async function expectVisible(locator, what) {
  try {
    await locator.first().waitFor({ state: "visible" });
  } catch (error) {
    throw new Error(`${what}: not visible (${error.message.split("\n")[0]})`);
  }
}

/// Fails unless `condition`.
export function check(condition, what) {
  if (!condition) throw new Error(what);
}

/// One step of a flow, printed so a failure's output tells how far it got.
export function step(text) {
  console.log(`  - ${text}`);
}

/// Saves a full-page screenshot as `name`.png when DESKPULSE_SCREENSHOTS
/// names a directory (README's screenshots come from here).
export async function screenshot(page, name) {
  const dir = process.env.DESKPULSE_SCREENSHOTS;
  if (!dir) return;
  mkdirSync(dir, { recursive: true });
  const path = join(dir, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  step(`screenshot ${path}`);
}

/// Runs a flow: `body(browser)` with a launched browser, closed after; a
/// failure prints its reason and exits 1. `body` may return "skipped: why".
export async function flow(name, body) {
  console.log(`flow ${name}`);
  const browser = await launch();
  let outcome;
  try {
    outcome = await body(browser);
  } catch (error) {
    console.error(`FAILED ${name}: ${error.stack || error}`);
    process.exitCode = 1;
  } finally {
    await browser.close();
  }
  if (process.exitCode !== 1) {
    console.log(typeof outcome === "string" ? `SKIPPED ${name}: ${outcome}` : `ok ${name}`);
  }
}
