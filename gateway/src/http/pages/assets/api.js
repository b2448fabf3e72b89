// The gateway's JSON API, called with the session cookie. Every call is
// marked as the page's (the gateway then leaves out the Basic challenge,
// so the browser shows no password prompt of its own).

const meta = (name) => document.querySelector(`meta[name="${name}"]`)?.content ?? "";

export const prefix = meta("dask-gateway-prefix");
export const user = meta("dask-gateway-user");
export const admin = meta("dask-gateway-admin") === "true";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// The page itself sends a browser without a session to the sign-in its
// auth decides (the login form, or the Hub).
export function signIn() {
  window.location.assign(`${prefix}/`);
}

export async function call(method, path, body) {
  const headers = { "Accept": "application/json", "X-Dask-Gateway-Page": "1" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(`${prefix}${path}`, {
      method,
      headers,
      credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new ApiError(0, "The gateway cannot be reached.");
  }
  if (response.status === 401) {
    signIn();
    throw new ApiError(401, "Signed out.");
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (e) {
    data = null;
  }
  if (!response.ok) {
    throw new ApiError(response.status, data?.error ?? `The gateway answered ${response.status}.`);
  }
  return data;
}

export const clusterPath = (name) => `/api/v1/clusters/${encodeURIComponent(name)}`;
