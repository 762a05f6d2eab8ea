// dicomnet's page: a study list with search, a study's series with thumbnails, and an image
// view with window/level and scrolling, all through the DICOMweb endpoints of this server.
// Every value from the archive is shown with textContent (never as HTML); the page is served
// with a Content-Security-Policy that allows scripts and images from this origin only.
"use strict";

const ROOT = "/dicom-web";
const $ = (id) => document.getElementById(id);

function first(item, tag) {
  const element = item[tag];
  if (!element || !element.Value || element.Value.length === 0) return "";
  const value = element.Value[0];
  if (value !== null && typeof value === "object") return value.Alphabetic || "";
  return String(value);
}

function all(item, tag) {
  const element = item[tag];
  return element && element.Value ? element.Value.map(String).join(", ") : "";
}

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text;
  row.appendChild(td);
}

function status(text) {
  $("status").textContent = text;
}

async function getJson(url) {
  const response = await fetch(url, { headers: { Accept: "application/dicom+json" } });
  if (!response.ok) throw new Error(`${response.status} ${await response.text()}`);
  return response.json();
}

function date(text) {
  return text.length === 8 ? `${text.slice(0, 4)}-${text.slice(4, 6)}-${text.slice(6)}` : text;
}

function show(view) {
  for (const id of ["search-view", "study-view", "image-view"]) $(id).hidden = id !== view;
}

async function search(event) {
  if (event) event.preventDefault();
  const form = new FormData($("search"));
  const params = new URLSearchParams({ limit: "200", includefield: "00081030" });
  const name = form.get("PatientName").trim();
  if (name) params.set("PatientName", name.includes("*") ? name : `*${name}*`);
  for (const key of ["PatientID", "ModalitiesInStudy", "AccessionNumber"]) {
    const value = form.get(key).trim();
    if (value) params.set(key, value);
  }
  const from = form.get("from").replaceAll("-", "");
  const to = form.get("to").replaceAll("-", "");
  if (from || to) params.set("StudyDate", `${from}-${to}`);
  status("searching...");
  try {
    const studies = await getJson(`${ROOT}/studies?${params}`);
    const body = $("studies").tBodies[0];
    body.replaceChildren();
    for (const study of studies) {
      const row = document.createElement("tr");
      cell(row, first(study, "00100010"));
      cell(row, first(study, "00100020"));
      cell(row, date(first(study, "00080020")));
      cell(row, first(study, "00081030"));
      cell(row, all(study, "00080061"));
      cell(row, first(study, "00080050"));
      cell(row, first(study, "00201208"));
      row.addEventListener("click", () => openStudy(study));
      body.appendChild(row);
    }
    status(`${studies.length} studies`);
  } catch (error) {
    status(`search failed: ${error.message}`);
  }
}

async function openStudy(study) {
  const uid = first(study, "0020000D");
  show("study-view");
  $("study-title").textContent =
    `${first(study, "00100010")} ${date(first(study, "00080020"))} ${first(study, "00081030")}`;
  const box = $("series");
  box.replaceChildren();
  status("loading series...");
  try {
    const series = await getJson(
      `${ROOT}/studies/${encodeURIComponent(uid)}/series?includefield=0008103E`);
    series.sort((a, b) => Number(first(a, "00200011")) - Number(first(b, "00200011")));
    for (const item of series) {
      const seriesUid = first(item, "0020000E");
      const card = document.createElement("div");
      card.className = "series";
      const img = document.createElement("img");
      img.alt = "series thumbnail";
      img.loading = "lazy";
      img.src = `${ROOT}/studies/${encodeURIComponent(uid)}/series/` +
        `${encodeURIComponent(seriesUid)}/thumbnail?viewport=128,128`;
      card.appendChild(img);
      for (const text of [
        `${first(item, "00080060")} #${first(item, "00200011")}`,
        first(item, "0008103E"),
        `${first(item, "00201209")} images`,
      ]) {
        const span = document.createElement("span");
        span.textContent = text;
        card.appendChild(span);
      }
      card.addEventListener("click", () => openSeries(uid, item));
      box.appendChild(card);
    }
    status(`${series.length} series`);
  } catch (error) {
    status(`loading failed: ${error.message}`);
  }
}

const viewer = { frames: [], position: 0, center: null, width: null };

async function openSeries(studyUid, series) {
  const seriesUid = first(series, "0020000E");
  show("image-view");
  $("image-title").textContent = `${first(series, "00080060")} ${first(series, "0008103E")}`;
  status("loading images...");
  try {
    const base = `${ROOT}/studies/${encodeURIComponent(studyUid)}/series/${encodeURIComponent(seriesUid)}`;
    const instances = await getJson(`${base}/instances?includefield=00280008`);
    instances.sort((a, b) => Number(first(a, "00200013")) - Number(first(b, "00200013")));
    viewer.frames = [];
    for (const instance of instances) {
      const url = `${base}/instances/${encodeURIComponent(first(instance, "00080018"))}`;
      const count = Math.max(1, Number(first(instance, "00280008")) || 1);
      for (let frame = 1; frame <= count; frame += 1) viewer.frames.push(`${url}/frames/${frame}`);
    }
    viewer.position = 0;
    viewer.center = viewer.width = null;
    $("center").value = $("width").value = "";
    $("position").max = String(Math.max(0, viewer.frames.length - 1));
    draw();
    status(`${viewer.frames.length} images`);
  } catch (error) {
    status(`loading failed: ${error.message}`);
  }
}

function draw() {
  if (viewer.frames.length === 0) return;
  const params = new URLSearchParams();
  if (viewer.center !== null && viewer.width !== null && viewer.width > 0) {
    params.set("window", `${viewer.center},${viewer.width},linear`);
  }
  const query = params.toString();
  $("image").src = `${viewer.frames[viewer.position]}/rendered${query ? `?${query}` : ""}`;
  $("position").value = String(viewer.position);
  $("position-text").textContent = `${viewer.position + 1} / ${viewer.frames.length}`;
}

function step(delta) {
  const next = Math.min(viewer.frames.length - 1, Math.max(0, viewer.position + delta));
  if (next !== viewer.position) {
    viewer.position = next;
    draw();
  }
}

function setWindow(center, width) {
  viewer.center = center;
  viewer.width = Math.max(1, width);
  $("center").value = String(Math.round(viewer.center));
  $("width").value = String(Math.round(viewer.width));
  draw();
}

function start() {
  $("search").addEventListener("submit", search);
  $("home").addEventListener("click", (event) => {
    event.preventDefault();
    show("search-view");
  });
  $("position").addEventListener("input", () => {
    viewer.position = Number($("position").value);
    draw();
  });
  $("image").addEventListener("wheel", (event) => {
    event.preventDefault();
    step(event.deltaY > 0 ? 1 : -1);
  });
  document.addEventListener("keydown", (event) => {
    if ($("image-view").hidden) return;
    if (event.key === "ArrowDown" || event.key === "ArrowRight") step(1);
    if (event.key === "ArrowUp" || event.key === "ArrowLeft") step(-1);
  });
  for (const id of ["center", "width"]) {
    $(id).addEventListener("change", () => {
      const center = Number($("center").value);
      const width = Number($("width").value);
      if (Number.isFinite(center) && Number.isFinite(width) && width > 0) setWindow(center, width);
    });
  }
  $("reset").addEventListener("click", () => {
    viewer.center = viewer.width = null;
    $("center").value = $("width").value = "";
    draw();
  });
  let drag = null;
  $("image").addEventListener("mousedown", (event) => {
    event.preventDefault();
    drag = { x: event.clientX, y: event.clientY,
             center: viewer.center ?? 40, width: viewer.width ?? 400 };
  });
  document.addEventListener("mouseup", () => { drag = null; });
  document.addEventListener("mousemove", (event) => {
    if (!drag) return;
    const dx = event.clientX - drag.x;
    const dy = event.clientY - drag.y;
    if (Math.abs(dx) + Math.abs(dy) > 4) setWindow(drag.center + dy * 2, drag.width + dx * 4);
  });
  search();
}

start();
