// The portal's one script: copy buttons, times in the browser's zone, and pages of unfinished
// jobs that fetch themselves again until they are done.
"use strict";

// [data-copy] names the element whose text is copied.
document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const source = document.getElementById(button.dataset.copy);
  if (!source || !navigator.clipboard) return;
  navigator.clipboard.writeText(source.textContent.trim()).then(() => {
    button.textContent = "Copied";
    setTimeout(() => { button.textContent = "Copy"; }, 2000);
  });
});

// <time datetime="...Z" title="... UTC">: the text in local time (as the server writes it,
// YYYY-MM-DD HH:MM, and the zone); UTC stays on hover.
const zoned = (seconds) => new Intl.DateTimeFormat(undefined, {
  year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit",
  second: seconds ? "2-digit" : undefined, hourCycle: "h23", numberingSystem: "latn",
  timeZoneName: "short",
});
const formats = [zoned(false), zoned(true)];
function localTimes(root) {
  for (const element of root.querySelectorAll("time[datetime][title]")) {
    const when = new Date(element.getAttribute("datetime"));
    if (Number.isNaN(when.getTime())) continue;
    const seconds = element.textContent.split(":").length > 2;
    const part = {};
    for (const { type, value } of formats[seconds ? 1 : 0].formatToParts(when)) part[type] = value;
    element.textContent = `${part.year}-${part.month}-${part.day} ${part.hour}:${part.minute}` +
      `${seconds ? `:${part.second}` : ""} ${part.timeZoneName}`;
  }
}

// [data-refresh] (seconds): the element is fetched again from this page's URL and replaced;
// the new one goes on only while it still says so. <details> left open stay open.
function refreshLater() {
  const live = document.querySelector("[data-refresh]");
  if (live) setTimeout(() => refresh(live), Number(live.dataset.refresh) * 1000);
}
async function refresh(live) {
  try {
    const answer = await fetch(location.href, { cache: "no-store" });
    if (!answer.ok) return; // signed out or gone: stop
    const page = new DOMParser().parseFromString(await answer.text(), "text/html");
    const fresh = page.getElementById(live.id);
    if (!fresh) return;
    const open = [...live.querySelectorAll("details[open] summary")].map((s) => s.textContent);
    for (const summary of fresh.querySelectorAll("details summary")) {
      if (open.includes(summary.textContent)) summary.parentElement.open = true;
    }
    localTimes(fresh);
    live.replaceWith(document.adoptNode(fresh));
  } catch (error) {
    // the network failed: try again later
  }
  refreshLater();
}

localTimes(document);
refreshLater();
