// jointmon live view: one uPlot chart per athlete/joint fed by Server-Sent Events from /events
// (analysis/web_view.py), joint sounds drawn as marks over the angle curve, alerts, grades, sensor
// health and the athlete check-in. No framework, no network beyond this server.
"use strict";

const WINDOW_S = 30;          // seconds of angles on screen
const REDRAW_MS = 100;        // charts redraw at most this often (data arrives ~10 batches/s per joint)
const SOUND_COLORS = { click: "#d62728", snap: "#9467bd", crepitus: "#8c564b" };
const ALERT_TYPES = ["valgus", "instability", "locking"];
const ALERT_COLORS = { valgus: "#ff7f0e", instability: "#c62828", locking: "#6b7680" };
const SERIES = {
  flexion_deg: { label: "flexion", stroke: "#1f77b4" },
  abduction_deg: { label: "abduction (+ valgus)", stroke: "#ff7f0e" },
  elevation_deg: { label: "elevation", stroke: "#2ca02c" },
};
const Y_RANGE = { knee: [-30, 150], shoulder: [-10, 190] };

const state = { historyS: 120, panels: new Map(), grades: new Map(), status: new Map(), checkins: new Map(),
                ended: false, source: null };

const $ = (sel, root = document) => root.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") node.textContent = v; else if (k === "cls") node.className = v; else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
};
const clock = (t) => new Date(t * 1000).toLocaleTimeString();
const fmt = (v, digits = 1) => (v === null || v === undefined || Number.isNaN(v)) ? "?" : Number(v).toFixed(digits);
const keyOf = (athlete, joint) => `${athlete}/${joint}`;

// ---------------------------------------------------------------------------------------------
// charts
// ---------------------------------------------------------------------------------------------
function marksPlugin(panel) {
  // Joint sounds as dashed vertical lines with a triangle on top; alerts as bars along the bottom.
  return {
    hooks: {
      draw: [(u) => {
        const { left, top, width, height } = u.bbox;
        const [xmin, xmax] = [u.scales.x.min, u.scales.x.max];
        const ctx = u.ctx;
        const px = window.devicePixelRatio || 1;
        let drawn = 0;
        ctx.save();
        ctx.beginPath();
        ctx.rect(left, top, width, height);
        ctx.clip();
        for (const ev of panel.sounds) {
          if (ev.t < xmin || ev.t > xmax) continue;
          const x = Math.round(u.valToPos(ev.t, "x", true));
          ctx.strokeStyle = ctx.fillStyle = SOUND_COLORS[ev.type] || "#000";
          ctx.lineWidth = px;
          ctx.setLineDash([4 * px, 3 * px]);
          ctx.beginPath(); ctx.moveTo(x, top); ctx.lineTo(x, top + height); ctx.stroke();
          ctx.setLineDash([]);
          ctx.beginPath(); ctx.moveTo(x - 5 * px, top); ctx.lineTo(x + 5 * px, top); ctx.lineTo(x, top + 8 * px);
          ctx.closePath(); ctx.fill();
          drawn++;
        }
        for (const ev of panel.alerts) {
          const t1 = ev.t + (ev.details && ev.details.duration_s ? ev.details.duration_s : 0.3);
          if (t1 < xmin || ev.t > xmax) continue;
          const x0 = u.valToPos(Math.max(ev.t, xmin), "x", true), x1 = u.valToPos(Math.min(t1, xmax), "x", true);
          ctx.fillStyle = ALERT_COLORS[ev.type] || "#000";
          ctx.fillRect(x0, top + height - 6 * px, Math.max(x1 - x0, 3 * px), 6 * px);
        }
        ctx.restore();
        panel.node.dataset.soundsDrawn = String(drawn);
      }],
    },
  };
}

function chartWidth(panel) {
  return Math.max(300, panel.chartNode.clientWidth || 600);
}

function makePanel(info) {
  const key = keyOf(info.athlete, info.joint);
  let panel = state.panels.get(key);
  if (panel) return panel;
  $("#no-joints")?.remove();
  const names = info.names && info.names.length ? info.names : (info.kind === "shoulder" ? ["elevation_deg"] :
    ["flexion_deg", "abduction_deg"]);
  const counts = el("span", { cls: "counts" });
  const chartNode = el("div", { cls: "chart" });
  const soundList = el("ul", { cls: "events sounds" });
  const legend = el("div", { cls: "legend-sounds" },
    ...Object.entries(SOUND_COLORS).map(([type, color]) => {
      const sw = el("i"); sw.style.background = color; return el("span", {}, sw, type);
    }));
  const node = el("section", { cls: "joint", "data-athlete": info.athlete, "data-joint": info.joint,
                               "data-points": "0", "data-sounds": "0", "data-updates": "0" },
    el("h2", {}, el("span", { text: `${info.athlete} · ${info.joint.replace("_", " ")}` }), counts),
    chartNode, legend, el("h3", { cls: "muted", text: "joint sounds" }), soundList);
  $("#joints").append(node);
  panel = { key, info, names, node, chartNode, soundList, counts, t: [], series: names.map(() => []), sounds: [],
            alerts: [], eventCounts: {}, dirty: true, updates: 0 };
  const opts = {
    width: chartWidth(panel), height: 260,
    scales: { x: { time: true }, y: { range: Y_RANGE[info.kind] || [-30, 190] } },
    series: [{}, ...names.map((n) => ({ label: (SERIES[n] || { label: n }).label, stroke: (SERIES[n] || {}).stroke || "#333",
                                         width: 2, spanGaps: false, value: (u, v) => v == null ? "–" : `${v.toFixed(1)}°` }))],
    axes: [{}, { label: "degrees" }],
    plugins: [marksPlugin(panel)],
  };
  panel.chart = new uPlot(opts, [panel.t, ...panel.series], chartNode);
  state.panels.set(key, panel);
  for (const c of info.counts ? Object.entries(info.counts) : []) panel.eventCounts[c[0]] = c[1];
  updateCounts(panel);
  refreshJointChoices();
  return panel;
}

function appendAngles(msg) {
  const panel = makePanel(msg);
  panel.t.push(...msg.t);
  panel.names.forEach((n, i) => {
    const vals = msg.series[n] || msg.t.map(() => null);
    panel.series[i].push(...vals);
  });
  const last = panel.t[panel.t.length - 1];
  let drop = 0;
  while (drop < panel.t.length && panel.t[drop] < last - state.historyS) drop++;
  if (drop) { panel.t.splice(0, drop); panel.series.forEach((s) => s.splice(0, drop)); }
  panel.dirty = true;
}

function redraw() {
  for (const panel of state.panels.values()) {
    if (!panel.dirty) continue;
    panel.dirty = false;
    const last = panel.t.length ? panel.t[panel.t.length - 1] : Date.now() / 1000;
    panel.chart.setData([panel.t, ...panel.series], false);
    panel.chart.setScale("x", { min: last - WINDOW_S, max: last });
    panel.updates++;
    panel.node.dataset.points = String(panel.t.length);
    panel.node.dataset.sounds = String(panel.sounds.length);
    panel.node.dataset.updates = String(panel.updates);
  }
}

function updateCounts(panel) {
  const c = panel.eventCounts;
  panel.counts.textContent = `reps ${c.rep || 0} · clicks ${c.click || 0} · snaps ${c.snap || 0} · crepitus ${c.crepitus || 0}`;
}

// ---------------------------------------------------------------------------------------------
// events, alerts, grades, health, check-ins
// ---------------------------------------------------------------------------------------------
function addEvent(ev, fromSnapshot = false) {
  const panel = state.panels.get(keyOf(ev.athlete, ev.joint)) ||
    makePanel({ athlete: ev.athlete, joint: ev.joint, kind: ev.joint.split("_").pop() });
  if (!fromSnapshot) { panel.eventCounts[ev.type] = (panel.eventCounts[ev.type] || 0) + 1; updateCounts(panel); }
  if (ev.type in SOUND_COLORS) {
    panel.sounds.push(ev);
    const item = el("li", { cls: "sound", "data-type": ev.type, "data-t": String(ev.t) },
      el("span", { cls: "type", text: ev.type }), ` ${clock(ev.t)} · ${fmt(ev.magnitude)} dB · ` +
      `confidence ${fmt(ev.confidence, 2)}` + (ev.details && ev.details.flexion_deg != null ?
        ` · at ${fmt(ev.details.flexion_deg)}°` : ""));
    panel.soundList.prepend(item);
    panel.dirty = true;
  } else if (ALERT_TYPES.includes(ev.type)) {
    panel.alerts.push(ev);
    $("#alerts .empty")?.remove();
    $("#alerts").prepend(el("li", { cls: "alert", "data-type": ev.type },
      el("span", { cls: "type", text: ev.type }),
      ` ${clock(ev.t)} · ${ev.athlete} ${ev.joint} · ${fmt(ev.magnitude)}` + (ev.type === "locking" ? "" : "°") +
      ` · confidence ${fmt(ev.confidence, 2)}` + (ev.details && ev.details.backfilled ? " (found after calibration)" : "")));
    panel.dirty = true;
  }
}

function setGrade(g) {
  state.grades.set(keyOf(g.athlete, g.joint), g);
  const root = $("#grades");
  root.replaceChildren();
  for (const grade of state.grades.values()) {
    root.append(el("div", { cls: "grade", "data-grade": grade.grade, "data-athlete": grade.athlete,
                            "data-joint": grade.joint, "data-final": String(grade.final) },
      el("div", {}, el("span", { cls: "level", text: grade.grade }),
         ` ${grade.athlete} ${grade.joint} · ${grade.final ? "final" : "interim"} · ${clock(grade.t_ns / 1e9)}`),
      el("ul", {}, ...(grade.reasons.length ? grade.reasons : [{ level: "benign", text: "no red flag measured or reported" }])
        .map((r) => el("li", { cls: "reason", "data-level": r.level, "data-flag": r.flag || "", text: r.text }))),
      el("div", { cls: "muted", text: grade.disclaimer || "" })));
  }
}

function setStatus(s) {
  state.status.set(`${s.component}/${s.component_id}`, s);
  const body = $("#health tbody");
  body.replaceChildren();
  for (const st of state.status.values()) {
    const info = st.info || {};
    const bits = [];
    if (info.battery_pct != null) bits.push(`battery ${info.battery_pct}%`);
    if (info.rssi_dbm != null) bits.push(`RSSI ${info.rssi_dbm} dBm`);
    if (info.loss_pct != null) bits.push(`loss ${info.loss_pct}%`);
    if (info.packets_per_s != null) bits.push(`${info.packets_per_s} packets/s`);
    const problems = Object.entries(st.counters || {})
      .filter(([k, v]) => v && /^(dropped|rejected|lost|gap|link_)/.test(k)).map(([k, v]) => `${k} ${v}`);
    bits.push(problems.length ? problems.join(", ") : "no drops");
    body.append(el("tr", { "data-component": st.component, "data-state": st.state },
      el("td", { text: `${st.component} ${st.component_id}` }), el("td", { text: st.state }),
      el("td", { text: bits.join(" · ") })));
  }
}

function setCheckin(c) {
  state.checkins.set(`${c.athlete}/${c.joint}/${c.phase}`, c);
  const list = $("#checkins");
  list.replaceChildren();
  for (const ci of state.checkins.values()) {
    list.append(el("li", { cls: "checkin", "data-phase": ci.phase },
      `${ci.athlete} ${ci.joint} ${ci.phase}: pain ${ci.pain == null ? "not asked" : ci.pain + "/10"}, swelling ` +
      `${ci.swelling == null ? "not asked" : ci.swelling ? "yes" : "no"}`));
  }
}

let config = { joints: [], standard_joints: ["left_knee", "right_knee", "left_shoulder", "right_shoulder"], checkin: true };

function refreshJointChoices() {
  const pairs = [...config.joints.map((j) => [j.athlete, j.joint]), ...[...state.panels.values()].map((p) => [p.info.athlete, p.info.joint])];
  const athletes = [...new Set(pairs.map((p) => p[0]))];
  const joints = [...new Set([...pairs.map((p) => p[1]), ...config.standard_joints])];
  $("#athlete-list").replaceChildren(...athletes.map((a) => el("option", { value: a })));
  const form = $("#checkin-form");
  if (!form.athlete.value && athletes.length) form.athlete.value = athletes[0];
  const select = form.joint;
  const current = select.value;
  select.replaceChildren(...joints.map((j) => el("option", { value: j, text: j.replace("_", " ") })));
  if (current && joints.includes(current)) select.value = current;
}

async function sendCheckin(evt) {
  evt.preventDefault();
  const form = evt.target;
  const status = $("#checkin-status");
  const pain = form.pain.value === "" ? null : Number(form.pain.value);
  const swelling = form.swelling.value === "" ? null : form.swelling.value === "yes";
  const body = { athlete: form.athlete.value.trim(), joint: form.joint.value, phase: form.phase.value, pain, swelling };
  status.className = ""; status.textContent = "sending…";
  try {
    const resp = await fetch("/api/checkin", { method: "POST", headers: { "Content-Type": "application/json" },
                                               body: JSON.stringify(body) });
    const data = await resp.json();
    if (!resp.ok) { status.className = "error"; status.textContent = data.error || `error ${resp.status}`; return; }
    status.className = "ok";
    status.textContent = `sent: ${body.joint} ${body.phase}; graded with pain ${data.report.pain ?? "–"}, ` +
      `swelling ${data.report.swelling == null ? "–" : data.report.swelling ? "yes" : "no"}`;
  } catch (err) {
    status.className = "error"; status.textContent = `not sent: ${err}`;
  }
}

// ---------------------------------------------------------------------------------------------
// server push
// ---------------------------------------------------------------------------------------------
function setConn(text, st) { const b = $("#conn"); b.textContent = text; b.dataset.state = st; }

function applySnapshot(snap) {
  state.historyS = snap.history_s || state.historyS;
  config = snap.config || config;
  $("#session").textContent = `session ${snap.session}`;
  // a snapshot replaces everything (first connection, a reconnect, or a client that fell behind)
  for (const p of state.panels.values()) { p.chart.destroy(); p.node.remove(); }
  state.panels.clear();
  state.grades.clear(); state.status.clear(); state.checkins.clear();
  $("#alerts").replaceChildren(el("li", { cls: "muted empty", text: "none yet" }));
  $("#grades").replaceChildren(el("p", { cls: "muted", text: "graded while the session runs and at its end" }));
  $("#checkins").replaceChildren();
  $("#health tbody").replaceChildren(el("tr", { cls: "empty" }, el("td", { colspan: "3", cls: "muted", text: "no status yet" })));
  for (const j of snap.joints) {
    const panel = makePanel(j);
    panel.t.push(...j.t);
    panel.names.forEach((n, i) => panel.series[i].push(...(j.series[n] || j.t.map(() => null))));
  }
  for (const ev of snap.events) addEvent(ev, true);
  for (const g of snap.grades) setGrade(g);
  for (const s of snap.status) setStatus(s);
  for (const c of snap.checkins) setCheckin(c);
  refreshJointChoices();
  if (snap.ended) ended();
}

function ended() {
  state.ended = true;
  setConn("session over", "ended");
  if (state.source) state.source.close();  // nothing more will come: no reconnect attempts
}

function connect() {
  const es = new EventSource("/events");
  state.source = es;
  const on = (name, fn) => es.addEventListener(name, (e) => fn(JSON.parse(e.data)));
  es.onopen = () => { if (!state.ended) setConn("live", "live"); };
  es.onerror = () => { if (!state.ended) setConn("reconnecting…", "reconnecting"); };
  on("snapshot", applySnapshot);
  on("joint", makePanel);
  on("angles", appendAngles);
  on("event", (ev) => addEvent(ev));
  on("grade", setGrade);
  on("status", setStatus);
  on("checkin", setCheckin);
  on("end", ended);
}

$("#checkin-form").addEventListener("submit", sendCheckin);
window.addEventListener("resize", () => {
  for (const p of state.panels.values()) p.chart.setSize({ width: chartWidth(p), height: 260 });
});
setInterval(redraw, REDRAW_MS);
refreshJointChoices();
connect();
