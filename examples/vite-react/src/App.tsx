import { useState, type FormEvent } from 'react';
import { useRoom } from './useRoom';

const params = new URLSearchParams(location.search);
const topic = params.get('room') ?? 'vite-react';
const server = params.get('server') ?? `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/signal`;

export function App() {
  const room = useRoom(server, topic);
  const [draft, setDraft] = useState('');
  const submit = (e: FormEvent) => {
    e.preventDefault();
    if (draft) room.send(draft);
    setDraft('');
  };
  return (
    <main>
      <h1>Room “{topic}”</h1>
      <p data-testid="status">
        {room.status}
        {room.peerId && ` as ${room.peerId}`}
        {room.error && ` (${room.error})`}
      </p>
      <h2>Peers ({room.peers.length})</h2>
      <ul data-testid="peers">
        {room.peers.map((p) => (
          <li key={p}>{p}</li>
        ))}
      </ul>
      <form onSubmit={submit}>
        <input data-testid="draft" value={draft} onChange={(e) => setDraft(e.target.value)} />
        <button type="submit">Send</button>
      </form>
      <ul data-testid="messages">
        {room.messages.map((m, i) => (
          <li key={i}>
            {m.from.slice(0, 8)}: {m.text}
          </li>
        ))}
      </ul>
    </main>
  );
}
