// The admins' per-user summary of active clusters.

import { bytes, cores, el } from "./format.js";

export function renderSummary(section, body, summary) {
  section.hidden = !summary;
  if (!summary) return;
  const labels = ["User", "Clusters", "Pending", "Running", "Workers", "Cores", "Memory"];
  body.replaceChildren(...summary.map((u) => {
    const values = [u.user, u.clusters, u.pending, u.running, u.workers, cores(u.cores), bytes(u.memory)];
    return el("tr", { "data-user": u.user }, ...values.map((value, i) =>
      i === 0
        ? el("th", { scope: "row", "data-label": labels[i] }, value)
        : el("td", { "data-label": labels[i], class: "num" }, String(value))));
  }));
  if (summary.length === 0) {
    body.replaceChildren(el("tr", {}, el("td", { colspan: "7" }, "No active clusters.")));
  }
}
