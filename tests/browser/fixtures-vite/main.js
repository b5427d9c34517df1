// What an app author writes: a bare import of the installed package.
import { SignalClient } from 'signal-mesh';

const app = { ready: true, received: [], client: null, channel: null };
window.APP = app;

function attach(channel) {
  app.channel = channel;
  channel.addEventListener('message', (e) => app.received.push(e.data));
}

app.start = async (servers) => {
  const client = await SignalClient.create({ servers });
  app.client = client;
  client.addEventListener('connection', (e) => attach(e.detail.connection.channel));
  return { peerId: client.peerId, state: client.state };
};

app.connect = async (peerId) => {
  const conn = await app.client.connect(peerId);
  attach(conn.channel);
  return conn.channel.readyState;
};

app.send = (text) => app.channel.send(text);
