// Opens a node's dashboard in headless Chromium (driven by playwright-core),
// waits until its route map shows every route the test expects with each hop
// measured, prints what the map shows as one JSON line and saves a screenshot.
//
//   node check.cjs PLAYWRIGHT_CORE_DIR CHROMIUM URL SCREENSHOT PEER:PATH...
"use strict";
const [, , pwDir, chromiumPath, url, shot, ...expect] = process.argv;
const { chromium } = require(pwDir);

(async () => {
  const browser = await chromium.launch({
    executablePath: chromiumPath,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
    await page.goto(url);
    await page.waitForFunction(
      (want) => want.every((w) => {
        const [peer, path] = w.split(":");
        const g = document.querySelector(`g.route[data-peer="${peer}"][data-path="${path}"]`);
        return g && [...g.querySelectorAll("line")].every((l) => l.dataset.rating !== "unknown");
      }),
      expect,
      { timeout: 30000, polling: 200 },
    );
    const routes = await page.$$eval("g.route", (gs) => gs.map((g) => ({
      peer: g.dataset.peer,
      path: g.dataset.path,
      via: g.dataset.via,
      transport: g.dataset.transport,
      cipher: g.dataset.cipher,
      hops: [...g.querySelectorAll("line")].map((l) => ({ hop: l.dataset.hop, rating: l.dataset.rating, colour: l.getAttribute("stroke") })),
      text: g.textContent,
    })));
    const streams = await page.$$eval("#streams tbody tr", (rs) => rs.map((r) => r.textContent));
    await page.screenshot({ path: shot, fullPage: true });
    console.log(JSON.stringify({ title: await page.title(), routes, streams, errors }));
  } finally {
    await browser.close();
  }
})().catch((e) => {
  console.error(String(e && e.stack || e));
  process.exit(1);
});
