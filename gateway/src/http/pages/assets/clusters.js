// The clusters table, updated in place from each snapshot: rows keyed by
// cluster name, so a form being filled in or a focused button survives an
// update. Actions call the existing API; the next snapshot shows the result.

import { call, clusterPath, prefix } from "./api.js";
import { age, bytes, cores, el, shortName } from "./format.js";

const COLUMNS = ["Name", "User", "Status", "Profile", "Workers", "Cores", "Memory", "Age", "Reason", "Actions"];

function cell(label, attributes = {}, ...children) {
  return el("td", { "data-label": label, ...attributes }, ...children);
}

export class ClusterTable {
  constructor({ table, body, empty, truncated, announce }) {
    Object.assign(this, { table, body, empty, truncated, announce });
    // name -> { tr, cells, actions, cluster }
    this.rows = new Map();
  }

  update(snapshot) {
    const { clusters, admin } = snapshot;
    this.table.classList.toggle("admin", admin);
    this.table.hidden = clusters.length === 0;
    this.empty.hidden = clusters.length !== 0;
    this.truncated.hidden = !snapshot.truncated;
    const seen = new Set();
    let previous = null;
    for (const cluster of clusters) {
      seen.add(cluster.name);
      let row = this.rows.get(cluster.name);
      if (!row) {
        row = this.create(cluster);
        this.rows.set(cluster.name, row);
      }
      this.fill(row, cluster);
      // Moved only when out of place (moving a row would blur its focus).
      const wanted = previous ? previous.nextSibling : this.body.firstChild;
      if (wanted !== row.tr) this.body.insertBefore(row.tr, wanted);
      previous = row.tr;
    }
    for (const [name, row] of this.rows) {
      if (!seen.has(name)) {
        row.tr.remove();
        this.rows.delete(name);
      }
    }
  }

  // Ages move on between snapshots.
  tick() {
    for (const row of this.rows.values()) {
      const cluster = row.cluster;
      row.cells.age.textContent = age(cluster.start_time, cluster.stop_time ?? Date.now());
    }
  }

  create(cluster) {
    const tr = el("tr", { "data-name": cluster.name });
    const cells = {};
    for (const label of COLUMNS) {
      const key = label.toLowerCase();
      const numeric = ["Workers", "Cores", "Memory"].includes(label);
      cells[key] = cell(label, { class: [numeric ? "num" : "", key === "user" ? "col-user" : ""].join(" ").trim() || null });
      tr.append(cells[key]);
    }
    cells.name.classList.add("name");
    cells.name.append(el("span", { title: cluster.name }, cluster.name));
    return { tr, cells, actions: this.actions(cluster.name), cluster: null };
  }

  fill(row, cluster) {
    const before = row.cluster;
    row.cluster = cluster;
    const { cells } = row;
    cells.user.textContent = cluster.user;
    cells.status.replaceChildren(el("span", { class: `status status-${cluster.status}` }, cluster.status));
    cells.profile.textContent = cluster.profile ?? "—";
    cells.workers.textContent = String(cluster.workers);
    cells.cores.textContent = cores(cluster.cores);
    cells.memory.textContent = bytes(cluster.memory);
    cells.age.textContent = age(cluster.start_time, cluster.stop_time ?? Date.now());
    cells.reason.textContent = cluster.reason ?? "";
    cells.reason.classList.toggle("reason", Boolean(cluster.reason));
    cells.reason.classList.toggle("empty-cell", !cluster.reason);
    const active = cluster.status === "PENDING" || cluster.status === "RUNNING";
    const running = cluster.status === "RUNNING";
    const { dashboard, manage, stop, workers } = row.actions;
    if (cluster.dashboard_route) {
      dashboard.href = `${prefix}${cluster.dashboard_route}`;
      dashboard.hidden = false;
    } else {
      dashboard.removeAttribute("href");
      dashboard.hidden = true;
    }
    manage.hidden = !running;
    stop.hidden = !active;
    if (!before || before.workers !== cluster.workers) {
      // The current size as the starting point, unless the user is typing.
      if (document.activeElement !== workers) workers.value = String(cluster.workers);
    }
    if (!cells.actions.firstChild) cells.actions.append(row.actions.box);
    cells.actions.classList.toggle("empty-cell", !active && !cluster.dashboard_route);
  }

  actions(name) {
    const short = shortName(name);
    const dashboard = el("a", { class: "button secondary", target: "_blank", rel: "noopener noreferrer" },
      "Dashboard", el("span", { class: "visually-hidden" }, ` of cluster ${short} (opens in a new tab)`));
    const workers = el("input", { type: "number", min: "0", step: "1", inputmode: "numeric", name: "count", required: true });
    const scale = el("form", { class: "scale", "aria-label": `Scale cluster ${short}` },
      el("label", {}, "Workers", workers), el("button", { type: "submit" }, "Scale"));
    const minimum = el("input", { type: "number", min: "0", step: "1", inputmode: "numeric", name: "minimum", value: "0" });
    const maximum = el("input", { type: "number", min: "0", step: "1", inputmode: "numeric", name: "maximum", value: "4" });
    const adapt = el("form", { class: "adapt", "aria-label": `Adaptive scaling of cluster ${short}` },
      el("label", {}, "Minimum", minimum), el("label", {}, "Maximum", maximum),
      el("button", { type: "submit" }, "Adapt"));
    const manage = el("details", {}, el("summary", {}, "Scale or adapt", el("span", { class: "visually-hidden" }, ` cluster ${short}`)), scale, adapt);
    const stop = el("button", { type: "button", class: "danger" },
      "Stop", el("span", { class: "visually-hidden" }, ` cluster ${short}`));

    scale.addEventListener("submit", (event) => {
      event.preventDefault();
      const count = Number(workers.value);
      if (!Number.isInteger(count) || count < 0) return this.announce("Workers: enter a whole number, 0 or more.", true);
      this.act(`Scaling cluster ${short} to ${count} workers.`, "POST", `${clusterPath(name)}/scale`, { count });
    });
    adapt.addEventListener("submit", (event) => {
      event.preventDefault();
      const lo = Number(minimum.value);
      const hi = Number(maximum.value);
      if (![lo, hi].every((n) => Number.isInteger(n) && n >= 0) || lo > hi) {
        return this.announce("Adapt: whole numbers, the minimum no more than the maximum.", true);
      }
      this.act(`Cluster ${short} adapts between ${lo} and ${hi} workers.`, "POST", `${clusterPath(name)}/adapt`,
        { minimum: lo, maximum: hi, active: true });
    });
    stop.addEventListener("click", () => {
      if (!window.confirm(`Stop cluster ${short}? Its workers and data go.`)) return;
      this.act(`Stopping cluster ${short}.`, "DELETE", clusterPath(name));
    });
    const box = el("div", { class: "actions" }, dashboard, stop, manage);
    return { box, dashboard, manage, stop, workers };
  }

  async act(done, method, path, body) {
    try {
      const answer = await call(method, path, body);
      // A limit may have clamped the request: the gateway says how.
      this.announce(answer?.msg ? `${done} ${answer.msg}` : done);
    } catch (e) {
      this.announce(e.message, true);
    }
  }
}
