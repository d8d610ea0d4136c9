// Flow: text from employees and PCs stays text. An employee's report-issue
// text and a package name planted in an agent's inventory (a dpkg status
// file under the agent's --system-root) both carry markup that would call
// alert() if a page wrote it unescaped. In the queue (as served, and as
// htmx swaps its rows in again) and on the tickets the text shows
// literally, no dialog opens, and no element the payload describes exists.
//
// Env: DESKPULSE_URL, DESKPULSE_CA_FILE, DESKPULSE_CHROMIUM,
// DESKPULSE_TECH_NAME, DESKPULSE_TECH_PASSWORD, DESKPULSE_TICKET (the
// employee's ticket), DESKPULSE_REPORT_PAYLOAD (its text),
// DESKPULSE_PLANTED_TICKET (a ticket of the host with the planted
// package), DESKPULSE_PACKAGE_PAYLOAD (that package's name).
import {
  check, env, expectQuiet, expectVisible, flow, newPage, signInWithPassword, step, url, watch,
} from "./lib.mjs";

/// Fails if the page holds any element a payload would have made, or any
/// script other than the console's own files.
async function expectNothingInjected(page, where) {
  const found = await page.evaluate(() => ({
    images: document.querySelectorAll('img[src="x"]').length,
    handlers: document.querySelectorAll("[onerror], [onload], [onclick]").length,
    scripts: [...document.scripts].map((s) => s.getAttribute("src") || `inline: ${s.textContent}`),
  }));
  check(found.images === 0, `${where}: ${found.images} injected <img src=x>`);
  check(found.handlers === 0, `${where}: ${found.handlers} elements with an event handler attribute`);
  const foreign = found.scripts.filter((s) => !["/assets/htmx.min.js", "/assets/console.js"].includes(s)
    && !s.startsWith("/assets/"));
  check(foreign.length === 0, `${where}: scripts that are not the console's: ${foreign.join(", ")}`);
}

await flow("hostile_text", async (browser) => {
  const ticket = env("DESKPULSE_TICKET");
  const report = env("DESKPULSE_REPORT_PAYLOAD");
  const planted = env("DESKPULSE_PLANTED_TICKET");
  const packageName = env("DESKPULSE_PACKAGE_PAYLOAD");
  const { page } = await newPage(browser);
  const seen = watch(page);
  await signInWithPassword(page, env("DESKPULSE_TECH_NAME"), env("DESKPULSE_TECH_PASSWORD"));

  const row = page.locator(`#queue a[href="/tickets/${ticket}"]`);
  await expectVisible(row, "the employee's ticket in the queue");
  const rowText = await row.textContent();
  check(rowText.includes(report), `the queue shows ${JSON.stringify(rowText)}, not the text as typed`);
  await expectNothingInjected(page, "the queue");
  step("the queue shows the report's markup as text");

  // The rows are swapped in again by htmx's poll (every 15 s): HTML put in
  // by script is another way in, so the swapped rows are checked too.
  const swapped = page.evaluate(() => new Promise((resolve) => {
    document.body.addEventListener("htmx:afterSwap", (event) => resolve(event.target.id), { once: true });
  }));
  const target = await Promise.race([
    swapped,
    new Promise((_, reject) => setTimeout(() => reject(new Error("the queue's rows were not refreshed within 25 s")), 25_000)),
  ]);
  check(target === "queue", `htmx swapped #${target}, not the queue`);
  const swappedText = await page.locator(`#queue a[href="/tickets/${ticket}"]`).textContent();
  check(swappedText.includes(report), `the refreshed queue shows ${JSON.stringify(swappedText)}`);
  await expectNothingInjected(page, "the refreshed queue");
  step("the queue's rows, refreshed by htmx without a reload, still show it as text");

  await page.goto(`${url()}/tickets/${ticket}`);
  const title = await page.locator("h1").textContent();
  check(title.includes(report), `the ticket's heading is ${JSON.stringify(title)}`);
  await expectNothingInjected(page, "the employee's ticket");
  step("the ticket shows the report's markup as text");

  await page.goto(`${url()}/tickets/${planted}`);
  const changes = page.locator('section[aria-label="Changes"]');
  await expectVisible(changes.locator("td", { hasText: packageName }), "the planted package among the changes");
  const item = await changes.locator("td", { hasText: packageName }).first().textContent();
  check(item.includes(`package dpkg/${packageName}`), `the change reads ${JSON.stringify(item)}`);
  await expectNothingInjected(page, "the planted host's ticket");
  step("the package name shows as text among the host's changes");

  // Let any timer-borne payload run before judging.
  await page.waitForTimeout(500);
  expectQuiet(seen, "hostile_text");
  step("no dialog opened, no page error, no CSP violation");
});
