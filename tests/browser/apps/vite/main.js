import { message } from "./message.js";

function render(value) {
  document.getElementById("message").textContent = value;
}

render(message);

// message.js has no boundary of its own: accept its updates here, so an edit is applied in
// place and the page is never reloaded.
if (import.meta.hot) {
  import.meta.hot.accept("./message.js", (mod) => {
    if (mod) render(mod.message);
  });
}
