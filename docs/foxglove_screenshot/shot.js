// Opens URL in Debian's Chromium (headless, software WebGL), waits WAIT_MS after the page has
// loaded, and writes a PNG of the window to OUT. Console errors go to stderr.
//   node shot.js URL OUT.png [WAIT_MS] [WIDTH] [HEIGHT]
"use strict";
const puppeteer = require("puppeteer-core");

const [url, out] = process.argv.slice(2, 4);
const waitMs = Number(process.argv[4] || 20000);
const width = Number(process.argv[5] || 1600);
const height = Number(process.argv[6] || 1000);

(async () => {
  const browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist",
           `--window-size=${width},${height}`],
  });
  try {
    const page = await browser.newPage();
    await page.setViewport({ width, height });
    page.on("console", (m) => { if (m.type() === "error") process.stderr.write(`console: ${m.text()}\n`); });
    page.on("pageerror", (e) => process.stderr.write(`pageerror: ${e.message}\n`));
    page.on("response", (r) => { if (r.status() >= 400) process.stderr.write(`${r.status()}: ${r.url()}\n`); });
    await page.goto(url, { waitUntil: "load", timeout: 180000 });
    await new Promise((r) => setTimeout(r, waitMs));
    await page.screenshot({ path: out });
  } finally {
    await browser.close();
  }
})().catch((e) => { process.stderr.write(`shot.js: ${e.stack || e}\n`); process.exit(1); });
