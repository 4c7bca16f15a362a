import { message } from "./message.js";

function render() {
  // `message` is a live binding: after an accepted update it holds the new module's value.
  document.getElementById("message").textContent = message;
}

render();

// This package is "type": "module", so webpack treats the file as strict ESM, where the HMR
// API is import.meta.webpackHot rather than module.hot.
if (import.meta.webpackHot) {
  import.meta.webpackHot.accept("./message.js", render);
}
