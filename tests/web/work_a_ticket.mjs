// Flow: a technician signs in with a local account, sees the queue, opens
// the employee's ticket, adds a note, resolves it with a resolution, and
// finds that resolution in the knowledge-base search.
//
// Env: DESKPULSE_URL, DESKPULSE_CA_FILE, DESKPULSE_CHROMIUM,
// DESKPULSE_TECH_NAME, DESKPULSE_TECH_PASSWORD, DESKPULSE_TICKET (the
// ticket to work), DESKPULSE_RESOLUTION (what resolves it; one of its
// words is searched for). Screenshots: queue.png and ticket.png.
import {
  check, env, expectQuiet, expectVisible, flow, newPage, screenshot, signInWithPassword, step,
  url, watch,
} from "./lib.mjs";

await flow("work_a_ticket", async (browser) => {
  const ticket = env("DESKPULSE_TICKET");
  const resolution = env("DESKPULSE_RESOLUTION");
  const { page } = await newPage(browser);
  const seen = watch(page);

  await signInWithPassword(page, env("DESKPULSE_TECH_NAME"), env("DESKPULSE_TECH_PASSWORD"));
  step("signed in with a local account; the queue is shown");
  const row = page.locator(`#queue a[href="/tickets/${ticket}"]`);
  await expectVisible(row, `ticket ${ticket} in the queue`);
  await expectVisible(page.locator("#queue .countdown:not(:empty)"), "an SLA countdown");
  await screenshot(page, "queue");

  await Promise.all([page.waitForURL(`${url()}/tickets/${ticket}`), row.click()]);
  await expectVisible(page.getByRole("heading", { name: "What fired it" }), "the ticket's evidence");
  step(`opened ticket ${ticket}`);

  const actions = page.locator('section[aria-label="Actions"]');
  const note = "looking at it from the console";
  await actions.locator(`form[action="/tickets/${ticket}/note"] textarea[name="value"]`).fill(note);
  await Promise.all([
    page.waitForURL(`${url()}/tickets/${ticket}`),
    actions.getByRole("button", { name: "Add note" }).click(),
  ]);
  await expectVisible(
    page.locator('section[aria-label="Worklog"] td', { hasText: note }),
    "the note in the worklog",
  );
  step("added a note");
  await screenshot(page, "ticket");

  await actions.locator(`form[action="/tickets/${ticket}/resolve"] textarea[name="value"]`).fill(resolution);
  await Promise.all([
    page.waitForURL(`${url()}/tickets/${ticket}`),
    actions.getByRole("button", { name: "Resolve" }).click(),
  ]);
  const facts = page.locator('section[aria-label="Ticket"] dl.facts');
  await expectVisible(facts.locator("dd", { hasText: resolution }), "the resolution on the ticket");
  const status = await facts.locator("dt:text-is('Status') + dd").textContent();
  check(status.trim() === "resolved", `status after resolving is ${JSON.stringify(status)}`);
  await expectVisible(actions.getByRole("button", { name: "Reopen" }), "the reopen action");
  step("resolved it");

  await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Knowledge base" }).click();
  const word = resolution.split(/\s+/).filter((w) => w.length > 5).pop();
  await page.getByRole("searchbox").fill(word);
  await Promise.all([page.waitForURL(/\/kb\?/), page.getByRole("button", { name: "Search" }).click()]);
  const hit = page.locator("table tr", { has: page.locator(`a[href="/tickets/${ticket}"]`) });
  await expectVisible(hit.locator("td", { hasText: resolution }), `the resolution found by "${word}"`);
  step(`found the resolution in the knowledge base by "${word}"`);
  expectQuiet(seen, "work_a_ticket");
});
