// Drives the admin status page (host/src/admin/status.html) in the system
// chromium through playwright-core; run by tests/status_page.rs.
//
//   node tests/clients/status_page.mjs URL SCREENSHOT.png [GUEST] [TIMEOUT_MS]
//
// Opens URL at 1280x800, waits until every chart canvas holds at least 3
// points and GUEST's events/s cell is above 0, checks the table names GUEST,
// saves a full-page screenshot, and prints one JSON line on stdout:
//   {"pid": "...", "guests": [...], "eps": N, "charts": [{id, kind, guest,
//    points, colors: ["#rrggbb"...], x, y, width, height}...]}
// with the canvases' boxes in page (= screenshot) pixels. Exits non-zero with
// a message on stderr (and a screenshot of the failed state) otherwise.
//
// playwright-core is found in PLAYWRIGHT_NODE_MODULES, else in
// <workspace>/target/lang-tools/playwright/node_modules
// (tests/clients/install-browser.sh puts it there).
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
const modules = process.env.PLAYWRIGHT_NODE_MODULES
  || path.join(here, "..", "..", "target", "lang-tools", "playwright", "node_modules");
const require = createRequire(path.join(modules, "noop.js"));
let chromium;
try {
  ({ chromium } = require("playwright-core"));
} catch (e) {
  console.error(`cannot load playwright-core from ${modules} (run tests/clients/install-browser.sh): ${e.message}`);
  process.exit(2);
}

const [url, screenshot, guest = "echo", timeoutArg = "60000"] = process.argv.slice(2);
if (!url || !screenshot) {
  console.error("usage: status_page.mjs URL SCREENSHOT.png [GUEST] [TIMEOUT_MS]");
  process.exit(2);
}
const timeout = Number(timeoutArg);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
  timeout: 30000,
});
let failed = false;
const problems = [];
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, deviceScaleFactor: 1 });
  const page = await context.newPage();
  page.on("pageerror", (e) => problems.push(`uncaught exception in the page: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(`console error: ${m.text()}`);
  });
  const response = await page.goto(url, { waitUntil: "load", timeout: 30000 });
  if (!response || !response.ok()) throw new Error(`GET ${url}: ${response ? response.status() : "no response"}`);
  const type = response.headers()["content-type"] || "";
  if (!type.startsWith("text/html")) throw new Error(`GET ${url}: content-type ${JSON.stringify(type)}, expected text/html`);

  try {
    await page.waitForFunction(
      (name) => {
        const charts = [...document.querySelectorAll("canvas.chart")];
        const cell = [...document.querySelectorAll("td.eps")].find((td) => td.dataset.guest === name);
        return charts.length >= 3
          && charts.every((c) => Number(c.dataset.points) >= 3)
          && cell !== undefined && Number(cell.dataset.value) > 0;
      },
      guest,
      { timeout, polling: 200 },
    );
  } catch (e) {
    const state = await page.evaluate(() => ({
      charts: [...document.querySelectorAll("canvas.chart")].map((c) => `${c.id}: ${c.dataset.points} points`),
      eps: [...document.querySelectorAll("td.eps")].map((td) => `${td.dataset.guest}: ${JSON.stringify(td.dataset.value)}`),
      error: document.getElementById("error")?.hidden === false ? document.getElementById("error").textContent : null,
    }));
    throw new Error(`the page did not fill within ${timeout} ms: ${JSON.stringify(state)}`);
  }
  // A few more samples, so the screenshot shows lines rather than stubs.
  await page.waitForFunction(
    () => [...document.querySelectorAll("canvas.chart")].every((c) => Number(c.dataset.points) >= 5),
    null,
    { timeout: 15000, polling: 200 },
  ).catch(() => {});

  const result = await page.evaluate(() => {
    const rows = [...document.querySelectorAll("#guest-rows tr[data-guest]")];
    return {
      pid: document.getElementById("pid").textContent.trim(),
      errorBanner: document.getElementById("error").hidden ? null : document.getElementById("error").textContent,
      guests: rows.map((r) => r.querySelector("td.guest-name").textContent.trim()),
      eps: Object.fromEntries([...document.querySelectorAll("td.eps")].map((td) => [td.dataset.guest, Number(td.dataset.value)])),
      loops: document.querySelectorAll("#loops .loop").length,
      charts: [...document.querySelectorAll("canvas.chart")].map((c) => {
        const r = c.getBoundingClientRect();
        return {
          id: c.id,
          kind: c.dataset.kind,
          guest: c.dataset.guest,
          points: Number(c.dataset.points),
          colors: (c.dataset.colors || "").split(",").filter(Boolean),
          x: r.left + window.scrollX,
          y: r.top + window.scrollY,
          width: r.width,
          height: r.height,
        };
      }),
    };
  });
  if (!result.guests.includes(guest)) throw new Error(`the table does not name ${guest}: ${JSON.stringify(result.guests)}`);
  if (result.errorBanner) throw new Error(`the error banner is showing: ${result.errorBanner}`);
  if (problems.length) throw new Error(problems.join("\n"));
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(JSON.stringify(result));
} catch (e) {
  failed = true;
  console.error(e.message || String(e));
  for (const p of problems) console.error(p);
  try {
    const page = browser.contexts()[0]?.pages()[0];
    if (page) await page.screenshot({ path: screenshot, fullPage: true });
  } catch {}
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
