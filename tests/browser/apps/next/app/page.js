import MessageView from "./message-view.js";

export default function Page() {
  return <MessageView />;
}
