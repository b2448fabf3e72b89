// The page: the create form, the clusters table and, for admins, the
// per-user summary, kept current by the gateway's server-sent events
// (no polling). Text only ever goes in as text (textContent), never markup.

import { admin, call, prefix, signIn } from "./api.js";
import { ClusterTable } from "./clusters.js";
import { setUpCreate } from "./create.js";
import { renderSummary } from "./summary.js";

const $ = (id) => document.getElementById(id);

const notice = $("notice");
function announce(message, error = false) {
  notice.textContent = message;
  notice.classList.toggle("is-error", error);
}

const table = new ClusterTable({
  table: $("clusters-table"),
  body: $("clusters-body"),
  empty: $("clusters-empty"),
  truncated: $("truncated"),
  announce,
});

$("admin-badge").hidden = !admin;

// Status changes, said once (the notice region is aria-live).
let statuses = null;
function sayChanges(clusters) {
  const now = new Map(clusters.map((c) => [c.name, c.status]));
  if (statuses) {
    const changed = clusters.filter((c) => statuses.has(c.name) ? statuses.get(c.name) !== c.status : true);
    if (changed.length === 1) {
      const c = changed[0];
      announce(`Cluster ${c.name.slice(0, 12)} is ${c.status.toLowerCase()}.`, c.status === "FAILED");
    } else if (changed.length > 1) {
      announce(`${changed.length} clusters changed.`);
    }
  }
  statuses = now;
}

const connection = $("connection");
function connected(up, text) {
  connection.textContent = text;
  connection.classList.toggle("down", !up);
}

function listen() {
  const events = new EventSource(`${prefix}/api/v1/events`, { withCredentials: true });
  events.addEventListener("open", () => connected(true, "Live: updates appear as they happen."));
  events.addEventListener("clusters", (event) => {
    const snapshot = JSON.parse(event.data);
    sayChanges(snapshot.clusters);
    table.update(snapshot);
    renderSummary($("summary-section"), $("summary-body"), snapshot.summary);
  });
  events.addEventListener("signed-out", () => {
    events.close();
    signIn();
  });
  events.addEventListener("error", async () => {
    if (events.readyState === EventSource.CLOSED) {
      // Refused (signed out, or too many streams): find out which.
      connected(false, "Disconnected.");
      try {
        await call("GET", "/api/v1/options");
        setTimeout(listen, 5000);
      } catch (e) {
        if (e.status !== 401) setTimeout(listen, 5000);
      }
    } else {
      connected(false, "Reconnecting…");
    }
  });
  // The sign-out form ends the stream first.
  $("sign-out").addEventListener("click", () => events.close(), { once: true });
}

setUpCreate({
  form: $("create-form"),
  fields: $("create-fields"),
  error: $("create-error"),
  button: $("create-button"),
  announce,
});
listen();
setInterval(() => table.tick(), 15000);
