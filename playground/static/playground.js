// imagine-bot playground: a Discord-like page over the local stand-in. Everything the page does
// goes through /api/act as the member picked in the sidebar; /api/state is polled for the view.
"use strict";

const $ = (sel) => document.querySelector(sel);
const view = { world: null, me: null, channel: null, shown: "", modalShown: "", busy: false, count: 0 };
const STRING = 3, INTEGER = 4, BOOLEAN = 5, USER = 6, CHANNEL = 7, ROLE = 8, NUMBER = 10,
  ATTACHMENT = 11;
const REACTIONS = ["🔁", "⬆️", "🎨"];

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

function toast(text) {
  const box = $("#toast");
  box.textContent = text;
  box.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.hidden = true; }, 6000);
}

async function act(body) {
  const res = await fetch("/api/act", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ as: view.me, ...body }),
  });
  const answer = await res.json().catch(() => ({ error: `HTTP ${res.status}` }));
  if (!res.ok) toast(answer.error || `HTTP ${res.status}`);
  poll();
  return res.ok;
}

function slash(command, options) {
  return act({ action: "slash", channel: view.channel, command, options });
}

// -- rendering messages -------------------------------------------------------------------------
function inline(text) {
  // Discord markdown, the bits the bot uses: **bold**, `code`, <@id> mentions, ||spoilers||.
  const frag = document.createDocumentFragment();
  const names = Object.fromEntries((view.world?.members || []).map((m) => [m.id, m.name]));
  const parts = String(text).split(/(\*\*[^*]+\*\*|`[^`]+`|<@!?\d+>|<#\d+>|\|\|[^|]+\|\|)/g);
  for (const part of parts) {
    if (/^\*\*.+\*\*$/.test(part)) frag.append(el("b", {}, part.slice(2, -2)));
    else if (/^`.+`$/.test(part)) frag.append(el("code", {}, part.slice(1, -1)));
    else if (/^<@!?\d+>$/.test(part)) frag.append(el("b", {}, "@" + (names[part.replace(/\D/g, "")] || "user")));
    else if (/^<#\d+>$/.test(part)) {
      const ch = view.world?.channels.find((c) => c.id === part.replace(/\D/g, ""));
      frag.append(el("b", {}, "#" + (ch ? ch.name : "channel")));
    } else if (/^\|\|.+\|\|$/.test(part)) frag.append(el("span", { class: "spoilertext" }, part.slice(2, -2)));
    else frag.append(part);
  }
  return frag;
}

function attachmentImage(att) {
  const spoiler = att.filename.startsWith("SPOILER_");
  const img = el("img", {
    class: "att" + (spoiler ? " spoiler" : ""), src: att.url, alt: att.filename,
    "data-testid": "attachment", "data-filename": att.filename, draggable: "true",
    title: spoiler ? "spoiler: click to reveal" : att.filename,
  });
  if (spoiler) img.addEventListener("click", () => img.classList.remove("spoiler"), { once: true });
  return img;
}

function embedView(embed, msg) {
  const box = el("div", { class: "embed", "data-testid": "embed" });
  if (embed.color) box.style.borderLeftColor = "#" + embed.color.toString(16).padStart(6, "0");
  if (embed.title) box.append(el("div", { class: "title" }, inline(embed.title)));
  if (embed.description) box.append(el("div", { class: "content" }, inline(embed.description)));
  for (const field of embed.fields || []) {
    box.append(el("div", { class: "field" }, el("b", {}, field.name), el("span", { class: "content" }, inline(field.value))));
  }
  const url = embed.image?.url || embed.thumbnail?.url;
  if (url) {
    const name = url.startsWith("attachment://") ? url.slice(13) : null;
    const att = name ? msg.attachments.find((a) => a.filename === name) : { url, filename: url };
    if (att) box.append(attachmentImage(att));
  }
  if (embed.footer?.text) box.append(el("div", { class: "used" }, embed.footer.text));
  return box;
}

function componentView(comp, msg) {
  if (comp.type === 2) {
    const label = [comp.emoji?.name, comp.label].filter(Boolean).join(" ");
    if (comp.style === 5) return el("a", { href: comp.url, target: "_blank", rel: "noopener" }, label);
    return el("button", {
      class: "s" + (comp.style || 2), disabled: comp.disabled, "data-custom-id": comp.custom_id,
      "data-testid": "button", "data-label": comp.label || comp.emoji?.name || "",
      onclick: () => act({ action: "click", message: msg.id, custom_id: comp.custom_id }),
    }, label);
  }
  if (comp.type === 3) {
    const select = el("select", { "data-custom-id": comp.custom_id, "data-testid": "select" },
      el("option", { value: "" }, comp.placeholder || "Choose…"),
      (comp.options || []).map((o) => el("option", { value: o.value }, o.label)));
    select.addEventListener("change", () => {
      if (select.value) act({ action: "click", message: msg.id, custom_id: comp.custom_id, values: [select.value] });
    });
    return select;
  }
  return null;
}

function messageView(msg) {
  const box = el("div", { class: "msg", "data-testid": "message", "data-id": msg.id });
  if (msg.command) box.append(el("div", { class: "used" }, `${msg.command.user} used /${msg.command.name}`));
  box.append(el("div", { class: "who" }, msg.author.username,
    msg.author.bot ? el("span", { class: "bot" }, "APP") : null));
  if (msg.loading && !msg.content) box.append(el("div", { class: "loading" }, `${msg.author.username} is thinking…`));
  if (msg.content) box.append(el("div", { class: "content" }, inline(msg.content)));
  for (const embed of msg.embeds || []) box.append(embedView(embed, msg));
  const inEmbeds = new Set((msg.embeds || []).map((e) => (e.image?.url || "").replace("attachment://", "")));
  for (const att of msg.attachments || []) {
    if (inEmbeds.has(att.filename)) continue;
    if ((att.content_type || "").startsWith("image/")) box.append(attachmentImage(att));
    else box.append(el("a", { href: att.url, download: att.filename }, att.filename));
  }
  for (const row of msg.components || []) {
    const children = row.type === 1 ? row.components : [row];
    box.append(el("div", { class: "row" }, children.map((c) => componentView(c, msg))));
  }
  if (!msg.ephemeral && msg.author.bot && (msg.attachments || []).length) {
    const reactions = el("div", { class: "reactions" });
    const counts = Object.fromEntries((msg.reactions || []).map((r) => [r.emoji.name, r.count]));
    for (const emoji of REACTIONS) {
      reactions.append(el("button", {
        title: "react", "data-testid": "reaction",
        onclick: () => act({ action: "react", message: msg.id, emoji }),
      }, `${emoji} ${counts[emoji] || ""}`.trim()));
    }
    box.append(reactions);
  }
  if (msg.ephemeral) box.append(el("div", { class: "ephemeral" }, "Only you can see this"));
  return box;
}

function renderMessages(messages) {
  const list = $("#messages");
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 80;
  const grew = messages.length !== view.count;  // a new message: follow it, like Discord
  view.count = messages.length;
  list.replaceChildren(...messages.map(messageView));
  if (!messages.length) list.append(el("p", { class: "hint" }, "No messages yet: type a prompt below."));
  if (atBottom || grew) list.scrollTop = list.scrollHeight;
  for (const img of list.querySelectorAll("img")) {  // images load late: keep the newest in view
    img.addEventListener("load", () => { if (grew || atBottom) list.scrollTop = list.scrollHeight; }, { once: true });
  }
}

// -- modals the bot opens ---------------------------------------------------------------------
function renderModal(modals) {
  const key = JSON.stringify(modals.map((m) => m.interaction));
  if (key === view.modalShown) return;
  view.modalShown = key;
  const box = $("#modal");
  const modal = modals[0];
  if (!modal) { box.hidden = true; box.replaceChildren(); return; }
  const inputs = [];
  const form = el("form", { "data-testid": "modal-form" }, el("h3", {}, modal.title || "Form"));
  for (const row of modal.components || []) {
    const leaves = row.type === 18 ? [row.component] : (row.components || []);
    const label = row.type === 18 ? row.label : null;
    for (const input of leaves) {
      const field = input.style === 2
        ? el("textarea", { rows: 4, name: input.custom_id, required: input.required !== false, maxlength: input.max_length, placeholder: input.placeholder })
        : el("input", { name: input.custom_id, required: input.required !== false, maxlength: input.max_length, placeholder: input.placeholder });
      field.value = input.value || "";
      inputs.push(field);
      form.append(el("label", {}, label || input.label || input.custom_id, field));
    }
  }
  const dismiss = () => act({ action: "dismiss", interaction: modal.interaction });
  form.append(el("div", { class: "buttons" },
    el("button", { type: "button", class: "cancel", onclick: dismiss }, "Cancel"),
    el("button", { type: "submit", "data-testid": "modal-submit" }, "Submit")));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const values = Object.fromEntries(inputs.map((i) => [i.name, i.value]));
    act({ action: "modal", interaction: modal.interaction, values });
  });
  box.replaceChildren(form);
  box.hidden = false;
}

// -- command forms built from what the bot synced -------------------------------------------------
function optionInput(option) {
  const world = view.world;
  const name = option.name;
  let input;
  if (option.choices) {
    input = el("select", { name }, el("option", { value: "" }, "—"),
      option.choices.map((c) => el("option", { value: c.value }, c.name)));
  } else if (option.type === BOOLEAN) {
    input = el("select", { name }, el("option", { value: "" }, "—"),
      el("option", { value: "true" }, "yes"), el("option", { value: "false" }, "no"));
  } else if (option.type === USER) {
    input = el("select", { name }, el("option", { value: "" }, "—"),
      world.members.map((m) => el("option", { value: m.id }, m.name)));
  } else if (option.type === CHANNEL) {
    input = el("select", { name }, el("option", { value: "" }, "—"),
      world.channels.map((c) => el("option", { value: c.id }, "#" + c.name)));
  } else if (option.type === ROLE) {
    input = el("select", { name }, el("option", { value: "" }, "—"),
      world.roles.map((r) => el("option", { value: r.id }, r.name)));
  } else if (option.type === ATTACHMENT) {
    input = el("input", { name, type: "file", accept: "image/*" });
  } else if (option.type === INTEGER || option.type === NUMBER) {
    input = el("input", { name, type: "number", step: option.type === INTEGER ? 1 : "any", min: option.min_value, max: option.max_value });
  } else {
    input = el("input", { name, maxlength: option.max_length });
  }
  input.dataset.type = option.type;
  input.dataset.testid = "option-" + name;
  return el("label", {}, `${name}${option.required ? " *" : ""}`, input);
}

function readFile(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve({ filename: file.name, data: String(reader.result).split(",")[1] });
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

async function collect(form) {
  const options = {};
  for (const input of form.querySelectorAll("[name]")) {
    const type = Number(input.dataset.type);
    if (type === ATTACHMENT) {
      if (input.files.length) options[input.name] = await readFile(input.files[0]);
    } else if (input.value !== "") {
      if (type === INTEGER) options[input.name] = parseInt(input.value, 10);
      else if (type === NUMBER) options[input.name] = parseFloat(input.value);
      else if (type === BOOLEAN) options[input.name] = input.value === "true";
      else options[input.name] = input.value;
    }
  }
  return options;
}

function renderCommandForm() {
  const command = view.world.commands.find((c) => c.name === $("#command").value);
  const form = $("#command-form");
  form.replaceChildren();
  if (!command) return;
  form.className = "options";
  form.append(el("p", { class: "hint" }, command.description));
  command.options.forEach((o) => form.append(optionInput(o)));
  form.append(el("button", { type: "submit", "data-testid": "run-command" }, "/" + command.name));
}

function renderImagineOptions() {
  const imagine = view.world.commands.find((c) => c.name === "imagine");
  const box = $("#imagine-options");
  box.className = "options";
  box.replaceChildren(...(imagine ? imagine.options.filter((o) => o.name !== "prompt").map(optionInput) : []));
}

// -- the sidebar ---------------------------------------------------------------------------------
function renderSidebar() {
  const world = view.world;
  $("#guild-name").textContent = world.guild;
  $("#channels").replaceChildren(...world.channels.map((c) => el("li", {},
    el("button", { "data-channel": c.id, "data-testid": "channel-" + c.name }, (c.nsfw ? "🔞 #" : "# ") + c.name))));
  const member = $("#member");
  member.replaceChildren(...world.members.map((m) => el("option", { value: m.id }, m.name + (m.moderator ? " (moderator)" : ""))));
  member.value = view.me;
  for (const button of document.querySelectorAll("[data-channel]")) {
    button.classList.toggle("active", button.dataset.channel === view.channel);
    button.onclick = () => switchChannel(button.dataset.channel);
  }
  const me = world.members.find((m) => m.id === view.me);
  $("#mod-panel").hidden = !(me && me.moderator);
  const channel = world.channels.find((c) => c.id === view.channel);
  $("#channel-title").textContent = view.channel === "dm" ? "@ imagine-bot" : "#" + (channel ? channel.name : "");
}

function switchChannel(id) {
  view.channel = id;
  view.shown = "";
  view.count = -1;
  renderSidebar();
  poll();
}

async function loadWorld() {
  const res = await fetch("/api/world");
  view.world = await res.json();
  if (!view.me) view.me = view.world.members[0].id;
  if (!view.channel) view.channel = view.world.channels[0].id;
  renderSidebar();
  const picker = $("#command");
  const current = picker.value;
  picker.replaceChildren(...view.world.commands.map((c) => el("option", { value: c.name }, "/" + c.name)));
  if (current) picker.value = current;
  renderCommandForm();
  renderImagineOptions();
  if (!view.world.commands.length) setTimeout(loadWorld, 1000);  // the bot syncs them at start
}

// -- polling -------------------------------------------------------------------------------------
async function poll() {
  if (!view.world || view.busy) return;
  view.busy = true;
  try {
    const query = new URLSearchParams({ as: view.me, channel: view.channel });
    const res = await fetch("/api/state?" + query);
    if (!res.ok) return;
    const state = await res.json();
    const shown = JSON.stringify(state.messages);
    if (shown !== view.shown) { view.shown = shown; renderMessages(state.messages); }
    renderModal(state.modals);
    $("#status").textContent = state.ready ? "bot online" : "starting the bot…";
    $("#status").dataset.ready = state.ready;
    const list = $("#violations");
    list.replaceChildren(...(state.violations.length
      ? state.violations.map((v) => el("li", {}, `${v.rule}: ${v.detail}`))
      : [el("li", { class: "ok" }, "no rule broken so far")]));
  } catch (err) {
    $("#status").textContent = "playground stopped";
  } finally {
    view.busy = false;
  }
}

// -- wiring --------------------------------------------------------------------------------------
async function lookUp(blob, filename) {
  const data = await readFile(new File([blob], filename));
  await slash("provenance", { image: data });
}

function wire() {
  $("#member").addEventListener("change", (e) => { view.me = e.target.value; view.shown = ""; view.modalShown = ""; renderSidebar(); poll(); });
  $("#dms button").addEventListener("click", () => switchChannel("dm"));
  $("#composer").addEventListener("submit", async (event) => {
    event.preventDefault();
    const prompt = $("#prompt").value.trim();
    if (!prompt) return;
    const options = { prompt, ...(await collect($("#imagine-options"))) };
    if (await slash("imagine", options)) $("#prompt").value = "";
  });
  $("#more").addEventListener("click", () => { $("#imagine-options").hidden = !$("#imagine-options").hidden; });
  $("#command").addEventListener("change", renderCommandForm);
  $("#command-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    slash($("#command").value, await collect($("#command-form")));
  });
  for (const button of document.querySelectorAll("[data-run]")) {
    button.addEventListener("click", () => slash(button.dataset.run, {}));
  }
  $("#ban-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const word = $("#ban-word").value.trim();
    if (word && await slash("policy ban", { term: word })) $("#ban-word").value = "";
  });
  const drop = $("#provenance");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", async (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files.length) return lookUp(e.dataTransfer.files[0], e.dataTransfer.files[0].name);
    const url = e.dataTransfer.getData("text/uri-list") || e.dataTransfer.getData("text/plain");
    if (!url) return toast("drop an image from the chat or a file");
    const res = await fetch(url);
    if (!res.ok) return toast("that image is no longer available");
    lookUp(await res.blob(), url.split("/").pop());
  });
  $("#provenance-file").addEventListener("change", (e) => {
    if (e.target.files.length) lookUp(e.target.files[0], e.target.files[0].name);
  });
}

wire();
loadWorld().then(poll);
setInterval(poll, 700);
