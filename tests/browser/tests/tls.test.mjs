// Built-in TLS (`--tls-cert`, `--tls-key`): pages loaded over https:// from the node reach it over
// wss:// — what a browser requires of an https page — with a certificate this test generates
// (openssl, a throw-away self-signed P-256 certificate for 127.0.0.1). The browser context is told
// to accept it (`ignoreHTTPSErrors`), as a browser with the test CA installed would.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { TMP, exchange, uniqueTopic, useSuite, waitLookup } from '../lib/harness.mjs';

const env = useSuite('tls', {
  node: () => {
    const { cert, key } = makeCertificate();
    return { args: ['--tls-cert', cert, '--tls-key', key] };
  },
});
const { suite } = env;

/** Writes a self-signed certificate and key for 127.0.0.1 and localhost; returns their paths. */
function makeCertificate() {
  const dir = path.join(TMP, `tls-${process.pid}`);
  fs.mkdirSync(dir, { recursive: true });
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=127.0.0.1',
    '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost',
  ], { stdio: 'ignore' });
  return { cert, key };
}

/** A page loaded over https:// from the node, in a context that accepts the test certificate. */
function httpsPage() {
  return suite.page(`https://127.0.0.1:${env.node.port}`, '/test.html', { contextOptions: { ignoreHTTPSErrors: true } });
}

describe('signal-mesh over wss:// with the node\'s built-in TLS', { timeout: 120_000 }, () => {
  test('two https pages connect over wss://, find each other and open a data channel', { timeout: 60_000 }, suite.wrap(async () => {
    const wss = `wss://127.0.0.1:${env.node.port}/signal`;
    const a = await httpsPage();
    const b = await httpsPage();
    assert.equal(await a.eval(() => location.protocol), 'https:');
    for (const p of [a, b]) {
      const info = await p.call('create', { servers: [wss] }, 'c');
      assert.equal(info.state, 'online', `${p.label} over ${wss}`);
      p.peerId = info.peerId;
    }
    const topic = uniqueTopic('tls');
    await a.call('join', topic);
    await b.call('join', topic);
    await waitLookup(a, topic, [b.peerId]);
    const conn = await a.call('connect', b.peerId, { label: 'tls' });
    assert.equal(conn.stateAtHandout, 'open');
    await exchange(a, b, 'over wss');
    await exchange(b, a, 'and back');
  }));

  test('the node serves no plain ws:// on its TLS port', { timeout: 30_000 }, suite.wrap(async () => {
    const a = await httpsPage();
    // From the https page a ws:// URL is mixed content; from a plain page it would be refused by
    // the TLS listener. Either way no plain WebSocket opens.
    const opened = await a.eval((T, url) => new Promise((resolve) => {
      let ws;
      try {
        ws = new WebSocket(url);
      } catch {
        resolve(false);
        return;
      }
      ws.onopen = () => resolve(true);
      ws.onerror = () => resolve(false);
      setTimeout(() => resolve(false), 5000);
    }), `ws://127.0.0.1:${env.node.port}/signal`);
    assert.equal(opened, false);
  }));
});
