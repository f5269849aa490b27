// The drawing page: pointer events draw on the pad, and the drawing goes to POST /predict
// as a PNG, the same path as an uploaded file, so the server's MNIST-style preprocessing
// is the one the model gets. While a request is out, newer strokes wait for its answer.
"use strict";

const pad = document.getElementById("pad");
const ink = pad.getContext("2d");
const preview = document.getElementById("preview");
const barsList = document.getElementById("bars");
const predictedText = document.getElementById("predicted");
const confidenceText = document.getElementById("confidence");
const message = document.getElementById("message");
const dropZone = document.getElementById("drop-zone");
const fileInput = document.getElementById("file");
const results = document.getElementById("results");

let drawing = null; // {x, y} of the last point while a pointer is down
let hasInk = false;
let inFlight = false;
let pending = false; // the pad changed while a request was out
let generation = 0; // bumped by Clear: answers to older requests are dropped

function clearPad() {
  ink.fillStyle = "#fff";
  ink.fillRect(0, 0, pad.width, pad.height);
  hasInk = false;
}

function makeBars() {
  for (let digit = 0; digit < 10; digit++) {
    const item = document.createElement("li");
    item.innerHTML =
      `<span>${digit}</span><span class="bar-track"><span class="bar"></span></span>` +
      `<span class="value">–</span>`;
    barsList.appendChild(item);
  }
}

function point(event) {
  const box = pad.getBoundingClientRect();
  return {
    x: ((event.clientX - box.left) * pad.width) / box.width,
    y: ((event.clientY - box.top) * pad.height) / box.height,
  };
}

function stroke(from, to, pressure) {
  ink.strokeStyle = "#000";
  ink.lineCap = "round";
  ink.lineJoin = "round";
  // A pen's pressure thickens the line a little; a mouse reports 0.5.
  ink.lineWidth = 16 + 8 * ((pressure || 0.5) - 0.5);
  ink.beginPath();
  ink.moveTo(from.x, from.y);
  ink.lineTo(to.x, to.y);
  ink.stroke();
  hasInk = true;
}

pad.addEventListener("pointerdown", (event) => {
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  drawing = point(event);
  stroke(drawing, drawing, event.pressure);
  requestPrediction();
});

pad.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
  for (const each of events.length ? events : [event]) {
    const next = point(each);
    stroke(drawing, next, each.pressure);
    drawing = next;
  }
  requestPrediction();
});

for (const name of ["pointerup", "pointercancel"]) {
  pad.addEventListener(name, () => {
    if (drawing) requestPrediction();
    drawing = null;
  });
}

// aria-busy tells assistive technology (and tests) that the result is about to change.
function setBusy(busy) {
  results.setAttribute("aria-busy", String(busy));
}

function requestPrediction() {
  if (!hasInk) return;
  setBusy(true);
  if (inFlight) {
    pending = true;
    return;
  }
  inFlight = true;
  pad.toBlob((blob) => send(blob, "drawing.png"), "image/png");
}

async function send(blob, name) {
  const form = new FormData();
  form.append("file", blob, name);
  const sentIn = generation;
  try {
    const response = await fetch("predict", { method: "POST", body: form });
    const answer = await response.json();
    if (sentIn !== generation) return;
    if (response.ok) show(answer);
    else message.textContent = answer.detail || `error ${response.status}`;
  } catch (err) {
    message.textContent = `The server did not answer (${err.message}).`;
  } finally {
    inFlight = false;
    if (pending) {
      pending = false;
      requestPrediction();
    } else {
      setBusy(false);
    }
  }
}

function show(answer) {
  message.textContent = "";
  predictedText.textContent = String(answer.predicted);
  confidenceText.textContent = `confidence ${(100 * answer.confidence).toFixed(1)}%`;
  barsList.querySelectorAll("li").forEach((item, digit) => {
    const share = answer.probabilities[digit];
    item.querySelector(".bar").style.width = `${(100 * share).toFixed(1)}%`;
    item.querySelector(".value").textContent = `${(100 * share).toFixed(1)}%`;
    item.classList.toggle("top", digit === answer.predicted);
  });
  drawPreview(answer.pixels);
}

function drawPreview(pixels) {
  const context = preview.getContext("2d");
  const image = context.createImageData(28, 28);
  pixels.forEach((value, index) => {
    image.data.set([value, value, value, 255], 4 * index);
  });
  context.putImageData(image, 0, 0);
}

function reset() {
  clearPad();
  generation += 1;
  pending = false;
  predictedText.textContent = "–";
  confidenceText.textContent = "";
  message.textContent = "";
  barsList.querySelectorAll("li").forEach((item) => {
    item.querySelector(".bar").style.width = "0";
    item.querySelector(".value").textContent = "–";
    item.classList.remove("top");
  });
  preview.getContext("2d").clearRect(0, 0, 28, 28);
}

function classifyFile(file) {
  if (!file) return;
  clearPad(); // the result is the file's, not the drawing's
  inFlight = true;
  setBusy(true);
  send(file, file.name);
}

document.getElementById("clear").addEventListener("click", reset);
fileInput.addEventListener("change", () => classifyFile(fileInput.files[0]));
dropZone.addEventListener("dragover", (event) => {
  event.preventDefault();
  dropZone.classList.add("dragging");
});
dropZone.addEventListener("dragleave", () => dropZone.classList.remove("dragging"));
dropZone.addEventListener("drop", (event) => {
  event.preventDefault();
  dropZone.classList.remove("dragging");
  classifyFile(event.dataTransfer.files[0]);
});

async function loadModelInfo() {
  const text = document.getElementById("model-info");
  try {
    const info = await (await fetch("model")).json();
    const layers = info.arch === "cnn" ? `channels ${info.channels.join("-")}, ` : "";
    let accuracy = "";
    if (info.test_accuracy !== null) {
      accuracy = `, test accuracy ${info.test_accuracy.toFixed(3)}`;
      if (!info.metrics_match_model) accuracy += " (metrics.json, not from this exact file)";
    }
    text.textContent =
      `Model: ${info.arch} (${layers}hidden ${info.hidden.join("-")}; ` +
      `${info.parameters.toLocaleString("en")} weights)${accuracy}.`;
  } catch (err) {
    text.textContent = "Model information is unavailable.";
  }
}

makeBars();
clearPad();
loadModelInfo();
