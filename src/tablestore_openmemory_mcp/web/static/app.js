/* The memory browser: plain JavaScript on the REST API (/api/v1). No framework, no build step.
 * Every piece of data is put into the page with textContent (never as HTML), so memory text cannot inject markup.
 * Views are chosen by the URL hash: #/memories, #/memory/<id>, #/apps, #/dashboard, #/backup. */
"use strict";

(function () {
  const API = "/api/v1";
  const CSRF = { "X-Requested-With": "openmemory-web" };
  const PAGE_SIZES = [10, 20, 50, 100];
  const SEARCH_DELAY_MS = 300;
  const CHART_DAYS = 30;
  const COLORS = ["#2563eb", "#db2777", "#059669", "#d97706", "#7c3aed", "#0891b2", "#dc2626", "#4b5563"];

  const app = {
    session: null,
    user: null,
    lang: "en",
    apps: [],
    list: { q: "", weak: false, client: "", state: "", category: "", since: "", until: "", sort: "", page: 1, size: 20 },
    selected: new Set(),
    categories: new Set(),
    searchTimer: null,
    loadSeq: 0,
  };

  // --- text ------------------------------------------------------------------------------------------------
  function t(key, vars) {
    const table = window.I18N[app.lang] || window.I18N.en;
    let text = table[key] !== undefined ? table[key] : window.I18N.en[key] !== undefined ? window.I18N.en[key] : key;
    for (const [name, value] of Object.entries(vars || {})) text = text.split("{" + name + "}").join(String(value));
    return text;
  }

  function pickLanguage() {
    const saved = localStorage.getItem("openmemory.lang");
    if (saved && window.I18N[saved]) return saved;
    const wanted = (navigator.languages && navigator.languages[0]) || navigator.language || "en";
    return wanted.toLowerCase().startsWith("zh") ? "zh" : "en";
  }

  function applyStaticText() {
    document.documentElement.lang = app.lang === "zh" ? "zh-CN" : "en";
    document.title = t("title");
    for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
    document.getElementById("nav").setAttribute("aria-label", t("nav.label"));
    document.getElementById("lang").value = app.lang;
  }

  // The "To" date is inclusive on the page; the API's until is exclusive (as over MCP): ask for the next day.
  function dayAfter(day) {
    if (!/^\d{4}-\d{2}-\d{2}$/.test(day || "")) return day || "";
    const date = new Date(day + "T00:00:00Z");
    date.setUTCDate(date.getUTCDate() + 1);
    return date.toISOString().slice(0, 10);
  }

  function fmtDate(iso, seconds) {
    if (!iso) return "—";
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return iso;
    const timeStyle = seconds ? "medium" : "short";
    return date.toLocaleString(app.lang === "zh" ? "zh-CN" : "en", { dateStyle: "medium", timeStyle });
  }

  // --- DOM -------------------------------------------------------------------------------------------------
  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (value === true) node.setAttribute(key, "");
      else node.setAttribute(key, String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const SVG_NS = "http://www.w3.org/2000/svg";
  function s(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
    for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    return node;
  }

  let fieldSeq = 0;
  function field(label, control, hint) {
    const id = control.id || "f" + ++fieldSeq;
    control.id = id;
    return h("div", { class: "field" }, h("label", { for: id }, label), control, hint ? h("small", {}, hint) : null);
  }

  function options(select, pairs, value) {
    select.replaceChildren(...pairs.map(([v, label]) => h("option", { value: v }, label)));
    select.value = value;
    return select;
  }

  const main = () => document.getElementById("main");

  function show(title, ...content) {
    const heading = h("h1", { tabindex: "-1" }, title);
    main().replaceChildren(heading, ...content);
    return heading;
  }

  function say(message) {
    const status = document.getElementById("status");
    status.textContent = message;
    clearTimeout(say.timer);
    say.timer = setTimeout(() => (status.textContent = ""), 6000);
  }

  function alertError(error) {
    const box = document.getElementById("alert");
    if (!error) {
      box.hidden = true;
      box.textContent = "";
      return;
    }
    box.hidden = false;
    box.replaceChildren(
      h("span", {}, error.message || String(error)),
      h("button", { type: "button", class: "link", onclick: () => alertError(null) }, t("dismiss"))
    );
  }

  function stateBadge(state) {
    return h("span", { class: "badge state-" + state }, t("state." + state));
  }

  // --- API -------------------------------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function call(method, path, opts) {
    const { query, body, form, raw } = opts || {};
    const url = new URL(path, location.origin);
    for (const [key, value] of Object.entries(query || {})) {
      if (value !== "" && value !== null && value !== undefined) url.searchParams.set(key, value);
    }
    const headers = { ...CSRF };
    let payload;
    if (form) payload = form;
    else if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(body);
    }
    const response = await fetch(url, { method, headers, body: payload, credentials: "same-origin" });
    if (raw && response.ok) return response;
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (ignored) {
      data = null;
    }
    if (!response.ok) {
      if (response.status === 401 && app.session && app.session.auth_required && path.startsWith(API)) {
        app.session.authenticated = false;
        renderLogin(t("login.expired"));
      }
      const message = (data && (data.message || data.detail)) || text || response.statusText;
      throw new ApiError(response.status, t("error.http", { status: response.status, message }));
    }
    return data;
  }

  const withUser = (query) => ({ user_id: app.user, ...(query || {}) });

  async function guarded(work) {
    try {
      alertError(null);
      return await work();
    } catch (error) {
      if (error instanceof ApiError && error.status === 401 && app.session && app.session.auth_required) return;
      alertError(error);
      return undefined;
    }
  }

  // --- sign in and the user -------------------------------------------------------------------------------
  function setChrome(signedIn) {
    document.getElementById("nav").hidden = !signedIn;
    const who = document.getElementById("who");
    who.hidden = !signedIn;
    who.textContent = signedIn ? t("signedInAs", { user: app.user }) : "";
    document.getElementById("logout").hidden = !(app.session && app.session.auth_required && app.session.authenticated);
    document.getElementById("switch-user").hidden = !(signedIn && !(app.session && app.session.user));
  }

  function renderLogin(problem) {
    setChrome(false);
    const token = h("input", { type: "password", name: "token", autocomplete: "current-password", required: true });
    const error = h("p", { class: "error", role: "alert" }, problem || "");
    const form = h(
      "form",
      { class: "card narrow", id: "login-form" },
      h("p", {}, t("login.intro")),
      field(t("login.token"), token),
      error,
      h("button", { type: "submit", class: "primary" }, t("login.submit"))
    );
    if (app.session && app.session.oauth_login) {
      // OAuth: the provider's sign-in (authorization code + PKCE on the server), above the token form
      form.prepend(h("p", {}, h("a", { class: "button primary", id: "oauth-login", href: app.session.oauth_login }, t("login.oauth"))));
    }
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      error.textContent = "";
      try {
        const result = await call("POST", "/auth/login", { body: { token: token.value } });
        app.session.authenticated = true;
        app.session.user = result.user;
        token.value = "";
        start();
      } catch (failure) {
        error.textContent = failure.status === 401 ? t("login.bad") : failure.message;
        token.focus();
      }
    });
    show(t("login.title"), form);
    token.focus();
  }

  function renderUserChoice() {
    setChrome(false);
    const input = h("input", {
      type: "text",
      name: "user",
      required: true,
      autocomplete: "username",
      maxlength: "128",
      value: localStorage.getItem("openmemory.user") || "",
      placeholder: "alice",
    });
    const form = h(
      "form",
      { class: "card narrow", id: "user-form" },
      h("p", {}, app.session.auth_required ? t("user.introToken") : t("user.introOpen")),
      field(t("user.label"), input),
      h("button", { type: "submit", class: "primary" }, t("user.submit"))
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const user = input.value.trim();
      if (!user) return;
      localStorage.setItem("openmemory.user", user);
      app.user = user;
      resetUserState();
      start();
    });
    show(t("user.title"), form);
    input.focus();
  }

  function resetUserState() {
    app.selected.clear();
    app.categories.clear();
    app.list = { q: "", weak: false, client: "", state: "", category: "", since: "", until: "", sort: "", page: 1,
      size: app.list.size };
  }

  async function boot() {
    app.lang = pickLanguage();
    applyStaticText();
    document.getElementById("lang").addEventListener("change", (event) => {
      app.lang = event.target.value;
      localStorage.setItem("openmemory.lang", app.lang);
      applyStaticText();
      if (app.user) setChrome(true);
      route();
    });
    document.getElementById("logout").addEventListener("click", async () => {
      await guarded(() => call("POST", "/auth/logout"));
      app.session.authenticated = false;
      app.session.user = null;
      app.user = null;
      renderLogin();
    });
    document.getElementById("switch-user").addEventListener("click", () => {
      app.user = null;
      renderUserChoice();
    });
    window.addEventListener("hashchange", route);
    try {
      app.session = await call("GET", "/auth/session");
    } catch (error) {
      alertError(error);
      return;
    }
    start();
  }

  function start() {
    if (app.session.auth_required && !app.session.authenticated) return renderLogin();
    if (app.session.user) app.user = app.session.user;
    if (!app.user) return renderUserChoice();
    setChrome(true);
    if (!location.hash || location.hash === "#" || location.hash === "#/") location.hash = "#/memories";
    else route();
  }

  function route() {
    if (!app.user || (app.session.auth_required && !app.session.authenticated)) return;
    const hash = location.hash.replace(/^#\/?/, "");
    const [view, arg] = hash.split("/");
    for (const link of document.querySelectorAll("#nav a")) {
      const current = link.dataset.view === view || (view === "memory" && link.dataset.view === "memories");
      if (current) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    alertError(null);
    const views = { memories: renderMemories, memory: () => renderMemory(decodeURIComponent(arg || "")),
      apps: renderApps, dashboard: renderDashboard, backup: renderBackup };
    (views[view] || renderMemories)();
  }

  // --- memories --------------------------------------------------------------------------------------------
  async function loadApps() {
    const result = await call("GET", API + "/apps", { query: withUser() });
    app.apps = result.items;
    return app.apps;
  }

  function renderMemories() {
    const list = app.list;
    const heading = show(t("memories.title"));
    const search = h("input", { type: "search", id: "search", value: list.q, placeholder: t("memories.searchHint") });
    const weak = h("input", { type: "checkbox", id: "show-weak" }); // searches show only matches unless ticked
    weak.checked = list.weak;
    const client = h("select", { id: "filter-client" });
    const stateSel = options(
      h("select", { id: "filter-state" }),
      [["", t("state.visible")], ...["active", "paused", "archived", "deleted"].map((st) => [st, t("state." + st)]),
        ["all", t("state.all")]],
      list.state
    );
    const category = h("input", { type: "text", id: "filter-category", value: list.category, list: "category-list" });
    const categoryList = h("datalist", { id: "category-list" });
    const since = h("input", { type: "date", id: "filter-since", value: list.since });
    const until = h("input", { type: "date", id: "filter-until", value: list.until });
    const sort = options(
      h("select", { id: "sort" }),
      [["", t("sort.default")], ["-created_at", t("sort.newest")], ["created_at", t("sort.oldest")],
        ["-updated_at", t("sort.updated")], ["memory", t("sort.az")], ["-memory", t("sort.za")],
        ["score", t("sort.score")]],
      list.sort
    );
    const size = options(h("select", { id: "page-size" }), PAGE_SIZES.map((n) => [String(n), String(n)]), String(list.size));

    const filters = h(
      "form",
      { class: "filters", role: "search", onsubmit: (e) => e.preventDefault() },
      field(t("memories.search"), search),
      field(t("memories.showWeak"), weak),
      field(t("filter.client"), client),
      field(t("filter.state"), stateSel),
      field(t("filter.category"), category),
      categoryList,
      field(t("filter.since"), since),
      field(t("filter.until"), until),
      field(t("sort.label"), sort),
      field(t("pageSize"), size),
      h("button", { type: "button", class: "link", id: "clear-filters", onclick: () => {
        resetUserState();
        renderMemories();
      } }, t("filter.clear"))
    );
    const bulkCount = h("span", { id: "selected-count", class: "muted" });
    const bulkButtons = [
      ["paused", t("action.pause")],
      ["archived", t("action.archive")],
      ["active", t("action.resume")],
      ["deleted", t("action.delete")],
    ].map(([st, label]) =>
      h("button", { type: "button", class: st === "deleted" ? "danger" : "", "data-bulk": st,
        onclick: () => bulkChange(st) }, label)
    );
    const bulk = h("div", { class: "bulk", role: "group", "aria-label": t("bulk.label") }, bulkCount, ...bulkButtons);
    const table = h("div", { id: "memory-list", class: "list", "aria-live": "polite", "aria-busy": "true" });
    const pager = h("nav", { class: "pager", "aria-label": t("pager.label") });

    const create = renderCreate();
    main().append(create, filters, bulk, table, pager);
    heading.focus();

    const reload = (resetPage) => {
      if (resetPage) list.page = 1;
      loadMemories(table, pager, bulkCount, bulkButtons, categoryList);
    };
    search.addEventListener("input", () => {
      clearTimeout(app.searchTimer);
      app.searchTimer = setTimeout(() => {
        list.q = search.value.trim();
        reload(true);
      }, SEARCH_DELAY_MS);
    });
    weak.addEventListener("change", () => {
      list.weak = weak.checked;
      reload(true);
    });
    const bind = (control, key) =>
      control.addEventListener("change", () => {
        list[key] = control.value.trim();
        reload(true);
      });
    bind(client, "client");
    bind(stateSel, "state");
    bind(category, "category");
    bind(since, "since");
    bind(until, "until");
    bind(sort, "sort");
    size.addEventListener("change", () => {
      list.size = Number(size.value);
      reload(true);
    });
    renderMemories.reload = () => reload(false);

    guarded(async () => {
      const apps = await loadApps();
      options(client, [["", t("filter.allClients")], ...apps.map((a) => [a.name, a.name])], list.client);
    });
    reload(false);
  }

  function renderCreate() {
    const text = h("textarea", { id: "new-text", rows: "2", required: true, maxlength: "20000" });
    const client = h("input", { type: "text", id: "new-client", value: "web", required: true, maxlength: "128" });
    const infer = h("input", { type: "checkbox", id: "new-infer" });
    const form = h(
      "form",
      { class: "create", id: "create-form" },
      field(t("create.text"), text),
      field(t("create.client"), client),
      h("div", { class: "check" }, infer, h("label", { for: "new-infer" }, t("create.infer"))),
      h("button", { type: "submit", class: "primary" }, t("create.submit"))
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (!text.value.trim()) return;
      guarded(async () => {
        const result = await call("POST", API + "/memories", {
          body: { user_id: app.user, client: client.value.trim() || "web", text: text.value, infer: infer.checked },
        });
        text.value = "";
        say(t("create.done", { count: (result.events || []).length }));
        renderMemories.reload();
      });
    });
    return h("details", { class: "card create-box" }, h("summary", {}, t("create.title")), form);
  }

  async function loadMemories(table, pager, bulkCount, bulkButtons, categoryList) {
    const list = app.list;
    const seq = ++app.loadSeq;
    const asked = { q: list.q, weak: list.weak ? "1" : "", client: list.client, state: list.state, sort: list.sort,
      since: list.since, until: list.until };
    table.setAttribute("aria-busy", "true");
    const page = await guarded(() =>
      call("GET", API + "/memories", {
        query: withUser({ q: list.q, min_score: list.q && list.weak ? "0" : "", client: list.client,
          state: list.state, category: list.category,
          since: list.since, until: dayAfter(list.until), sort: list.sort || (list.q ? "score" : "-created_at"),
          page: list.page, size: list.size }),
      })
    );
    if (seq !== app.loadSeq || !table.isConnected) return; // a newer search answered, or another view is shown
    table.setAttribute("aria-busy", "false");
    if (!page) return;
    for (const [key, value] of Object.entries(asked)) table.dataset[key] = value; // what the list shows
    const ids = new Set(page.items.map((m) => m.id));
    for (const id of [...app.selected]) if (!ids.has(id)) app.selected.delete(id);
    for (const item of page.items) for (const c of item.categories) app.categories.add(c);
    categoryList.replaceChildren(...[...app.categories].sort().map((c) => h("option", { value: c })));

    const updateBulk = () => {
      bulkCount.textContent = t("bulk.selected", { count: app.selected.size });
      for (const button of bulkButtons) button.disabled = app.selected.size === 0;
    };
    if (page.items.length === 0) {
      const none = !list.q ? t("memories.none") : list.weak ? t("memories.noHits") : t("memories.noMatches");
      table.replaceChildren(h("p", { class: "empty" }, none));
    } else {
      const all = h("input", { type: "checkbox", "aria-label": t("bulk.all") });
      all.checked = page.items.every((m) => app.selected.has(m.id));
      const rows = page.items.map((memory) => {
        const box = h("input", { type: "checkbox", "aria-label": t("bulk.one", { text: memory.memory.slice(0, 60) }) });
        box.checked = app.selected.has(memory.id);
        box.addEventListener("change", () => {
          if (box.checked) app.selected.add(memory.id);
          else app.selected.delete(memory.id);
          all.checked = page.items.every((m) => app.selected.has(m.id));
          updateBulk();
        });
        return h(
          "tr",
          { "data-id": memory.id, "data-state": memory.state },
          h("td", { class: "pick" }, box),
          h("td", { class: "text", "data-label": t("col.memory") },
            h("a", { href: "#/memory/" + encodeURIComponent(memory.id) }, memory.memory)),
          h("td", { "data-label": t("col.client") }, memory.client || "—"),
          h("td", { "data-label": t("col.state") }, stateBadge(memory.state)),
          h("td", { "data-label": t("col.categories") },
            memory.categories.length ? memory.categories.map((c) => h("span", { class: "chip" }, c)) : "—"),
          h("td", { "data-label": t("col.date") },
            h("time", { datetime: memory.event_time || memory.created_at }, fmtDate(memory.event_time || memory.created_at)))
        );
      });
      all.addEventListener("change", () => {
        for (const memory of page.items) {
          if (all.checked) app.selected.add(memory.id);
          else app.selected.delete(memory.id);
        }
        for (const box of table.querySelectorAll("tbody input[type=checkbox]")) box.checked = all.checked;
        updateBulk();
      });
      table.replaceChildren(
        h(
          "table",
          { class: "memories" },
          h("caption", { class: "sr-only" }, t("memories.title")),
          h("thead", {}, h("tr", {},
            h("th", { scope: "col", class: "pick" }, all),
            h("th", { scope: "col" }, t("col.memory")),
            h("th", { scope: "col" }, t("col.client")),
            h("th", { scope: "col" }, t("col.state")),
            h("th", { scope: "col" }, t("col.categories")),
            h("th", { scope: "col" }, t("col.date"))
          )),
          h("tbody", {}, rows)
        )
      );
    }
    updateBulk();
    const pages = Math.max(1, Math.ceil(page.total / page.size));
    const go = (n) => {
      list.page = n;
      renderMemories.reload();
    };
    pager.replaceChildren(
      h("button", { type: "button", disabled: page.page <= 1, onclick: () => go(page.page - 1) }, t("pager.prev")),
      h("span", { id: "page-info" }, t("pager.info", { page: page.page, pages, total: page.total })),
      h("button", { type: "button", disabled: page.page >= pages, onclick: () => go(page.page + 1) }, t("pager.next"))
    );
  }

  async function bulkChange(target) {
    const ids = [...app.selected];
    if (!ids.length) return;
    if (target === "deleted" && !confirm(t("confirm.delete", { count: ids.length }))) return;
    await guarded(async () => {
      if (target === "deleted") {
        await call("DELETE", API + "/memories", { body: { user_id: app.user, memory_ids: ids } });
      } else {
        await call("POST", API + "/memories/state", { body: { user_id: app.user, memory_ids: ids, state: target } });
      }
      app.selected.clear();
      say(t("bulk.done", { count: ids.length, state: t("state." + target) }));
      renderMemories.reload();
    });
  }

  // --- one memory ------------------------------------------------------------------------------------------
  async function renderMemory(id) {
    const heading = show(t("memory.title"), h("p", { class: "muted" }, t("loading")));
    heading.focus();
    const memory = await guarded(() => call("GET", API + "/memories/" + encodeURIComponent(id), { query: withUser() }));
    if (!heading.isConnected) return; // the person moved on to another view meanwhile
    if (!memory) {
      main().append(h("p", {}, h("a", { href: "#/memories" }, t("memory.back"))));
      return;
    }
    const text = h("textarea", { id: "memory-text", rows: "4", maxlength: "20000" });
    text.value = memory.memory;
    const save = h("button", { type: "submit", class: "primary" }, t("memory.save"));
    const editForm = h("form", { class: "card", id: "edit-form" }, field(t("memory.text"), text), save);
    editForm.addEventListener("submit", (event) => {
      event.preventDefault();
      guarded(async () => {
        await call("PUT", API + "/memories/" + encodeURIComponent(id), { body: { user_id: app.user, text: text.value } });
        say(t("memory.saved"));
        renderMemory(id);
      });
    });
    const stateButtons = [
      ["paused", t("action.pause")],
      ["archived", t("action.archive")],
      ["active", t("action.resume")],
      ["deleted", t("action.delete")],
    ].map(([target, label]) =>
      h("button", {
        type: "button",
        class: target === "deleted" ? "danger" : "",
        disabled: memory.state === target,
        onclick: () => changeOne(id, target),
      }, label)
    );
    const facts = h(
      "dl",
      { class: "facts" },
      h("dt", {}, t("col.state")), h("dd", { id: "memory-state" }, stateBadge(memory.state)),
      h("dt", {}, t("col.client")), h("dd", {}, memory.client || "—"),
      h("dt", {}, t("col.categories")),
      h("dd", {}, memory.categories.length ? memory.categories.map((c) => h("span", { class: "chip" }, c)) : "—"),
      ...(memory.event_time ? [h("dt", {}, t("col.happened")), h("dd", {}, fmtDate(memory.event_time))] : []),
      ...(memory.metadata ? [h("dt", {}, t("col.tags")), h("dd", {},
        Object.entries(memory.metadata).map(([k, v]) => h("span", { class: "chip" }, k + ": " + String(v))))] : []),
      h("dt", {}, t("col.created")), h("dd", {}, fmtDate(memory.created_at)),
      h("dt", {}, t("col.updated")), h("dd", {}, fmtDate(memory.updated_at)),
      h("dt", {}, "ID"), h("dd", { class: "mono" }, memory.id)
    );
    main().replaceChildren(
      heading,
      h("p", {}, h("a", { href: "#/memories" }, "← " + t("memory.back"))),
      editForm,
      h("div", { class: "actions", role: "group", "aria-label": t("memory.stateActions") }, stateButtons),
      facts,
      h("h2", {}, t("memory.history")),
      historyTable(memory.history),
      h("h2", {}, t("memory.access")),
      accessTable(memory.access_log)
    );
  }

  async function changeOne(id, target) {
    if (target === "deleted" && !confirm(t("confirm.delete", { count: 1 }))) return;
    await guarded(async () => {
      if (target === "deleted") {
        await call("DELETE", API + "/memories", { body: { user_id: app.user, memory_ids: [id] } });
      } else {
        await call("POST", API + "/memories/state", { body: { user_id: app.user, memory_ids: [id], state: target } });
      }
      say(t("bulk.done", { count: 1, state: t("state." + target) }));
      renderMemory(id);
    });
  }

  function change(event) {
    if (event.old_state || event.new_state) {
      if (event.old_state !== event.new_state) {
        return h("span", {}, stateBadge(event.old_state || "active"), " → ", stateBadge(event.new_state || "active"));
      }
    }
    const parts = [];
    if (event.old_memory) parts.push(h("del", {}, event.old_memory));
    if (event.old_memory && event.new_memory) parts.push(" → ");
    if (event.new_memory) parts.push(h("ins", {}, event.new_memory));
    return h("span", {}, parts.length ? parts : "—");
  }

  function historyTable(history) {
    if (!history.length) return h("p", { class: "empty" }, t("memory.noHistory"));
    return h(
      "table",
      { class: "history", id: "history" },
      h("thead", {}, h("tr", {}, ...["col.when", "col.event", "col.change", "col.source", "col.client", "col.reason"]
        .map((key) => h("th", { scope: "col" }, t(key))))),
      h("tbody", {}, history.map((event) => h(
        "tr",
        {},
        h("td", { "data-label": t("col.when") }, fmtDate(event.at, true)),
        h("td", { "data-label": t("col.event") }, h("span", { class: "event" }, event.event)),
        h("td", { "data-label": t("col.change"), class: "text" }, change(event)),
        h("td", { "data-label": t("col.source") }, event.source),
        h("td", { "data-label": t("col.client") }, event.client || "—"),
        h("td", { "data-label": t("col.reason") },
          event.reason || "—", event.model ? h("small", { class: "muted" }, " (" + event.model + ")") : null)
      )))
    );
  }

  function accessTable(entries) {
    if (!entries.length) return h("p", { class: "empty" }, t("memory.noAccess"));
    return h(
      "table",
      { class: "access", id: "access-log" },
      h("thead", {}, h("tr", {}, ...["col.when", "col.client", "col.query"].map((k) => h("th", { scope: "col" }, t(k))))),
      h("tbody", {}, entries.map((entry) => h(
        "tr",
        {},
        h("td", { "data-label": t("col.when") }, fmtDate(entry.at, true)),
        h("td", { "data-label": t("col.client") }, entry.client || "—"),
        h("td", { "data-label": t("col.query"), class: "text" }, entry.query || "—")
      )))
    );
  }

  // --- apps ------------------------------------------------------------------------------------------------
  async function renderApps() {
    const heading = show(t("apps.title"));
    heading.focus();
    const apps = await guarded(loadApps);
    if (!apps || !heading.isConnected) return;
    if (!apps.length) {
      main().append(h("p", { class: "empty" }, t("apps.none")));
      return;
    }
    const rows = apps.map((item) => {
      const toggle = h("input", { type: "checkbox", role: "switch", id: "pause-" + item.name,
        "aria-label": t("apps.pauseApp", { app: item.name }) });
      toggle.checked = item.paused;
      toggle.addEventListener("change", () =>
        guarded(async () => {
          await call("PUT", API + "/apps/" + encodeURIComponent(item.name), {
            query: withUser(),
            body: { paused: toggle.checked },
          });
          say(t(toggle.checked ? "apps.pausedNow" : "apps.resumedNow", { app: item.name }));
          renderApps();
        }).then(() => undefined)
      );
      const counts = Object.entries(item.by_state || {})
        .filter(([st, n]) => n > 0 && st !== "deleted") // the count beside them is live memories: they add up to it
        .map(([st, n]) => h("span", { class: "chip state-" + st }, t("state." + st) + " " + n));
      const deleted = (item.by_state || {}).deleted || 0;
      if (deleted) counts.push(h("span", { class: "muted" }, t("apps.deletedToo", { n: deleted })));
      return h(
        "tr",
        { "data-app": item.name },
        h("th", { scope: "row" }, item.name),
        h("td", { "data-label": t("apps.memories") }, String(item.memories), " ", counts),
        h("td", { "data-label": t("apps.lastAccess") }, fmtDate(item.last_access)),
        h("td", { "data-label": t("apps.paused") }, h("label", { class: "switch" }, toggle,
          stateBadge(item.paused ? "paused" : "active")))
      );
    });
    main().append(
      h("p", { class: "muted" }, t("apps.intro")),
      h("table", { class: "apps" },
        h("thead", {}, h("tr", {}, ...["apps.name", "apps.memories", "apps.lastAccess", "apps.paused"]
          .map((k) => h("th", { scope: "col" }, t(k))))),
        h("tbody", {}, rows))
    );
  }

  // --- dashboard -------------------------------------------------------------------------------------------
  async function renderDashboard() {
    const heading = show(t("dashboard.title"));
    heading.focus();
    const stats = await guarded(() => call("GET", API + "/stats", { query: withUser() }));
    if (!stats || !heading.isConnected) return;
    const byState = stats.by_state || {};
    const cards = [
      ["total", stats.total],
      ["active", byState.active || 0],
      ["paused", byState.paused || 0],
      ["archived", byState.archived || 0],
      ["deleted", byState.deleted || 0],
      ["apps", Object.keys(stats.by_app || {}).length],
    ].map(([key, n]) => h("div", { class: "stat", "data-stat": key },
      h("span", { class: "value" }, String(n)), h("span", { class: "label" }, t("stat." + key))));
    main().append(
      h("section", { class: "stats", "aria-label": t("dashboard.totals") }, cards),
      h("h2", {}, t("dashboard.chart")),
      chart(stats.added_per_day || []),
      h("h2", {}, t("dashboard.connect")),
      connectSnippets(await call("GET", "/auth/connect").catch(() => ({})))
    );
  }

  function chart(perDay) {
    const days = perDay.slice(-CHART_DAYS);
    if (!days.length) return h("p", { class: "empty" }, t("dashboard.noData"));
    const apps = [...new Set(days.flatMap((d) => Object.keys(d.by_app)))].sort();
    const color = (name) => COLORS[apps.indexOf(name) % COLORS.length];
    const max = Math.max(1, ...days.map((d) => Object.values(d.by_app).reduce((a, b) => a + b, 0)));
    const width = 640, height = 200, left = 32, bottom = 24, top = 10;
    const slot = (width - left) / Math.max(days.length, 1);
    const barWidth = Math.max(4, Math.min(40, slot * 0.7));
    const scale = (height - bottom - top) / max;
    const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-labelledby": "chart-title", class: "chart" },
      s("title", { id: "chart-title" }, t("dashboard.chartLabel", { days: days.length })));
    svg.append(s("line", { x1: left, y1: height - bottom, x2: width, y2: height - bottom, stroke: "#9ca3af" }));
    svg.append(s("text", { x: left - 6, y: top + 8, "text-anchor": "end", class: "axis" }, String(max)));
    svg.append(s("text", { x: left - 6, y: height - bottom, "text-anchor": "end", class: "axis" }, "0"));
    days.forEach((day, i) => {
      let y = height - bottom;
      const x = left + i * slot + (slot - barWidth) / 2;
      for (const name of apps) {
        const n = day.by_app[name] || 0;
        if (!n) continue;
        const barHeight = n * scale;
        y -= barHeight;
        svg.append(s("rect", { x, y, width: barWidth, height: barHeight, fill: color(name) },
          s("title", {}, `${day.day} · ${name}: ${n}`)));
      }
      if (i === 0 || i === days.length - 1 || days.length <= 7) {
        svg.append(s("text", { x: x + barWidth / 2, y: height - 6, "text-anchor": "middle", class: "axis" }, day.day.slice(5)));
      }
    });
    const legend = h("ul", { class: "legend" }, apps.map((name) =>
      h("li", {}, h("span", { class: "swatch", "data-color": color(name) }), name)));
    for (const swatch of legend.querySelectorAll(".swatch")) swatch.style.background = swatch.dataset.color;
    return h("figure", { class: "card chart-box" }, svg, legend);
  }

  function connectSnippets(server) {
    const origin = location.origin;
    const user = app.user;
    const auth = app.session.auth_required;
    const headers = auth ? { headers: { Authorization: "Bearer <" + t("connect.yourToken") + ">" } } : {};
    // the server's own store settings, so a stdio client writes where this page reads (and shares as it does)
    const serverEnv = server.stdio_env || {};
    const stdio = (client) => JSON.stringify({
      mcpServers: { memory: {
        command: "uvx",
        args: ["--from", "/path/to/tablestore-openmemory-mcp", "tablestore-openmemory-mcp", "--transport=stdio"],
        env: { MCP_STDIO_CLIENT_NAME: client, MCP_STDIO_USER_ID: user, ...serverEnv },
      } },
    }, null, 2);
    const http = (client) => JSON.stringify({
      mcpServers: { memory: { type: "streamableHttp", url: `${origin}/mcp/${client}/http/${encodeURIComponent(user)}`, ...headers } },
    }, null, 2);
    const tabs = [
      ["cline", "Cline", t("connect.cline"), http("cline"), stdio("cline")],
      ["claude", "Claude Desktop", t("connect.claude"), stdio("claude"), null],
      ["cursor", "Cursor", t("connect.cursor"), http("cursor"), stdio("cursor")],
      ["cherrystudio", "CherryStudio", t("connect.cherry"), `${origin}/mcp/cherrystudio/sse/${encodeURIComponent(user)}`, null],
      ["http", "Streamable HTTP", t("connect.http"), http("mcp-client"), null],
    ];
    const panels = h("div", { class: "panels" });
    const list = h("div", { class: "tabs", role: "tablist", "aria-label": t("dashboard.connect") });
    const select = (index, focus) => {
      [...list.children].forEach((tab, i) => {
        tab.setAttribute("aria-selected", String(i === index));
        tab.tabIndex = i === index ? 0 : -1;
        panels.children[i].hidden = i !== index;
      });
      if (focus) list.children[index].focus();
    };
    tabs.forEach(([key, name, hint, primary, alternative], index) => {
      list.append(h("button", { type: "button", role: "tab", id: "tab-" + key, "aria-controls": "panel-" + key,
        onclick: () => select(index, false) }, name));
      panels.append(h("div", { role: "tabpanel", id: "panel-" + key, "aria-labelledby": "tab-" + key },
        h("p", {}, hint),
        snippet(key, primary),
        alternative ? h("p", {}, t("connect.orStdio")) : null,
        alternative ? snippet(key + "-stdio", alternative) : null,
        auth && key === "cherrystudio" ? h("p", { class: "muted" }, t("connect.cherryToken")) : null));
    });
    list.addEventListener("keydown", (event) => {
      const current = [...list.children].findIndex((tab) => tab.getAttribute("aria-selected") === "true");
      const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
      if (step) {
        event.preventDefault();
        select((current + step + tabs.length) % tabs.length, true);
      }
    });
    select(0, false);
    const sharing = h("p", { class: "muted", id: "sharing" }, t(server.shared ? "connect.shared" : "connect.perClient"));
    return h("section", { class: "card connect" }, sharing, list, panels);
  }

  function snippet(key, text) {
    const pre = h("pre", { id: "snippet-" + key, tabindex: "0" }, h("code", {}, text));
    const copy = h("button", { type: "button", class: "copy", onclick: async () => {
      try {
        await navigator.clipboard.writeText(text);
        say(t("connect.copied"));
      } catch (ignored) {
        const range = document.createRange();
        range.selectNodeContents(pre);
        const selection = getSelection();
        selection.removeAllRanges();
        selection.addRange(range);
        say(t("connect.selectToCopy"));
      }
    } }, t("connect.copy"));
    return h("div", { class: "snippet" }, pre, copy);
  }

  // --- backup ----------------------------------------------------------------------------------------------
  function renderBackup() {
    const exportButton = h("button", { type: "button", class: "primary", id: "export" }, t("backup.export"));
    const exportStatus = h("p", { class: "muted", id: "export-status" });
    exportButton.addEventListener("click", () =>
      guarded(async () => {
        exportButton.disabled = true;
        try {
          const response = await call("POST", API + "/backup/export", { body: { user_id: app.user }, raw: true });
          const blob = await response.blob();
          const disposition = response.headers.get("Content-Disposition") || "";
          const match = /filename="?([^";]+)"?/.exec(disposition);
          const name = match ? match[1] : `openmemory-${app.user}.zip`;
          const link = h("a", { href: URL.createObjectURL(blob), download: name });
          document.body.append(link);
          link.click();
          link.remove();
          setTimeout(() => URL.revokeObjectURL(link.href), 60000);
          exportStatus.textContent = t("backup.exported", { name, size: Math.ceil(blob.size / 1024) });
        } finally {
          exportButton.disabled = false;
        }
      })
    );
    const file = h("input", { type: "file", id: "import-file", accept: ".zip,application/zip", required: true });
    const mode = options(h("select", { id: "import-mode" }),
      [["skip", t("backup.modeSkip")], ["overwrite", t("backup.modeOverwrite")]], "skip");
    const result = h("table", { id: "import-result", class: "result", hidden: true });
    const importForm = h("form", { class: "card", id: "import-form" },
      h("h2", {}, t("backup.importTitle")),
      h("p", { class: "muted" }, t("backup.importIntro")),
      field(t("backup.file"), file),
      field(t("backup.mode"), mode),
      h("button", { type: "submit", class: "primary" }, t("backup.import")),
      result);
    importForm.addEventListener("submit", (event) => {
      event.preventDefault();
      if (!file.files.length) return;
      guarded(async () => {
        const form = new FormData();
        form.append("file", file.files[0]);
        form.append("user_id", app.user);
        form.append("mode", mode.value);
        const summary = await call("POST", API + "/backup/import", { form });
        result.hidden = false;
        result.replaceChildren(...importRows(summary));
        say(t("backup.imported"));
      });
    });
    const heading = show(t("backup.title"),
      h("section", { class: "card" }, h("h2", {}, t("backup.exportTitle")), h("p", { class: "muted" },
        t("backup.exportIntro")), exportButton, exportStatus),
      importForm);
    heading.focus();
  }

  const IMPORT_COUNTS = [
    ["read", "import.read"], ["imported", "import.imported"], ["existing", "import.existing"],
    ["overwritten", "import.overwritten"], ["unchanged", "import.unchanged"], ["duplicates", "import.duplicates"],
    ["new_ids", "import.newIds"], ["reembedded", "import.reembedded"], ["history_events", "import.historyEvents"],
  ];

  function importRows(summary) {
    const row = (key, label, value) => h("tr", { "data-key": key }, h("th", { scope: "row" }, label), h("td", {}, String(value)));
    const rows = IMPORT_COUNTS.filter(([key]) => key in summary).map(([key, label]) => row(key, t(label), summary[key]));
    for (const [reason, n] of Object.entries(summary.skipped || {})) rows.push(row("skipped", t("import.skipped", { reason }), n));
    return rows;
  }

  document.addEventListener("DOMContentLoaded", boot);
})();
