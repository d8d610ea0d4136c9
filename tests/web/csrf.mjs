// Flow: a technician's form posted without its CSRF token is refused
// (403, before any handler runs), and nothing is written.
//
// Env: DESKPULSE_URL, DESKPULSE_CA_FILE, DESKPULSE_CHROMIUM,
// DESKPULSE_TECH_NAME, DESKPULSE_TECH_PASSWORD, DESKPULSE_TICKET.
import {
  check, env, expectVisible, flow, newPage, signInWithPassword, step, url,
} from "./lib.mjs";

await flow("csrf", async (browser) => {
  const ticket = env("DESKPULSE_TICKET");
  const { page } = await newPage(browser);
  await signInWithPassword(page, env("DESKPULSE_TECH_NAME"), env("DESKPULSE_TECH_PASSWORD"));
  await page.goto(`${url()}/tickets/${ticket}`);
  const form = page.locator(`form[action="/tickets/${ticket}/note"]`);
  await expectVisible(form, "the note form");
  const removed = await form.evaluate((f) => {
    const field = f.querySelector('input[name="csrf"]');
    field?.remove();
    return field !== null;
  });
  check(removed, "the note form carries a csrf field");
  const note = "a note posted without its token";
  await form.locator('textarea[name="value"]').fill(note);
  const [response] = await Promise.all([
    page.waitForResponse((r) => r.url() === `${url()}/tickets/${ticket}/note`),
    form.getByRole("button", { name: "Add note" }).click(),
  ]);
  check(response.status() === 403, `the form without its token answered ${response.status()}`);
  await expectVisible(page.getByText("CSRF token is missing or wrong"), "the refusal's reason");
  step("a note form without its CSRF token is refused: 403");

  await page.goto(`${url()}/tickets/${ticket}`);
  check(!(await page.content()).includes(note), "the refused note was written");
  step("the refused note is not in the worklog");
});
