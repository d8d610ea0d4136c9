// Flow: a viewer (signed in with a viewer's API token) reads a ticket and
// sees no action; a POST forged from the page itself, with the viewer's
// session cookie and the page's valid CSRF token, is refused with 403 by
// the server's role check, and the ticket is unchanged.
//
// Env: DESKPULSE_URL, DESKPULSE_CA_FILE, DESKPULSE_CHROMIUM,
// DESKPULSE_VIEWER_TOKEN, DESKPULSE_TICKET (an open ticket).
import {
  check, env, expectQuiet, expectVisible, flow, newPage, signInWithToken, step, url, watch,
} from "./lib.mjs";

await flow("viewer", async (browser) => {
  const ticket = env("DESKPULSE_TICKET");
  const { page } = await newPage(browser);
  const seen = watch(page);
  await signInWithToken(page, env("DESKPULSE_VIEWER_TOKEN"));
  const nav = page.getByRole("navigation", { name: "Main" });
  check((await nav.getByRole("link", { name: "Audit log" }).count()) === 0, "a viewer sees the audit log link");

  await page.goto(`${url()}/tickets/${ticket}`);
  await expectVisible(page.getByRole("heading", { name: "What fired it" }), "the ticket");
  check((await page.locator('section[aria-label="Actions"]').count()) === 0, "a viewer sees the actions");
  const actionForms = await page.locator('form[action^="/tickets/"]').count();
  check(actionForms === 0, `a viewer sees ${actionForms} ticket forms`);
  for (const name of ["Assign", "Add note", "Resolve", "Escalate", "Reopen"]) {
    check((await page.getByRole("button", { name, exact: true }).count()) === 0, `a viewer sees "${name}"`);
  }
  step("the viewer sees the ticket and no action");

  const forged = await page.evaluate(async (id) => {
    const csrf = document.querySelector('meta[name="csrf-token"]').getAttribute("content");
    const response = await fetch(`/tickets/${id}/resolve`, {
      method: "POST",
      body: new URLSearchParams({ value: "forged by a viewer", csrf }),
    });
    return { status: response.status, text: await response.text(), csrf };
  }, ticket);
  check(forged.csrf.length > 10, "the page carries a CSRF token");
  check(forged.status === 403, `the forged resolve answered ${forged.status}`);
  check(forged.text.includes("needs the technician role"), `the refusal says why: ${forged.text}`);
  step("a forged resolve with a valid CSRF token is refused: 403, needs the technician role");

  await page.reload();
  const status = await page.locator("dl.facts dt:text-is('Status') + dd").textContent();
  check(status.trim() !== "resolved", "the forged resolve changed the ticket");
  check(!(await page.content()).includes("forged by a viewer"), "the forged text is on the page");
  expectQuiet(seen, "viewer");
});
