// Flow: a session that ends goes back to sign-in, both from a page left
// open and on the next page loaded. The flow signs in, opens the queue,
// keeps the browser's cookies, and writes DESKPULSE_READY_FILE; the Rust
// test then ages the session in the collector's store past the console's
// idle timeout (as an hour away from the keyboard would). The open queue's
// next htmx poll (every 15 s) is answered with HX-Redirect, and the page
// goes to sign-in by itself; a fresh page with the kept cookies, asking
// for a ticket or the queue, goes to sign-in too; signing in again works.
//
// Env: DESKPULSE_URL, DESKPULSE_CA_FILE, DESKPULSE_CHROMIUM,
// DESKPULSE_TECH_NAME, DESKPULSE_TECH_PASSWORD, DESKPULSE_TICKET,
// DESKPULSE_READY_FILE.
import { writeFileSync } from "node:fs";
import {
  check, env, expectVisible, flow, newPage, signInWithPassword, step, url,
} from "./lib.mjs";

await flow("expired_session", async (browser) => {
  const ticket = env("DESKPULSE_TICKET");
  const { context, page } = await newPage(browser);
  await signInWithPassword(page, env("DESKPULSE_TECH_NAME"), env("DESKPULSE_TECH_PASSWORD"));
  const cookies = await context.storageState();
  writeFileSync(env("DESKPULSE_READY_FILE"), "signed in\n");
  step("signed in, the queue open; the test now ends the session");

  // Two polls at most, and the test's own step, fit in 45 s.
  await page.waitForURL(`${url()}/sign-in`, { timeout: 45_000 }).catch(() => {
    throw new Error(`the open queue stayed at ${page.url()} after its session ended`);
  });
  await expectVisible(page.getByRole("heading", { name: "Sign in to Deskpulse" }), "the sign-in page");
  step("the open queue's next refresh went to sign-in");

  const { page: later } = await newPage(browser, { storageState: cookies });
  for (const path of [`/tickets/${ticket}`, "/"]) {
    await later.goto(`${url()}${path}`);
    check(later.url() === `${url()}/sign-in`, `${path} with an ended session went to ${later.url()}`);
  }
  step("with the kept cookies, a ticket and the queue go to sign-in");
  await signInWithPassword(later, env("DESKPULSE_TECH_NAME"), env("DESKPULSE_TECH_PASSWORD"));
  step("signing in again works");
});
