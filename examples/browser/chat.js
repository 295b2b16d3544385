// The support chat: no framework, no CDN, no inline script (the page's CSP allows only 'self').
//
// 1. Gets a short-lived token from the token service with the PUBLIC key (pk_...) of config.js. The
//    service checks the request's Origin against the key's allowed origins and answers CORS for it.
//    Provider variant (config.js has providerTokenUrl, and no public key or ?provider=1): the page first
//    gets the user's identity-provider token (GET providerTokenUrl, a stand-in for the provider's login
//    SDK) and mints with it instead (the service's oidc adapter; its CORS_ORIGINS lists the page's origin).
// 2. Keeps the token in memory only (a variable of this closure: no localStorage, no cookie).
// 3. Calls the protected chat route through the gateway (nginx, auth_request) with the token.
// 4. Renews the token at 80% of its life (timer from expires_in, so the client's clock does not matter).
// 5. Logs out with POST /v1/revoke: the token is rejected everywhere from then on.
"use strict";

(function () {
  const config = window.CHAT_CONFIG || {};
  const query = new URLSearchParams(window.location.search);
  const serviceUrl = String(config.serviceUrl || "").replace(/\/+$/, "");
  // Empty: the gateway is this page's own origin (the page is served through nginx).
  const gatewayUrl = String(config.gatewayUrl || "").replace(/\/+$/, "");
  const publicKey = String(config.publicKey || "");
  const persona = String(config.personaId || "support-bot");
  const providerTokenUrl = String(config.providerTokenUrl || "");
  const useProvider = providerTokenUrl !== "" && (!publicKey || query.get("provider") === "1");
  // A token lifetime in seconds may be asked for (?ttl=60); the service caps it at its maximum.
  const ttl = parseInt(query.get("ttl") || config.ttl || "", 10);
  const RENEW_AT = 0.8;

  let token = null;        // in memory only
  let expiresAt = 0;       // the service's expires_at (Unix seconds), shown to the user
  let renewTimer = null;
  let renewals = 0;

  const el = (id) => document.getElementById(id);

  function setStatus(state, text) {
    el("status").dataset.state = state;
    el("status").textContent = text;
  }

  function showError(text) {
    el("error").textContent = text;
    el("error").hidden = false;
  }

  function clearError() {
    el("error").textContent = "";
    el("error").hidden = true;
  }

  function addMessage(who, text) {
    const item = document.createElement("li");
    item.className = who;
    item.textContent = (who === "you" ? "You: " : "Bot: ") + text;  // textContent: never HTML
    el("messages").appendChild(item);
  }

  async function errorCode(response) {
    try {
      const body = await response.json();
      return body && body.error ? String(body.error) : "";
    } catch (_) {
      return "";
    }
  }

  // The identity provider's token for the logged-in user (a fresh one each time: it may have expired).
  // A real page would ask its provider's SDK (keycloak-js, Auth0 SPA, ...); this one fetches it.
  async function providerToken() {
    const response = await fetch(providerTokenUrl, { credentials: "omit", cache: "no-store" });
    if (!response.ok) {
      throw new Error("identity provider: HTTP " + response.status);
    }
    const answer = await response.json();
    const idToken = answer && (answer.id_token || answer.access_token);
    if (typeof idToken !== "string" || idToken.split(".").length !== 3) {
      throw new Error("identity provider: no token in its answer");
    }
    return idToken;
  }

  async function fetchToken() {
    const body = { personaId: persona };
    if (Number.isInteger(ttl) && ttl > 0) {
      body.ttl = ttl;
    }
    const credential = useProvider ? await providerToken() : publicKey;
    const response = await fetch(serviceUrl + "/v1/tokens", {
      method: "POST",
      headers: { "Authorization": "Bearer " + credential, "Content-Type": "application/json" },
      body: JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
    });
    if (!response.ok) {
      throw new Error("HTTP " + response.status + " " + (await errorCode(response)));
    }
    const answer = await response.json();
    token = answer.token;
    expiresAt = answer.expires_at;
    scheduleRenewal(answer.expires_in);
    el("expires-in").textContent = String(answer.expires_in);
    el("token-info").hidden = false;
  }

  function scheduleRenewal(expiresIn) {
    clearTimeout(renewTimer);
    const delay = Math.max(1, expiresIn * RENEW_AT) * 1000;
    renewTimer = setTimeout(renew, delay);
  }

  async function renew() {
    if (token === null) {
      return;  // logged out meanwhile
    }
    try {
      await fetchToken();
      renewals += 1;
      el("renewals").textContent = String(renewals);
    } catch (err) {
      // Keep the old token until it expires; try again shortly.
      showError("Could not renew the token: " + err.message);
      renewTimer = setTimeout(renew, 5000);
    }
  }

  async function login() {
    setStatus("starting", "Getting a token…");
    try {
      await fetchToken();
      clearError();
      setStatus("ready", "Connected.");
    } catch (err) {
      // A CORS refusal (an origin the key does not allow) rejects the fetch with a TypeError.
      setStatus("failed", "No token.");
      showError("Could not get a token: " + err.message);
    }
  }

  async function send(text) {
    addMessage("you", text);
    const headers = { "Content-Type": "application/json" };
    if (token !== null) {
      headers["Authorization"] = "Bearer " + token;
    }
    try {
      const response = await fetch(gatewayUrl + "/chat/" + encodeURIComponent(persona) + "/messages", {
        method: "POST",
        headers: headers,
        body: JSON.stringify({ message: text }),
        credentials: "omit",
        cache: "no-store",
      });
      if (response.status === 401) {
        showError("HTTP 401 " + (await errorCode(response)) + ": not logged in, reload the page to start again.");
        return;
      }
      if (!response.ok) {
        showError("HTTP " + response.status + " " + (await errorCode(response)));
        return;
      }
      const answer = await response.json();
      clearError();
      addMessage("bot", String(answer.reply));
    } catch (err) {
      showError("The chat could not be reached: " + err.message);
    }
  }

  async function logout() {
    clearTimeout(renewTimer);
    const old = token;
    token = null;
    expiresAt = 0;
    el("token-info").hidden = true;
    if (old === null) {
      setStatus("logged-out", "Logged out.");
      return;
    }
    try {
      // RFC 7009: possession of the token is enough; 200 whether or not it was still valid.
      const response = await fetch(serviceUrl + "/v1/revoke", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ token: old }),
        credentials: "omit",
        cache: "no-store",
      });
      if (!response.ok) {
        throw new Error("HTTP " + response.status + " " + (await errorCode(response)));
      }
      setStatus("logged-out", "Logged out.");
    } catch (err) {
      setStatus("logged-out", "Logged out here, but the service did not confirm.");
      showError("Could not revoke the token: " + err.message);
    }
  }

  el("send-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = el("message");
    const text = input.value.trim();
    input.value = "";
    if (text) {
      send(text);
    }
  });
  el("logout").addEventListener("click", () => { logout(); });

  if (!serviceUrl || !(useProvider || publicKey.startsWith("pk_"))) {
    setStatus("failed", "Not configured.");
    showError("config.js must name the token service and a public key (pk_...) or an identity provider.");
  } else {
    el("mode").textContent = useProvider ? "identity provider" : "public key";
    login();
  }
}());
