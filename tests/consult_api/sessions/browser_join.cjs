// Drives headless Chromium (fake camera and microphone) through the session page:
// waits until a remote participant's video plays, reports what the page shows, then clicks Leave.
// Usage: node browser_join.cjs <page url> <chromium path>
"use strict";
const path = require("path");
const requireFromViewer = require("module").createRequire(
  path.resolve(__dirname, "../../../viewer/package.json"),
);
const { chromium } = requireFromViewer("playwright-core");

async function main() {
  const [url, executablePath] = process.argv.slice(2);
  const browser = await chromium.launch({
    executablePath,
    headless: true,
    args: [
      "--use-fake-device-for-media-stream",
      "--use-fake-ui-for-media-stream",
      "--allow-loopback-in-peer-connection",
      "--autoplay-policy=no-user-gesture-required",
      "--disable-features=WebRtcHideLocalIpsWithMdns",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  const page = await browser.newPage();
  const logs = [];
  page.on("console", (m) => logs.push(m.text()));
  page.on("pageerror", (e) => logs.push(String(e)));
  page.on("websocket", (ws) => {  // signaling traffic, reported when the page does not play
    ws.on("framereceived", (f) => logs.push(`<< ${String(f.payload).slice(0, 100)}`));
    ws.on("framesent", (f) => logs.push(`>> ${String(f.payload).slice(0, 100)}`));
    ws.on("close", () => logs.push("signaling socket closed"));
  });
  try {
    await page.goto(url);
    await page.waitForFunction(
      () => {
        const v = document.querySelector("video.remote");
        return v && v.readyState >= 2 && !v.paused && v.currentTime > 0.5 && v.videoWidth > 0;
      },
      null,
      { timeout: 30000 },
    );
    const report = await page.evaluate(() => {
      const describe = (v) => ({
        width: v.videoWidth, height: v.videoHeight, time: v.currentTime, paused: v.paused, ready: v.readyState,
      });
      return {
        local: describe(document.getElementById("local")),
        remote: describe(document.querySelector("video.remote")),
        participants: [...document.querySelectorAll("#participants li")].map((li) => li.textContent),
        hashAfterLoad: location.hash,
      };
    });
    await page.waitForTimeout(1500);
    await page.click("#leave");
    await page.waitForFunction(() => document.getElementById("status").textContent.includes("left"));
    await page.waitForTimeout(500);
    report.status = await page.textContent("#status");
    console.log(JSON.stringify({ ok: true, ...report }));
  } catch (err) {
    const status = await page.textContent("#status").catch(() => "?");
    console.log(JSON.stringify({ ok: false, error: String(err), status, logs }));
    process.exitCode = 1;
  } finally {
    await browser.close();
  }
}
main();
