// The dashboard's own script: folds each tool's result under its call, asks before a
// destructive form is sent. No inline script anywhere: the CSP allows only files.
"use strict";

function foldResults(root) {
  for (const result of root.querySelectorAll(".tool-result[data-for]")) {
    const call = document.getElementById(result.dataset.for);
    if (call && call.tagName === "DETAILS" && result.parentElement !== call) {
      call.appendChild(result);
      if (result.classList.contains("failed")) {
        call.classList.add("failed");
      }
    }
  }
}

function watchTranscript() {
  const transcript = document.getElementById("transcript");
  if (!transcript) {
    return;
  }
  foldResults(transcript);
  new MutationObserver(() => foldResults(transcript)).observe(transcript, {
    childList: true,
    subtree: true,
  });
}

document.addEventListener("submit", (event) => {
  const question = event.target.dataset && event.target.dataset.confirm;
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});

document.addEventListener("DOMContentLoaded", watchTranscript);
