// The /_proxy/ JSON routes. The admin token, when the proxy has one, comes from the URL fragment
// (#token=...) or the token box and is kept in sessionStorage; it is sent as a bearer header and never put
// in a URL the server sees.

const TOKEN = "proxy-admin-token";

export function takeTokenFromFragment() {
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    sessionStorage.setItem(TOKEN, decodeURIComponent(m[1]));
    history.replaceState(history.state, "", location.pathname + location.search);
  }
}

export const saveToken = (value) => sessionStorage.setItem(TOKEN, value);

export class ApiError extends Error {
  constructor(message, status, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export async function api(path) {
  const headers = {};
  const token = sessionStorage.getItem(TOKEN);
  if (token) headers.Authorization = "Bearer " + token;
  const resp = await fetch("/_proxy/" + path, { headers });
  let body = null;
  try {
    body = await resp.json();
  } catch {
    throw new ApiError(`HTTP ${resp.status} from /_proxy/${path.split("?")[0]} (not JSON)`, resp.status);
  }
  if (!resp.ok) {
    const err = body && body.error ? body.error : {};
    throw new ApiError(err.message || "HTTP " + resp.status, resp.status, err.code);
  }
  return body;
}
