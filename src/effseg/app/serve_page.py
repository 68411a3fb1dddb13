"""The one HTML page of ``effseg serve`` (no external assets: works offline)."""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>effseg - {{TITLE}}</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 1.5rem auto; max-width: 980px; color: #222; }
  h1 { font-size: 1.3rem; margin-bottom: .2rem; }
  .sub { color: #666; margin-top: 0; }
  #drop { display: block; margin-top: .8rem; border: 2px dashed #999; border-radius: 8px;
          padding: 1.5rem; text-align: center; cursor: pointer; }
  #drop.over { border-color: #2a7; background: #efe; }
  #result { display: none; margin-top: 1rem; gap: 1.2rem; align-items: flex-start; }
  #result.shown { display: flex; flex-wrap: wrap; }
  #overlay { max-width: 620px; width: 100%; border: 1px solid #ccc; }
  table { border-collapse: collapse; font-size: .9rem; }
  td { padding: 2px 8px; border-bottom: 1px solid #eee; }
  .sw { display: inline-block; width: 12px; height: 12px; border: 1px solid #333; vertical-align: middle; }
  #error { color: #b00; margin-top: 1rem; font-weight: 600; }
  #status { color: #555; margin-top: .6rem; }
  #note { color: #555; font-size: .9rem; }
</style>
</head>
<body>
<h1>effseg: {{TITLE}}</h1>
<p class="sub">Semantic segmentation on this computer. Images stay local (limit {{MAX_MB}} MB;
photos above {{MAX_MP}} megapixels are resized).</p>
<label id="drop" for="file">Drop an image here, or click to choose one
  <input id="file" type="file" accept="image/*" hidden>
</label>
<div id="status"></div>
<div id="error" role="alert"></div>
<div id="result">
  <img id="overlay" alt="segmentation overlay with legend">
  <div>
    <p>Latency: <b id="latency"></b> ms (<span id="runtime"></span>), <span id="size"></span></p>
    <p id="note"></p>
    <table id="shares"><tbody></tbody></table>
  </div>
</div>
<script>
const drop = document.getElementById("drop"), input = document.getElementById("file");
const show = (id, text) => { document.getElementById(id).textContent = text; };
async function send(file) {
  show("error", ""); show("status", "segmenting " + file.name + " ...");
  const body = new FormData(); body.append("file", file);
  let reply, data;
  try {
    reply = await fetch("/api/view", { method: "POST", body });
    data = await reply.json();  // every answer is JSON, errors too: {"error": "<one line>"}
  } catch (err) { show("status", ""); show("error", "request failed: " + err); return; }
  show("status", "");
  if (!reply.ok) {
    document.getElementById("result").classList.remove("shown");
    const wait = reply.headers.get("Retry-After");
    show("error", (data.error || ("error " + reply.status)) + (wait ? " (retry in " + wait + " s)" : ""));
    return;
  }
  document.getElementById("overlay").src = "data:image/png;base64," + data.overlay;
  show("latency", data.latency_ms.toFixed(1)); show("runtime", data.runtime);
  show("size", data.width + "x" + data.height); show("note", data.note || "");
  const rows = document.querySelector("#shares tbody"); rows.innerHTML = "";
  for (const [name, share] of Object.entries(data.shares)) {
    const tr = document.createElement("tr"); tr.className = "share";
    const sw = document.createElement("span"); sw.className = "sw"; sw.style.background = data.colors[name];
    const a = document.createElement("td"); a.append(sw, " " + name);
    const b = document.createElement("td"); b.textContent = (100 * share).toFixed(1) + " %";
    tr.append(a, b); rows.append(tr);
  }
  document.getElementById("result").classList.add("shown");
}
input.addEventListener("change", () => input.files.length && send(input.files[0]));
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault(); drop.classList.remove("over");
  if (e.dataTransfer.files.length) send(e.dataTransfer.files[0]);
});
</script>
</body>
</html>
"""
