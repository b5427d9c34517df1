// A React hook over a Signal Mesh room: the client, the members with open connections, and the
// messages received on their data channels.
import { useEffect, useState } from 'react';
import { SignalClient, SignalMeshError, type PeerConnection, type Room } from 'signal-mesh';

export interface Message {
  from: string;
  text: string;
}

export interface RoomState {
  status: 'connecting' | 'online' | 'error';
  peerId: string | null;
  peers: string[];
  messages: Message[];
  error: string | null;
  send: (text: string) => void;
}

export function useRoom(server: string, topic: string): RoomState {
  const [state, setState] = useState<Omit<RoomState, 'send'>>({
    status: 'connecting',
    peerId: null,
    peers: [],
    messages: [],
    error: null,
  });
  const [room, setRoom] = useState<Room | null>(null);

  useEffect(() => {
    let client: SignalClient | null = null;
    let cancelled = false;
    const listen = (r: Room, conn: PeerConnection) => {
      conn.channel.addEventListener('message', (e: MessageEvent) => {
        if (typeof e.data !== 'string') return;
        setState((s) => ({ ...s, messages: [...s.messages, { from: conn.peerId, text: e.data }] }));
      });
      setState((s) => ({ ...s, peers: [...r.peers.keys()] }));
    };
    (async () => {
      client = await SignalClient.create({ servers: [server] });
      if (cancelled) {
        await client.close();
        return;
      }
      const r = client.room(topic);
      r.addEventListener('peer', (e) => listen(r, e.detail.connection));
      r.addEventListener('peer-left', () => setState((s) => ({ ...s, peers: [...r.peers.keys()] })));
      await r.ready;
      setRoom(r);
      setState((s) => ({ ...s, status: 'online', peerId: client?.peerId ?? null }));
    })().catch((e: unknown) => {
      const message = e instanceof SignalMeshError ? `${e.code}: ${e.message}` : String(e);
      setState((s) => ({ ...s, status: 'error', error: message }));
    });
    return () => {
      cancelled = true;
      void client?.close();
    };
  }, [server, topic]);

  const send = (text: string) => {
    if (!room) return;
    room.send(text);
    setState((s) => ({ ...s, messages: [...s.messages, { from: s.peerId ?? 'me', text }] }));
  };
  return { ...state, send };
}
