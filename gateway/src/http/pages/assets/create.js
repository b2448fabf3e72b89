// The "New cluster" form, built from the gateway's option specs
// (`GET /api/v1/options`): select, int, float, bool, string and mapping.

import { call } from "./api.js";
import { el } from "./format.js";

function input(field, id) {
  const spec = field.spec;
  const value = field.default;
  switch (spec.type) {
    case "select":
      return el("select", { id, name: field.field },
        ...spec.options.map((option) => el("option", { value: option, selected: option === value }, option)));
    case "int":
    case "float":
      return el("input", {
        id, name: field.field, type: "number", inputmode: spec.type === "int" ? "numeric" : "decimal",
        step: spec.type === "int" ? "1" : "any", min: spec.min ?? null, max: spec.max ?? null,
        value: value ?? "",
      });
    case "bool":
      return el("input", { id, name: field.field, type: "checkbox", checked: Boolean(value) });
    case "mapping":
      return el("textarea", { id, name: field.field, rows: "3", spellcheck: "false", "aria-describedby": `${id}-hint` },
        Object.entries(value ?? {}).map(([k, v]) => `${k}=${v}`).join("\n"));
    default:
      return el("input", { id, name: field.field, type: "text", value: value ?? "" });
  }
}

// The value of one field, or an Error naming it.
function read(field, node) {
  const label = field.label || field.field;
  switch (field.spec.type) {
    case "bool":
      return node.checked;
    case "int": {
      const n = Number(node.value);
      if (node.value.trim() === "" || !Number.isInteger(n)) throw new Error(`${label}: enter a whole number.`);
      return n;
    }
    case "float": {
      const n = Number(node.value);
      if (node.value.trim() === "" || !Number.isFinite(n)) throw new Error(`${label}: enter a number.`);
      return n;
    }
    case "mapping": {
      const mapping = {};
      for (const [i, line] of node.value.split("\n").entries()) {
        if (!line.trim()) continue;
        const at = line.indexOf("=");
        if (at < 1) throw new Error(`${label}, line ${i + 1}: write KEY=value.`);
        mapping[line.slice(0, at).trim()] = line.slice(at + 1);
      }
      return mapping;
    }
    default:
      return node.value;
  }
}

export async function setUpCreate({ form, fields, error, button, announce }) {
  let specs = [];
  try {
    specs = (await call("GET", "/api/v1/options")).cluster_options;
  } catch (e) {
    fields.replaceChildren(el("p", { class: "error" }, `The options could not be loaded: ${e.message}`));
    button.disabled = true;
    return;
  }
  const nodes = new Map();
  fields.replaceChildren(...specs.map((field, i) => {
    const id = `option-${i}`;
    const node = input(field, id);
    nodes.set(field.field, node);
    const label = el("label", { for: id }, field.label || field.field);
    if (field.spec.type === "bool") return el("p", { class: "field check" }, node, label);
    const hint = field.spec.type === "mapping"
      ? el("span", { class: "hint", id: `${id}-hint` }, "One KEY=value per line.")
      : null;
    return el("p", { class: "field" }, label, node, hint);
  }));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    const options = {};
    try {
      for (const field of specs) options[field.field] = read(field, nodes.get(field.field));
    } catch (e) {
      error.textContent = e.message;
      return;
    }
    button.disabled = true;
    try {
      const created = await call("POST", "/api/v1/clusters/", { cluster_options: options });
      announce(`Cluster ${created.name} created; it is starting.`);
    } catch (e) {
      error.textContent = e.message;
    } finally {
      button.disabled = false;
    }
  });
}
