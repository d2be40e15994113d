// Drives the Switchyard web UI in Debian's headless Chromium (playwright-core, no browser
// download). Usage: node ui.mjs <gateway url> <admin token> <mcp-calculator path> <screenshot dir>
// Fails (exit 1) on any console error, page error, failed step or a page over 200 KB of assets.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const [url, token, calculator, shots] = process.argv.slice(2);
if (!url || !token || !calculator || !shots) {
  console.error("usage: node ui.mjs <url> <token> <mcp-calculator> <screenshot dir>");
  process.exit(2);
}
mkdirSync(shots, { recursive: true });
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const browser = await chromium.launch({
  executablePath,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const problems = [];
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
// The one step that provokes an error answer on purpose allows exactly one such message.
let allowedFailures = 0;
page.on("console", (m) => {
  if (m.type() !== "error") return;
  if (allowedFailures > 0 && /status of 4\d\d/.test(m.text())) { allowedFailures -= 1; return; }
  problems.push(`console: ${m.text()}`);
});
page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
let bytes = 0;
page.on("response", async (r) => {
  if (r.url().startsWith(url) && !r.url().includes("/api/")) {
    try { bytes += (await r.body()).length; } catch { /* redirects have no body */ }
  }
});
const step = async (name, fn) => {
  try { await fn(); console.log(`ok   ${name}`); } catch (e) { problems.push(`${name}: ${e.message}`); console.log(`FAIL ${name}: ${e.message}`); }
};
const expectText = async (sel, text) => {
  await page.locator(sel, { hasText: text }).first().waitFor({ timeout: 10000 });
};

await step("login with the admin token", async () => {
  await page.goto(`${url}/#/dashboard`);
  await page.locator("form input[name=token]").waitFor({ timeout: 10000 });
  await page.screenshot({ path: `${shots}/login.png` });
  await page.fill("input[name=token]", "wrong-token");
  await page.click("form button[type=submit]");
  await expectText(".error", "not accepted");
  await page.fill("input[name=token]", token);
  await page.click("form button[type=submit]");
  await expectText("h1", "Dashboard");
});
if (bytes > 200 * 1024) problems.push(`the UI's assets weigh ${bytes} bytes (limit 200 KB)`);

for (const [hash, title, check] of [
  ["dashboard", "Dashboard", async () => { await expectText(".card .label", "Requests"); await page.waitForFunction(() => [...document.querySelectorAll("svg.chart rect.bar")].some((r) => Number(r.getAttribute("height")) > 0), null, { timeout: 10000 }); }],
  ["providers", "Providers", async () => { await expectText("td", "mock"); }],
  ["mcp", "MCP servers", async () => { await page.locator("form#register").waitFor(); }],
  ["cache", "Cache", async () => { await expectText("h2", "Threshold what-if"); await expectText("button", "Purge all"); await expectText("td", "capital of France"); await expectText("#top td", "Hello"); }],
  ["logs", "Request log", async () => { await page.locator("tr.click").first().waitFor(); }],
  ["plugins", "Plugins", async () => {
    await expectText("td", "prompt-guard"); await expectText("td", "fail_closed");
    if ((await page.locator("main").innerText()).includes("null")) throw new Error("a null on the Plugins page");
  }],
  ["customers", "Customers", async () => { await expectText("h2", "New customer"); }],
]) {
  await step(`page ${hash}`, async () => {
    await page.goto(`${url}/#/${hash}`);
    await expectText("h1", title);
    await check();
    await page.screenshot({ path: `${shots}/${hash}.png`, fullPage: true });
  });
}

await step("no secret on any page", async () => {
  for (const hash of ["providers", "mcp"]) {
    await page.goto(`${url}/#/${hash}`);
    await page.waitForTimeout(300);
    const html = await page.content();
    if (html.includes("sk-ui-secret")) throw new Error(`a provider key is shown on ${hash}`);
  }
});

await step("add a provider and a route through the UI, test it, see the versions", async () => {
  await page.goto(`${url}/#/providers`);
  await page.fill("form#add-provider input[name=name]", "ui-added");
  await page.selectOption("form#add-provider select[name=kind]", "openai");
  await page.fill("form#add-provider input[name=base_url]", `${process.env.MOCK_URL}/v1`);
  await page.fill("form#add-provider input[name=key]", "sk-ui-added-secret-0123456789");
  await page.fill("form#add-provider input[name=models]", "gpt-4o-mini");
  await page.click("form#add-provider button[type=submit]");
  await expectText("[role=status]", "Added provider ui-added");
  await expectText("td", "ui-added");
  if ((await page.content()).includes("sk-ui-added-secret")) throw new Error("the new key is shown");
  const row = page.locator("tr", { hasText: "ui-added" }).first();
  await row.locator("button", { hasText: "Test" }).click();
  await expectText("[role=status]", "ui-added answered gpt-4o-mini");
  await page.fill("form#add-route input[name=model]", "ui-route");
  await page.fill("form#add-route input[name=targets]", "ui-added/gpt-4o-mini=1");
  await page.click("form#add-route button[type=submit]");
  await expectText("[role=status]", "Added route ui-route");
  await expectText("td", "create route ui-route");
  if ((await page.locator("main").innerText()).includes("null")) throw new Error("a null on the Providers page");
  await page.screenshot({ path: `${shots}/providers-added.png`, fullPage: true });
});

await step("register an MCP server through the UI", async () => {
  await page.goto(`${url}/#/mcp`);
  await page.fill("form#register input[name=name]", "calc");
  await page.selectOption("form#register select[name=transport]", "stdio");
  await page.fill("form#register input[name=command]", calculator);
  await page.click("form#register button[type=submit]");
  await expectText("[role=status]", "Registered calc");
  await expectText("td", "calc__add");
  await expectText("span.status-connected", "connected");
});

await step("a bad registration shows the gateway's message", async () => {
  allowedFailures = 1;
  await page.fill("form#register input[name=name]", "broken");
  await page.fill("form#register input[name=command]", "/no/such/program");
  await page.click("form#register button[type=submit]");
  await page.locator(".error").first().waitFor({ timeout: 10000 });
  const msg = await page.locator(".error").first().textContent();
  if (!msg.includes("/no/such/program")) throw new Error(`unclear message: ${msg}`);
});

await step("try a tool", async () => {
  await page.goto(`${url}/#/mcp`);
  await page.selectOption("form#try select[name=tool]", "calc__add");
  await page.fill("form#try textarea[name=arguments]", '{"a": 2, "b": 3}');
  await page.click("form#try button[type=submit]");
  await expectText("pre", "5");
  const out = await page.locator("pre").first().textContent();
  if (!out.startsWith("ok")) throw new Error(`tool output: ${out}`);
  await page.screenshot({ path: `${shots}/mcp-registered.png`, fullPage: true });
});

await step("log detail and filters", async () => {
  await page.goto(`${url}/#/logs`);
  await expectText("h1", "Request log");
  await page.locator("tr.click").first().click();
  await page.locator("pre#detail").waitFor();
  const detail = await page.locator("pre#detail").textContent();
  if (!detail.includes("request_id")) throw new Error("no detail shown");
  await page.screenshot({ path: `${shots}/log-detail.png`, fullPage: true });
  await page.selectOption("form#filters select[name=status]", "4xx");
  await page.click("form#filters button[type=submit]");
  await page.waitForFunction(() => location.hash.includes("status=4xx"));
  await page.waitForTimeout(300);
  const statuses = await page.locator("tbody tr.click td:nth-child(5)").allTextContents();
  if (statuses.length === 0 || statuses.some((s) => !s.startsWith("4"))) throw new Error(`4xx filter shows ${statuses.join(",")}`);
});

await step("governance: teams and keys, the secret shown once, rotate, disable, a refused delete", async () => {
  page.on("dialog", (d) => d.accept(d.type() === "prompt" ? "0" : undefined));
  await page.goto(`${url}/#/teams`);
  await expectText("h1", "Teams");
  await page.fill("form#create input[name=id]", "ui-team");
  await page.fill("form#create input[name=max_usd]", "10");
  await page.selectOption("form#create select[name=period]", "1d");
  await page.click("form#create button[type=submit]");
  await expectText("[role=status]", "Created team ui-team");
  await expectText("td", "of $10");
  await page.goto(`${url}/#/keys`);
  await expectText("h1", "Virtual keys");
  await page.fill("form#create input[name=id]", "ui-key");
  await page.selectOption("form#create select[name=team]", "ui-team");
  await page.fill("form#create input[name=mcp_tools]", "calc__*");
  await page.click("form#create button[type=submit]");
  await page.locator("code#secret").waitFor({ timeout: 10000 });
  const secret = await page.locator("code#secret").textContent();
  if (!secret.startsWith("sk-sy-")) throw new Error(`not a key: ${secret}`);
  await page.click(".secret button");
  await page.screenshot({ path: `${shots}/keys.png`, fullPage: true });
  await page.reload();
  await expectText("td", "ui-key");
  if ((await page.content()).includes(secret)) throw new Error("the secret is shown again");
  await page.locator("tr", { hasText: "ui-key" }).locator("button", { hasText: "Rotate" }).click();
  await page.locator("code#secret").waitFor({ timeout: 10000 });
  const second = await page.locator("code#secret").textContent();
  if (second === secret || !second.startsWith("sk-sy-")) throw new Error("rotation showed no new secret");
  await page.locator("tr", { hasText: "ui-key" }).locator("button", { hasText: "Disable" }).click();
  await expectText("span.bad", "disabled");
  allowedFailures = 1;
  await page.goto(`${url}/#/teams`);
  // The keys page also has a row naming ui-team, with its own Delete button:
  // wait until the teams page has replaced it.
  await expectText("h1", "Teams");
  await page.locator("tr", { hasText: "ui-team" }).locator("button", { hasText: "Delete" }).click();
  await expectText(".error", "still owns key `ui-key`");
  await page.screenshot({ path: `${shots}/teams.png`, fullPage: true });
});

await step("threshold what-if", async () => {
  await page.goto(`${url}/#/cache`);
  await page.fill("form#whatif input[name=threshold]", "0.5");
  await page.click("form#whatif button[type=submit]");
  await expectText("p.notice", "at 0.50");
});

await step("shadow hits and a wrong answer reported", async () => {
  await page.goto(`${url}/#/cache`);
  await expectText("#shadow td", "Tell me a joke");
  await expectText("#shadow td", "hit-exact");
  await page.locator("tr", { hasText: "capital of France" }).locator("button", { hasText: "Wrong" }).click();
  await expectText("#reported td", "capital of France");
  await page.screenshot({ path: `${shots}/cache-feedback.png`, fullPage: true });
});

await browser.close();
if (problems.length) {
  console.error("UI problems:\n" + problems.join("\n"));
  process.exit(1);
}
console.log("UI ok; screenshots in " + shots);
