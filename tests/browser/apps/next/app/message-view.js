"use client";

import { message } from "./message.js";

export default function MessageView() {
  return <p id="message">{message}</p>;
}
