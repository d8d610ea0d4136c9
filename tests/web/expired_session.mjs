// Flow: a session that has ended goes back to sign-in. Two runs, with the
// Rust test between them: DESKPULSE_PHASE=sign-in signs in and keeps the
// browser's cookies in DESKPULSE_STATE_FILE; the test then ages the
// session in the collector's store past the console's idle timeout (as an
// hour away from the keyboard would); DESKPULSE_PHASE=expired comes back
// with those cookies, and every page, a ticket or the queue, goes to
// sign-in, where signing in again works.
//
// Env: DESKPULSE_URL, DESKPULSE_CA_FILE, DESKPULSE_CHROMIUM,
// DESKPULSE_TECH_NAME, DESKPULSE_TECH_PASSWORD, DESKPULSE_TICKET,
// DESKPULSE_PHASE, DESKPULSE_STATE_FILE.
import {
  check, env, expectVisible, flow, newPage, signInWithPassword, step, url,
} from "./lib.mjs";

const phase = env("DESKPULSE_PHASE");
const stateFile = env("DESKPULSE_STATE_FILE");

await flow(`expired_session (${phase})`, async (browser) => {
  const ticket = env("DESKPULSE_TICKET");
  if (phase === "sign-in") {
    const { context, page } = await newPage(browser);
    await signInWithPassword(page, env("DESKPULSE_TECH_NAME"), env("DESKPULSE_TECH_PASSWORD"));
    await page.goto(`${url()}/tickets/${ticket}`);
    await expectVisible(page.getByRole("heading", { name: "What fired it" }), "the ticket");
    await context.storageState({ path: stateFile });
    step("signed in; the cookies are kept");
    return;
  }
  check(phase === "expired", `unknown phase ${phase}`);
  const { page } = await newPage(browser, { storageState: stateFile });
  for (const path of [`/tickets/${ticket}`, "/"]) {
    await page.goto(`${url()}${path}`);
    check(page.url() === `${url()}/sign-in`, `${path} with an ended session went to ${page.url()}`);
    await expectVisible(page.getByRole("heading", { name: "Sign in to Deskpulse" }), "the sign-in page");
  }
  step("with the session ended, a ticket and the queue go to sign-in");
  await signInWithPassword(page, env("DESKPULSE_TECH_NAME"), env("DESKPULSE_TECH_PASSWORD"));
  step("signing in again works");
});
