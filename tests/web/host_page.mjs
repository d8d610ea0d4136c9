// Flow: the host page shows a chart drawn from the host's real health
// history, and a technician runs tcp_connect from it and watches its output
// arrive live. Skipped, with the reason printed, while /hosts/{id} answers
// 404 (the host page is not built yet).
//
// What this flow expects of the host page (collector/src/web/host.rs):
// - the route GET /hosts/{host id};
// - at least one chart as a <canvas> inside an element with class "chart"
//   (uPlot draws on canvas), drawn from the stored health history: the
//   canvas has painted pixels once the page has loaded;
// - a form with id "run-diagnostic" holding a <select name="diagnostic">
//   whose options are the catalog's ids ("tcp_connect" among them), typed
//   parameter inputs named after the catalog's parameters
//   (input[name="host"] and input[name="port"] for tcp_connect), and a
//   submit button;
// - the run's output arriving, without a reload, as text inside an element
//   with id "live-output".
//
// Env: DESKPULSE_URL, DESKPULSE_CA_FILE, DESKPULSE_CHROMIUM,
// DESKPULSE_TECH_NAME, DESKPULSE_TECH_PASSWORD, DESKPULSE_HOST_ID (a host
// with health history and a connected agent), DESKPULSE_TCP_HOST and
// DESKPULSE_TCP_PORT (an address on loopback that accepts connections).
// Screenshot: host.png.
import {
  check, env, expectQuiet, expectVisible, flow, newPage, screenshot, signInWithPassword, step,
  url, watch,
} from "./lib.mjs";

await flow("host_page", async (browser) => {
  const host = env("DESKPULSE_HOST_ID");
  const { page } = await newPage(browser);
  const seen = watch(page);
  await signInWithPassword(page, env("DESKPULSE_TECH_NAME"), env("DESKPULSE_TECH_PASSWORD"));
  const response = await page.goto(`${url()}/hosts/${host}`);
  if (response.status() === 404) {
    return `GET /hosts/${host} answers 404: the host page is not built yet (collector/src/web/host.rs)`;
  }
  check(response.status() === 200, `the host page answered ${response.status()}`);

  const canvas = page.locator(".chart canvas").first();
  await expectVisible(canvas, "a chart's canvas");
  // uPlot draws after load; wait until some pixel is painted.
  await page.waitForFunction(() => {
    const c = document.querySelector(".chart canvas");
    if (!c || c.width === 0 || c.height === 0) return false;
    const pixels = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    for (let i = 3; i < pixels.length; i += 4) if (pixels[i] !== 0) return true;
    return false;
  }, null, { timeout: 10_000 }).catch(() => {
    throw new Error("the chart's canvas stayed empty");
  });
  step("a chart is drawn from the health history");
  // The page's weight as the issue counts it: the HTML and every file it
  // loaded (scripts, styles, the chart data), uncompressed. A figure for
  // the note, printed, not a timed assertion.
  const weight = await page.evaluate(() => {
    const [document] = performance.getEntriesByType("navigation");
    const files = performance.getEntriesByType("resource");
    return {
      html: document.decodedBodySize,
      files: files.reduce((sum, r) => sum + r.decodedBodySize, 0),
      count: files.length,
    };
  });
  step(`page weight: ${((weight.html + weight.files) / 1024).toFixed(1)} KiB `
    + `(HTML ${(weight.html / 1024).toFixed(1)} KiB, ${weight.count} files `
    + `${(weight.files / 1024).toFixed(1)} KiB)`);
  await screenshot(page, "host");

  const form = page.locator("form#run-diagnostic");
  await expectVisible(form, "the run-diagnostic form");
  await form.locator('select[name="diagnostic"]').selectOption("tcp_connect");
  await form.locator('input[name="host"]').fill(env("DESKPULSE_TCP_HOST"));
  await form.locator('input[name="port"]').fill(env("DESKPULSE_TCP_PORT"));
  const started = Date.now();
  await form.locator('button[type="submit"], input[type="submit"]').first().click();
  const output = page.locator("#live-output");
  await expectVisible(output.getByText(/connected to/), "tcp_connect's output in #live-output");
  step(`tcp_connect's output arrived live after ${Date.now() - started} ms`);
  check(page.url().startsWith(`${url()}/hosts/${host}`), `running it left the host page for ${page.url()}`);
  expectQuiet(seen, "host_page");
});
