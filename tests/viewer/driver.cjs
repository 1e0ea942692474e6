// Drives the Hoichan viewer in headless Debian chromium with playwright-core (no browser download).
// Usage: node driver.cjs '<json config>'; prints "SHOT <path>" per screenshot and "RESULT <json>" last.
"use strict";
const path = require("path");

const config = JSON.parse(process.argv[2]);
const { chromium } = require(path.join(__dirname, "..", "..", "viewer", "node_modules", "playwright-core"));
const PASSWORD = "correct horse battery staple";

async function shot(page, name) {
  const file = path.join(config.shots, name + ".png");
  await page.screenshot({ path: file });
  console.log("SHOT " + file);
}

async function signIn(page, username) {
  await page.goto(config.base + "/viewer/", { waitUntil: "domcontentloaded" });
  await page.locator("#hc-username :is(input,textarea)").fill(username);
  await page.locator("#hc-password :is(input,textarea)").fill(PASSWORD);
  await page.locator("#hc-sign-in").click();
  await page.locator("#hc-sign-out").waitFor({ state: "visible" });
}

async function tab(page, label) {
  await page.getByRole("tab", { name: label, exact: true }).click();
}

async function text(page, selector) {
  return (await page.locator(selector).innerText()).trim();
}

async function waitText(page, selector, pattern, timeout = 10000) {
  await page.waitForFunction(
    ([sel, src]) => {
      const el = document.querySelector(sel);
      return el && new RegExp(src).test(el.innerText);
    },
    [selector, pattern],
    { timeout },
  );
  return text(page, selector);
}

const scenarios = {
  async specialist(page, p, out) {
    await signIn(page, "rad_c1");
    await page.locator(`#hc-worklist tr[data-case='${p.ct_case}']`).waitFor();
    out.worklist_rows = await page.locator("#hc-worklist tr[data-case]").count();
    await shot(page, "specialist-worklist");
    await page.locator(`#hc-worklist tr[data-case='${p.ct_case}']`).click();
    out.first = await waitText(page, "#hc-slice-info", "Slice 1/8");
    await page.locator("#hc-start-review").click();
    await waitText(page, "#hc-review-message", "took the case");
    await page.locator("#hc-case-header").click();
    await page.keyboard.press("ArrowDown");
    await waitText(page, "#hc-slice-info", "Slice 2/8");
    await page.keyboard.press("ArrowDown");
    out.scrolled = await waitText(page, "#hc-slice-info", "Slice 3/8");
    await page.locator("#hc-preset label", { hasText: "lung" }).click();
    out.windowed = await waitText(page, "#hc-slice-info", "W 1500 / L -600");
    await page.locator("#hc-overlay input").click();
    out.overlay = await waitText(page, "#hc-slice-info", "overlay off");
    out.findings = await text(page, "#hc-findings");
    await page.locator("#hc-overlay input").click();
    await page.locator("#hc-goto").click();
    out.finding_slice = await waitText(page, "#hc-slice-info", "Slice 5/8.*1 marks");
    await shot(page, "specialist-finding");
    await page.locator("#hc-accept").click();
    out.accepted = await waitText(page, "#hc-review-message", "accepted");
    await shot(page, "specialist-slice");
    await tab(page, "Opinion");
    await page.locator("#hc-op-findings textarea").fill("Patchy consolidation in the right lower lobe.");
    await page.locator("#hc-op-impression textarea").fill("Right lower lobe pneumonia.");
    await page.locator("#hc-op-recommendations textarea").fill("Antibiotics; follow-up CT in 6 weeks.");
    await page.locator("#hc-sign").click();
    out.signed = await waitText(page, "#hc-review-message", "signed", 15000);
    await page.locator("#hc-opinion-pdf a").first().waitFor({ timeout: 10000 });
    out.pdf_link = await page.locator("#hc-opinion-pdf a").first().getAttribute("href");
    await shot(page, "specialist-opinion");
  },

  async slide(page, p, out) {
    const tiles = [];
    page.on("response", (r) => {
      if (r.url().includes("_files/")) tiles.push({ url: r.url(), status: r.status() });
    });
    await signIn(page, "path_c1");
    await page.locator(`#hc-worklist tr[data-case='${p.slide_case}']`).click();
    await waitText(page, "#hc-case-header", "pathology");
    await tab(page, "WSI");
    await page.waitForFunction(() => window.Hoichan && Hoichan.slide && Hoichan.slide.viewer &&
      Hoichan.slide.viewer.world.getItemCount() > 0 && Hoichan.slide.viewer.world.getItemAt(0).getFullyLoaded(),
      null, { timeout: 15000 });
    const before = await page.evaluate(() => {
      const v = Hoichan.slide.viewer.viewport;
      return { zoom: v.getZoom(), x: v.getCenter().x, y: v.getCenter().y };
    });
    const box = await page.locator("#hc-osd").boundingBox();
    await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
    for (let i = 0; i < 4; i++) {
      await page.mouse.wheel(0, -300);
      await page.waitForTimeout(150);
    }
    await page.mouse.down();
    await page.mouse.move(box.x + box.width / 2 - 150, box.y + box.height / 2 - 80, { steps: 8 });
    await page.mouse.up();
    await page.waitForTimeout(1200);
    const after = await page.evaluate(() => {
      const v = Hoichan.slide.viewer.viewport;
      return { zoom: v.getZoom(), x: v.getCenter().x, y: v.getCenter().y };
    });
    out.before = before;
    out.after = after;
    out.tiles = tiles;
    await shot(page, "pathologist-slide");
  },

  async referrer(page, p, out) {
    await signIn(page, "ref_d1");
    out.tabs = await page.getByRole("tab").allInnerTexts();
    out.worklist_present = await page.locator("#hc-worklist").count();
    await page.locator("#hc-new-patient-id :is(input,textarea)").fill("D1-000999");
    await page.locator("#hc-new-patient-name :is(input,textarea)").fill("Pham Van Moi");
    await page.locator("#hc-new-question textarea").fill("Lung nodule on X-ray, please advise");
    await page.locator("#hc-create-case").click();
    out.created = await waitText(page, "#hc-my-message", "created");
    await page.locator("#hc-tus-file").setInputFiles(p.slide_path);
    await page.locator("#hc-tus-start").click();
    out.uploaded = await waitText(page, "#hc-my-message", "slides", 30000);
    await shot(page, "referrer-desktop");
    await page.setViewportSize({ width: 820, height: 1180 });
    await page.waitForTimeout(300);
    await shot(page, "referrer-tablet");
  },

  async tablet(page, p, out) {
    await signIn(page, "rad_c1");
    await page.locator(`#hc-worklist tr[data-case='${p.ct_case}']`).click();
    out.first = await waitText(page, "#hc-slice-info", "Slice 1/8");
    await shot(page, "specialist-tablet");
    await page.locator("#hc-lang label", { hasText: "vi" }).click();
    await page.getByRole("tab", { name: "Danh sách ca" }).waitFor();
    out.vi_tab = await page.getByRole("tab", { name: "Danh sách ca" }).count();
    await shot(page, "specialist-tablet-vi");
  },
};

(async () => {
  const width = config.params.width || 1280;
  const height = config.params.height || 800;
  const browser = await chromium.launch({
    executablePath: config.chromium,
    headless: true,
    args: ["--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
  const out = {};
  const page = await browser.newPage({ viewport: { width, height } });
  page.setDefaultTimeout(15000);
  page.on("pageerror", (e) => console.log("PAGEERROR " + e.message));
  try {
    await scenarios[config.scenario](page, config.params, out);
  } catch (error) {
    console.log("ERROR " + error.stack);
    await shot(page, config.scenario + "-failure").catch(() => {});
    await browser.close();
    process.exit(1);
  }
  await browser.close();
  console.log("RESULT " + JSON.stringify(out));
})();
