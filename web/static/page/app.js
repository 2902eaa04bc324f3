// The emergency physician's page: one search, every hospital's exams on one timeline, live.
import { post, subscribe } from "./gqlws.js";
import { formatDate, formatDateTime, initLanguage, plural, setLanguage, t, translatePage } from "./i18n.js";

const HISTORY = `fragment H on PatientHistory {
  complete cacheStatus
  sources { source { id name } status examCount cached cachedAt }
  exams { studyInstanceUid studyDate modalities description reportAvailability
    locations { source { id name } patientId issuerOfPatientId patientName patientBirthDate patientSex viewerUrl cachedAt
      matchedBy { kind issuer value } } }
  candidates { score reasons source { id name } patientId issuerOfPatientId patientName birthDate sex
    exams { studyInstanceUid studyDate modalities description } }
}`;
const UPDATES = `subscription($patient: PatientInput!, $candidates: Boolean, $reason: String) {
  patientHistoryUpdates(patient: $patient, includeCandidates: $candidates, reason: $reason) { phase history { ...H } } } ${HISTORY}`;
const HISTORY_QUERY = `query($patient: PatientInput!, $candidates: Boolean, $reason: String) {
  patientHistory(patient: $patient, includeCandidates: $candidates, reason: $reason) { ...H } } ${HISTORY}`;
const REPORT = `query($patient: PatientInput!, $uid: ID!, $sources: [ID!], $reason: String) {
  examReport(patient: $patient, studyInstanceUid: $uid, sources: $sources, reason: $reason) {
    status text author date title url error completion verification verifiedBy verifiedAt } }`;
const SHARE = `mutation($patient: PatientInput!, $studies: [ID!], $ttl: Int, $once: Boolean) {
  createShareCode(patient: $patient, studies: $studies, ttlSeconds: $ttl, singleUse: $once) { code expiresAt url qrSvg singleUse } }`;
const FAILED = new Set(["TIMEOUT", "UNREACHABLE", "ERROR", "SKIPPED", "NOT_CACHED", "UNSUPPORTED", "BUSY"]);
const GLYPH = { WAITING: "…", OK: "✓", NO_IDENTIFIER: "–", NOT_ASKED: "–" };

const state = { sources: [], history: null, running: false, patient: null, reports: new Map(), open: new Set(), picked: new Set(), reason: null, subscription: null };
const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children.flat().filter((child) => child !== null && child !== undefined));
  return node;
}

async function token() {
  // auth.js: the OIDC session, the demo physician's token in `pacsfed demo`, or none (--insecure-dev).
  return window.pacsfedAuth ? await window.pacsfedAuth.token() : null;
}

function patientFromForm(form) {
  const value = (name) => form.elements[name].value.trim();
  if (value("patientId")) return value("issuer") ? { id: value("patientId"), issuer: value("issuer") } : { id: value("patientId") };
  if (value("nationalId")) return { nationalId: value("nationalId") };
  if (value("familyName") && value("birthDate")) {
    const patient = { familyName: value("familyName"), birthDate: value("birthDate") };
    if (value("givenName")) patient.givenName = value("givenName");
    return patient;
  }
  return null;
}

function showError(key, detail) {
  const box = $("form-error");
  box.textContent = t(key, { message: detail || "" });
  box.hidden = false;
}

async function search(event) {
  event.preventDefault();
  const form = event.target;
  $("form-error").hidden = true;
  const patient = patientFromForm(form);
  if (!patient) return showError("search.needOne");
  state.subscription?.close();
  const reason = form.elements.reason.value.trim() || null;
  Object.assign(state, { patient, reason, history: null, running: true, reports: new Map(), open: new Set(), picked: new Set() });
  $("results").hidden = false;
  $("share-result").replaceChildren();
  render();
  const variables = { patient, candidates: form.elements.candidates.checked, reason };
  const bearer = await token();
  if (!state.sources.length) await loadSources();  // e.g. signed in only now: list every hospital as waiting
  state.subscription = subscribe(UPDATES, variables, bearer, {
    onNext: (data) => { state.history = data.patientHistoryUpdates.history; render(); },
    onComplete: () => { state.running = false; render(); },
    onError: async (failure) => {
      if (failure.fatal) return fallback(variables, bearer);  // no WebSocket: one POST instead
      state.running = false;
      render();
      if (needsReason(failure.errors)) return askReason();
      showError(failure.forbidden ? "search.denied" : "search.failed", failure.errors?.[0]?.message);
    },
  });
}

async function fallback(variables, bearer) {
  try {
    const answer = await post(HISTORY_QUERY, variables, bearer);
    if (answer.data?.patientHistory) state.history = answer.data.patientHistory;
    else if (needsReason(answer.errors)) askReason();
    else showError("search.failed", answer.errors?.[0]?.message);
  } catch (error) {
    showError("search.failed", String(error));
  }
  state.running = false;
  render();
}

function needsReason(errors) {
  return (errors || []).some((error) => error.extensions?.code === "REASON_REQUIRED");
}

function askReason() {
  // Only history:emergency grants this search: say why (break-the-glass), then search again.
  $("emergency").hidden = false;
  showError("search.reasonNeeded");
  $("search").elements.reason.focus();
}

function minutesSince(iso) {
  return Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 60000));
}

function sourceLine(source, outcome) {
  const status = outcome ? outcome.status : state.running ? "WAITING" : "NOT_ASKED";
  let words = status === "OK" ? plural("status.OK", outcome.examCount) : t("status." + status);
  if (outcome?.cached && outcome.cachedAt) words += " — " + plural("status.cached", minutesSince(outcome.cachedAt));
  const glyph = GLYPH[status] || "⚠";
  return el("li", { class: "source s-" + status.toLowerCase(), "data-source": source.id, "data-status": status },
    el("span", { class: "glyph", "aria-hidden": "true" }, glyph), " ",
    el("strong", {}, source.name), t("colon"), el("span", { class: "status" }, words));
}

function renderSources() {
  const outcomes = new Map((state.history?.sources || []).map((o) => [o.source.id, o]));
  const known = new Map(state.sources.map((s) => [s.id, s]));
  for (const outcome of outcomes.values()) known.set(outcome.source.id, outcome.source);
  $("sources").replaceChildren(...[...known.values()].map((s) => sourceLine(s, outcomes.get(s.id))));
  const banner = $("banner");
  const outcomesList = [...outcomes.values()];
  const waiting = [...known.keys()].filter((id) => !outcomes.has(id)).length;
  if (state.running) {
    banner.textContent = waiting ? plural("banner.waiting", waiting) : t("banner.searching");
    banner.className = "banner waiting";
    banner.hidden = false;
  } else if (state.history && !state.history.complete) {
    const names = outcomesList.filter((o) => FAILED.has(o.status)).map((o) => o.source.name);
    banner.textContent = names.length ? plural("banner.incomplete", names.length, { names: names.join(", ") }) : t("banner.incompleteGeneric");
    banner.className = "banner incomplete";
    banner.hidden = false;
  } else {
    banner.hidden = true;
  }
}

function periodStart() {
  const years = Number($("f-period").value);
  if (!years) return null;
  const start = new Date();
  start.setFullYear(start.getFullYear() - years);
  return start.toISOString().slice(0, 10);
}

function finality(report) {
  // Whether an available report is final, from the SR's own flags (DiagnosticReport.status in FHIR):
  // final only when COMPLETE and VERIFIED; a PDF, or an SR that omits them, says nothing: never "final".
  if (report.status !== "AVAILABLE") return null;
  const words = [];
  if (report.completion === "PARTIAL") words.push(t("report.partial"));
  if (report.verification === "UNVERIFIED") words.push(t("report.preliminary"));
  if (report.completion === "PARTIAL") return ["PARTIAL", words.join(", ")];
  if (report.verification === "UNVERIFIED") return ["PRELIMINARY", words.join(", ")];
  if (report.completion === "COMPLETE" && report.verification === "VERIFIED") return ["FINAL", t("report.final")];
  return ["UNKNOWN", t("report.finalityUnknown")];
}

function reportWords(report) {
  const final = finality(report);
  return t("report." + report.status) + (final ? " — " + final[1] : "");
}

function reportState(exam) {
  // Before opening: what the search says (no report read); after: the report's own status.
  const uid = exam.studyInstanceUid, report = state.reports.get(uid);
  if (report) return [report.status, reportWords(report), finality(report)?.[0]];
  if (state.open.has(uid)) return ["LOADING", t("report.loading")];
  return [exam.reportAvailability, t("availability." + exam.reportAvailability)];
}

function reportPanel(exam) {
  const report = state.reports.get(exam.studyInstanceUid);
  const panel = el("div", { class: "report", id: "report-" + exam.studyInstanceUid, role: "region", "aria-label": t("exam.report") });
  if (!report) return panel.append(t("report.loading")), panel;
  const final = finality(report);
  panel.append(el("p", { class: "report-status" + (final && final[0] !== "FINAL" ? " not-final" : ""), "data-finality": final?.[0] }, reportWords(report)));
  // An SR's rendered text starts with its title already: said once.
  if (report.title && !(report.text || "").trimStart().startsWith(report.title)) panel.append(el("h5", {}, report.title));
  // Names as people read them ("Moreau, Hélène"), not as DICOM stores them ("Moreau^Hélène"); no "?" for what is not known.
  if (report.author) panel.append(el("p", { class: "muted" }, t(report.date ? "report.by" : "report.byUndated", { author: personName(report.author), date: formatDate(report.date) })));
  else if (report.date) panel.append(el("p", { class: "muted" }, t("report.dated", { date: formatDate(report.date) })));
  if (report.verifiedBy) panel.append(el("p", { class: "muted" }, t(report.verifiedAt ? "report.verifiedBy" : "report.verifiedByUndated", { name: personName(report.verifiedBy), date: report.verifiedAt ? formatDateTime(report.verifiedAt) : "" })));
  if (report.text) panel.append(el("pre", { tabindex: "0" }, report.text));
  if (report.url) {
    panel.append(el("a", { href: report.url, target: "_blank", rel: "noopener", class: "report-document",
      onclick: (event) => openDocument(event, report.url, panel, exam.studyInstanceUid) }, t("report.document")));
    panel.append(el("p", { class: "error document-error", role: "alert", hidden: true }));
  }
  return panel;
}

const DOCUMENT_ERRORS = { 401: "document.unauthenticated", 403: "document.forbidden", 404: "document.expired" };
const BLOB_LIFETIME_MS = 60_000;  // long enough for the new tab to load it; the bytes are not kept after

async function openDocument(event, url, panel, uid) {
  // /reports/<id> wants the page's own authorization (a plain link would open it without): the
  // document is fetched with the token, then shown in a new tab from a blob: URL (no token in a URL).
  event.preventDefault();
  const box = panel.querySelector(".document-error");
  box.hidden = true;
  const tab = window.open("", "_blank");  // now, while the click allows a new tab; filled once fetched
  if (tab) tab.opener = null;
  let key = null, detail = "";
  try {
    const bearer = await token();
    const response = await fetch(url, { headers: bearer ? { Authorization: "Bearer " + bearer } : {}, cache: "no-store", credentials: "same-origin" });
    if (response.ok) {
      const blob = await response.blob();
      const href = URL.createObjectURL(blob);
      setTimeout(() => URL.revokeObjectURL(href), BLOB_LIFETIME_MS);
      if (tab) tab.location.href = href;
      else window.open(href, "_blank", "noopener");  // the new tab was refused at the click: try again
      return;
    }
    key = DOCUMENT_ERRORS[response.status] || "document.failed";
    if (response.status === 404) state.reports.delete(uid);  // expired: the report is read again when reopened
    detail = "HTTP " + response.status;
  } catch (error) {
    key = "document.network";
    detail = String(error);
  }
  tab?.close();
  box.textContent = t(key, { message: detail });
  box.hidden = false;
}

function examItem(exam) {
  const uid = exam.studyInstanceUid;
  const opened = state.open.has(uid), report = reportState(exam);
  const held = [...new Set(exam.locations.map((l) => l.source.name))];
  const viewers = exam.locations.filter((l) => l.viewerUrl).map((l) =>
    el("a", { href: l.viewerUrl, target: "_blank", rel: "noopener" }, t("exam.viewer", { source: l.source.name })));
  const identifiers = el("details", {}, el("summary", {}, t("exam.identifiers")),
    el("ul", {}, exam.locations.map((l) => el("li", {}, t("exam.matchedBy", {
      source: l.source.name, kind: l.matchedBy ? t("match." + l.matchedBy.kind) : "?",
      value: [l.patientId, l.issuerOfPatientId].filter(Boolean).join(" / "),
    })))));
  const item = el("li", { class: "exam", tabindex: "0", "data-uid": uid, onkeydown: examKeys },
    el("div", { class: "exam-head" },
      el("span", { class: "date" }, exam.studyDate ? formatDate(exam.studyDate) : t("timeline.noDate")),
      el("span", { class: "modality" }, exam.modalities.join(", ") || "?"),
      el("span", { class: "description" }, exam.description || "—")),
    el("div", { class: "exam-meta" },
      el("span", {}, plural("exam.hospitals", held.length), t("colon"), held.join(", ")), " · ",
      el("span", { class: "report-state" + (report[2] && report[2] !== "FINAL" ? " not-final" : ""), "data-report": report[0], "data-finality": report[2] }, t("exam.reportStatus"), t("colon"), report[1])),
    el("div", { class: "actions" },
      el("label", { class: "pick" }, el("input", { type: "checkbox", class: "share-pick", value: uid, checked: state.picked.has(uid),
        onchange: (event) => { if (event.target.checked) state.picked.add(uid); else state.picked.delete(uid); renderShare(); } }),
        " ", t("share.pick")),
      el("button", { type: "button", "aria-expanded": String(opened), "aria-controls": "report-" + uid, onclick: () => toggleReport(exam) }, t("exam.report")),
      viewers,
      el("button", { type: "button", onclick: () => copyUid(uid) }, t("exam.copy"))),
    identifiers,
    opened ? reportPanel(exam) : null);
  return item;
}

function renderTimeline() {
  const history = state.history;
  const modality = $("f-modality").value;
  const start = periodStart();
  const exams = (history?.exams || []).filter((exam) =>
    (!modality || exam.modalities.includes(modality)) && (!start || (exam.studyDate && exam.studyDate >= start)));
  exams.sort((a, b) => (b.studyDate || "").localeCompare(a.studyDate || ""));
  const years = new Map();
  for (const exam of exams) {
    const year = exam.studyDate ? exam.studyDate.slice(0, 4) : t("timeline.noDate");
    if (!years.has(year)) years.set(year, []);
    years.get(year).push(exam);
  }
  const focused = document.activeElement?.closest?.(".exam")?.dataset.uid;
  const groups = [...years].map(([year, list]) => el("section", { class: "year" },
    el("h4", {}, year), el("ol", { class: "exams" }, list.map(examItem))));
  if (!groups.length && history && !state.running) {
    // Possible matches below are not "nothing found": say so, or a tired reader stops here.
    const candidates = history.candidates?.length || 0;
    groups.push(el("p", { class: "timeline-empty" }, candidates ? plural("timeline.emptyWithCandidates", candidates) : t("timeline.empty")));
  }
  $("timeline").replaceChildren(...groups);
  if (focused) document.querySelector(`.exam[data-uid="${CSS.escape(focused)}"]`)?.focus();
  const all = [...new Set((history?.exams || []).flatMap((e) => e.modalities))].sort();
  $("f-modality").replaceChildren(el("option", { value: "" }, t("filter.allModalities")),
    ...all.map((m) => el("option", { value: m, selected: m === modality }, m)));
}

function personName(pn) {
  // DICOM PN Family^Given^Middle^Prefix^Suffix, as written (never folded: a difference must show).
  return pn ? pn.split("^").map((part) => part.trim()).filter(Boolean).join(", ") : "";
}

function sexWords(sex) {
  const value = (sex || "").trim().toUpperCase();
  return value ? (["M", "F", "O"].includes(value) ? t("sex." + value) : value) : "";
}

function patientVariants(exams) {
  // Each distinct (name, birth date, sex) the hospitals hold for the exams shown, with who holds it.
  const variants = new Map();
  for (const exam of exams) {
    for (const l of exam.locations) {
      const name = personName(l.patientName), sex = (l.patientSex || "").trim().toUpperCase();
      const key = JSON.stringify([name, l.patientBirthDate || "", sex]);
      if (!variants.has(key)) variants.set(key, { name, birthDate: l.patientBirthDate, sex, holders: new Map() });
      const id = [l.patientId, l.issuerOfPatientId].filter(Boolean).join(" / ");
      variants.get(key).holders.set(l.source.id + "\u0000" + id, { source: l.source.name, id });
    }
  }
  return [...variants.values()];
}

function compared(name) {
  // A name as compared for disagreement only (shown as written): accents, case and separators aside.
  return (name || "").normalize("NFKD").replace(/\p{M}/gu, "").toLowerCase().split(/[\s,.\-_'^]+/u).filter(Boolean).join(" ");
}

function conflicting(a, b) {
  // Two versions disagree where both record a field and it differs ("PEETERS" and "Peeters" do not).
  const differ = (x, y) => Boolean(x && y && x !== y);
  return differ(compared(a.name), compared(b.name)) || differ(a.birthDate || "", b.birthDate || "") || differ(a.sex, b.sex);
}

function renderPatient() {
  // Who the history is of, as the hospitals record them: a mistyped ID must be seen at once.
  const exams = state.history?.exams || [];
  const variants = patientVariants(exams);
  $("patient").hidden = !variants.length;
  const disagree = variants.some((a, i) => variants.slice(i + 1).some((b) => conflicting(a, b)));
  $("patient").classList.toggle("disagree", disagree);
  const flag = $("patient-flag");
  flag.hidden = !disagree;
  flag.textContent = disagree ? plural("patient.disagree", variants.length) : "";
  $("patient-list").replaceChildren(...variants.map((v) => el("li", { class: "variant" },
    el("strong", { class: "patient-name" }, v.name || t("patient.noName")), " · ",
    el("span", { class: "patient-birth" }, v.birthDate ? t("patient.born", { date: formatDate(v.birthDate) }) : t("patient.noBirthDate")), " · ",
    el("span", { class: "patient-sex" }, sexWords(v.sex) || t("patient.noSex")),
    el("span", { class: "holders" }, " — ", t("patient.heldBy", {
      hospitals: [...v.holders.values()].map((h) => h.id ? `${h.source} (${h.id})` : h.source).join(", "),
    })))));
}

function renderCandidates() {
  const candidates = state.history?.candidates || [];
  $("candidates").hidden = !candidates.length;
  $("candidate-list").replaceChildren(...candidates.map((c) => el("li", { class: "candidate" },
    el("p", {}, el("strong", { class: "verify" }, "⚠ " + t("candidates.mark")), " ",
      [personName(c.patientName), c.birthDate && formatDate(c.birthDate), sexWords(c.sex)].filter(Boolean).join(" · "),
      " — ", c.source.name, " ", [c.patientId, c.issuerOfPatientId].filter(Boolean).join(" / ")),
    el("p", {}, t("candidates.score", { score: Math.round(c.score * 100) }), " — ", t("candidates.reasons"), t("colon"),
      c.reasons.map((r) => t("reason." + r)).join(", ")),
    el("ul", {}, c.exams.map((e) => el("li", {},
      [e.studyDate && formatDate(e.studyDate), e.modalities.join(", "), e.description].filter(Boolean).join(" · ")))),
    el("button", { type: "button", class: "open-candidate", onclick: () => openCandidate(c) }, t("candidates.open")))));
}

function openCandidate(candidate) {
  // The ID search for this record, as the ID form would run it (the form shows what was searched).
  const form = $("search");
  for (const name of ["nationalId", "familyName", "givenName", "birthDate"]) form.elements[name].value = "";
  form.elements.patientId.value = candidate.patientId;
  form.elements.issuer.value = candidate.issuerOfPatientId || "";
  form.requestSubmit();
  $("results").scrollIntoView();
}

function renderShare() {
  $("share").hidden = !state.history?.exams.length;
  $("share-selection").textContent = state.picked.size ? plural("share.selected", state.picked.size) : t("share.all");
}

function render() {
  renderSources();
  renderPatient();
  renderTimeline();
  renderCandidates();
  renderShare();
}

async function createShare() {
  const box = $("share-result");
  box.replaceChildren(t("share.creating"));
  const variables = {
    patient: state.patient, studies: state.picked.size ? [...state.picked] : null,
    ttl: Number($("share-ttl").value), once: $("share-once").checked,
  };
  try {
    const answer = await post(SHARE, variables, await token());
    const share = answer.data?.createShareCode;
    if (!share) return box.replaceChildren(el("p", { class: "error" }, t("share.failed", { message: answer.errors?.[0]?.message || "" })));
    box.replaceChildren(
      el("p", {}, t("share.code"), " ", el("code", { class: "share-code" }, share.code)),
      el("p", {}, t("share.expires", { date: formatDateTime(share.expiresAt) }), share.singleUse ? " — " + t("share.singleUse") : ""),
      el("p", {}, el("code", {}, share.url)),
      el("img", { class: "qr", src: "data:image/svg+xml;charset=utf-8," + encodeURIComponent(share.qrSvg), alt: t("share.qr") }),
      el("p", { class: "note" }, t("share.once")));
  } catch (error) {
    box.replaceChildren(el("p", { class: "error" }, t("share.failed", { message: String(error) })));
  }
}

async function toggleReport(exam) {
  const uid = exam.studyInstanceUid;
  if (state.open.has(uid)) state.open.delete(uid);
  else state.open.add(uid);
  render();
  if (!state.open.has(uid) || state.reports.has(uid)) return;
  const sources = [...new Set(exam.locations.map((l) => l.source.id))];
  try {
    // Only this exam's report is read (and audited), from the sources holding it.
    const answer = await post(REPORT, { patient: state.patient, uid, sources, reason: state.reason }, await token());
    state.reports.set(uid, answer.data?.examReport || { status: "ERROR" });
  } catch {
    state.reports.set(uid, { status: "ERROR" });
  }
  render();
}

function copyUid(uid) {
  // execCommand first: it answers at once (the Clipboard API may wait on a permission prompt).
  const back = document.activeElement;
  const field = el("textarea", { class: "offscreen", readonly: true, tabindex: "-1", "aria-hidden": "true" }, uid);
  document.body.append(field);
  field.select();
  let copied = false;
  try { copied = document.execCommand("copy"); } catch { copied = false; }
  field.remove();
  back?.focus();
  if (!copied) navigator.clipboard?.writeText(uid).catch(() => {});
  $("copied").textContent = t("exam.copied", { uid });
}

function examKeys(event) {
  if (event.target !== event.currentTarget) return;
  const items = [...document.querySelectorAll(".exam")];
  const index = items.indexOf(event.currentTarget);
  const moves = { ArrowDown: index + 1, ArrowUp: index - 1, Home: 0, End: items.length - 1 };
  if (event.key in moves) {
    event.preventDefault();
    items[Math.max(0, Math.min(items.length - 1, moves[event.key]))]?.focus();
  } else if (event.key === "Enter") {
    event.preventDefault();
    const uid = event.currentTarget.dataset.uid;
    const exam = state.history.exams.find((e) => e.studyInstanceUid === uid);
    if (exam) toggleReport(exam);
  }
}

async function loadSources() {
  try {
    const answer = await post("{ sources { id name } }", {}, await token());
    state.sources = answer.data?.sources || [];
  } catch {
    state.sources = [];
  }
}

function start() {
  const select = $("lang");
  select.value = initLanguage();
  translatePage();
  select.addEventListener("change", () => { setLanguage(select.value); translatePage(); render(); });
  $("search").addEventListener("submit", search);
  $("f-modality").addEventListener("change", renderTimeline);
  $("f-period").addEventListener("change", renderTimeline);
  $("share-create").addEventListener("click", createShare);
  signInButtons().then(loadSources);
}

async function signInButtons() {
  // auth.js (OIDC) says whether this server wants a sign-in; none with --insecure-dev or in the demo.
  const auth = window.pacsfedAuth;
  if (!auth) return;
  await auth.ready;
  if (!(await auth.required())) return;
  const show = (signedIn) => { $("sign-in").hidden = signedIn; $("sign-out").hidden = !signedIn; };
  show((await auth.token()) !== null);
  window.addEventListener("pacsfedauth", (event) => show(event.detail.signedIn));  // e.g. renewal failed at expiry
  $("sign-in").onclick = () => auth.signIn();
  $("sign-out").onclick = () => auth.signOut();
}

if (window.parent === window) start();  // not in the sign-in module's silent-renewal frame
