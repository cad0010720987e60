// cpcl search page: asks the JSON API, builds the result grid from text (never from HTML).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { results: [], lastQuery: null, imageFile: null, limits: null };

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function detailOf(body, status) {
  // FastAPI answers {"detail": "..."} or, for validation errors, {"detail": [{"msg": ..., "loc": [...]}]}.
  if (body && typeof body.detail === "string") return body.detail;
  if (body && Array.isArray(body.detail) && body.detail.length) {
    const first = body.detail[0];
    return `${(first.loc || []).slice(-1)[0] || "request"}: ${first.msg}`;
  }
  return `request failed (HTTP ${status})`;
}

function checked(list) {
  return Array.from(document.querySelectorAll(`#${list} input:checked`)).map((box) => box.value);
}

function filters() {
  return { cameras: checked("camera-list"), sources: checked("source-list"),
           time_from: $("time-from").value || null, time_to: $("time-to").value || null };
}

function clock(seconds) {
  // seconds into a video as M:SS.S (H:MM:SS.S from an hour); "?" when the frame rate is unknown
  if (seconds === null || seconds === undefined) return "?";
  const hours = Math.floor(seconds / 3600);
  const minutes = Math.floor((seconds % 3600) / 60);
  const rest = (seconds % 60).toFixed(1).padStart(4, "0");
  return hours ? `${hours}:${String(minutes).padStart(2, "0")}:${rest}` : `${minutes}:${rest}`;
}

function when(footage) {
  // the time (or the span of the person's track) and the frame of a detection, as text
  const span = footage.span;
  if (span && span.first_frame !== span.last_frame) {
    return `${clock(span.start)}–${clock(span.end)} · frames ${span.first_frame}–${span.last_frame}`;
  }
  return `${clock(footage.offset)} · frame ${footage.frame}`;
}

function showFrame(hit) {
  // the whole frame of a detection with its box drawn over it (positioned in shares of the frame)
  const footage = hit.footage;
  const [width, height] = footage.frame_size || [1, 1];
  const [x, y, w, h] = footage.box;
  const box = $("frame-box");
  box.style.left = `${(100 * x) / width}%`;
  box.style.top = `${(100 * y) / height}%`;
  box.style.width = `${(100 * w) / width}%`;
  box.style.height = `${(100 * h) / height}%`;
  $("frame-image").src = hit.frame_url;
  $("frame-image").alt = `frame ${footage.frame} of ${footage.source}`;
  $("frame-caption").textContent = `${footage.source} · ${when(footage)} · box ${footage.box.join(", ")} · ` +
    `score ${hit.score.toFixed(3)}`;
  $("frame-view").hidden = false;
  $("close-frame").focus();
}

function closeFrame() {
  $("frame-view").hidden = true;
  $("frame-image").removeAttribute("src");
}

function render() {
  const threshold = Number($("threshold").value);
  $("threshold-value").textContent = threshold.toFixed(2);
  const grid = $("results");
  grid.replaceChildren();
  if (state.lastQuery === null) return;
  const shown = state.results.filter((hit) => hit.score >= threshold);
  $("no-match").hidden = shown.length > 0;
  $("status").textContent = `${state.results.length} results for ${state.lastQuery}; ${shown.length} at or above ${threshold.toFixed(2)}`;
  for (const hit of shown) {
    const card = element("figure", "card");
    card.dataset.path = hit.path;
    card.dataset.score = String(hit.score);
    const img = element("img", "crop");
    img.src = hit.url;
    img.alt = hit.path;
    img.loading = "lazy";
    const caption = element("figcaption");
    const top = element("div", "top");
    top.append(element("span", "rank", `#${hit.rank}`), element("span", "score", hit.score.toFixed(3)));
    const bar = element("div", "bar");
    bar.style.width = `${Math.max(0, Math.min(1, hit.score)) * 100}%`;
    if (hit.footage) {
      card.classList.add("footage");
      card.dataset.source = hit.footage.source;
      card.dataset.frame = String(hit.footage.frame);
      card.tabIndex = 0;
      card.title = "show the frame";
      card.addEventListener("click", () => showFrame(hit));
      card.addEventListener("keydown", (event) => { if (event.key === "Enter") showFrame(hit); });
      caption.append(top, bar, element("div", "path", hit.footage.source), element("div", "meta", when(hit.footage)));
      if (hit.footage.strip) caption.append(strip(hit));
    } else {
      caption.append(top, bar, element("div", "path", hit.path));
    }
    for (const [key, value] of Object.entries(hit.metadata)) {
      const text = key === "time" ? String(value).replace("T", " ") : String(value);
      caption.append(element("div", "meta", `${key} ${text}`));
    }
    card.append(img, caption);
    grid.append(card);
  }
}

function strip(hit) {
  // small crops of the person along its track; a click shows that detection's frame
  const row = element("div", "strip");
  for (const item of hit.footage.strip) {
    const img = element("img");
    img.src = item.url;
    img.alt = `frame ${item.frame}`;
    img.title = `${clock(item.offset)} · frame ${item.frame}`;
    img.loading = "lazy";
    const shown = { ...hit, frame_url: item.frame_url, footage: { ...hit.footage, ...item, span: null } };
    img.addEventListener("click", (event) => { event.stopPropagation(); showFrame(shown); });
    row.append(img);
  }
  return row;
}

async function run(request, label) {
  showError("");
  $("status").textContent = "searching…";
  $("search-button").disabled = true;
  try {
    const response = await fetch(request.url, request.init);
    const body = await response.json().catch(() => null);
    if (!response.ok) throw new Error(detailOf(body, response.status));
    state.results = body.results;
    state.lastQuery = label;
  } catch (err) {
    state.results = [];
    state.lastQuery = null;
    $("status").textContent = "";
    $("no-match").hidden = true;
    showError(err.message);
  } finally {
    $("search-button").disabled = false;
    render();
  }
}

function searchText() {
  const text = $("query").value.trim();
  if (!text) return;
  clearImage(false);
  const payload = { text, k: Number($("k").value), rerank: $("rerank").checked, ...filters() };
  run({ url: "/api/search", init: { method: "POST", headers: { "Content-Type": "application/json" },
                                   body: JSON.stringify(payload) } }, `“${text}”`);
}

function searchImage() {
  const file = state.imageFile;
  if (!file) return;
  if (state.limits && file.size > state.limits.max_upload_bytes) {
    showError(`the image is larger than ${Math.round(state.limits.max_upload_bytes / 2 ** 20)} MiB`);
    return;
  }
  const form = new FormData();
  form.append("image", file);
  form.append("k", $("k").value);
  form.append("rerank", $("rerank").checked ? "true" : "false");
  const chosen = filters();
  for (const camera of chosen.cameras) form.append("cameras", camera);
  for (const source of chosen.sources) form.append("sources", source);
  if (chosen.time_from) form.append("time_from", chosen.time_from);
  if (chosen.time_to) form.append("time_to", chosen.time_to);
  run({ url: "/api/search/image", init: { method: "POST", body: form } }, `the image ${file.name}`);
}

function clearImage(rerender) {
  if (state.imageFile && $("query-preview").src) URL.revokeObjectURL($("query-preview").src);
  state.imageFile = null;
  $("image-input").value = "";
  $("query-image").hidden = true;
  if (rerender) { state.results = []; state.lastQuery = null; $("no-match").hidden = true; $("status").textContent = ""; render(); }
}

function again() {
  if (state.imageFile) searchImage(); else if ($("query").value.trim()) searchText();
}

async function loadInfo() {
  try {
    const response = await fetch("/api/info");
    const info = await response.json();
    state.limits = info.limits;
    const sources = info.sources || [];
    const what = sources.length ? `detections indexed from ${sources.length} footage source${sources.length > 1 ? "s" : ""}`
      : "images indexed";
    $("gallery-info").textContent = `${info.count.toLocaleString()} ${what} (${info.backend} search)`;
    $("threshold").value = info.min_score;
    $("rerank").checked = Boolean(info.rerank);
    $("k").value = [6, 12, 24, 48, 96].includes(info.default_k) ? String(info.default_k) : "12";
    for (const [names, fieldset, list] of [[info.cameras, "camera-filter", "camera-list"],
                                           [info.sources || [], "source-filter", "source-list"]]) {
      if (!names.length) continue;
      $(fieldset).hidden = false;
      for (const name of names) {
        const label = element("label", "camera");
        const box = element("input");
        box.type = "checkbox";
        box.value = name;
        box.addEventListener("change", again);
        label.append(box, document.createTextNode(` ${name}`));
        $(list).append(label);
      }
    }
    if (info.time_range) {
      $("time-filter").hidden = false;
      for (const id of ["time-from", "time-to"]) {
        $(id).min = info.time_range[0];
        $(id).max = info.time_range[1];
        $(id).addEventListener("change", again);
      }
    }
    render();
  } catch (err) {
    showError(`cannot read the index: ${err.message}`);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("search-form").addEventListener("submit", (event) => { event.preventDefault(); searchText(); });
  $("threshold").addEventListener("input", render);
  $("k").addEventListener("change", again);
  $("rerank").addEventListener("change", again);
  $("image-input").addEventListener("change", () => {
    const file = $("image-input").files[0];
    if (!file) return;
    clearImage(false);
    state.imageFile = file;
    $("query-preview").src = URL.createObjectURL(file);
    $("query-image").hidden = false;
    searchImage();
  });
  $("clear-image").addEventListener("click", () => clearImage(true));
  $("close-frame").addEventListener("click", closeFrame);
  $("frame-view").addEventListener("click", (event) => { if (event.target === $("frame-view")) closeFrame(); });
  document.addEventListener("keydown", (event) => { if (event.key === "Escape" && !$("frame-view").hidden) closeFrame(); });
  loadInfo();
});
